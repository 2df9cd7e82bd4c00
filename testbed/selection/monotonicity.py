"""Latency monotonicity: how well one device's latency ranking of networks carries over to another.

Spearman's rho and Kendall's tau (tau-b) between two devices' latencies over the networks measured on
both (pairwise-complete rows), as in Lu et al., "One Proxy Device Is Enough for Hardware-Aware Neural
Architecture Search" (SIGMETRICS 2022), whose headline figure is this matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau, spearmanr

from testbed.selection.latency import Measurements, load_measurements


@dataclass
class PairCorrelation:
    proxy: str
    target: str
    spearman: float
    kendall: float
    rows: int


def pair_correlation(table: Measurements, proxy: str, target: str) -> PairCorrelation:
    a, b = table.column(proxy), table.column(target)
    both = ~(np.isnan(a) | np.isnan(b))
    rho = spearmanr(a[both], b[both]).statistic
    tau = kendalltau(a[both], b[both]).statistic
    return PairCorrelation(proxy, target, float(rho), float(tau), int(both.sum()))


def spearman_matrix(table: Measurements | None = None) -> np.ndarray:
    """devices x devices Spearman rho on pairwise-complete rows."""
    table = table or load_measurements()
    n = len(table.devices)
    matrix = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            matrix[i, j] = matrix[j, i] = pair_correlation(table, table.devices[i], table.devices[j]).spearman
    return matrix


def all_pairs(table: Measurements | None = None) -> list[PairCorrelation]:
    """Every ordered proxy -> target pair (the measures are symmetric; both orders are listed)."""
    table = table or load_measurements()
    return [pair_correlation(table, p, t) for p in table.devices for t in table.devices if p != t]

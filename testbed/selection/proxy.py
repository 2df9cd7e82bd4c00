"""Proxy-device selection (Lu et al., SIGMETRICS 2022) on the measured devices, vs an oracle and one-size.

Problem: for a target device T and a deadline D (ms), deploy the most accurate candidate network whose
latency on T is <= D. Every method below ranks feasible candidates by the same cached accuracy and
differs only in what it knows about latency on T:

* ``oracle``   -- every candidate measured on T (the per-device optimum; regret 0 by definition).
* ``proxy``    -- the paper's method: the candidates' latency is known on the proxy device P only; the
  accuracy-vs-P-latency Pareto set is what a proxy-driven search returns, and only those networks are
  measured on T; deploy the most accurate of them that fits. Under perfect rank monotonicity the
  Pareto sets on P and T coincide and this is the oracle.
* ``proxy-predicted`` -- no measurement of the deployed network on T: T's latency is predicted by a
  monotone map of P's latency fitted on ``k`` other networks measured on T (least squares on log
  latency, slope clamped >= 0). It must also learn the deadline's position, not only the ranking.
* ``adapted``  -- the paper's adaptation for weakly correlated targets: ``m`` target measurements fit a
  linear model of log T-latency on log P-latency and the cell's operation counts (ridge).
* ``one-size`` -- one network for every device: at each budget level the proxy's own choice (its
  measured latencies, its deadline at the same level), deployed unchanged.

Deadlines are budget levels: level q on device X is the q-quantile of X's latency over every network
measured on X (a deadline that a fraction q of the 1,999 measured networks meet there).

Outcome per (target, deadline, method): the chosen network's *measured* latency on T decides a hit;
utility = accuracy if hit else 0 (a late answer is lost); regret = oracle utility - utility (>= 0,
because the oracle takes the most accurate network that truly fits).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from testbed.selection.candidates import OPERATIONS, operation_counts
from testbed.selection.latency import Measurements

METHODS = ("oracle", "proxy", "proxy-predicted", "adapted", "one-size")
DEFAULT_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class Outcome:
    proxy: str
    target: str
    level: float
    deadline_ms: float
    method: str
    arch_index: int
    latency_ms: float        # measured on the target
    predicted_ms: float      # what the method believed (inf: never measured on the target)
    target_measurements: int  # networks the method measured on the target
    hit: bool
    accuracy: float
    utility: float
    regret: float

    def as_dict(self) -> dict:
        return asdict(self)


def deadline_ms(table: Measurements, device: str, level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"budget level must be in (0, 1), got {level}")
    return float(np.nanquantile(table.column(device), level))


def select(accuracy: dict[int, float], predicted_ms: dict[int, float], deadline: float) -> int:
    """Most accurate candidate predicted to fit (ties: faster, then lower index); else the fastest."""
    feasible = [i for i in accuracy if predicted_ms[i] <= deadline]
    if feasible:
        return max(feasible, key=lambda i: (accuracy[i], -predicted_ms[i], -i))
    return min(accuracy, key=lambda i: (predicted_ms[i], i))


def pareto_set(accuracy: dict[int, float], latency_ms: dict[int, float]) -> list[int]:
    """Candidates no other candidate beats on both accuracy (higher) and latency (lower or equal)."""
    front, best = [], -np.inf
    for i in sorted(accuracy, key=lambda i: (latency_ms[i], -accuracy[i], i)):
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return front


def calibration_rows(table: Measurements, proxy: str, target: str, exclude, count: int) -> np.ndarray:
    """``count`` non-candidate networks measured on both, evenly spaced in the proxy's latency order."""
    if count < 2:
        raise ValueError(f"need >= 2 target measurements to fit a map, got {count}")
    p, t = table.column(proxy), table.column(target)
    excluded = set(exclude)
    pool = np.array([r for r in np.flatnonzero(~(np.isnan(p) | np.isnan(t))) if r not in excluded])
    order = pool[np.argsort(p[pool], kind="stable")]
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, count)).astype(int))
    return order[picks]


def fit_log_linear(x: np.ndarray, y: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """Least squares y ~ [1, x] (x: rows x features) with an optional ridge on non-intercept terms."""
    design = np.column_stack([np.ones(len(x)), x])
    penalty = ridge * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    return np.linalg.solve(design.T @ design + penalty, design.T @ y)


def monotone_map(proxy_ms: np.ndarray, target_ms: np.ndarray):
    """log target = a + b log proxy with b >= 0 (a non-decreasing map keeps the proxy's ranking)."""
    a, b = fit_log_linear(np.log(proxy_ms)[:, None], np.log(target_ms))
    if b < 0:
        a, b = float(np.mean(np.log(target_ms))), 0.0
    return lambda ms: np.exp(a + b * np.log(ms))


def _features(table: Measurements, proxy: str, rows) -> np.ndarray:
    counts = [[operation_counts(table.archs[r])[op] for op in OPERATIONS[1:]] for r in rows]
    return np.column_stack([np.log(table.column(proxy)[list(rows)]), np.array(counts, dtype=float)])


def predictions(table: Measurements, accuracy: dict[int, float], proxy: str, target: str, *,
                calibration: int = 10, adaptation: int = 30) -> dict[str, tuple[dict[int, float], int]]:
    """Per method: (the target latency it believes each candidate has, target measurements it used)."""
    cands = list(accuracy)
    measured_t = table.column(target)
    measured_p = table.column(proxy)
    rows = calibration_rows(table, proxy, target, cands, calibration)
    mapped = monotone_map(measured_p[rows], measured_t[rows])
    rows_a = calibration_rows(table, proxy, target, cands, adaptation)
    coef = fit_log_linear(_features(table, proxy, rows_a), np.log(measured_t[rows_a]), ridge=1e-3)
    adapted = np.exp(coef[0] + _features(table, proxy, cands) @ coef[1:])
    proxy_ms = {i: float(measured_p[i]) for i in cands}
    pareto = set(pareto_set(accuracy, proxy_ms))
    return {"oracle": ({i: float(measured_t[i]) for i in cands}, len(cands)),
            # networks off the proxy's Pareto set are never measured on the target, so never chosen
            "proxy": ({i: float(measured_t[i]) if i in pareto else np.inf for i in cands}, len(pareto)),
            "proxy-predicted": ({i: float(mapped(measured_p[i])) for i in cands}, len(rows)),
            "adapted": ({i: float(v) for i, v in zip(cands, adapted, strict=True)}, len(rows_a)),
            "one-size": (proxy_ms, 0)}


def evaluate(table: Measurements, accuracy: dict[int, float], proxy: str, targets: list[str],
             levels=DEFAULT_LEVELS, calibration: int = 10, adaptation: int = 30) -> list[Outcome]:
    """Every (target, level, method) outcome; targets may include the proxy itself."""
    if not accuracy:
        raise ValueError("no candidates")
    missing = [i for i in accuracy if np.isnan(table.column(proxy)[i])]
    if missing:
        raise ValueError(f"candidates {missing} are not measured on the proxy {proxy}")
    proxy_ms = {i: float(table.column(proxy)[i]) for i in accuracy}
    one_size = {level: select(accuracy, proxy_ms, deadline_ms(table, proxy, level)) for level in levels}
    outcomes = []
    for target in targets:
        measured_t = table.column(target)
        if any(np.isnan(measured_t[i]) for i in accuracy):
            raise ValueError(f"target {target} lacks measurements of some candidates")
        believed = predictions(table, accuracy, proxy, target, calibration=calibration, adaptation=adaptation)
        for level in levels:
            deadline = deadline_ms(table, target, level)
            chosen = {m: select(accuracy, believed[m][0], deadline) for m in METHODS if m != "one-size"}
            chosen["one-size"] = one_size[level]
            oracle_utility = None
            for method in METHODS:
                i = chosen[method]
                hit = bool(measured_t[i] <= deadline)
                utility = accuracy[i] if hit else 0.0
                if method == "oracle":
                    oracle_utility = utility
                outcomes.append(Outcome(proxy, target, level, deadline, method, i, float(measured_t[i]),
                                        float(believed[method][0][i]), believed[method][1], hit, accuracy[i],
                                        utility, round(oracle_utility - utility, 6)))
    return outcomes


def summarise(outcomes: list[Outcome]) -> list[dict]:
    """Per (target, method): deadline hit rate, mean accuracy, mean utility and mean/max regret."""
    rows = []
    keys = dict.fromkeys((o.target, o.method) for o in outcomes)
    for target, method in keys:
        sel = [o for o in outcomes if o.target == target and o.method == method]
        rows.append({"target": target, "method": method, "deadlines": len(sel),
                     "hit_rate": float(np.mean([o.hit for o in sel])),
                     "accuracy": float(np.mean([o.accuracy for o in sel])),
                     "utility": float(np.mean([o.utility for o in sel])),
                     "regret_mean": float(np.mean([o.regret for o in sel])),
                     "regret_max": float(np.max([o.regret for o in sel])),
                     "target_measurements": sel[0].target_measurements})
    return rows

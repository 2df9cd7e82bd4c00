"""The candidate networks for device-aware selection and their cached accuracies.

Candidates are measured NAS-Bench-201 networks (rows of the latency table) that

* are measured on all 18 devices (so every target can be evaluated on the same set), and
* have a cell whose output depends on its input (a path of non-``none`` edges from node 0 to node 3;
  otherwise the network outputs a constant and its accuracy is chance),

spread evenly over the latency range: networks are ordered by their mean latency *percentile* across
the 18 devices (a device-neutral speed score), and ``count`` of them are taken at evenly spaced
positions of that order. The accuracies (brief Fashion-MNIST training) live in
``data/nb201-fashion-mnist.json``, rebuilt by ``scripts/train_nb201_candidates.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from testbed.selection.latency import Measurements, load_measurements

OPERATIONS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
ACCURACY_JSON = Path(__file__).resolve().parent / "data" / "nb201-fashion-mnist.json"
DEFAULT_COUNT = 30


def cell_edges(arch: str) -> list[tuple[int, int, str]]:
    """``arch`` -> [(source, target, op)] for the 6 edges (node i = ``+``-separated group i)."""
    edges = []
    for target, group in enumerate(arch.strip().split("+"), start=1):
        for edge in group.strip("|").split("|"):
            op, source = edge.split("~")
            if op not in OPERATIONS:
                raise ValueError(f"arch {arch!r}: unknown operation {op!r}")
            edges.append((int(source), target, op))
    if len(edges) != 6:
        raise ValueError(f"arch {arch!r}: {len(edges)} edges, a NAS-Bench-201 cell has 6")
    return edges


def output_depends_on_input(arch: str) -> bool:
    reached = {0}
    for source, target, op in sorted(cell_edges(arch), key=lambda e: e[1]):
        if op != "none" and source in reached:
            reached.add(target)
    return 3 in reached


def operation_counts(arch: str) -> dict[str, int]:
    counts = dict.fromkeys(OPERATIONS, 0)
    for _, _, op in cell_edges(arch):
        counts[op] += 1
    return counts


def speed_score(table: Measurements, rows: np.ndarray) -> np.ndarray:
    """Mean over devices of each row's latency percentile among ``rows`` (0 = fastest)."""
    sub = table.ms[rows]
    return np.mean([rankdata(sub[:, d]) / len(rows) for d in range(sub.shape[1])], axis=0)


def choose_candidates(count: int = DEFAULT_COUNT, table: Measurements | None = None) -> list[int]:
    """``count`` arch indices spread evenly over the device-neutral latency order (deterministic)."""
    table = table or load_measurements()
    if not 2 <= count <= 200:
        raise ValueError(f"count must be 2..200 candidates, got {count}")
    rows = np.array([r for r in table.complete_rows() if output_depends_on_input(table.archs[r])])
    order = rows[np.argsort(speed_score(table, rows), kind="stable")]
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, count)).astype(int))
    return sorted(int(order[p]) for p in picks)


def load_accuracies(path: str | Path = ACCURACY_JSON) -> dict:
    """The committed accuracy cache: ``{"settings": ..., "candidates": {arch_index: {...}}}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: rebuild with "
                                "`nice -n 10 .venv/bin/python scripts/train_nb201_candidates.py`")
    data = json.loads(path.read_text())
    data["candidates"] = {int(k): v for k, v in data["candidates"].items()}
    return data

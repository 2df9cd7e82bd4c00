"""Fit the per-device cost models on the measured NAS-Bench-201 latencies and validate them.

Rebuild everything shipped in ``data/`` (features cache, coefficients, validation figures)::

    nice -n 10 .venv/bin/python -m testbed.devices.fit            # features cached after the first run
    nice -n 10 .venv/bin/python -m testbed.devices.fit --refresh-features

Model, per device d: ``latency_ms = intercept_d + sum_k coef_dk * feature_k`` with every coefficient
non-negative (``scipy.optimize.nnls``), features from ``features.py`` counted on each network built
by ``testbed.models.nasbench201`` at 32x32x3 (CIFAR-10; the sources do not state the input size, this
is assumed). The fit minimises *relative* squared error (each row divided by its measured latency),
because latencies span 0.6 ms to 99 ms and a device's small networks matter as much as its large
ones. A seeded 80/20 split of the networks holds rows back; the shipped coefficients are fitted on
the 80 % only, so the held-back MAPE and Spearman correlation are what the shipped model does on
networks it never saw.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

from testbed.devices.data_table import DATA_DIR, FITTED_JSON, latency_table
from testbed.devices.features import FEATURES

FEATURES_CSV = DATA_DIR / "nb201-features.csv"
FIT_INPUT_SHAPE = (3, 32, 32)
HOLDOUT_FRACTION = 0.2
SPLIT_SEED = 0
REBUILD_COMMAND = "nice -n 10 .venv/bin/python -m testbed.devices.fit"


@functools.cache
def _fixed_features(input_shape: tuple[int, int, int]) -> tuple[np.ndarray, list[tuple[int, tuple]]]:
    """Features of the parts every NAS-Bench-201 network shares (stem, reductions, classifier),
    and the (channels, feature-map shape) each stage's cells run at."""
    import torch

    from testbed.devices.features import features_and_output
    from testbed.models.nasbench201 import NASBench201Net

    model = NASBench201Net(_ANY_ARCH, in_channels=input_shape[0], input_size=input_shape[1]).eval()
    x = torch.zeros(1, *input_shape)
    fixed = np.zeros(len(FEATURES))
    stages = []
    for name, block in zip(model.block_names, model.blocks):
        if name.endswith("c0"):
            stages.append((x.shape[1], tuple(x.shape)))
        vec, x = features_and_output(block, x)
        if "c" not in name:  # stem, r2, r3
            fixed += vec
    fixed += features_and_output(model.exit_heads[-1], x)[0]
    return fixed, stages


_ANY_ARCH = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
CELLS_PER_STAGE = 5


def network_features(arch: str, input_shape: tuple[int, int, int] = FIT_INPUT_SHAPE,
                     graph: str = "pruned") -> np.ndarray:
    """Features of one whole NAS-Bench-201 network as measured (backbone + classifier, no extra exits).

    Blocks run one after another, so the network's count is the sum of its blocks' counts: the shared
    parts once, and one cell per stage times the cells per stage (all cells of a stage are identical).
    This equals counting the whole network (a test checks it) at a fifth of the cost. ``graph``: which
    nodes/edges of the cell execute (``testbed.models.nasbench201.GRAPHS``).
    """
    import torch

    from testbed.devices.features import features_and_output
    from testbed.models.nasbench201 import Cell, parse_arch

    fixed, stages = _fixed_features(tuple(input_shape))
    cell = parse_arch(arch)
    total = fixed.copy()
    for channels, shape in stages:
        module = Cell(cell, channels, graph).eval()
        total += CELLS_PER_STAGE * features_and_output(module, torch.zeros(shape))[0]
    return total


def compute_features(graph: str, rows: list[int] | None = None, progress: bool = False) -> np.ndarray:
    """Feature matrix (rows x FEATURES) of the data's networks, in row order."""
    import torch

    torch.set_num_threads(1)
    table = latency_table()
    rows = list(range(len(table.archs))) if rows is None else rows
    out = np.zeros((len(rows), len(FEATURES)))
    start = time.monotonic()
    for i, row in enumerate(rows):
        out[i] = network_features(table.archs[row], graph=graph)
        if progress and (i + 1) % 500 == 0:
            print(f"  {graph}: features {i + 1}/{len(rows)} ({time.monotonic() - start:.0f} s)", file=sys.stderr)
    return out


def load_features(refresh: bool = False, progress: bool = False) -> dict[str, np.ndarray]:
    """Cached features of all rows per graph variant (``data/nb201-features.csv``), computed if missing."""
    from testbed.models.nasbench201 import GRAPHS

    table = latency_table()
    if FEATURES_CSV.exists() and not refresh:
        with open(FEATURES_CSV, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows = list(reader)
        if header == ["graph", "arch_index", *FEATURES]:
            cached = {graph: np.array([[float(v) for v in row[2:]] for row in rows if row[0] == graph])
                      for graph in GRAPHS}
            if all(len(values) == len(table.archs) for values in cached.values()):
                return cached
        print(f"{FEATURES_CSV}: stale (columns, graphs or rows changed), recomputing", file=sys.stderr)
    cached = {graph: compute_features(graph, progress=progress) for graph in GRAPHS}
    with open(FEATURES_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["graph", "arch_index", *FEATURES])
        for graph, values in cached.items():
            for index, row in zip(table.indices, values):
                writer.writerow([graph, int(index), *(int(v) if v == int(v) else repr(float(v)) for v in row)])
    return cached


def holdout_mask(n_rows: int, fraction: float = HOLDOUT_FRACTION, seed: int = SPLIT_SEED) -> np.ndarray:
    """True for held-back rows: a seeded permutation's first ``fraction`` of rows."""
    order = np.random.default_rng(seed).permutation(n_rows)
    mask = np.zeros(n_rows, dtype=bool)
    mask[order[: int(round(fraction * n_rows))]] = True
    return mask


def design(features: np.ndarray) -> np.ndarray:
    """Features with the intercept column (last)."""
    return np.hstack([features, np.ones((len(features), 1))])


def fit_device(features: np.ndarray, latency_ms: np.ndarray) -> np.ndarray:
    """Non-negative coefficients (FEATURES..., intercept) minimising relative squared error.

    Columns 0 and 1 must be kxk-conv MACs and matmul (1x1 conv / linear) MACs. The fit is constrained
    to ``coef_matmul <= coef_kxk``: a MAC of a 1x1 convolution costs no more than one of a kxk
    convolution. NAS-Bench-201 cells cannot separate a 1x1 edge's per-MAC cost from its per-operation
    overhead; without the constraint some GPU fits priced 1x1 MACs 7x above 3x3 MACs and predicted
    MobileNetV2 (mostly 1x1 convs) 10x too slow on the Jetson Nano (docs/devices.md).
    """
    from scipy.optimize import nnls

    a = design(features)
    # reparametrise: d0 * (kxk + matmul) + d1 * kxk, d >= 0  =>  coef_kxk = d0 + d1 >= coef_matmul = d0 >= 0
    reparam = a.copy()
    reparam[:, 0] = a[:, 0] + a[:, 1]
    reparam[:, 1] = a[:, 0]
    scale = reparam.max(axis=0)
    scale[scale == 0] = 1.0
    weighted = (reparam / scale) / latency_ms[:, None]
    d, _ = nnls(weighted, np.ones(len(latency_ms)), maxiter=50 * a.shape[1])
    d = d / scale
    coef = d.copy()
    coef[0], coef[1] = d[0] + d[1], d[0]
    return coef


def predict(coef: np.ndarray, features: np.ndarray) -> np.ndarray:
    return design(features) @ coef


def validation_figures(predicted: np.ndarray, measured: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    mape = float(np.mean(np.abs(predicted - measured) / measured) * 100)
    return {"mape_pct": round(mape, 3), "spearman": round(float(spearmanr(predicted, measured).statistic), 4),
            "rows": int(len(measured))}


def fit_all(features: dict[str, np.ndarray]) -> dict:
    """Coefficients and train/held-back figures for every device column.

    Per device, one cost model per graph variant is fitted on the training rows; the variant with the
    lowest *training* MAPE is kept (the held-back rows play no part in the choice).
    """
    from testbed.models.nasbench201 import GRAPHS

    table = latency_table()
    held = holdout_mask(len(table.archs))
    devices = {}
    for device in table.devices:
        y = table.column(device)
        measured = ~np.isnan(y)
        train, test = measured & ~held, measured & held
        candidates = {}
        for graph in GRAPHS:
            coef = fit_device(features[graph][train], y[train])
            candidates[graph] = (validation_figures(predict(coef, features[graph][train]), y[train]), coef)
        graph = min(candidates, key=lambda g: candidates[g][0]["mape_pct"])
        train_figures, coef = candidates[graph]
        devices[device] = {
            "graph": graph,
            "coefficients": {name: float(c) for name, c in zip([*FEATURES, "intercept_ms"], coef)},
            "train": train_figures,
            "held_back": validation_figures(predict(coef, features[graph][test]), y[test]),
            "train_mape_pct_per_graph": {g: figures["mape_pct"] for g, (figures, _) in candidates.items()},
            "measured_median_ms": round(float(np.median(y[measured])), 4),
        }
    return {
        "about": "per-device cost model: ms = intercept_ms + sum(coefficient * feature); features from "
                 "testbed/devices/features.py counted on the cell graph variant 'graph' "
                 "(testbed.models.nasbench201.GRAPHS); coefficients are ms per unit of feature",
        "rebuild": REBUILD_COMMAND,
        "features": list(FEATURES),
        "graphs": dict(GRAPHS),
        "fit_input_shape": list(FIT_INPUT_SHAPE),
        "fit_input_assumption": "32x32x3 (CIFAR-10) assumed for every source; the sources do not state it",
        "holdout": {"fraction": HOLDOUT_FRACTION, "seed": SPLIT_SEED,
                    "method": "numpy.random.default_rng(seed).permutation(rows)[:round(fraction*rows)]"},
        "objective": "non-negative least squares on relative error (rows divided by measured latency), "
                     "constrained to coef(matmul_macs) <= coef(conv_kxk_macs); graph variant chosen by "
                     "training MAPE",
        "data": "testbed/devices/data/nasbench201-latency-ms.csv",
        "devices": devices,
    }


def fitted_devices_json() -> dict:
    """The shipped per-device entries of ``fitted.json`` (coefficients, train/held-back figures)."""
    return json.loads(FITTED_JSON.read_text())["devices"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.devices.fit", description=__doc__.splitlines()[0])
    parser.add_argument("--refresh-features", action="store_true", help="recount features of all networks")
    parser.add_argument("--output", type=Path, default=FITTED_JSON)
    args = parser.parse_args(argv)
    features = load_features(refresh=args.refresh_features, progress=True)
    fitted = fit_all(features)
    args.output.write_text(json.dumps(fitted, indent=1) + "\n")
    for device, entry in fitted["devices"].items():
        print(f"{device:20s} graph {entry['graph']:7s} held-back MAPE {entry['held_back']['mape_pct']:6.2f} %  "
              f"Spearman {entry['held_back']['spearman']:.3f}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

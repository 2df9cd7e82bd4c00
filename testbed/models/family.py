"""Device-aware model selection: a width/depth family, measured latency, a predictor, a picker.

Following Lu, Yang & Ren (proxy device + performance monotonicity): measure every variant once on
the proxy host (this machine) under a few CPU shares, fit a linear latency predictor in FLOPs and
parameters, check that the latency *ranking* is preserved across shares (Spearman rho), and pick
for a device by scaling proxy latency with the device's speed factor (SPINN's SF = T_real/T_proxy).
"""

from __future__ import annotations

import numpy as np

from testbed.models.registry import FAMILY, build_model


def measure_family(names: list[str] | None = None, input_shape: tuple[int, ...] = (1, 16, 16),
                   cpu_shares: tuple[float | None, ...] = (None,), repeats: int = 15,
                   num_classes: int = 10, limit: str = "cgroup") -> list[dict]:
    """FLOPs, params and batch-1 latency (ms, per CPU share) of every family member."""
    import torch

    from testbed.models.analysis import block_costs
    from testbed.models.profile import CFS_PERIOD_US, _time_ms, cpu_share_limit

    rows = []
    models = {}
    for name in names or FAMILY:
        model = build_model(name, num_classes=num_classes, in_channels=input_shape[0], input_size=input_shape[1])
        model.eval()
        models[name] = model
        costs = block_costs(model, input_shape)
        layers = sum(1 for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
        rows.append({"name": name, "flops": costs["flops_backbone_and_final_exit"],
                     "params": costs["params_total"], "layers": layers, "latency_ms": {}})
    x = torch.randn(1, *input_shape)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for share in cpu_shares:
            window = 3 * CFS_PERIOD_US / 1000 if share is not None else 0.0
            with cpu_share_limit(share, limit), torch.no_grad():
                for row in rows:
                    timing = _time_ms(lambda m=models[row["name"]]: m(x), repeats, 3, window)
                    row["latency_ms"][_share_key(share)] = timing["median_ms"]
    finally:
        torch.set_num_threads(previous)
    return rows


def _share_key(share: float | None) -> str:
    return "unlimited" if share is None else f"{share:g}"


def fit_latency_predictor(rows: list[dict], share: str = "unlimited") -> dict:
    """Least squares ``latency_ms = a * MFLOPs + b * layers + c`` on one share; returns coefs + R^2.

    At batch 1 on small inputs per-layer dispatch overhead rivals arithmetic, so the layer count
    (conv + linear) explains latency far better than parameters do.
    """
    features = np.array([[r["flops"] / 1e6, r["layers"], 1.0] for r in rows])
    latency = np.array([r["latency_ms"][share] for r in rows])
    coefs, *_ = np.linalg.lstsq(features, latency, rcond=None)
    predicted = features @ coefs
    residual = float(((latency - predicted) ** 2).sum())
    total = float(((latency - latency.mean()) ** 2).sum()) or 1.0
    return {"share": share, "ms_per_mflop": float(coefs[0]), "ms_per_layer": float(coefs[1]),
            "intercept_ms": float(coefs[2]), "r2": round(1 - residual / total, 4)}


def predict_latency(predictor: dict, flops: int, layers: int) -> float:
    return predictor["ms_per_mflop"] * flops / 1e6 + predictor["ms_per_layer"] * layers + predictor["intercept_ms"]


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (no ties expected in latency measurements)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def rank_monotonicity(rows: list[dict], reference: str = "unlimited") -> dict[str, float]:
    """Spearman rho between the reference share's latency ranking and every other share's."""
    base = [r["latency_ms"][reference] for r in rows]
    shares = [k for k in rows[0]["latency_ms"] if k != reference]
    return {k: round(spearman(base, [r["latency_ms"][k] for r in rows]), 4) for k in shares}


def select_variant(rows: list[dict], latency_budget_ms: float, speed_factor: float = 1.0,
                   accuracy: dict[str, float] | None = None, reference: str = "unlimited") -> dict | None:
    """Most accurate variant whose proxy latency x ``speed_factor`` fits the budget (None if none).

    Without measured ``accuracy`` the largest-FLOPs feasible variant is taken (bigger is better
    within a family is the usual prior).
    """
    feasible = [r for r in rows if r["latency_ms"][reference] * speed_factor <= latency_budget_ms]
    if not feasible:
        return None
    if accuracy:
        return max(feasible, key=lambda r: (accuracy.get(r["name"], -1.0), -r["flops"]))
    return max(feasible, key=lambda r: r["flops"])

"""Train the default models on digits, profile them, and print the tables of the models issue (#4).

    .venv/bin/python benchmarks/models.py [--out results/benchmarks/models] [--epochs 30]

Uses ``load_or_train`` with a cache under ``--out``, so a second run only re-profiles.
Needs root for the cgroup CPU shares (pass --no-cgroup otherwise).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from testbed.models.analysis import sparsity_report
from testbed.models.family import fit_latency_predictor, measure_family, rank_monotonicity
from testbed.models.profile import profile_checkpoint
from testbed.models.registry import FAMILY, build_model
from testbed.models.train import DataConfig, TrainConfig, checkpoint_dir, load_or_train

DEFAULT_MODELS = ["resnet20-ee", "resnet20-ee-sparse", "mobilenetv2-ee", "appealnet-cloud", "appealnet-edge"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/models"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--family-epochs", type=int, default=15)
    parser.add_argument("--no-cgroup", action="store_true")
    args = parser.parse_args()
    cache = args.out / "cache"
    data = DataConfig()
    train = TrainConfig(epochs=args.epochs)
    limit = "none" if args.no_cgroup else "cgroup"
    summary: dict = {"models": {}}
    for name in DEFAULT_MODELS:
        start = time.perf_counter()
        _, card = load_or_train(name, data, cache, train)
        directory = checkpoint_dir(name, data, train, None, cache)
        if "splits" in card:
            profile_checkpoint(directory, role="device", cpu_share=0.5, limit=limit, repeats=10)
            profile_checkpoint(directory, role="cloud", cpu_share=None, repeats=20)
        summary["models"][name] = {"dir": str(directory), "wall_s": round(time.perf_counter() - start, 1)}
        print(f"== {name}: {directory}")
    summary["sparsity"] = sparsity_report(build_model("resnet20-ee-sparse"), build_model("resnet20-ee"), (1, 16, 16))
    shares = (None, 1.0, 0.5, 0.25) if limit == "cgroup" else (None,)
    rows = measure_family(cpu_shares=shares, limit=limit)
    family_train = TrainConfig(epochs=args.family_epochs)
    for row in rows:
        _, card = load_or_train(row["name"], data, cache, family_train)
        row["final_exit_accuracy"] = card["exits"][-1]["test_accuracy"]
        row["train_seconds"] = card["training"]["train_seconds"]
    summary["family"] = {"rows": rows, "predictors": [fit_latency_predictor(rows, k) for k in rows[0]["latency_ms"]],
                         "rank_monotonicity": rank_monotonicity(rows)}
    assert [r["name"] for r in rows] == FAMILY
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

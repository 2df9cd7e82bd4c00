"""Train the device-aware candidate networks briefly on Fashion-MNIST and cache their accuracies.

    nice -n 10 .venv/bin/python scripts/train_nb201_candidates.py            # resume: skips cached ones
    nice -n 10 .venv/bin/python scripts/train_nb201_candidates.py --fresh    # retrain all

Writes ``testbed/selection/data/nb201-fashion-mnist.json`` after every network (so an interrupted run
keeps what it finished). Each candidate's cell is built by ``testbed.models.nasbench201`` at 28x28x1,
16/32/64 channels, with ``--cells-per-stage`` cells per stage (default 1: a reduced-depth proxy of the
measured 5-cell network, 3-6x cheaper to train, so the 30 candidates fit on two shared CPU cores), and
trained on the final classifier only. "Brief" is deliberate: these accuracies rank candidates for the
selection experiment; they are not the benchmark's converged accuracies (a 1,000-image test set has a
standard error of ~1.5 points).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.data import load_dataset  # noqa: E402
from testbed.models.nasbench201 import NASBench201Net  # noqa: E402
from testbed.models.train import TrainConfig, exit_logits, train_model  # noqa: E402
from testbed.selection.candidates import ACCURACY_JSON, DEFAULT_COUNT, choose_candidates  # noqa: E402
from testbed.selection.latency import load_measurements  # noqa: E402

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist


@torch.no_grad()
def recalibrate_batchnorm(model, x, batch_size: int = 250) -> None:
    """Re-estimate BatchNorm running statistics with the final weights.

    After a few dozen steps the running averages still mix statistics of much earlier weights, and
    eval-mode accuracy of some networks drops to chance although their training loss fell; a pass
    over training images in train mode (cumulative average, no gradient) removes that artefact.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative moving average over the recalibration batches
    model.train()
    for start in range(0, len(x), batch_size):
        model(torch.as_tensor(x[start:start + batch_size]))
    model.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=FASHION_MNIST)
    ap.add_argument("--count", type=int, default=DEFAULT_COUNT, help="number of candidates")
    ap.add_argument("--train-images", type=int, default=3000)
    ap.add_argument("--test-images", type=int, default=1000, help="first N of the official test set")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--cells-per-stage", type=int, default=1,
                    help="cells per stage of the trained network (the measured networks have 5)")
    ap.add_argument("--bn-images", type=int, default=1000, help="training images for BatchNorm recalibration")
    ap.add_argument("--out", default=str(ACCURACY_JSON))
    ap.add_argument("--fresh", action="store_true", help="ignore cached results")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    table = load_measurements()
    indices = choose_candidates(args.count, table)
    train = TrainConfig(epochs=args.epochs, batch_size=64, lr=3e-3, augment=False, seed=0, threads=1,
                        exit_weights=[0.0, 0.0, 1.0])
    dataset = load_dataset("idx", root=args.data_root, size=28, channels=1, seed=0, limit=args.train_images)
    x_test, y_test = dataset.test.x[:args.test_images], dataset.test.y[:args.test_images]
    settings = {
        "command": "nice -n 10 .venv/bin/python scripts/train_nb201_candidates.py"
                   + (f" --count {args.count}" if args.count != DEFAULT_COUNT else ""),
        "dataset": {"name": "fashion-mnist (IDX)", "root": args.data_root, "input_shape": [1, 28, 28],
                    "train_images": len(dataset.train), "test_images": len(y_test),
                    "test_subset": f"first {len(y_test)} images of the official 10,000-image test set",
                    "sha256": dataset.checksums()},
        "model": f"testbed.models.nasbench201.NASBench201Net(arch, in_channels=1, input_size=28, "
                 f"cells_per_stage={args.cells_per_stage}) - 3 stages x {args.cells_per_stage} cell(s), 16/32/64 "
                 "channels (the latency data is of the 5-cell networks; fewer cells = a reduced-depth proxy "
                 "for the architecture's accuracy)",
        "training": {**asdict(train), "loss": "final classifier only (exit weights 0, 0, 1)",
                     "optimizer": "AdamW + one-cycle LR (testbed.models.train.train_model)",
                     "bn_recalibration": f"running statistics re-estimated on the first {args.bn_images} "
                                         "training images after training"},
        "host": {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
                 "threads": 1},
        "latency_csv_sha256": table.sha256,
    }
    out = Path(args.out)
    cached = {}
    if out.is_file() and not args.fresh:
        previous = json.loads(out.read_text())
        if previous.get("settings", {}).get("training") == settings["training"] and \
                previous["settings"]["dataset"] == settings["dataset"]:
            if previous["settings"]["model"] == settings["model"]:
                cached = {int(k): v for k, v in previous["candidates"].items()}
    results = {i: cached[i] for i in indices if i in cached}
    for n, index in enumerate(indices, start=1):
        if index in results:
            continue
        arch = table.archs[index]
        model = NASBench201Net(arch, num_classes=10, in_channels=1, input_size=28, arch_index=index,
                               cells_per_stage=args.cells_per_stage)
        history = train_model(model, dataset, train)
        start = time.perf_counter()
        recalibrate_batchnorm(model, dataset.train.x[:args.bn_images])
        logits = exit_logits(model, x_test)[-1]
        accuracy = float((logits.argmax(1).numpy() == y_test).mean())
        results[index] = {"arch": arch, "accuracy": round(accuracy, 4),
                          "parameters": sum(p.numel() for p in model.parameters()),
                          "train_seconds": history["train_seconds"],
                          "eval_seconds": round(time.perf_counter() - start, 2),
                          "final_loss": history["loss_history"][-1]}
        print(f"[{n}/{len(indices)}] nb201-{index}: accuracy {accuracy:.4f}, "
              f"train {history['train_seconds']:.0f} s", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"settings": settings, "candidates": {str(k): results[k] for k in sorted(results)}}
        out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"{len(results)} candidates in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

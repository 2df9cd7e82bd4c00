"""Rebuild the shipped checkpoints: ``bash scripts/build_checkpoints.sh [GROUP ...]``.

Each entry is trained exactly as ``load_or_train(name, data, train=TrainConfig())`` would train it on
a cache miss (the dataset's recipe, seeds fixed), so its directory name is the cache entry
``load_or_train`` looks up. Groups: ``fashion`` (quickstart and paper experiments), ``digits32``
(the runtime tests' 32x32 digits models), ``digits16`` (the experiment runner's tests), ``nb201``
(the ``device-aware`` strategy's candidates: measured NAS-Bench-201 networks, 5 cells per stage as
measured, on Fashion-MNIST at 32x32, the latency data's input size).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

import torch

from testbed.models.train import (
    SHIPPED_DIR,
    SHIPPED_SUMS,
    DataConfig,
    TrainConfig,
    checkpoint_dir,
    read_card,
    train_and_card,
)

GROUPS: dict[str, tuple[DataConfig, list[str]]] = {
    "fashion": (DataConfig(name="fashion-mnist"),
                ["resnet20-ee-wide", "appealnet-cloud", "appealnet-edge", "resnet20-ee",
                 "resnet20-ee-sparse", "resnet-ee-w2.0-d3"]),
    "digits32": (DataConfig(name="digits", size=32, channels=1),
                 ["resnet-ee-w2.0-d3", "resnet20-ee-sparse", "appealnet-cloud", "appealnet-edge"]),
    "digits16": (DataConfig(name="digits"), ["resnet20-ee"]),
    "nb201": (DataConfig(name="fashion-mnist", size=32),
              ["nb201-522", "nb201-1548", "nb201-1296", "nb201-1427", "nb201-892", "nb201-1304"]),
}
# Registry names for the same network (class and configuration): trained with the same seeds and
# configuration they get the same weights, so the second one's entry reuses the first one's instead of
# training again (its card keeps the measured evaluation, under its own name and key).
SAME_NETWORK = {"appealnet-cloud": "resnet20-ee-wide"}
# Training here uses one thread (shared 2-core hosts); the thread count is not part of the cache key.
BUILD_TRAIN = TrainConfig(threads=1)
# Groups shipped with their validation exit outputs (testbed.runtime.execution.validation_outputs, keyed by
# weights, card and validation arrays): a device agent holding all six NB201 candidates would otherwise
# spend minutes on 6 x 9,000 validation images at its first start, past the session's ready timeout.
WITH_VALIDATION_OUTPUTS = {"nb201"}


def write_sums() -> None:
    lines = []
    for model in sorted(SHIPPED_DIR.glob("*/model.pt")):
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        lines.append(f"{digest}  {model.parent.name}/model.pt")
    SHIPPED_SUMS.write_text("\n".join(lines) + "\n")


def reuse_weights(name: str, twin: str, data: DataConfig, twin_dir, directory) -> dict:
    from testbed.models.registry import resolve
    from testbed.models.train import config_hash, load_checkpoint, save_checkpoint

    if resolve(name) != resolve(twin):
        raise SystemExit(f"{name} and {twin} are different networks: {resolve(name)} vs {resolve(twin)}")
    model, card = load_checkpoint(twin_dir)
    card = {**card, "model": name, "config_hash": config_hash(name, card["model_kwargs"], data, BUILD_TRAIN),
            "weights_from": f"{twin_dir.name} (same network, seeds and training configuration)"}
    save_checkpoint(model, card, directory)
    return card


def ship_validation_outputs(directory, data: DataConfig) -> str:
    """Compute the validation outputs as a device agent would, into ``directory`` (the key's file name)."""
    import shutil
    import tempfile
    from pathlib import Path

    from testbed.models.train import load_checkpoint
    from testbed.runtime.execution import validation_outputs

    if list(directory.glob("val-outputs-*.npz")):
        return "present"
    dataset = data.load()
    with tempfile.TemporaryDirectory() as tmp:  # validation_outputs never writes into SHIPPED_DIR itself
        copy = Path(tmp) / directory.name
        shutil.copytree(directory, copy)
        model, card = load_checkpoint(copy)
        validation_outputs(model, card, dataset.val.x, dataset.val.y, checkpoint_dir=copy)
        written = sorted(copy.glob("val-outputs-*.npz"))
        for path in written:
            shutil.copy2(path, directory / path.name)
    return ", ".join(p.name for p in written)


def entries(groups: list[str]):
    for group in groups:
        data, names = GROUPS[group]
        for name in names:
            yield group, name, data


def build(groups: list[str], force: bool = False) -> int:
    torch.set_num_threads(1)
    for group, name, data in entries(groups):
        directory = checkpoint_dir(name, data, BUILD_TRAIN, None, SHIPPED_DIR)
        if not force and (directory / "model.pt").is_file() and (directory / "card.json").is_file():
            print(f"{group:9s} {name:20s} up to date: {directory.name}", flush=True)
            continue
        start = time.monotonic()
        twin = SAME_NETWORK.get(name)
        twin_dir = checkpoint_dir(twin, data, BUILD_TRAIN, None, SHIPPED_DIR) if twin else None
        if twin_dir is not None and (twin_dir / "model.pt").is_file():
            card = reuse_weights(name, twin, data, twin_dir, directory)
            print(f"{group:9s} {name:20s} same network as {twin}: weights reused", flush=True)
            write_sums()
            continue
        _, card = train_and_card(name, data, BUILD_TRAIN, out_dir=directory)
        accuracies = " ".join(f"{e['test_accuracy']:.3f}" for e in card["exits"])
        print(f"{group:9s} {name:20s} trained in {time.monotonic() - start:.0f} s; test accuracy per exit: "
              f"{accuracies}; {directory.name}", flush=True)
        write_sums()
    write_sums()
    for group, name, data in entries(groups):
        if group in WITH_VALIDATION_OUTPUTS:
            written = ship_validation_outputs(checkpoint_dir(name, data, BUILD_TRAIN, None, SHIPPED_DIR), data)
            print(f"{group:9s} {name:20s} validation outputs: {written}", flush=True)
    stale = [p.name for p in SHIPPED_DIR.iterdir() if p.is_dir() and p.name not in
             {checkpoint_dir(n, d, BUILD_TRAIN, None, SHIPPED_DIR).name for _, n, d in entries(list(GROUPS))}]
    if stale:
        print(f"not listed in GROUPS (stale, delete them): {', '.join(sorted(stale))}")
    for _, name, data in entries(groups):
        card = read_card(checkpoint_dir(name, data, BUILD_TRAIN, None, SHIPPED_DIR))
        if card.get("appeal"):
            print(f"{name} on {data.name}: AUROC for edge-correct, q {card['appeal']['auroc_edge_correct']['q']}"
                  f" vs max-softmax {card['appeal']['auroc_edge_correct']['max_softmax']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", help="default: all groups")
    parser.add_argument("--force", action="store_true", help="retrain entries that already exist")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    return build(args.groups or list(GROUPS), args.force)


if __name__ == "__main__":
    sys.exit(main())

"""The examples/ of your own model, strategy and dataset, each run as an experiment on real Mininet (root)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from testbed.experiment import read_manifest, run_experiment

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (Mininet, tc)")]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("TESTBED_LOCK_WAIT", os.environ.get("TESTBED_LOCK_WAIT", "900"))
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "cache"))  # the examples' models train here
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # restored after the test
    monkeypatch.chdir(tmp_path)  # references resolve from the experiment's folder, not the cwd
    pytest.importorskip("testbed.runtime.session")


def run_example(folder: str, tmp_path: Path) -> tuple[Path, list[dict], dict]:
    """Train the example's model here on one thread (the session would train the same checkpoint with
    two: threads are not part of the cache key, and two threads crawl on a shared 2-core box), then run
    the experiment, which loads it from the cache; exactly one checkpoint in the cache proves that."""
    import torch

    from testbed.experiment.schema import load_experiment
    from testbed.models import load_or_train
    from testbed.models.train import DataConfig, TrainConfig

    experiment = REPO / "examples" / folder / "experiment.yaml"
    raw = load_experiment(experiment).raw
    threads = torch.get_num_threads()
    try:
        load_or_train(raw["model"], DataConfig(name=raw.get("data", "digits")), train=TrainConfig(threads=1))
    finally:
        torch.set_num_threads(threads)
    run = run_experiment(experiment, out=tmp_path / "results", progress=False)
    manifest = read_manifest(run)
    assert manifest["status"] == "complete", manifest.get("failed_units")
    [unit] = [p for p in (run / "cells" / "c00").iterdir() if p.is_dir()]
    records = [json.loads(line) for line in (unit / "r0" / "records.jsonl").read_text().splitlines() if line]
    [card_path] = (tmp_path / "cache" / "models").glob("*/card.json")
    return unit, records, json.loads(card_path.read_text())


def test_custom_early_exit_model_under_spinn(tmp_path):
    unit, records, card = run_example("custom_model", tmp_path)
    assert card["model"] == "tiny_ee.py:build" and card["split_points"] == ["input", "conv1", "conv2", "conv3"]
    assert [e["after"] for e in card["exits"]] == ["conv1", "conv3"]
    assert unit.name == "spinn" and len(records) >= 20
    assert {r["strategy"] for r in records} == {"spinn"}
    answered = [r for r in records if r["outcome"] in ("device_exit", "cloud", "fallback_exit")]
    assert len(answered) >= 0.8 * len(records)
    assert {r["split"] for r in answered} <= set(card["split_points"])
    assert sum(r["correct"] for r in answered) >= 0.5 * len(answered)


def test_custom_threshold_policy(tmp_path):
    unit, records, card = run_example("custom_strategy", tmp_path)
    assert unit.name == "confidence-gate" and len(records) >= 30
    assert {r["strategy"] for r in records} == {"confidence-gate"}
    outcomes = {r["outcome"] for r in records}
    # The policy answers confident first-exit samples on the device and ships the rest from conv1.
    assert "device_exit" in outcomes and "cloud" in outcomes, outcomes
    assert all(r["split"] == "conv1" for r in records if r["outcome"] == "cloud")
    assert all(r["exit_index"] == 0 for r in records if r["outcome"] == "device_exit" and r["split"] == "conv1")


def test_custom_dataset_with_a_plain_sequential_model(tmp_path):
    unit, records, card = run_example("custom_dataset", tmp_path)
    assert card["dataset"]["name"] == "shapes_data.py:load" and card["dataset"]["num_classes"] == 3
    assert card["dataset"]["sizes"] == {"train": 900, "val": 200, "test": 200}
    assert card["split_points"][0] == "input" and card["split_points"][-1] == "layer9"
    assert unit.name == "neurosurgeon" and len(records) >= 20
    assert {r["label"] for r in records} <= {0, 1, 2}
    answered = [r for r in records if r["outcome"] in ("device_exit", "cloud")]
    assert len(answered) >= 0.8 * len(records)
    assert {r["split"] for r in answered} <= set(card["split_points"])

"""Your data from disk: ``data: {name: cifar10, root: DIR}`` in an experiment, validated once in the
schema, carried to the training cache key, the session and the device agents, and run end to end."""

from __future__ import annotations

import math
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from testbed.errors import ConfigError
from testbed.experiment import load_experiment, parse_experiment

REPO = Path(__file__).resolve().parents[1]
# Ten well-separated colours: a class is its colour (plus noise and a class-dependent stripe), so a
# tiny CNN learns it in a few epochs.
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [128, 128, 0], [0, 0, 128]], dtype=np.float64)


def write_cifar10(root: Path, per_batch: int = 50, test: int = 60, seed: int = 0) -> Path:
    """A tiny CIFAR-10 directory in the python-pickle layout (data_batch_1..5, test_batch, batches.meta)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def batch(n: int, label: str) -> dict:
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = PALETTE[labels][:, None, None, :] + rng.normal(0, 25, (n, 32, 32, 3))  # N,H,W,C
        for i, cls in enumerate(labels):
            images[i, (cls % 4) * 8:(cls % 4) * 8 + 4, :, :] = 255 - PALETTE[cls]  # class-dependent stripe
        rows = np.clip(images, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2).reshape(n, 3072)
        return {b"batch_label": label.encode(), b"labels": [int(v) for v in labels], b"data": rows,
                b"filenames": [f"{label}-{i}.png".encode() for i in range(n)]}

    for k in range(1, 6):
        (root / f"data_batch_{k}").write_bytes(pickle.dumps(batch(per_batch, f"training batch {k} of 5")))
    (root / "test_batch").write_bytes(pickle.dumps(batch(test, "testing batch 1 of 1")))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"colour{i}".encode() for i in range(10)],
                                                      b"num_cases_per_batch": per_batch, b"num_vis": 3072}))
    return root


def experiment(**changes) -> dict:
    raw = {"name": "disk-data", "topology": str(REPO / "topologies" / "device-cloud.yaml"),
           "params": {"device_cpu": 0.5, "cloud_cpu": 1.0},
           "traces": {"access": {"constant": {"down": 20, "up": 5}, "duration": 60}},
           "strategies": ["device-only"], "workload": {"fps": 5, "duration_s": 4, "deadline_s": 0.5}}
    raw.update(changes)
    return raw


def error_of(raw: dict, base: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_experiment(raw, "exp.yaml", base=base)
    return info.value


@pytest.fixture
def cifar(tmp_path) -> Path:
    return write_cifar10(tmp_path / "cifar-10-batches-py")


# --- (a) the schema ------------------------------------------------------------------------------


def test_the_dict_form_is_accepted_and_a_relative_root_resolves_against_the_yaml_file(tmp_path, cifar):
    from testbed.experiment.runner import session_settings

    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(experiment(
        data={"name": "cifar10", "root": "cifar-10-batches-py", "limit": 200},
        data_options={"size": 16, "channels": 3})))
    other = tmp_path / "elsewhere"
    other.mkdir()
    cwd = os.getcwd()
    os.chdir(other)  # not the YAML's folder: the root still resolves next to the file
    try:
        exp = load_experiment(tmp_path / "exp.yaml")
    finally:
        os.chdir(cwd)
    [cell], [strategy] = exp.cells, exp.strategies
    settings = session_settings(exp, cell, strategy, 0)
    assert settings["data"] == "cifar10" and settings["data_root"] == str(cifar.resolve())
    assert settings["data_options"] == {"size": 16, "channels": 3, "limit": 200}
    # the plain string form is unchanged: no root, no new keys in the session settings
    plain = session_settings(*(lambda e: (e, e.cells[0], e.strategies[0], 0))(
        parse_experiment(experiment(data="digits"), "exp.yaml", base=tmp_path)))
    assert plain["data"] == "digits" and "data_root" not in plain and "data_options" not in plain


@pytest.mark.parametrize("data, where, words", [
    ({"name": "cifar10"}, "exp.yaml: data.root", ["missing", "root: DIR"]),
    ({"name": "cifar10", "root": "no-such-dir"}, "exp.yaml: data.root", ["'no-such-dir' not found"]),
    ({"name": "cifar100", "root": "cifar-10-batches-py"}, "exp.yaml: data.root", ["cifar100 expects files", "train"]),
    ({"name": "imagenet", "root": "cifar-10-batches-py"}, "exp.yaml: data.name",
     ["must be one of", "cifar10", "imagefolder", "module:callable", "'imagenet'"]),
    ({"root": "cifar-10-batches-py"}, "exp.yaml: data.name", ["missing", "cifar10"]),
    ({"name": "cifar10", "root": "cifar-10-batches-py", "path": "x"}, "exp.yaml: data.path",
     ["unknown key", "name:", "root:", "limit:"]),
    ({"name": "cifar10", "root": "cifar-10-batches-py", "limit": 0}, "exp.yaml: data.limit", ["> 0"]),
    ({"name": "digits", "root": "cifar-10-batches-py"}, "exp.yaml: data.root", ["takes no root"]),
    ("cifar10", "exp.yaml: data", ["{name: cifar10, root: DIR}"]),
    (["cifar10"], "exp.yaml: data", ["must be a mapping"]),
])
def test_bad_data_specs_name_the_key_and_what_is_allowed(tmp_path, cifar, data, where, words):
    err = error_of(experiment(data=data), tmp_path)
    assert err.where == where, str(err)
    for word in words:
        assert word in err.message, str(err)


def test_errors_name_the_yaml_file(tmp_path, cifar):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(experiment(data={"name": "cifar10"})))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert info.value.where == f"{path}: data.root"
    # a missing file inside the directory is named with the directory
    (cifar / "test_batch").unlink()
    path.write_text(yaml.safe_dump(experiment(data={"name": "cifar10", "root": str(cifar)})))
    with pytest.raises(ConfigError, match="missing: test_batch") as info:
        load_experiment(path)
    assert info.value.where == f"{path}: data.root" and str(cifar) in info.value.message


def test_data_sweeps_are_validated_per_value(tmp_path, cifar):
    second = write_cifar10(tmp_path / "second", seed=1)
    exp = parse_experiment(experiment(data={"name": "cifar10", "root": str(cifar)},
                                      sweep={"data.root": [str(cifar), "second"]}), "exp.yaml", base=tmp_path)
    from testbed.experiment.runner import session_settings

    roots = [session_settings(exp, c, exp.strategies[0], 0)["data_root"] for c in exp.cells]
    assert roots == [str(cifar.resolve()), str(second.resolve())]
    err = error_of(experiment(data={"name": "cifar10", "root": str(cifar)}, sweep={"data.root": ["nope"]}), tmp_path)
    assert err.where == "exp.yaml: sweep.data.root[0]" and "not found" in err.message
    err = error_of(experiment(sweep={"data": ["digits", {"name": "idx", "root": str(cifar)}]}), tmp_path)
    assert err.where == "exp.yaml: sweep.data[1].root" and "train-images-idx3" in err.message
    err = error_of(experiment(data="digits", sweep={"data.root": [str(cifar)]}), tmp_path)
    assert err.where == "exp.yaml: sweep.data.root" and "{name, root" in err.message


def test_the_model_cache_key_differs_per_dataset_and_root(tmp_path):
    from testbed.models import checkpoint_dir
    from testbed.models.train import DataConfig, TrainConfig

    train = TrainConfig()
    keys = {checkpoint_dir("resnet20-ee", DataConfig(**data), train, None, tmp_path).name for data in (
        {"name": "cifar10", "root": "/data/a"}, {"name": "cifar10", "root": "/data/b"},
        {"name": "cifar100", "root": "/data/a"}, {"name": "digits"})}
    assert len(keys) == 4


# --- (b) end to end on real Mininet ---------------------------------------------------------------


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (Mininet, tc)")
def test_an_experiment_on_your_cifar10_directory_runs_end_to_end(tmp_path, cifar, monkeypatch):
    """Train a tiny early-exit model on the synthetic CIFAR-10 (one thread, as test_extending does),
    then run SPINN (device and cloud both load that checkpoint; the devices send the directory's
    test images): exactly one checkpoint in the cache proves the session found it under the same key."""
    pytest.importorskip("testbed.runtime.session")
    import torch

    from testbed.analysis.metrics import load_units
    from testbed.experiment import read_manifest, run_experiment
    from testbed.models import load_or_train
    from testbed.models.train import DataConfig, TrainConfig

    monkeypatch.setenv("TESTBED_LOCK_WAIT", os.environ.get("TESTBED_LOCK_WAIT", "900"))
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "examples" / "custom_model" / "tiny_ee.py", tmp_path / "tiny_ee.py")
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment(
        model="tiny_ee.py:build", data={"name": "cifar10", "root": "cifar-10-batches-py"},
        data_options={"size": 16, "channels": 3}, strategies=["spinn"])))
    exp = load_experiment(path)
    threads = torch.get_num_threads()
    try:
        _, card = load_or_train("tiny_ee.py:build", DataConfig(name="cifar10", root=str(cifar.resolve()), size=16,
                                                               channels=3), train=TrainConfig(threads=1))
    finally:
        torch.set_num_threads(threads)
    assert card["dataset"]["source"] == str(cifar.resolve()) and card["dataset"]["input_shape"] == [3, 16, 16]
    assert card["exits"][-1]["test_accuracy"] > 0.5, card["exits"]  # the colours are learnable

    run = run_experiment(path, out=tmp_path / "results", progress=False)
    manifest = read_manifest(run)
    assert manifest["status"] == "complete", manifest.get("failed_units")
    assert [u.strategy for u in load_units(run)] == ["spinn"]
    [unit] = load_units(run)
    assert unit.info["settings"]["data_root"] == str(cifar.resolve())
    assert len(unit.records) >= 10 and {r["strategy"] for r in unit.records} == {"spinn"}
    assert {r["label"] for r in unit.records} <= set(range(10))
    accuracy = unit.metrics["accuracy"]
    assert isinstance(accuracy, float) and math.isfinite(accuracy), unit.metrics
    [card_path] = (tmp_path / "cache" / "models").glob("*/card.json")  # the session reused it
    assert "cifar10" in card_path.parent.name
    assert exp.raw["data"] == {"name": "cifar10", "root": "cifar-10-batches-py"}

"""Training, evaluation, calibration, checkpoints and the model-card cache.

All exits train jointly on a weighted sum of their cross-entropies (BranchyNet / SDN), with fixed
seeds and a fixed thread count so a config hash identifies a result. Each exit then gets its own
temperature fitted on the validation split, because strategies gate on softmax confidence and
raw early-exit confidences are miscalibrated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from testbed.data import Dataset, load_dataset
from testbed.errors import TestbedError
from testbed.models.registry import build_model

log = logging.getLogger(__name__)

CARD_VERSION = 2  # bump when training or card semantics change: invalidates caches
DEFAULT_CACHE = Path("results/cache/models")


class CheckpointError(TestbedError):
    """A checkpoint or model card cannot be read; names the file."""


@dataclass
class TrainConfig:
    """Everything that changes the trained weights (hashed into the cache key)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    exit_weights: list[float] | None = None  # None: equal weights for every exit
    augment: bool = True
    seed: int = 0
    threads: int = 2
    appeal_cost: float = 0.3  # AppealNet only: lam in appeal_loss
    cloud_model: str = "appealnet-cloud"  # AppealNet only: which cloud model the edge appeals to


@dataclass
class DataConfig:
    name: str = "digits"
    size: int = 16
    channels: int = 1
    root: str | None = None
    seed: int = 0
    limit: int | None = None
    extra: dict = field(default_factory=dict)

    def load(self) -> Dataset:
        return load_dataset(self.name, root=self.root, size=self.size, channels=self.channels,
                            seed=self.seed, limit=self.limit, **self.extra)


def _seed_everything(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(max(1, threads))


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to 1/8 of the image (border padded): cheap, label-preserving."""
    n = x.shape[0]
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.25
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def _batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def train_model(model, dataset: Dataset, config: TrainConfig, teacher=None) -> dict:
    """Train ``model`` in place on ``dataset.train``; returns timing and loss history.

    With ``teacher`` (a trained cloud model) the model must be an ``AppealEdgeNet`` and is trained
    with the AppealNet joint objective against the teacher's per-example loss.
    """
    from testbed.models.appeal import appeal_loss

    _seed_everything(config.seed, config.threads)
    generator = torch.Generator().manual_seed(config.seed)
    x_train = torch.from_numpy(dataset.train.x)
    y_train = torch.from_numpy(dataset.train.y)
    teacher_loss = None
    if teacher is not None:
        teacher.eval()
        with torch.no_grad():
            teacher_loss = F.cross_entropy(teacher(x_train), y_train, reduction="none")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * ((len(y_train) + config.batch_size - 1) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(1, steps))
    num_exits = len(model.forward_all_exits(x_train[:2]))
    weights = config.exit_weights or [1.0] * num_exits
    if len(weights) != num_exits:
        raise ValueError(f"exit_weights has {len(weights)} entries, model has {num_exits} exits")
    history = []
    start = time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        total, count = 0.0, 0
        for idx in _batches(len(y_train), config.batch_size, generator):
            x, y = x_train[idx], y_train[idx]
            if config.augment:
                x = _augment(x, generator)
            if teacher_loss is not None and epoch >= config.epochs // 2:
                # Second half: AppealNet joint objective. The first half trains the classifier alone,
                # because an untrained edge loses to the cloud everywhere and q would collapse to 0.
                # The teacher's loss is on clean images; augmentation is a small shift, so it still
                # measures how hard the example is for the cloud.
                logits, q = model.forward_with_appeal(x)
                loss = appeal_loss(logits, q, y, teacher_loss[idx], appeal_cost=config.appeal_cost)
            else:
                outputs = model.forward_all_exits(x)
                loss = sum(w * F.cross_entropy(o, y) for w, o in zip(weights, outputs, strict=True)) / sum(weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
        history.append(round(total / count, 5))
        log.debug("epoch %d loss %.4f", epoch + 1, history[-1])
    model.eval()
    return {"train_seconds": round(time.perf_counter() - start, 2), "loss_history": history,
            "config": asdict(config)}


# --- evaluation ----------------------------------------------------------------------------------


@torch.no_grad()
def exit_logits(model, x: np.ndarray | torch.Tensor, batch_size: int = 256) -> list[torch.Tensor]:
    """Logits of every exit for all images (eval mode, batched)."""
    model.eval()
    x = torch.as_tensor(x)
    chunks = [model.forward_all_exits(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017)."""
    probs = F.softmax(logits, dim=1)
    confidence, prediction = probs.max(1)
    correct = (prediction == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += float(in_bin.float().mean()) * abs(float(confidence[in_bin].mean() - correct[in_bin].mean()))
    return ece


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature minimising validation NLL, by a log-spaced grid (robust, no optimiser state)."""
    grid = torch.logspace(-1.0, 1.0, 81)
    nll = torch.stack([F.cross_entropy(logits / t, labels) for t in grid])
    return float(grid[int(nll.argmin())])


def evaluate_exits(model, dataset: Dataset) -> list[dict]:
    """Per-exit test accuracy, fitted temperature and ECE before/after temperature scaling."""
    val_logits = exit_logits(model, dataset.val.x)
    test_logits = exit_logits(model, dataset.test.x)
    y_val, y_test = torch.from_numpy(dataset.val.y), torch.from_numpy(dataset.test.y)
    rows = []
    for index, (val, test) in enumerate(zip(val_logits, test_logits, strict=True)):
        temperature = fit_temperature(val, y_val)
        calibrated = F.softmax(test / temperature, 1).max(1).values
        rows.append({
            "index": index,
            "after": model.exits[index].after if hasattr(model, "exits") else "final",
            "test_accuracy": round(float((test.argmax(1) == y_test).float().mean()), 4),
            "val_accuracy": round(float((val.argmax(1) == y_val).float().mean()), 4),
            "temperature": round(temperature, 4),
            "ece_raw": round(expected_calibration_error(test, y_test), 4),
            "ece_calibrated": round(expected_calibration_error(test / temperature, y_test), 4),
            "mean_calibrated_confidence": round(float(calibrated.mean()), 4),
        })
    return rows


# --- cards and checkpoints -----------------------------------------------------------------------


def host_description() -> dict:
    """Where a measurement was taken (profiles and training times are host-specific)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"hostname": platform.node(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version()}


def config_hash(name: str, model_kwargs: dict, data: DataConfig, train: TrainConfig) -> str:
    from testbed.user_code import fingerprint, is_user_ref

    content = {"card_version": CARD_VERSION, "model": name, "model_kwargs": model_kwargs,
               "data": asdict(data), "train": asdict(train)}
    # User code (module:callable) can change under the same name: its source is part of the key.
    user_code = {ref: fingerprint(ref) for ref in (name, data.name) if is_user_ref(ref)}
    if user_code:
        content["user_code"] = user_code
    payload = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def build_card(model, name: str, model_kwargs: dict, dataset: Dataset, training: dict,
               data: DataConfig, train: TrainConfig) -> dict:
    """The model card: what strategies need to plan (accuracy, confidence, costs, bytes, profiles)."""
    from testbed.models.analysis import block_costs, split_bytes

    card: dict = {
        "card_version": CARD_VERSION,
        "model": name,
        "model_kwargs": model_kwargs,
        "model_config": model.config,
        "config_hash": config_hash(name, model_kwargs, data, train),
        "dataset": dataset.describe(),
        "training": {**training, "host": host_description()},
        "exits": evaluate_exits(model, dataset),
    }
    if hasattr(model, "split_points"):
        costs = block_costs(model, dataset.input_shape)
        card["split_points"] = list(model.split_points)
        card["params_total"] = costs["params_total"]
        card["flops_total_all_exits"] = costs["flops_total_all_exits"]
        card["flops_backbone_and_final_exit"] = costs["flops_backbone_and_final_exit"]
        card["blocks"] = costs["blocks"]
        card["exit_costs"] = costs["exits"]
        bytes_by_split = {row["name"]: row for row in split_bytes(model, torch.from_numpy(dataset.test.x))}
        card["splits"] = [{**row, "bytes": bytes_by_split[row["name"]]} for row in costs["splits"]]
        for row in card["exits"]:
            row["device_flops_to_exit"] = next(s["device_flops"] for s in card["splits"] if s["name"] == row["after"])
    else:
        card["params_total"] = sum(p.numel() for p in model.parameters())
    # Filled by `testbed models profile`; "gpu" is a slot for the separate GPU profile.
    card["profiles"] = {"device": None, "cloud": None, "gpu": None}
    return card


def save_checkpoint(model, card: dict, directory: str | Path) -> Path:
    """Write ``model.pt`` (weights + how to rebuild) and ``card.json`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"model": card["model"], "model_kwargs": card["model_kwargs"],
                "state_dict": model.state_dict(), "config_hash": card["config_hash"]}, directory / "model.pt")
    write_card(card, directory / "card.json")
    return directory


def write_card(card: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def read_card(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "card.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no model card (train with `testbed models train`)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: model card is not valid JSON ({exc})") from None


def load_checkpoint(directory: str | Path):
    """Rebuild a model from ``directory/model.pt``; returns (model in eval mode, card)."""
    directory = Path(directory)
    path = directory / "model.pt"
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    model = build_model(blob["model"], **blob["model_kwargs"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, read_card(directory)


# --- one-call entry points -----------------------------------------------------------------------


def _model_kwargs_for(name: str, dataset: Dataset, overrides: dict | None) -> dict:
    channels, size, _ = dataset.input_shape
    return {"num_classes": dataset.num_classes, "in_channels": channels, "input_size": size, **(overrides or {})}


def train_and_card(name: str, data: DataConfig | None = None, train: TrainConfig | None = None,
                   model_kwargs: dict | None = None, out_dir: str | Path | None = None,
                   dataset: Dataset | None = None, teacher=None):
    """Build, train and evaluate ``name``; save checkpoint + card to ``out_dir`` if given."""
    data = data or DataConfig()
    train = train or TrainConfig()
    dataset = dataset or data.load()
    kwargs = _model_kwargs_for(name, dataset, model_kwargs)
    _seed_everything(train.seed, train.threads)
    model = build_model(name, **kwargs)
    if name == "appealnet-edge" and teacher is None:
        teacher, _ = load_or_train(train.cloud_model, data, cache_dir=out_dir and Path(out_dir).parent,
                                   train=TrainConfig(**{**asdict(train), "exit_weights": None}))
    training = train_model(model, dataset, train, teacher=teacher if name == "appealnet-edge" else None)
    card = build_card(model, name, kwargs, dataset, training, data, train)
    if name == "appealnet-edge":
        card["appeal"] = _appeal_summary(model, teacher, dataset, train)
    if out_dir is not None:
        save_checkpoint(model, card, out_dir)
    return model, card


def _appeal_summary(edge, cloud, dataset: Dataset, train: TrainConfig) -> dict:
    from testbed.models.appeal import appeal_tradeoff

    x, y = torch.from_numpy(dataset.test.x), torch.from_numpy(dataset.test.y)
    with torch.no_grad():
        edge_logits, q = edge.forward_with_appeal(x)
        cloud_logits = cloud(x)
    return {"cloud_model": train.cloud_model, "appeal_cost": train.appeal_cost,
            "cloud_test_accuracy": round(float((cloud_logits.argmax(1) == y).float().mean()), 4),
            "mean_q": round(float(q.mean()), 4),
            "tradeoff": appeal_tradeoff(edge_logits, q, cloud_logits, y)}


def default_cache_dir() -> Path:
    return Path(os.environ.get("TESTBED_CACHE", "")) / "models" if os.environ.get("TESTBED_CACHE") else DEFAULT_CACHE


def checkpoint_dir(name: str, data: DataConfig, train: TrainConfig, model_kwargs: dict | None = None,
                   cache_dir: str | Path | None = None) -> Path:
    """Cache location of a configuration: ``<cache>/<name>-<data>-<config hash[:16]>``."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    key = f"{name}-{data.name}".replace("/", "_").replace(":", "_")  # user references are paths
    return cache / f"{key}-{config_hash(name, model_kwargs or {}, data, train)[:16]}"


def load_or_train(name: str, data: DataConfig | str = "digits", cache_dir: str | Path | None = None,
                  train: TrainConfig | None = None, model_kwargs: dict | None = None):
    """Return (model, card) from ``cache_dir/<name>-<hash>/``, training and caching on a miss.

    The key hashes model name + kwargs, data config and train config, so changing any of them
    retrains instead of silently reusing stale weights.
    """
    data = DataConfig(name=data) if isinstance(data, str) else data
    train = train or TrainConfig()
    directory = checkpoint_dir(name, data, train, model_kwargs, cache_dir)
    if (directory / "model.pt").is_file() and (directory / "card.json").is_file():
        log.info("model %s: using cached %s", name, directory)
        model, card = load_checkpoint(directory)
    else:
        log.info("model %s: training on %s (cache miss: %s)", name, data.name, directory)
        model, card = train_and_card(name, data, train, model_kwargs, out_dir=directory)
    attach_stored_gpu_profile(card, directory.name)
    return model, card


GPU_PROFILE_FILES = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def attach_stored_gpu_profile(card: dict, key: str) -> None:
    """Fill ``profiles.gpu`` from a GPU profile measured elsewhere for this exact checkpoint key.

    CI and most users have no GPU; profiles measured once on a lent GPU machine are committed as
    ``benchmarks/results/gpu_profiles_*.json`` (see ``benchmarks/gpu_profile.py``) and labelled as such.
    """
    profiles = card.setdefault("profiles", {"device": None, "cloud": None, "gpu": None})
    if profiles.get("gpu"):
        return
    for path in sorted(GPU_PROFILE_FILES.glob("gpu_profiles_*.json")):
        stored = json.loads(path.read_text()).get(key)
        if stored:
            profiles["gpu"] = {**stored, "source": f"measured on {stored.get('gpu', 'a GPU')}, stored in "
                                                   f"{path.relative_to(GPU_PROFILE_FILES.parents[1])}"}
            return

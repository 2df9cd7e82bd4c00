"""Training, evaluation, calibration, checkpoints and the model-card cache.

All exits train jointly on a weighted sum of their cross-entropies (BranchyNet / SDN), with fixed
seeds and a fixed thread count so a config hash identifies a result. Each exit then gets its own
temperature fitted on the validation split, because strategies gate on softmax confidence and
raw early-exit confidences are miscalibrated.

Fields of ``TrainConfig`` left at ``None`` take the dataset's recipe (``RECIPES``): Fashion-MNIST
trains on a fixed subset for a few epochs, because training on these 2-core hosts is slow and the
checkpoints the quickstart, the paper experiments and the tests use are shipped in
``testbed/models/shipped/`` (rebuilt by ``scripts/build_checkpoints.sh``): ``load_or_train`` uses a
shipped checkpoint whose config hash matches before it trains anything.
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
from testbed.models.nets import max_softmax
from testbed.models.registry import build_model

log = logging.getLogger(__name__)

CARD_VERSION = 3  # bump when training or card semantics change: invalidates caches
DEFAULT_CACHE = Path("results/cache/models")
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
SHIPPED_SUMS = SHIPPED_DIR / "SHA256SUMS"
# Per-dataset values for TrainConfig fields left at None. Fashion-MNIST: 8,000 of the 51,000 training
# images for 4 epochs (measured accuracies in the shipped cards); the AppealNet appeal head trains on
# 4,000 further training images the edge classifier never saw.
RECIPES: dict[str, dict] = {
    "default": {"epochs": 30},
    "fashion-mnist": {"epochs": 4, "train_images": 8000, "appeal_images": 4000},
}
# Fraction of the training split held out for the appeal head when the recipe gives no appeal_images.
APPEAL_HOLDOUT_FRACTION = 0.3


class CheckpointError(TestbedError):
    """A checkpoint or model card cannot be read; names the file."""


@dataclass
class TrainConfig:
    """Everything that changes the trained weights (hashed into the cache key)."""

    epochs: int | None = None  # None: the dataset's recipe (RECIPES)
    train_images: int | None = None  # train on the first N training images; None: recipe (all if unset)
    appeal_images: int | None = None  # AppealNet: held-out images for the appeal head; None: recipe
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    exit_weights: list[float] | None = None  # None: equal weights for every exit
    augment: bool = True
    seed: int = 0
    threads: int = 2  # not hashed: the thread count only changes float summation order
    appeal_cost: float = 0.3  # AppealNet only: lam in appeal_loss
    cloud_model: str = "appealnet-cloud"  # AppealNet only: which cloud model the edge appeals to


@dataclass
class DataConfig:
    name: str = "digits"
    size: int | None = None  # None: the dataset's native size (testbed.data.NATIVE_SIZE)
    channels: int = 1
    root: str | None = None
    seed: int = 0
    limit: int | None = None
    extra: dict = field(default_factory=dict)

    def resolved(self) -> DataConfig:
        """This config with ``size`` filled in, so equal configs hash equally."""
        from testbed.data import NATIVE_SIZE

        if self.size is not None:
            return self
        return DataConfig(**{**asdict(self), "size": NATIVE_SIZE.get(self.name, 16)})

    def load(self) -> Dataset:
        return load_dataset(self.name, root=self.root, size=self.resolved().size, channels=self.channels,
                            seed=self.seed, limit=self.limit, **self.extra)


def resolve_train(train: TrainConfig, data: DataConfig) -> TrainConfig:
    """``train`` with its None fields filled from the dataset's recipe."""
    recipe = {**RECIPES["default"], **RECIPES.get(data.name, {})}
    values = asdict(train)
    for key, value in recipe.items():
        if values.get(key) is None:
            values[key] = value
    return TrainConfig(**values)


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
    config = resolve_train(config, DataConfig(name=dataset.name))
    _seed_everything(config.seed, config.threads)
    generator = torch.Generator().manual_seed(config.seed)
    x_all = torch.from_numpy(dataset.train.x)
    y_all = torch.from_numpy(dataset.train.y)
    n_train, n_appeal = _training_counts(len(y_all), config, appeal=teacher is not None)
    x_train, y_train = x_all[:n_train], y_all[:n_train]
    start = time.perf_counter()
    history = _fit_exits(model, x_train, y_train, config, generator)
    result = {"train_images": n_train, "loss_history": history, "config": asdict(config)}
    if teacher is not None:
        # The appeal head learns from images the edge classifier never saw: on its own training
        # images the edge is (nearly) always right, and q would learn "always keep" (q ~ 1).
        x_held, y_held = x_all[n_train:n_train + n_appeal], y_all[n_train:n_train + n_appeal]
        result["appeal_images"] = len(y_held)
        result["appeal_loss_history"] = _fit_appeal_head(model, teacher, x_held, y_held, config, generator)
    model.eval()
    result["train_seconds"] = round(time.perf_counter() - start, 2)
    return result


def _training_counts(n: int, config: TrainConfig, appeal: bool) -> tuple[int, int]:
    """(images for the classifier, held-out images for the appeal head) from the training split."""
    if not appeal:
        return min(n, config.train_images or n), 0
    n_appeal = config.appeal_images or int(round(APPEAL_HOLDOUT_FRACTION * n))
    n_train = min(config.train_images or n, n - n_appeal)
    if n_train < 1 or n_appeal < 1:
        raise ValueError(f"training split of {n} images cannot hold {config.train_images} classifier "
                         f"and {n_appeal} appeal images")
    return n_train, min(n_appeal, n - n_train)


def _fit_exits(model, x_train, y_train, config: TrainConfig, generator) -> list[float]:
    """Joint training of every exit on a weighted sum of their cross-entropies."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * ((len(y_train) + config.batch_size - 1) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(1, steps))
    num_exits = len(model.forward_all_exits(x_train[:2]))
    weights = config.exit_weights or [1.0] * num_exits
    if len(weights) != num_exits:
        raise ValueError(f"exit_weights has {len(weights)} entries, model has {num_exits} exits")
    history = []
    model.train()
    for epoch in range(config.epochs):
        total, count = 0.0, 0
        for idx in _batches(len(y_train), config.batch_size, generator):
            x, y = x_train[idx], y_train[idx]
            if config.augment:
                x = _augment(x, generator)
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
    return history


def _fit_appeal_head(model, teacher, x_held, y_held, config: TrainConfig, generator) -> list[float]:
    """AppealNet objective on held-out images, classifier frozen: only q(x) learns.

    With the edge fixed, dL/dq = CE_edge - CE_cloud - appeal_cost per image, so q learns where the
    edge really loses to the cloud on unseen inputs.
    """
    from testbed.models.appeal import appeal_loss

    model.eval()  # frozen batch-norm statistics: the classifier stays exactly as trained
    with torch.no_grad():
        teacher.eval()
        cloud_loss = torch.cat([F.cross_entropy(teacher(x_held[i:i + 256]), y_held[i:i + 256], reduction="none")
                                for i in range(0, len(y_held), 256)])
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("appeal_head"))
    head = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(head, lr=config.lr, weight_decay=config.weight_decay)
    history = []
    for _ in range(max(1, config.epochs)):
        total = 0.0
        for idx in _batches(len(y_held), config.batch_size, generator):
            logits, q = model.forward_with_appeal(x_held[idx])
            loss = appeal_loss(logits.detach(), q, y_held[idx], cloud_loss[idx], appeal_cost=config.appeal_cost)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        history.append(round(total / len(y_held), 5))
    for param in model.parameters():
        param.requires_grad_(True)
    return history


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
        calibrated = max_softmax(test, temperature)
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

    data = data.resolved()
    train_fields = asdict(resolve_train(train, data))
    train_fields.pop("threads")
    content = {"card_version": CARD_VERSION, "model": name, "model_kwargs": model_kwargs,
               "data": asdict(data), "train": train_fields}
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
    from testbed.user_code import fingerprint, is_user_ref

    user_refs = [ref for ref in (name, data.name) if is_user_ref(ref)]
    if user_refs:  # rebuilt from card["model"] + model_kwargs; this says which source that was
        card["user_code"] = {ref: {"sha256": fingerprint(ref)} for ref in user_refs}
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
    data = (data or DataConfig()).resolved()
    train = resolve_train(train or TrainConfig(), data)
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
        cloud_logits = torch.cat([cloud(x[i:i + 256]) for i in range(0, len(x), 256)])
    edge_correct = (edge_logits.argmax(1) == y).numpy()
    softmax_score = max_softmax(edge_logits)
    return {"cloud_model": train.cloud_model, "appeal_cost": train.appeal_cost,
            "cloud_test_accuracy": round(float((cloud_logits.argmax(1) == y).float().mean()), 4),
            "mean_q": round(float(q.mean()), 4),
            # How well each score ranks the inputs the edge gets right above those it gets wrong.
            "auroc_edge_correct": {"q": round(auroc(q.numpy(), edge_correct), 4),
                                   "max_softmax": round(auroc(softmax_score.numpy(), edge_correct), 4)},
            "tradeoff": appeal_tradeoff(edge_logits, q, cloud_logits, y)}


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative), ties 1/2."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def default_cache_dir() -> Path:
    return Path(os.environ.get("TESTBED_CACHE", "")) / "models" if os.environ.get("TESTBED_CACHE") else DEFAULT_CACHE


def checkpoint_dir(name: str, data: DataConfig, train: TrainConfig, model_kwargs: dict | None = None,
                   cache_dir: str | Path | None = None) -> Path:
    """Cache location of a configuration: ``<cache>/<name>-<data>-<config hash[:16]>``."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    # User references are paths (../nets.py:build): no separators, no leading dot (a hidden folder).
    key = f"{name}-{data.name}".replace("/", "_").replace(":", "_").lstrip(".")
    return cache / f"{key}-{config_hash(name, model_kwargs or {}, data, train)[:16]}"


def shipped_sums() -> dict[str, str]:
    """``<entry>/model.pt`` -> sha256 from ``shipped/SHA256SUMS`` (sha256sum's format)."""
    if not SHIPPED_SUMS.is_file():
        return {}
    sums = {}
    for number, line in enumerate(SHIPPED_SUMS.read_text().splitlines(), 1):
        if line.strip():
            digest, _, path = line.partition("  ")
            if len(digest) != 64 or not path:
                raise CheckpointError(f"{SHIPPED_SUMS}:{number}: expected '<sha256>  <entry>/model.pt'")
            sums[path.strip()] = digest
    return sums


def shipped_checkpoint(entry: str) -> Path | None:
    """The shipped checkpoint for a cache entry name, if one exists and its checksum matches."""
    directory = SHIPPED_DIR / entry
    if not (directory / "model.pt").is_file() or not (directory / "card.json").is_file():
        return None
    expected = shipped_sums().get(f"{entry}/model.pt")
    actual = hashlib.sha256((directory / "model.pt").read_bytes()).hexdigest()
    if expected != actual:
        raise CheckpointError(f"{directory / 'model.pt'}: sha256 {actual} does not match {SHIPPED_SUMS} "
                              f"({expected or 'no entry'}); rebuild with scripts/build_checkpoints.sh")
    return directory


def load_or_train(name: str, data: DataConfig | str = "digits", cache_dir: str | Path | None = None,
                  train: TrainConfig | None = None, model_kwargs: dict | None = None):
    """Return (model, card) from ``cache_dir/<name>-<hash>/``, training and caching on a miss.

    The key hashes model name + kwargs, data config and train config, so changing any of them
    retrains instead of silently reusing stale weights.
    """
    data = DataConfig(name=data) if isinstance(data, str) else data
    train = train or TrainConfig()
    directory = checkpoint_dir(name, data, train, model_kwargs, cache_dir)
    cached = (directory / "model.pt").is_file() and (directory / "card.json").is_file()
    shipped = None if cached else shipped_checkpoint(directory.name)
    if cached:
        log.info("model %s: using cached %s", name, directory)
        model, card = load_checkpoint(directory)
    elif shipped is not None:
        # Copied into the cache: callers (the runtime's device and cloud) load from checkpoint_dir().
        log.info("model %s: using shipped %s", name, shipped)
        import shutil

        directory.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(shipped, directory, dirs_exist_ok=True)
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

"""Running model parts on the device and in the cloud, and building strategies' model profiles."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from testbed.models.nets import max_softmax
from testbed.strategies.base import INPUT, ModelProfile

log = logging.getLogger("testbed.runtime.execution")


@dataclass
class HeadResult:
    features: torch.Tensor | None  # split tensor to ship (None when answered locally)
    answer_exit: int | None  # exit that answered on the device
    answer_logits: torch.Tensor | None
    best_exit: tuple[int, torch.Tensor, float] | None  # (index, logits, confidence) of the deepest exit run
    appeal_q: float | None = None
    blocks_run: int = 0  # blocks computed (position of the last split reached; 0 = only the input)
    exits_run: tuple[int, ...] = ()  # exit heads evaluated, in order (what a paced device is charged for)


def temperatures(card: dict) -> list[float]:
    return [float(row.get("temperature", 1.0)) for row in card.get("exits", [])]


def confidence(logits: torch.Tensor, temperature: float) -> float:
    return float(max_softmax(logits, temperature).max())


@torch.no_grad()
def run_head(model, card: dict, x: torch.Tensor, split: str, exit_index: int | None,
             exit_threshold: float | None, evaluate_exits: bool) -> HeadResult:
    """Device part of a split plan with progressive early exits.

    Runs blocks up to ``split``; evaluates the exits passed when ``evaluate_exits`` (for answers at
    ``exit_threshold`` or as a fallback) and stops at the first confident one. The exit answering
    the request is ``exit_index`` (None: the final one); if it lies at or before the split the
    device answers with it.
    """
    temps = temperatures(card)
    stop = model.split_index(split)
    answer = model.num_exits - 1 if exit_index is None else exit_index
    answer_pos = model.split_index(model.exits[answer].after)
    by_position: dict[int, list] = {}
    for info in model.exits:
        by_position.setdefault(model.split_index(info.after), []).append(info)
    best = None
    exits_run: list[int] = []
    position = 0
    for position in range(1, min(stop, answer_pos) + 1):
        x = model.blocks[position - 1](x)
        for info in by_position.get(position, []):
            if info.index == answer and position == answer_pos:
                logits = model.exit_heads[info.index](x)
                exits_run.append(info.index)
                return HeadResult(None, answer, logits, (info.index, logits, confidence(logits, temps[info.index])),
                                  blocks_run=position, exits_run=tuple(exits_run))
            if not evaluate_exits or info.index > answer:
                continue
            logits = model.exit_heads[info.index](x)
            exits_run.append(info.index)
            conf = confidence(logits, temps[info.index])
            best = (info.index, logits, conf)
            if exit_threshold is not None and conf >= exit_threshold:
                return HeadResult(None, info.index, logits, best, blocks_run=position, exits_run=tuple(exits_run))
    return HeadResult(x, None, None, best, blocks_run=position, exits_run=tuple(exits_run))


@torch.no_grad()
def run_tail(model, features: torch.Tensor, split: str, exit_index: int | None = None) -> torch.Tensor:
    """Cloud part: blocks after ``split`` up to the answering exit, then that exit's head."""
    answer = model.num_exits - 1 if exit_index is None else int(exit_index)
    lo = model.split_index(split)
    hi = model.split_index(model.exits[answer].after)
    x = features
    for position in range(lo + 1, hi + 1):
        x = model.blocks[position - 1](x)
    return model.exit_heads[answer](x)


def timed_mean_ms(fn, window_s: float = 0.3, max_calls: int = 200) -> float:
    """Mean time per call over a window of several CFS periods (throttling shows in the mean)."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls < max_calls and (time.perf_counter() - start < window_s or calls < 3):
        fn()
        calls += 1
    return (time.perf_counter() - start) * 1e3 / calls


@torch.no_grad()
def _validation_outputs(model, card: dict, val_x: np.ndarray, val_y: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image exit confidences and correctness (or AppealNet's q and edge correctness) on the val split."""
    x = torch.from_numpy(val_x)
    y = torch.from_numpy(val_y)
    if hasattr(model, "forward_with_appeal"):
        logits, q = model.forward_with_appeal(x)
        return {"appeal_q": q.numpy(), "edge_confidence": max_softmax(logits).numpy(),
                "edge_correct": (logits.argmax(1) == y).numpy()}
    from testbed.models.train import exit_logits

    logits = exit_logits(model, x)
    confidences = np.stack([max_softmax(lg, t).numpy()
                            for lg, t in zip(logits, temperatures(card), strict=True)], axis=1)
    correct = np.stack([(lg.argmax(1) == y).numpy() for lg in logits], axis=1)
    return {"confidences": confidences, "correct": correct}


# The arrays _validation_outputs returns; a cached file missing one (written by an older version) is recomputed.
APPEAL_OUTPUTS = frozenset({"appeal_q", "edge_confidence", "edge_correct"})
EXIT_OUTPUTS = frozenset({"confidences", "correct"})


def validation_outputs(model, card: dict, val_x: np.ndarray, val_y: np.ndarray,
                       checkpoint_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """:func:`_validation_outputs`, cached in the checkpoint's folder.

    Running a deep model over the whole validation split takes tens of seconds on one core (27 s
    for resnet-ee-w2.0-d3 on Fashion-MNIST's 9,000 images) and is the same in every session, so
    the first agent computes it under a file lock and every later one (or a concurrent one,
    waiting on the lock) reads it. The key covers the weights, the card (temperatures) and the
    validation arrays: other data or a retrained model never hit a stale entry. The key leaves out
    which arrays are stored, so caches shipped with the checkpoints stay valid when an array is added;
    a file without every array the model now needs is recomputed instead.
    """
    from testbed.models.train import SHIPPED_DIR

    folder = Path(checkpoint_dir).resolve() if checkpoint_dir else None
    if folder is None or not os.access(folder, os.W_OK) or folder.is_relative_to(SHIPPED_DIR):
        return _validation_outputs(model, card, val_x, val_y)
    key = hashlib.sha256()
    for part in sorted(folder.glob("*.pt")) + [folder / "card.json"]:
        if part.exists():
            key.update(part.read_bytes())
    key.update(np.ascontiguousarray(val_x).tobytes())
    key.update(np.ascontiguousarray(val_y).tobytes())
    path = folder / f"val-outputs-{key.hexdigest()[:16]}.npz"
    with open(folder / ".val-outputs.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one computes, concurrent agents of a fleet wait for it
        with contextlib.suppress(OSError, ValueError, KeyError):
            with np.load(path) as cached:
                needed = APPEAL_OUTPUTS if hasattr(model, "forward_with_appeal") else EXIT_OUTPUTS
                if needed <= set(cached.files):
                    return {name: cached[name] for name in cached.files}
        outputs = _validation_outputs(model, card, val_x, val_y)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        try:
            np.savez(tmp, **outputs)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("%s: cannot cache validation outputs (%s)", folder, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
        return outputs


def build_profile(name: str, model, card: dict, val_x: np.ndarray, val_y: np.ndarray,
                  measured_full_ms: float | None = None, checkpoint_dir: str | None = None) -> ModelProfile:
    """Strategy-facing profile: card profiles (or FLOP-scaled measurement) + validation exit statistics."""
    outputs = validation_outputs(model, card, val_x, val_y, checkpoint_dir)
    if hasattr(model, "forward_with_appeal"):
        full = measured_full_ms or 1.0
        edge_correct = outputs["edge_correct"]
        return ModelProfile(name=name, split_points=[INPUT, "edge"], device_ms={INPUT: 0.0, "edge": full},
                            cloud_ms={INPUT: full, "edge": 0.0}, split_bytes={}, exit_after=["edge"],
                            exit_accuracy=[float(edge_correct.mean())],
                            appeal_q=outputs["appeal_q"], edge_confidence=outputs["edge_confidence"],
                            edge_correct=edge_correct, kind="appeal",
                            extra={"device_ms_measured": full})
    profiles = card.get("profiles") or {}
    device, cloud = profiles.get("device"), profiles.get("cloud")
    splits = card["splits"]
    total_flops = max(s["device_flops"] for s in splits) or 1
    if device:
        device_ms = {s["name"]: float(s["head_ms"]) for s in device["splits"]}
        exit_head_ms = [float(e["median_ms"]) for e in device["exits"]]
    else:  # no profile: share the measured full time by FLOPs
        full = measured_full_ms or 1.0
        device_ms = {s["name"]: full * s["device_flops"] / total_flops for s in splits}
        exit_head_ms = [full * e["flops"] / total_flops for e in card["exit_costs"]]
    if cloud:
        cloud_ms = {s["name"]: float(s["tail_ms"]) for s in cloud["splits"]}
    else:
        cloud_full = device_ms[card["split_points"][-1]] / 2
        cloud_ms = {s["name"]: cloud_full * s["cloud_flops"] / max(splits[0]["cloud_flops"], 1) for s in splits}
    confidences, correct = outputs["confidences"], outputs["correct"]
    extra = {}
    if measured_full_ms:
        extra["device_ms_measured"] = measured_full_ms
    return ModelProfile(
        name=name, split_points=list(card["split_points"]), device_ms=device_ms, cloud_ms=cloud_ms,
        split_bytes={s["name"]: s.get("bytes", {}) for s in splits},
        exit_after=[e["after"] for e in card["exits"]], exit_accuracy=[e["test_accuracy"] for e in card["exits"]],
        exit_head_ms=exit_head_ms, confidences=confidences, correct=correct, extra=extra)

"""Latency profiles of a split-able model: head up to / tail from every split point, per block.

Strategies (Neurosurgeon, Edgent, SPINN) plan with ``t_device(split)`` and ``t_cloud(split)``;
this module measures them at batch 1 under a given CPU share and stores them in the model card
under ``profiles[role]``.

CPU share: ``cpu_share`` counts CPUs' worth of time (quota / period): 0.5 = half of one core,
2.0 = two cores. Mininet's ``CPULimitedHost(cpu=f)`` instead takes a fraction of the whole
machine, i.e. ``cpu_share = f * os.cpu_count()``. Two ways to apply it:

* ``limit="cgroup"`` -- this process moves into a fresh cgroup-v1 ``cpu`` group with
  ``cpu.cfs_quota_us = share * cpu.cfs_period_us`` and moves back and removes it afterwards (root).
* ``limit="external"`` -- the caller already runs us CPU-limited (e.g. inside a CPU-limited Mininet
  host); the share is only recorded.

Under CFS throttling a millisecond-scale call either runs at full speed or stalls until the next
period, so a median of single calls would hide the limit. Under a limit each repeat therefore times
back-to-back calls over a window of several CFS periods and divides; the reported ``*_ms`` is the
median of those per-call times (mean and p90 alongside).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path

import torch

from testbed.errors import CapabilityError

CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
CFS_PERIOD_US = 10_000  # short period: smoother throttling for millisecond-scale inferences


def _current_cpu_cgroup() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path
    return "/"


@contextlib.contextmanager
def cpu_share_limit(share: float | None, limit: str = "cgroup", root: Path = CGROUP_V1_CPU,
                    period_us: int = CFS_PERIOD_US):
    """Run the body with at most ``share`` CPUs; yields a dict describing how it was limited."""
    if share is None or limit == "none":
        yield {"cpu_share": None, "method": "none"}
        return
    if share <= 0:
        raise ValueError(f"cpu share must be > 0, got {share}")
    if limit == "external":
        yield {"cpu_share": share, "method": "external"}
        return
    if limit != "cgroup":
        raise ValueError(f"unknown limit method {limit!r}; use cgroup, external or none")
    if not (root / "cpu.cfs_quota_us").exists():
        raise CapabilityError(f"{root}: no cgroup-v1 cpu controller (cpu.cfs_quota_us); run under an "
                              "external CPU limit and pass --cpu-limit external")
    group = root / f"testbed-profile-{os.getpid()}"
    original = root / _current_cpu_cgroup().lstrip("/")
    pid = str(os.getpid())
    try:
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(str(period_us))
        (group / "cpu.cfs_quota_us").write_text(str(max(1000, int(share * period_us))))
        # cgroup.procs moves every thread of the process (``tasks`` would move only this one).
        (group / "cgroup.procs").write_text(pid)
    except OSError as exc:
        with contextlib.suppress(OSError):
            group.rmdir()
        raise CapabilityError(f"{group}: cannot set up the cpu cgroup ({exc}); needs root") from None
    try:
        yield {"cpu_share": share, "method": "cgroup-v1", "cfs_period_us": period_us,
               "cfs_quota_us": max(1000, int(share * period_us))}
    finally:
        (original / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            group.rmdir()


def _time_ms(fn, repeats: int, warmup: int, window_ms: float = 0.0) -> dict:
    """Per-call latency; with ``window_ms`` each repeat averages calls over at least that long."""
    # The fastest warm-up call sizes the window: a call that met CFS throttling would otherwise
    # shrink the window to one call, short enough to fit in one period's quota at full speed.
    single_ms = float("inf")
    for _ in range(max(1, warmup)):
        start = time.perf_counter()
        fn()
        single_ms = min(single_ms, (time.perf_counter() - start) * 1e3)
    calls = max(1, int(window_ms / max(single_ms, 1e-3))) if window_ms else 1
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) * 1e3 / calls)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 4), "mean_ms": round(statistics.fmean(samples), 4),
            "p90_ms": round(samples[int(0.9 * (len(samples) - 1))], 4)}


@torch.no_grad()
def profile_model(model, input_shape: tuple[int, ...], repeats: int = 30, warmup: int = 5,
                  threads: int = 1, window_ms: float = 0.0, device: str = "cpu") -> dict:
    """Batch-1 latency of every block, every exit head, head-to-split and tail-from-split.

    On a GPU (``device="cuda"``) every timed call ends with ``torch.cuda.synchronize()``: kernels
    are asynchronous, and a split point's latency is only over once its output exists.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval().to(device)
    if device.startswith("cuda"):
        timer = _time_ms

        def _time_ms_cuda(fn, repeats, warmup, window_ms=0.0):
            def synced():
                fn()
                torch.cuda.synchronize()
            return timer(synced, repeats, warmup, window_ms)
        time_ms = _time_ms_cuda
    else:
        time_ms = _time_ms
    try:
        x = torch.randn(1, *input_shape, device=device)
        features = {"input": x}
        blocks = []
        for name, block in zip(model.block_names, model.blocks, strict=True):
            inp = features[model.split_points[model.split_index(name) - 1]]
            blocks.append({"name": name, **time_ms(lambda b=block, i=inp: b(i), repeats, warmup, window_ms)})
            features[name] = block(inp)
        exits = [{"index": e.index, "after": e.after,
                  **time_ms(lambda e=e: model.exit_heads[e.index](features[e.after]), repeats, warmup, window_ms)}
                 for e in model.exits]
        splits = []
        for name in model.split_points:
            head = time_ms(lambda s=name: model.head(x, upto=s), repeats, warmup, window_ms)
            tail = time_ms(lambda s=name: model.tail(features[s], start=s), repeats, warmup, window_ms)
            splits.append({"name": name,
                           "head_ms": head["median_ms"], "head_mean_ms": head["mean_ms"],
                           "tail_ms": tail["median_ms"], "tail_mean_ms": tail["mean_ms"]})
        full = time_ms(lambda: model(x), repeats, warmup, window_ms)
    finally:
        torch.set_num_threads(previous_threads)
    return {"batch_size": 1, "threads": threads, "repeats": repeats, "window_ms": window_ms, "device": device,
            "input_shape": list(input_shape),
            "full_ms": full["median_ms"], "full_mean_ms": full["mean_ms"],
            "blocks": blocks, "exits": exits, "splits": splits}


def profile_checkpoint(directory: str | Path, role: str = "device", cpu_share: float | None = None,
                       limit: str = "cgroup", repeats: int = 30, threads: int = 1, write: bool = True,
                       window_ms: float | None = None) -> dict:
    """Profile a trained checkpoint and store the result in its card under ``profiles[role]``.

    ``window_ms`` defaults to 3 CFS periods under a cgroup limit, 300 ms (3 periods of Mininet's
    100 ms default) under an external limit, and 0 (single calls) without a limit.
    """
    from testbed.models.train import host_description, load_checkpoint, write_card

    if role not in ("device", "cloud", "gpu"):
        raise ValueError(f"role must be device, cloud or gpu, got {role!r}")
    model, card = load_checkpoint(directory)
    device = "cuda" if role == "gpu" else "cpu"
    if role == "gpu":
        if not torch.cuda.is_available():
            raise CapabilityError("role gpu: no CUDA device visible to torch on this machine")
        cpu_share, limit = None, "none"
    input_shape = tuple(card["dataset"]["input_shape"])
    if window_ms is None:
        limited = cpu_share is not None and limit != "none"
        window_ms = 0.0 if not limited else (3 * CFS_PERIOD_US / 1000 if limit == "cgroup" else 300.0)
    with cpu_share_limit(cpu_share, limit) as limit_info:
        profile = profile_model(model, input_shape, repeats=repeats, threads=threads, window_ms=window_ms,
                                device=device)
    if role == "gpu":
        profile["gpu"] = torch.cuda.get_device_name(0)
    profile.update({"role": role, "cpu_limit": limit_info, "host": host_description(),
                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    if write:
        card.setdefault("profiles", {"device": None, "cloud": None, "gpu": None})[role] = profile
        write_card(card, Path(directory) / "card.json")
    return profile

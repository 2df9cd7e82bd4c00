"""Cloud server process: serves model tails and full models over the transport, counts compute.

    python -m testbed.runtime.cloud --model resnet20-ee=results/cache/models/resnet20-ee-digits-... \\
        --endpoint tcp://*:5555 --cpu-share 1.0 --stats cloud_stats.json \\
        [--server-profile gtx1080ti --workers 4]

Op ``infer``: tensor ``x`` (input or split features), meta ``model``, ``split`` (split point the
features come from; ``input`` = full model) and optional ``exit`` (answering exit index); replies
``logits``. The transport reports queueing/compute per request (``info.queue_s``/``compute_s``).
Workers: one per whole CPU of the host's share (at least one). On SIGTERM the server drains and
writes the stats JSON: requests, compute wall seconds and CPU seconds (server cost).

**Server profile** (``server_profile`` or ``profile``, and ``workers`` in the config): the server emulates that
hardware with ``workers`` accelerators. Each request still computes the real tail on this host
(answers stay real), but its reply is released when the profiled server would have finished it:
a virtual FIFO queue of ``workers`` servers (start = max(arrival, earliest free worker), finish =
start + the profile's tail time with its seeded run-to-run spread). ``info`` then carries the
profiled ``queue_s`` and ``profiled_compute_s`` (the transport's own ``compute_s`` is the
handler's wall time, which includes the wait until release), ``pace_late``/``pace_late_ms`` when
the host's real compute finished more than 1 ms after the profiled finish (the reply then leaves
as soon as it is ready, never pretending to be on time), and ``host_compute_s``. A request that would only start
after its deadline is not computed, as on a real server whose queue it expired in. Server cost is
counted in profiled compute-seconds (``profiled_compute_s`` in the stats), next to the host's.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from testbed.errors import ConfigError, TestbedError
from testbed.runtime.realtime import ReleaseScheduling
from testbed.runtime.records import PACE_LATE_MS

log = logging.getLogger("testbed.runtime.cloud")

# Transport threads when paced: every request waiting for its release holds one (sleeping), so the
# pool must exceed the requests in flight (64 devices x a few each), or releases would queue on it.
PACED_TRANSPORT_THREADS = 256


class VirtualQueue:
    """``workers`` identical servers taking requests first come, first served (virtual time, seconds)."""

    def __init__(self, workers: int):
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = workers
        self._free_at = [0.0] * workers  # min-heap: when each worker is next free

    def admit(self, arrival: float, service_s: float, deadline: float | None = None) -> tuple[float, float] | None:
        """Reserve the earliest free worker: (start, finish), or None when it could only start at or after
        ``deadline`` (the request expires in the queue and occupies no worker)."""
        start = max(arrival, self._free_at[0])
        if deadline is not None and start >= deadline:
            return None
        finish = start + service_s
        heapq.heapreplace(self._free_at, finish)
        return start, finish


def tail_cost_ms(costs: dict, model, split: str, exit_index: int | None) -> float:
    """Profiled time of the cloud part that ``run_tail`` executes: blocks after ``split`` up to the
    answering exit, then that exit's head (``costs`` from ``profile.model_costs``)."""
    if not hasattr(model, "split_index"):
        return float(costs["full_ms"])
    if split not in costs["tail_ms"]:
        raise ValueError(f"unknown split {split!r}; split points: {list(costs['tail_ms'])}")
    final = model.num_exits - 1
    if exit_index is None or int(exit_index) == final:
        return float(costs["tail_ms"][split])
    exit_index = int(exit_index)
    if not 0 <= exit_index < model.num_exits:
        raise ValueError(f"exit {exit_index} out of range 0..{final}")
    after = model.exits[exit_index].after
    # tail_ms[s] = blocks after s + final exit head, so blocks between split and the exit are the difference
    blocks = float(costs["tail_ms"][split]) - float(costs["tail_ms"][after])
    return max(0.0, blocks) + float(costs["exit_ms"][exit_index])


class ModelServer:
    def __init__(self, model_dirs: dict[str, str], profile=None, seed: int = 0, compute_slots: int = 1):
        from testbed.models import load_checkpoint

        self.models = {}
        self._shapes = {}
        for name, directory in model_dirs.items():
            model, card = load_checkpoint(directory)
            model.eval()
            self.models[name] = model
            self._shapes[name] = (model, tuple(card["dataset"]["input_shape"]))
        self._lock = threading.Lock()
        self.requests = 0
        self.compute_s = 0.0
        self.cpu_s = 0.0
        self.by_model: dict[str, dict] = {}
        self.profile = profile
        self.profile_name = getattr(profile, "name", None)
        self.queue = VirtualQueue(int(profile.workers)) if profile is not None else None
        self.costs = {name: profile.model_costs(model, shape) for name, (model, shape) in self._shapes.items()} \
            if profile is not None else {}
        self._rng = np.random.default_rng(seed)
        # Real computes run at most this many at a time (the host's cores): requests waiting for their
        # release sleep in transport threads, and unbounded parallel computes would only slow each other.
        self._compute_slots = threading.Semaphore(max(1, compute_slots))
        self.profiled_compute_s = 0.0
        self.profiled_queue_s = 0.0
        self.pace_late = 0
        self.release_scheduling = ReleaseScheduling()
        self.pace_late_ms_max = 0.0
        self.expired_in_queue = 0

    def warm_up(self) -> None:
        """Run every model and every tail once: the first call of a model costs 10x a warm one, and
        the devices' estimators would read that as a loaded server."""
        from testbed.runtime.execution import run_tail

        for name, (model, shape) in self._shapes.items():
            x = torch.zeros((1, *shape))
            with torch.no_grad():
                if not hasattr(model, "split_index"):
                    model(x)
                    continue
                for split in model.split_points:
                    features = model.head(x, upto=split)[0] if split != "input" else x
                    position = model.split_index(split)
                    for info in model.exits:  # the exits a request from this split may ask for
                        if model.split_index(info.after) >= position:
                            run_tail(model, features, split, info.index)
            log.info("warmed %s", name)

    def _compute(self, name: str, x: torch.Tensor, split: str, exit_index) -> tuple[torch.Tensor, float, float]:
        from testbed.runtime.execution import run_tail

        start, cpu_start = time.perf_counter(), time.thread_time()
        model = self.models[name]
        if hasattr(model, "split_index"):
            logits = run_tail(model, x, split, exit_index)
        else:
            with torch.no_grad():
                logits = model(x)
        wall, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
        with self._lock:
            self.requests += 1
            self.compute_s += wall
            self.cpu_s += cpu
            row = self.by_model.setdefault(name, {"requests": 0, "compute_s": 0.0})
            row["requests"] += 1
            row["compute_s"] += wall
        return logits, wall, cpu

    def infer(self, request):
        name = request.meta.get("model")
        if name not in self.models:
            raise ValueError(f"unknown model {name!r}; serving {sorted(self.models)}")
        split = request.meta.get("split", "input")
        exit_index = request.meta.get("exit")
        if self.profile is not None:
            return self._infer_paced(request, name, split, exit_index)
        x = torch.as_tensor(request.tensors["x"], dtype=torch.float32)
        logits, _, cpu = self._compute(name, x, split, exit_index)
        return {"logits": logits.numpy()}, {"model": name, "cpu_s": cpu}

    def _infer_paced(self, request, name: str, split: str, exit_index):
        # Arrival = handler entry: the transport pool is large enough that nothing waits in front of it.
        arrival = time.monotonic()
        nominal_ms = tail_cost_ms(self.costs[name], self.models[name], split, exit_index)
        deadline = request.deadline_ns / 1e9
        with self._lock:  # one lock: spread draws and queue order follow arrival order (seeded, repeatable)
            service_ms = float(self.profile.sample_ms(nominal_ms, self._rng))
            slot = self.queue.admit(arrival, service_ms / 1e3, deadline)
            if slot is None:
                self.expired_in_queue += 1
        if slot is None:
            # As a real server would, skip it; answer only after the client's deadline (it has given up).
            time.sleep(max(0.0, deadline - time.monotonic()) + 0.001)
            return {}, {"model": name, "expired_in_queue": True, "server_profile": self.profile_name}
        start, finish = slot
        x = torch.as_tensor(request.tensors["x"], dtype=torch.float32)
        with self._compute_slots:
            logits, wall, cpu = self._compute(name, x, split, exit_index)
        if time.monotonic() < finish:
            # Wait for the profiled finish as real time (testbed.runtime.realtime), then compute-ready again.
            self.release_scheduling.enter()
            try:
                time.sleep(max(0.0, finish - time.monotonic()))
            finally:
                self.release_scheduling.leave()
        late_s = time.monotonic() - finish  # the wake-up's own delay counts too
        late = late_s * 1e3 > PACE_LATE_MS  # the devices' threshold: a release within 1 ms is on time
        with self._lock:
            self.profiled_compute_s += finish - start
            self.profiled_queue_s += start - arrival
            if late:
                self.pace_late += 1
                self.pace_late_ms_max = max(self.pace_late_ms_max, late_s * 1e3)
        return {"logits": logits.numpy()}, {
            "model": name, "cpu_s": cpu, "host_compute_s": wall, "queue_s": start - arrival,
            "profiled_compute_s": finish - start, "profiled_ms": nominal_ms, "pace_late": late,
            "pace_late_ms": max(0.0, late_s * 1e3), "server_profile": self.profile_name}

    def stats(self) -> dict:
        with self._lock:
            stats = {"requests": self.requests, "compute_s": self.compute_s, "cpu_s": self.cpu_s,
                     "by_model": self.by_model}
            if self.profile is not None:
                stats.update(server_profile=self.profile_name, profile_workers=self.queue.workers,
                             profiled_compute_s=self.profiled_compute_s, profiled_queue_s=self.profiled_queue_s,
                             pace_late=self.pace_late, pace_late_ms_max=self.pace_late_ms_max,
                             expired_in_queue=self.expired_in_queue)
            return stats


def workers_for(cpu_share: float | None) -> int:
    return max(1, math.floor(cpu_share)) if cpu_share else max(1, (os.cpu_count() or 2) // 2)


def load_server_profile(name: str | None, workers: int | None = None):
    """The named server profile with ``workers`` accelerators (None: one), or None without a name."""
    if not name:
        if workers is not None:
            raise ConfigError("workers", "needs a server_profile (without one, the workers follow the host's "
                              "CPU share)")
        return None
    from testbed.devices import get_profile

    profile = get_profile(name, workers=workers)
    if profile.kind != "server":
        raise ConfigError("server_profile", f"{name!r} is a {profile.kind} profile; the cloud needs a server "
                          "profile")
    return profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.runtime.cloud", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="JSON with the keys below (command-line flags override)")
    parser.add_argument("--model", action="append", default=[], help="NAME=CHECKPOINT_DIR (repeatable)")
    parser.add_argument("--model-dir", help="a cache folder: every sub-folder with card.json + model.pt")
    parser.add_argument("--endpoint", default=None)
    parser.add_argument("--cpu-share", type=float, default=None)
    parser.add_argument("--max-queue", type=int, default=None)
    parser.add_argument("--server-profile", default=None, help="emulate this server (e.g. gtx1080ti)")
    parser.add_argument("--workers", type=int, default=None, help="the server profile's accelerators")
    parser.add_argument("--seed", type=int, default=None, help="seed of the profile's run-to-run spread")
    parser.add_argument("--stats", default=None, help="where to write compute-seconds on shutdown")
    parser.add_argument("--ready", default=None, help="file written once serving")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    config = json.loads(Path(args.config).read_text()) if args.config else {}
    models = dict(config.get("models", {}))
    for item in args.model:
        name, _, directory = item.partition("=")
        models[name] = directory
    if args.model_dir:
        for card in Path(args.model_dir).glob("*/card.json"):
            models.setdefault(json.loads(card.read_text())["model"], str(card.parent))
    cpu_share = args.cpu_share if args.cpu_share is not None else config.get("cpu_share")
    host_workers = workers_for(cpu_share)
    # "profile" is what run_session writes (the cloud host's hardware); "server_profile" reads better by hand
    profile_name = args.server_profile or config.get("server_profile") or config.get("profile")
    try:
        profile = load_server_profile(profile_name, args.workers if args.workers is not None
                                      else config.get("workers"))
    except TestbedError as exc:
        parser.error(str(exc))
    torch.set_num_threads(1)
    endpoint = args.endpoint or config.get("endpoint", "tcp://*:5555")
    stats_path = args.stats or config.get("stats_path")
    ready_path = args.ready or config.get("ready_path")
    seed = args.seed if args.seed is not None else config.get("seed", 0)

    from testbed.transport import BUILTIN_HANDLERS, Server

    model_server = ModelServer(models, profile=profile, seed=seed, compute_slots=host_workers)
    try:
        model_server.warm_up()
    except Exception as exc:  # noqa: BLE001 - warming is an optimisation, never a reason not to serve
        log.warning("warm-up failed: %s", exc)
    handlers = {**BUILTIN_HANDLERS, "infer": model_server.infer}
    transport_threads = PACED_TRANSPORT_THREADS if profile is not None else host_workers
    server = Server(endpoint, handlers=handlers, workers=transport_threads,
                    max_queue=args.max_queue or config.get("max_queue", 64)).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    workers = profile.workers if profile is not None else host_workers
    if ready_path:
        Path(ready_path).write_text(json.dumps({"pid": os.getpid(), "endpoint": server.bound_endpoint,
                                                "workers": workers, "models": sorted(models),
                                                "server_profile": model_server.profile_name}))
    log.info("serving %s on %s with %d workers%s", sorted(models), server.bound_endpoint, workers,
             f" (profile {model_server.profile_name})" if profile else "")
    while not stop.wait(0.2):
        pass
    server.stop()
    stats = {**model_server.stats(), "workers": workers, "cpu_share": cpu_share,
             "transport": {k: v for k, v in vars(server.stats).items() if isinstance(v, (int, float))}}
    if stats_path:
        Path(stats_path).write_text(json.dumps(stats, indent=2))
    log.info("stopped: %s", stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Cloud server process: serves model tails and full models over the transport, counts compute.

    python -m testbed.runtime.cloud --model resnet20-ee=results/cache/models/resnet20-ee-digits-... \\
        --endpoint tcp://*:5555 --cpu-share 1.0 --stats cloud_stats.json

Op ``infer``: tensor ``x`` (input or split features), meta ``model``, ``split`` (split point the
features come from; ``input`` = full model) and optional ``exit`` (answering exit index); replies
``logits``. The transport reports queueing/compute per request (``info.queue_s``/``compute_s``).
Workers: one per whole CPU of the host's share (at least one). On SIGTERM the server drains and
writes the stats JSON: requests, compute wall seconds and CPU seconds (server cost).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path

import torch

log = logging.getLogger("testbed.runtime.cloud")


class ModelServer:
    def __init__(self, model_dirs: dict[str, str]):
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

    def infer(self, request):
        from testbed.runtime.execution import run_tail

        name = request.meta.get("model")
        if name not in self.models:
            raise ValueError(f"unknown model {name!r}; serving {sorted(self.models)}")
        split = request.meta.get("split", "input")
        start, cpu_start = time.perf_counter(), time.thread_time()
        x = torch.as_tensor(request.tensors["x"], dtype=torch.float32)
        model = self.models[name]
        if hasattr(model, "split_index"):
            logits = run_tail(model, x, split, request.meta.get("exit"))
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
        return {"logits": logits.numpy()}, {"model": name, "cpu_s": cpu}

    def stats(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "compute_s": self.compute_s, "cpu_s": self.cpu_s,
                    "by_model": self.by_model}


def workers_for(cpu_share: float | None) -> int:
    return max(1, math.floor(cpu_share)) if cpu_share else max(1, (os.cpu_count() or 2) // 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.runtime.cloud", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="JSON with the keys below (command-line flags override)")
    parser.add_argument("--model", action="append", default=[], help="NAME=CHECKPOINT_DIR (repeatable)")
    parser.add_argument("--model-dir", help="a cache folder: every sub-folder with card.json + model.pt")
    parser.add_argument("--endpoint", default=None)
    parser.add_argument("--cpu-share", type=float, default=None)
    parser.add_argument("--max-queue", type=int, default=None)
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
    workers = workers_for(cpu_share)
    torch.set_num_threads(1)
    endpoint = args.endpoint or config.get("endpoint", "tcp://*:5555")
    stats_path = args.stats or config.get("stats_path")
    ready_path = args.ready or config.get("ready_path")

    from testbed.transport import BUILTIN_HANDLERS, Server

    model_server = ModelServer(models)
    try:
        model_server.warm_up()
    except Exception as exc:  # noqa: BLE001 - warming is an optimisation, never a reason not to serve
        log.warning("warm-up failed: %s", exc)
    handlers = {**BUILTIN_HANDLERS, "infer": model_server.infer}
    server = Server(endpoint, handlers=handlers, workers=workers,
                    max_queue=args.max_queue or config.get("max_queue", 64)).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if ready_path:
        Path(ready_path).write_text(json.dumps({"pid": os.getpid(), "endpoint": server.bound_endpoint,
                                                "workers": workers, "models": sorted(models)}))
    log.info("serving %s on %s with %d workers", sorted(models), server.bound_endpoint, workers)
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

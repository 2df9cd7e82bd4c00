"""Run an experiment: every cell x strategy x repeat as one session on a fresh emulated network.

Layout of a run::

    results/<experiment>/<run-id>/
        manifest.json                       # config, git, packages, capabilities, traces, machine, status
        cells/<cell-id>/<label>/r<k>/       # one "unit": a session of one strategy in one cell
            unit.json                       # cell values, strategy, seed, session settings (written first)
            records.jsonl replay.csv emulation.json   # written by testbed.runtime
            done.json                       # completion marker (SessionResult + wall time)
            error.json                      # instead of done.json when the session failed

A unit is complete when its ``done.json`` exists; ``--resume`` skips those and reruns the rest
from scratch. A unit whose session would be identical to one already done in this run (same
settings, seed and trace: e.g. cloud-only in every cell of a sweep over AppealNet's threshold) is
not run again: its folder is a copy of that unit's, and ``done.json`` says ``reused_from``.
Ctrl-C (or SIGTERM) stops the current session (the runtime and emulation clean up), keeps
completed units and marks the run ``partial``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from testbed.errors import CapabilityError, ConfigError, TestbedError
from testbed.experiment import manifest as mf
from testbed.experiment.schema import (
    Cell,
    Experiment,
    StrategySpec,
    data_source,
    load_experiment,
    parse_experiment,
    resolve_path,
)

log = logging.getLogger(__name__)
DONE = "done.json"
UNIT = "unit.json"
ERROR = "error.json"


def unit_id(cell: Cell, strategy: StrategySpec, repeat: int) -> str:
    return f"{cell.cell_id}/{strategy.label}/r{repeat}"


def unit_dir(run_dir: Path, cell: Cell, strategy: StrategySpec, repeat: int) -> Path:
    return run_dir / "cells" / cell.cell_id / strategy.label / f"r{repeat}"


def is_done(path: Path) -> bool:
    return (path / DONE).is_file()


def _trace_summary(traces: dict, duration: float) -> dict:
    """Time-weighted mean Mbit/s per link and direction over the session (for analysis x-axes)."""
    out = {}
    for link, trace in traces.items():
        for d in ("up", "down"):
            steps = trace.schedule(d, 0.1)
            times = np.array([t for t, _ in steps] + [max(duration, steps[-1][0])])
            rates = np.array([r for _, r in steps])
            # hold the last value past the trace's end, cut at the session's duration
            ends = np.minimum(times[1:], duration)
            starts = np.minimum(times[:-1], duration)
            if trace.duration < duration:
                ends[-1] = duration
            w = np.clip(ends - starts, 0, None)
            out[f"{link}.{d}"] = float((w * rates).sum() / w.sum()) if w.sum() > 0 else float(rates[0])
    return out


def session_settings(exp: Experiment, cell: Cell, strategy: StrategySpec, repeat: int) -> dict:
    """The JSON-able settings of one unit (also what is handed to SessionConfig, traces aside)."""
    cfg = cell.config
    strat = cfg["strategies"][strategy.label]
    workload = cfg["workload"]
    extra = {}
    if "mode" in workload:
        extra["workload"] = workload["mode"]
    if "phase" in workload:
        extra["phase"] = workload["phase"]
    if cfg.get("energy"):
        extra["energy"] = dict(cfg["energy"])
    data = data_source(cfg.get("data"), cfg.get("_base"))  # {name, root: absolute or None, limit}
    if cfg.get("data_options") or data["limit"] is not None:
        extra["data_options"] = {**(cfg.get("data_options") or {}),
                                 **({"limit": data["limit"]} if data["limit"] is not None else {})}
    if data["root"] is not None:  # your data from disk: the models train on it, the devices send it
        extra["data_root"] = data["root"]
    for key in ("device_profile", "server_profile", "server_workers"):  # hardware the hosts compute like
        if cfg.get(key) is not None:
            extra[key] = cfg[key]
    return {
        **extra,
        "topology": str(resolve_path(cfg["topology"], cfg.get("_base"))),
        "params": dict(cfg.get("params") or {}),
        "faults": list(cfg.get("faults") or []),
        "model": cfg.get("model", "resnet20-ee"),
        "data": data["name"],
        "strategy": strat["name"],
        "strategy_params": dict(strat.get("params") or {}),
        "fps": float(workload["fps"]),
        "duration_s": float(workload["duration_s"]),
        "deadline_s": float(workload["deadline_s"]),
        "sla": dict(cfg.get("sla") or {}),
        "seed": int(exp.seeds[repeat]),
        "devices": cfg.get("devices"),
    }


SessionFn = Callable[[dict, dict, Path], Any]


def runtime_session(settings: dict, traces: dict, out_dir: Path, cluster: str | None = None):
    """Run one session with ``testbed.runtime`` (imported lazily: torch, zmq, mininet); ``cluster``: a
    cluster.yaml placing the hosts across servers (testbed.emulation.cluster)."""
    try:
        from testbed.runtime import SessionConfig, run_session
    except ImportError as exc:
        raise TestbedError(f"the device/cloud runtime (testbed.runtime) is not available: {exc}") from exc
    cfg = SessionConfig(traces=traces, out_dir=str(out_dir), **settings, **({"cluster": cluster} if cluster else {}))
    return run_session(cfg)


def _result_dict(result: Any) -> dict:
    if result is None:
        return {}
    if isinstance(result, dict):
        return result
    keys = ("out_dir", "records_path", "n_requests", "cloud_compute_s", "wall_s")
    return {k: getattr(result, k, None) for k in keys if hasattr(result, k)}


class _SigtermAsInterrupt:
    """While running, SIGTERM/SIGHUP raise KeyboardInterrupt (so every path cleans up the same way)."""

    def __enter__(self):
        self.old = {}
        if threading.current_thread() is threading.main_thread():
            def handler(signum, _frame):
                raise KeyboardInterrupt(f"signal {signum}")

            for sig in (signal.SIGTERM, signal.SIGHUP):
                self.old[sig] = signal.signal(sig, handler)
        return self

    def __exit__(self, *exc):
        for sig, h in self.old.items():
            signal.signal(sig, h)


def _new_run_dir(out_root: Path, name: str) -> tuple[str, Path]:
    base = out_root / name
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_id, k = stamp, 1
    while (base / run_id).exists():
        k += 1
        run_id = f"{stamp}-{k}"
    (base / run_id).mkdir()
    return run_id, base / run_id


def open_run(experiment: str | Path | None = None, out: str | Path = "results",
             resume: str | Path | None = None) -> tuple[Experiment, Path, dict]:
    """(experiment, run folder, manifest) for a new run, or for resuming ``resume``."""
    if resume is not None:
        run_dir = Path(resume)
        manifest = mf.read_manifest(run_dir)
        src = manifest.get("source", str(run_dir / mf.MANIFEST))
        base = Path(src).parent if Path(src).exists() else None
        exp = parse_experiment(manifest["config"], src, base=base)
        if experiment is not None:
            given = load_experiment(experiment)
            if given.config_hash() != manifest.get("config_hash"):
                raise ConfigError(str(experiment), f"differs from the configuration of the run being resumed "
                                  f"({run_dir}); resume without the file, or start a new run")
        manifest.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        manifest["status"] = "running"
        manifest["capabilities"] = mf.capabilities()
        return exp, run_dir, manifest
    if experiment is None:
        raise ConfigError("testbed run", "give an experiment file, or --resume RUN_DIR")
    exp = load_experiment(experiment)
    run_id, run_dir = _new_run_dir(Path(out), exp.name)
    manifest = mf.build_manifest(exp, run_id)
    mf.write_manifest(run_dir, manifest)
    return exp, run_dir, manifest


def run_experiment(experiment: str | Path | None = None, out: str | Path = "results",
                   resume: str | Path | None = None, session: SessionFn | None = None,
                   progress: bool = True, fail_fast: bool = False, cluster: str | Path | None = None) -> Path:
    """Run (or resume) an experiment; returns the run folder. Raises KeyboardInterrupt after marking partial.

    ``cluster``: a cluster.yaml; every session's hosts are placed across its servers (docs/cluster.md)."""
    if cluster is not None:
        from testbed.emulation.cluster import load_cluster

        cl = load_cluster(cluster)  # errors before anything runs
        cluster = str(Path(cluster).resolve())
    exp, run_dir, manifest = open_run(experiment, out, resume)
    if cluster is not None:
        manifest["cluster"] = {"file": cluster, "servers": [{"name": s.name, "host": s.host, "port": s.port}
                                                           for s in cl.servers], "placement": cl.placement}
        if session is None:
            def session(settings, traces, path):
                return runtime_session(settings, traces, path, cluster=cluster)
    session = session or runtime_session
    units = exp.units()
    todo = [u for u in units if not is_done(unit_dir(run_dir, *u))]
    skipped = len(units) - len(todo)
    for u in units:
        if is_done(unit_dir(run_dir, *u)):
            manifest["units"][unit_id(*u)] = "done"
    if skipped:
        log.info("resuming %s: %d of %d units already complete", run_dir, skipped, len(units))
    failures: list[str] = []
    status = "partial"
    bar = _progress(len(units), skipped, progress, exp.name)
    try:
        with _SigtermAsInterrupt():
            for cell, strategy, repeat in todo:
                uid = unit_id(cell, strategy, repeat)
                if bar is not None:
                    bar.set_postfix_str(uid, refresh=True)
                ok = _run_unit(exp, run_dir, cell, strategy, repeat, session, manifest, fail_fast)
                if not ok:
                    failures.append(uid)
                mf.write_manifest(run_dir, manifest)
                if bar is not None:
                    bar.update(1)
        status = "complete" if not failures else "partial"
    except KeyboardInterrupt:
        manifest["interrupted"] = True
        raise
    finally:
        if bar is not None:
            bar.close()
        manifest["status"] = status
        manifest["failed_units"] = failures
        manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        manifest["summary"] = {"units": len(units), "done": sum(v == "done" for v in manifest["units"].values()),
                               "failed": len(failures)}
        mf.write_manifest(run_dir, manifest)
    return run_dir


def _progress(total: int, initial: int, enabled: bool, name: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="session", dynamic_ncols=True)


def _give_oracle_its_trace(settings: dict, traces: dict, path: Path) -> None:
    """The hindsight ``oracle`` plans on the cell's real trace: write it (outages applied) next to the
    unit and pass its path, unless the experiment gave the oracle a trace itself."""
    if settings["strategy"] != "oracle" or settings["strategy_params"].get("trace") or not traces:
        return
    from testbed.traces import save_trace, with_outages

    link, trace = next(iter(traces.items()))
    windows = [(float(f["start"]), float(f["end"])) for f in settings["faults"]
               if f.get("kind") == "outage" and f.get("link", link) == link]
    if windows:
        trace = with_outages(trace, windows)
    settings["strategy_params"]["trace"] = str(save_trace(trace, path / f"oracle-trace-{link}.csv").resolve())


def session_key(settings: dict, traces: dict) -> str:
    """What determines a session's outcome: its settings (seed included) and every trace's samples."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for link in sorted(traces):
        trace = traces[link]
        key.update(link.encode())
        for arr in (trace.times, trace.down_mbps, trace.up_mbps, trace.rtt_ms, trace.loss):
            key.update(b"-" if arr is None else np.ascontiguousarray(arr).tobytes())
        key.update(repr(float(trace.duration)).encode())
    return key.hexdigest()[:20]


def _reuse(run_dir: Path, key: str, path: Path) -> dict | None:
    """Copy a done unit of this run with the same session key into ``path``; its done.json, or None."""
    for done in sorted(run_dir.glob(f"cells/*/*/r*/{DONE}")):
        other = done.parent
        if other == path:
            continue
        try:
            if json.loads((other / UNIT).read_text()).get("session_key") != key:
                continue
            reused = json.loads(done.read_text())
        except (OSError, ValueError):
            continue
        if reused.get("reused_from"):
            continue  # copy from the original only
        for item in other.iterdir():
            if item.name not in (UNIT, DONE):
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, path / item.name)
        return reused
    return None


def _run_unit(exp: Experiment, run_dir: Path, cell: Cell, strategy: StrategySpec, repeat: int,
              session: SessionFn, manifest: dict, fail_fast: bool) -> bool:
    uid = unit_id(cell, strategy, repeat)
    path = unit_dir(run_dir, cell, strategy, repeat)
    if path.exists():
        shutil.rmtree(path)  # a unit interrupted or failed earlier restarts from scratch
    path.mkdir(parents=True)
    settings = session_settings(exp, cell, strategy, repeat)
    traces = cell.traces(exp.source)
    key = session_key(settings, traces)  # before the oracle's per-unit trace path enters the settings
    _give_oracle_its_trace(settings, traces, path)
    if settings["strategy"] == "oracle":
        key = None  # its trace file lives in the unit folder: never shared
    info = {"unit_id": uid, "cell_id": cell.cell_id, "cell_index": cell.index, "cell_values": cell.values,
            "strategy_label": strategy.label, "repeat": repeat, "settings": settings,
            "trace_mean_mbps": _trace_summary(traces, settings["duration_s"]),
            "traces": {link: {"name": t.meta.get("name", ""), "derived": t.meta.get("derived", "")}
                       for link, t in traces.items()},
            "session_key": key}
    (path / UNIT).write_text(json.dumps(info, indent=2, default=str))
    if key is not None and (done := _reuse(run_dir, key, path)) is not None:
        original = done["unit_id"]
        log.info("unit %s: same session as %s (settings, seed, trace): reused, not rerun", uid, original)
        (path / DONE).write_text(json.dumps({**done, "unit_id": uid, "reused_from": original}, indent=2, default=str))
        manifest["units"][uid] = "done"
        manifest.setdefault("reused_units", {})[uid] = original
        return True
    manifest["units"][uid] = "running"
    t0 = time.monotonic()
    try:
        result = session(settings, traces, path)
    except KeyboardInterrupt:
        manifest["units"][uid] = "interrupted"
        raise
    except (CapabilityError, ConfigError):
        manifest["units"][uid] = "failed"
        raise
    except Exception as exc:  # noqa: BLE001 - one failed session should not lose a long sweep
        manifest["units"][uid] = "failed"
        (path / ERROR).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}",
                                              "traceback": traceback.format_exc()}, indent=2))
        log.error("unit %s failed: %s", uid, exc)
        if fail_fast:
            raise
        return False
    done = {"unit_id": uid, "wall_s": time.monotonic() - t0, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pid": os.getpid(), **{f"result_{k}": v for k, v in _result_dict(result).items()}}
    (path / DONE).write_text(json.dumps(done, indent=2, default=str))
    manifest["units"][uid] = "done"
    return True

"""Experiment files: parse and validate ``experiments/*.yaml`` into plain dataclasses.

Every error is a :class:`testbed.errors.ConfigError` naming the file, the key path and what is
allowed. A minimal experiment::

    name: demo
    topology: topologies/device-cloud.yaml
    params: {device_cpu: 0.5}
    traces:
      access: {file: traces/att-lte-driving.csv, slice: [60, 95], scale: 1.0}
    faults:
      - {kind: outage, link: access, start: 15, end: 20}
    model: resnet20-ee
    data: digits
    strategies:
      - device-only
      - {name: spinn, params: {thr: 0.8}}
    workload: {fps: 5, duration_s: 30, deadline_s: 0.5}
    sla: {latency_s: 0.5}
    repeats: 2          # or seeds: [1, 2]
    sweep:
      bandwidth_scale: [0.5, 1.0]
      workload.deadline_s: [0.2, 0.5]

Sweep axes (the run's cells are their cartesian product, in file order):

* ``bandwidth_scale``: multiplies every traced link's rates (after the other transforms);
* ``trace``: replaces the trace of the experiment's one traced link (or of ``sweep_link``);
* any dotted key path into ``params``, ``traces``, ``workload``, ``sla``, ``model``, ``data``,
  ``devices`` or ``strategies.<label>.params``, e.g. ``params.n_devices`` or ``sla.latency_s``;
  ``strategies.<a>+<b>.params.<key>`` sets the same parameter of several strategies (compared at equal settings).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed.errors import ConfigError

TOP_KEYS = {
    "name": "a short identifier (letters, digits, - and _)",
    "description": "free text",
    "topology": "path to a topology YAML",
    "params": "topology parameters (mapping)",
    "traces": "link -> trace spec (mapping)",
    "faults": "list of fault mappings (kind: outage|flap|loss)",
    "model": "model registry name, or your own module:callable / file.py:callable",
    "data": "dataset name (digits, fashion-mnist), your own module:callable / file.py:callable, or your data "
            "from disk: {name: cifar10|cifar100|imagefolder|idx, root: DIR (relative to this file), limit: N}",
    "devices": "list of device host names (default: every device host)",
    "strategies": "list of strategy names (or your own module:Class) or {name, label, params}",
    "workload": "{fps, duration_s, deadline_s}",
    "sla": "service-level bounds passed to strategies (mapping)",
    "repeats": "repetitions of every cell x strategy (int >= 1)",
    "seed": "base seed; repeat r uses seed + r",
    "seeds": "explicit list of seeds, one per repeat",
    "sweep": "axis -> list of values (cells = cartesian product)",
    "sweep_link": "the link a 'trace' sweep axis replaces",
    "paper": "paper-comparison settings (see testbed.analysis.paper)",
    "energy": "energy-model settings for the runtime, e.g. {radio: lte, compute_power_w: 2.0}",
    "data_options": "dataset options for every model of the session, e.g. {size: 32, channels: 1}",
    "device_profile": "hardware the devices compute like: a testbed.devices profile name, 'cpu' (CPU-share "
                      "mode), or {device host: name}; default: the topology's host device.profile",
    "server_profile": "the cloud host's server profile (default: the topology's cloud device.profile)",
    "server_workers": "parallel workers of the server profile, where requests queue (default 1)",
}
DATA_OPTION_KEYS = ("size", "channels")
DATA_KEYS = {"name": "a dataset name or your own module:callable",
             "root": "the dataset's directory (relative paths: to the experiment file)",
             "limit": "train on at most this many images (int >= 1)"}
TRACE_KEYS = {
    "file": "path to a trace file (any format testbed.traces reads)",
    "constant": "{down: Mbit/s, up: Mbit/s} instead of a file",
    "duration": "seconds (with constant)",
    "slice": "[start, end] seconds",
    "loop": "seconds to loop the trace to",
    "scale": "factor or {down: f, up: f}",
    "clip": "[lo, hi] Mbit/s",
    "resample": "granularity in seconds",
    "outages": "list of [start, end] windows with zero rate in the trace itself",
}
WORKLOAD_KEYS = {"fps": "requests per second per device (> 0)",
                 "duration_s": "seconds of workload per session (> 0)",
                 "deadline_s": "per-request deadline in seconds (> 0)",
                 "mode": "open (fixed fps, default) or closed (next request when the last is answered)",
                 "phase": "open loop: aligned (every device at t0 + k/fps, default) or staggered (device i of N "
                          "at t0 + (i/N + k)/fps)"}
SPECIAL_AXES = ("bandwidth_scale", "trace")
SWEEPABLE_ROOTS = ("params", "traces", "workload", "sla", "model", "data", "devices", "strategies",
                   "device_profile")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class StrategySpec:
    name: str
    label: str
    params: dict = field(default_factory=dict)


@dataclass
class Cell:
    """One point of the sweep: its id, the axis values, and the fully resolved settings."""

    index: int
    cell_id: str
    values: dict
    config: dict  # the experiment's raw config with the axis values applied

    def traces(self, where: str) -> dict:
        return build_traces(self.config.get("traces") or {}, where, self.config.get("_base"),
                            self.values.get("bandwidth_scale"))


@dataclass
class Experiment:
    name: str
    source: str
    raw: dict
    strategies: list[StrategySpec]
    seeds: list[int]
    cells: list[Cell]
    axes: dict[str, list]

    @property
    def repeats(self) -> int:
        return len(self.seeds)

    def units(self) -> list[tuple[Cell, StrategySpec, int]]:
        """Every (cell, strategy, repeat) in run order."""
        return [(c, s, r) for c in self.cells for s in self.strategies for r in range(self.repeats)]

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- helpers
def _err(src: str, path: str, msg: str) -> ConfigError:
    return ConfigError(f"{src}: {path}" if path else src, msg)


def _number(src: str, path: str, value: Any, *, positive: bool = True, integer: bool = False,
            minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(src, path, f"must be a number, got {value!r}")
    if integer and int(value) != value:
        raise _err(src, path, f"must be an integer, got {value!r}")
    if positive and not value > 0:
        raise _err(src, path, f"must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise _err(src, path, f"must be >= {minimum}, got {value!r}")
    return int(value) if integer else float(value)


def _mapping(src: str, path: str, value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(src, path, f"must be a mapping ({what}), got {type(value).__name__}")
    return value


def _unknown(src: str, path: str, raw: dict, allowed: dict) -> None:
    for key in raw:
        if key not in allowed:
            hint = "; ".join(f"{k}: {v}" for k, v in allowed.items())
            raise _err(src, f"{path}.{key}" if path else str(key), f"unknown key; allowed: {hint}")


def resolve_path(path: str | Path, base: Path | None) -> Path:
    from testbed.emulation.emulation import resolve_path as _resolve

    return _resolve(path, base)


def known_strategies() -> list[str] | None:
    """Names in the strategy registry, or None while ``testbed.strategies`` is not built."""
    try:
        import testbed.strategies as strategies
    except ImportError:
        return None
    for attr in ("list_strategies", "names", "available"):
        fn = getattr(strategies, attr, None)
        if callable(fn):
            names = fn()
            return sorted(names)
    for attr in ("STRATEGIES", "REGISTRY"):
        reg = getattr(strategies, attr, None)
        if isinstance(reg, dict):
            return sorted(reg)
    return None


# ---------------------------------------------------------------------------- data
def check_data_spec(src: str, path: str, spec: Any, base: Path | None, where: dict | None = None) -> None:
    """``data``: a name, module:callable, or {name, root, limit}; ``where`` renames a key's path in
    errors (a ``data.root`` sweep axis reports its own values)."""
    from testbed.data import DATASET_NAMES, ROOT_OPTIONAL, ROOT_REQUIRED, DataError, check_root
    from testbed.user_code import UserCodeError, is_user_ref, load_callable

    def at(key: str) -> str:
        return (where or {}).get(key, f"{path}.{key}")

    named = isinstance(spec, str)
    if not named:
        spec = _mapping(src, path, spec, TOP_KEYS["data"])
        _unknown(src, path, spec, DATA_KEYS)
        if "name" not in spec:
            raise _err(src, at("name"), f"missing ({DATA_KEYS['name']}: {', '.join(DATASET_NAMES)})")
    name = spec if named else spec["name"]
    name_at = path if named else at("name")
    if not isinstance(name, str):
        raise _err(src, name_at, f"must be a string ({DATA_KEYS['name']}), got {name!r}")
    if is_user_ref(name):
        try:
            load_callable(name, "a function returning {train, val, test: (x, y) arrays}")
        except UserCodeError as exc:
            raise _err(src, name_at, str(exc)) from None
    elif name not in DATASET_NAMES:
        raise _err(src, name_at, f"must be one of {', '.join(DATASET_NAMES)} or module:callable, got {name!r}")
    if named:
        if name in ROOT_REQUIRED:
            raise _err(src, path, f"{name} is read from your directory: write data: {{name: {name}, root: DIR}}")
        return
    if spec.get("limit") is not None:
        _number(src, at("limit"), spec["limit"], integer=True)
    if "root" not in spec or spec["root"] is None:
        if name in ROOT_REQUIRED:
            raise _err(src, at("root"), f"missing: {name} is read from your directory (nothing is downloaded); "
                                        f"give root: DIR (relative to the experiment file)")
        return
    if name not in (*ROOT_REQUIRED, *ROOT_OPTIONAL) and not is_user_ref(name):
        raise _err(src, at("root"), f"{name} takes no root (it ships with the testbed); datasets read from a "
                                    f"directory: {', '.join((*ROOT_REQUIRED, *ROOT_OPTIONAL))} or module:callable")
    root = spec["root"]
    if not isinstance(root, str) or not root:
        raise _err(src, at("root"), f"must be a directory path, got {root!r}")
    resolved = resolve_path(root, base)
    if not resolved.is_dir():
        raise _err(src, at("root"), f"directory {root!r} not found (a relative path is looked up next to the "
                                    f"experiment file{f', in {base}' if base is not None else ''})")
    if not is_user_ref(name):
        try:
            check_root(name, resolved)
        except DataError as exc:
            raise _err(src, at("root"), str(exc)) from None


def data_source(spec: Any, base: Path | None) -> dict:
    """A validated ``data`` value as the runtime takes it: {"name", "root" (absolute, or None), "limit"}."""
    if spec is None:
        spec = "digits"
    if isinstance(spec, str):
        return {"name": spec, "root": None, "limit": None}
    root = spec.get("root")
    return {"name": spec["name"], "root": str(resolve_path(root, base).resolve()) if root else None,
            "limit": spec.get("limit")}


# ---------------------------------------------------------------------------- traces
def check_trace_spec(src: str, path: str, spec: Any, base: Path | None) -> None:
    if isinstance(spec, str):
        if not resolve_path(spec, base).exists():
            raise _err(src, path, f"trace file {spec!r} not found (relative to the experiment or the repo)")
        return
    spec = _mapping(src, path, spec, "a trace file path or {file|constant, slice, scale, loop, clip, ...}")
    _unknown(src, path, spec, TRACE_KEYS)
    if ("file" in spec) == ("constant" in spec):
        raise _err(src, path, "give exactly one of 'file' or 'constant'")
    if "file" in spec:
        check_trace_spec(src, f"{path}.file", str(spec["file"]), base)
    else:
        const = _mapping(src, f"{path}.constant", spec["constant"], "{down: Mbit/s, up: Mbit/s}")
        _unknown(src, f"{path}.constant", const, {"down": "Mbit/s", "up": "Mbit/s"})
        for d in ("down", "up"):
            if d not in const:
                raise _err(src, f"{path}.constant.{d}", "missing (Mbit/s >= 0)")
            _number(src, f"{path}.constant.{d}", const[d], positive=False, minimum=0)
        _number(src, f"{path}.duration", spec.get("duration", 0) or 0, positive="duration" in spec)
    if "slice" in spec:
        s = spec["slice"]
        if not (isinstance(s, list) and len(s) == 2):
            raise _err(src, f"{path}.slice", f"must be [start, end] seconds, got {s!r}")
        a = _number(src, f"{path}.slice[0]", s[0], positive=False, minimum=0)
        b = _number(src, f"{path}.slice[1]", s[1])
        if b <= a:
            raise _err(src, f"{path}.slice", f"end ({b:g}) must be after start ({a:g})")
    if "loop" in spec:
        _number(src, f"{path}.loop", spec["loop"])
    if "resample" in spec:
        _number(src, f"{path}.resample", spec["resample"])
    if "scale" in spec:
        sc = spec["scale"]
        if isinstance(sc, dict):
            _unknown(src, f"{path}.scale", sc, {"down": "factor", "up": "factor"})
            for k, v in sc.items():
                _number(src, f"{path}.scale.{k}", v, positive=False, minimum=0)
        else:
            _number(src, f"{path}.scale", sc, positive=False, minimum=0)
    if "clip" in spec:
        c = spec["clip"]
        if not (isinstance(c, list) and len(c) == 2):
            raise _err(src, f"{path}.clip", f"must be [lo, hi] Mbit/s, got {c!r}")
        for i, v in enumerate(c):
            _number(src, f"{path}.clip[{i}]", v, positive=False, minimum=0)
    if "outages" in spec:
        w = spec["outages"]
        if not isinstance(w, list) or not all(isinstance(x, list) and len(x) == 2 for x in w):
            raise _err(src, f"{path}.outages", "must be a list of [start, end] windows (seconds)")


def trace_files(spec: Any, base: Path | None) -> list[Path]:
    if isinstance(spec, str):
        return [resolve_path(spec, base)]
    if isinstance(spec, dict) and "file" in spec:
        return [resolve_path(spec["file"], base)]
    return []


def build_trace(spec: Any, where: str, base: Path | None, extra_scale: float | None = None):
    """A ``testbed.traces.Trace`` from a spec: load (or constant), then slice, loop, resample, clip, scale."""
    from testbed.traces import (
        TraceError,
        clip,
        constant,
        load_trace,
        loop,
        resample,
        scale,
        slice_trace,
        with_outages,
    )

    try:
        if isinstance(spec, str):
            spec = {"file": spec}
        if "file" in spec:
            trace = load_trace(resolve_path(spec["file"], base))
        else:
            c = spec["constant"]
            trace = constant(float(c["down"]), float(c["up"]), float(spec.get("duration", 3600)),
                             name=f"constant-{c['down']:g}down-{c['up']:g}up")
        if "slice" in spec:
            trace = slice_trace(trace, *spec["slice"])
        if "loop" in spec:
            trace = loop(trace, float(spec["loop"]))
        if "resample" in spec:
            trace = resample(trace, float(spec["resample"]))
        if "clip" in spec:
            trace = clip(trace, *spec["clip"])
        if "scale" in spec:
            sc = spec["scale"]
            trace = scale(trace, **sc) if isinstance(sc, dict) else scale(trace, float(sc))
        if "outages" in spec:
            trace = with_outages(trace, [tuple(w) for w in spec["outages"]])
        if extra_scale is not None and extra_scale != 1:
            trace = scale(trace, float(extra_scale))
    except TraceError as exc:
        raise ConfigError(where, str(exc)) from exc
    return trace


def build_traces(specs: dict, where: str, base: Path | None, extra_scale: float | None = None) -> dict:
    return {link: build_trace(spec, f"{where}: traces.{link}", base, extra_scale) for link, spec in specs.items()}


# ---------------------------------------------------------------------------- sweep
def _set_path(cfg: dict, path: str, value: Any, strategies: dict[str, dict]) -> None:
    parts = path.split(".")
    if parts[0] == "strategies":  # strategies.<label>[+<label>...].params.<key>
        for label in parts[1].split("+"):
            strategies[label].setdefault("params", {})[parts[3]] = copy.deepcopy(value)
        return
    if len(parts) == 1:
        cfg[parts[0]] = copy.deepcopy(value)
        return
    target = cfg.setdefault(parts[0], {})
    for p in parts[1:-1]:
        target = target.setdefault(p, {})
    target[parts[-1]] = copy.deepcopy(value)


def _fmt_value(v: Any) -> str:
    if isinstance(v, dict):
        if "file" in v:
            return Path(str(v["file"])).stem
        if "constant" in v:
            return f"{v['constant'].get('up', 0):g}up"
        return hashlib.sha1(json.dumps(v, sort_keys=True).encode()).hexdigest()[:6]
    if isinstance(v, str):
        return Path(v).stem if "/" in v else v
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def cell_id(index: int, values: dict) -> str:
    if not values:
        return "c00"
    parts = [f"{k.split('.')[-1]}={_fmt_value(v)}" for k, v in values.items()]
    text = re.sub(r"[^A-Za-z0-9_.=+-]", "_", ",".join(parts))
    return f"c{index:02d}-{text}"[:120]


# ---------------------------------------------------------------------------- parse
def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    src = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(src, "experiment file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(src, f"not valid YAML: {exc}") from None
    return parse_experiment(raw, src, base=path.parent)


def parse_experiment(raw: Any, src: str = "<dict>", base: Path | None = None) -> Experiment:
    if not isinstance(raw, dict):
        raise ConfigError(src, "an experiment file must be a mapping with at least name, topology, "
                          "strategies and workload")
    raw = copy.deepcopy(raw)
    _unknown(src, "", raw, TOP_KEYS)
    for key in ("name", "topology", "strategies", "workload"):
        if key not in raw:
            raise _err(src, key, f"missing ({TOP_KEYS[key]})")
    name = raw["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _err(src, "name", f"must match {NAME_RE.pattern} (used as a folder name), got {name!r}")

    # topology + params + faults
    topo_path = resolve_path(str(raw["topology"]), base)
    if not topo_path.exists():
        raise _err(src, "topology", f"topology file {raw['topology']!r} not found")
    params = _mapping(src, "params", raw.get("params"), TOP_KEYS["params"])
    from testbed.emulation.topology import load_topology

    try:
        topo = load_topology(topo_path, params=params)
    except ConfigError as exc:
        raise _err(src, "topology", f"{exc}") from None
    links = set(topo.links)

    traces = _mapping(src, "traces", raw.get("traces"), TOP_KEYS["traces"])
    for link, spec in traces.items():
        if link not in links:
            raise _err(src, f"traces.{link}", f"unknown link; the topology's links are: {', '.join(sorted(links))}")
        check_trace_spec(src, f"traces.{link}", spec, base)

    faults = raw.get("faults") or []
    if not isinstance(faults, list):
        raise _err(src, "faults", TOP_KEYS["faults"])
    from testbed.emulation.faults import parse_fault

    for i, f in enumerate(faults):
        try:
            parse_fault(f, f"faults[{i}]", links)
        except ConfigError as exc:
            raise ConfigError(f"{src}: {exc.where}", exc.message) from None

    if "model" in raw and not isinstance(raw["model"], str):
        raise _err(src, "model", f"must be a string ({TOP_KEYS['model']}), got {raw['model']!r}")
    from testbed.user_code import UserCodeError, add_search_path

    if base is not None:  # user code (module:callable) may sit next to the experiment file
        add_search_path(base)
    if "model" in raw:
        try:
            from testbed.models.registry import resolve as resolve_model

            resolve_model(raw["model"])
        except KeyError as exc:
            raise _err(src, "model", str(exc.args[0])) from None
        except UserCodeError as exc:
            raise _err(src, "model", str(exc)) from None
    if "data" in raw:
        check_data_spec(src, "data", raw["data"], base)
    devices = raw.get("devices")
    if devices is not None:
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise _err(src, "devices", "must be a list of device host names")
        device_hosts = {h.name for h in topo.hosts.values() if h.role == "device"}
        for i, d in enumerate(devices):
            if d not in device_hosts:
                raise _err(src, f"devices[{i}]", f"not a device host; device hosts: {', '.join(sorted(device_hosts))}")

    if "device_profile" in raw:
        check_device_profile(src, "device_profile", raw["device_profile"], topo)
    if raw.get("server_profile") is not None:
        check_device_profile(src, "server_profile", raw["server_profile"], topo, server=True)
    workers = raw.get("server_workers")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise _err(src, "server_workers", f"must be an integer >= 1 ({TOP_KEYS['server_workers']}), got {workers!r}")

    # workload + sla
    workload = _mapping(src, "workload", raw["workload"], TOP_KEYS["workload"])
    _unknown(src, "workload", workload, WORKLOAD_KEYS)
    if workload.get("mode", "open") not in ("open", "closed"):
        raise _err(src, "workload.mode", f"must be open or closed, got {workload['mode']!r}")
    if workload.get("phase", "aligned") not in ("aligned", "staggered"):
        raise _err(src, "workload.phase", f"must be aligned or staggered, got {workload['phase']!r}")
    for key in ("fps", "duration_s", "deadline_s"):
        if key not in workload:
            raise _err(src, f"workload.{key}", f"missing ({WORKLOAD_KEYS[key]})")
        _number(src, f"workload.{key}", workload[key])
    _mapping(src, "energy", raw.get("energy"), TOP_KEYS["energy"])
    data_options = _mapping(src, "data_options", raw.get("data_options"), TOP_KEYS["data_options"])
    for key, value in data_options.items():
        if key not in DATA_OPTION_KEYS:
            raise _err(src, f"data_options.{key}", f"unknown option; allowed: {', '.join(DATA_OPTION_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _err(src, f"data_options.{key}", f"must be a positive integer, got {value!r}")
    sla = _mapping(src, "sla", raw.get("sla"), TOP_KEYS["sla"])
    for key, value in sla.items():
        if value is not None and not isinstance(value, (int, float, str, list)):
            raise _err(src, f"sla.{key}", f"must be a number, string or list, got {value!r}")

    strategies = _parse_strategies(src, raw["strategies"])

    # repeats / seeds
    if "seeds" in raw:
        seeds = raw["seeds"]
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                               for s in seeds):
            raise _err(src, "seeds", "must be a non-empty list of integers")
        if "repeats" in raw and raw["repeats"] != len(seeds):
            raise _err(src, "repeats", f"is {raw['repeats']!r} but seeds lists {len(seeds)}; give one of them")
    else:
        repeats = _number(src, "repeats", raw.get("repeats", 1), integer=True)
        seed = _number(src, "seed", raw.get("seed", 0), positive=False, integer=True, minimum=0)
        seeds = [seed + r for r in range(repeats)]

    # sweep
    sweep = _mapping(src, "sweep", raw.get("sweep"), TOP_KEYS["sweep"])
    labels = {s.label for s in strategies}
    for axis, values in sweep.items():
        where = f"sweep.{axis}"
        if not isinstance(values, list) or not values:
            raise _err(src, where, "must be a non-empty list of values")
        root = axis.split(".")[0]
        if axis == "bandwidth_scale":
            for i, v in enumerate(values):
                _number(src, f"{where}[{i}]", v, positive=False, minimum=0)
        elif axis == "trace":
            link = raw.get("sweep_link") or (next(iter(traces)) if len(traces) == 1 else None)
            if link is None or link not in links:
                raise _err(src, "sweep_link", "a 'trace' sweep needs exactly one traced link or sweep_link: <link>")
            for i, v in enumerate(values):
                check_trace_spec(src, f"{where}[{i}]", v, base)
        elif root not in SWEEPABLE_ROOTS:
            raise _err(src, where, f"unknown axis; use {', '.join(SPECIAL_AXES)} or a key path under "
                       f"{', '.join(SWEEPABLE_ROOTS)} (e.g. params.n_devices, sla.latency_s)")
        elif root == "strategies":
            parts = axis.split(".")
            if len(parts) != 4 or parts[2] != "params" or not set(parts[1].split("+")) <= labels:
                raise _err(src, where, f"strategy axes are strategies.<label>.params.<key> (or "
                           f"<label>+<label>... to set the same parameter of several); labels: "
                           f"{', '.join(sorted(labels))}")
        elif root == "workload":
            key = axis.split(".", 1)[1] if "." in axis else ""
            numeric = [k for k in WORKLOAD_KEYS if k not in ("mode", "phase")]
            if key not in numeric:
                raise _err(src, where, f"workload axes are workload.{{{','.join(numeric)}}}")
            for i, v in enumerate(values):
                _number(src, f"{where}[{i}]", v)
        elif root == "device_profile":
            for i, v in enumerate(values):
                check_device_profile(src, f"{where}[{i}]", v, topo)
        elif root == "data":
            key = axis.split(".", 1)[1] if "." in axis else None
            if key is None:
                for i, v in enumerate(values):
                    check_data_spec(src, f"{where}[{i}]", v, base)
            elif key not in DATA_KEYS or not isinstance(raw.get("data"), dict):
                raise _err(src, where, f"data axes are data (whole values) or data.{{{','.join(DATA_KEYS)}}} "
                                       "with data given as {name, root, ...}")
            else:
                for i, v in enumerate(values):
                    check_data_spec(src, "data", {**raw["data"], key: v}, base, where={key: f"{where}[{i}]"})
        elif root == "traces":
            parts = axis.split(".")
            if len(parts) < 2 or parts[1] not in links:
                raise _err(src, where, f"trace axes are traces.<link>; links: {', '.join(sorted(links))}")
            if len(parts) == 2:
                for i, v in enumerate(values):
                    check_trace_spec(src, f"{where}[{i}]", v, base)
    cells = _expand(raw, src, base, sweep, strategies)
    return Experiment(name=name, source=src, raw=raw, strategies=strategies, seeds=list(seeds), cells=cells,
                      axes=dict(sweep))


def check_device_profile(src: str, path: str, value: Any, topo, server: bool = False) -> None:
    """A profile name, 'cpu' (devices only) or {device host: name|'cpu'}; names must be known profiles."""
    from testbed.emulation.topology import check_profile

    if isinstance(value, dict) and not server:
        device_hosts = topo.hosts_with_role("device")
        for host, name in value.items():
            if host not in device_hosts:
                raise _err(src, f"{path}.{host}", f"not a device host; device hosts: {', '.join(device_hosts)}")
            if name != "cpu":
                check_profile(name, f"{src}: {path}.{host}")
        return
    if not isinstance(value, str):
        raise _err(src, path, "must be a profile name" + ("" if server else ", 'cpu' or {device host: name}")
                   + f", got {value!r}")
    if value != "cpu" or server:
        check_profile(value, f"{src}: {path}")


def _parse_strategies(src: str, raw: Any) -> list[StrategySpec]:
    if not isinstance(raw, list) or not raw:
        raise _err(src, "strategies", "must be a non-empty list of names or {name, label, params}")
    known = known_strategies()
    out: list[StrategySpec] = []
    for i, s in enumerate(raw):
        where = f"strategies[{i}]"
        if isinstance(s, str):
            s = {"name": s}
        if not isinstance(s, dict) or "name" not in s:
            raise _err(src, where, "must be a strategy name or a mapping with name (and label, params)")
        _unknown(src, where, s, {"name": "registry name", "label": "unique label (default: name)",
                                 "params": "strategy parameters (mapping)"})
        name = s["name"]
        default_label = name
        if isinstance(name, str) and ":" in name:  # the user's own Strategy subclass, module:Class
            from testbed.strategies import user_strategy_class
            from testbed.user_code import UserCodeError

            try:
                cls = user_strategy_class(name)
            except UserCodeError as exc:
                raise _err(src, f"{where}.name", str(exc)) from None
            default_label = cls.name if NAME_RE.match(cls.name) else name.rpartition(":")[2]
        elif known is not None and name not in known:
            raise _err(src, f"{where}.name", f"unknown strategy {name!r}; known: {', '.join(known)}")
        label = str(s.get("label", default_label))
        if not NAME_RE.match(label):
            raise _err(src, f"{where}.label", f"must match {NAME_RE.pattern}, got {label!r}")
        if any(o.label == label for o in out):
            raise _err(src, f"{where}.label", f"duplicate label {label!r}; give each entry a distinct label")
        params = _mapping(src, f"{where}.params", s.get("params"), "strategy parameters")
        out.append(StrategySpec(name=name, label=label, params=dict(params)))
    return out


def _check_strategy_params(src: str, strat: dict, values: dict) -> None:
    """Let each strategy validate its parameters (when testbed.strategies is available)."""
    try:
        from testbed.strategies import get_strategy
    except ImportError:
        return
    for i, (label, spec) in enumerate(strat.items()):
        try:
            get_strategy(spec["name"], dict(spec.get("params") or {}))
        except ConfigError as exc:
            key = exc.where.replace("strategy_params.", "params.") if exc.where.startswith("strategy_params") \
                else exc.where
            cell = f" (sweep cell {values})" if values else ""
            raise _err(src, f"strategies[{i}] ({label}).{key}", f"{exc.message}{cell}") from None


def _expand(raw: dict, src: str, base: Path | None, sweep: dict, strategies: list[StrategySpec]) -> list[Cell]:
    axes = list(sweep)
    combos = list(itertools.product(*(sweep[a] for a in axes))) if axes else [()]
    cells = []
    for index, combo in enumerate(combos):
        values = dict(zip(axes, combo))
        cfg = copy.deepcopy({k: v for k, v in raw.items() if k not in ("sweep", "strategies")})
        strat = {s.label: {"name": s.name, "params": copy.deepcopy(s.params)} for s in strategies}
        for axis, value in values.items():
            if axis == "bandwidth_scale":
                continue
            if axis == "trace":
                link = raw.get("sweep_link") or next(iter(raw.get("traces") or {}))
                cfg.setdefault("traces", {})[link] = copy.deepcopy(value)
                continue
            _set_path(cfg, axis, value, strat)
        cfg["strategies"] = strat
        cfg["_base"] = base
        _check_strategy_params(src, strat, values)
        cells.append(Cell(index=index, cell_id=cell_id(index, values), values=values, config=cfg))
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):
        for c in cells:
            c.cell_id = f"c{c.index:02d}"
    return cells

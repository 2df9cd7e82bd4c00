"""Topology files (``topologies/*.yaml``): schema, parameter expansion and validation.

A topology names hosts (with a role, a CPU share and optionally the hardware they
emulate: ``device: {profile: raspberry_pi4}``, see ``testbed.devices``), optional
switches, and links. Each link joins two nodes ``ends: [a, b]``; by convention ``a`` is the
device side, so **up** is a→b (device→cloud) and **down** is b→a. Each
direction can have its own rate, delay, jitter, loss, queue size and trace.

Errors name the file and the key path, and say what is allowed.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed.errors import ConfigError

ROLES = ("device", "edge", "cloud")
DIRECTIONS = ("up", "down")
DIRECTION_KEYS = ("bw_mbps", "delay_ms", "jitter_ms", "loss_pct", "queue_packets", "trace")
LINK_KEYS = ("ends", "up", "down", *DIRECTION_KEYS)
HOST_KEYS = ("role", "cpu", "count", "device")
# host.device: the hardware a host emulates. ``profile``: a testbed.devices profile name (a counted
# group may give a list, cycled over its hosts); ``workers``: parallel workers of a server profile;
# ``cpu``: CPU-share mode, cores (same as host.cpu).
HOST_DEVICE_KEYS = ("profile", "workers", "cpu")
TOP_KEYS = ("name", "description", "params", "switch", "hosts", "switches", "links")
# What Mininet builds the switches with: Linux bridges (every kernel) or Open vSwitch (users' kernels
# with the openvswitch module and ovs-vswitchd; refused where absent).
SWITCH_KINDS = ("linuxbridge", "ovs")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,9}$")
PARAM_RE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
DEFAULT_QUEUE_PACKETS = 200


@dataclass(frozen=True)
class DirectionSpec:
    """Shaping of one direction of a link. ``bw_mbps=None`` means not rate-limited."""

    bw_mbps: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    queue_packets: int = DEFAULT_QUEUE_PACKETS
    trace: str | None = None  # path of the trace that drives this direction's rate

    @property
    def shaped(self) -> bool:
        return bool(self.bw_mbps or self.delay_ms or self.jitter_ms or self.loss_pct or self.trace)


@dataclass(frozen=True)
class LinkSpec:
    name: str
    a: str  # device side
    b: str  # cloud side
    up: DirectionSpec  # a -> b
    down: DirectionSpec  # b -> a

    def direction(self, name: str) -> DirectionSpec:
        return self.up if name == "up" else self.down

    def sender(self, direction: str) -> str:
        """The node whose egress interface shapes ``direction``."""
        return self.a if direction == "up" else self.b


@dataclass(frozen=True)
class HostSpec:
    name: str
    role: str
    cpu: float | None = None  # CPU cores (cgroup quota), None = unlimited
    profile: str | None = None  # testbed.devices profile this host computes like (None: its CPU share)
    workers: int | None = None  # parallel workers of a server profile (None: the profile's default)


@dataclass(frozen=True)
class Topology:
    name: str
    description: str
    hosts: dict[str, HostSpec]
    switches: tuple[str, ...]
    links: dict[str, LinkSpec]
    source: str = "<dict>"
    params: dict[str, Any] = field(default_factory=dict)
    switch: str = "linuxbridge"  # one of SWITCH_KINDS

    def hosts_with_role(self, role: str) -> list[str]:
        return [h.name for h in self.hosts.values() if h.role == role]


def load_topology(path: str | Path, params: dict[str, Any] | None = None) -> Topology:
    """Read and validate a topology YAML file. ``params`` override the file's ``params``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "topology file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_topology(raw, source=str(path), params=params)


def parse_topology(raw: Any, source: str = "<dict>", params: dict[str, Any] | None = None) -> Topology:
    v = _Validator(source)
    raw = v.mapping(raw, "", TOP_KEYS)
    merged = dict(v.mapping(raw.get("params") or {}, "params"))
    for key, value in (params or {}).items():
        if key not in merged:
            raise ConfigError(source, f"unknown topology parameter {key!r}; this topology has: "
                              f"{', '.join(sorted(merged)) or 'none'}")
        merged[key] = value
    raw = _substitute(copy.deepcopy(raw), merged, v, "")

    name = raw.get("name") or Path(source).stem
    switch = raw.get("switch", "linuxbridge")
    if switch not in SWITCH_KINDS:
        raise ConfigError(f"{source}: switch", f"must be one of {', '.join(SWITCH_KINDS)}; got {switch!r}")
    hosts: dict[str, HostSpec] = {}
    counts: dict[str, int] = {}
    for hname, hraw in v.mapping(raw.get("hosts"), "hosts", required=True).items():
        key = f"hosts.{hname}"
        v.name(hname, key)
        hraw = v.mapping(hraw, key, HOST_KEYS)
        role = hraw.get("role")
        if role not in ROLES:
            raise ConfigError(f"{source}: {key}.role", f"must be one of {', '.join(ROLES)}; got {role!r}")
        cpu = v.number(hraw.get("cpu"), f"{key}.cpu", minimum=0.01, allow_none=True, what="CPU cores")
        hardware = v.mapping(hraw.get("device"), f"{key}.device", HOST_DEVICE_KEYS)
        if hardware.get("cpu") is not None:
            device_cpu = v.number(hardware["cpu"], f"{key}.device.cpu", minimum=0.01, what="CPU cores")
            if cpu is not None and cpu != device_cpu:
                raise ConfigError(f"{source}: {key}.device.cpu", f"{device_cpu:g} contradicts {key}.cpu ({cpu:g}); "
                                  "give one of them")
            cpu = device_cpu
        count = hraw.get("count")
        n = None if count is None else int(v.number(count, f"{key}.count", minimum=1, integer=True,
                                                        what="host count"))
        profiles = _host_profiles(v, hardware.get("profile"), f"{key}.device.profile", n)
        workers = hardware.get("workers")
        if workers is not None:
            workers = int(v.number(workers, f"{key}.device.workers", minimum=1, integer=True,
                                   what="parallel workers of a server profile"))
        if n is None:
            hosts[hname] = HostSpec(hname, role, cpu, profiles[0], workers)
        else:
            counts[hname] = n
            for i in range(1, n + 1):
                hosts[f"{hname}{i}"] = HostSpec(f"{hname}{i}", role, cpu, profiles[(i - 1) % len(profiles)], workers)
    if not hosts:
        raise ConfigError(f"{source}: hosts", "a topology needs at least one host")

    switches_raw = raw.get("switches") or []
    if isinstance(switches_raw, dict):
        switches_raw = list(switches_raw)
    if not isinstance(switches_raw, list):
        raise ConfigError(f"{source}: switches", "must be a list of switch names")
    switches = []
    for i, s in enumerate(switches_raw):
        v.name(s, f"switches[{i}]")
        if s in hosts or s in counts:
            raise ConfigError(f"{source}: switches[{i}]", f"{s!r} is already a host name")
        switches.append(s)
    nodes = set(hosts) | set(switches)

    links: dict[str, LinkSpec] = {}
    degree: dict[str, int] = {}
    for lname, lraw in v.mapping(raw.get("links"), "links", required=True).items():
        key = f"links.{lname}"
        v.name(lname, key)
        lraw = v.mapping(lraw, key, LINK_KEYS)
        ends = lraw.get("ends")
        if not (isinstance(ends, list) and len(ends) == 2 and all(isinstance(e, str) for e in ends)):
            raise ConfigError(f"{source}: {key}.ends", "must be a list of two node names [device_side, cloud_side]")
        common = {k: lraw[k] for k in DIRECTION_KEYS if k in lraw}
        per_dir = {}
        for d in DIRECTIONS:
            draw = v.mapping(lraw.get(d) or {}, f"{key}.{d}", DIRECTION_KEYS)
            per_dir[d] = _direction(v, {**common, **draw}, f"{key}.{d}")
        counted = [e for e in ends if e in counts]
        if len(counted) > 1:
            raise ConfigError(f"{source}: {key}.ends", "at most one end may be a counted host group")
        if counted:
            group = counted[0]
            instances = [(f"{lname}{i}", [e if e != group else f"{group}{i}" for e in ends])
                         for i in range(1, counts[group] + 1)]
        else:
            instances = [(lname, ends)]
        for inst_name, (a, b) in instances:
            for end in (a, b):
                if end not in nodes:
                    raise ConfigError(f"{source}: {key}.ends", f"unknown node {end!r}; nodes are: "
                                      f"{', '.join(sorted(nodes))}")
            if a == b:
                raise ConfigError(f"{source}: {key}.ends", "a link needs two different nodes")
            if inst_name in links:
                raise ConfigError(f"{source}: {key}", f"link name {inst_name!r} is used twice")
            links[inst_name] = LinkSpec(inst_name, a, b, per_dir["up"], per_dir["down"])
            for end in (a, b):
                degree[end] = degree.get(end, 0) + 1
    for h in hosts:
        if degree.get(h, 0) != 1:
            raise ConfigError(f"{source}: links", f"host {h!r} has {degree.get(h, 0)} links; each host needs "
                              "exactly one (connect hosts through switches)")
    return Topology(name=name, description=str(raw.get("description") or ""), hosts=hosts,
                    switches=tuple(switches), links=links, source=source, params=merged, switch=switch)


def known_profiles() -> list[str]:
    """Names of the device/server profiles (``testbed.devices``)."""
    from testbed.devices import list_profiles

    return sorted(list_profiles())


def check_profile(name: Any, where: str) -> str:
    """``name`` if it is a known profile, else a ConfigError at ``where`` listing the known ones."""
    known = known_profiles()
    if not isinstance(name, str) or name not in known:
        raise ConfigError(where, f"unknown device profile {name!r}; known profiles: {', '.join(known)}")
    return name


def _host_profiles(v: _Validator, raw: Any, key: str, count: int | None) -> list[str | None]:
    """One profile per host of the entry (a list is cycled over a counted group)."""
    if raw is None:
        return [None]
    if isinstance(raw, list):
        if count is None:
            raise ConfigError(f"{v.source}: {key}", "a list of profiles needs a counted host group (count: N); "
                              "give one profile name")
        if not raw:
            raise ConfigError(f"{v.source}: {key}", "must be a profile name or a non-empty list of names")
        return [check_profile(p, f"{v.source}: {key}[{i}]") for i, p in enumerate(raw)]
    return [check_profile(raw, f"{v.source}: {key}")]


def _direction(v: _Validator, raw: dict, key: str) -> DirectionSpec:
    trace = raw.get("trace")
    if trace is not None and not isinstance(trace, str):
        raise ConfigError(f"{v.source}: {key}.trace", "must be a trace file path")
    queue = raw.get("queue_packets", DEFAULT_QUEUE_PACKETS)
    return DirectionSpec(
        bw_mbps=v.number(raw.get("bw_mbps"), f"{key}.bw_mbps", minimum=0.01, maximum=100_000, allow_none=True,
                         what="rate in Mbit/s"),
        delay_ms=v.number(raw.get("delay_ms", 0), f"{key}.delay_ms", minimum=0, maximum=60_000, what="delay in ms"),
        jitter_ms=v.number(raw.get("jitter_ms", 0), f"{key}.jitter_ms", minimum=0, maximum=60_000,
                           what="jitter in ms"),
        loss_pct=v.number(raw.get("loss_pct", 0), f"{key}.loss_pct", minimum=0, maximum=100, what="loss in percent"),
        queue_packets=int(v.number(queue, f"{key}.queue_packets", minimum=2, maximum=1_000_000, integer=True,
                                   what="queue size in packets")),
        trace=trace,
    )


def _substitute(node: Any, params: dict[str, Any], v: _Validator, key: str) -> Any:
    """Replace ``"${param}"`` strings by the parameter's value."""
    if isinstance(node, dict):
        return {k: (_substitute(val, params, v, f"{key}.{k}" if key else str(k)) if k != "params" or key else val)
                for k, val in node.items()}
    if isinstance(node, list):
        return [_substitute(x, params, v, f"{key}[{i}]") for i, x in enumerate(node)]
    if isinstance(node, str):
        m = PARAM_RE.match(node)
        if m:
            if m.group(1) not in params:
                raise ConfigError(f"{v.source}: {key}", f"unknown parameter ${{{m.group(1)}}}; define it under params")
            return params[m.group(1)]
    return node


class _Validator:
    def __init__(self, source: str):
        self.source = source

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...] | None = None, required: bool = False) -> dict:
        where = f"{self.source}: {key}" if key else self.source
        if value is None and not required:
            return {}
        if not isinstance(value, dict) or (required and not value):
            raise ConfigError(where, "must be a non-empty mapping" if required else "must be a mapping")
        if allowed:
            for k in value:
                if k not in allowed:
                    raise ConfigError(f"{self.source}: {key + '.' if key else ''}{k}",
                                      f"unknown key; allowed: {', '.join(allowed)}")
        return value

    def name(self, value: Any, key: str) -> None:
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise ConfigError(f"{self.source}: {key}", f"name {value!r} must start with a letter and have at most "
                              "10 letters, digits or underscores (it becomes part of interface names)")

    def number(self, value: Any, key: str, *, minimum: float | None = None, maximum: float | None = None,
               allow_none: bool = False, integer: bool = False, what: str = "number") -> float | None:
        if value is None:
            if allow_none:
                return None
            raise ConfigError(f"{self.source}: {key}", f"missing; expected a {what}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and int(value) != value):
            raise ConfigError(f"{self.source}: {key}", f"expected {'an integer' if integer else 'a number'} "
                              f"({what}), got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self.source}: {key}", f"{value} is below the minimum {minimum} ({what})")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self.source}: {key}", f"{value} is above the maximum {maximum} ({what})")
        return float(value)

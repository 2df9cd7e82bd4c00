"""Scheduled faults: outage windows, flapping links and loss bursts.

A fault is plain data; ``schedule.build_timeline`` folds faults and traces
into one per-direction timeline that the replayer applies.

YAML / dict form (``kind`` picks the fault)::

    - {kind: outage, link: access, start: 10, end: 15}                  # both directions, packets held
    - {kind: outage, link: access, start: 30, end: 31, mode: drop, direction: up}
    - {kind: flap, link: access, start: 40, end: 60, period: 4, down: 1}  # down 1 s of every 4 s
    - {kind: loss, link: access, start: 5, end: 8, loss_pct: 20}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from testbed.errors import ConfigError

KINDS = ("outage", "flap", "loss")
MODES = ("hold", "drop")
FAULT_DIRECTIONS = ("both", "up", "down")
_KEYS = {
    "outage": ("kind", "link", "start", "end", "direction", "mode"),
    "flap": ("kind", "link", "start", "end", "direction", "mode", "period", "down"),
    "loss": ("kind", "link", "start", "end", "direction", "loss_pct"),
}


@dataclass(frozen=True)
class Fault:
    kind: str
    link: str
    start: float
    end: float
    direction: str = "both"
    mode: str = "hold"  # outage/flap: queued packets are held (a cell that buffers) or dropped
    period: float = 0.0  # flap
    down: float = 0.0  # flap: seconds down at the start of every period
    loss_pct: float = 0.0  # loss

    def directions(self) -> tuple[str, ...]:
        return ("up", "down") if self.direction == "both" else (self.direction,)

    def down_windows(self) -> list[tuple[float, float]]:
        """Windows in which the link carries nothing (outage and flap)."""
        if self.kind == "outage":
            return [(self.start, self.end)]
        if self.kind == "flap":
            windows, t = [], self.start
            while t < self.end:
                windows.append((t, min(t + self.down, self.end)))
                t += self.period
            return windows
        return []


def outage(link: str, start: float, end: float, direction: str = "both", mode: str = "hold") -> Fault:
    return parse_fault({"kind": "outage", "link": link, "start": start, "end": end, "direction": direction,
                        "mode": mode})


def parse_fault(raw: Any, where: str = "faults[0]", links: set[str] | None = None) -> Fault:
    if isinstance(raw, Fault):
        fault = raw
    else:
        if not isinstance(raw, dict):
            raise ConfigError(where, f"a fault must be a mapping with a kind ({', '.join(KINDS)})")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{where}.kind", f"must be one of {', '.join(KINDS)}; got {kind!r}")
        for key in raw:
            if key not in _KEYS[kind]:
                raise ConfigError(f"{where}.{key}", f"unknown key for a {kind} fault; allowed: "
                                  f"{', '.join(_KEYS[kind])}")
        for key in ("link", "start", "end"):
            if key not in raw:
                raise ConfigError(f"{where}.{key}", f"missing (a {kind} fault needs link, start, end)")

        def num(key: str, default: float = 0.0) -> float:
            value = raw.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{where}.{key}", f"must be a number >= 0 (seconds or percent), got {value!r}")
            return float(value)

        fault = Fault(kind=kind, link=str(raw["link"]), start=num("start"), end=num("end"),
                      direction=raw.get("direction", "both"), mode=raw.get("mode", "hold"),
                      period=num("period"), down=num("down"), loss_pct=num("loss_pct"))
    if fault.end <= fault.start:
        raise ConfigError(f"{where}.end", f"end ({fault.end}) must be after start ({fault.start})")
    if fault.direction not in FAULT_DIRECTIONS:
        raise ConfigError(f"{where}.direction", f"must be one of {', '.join(FAULT_DIRECTIONS)}")
    if fault.mode not in MODES:
        raise ConfigError(f"{where}.mode", f"must be one of {', '.join(MODES)}")
    if fault.kind == "flap" and not (0 < fault.down < fault.period):
        raise ConfigError(f"{where}.down", "a flap needs 0 < down < period (seconds)")
    if fault.kind == "loss" and not (0 < fault.loss_pct <= 100):
        raise ConfigError(f"{where}.loss_pct", "must be in (0, 100]")
    if links is not None and fault.link not in links:
        raise ConfigError(f"{where}.link", f"unknown link {fault.link!r}; links are: {', '.join(sorted(links))}")
    return fault

"""Fold a trace, static shaping and faults into one timeline per link direction.

The replayer only ever applies a timeline; everything about *what* the link
should do at time t is decided here, as plain data, so it can be tested
without root and written into every run's results.

Near-zero rates. HTB charges each packet as time debt at the class's current
rate: a 1500-byte packet sent at 8 kbit/s leaves 1.5 s of debt that survives
the next rate increase, which is why setting tiny HTB rates makes TCP collapse
and never recover. So the HTB rate never drops below ``floor_bps`` (one MTU
per replay step: 121 kbit/s at 100 ms, i.e. a packet's debt is at most one
step), and any step whose trace rate is below half of that is an *outage*:
the gate (a TBF qdisc below the HTB class) holds packets instead. Steps
between half the floor and the floor are rounded up to it. Both roundings are
counted in :func:`rounding_report`.

RTT. A trace's ``rtt_ms`` column is the round trip the measurement saw; each direction's netem delay
is the link direction's static ``delay_ms`` plus **half** the trace's RTT (one-way delays are not in
the public traces, so the path is taken as symmetric): a device-cloud round trip over a link
replaying RTT r then measures r plus the static delays of both directions.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from testbed.emulation.faults import Fault

MTU_WIRE_BYTES = 1514
UNSHAPED_BPS = 10e9
OPEN, HOLD, DROP = "open", "hold", "drop"


@dataclass(frozen=True)
class Step:
    t: float  # seconds since replay start
    rate_bps: float  # HTB rate to apply (already floored)
    gate: str  # open | hold | drop
    loss_pct: float
    trace_bps: float  # what the trace (or static config) asked for, before flooring
    delay_ms: float = 0.0  # netem delay of this direction (static delay_ms + trace RTT / 2)


def floor_bps(granularity: float) -> float:
    return MTU_WIRE_BYTES * 8 / granularity


def base_steps(trace, direction: str, static_bps: float | None, granularity: float,
               horizon: float) -> list[tuple[float, float]]:
    """(t, bit/s) change points of the trace (looped) or the static rate, up to ``horizon``."""
    if trace is None:
        return [(0.0, static_bps if static_bps else UNSHAPED_BPS)]
    period = trace.schedule(direction, granularity)
    out: list[tuple[float, float]] = []
    offset = 0.0
    while offset < horizon:
        for t, mbps in period:
            if offset + t >= horizon:
                break
            out.append((offset + t, mbps * 1e6))
        offset += trace.duration
    return out


def delay_steps(trace, base_delay_ms: float, granularity: float, horizon: float) -> list[tuple[float, float]]:
    """(t, one-way delay ms) change points: ``base_delay_ms`` + half the trace's RTT (looped), to ``horizon``."""
    if trace is None or trace.rtt_ms is None:
        return [(0.0, base_delay_ms)]
    period = trace.rtt_schedule(granularity)
    out: list[tuple[float, float]] = []
    offset = 0.0
    while offset < horizon:
        for t, rtt in period:
            if offset + t >= horizon:
                break
            out.append((offset + t, round(base_delay_ms + rtt / 2, 6)))
        offset += trace.duration
    return out


def build_timeline(trace, direction: str, static_bps: float | None, base_loss_pct: float,
                   faults: list[Fault], link: str, granularity: float = 0.1,
                   horizon: float = 3600.0, base_delay_ms: float = 0.0) -> list[Step]:
    """The ordered list of state changes for one direction of one link."""
    floor = floor_bps(granularity)
    base = base_steps(trace, direction, static_bps, granularity, horizon)
    delays = delay_steps(trace, base_delay_ms, granularity, horizon)
    mine = [f for f in faults if f.link == link and direction in f.directions()]
    down_windows = [(s, e, f.mode) for f in mine for s, e in f.down_windows()]
    loss_windows = [(f.start, f.end, f.loss_pct) for f in mine if f.kind == "loss"]

    points = {t for t, _ in base} | {t for t, _ in delays}
    for s, e, *_ in down_windows + loss_windows:
        if s < horizon:
            points.update((s, min(e, horizon)))
    base_times = [t for t, _ in base]
    delay_times = [t for t, _ in delays]

    steps: list[Step] = []
    for t in sorted(points):
        i = bisect.bisect_right(base_times, t) - 1
        trace_bps = base[max(i, 0)][1]
        delay_ms = delays[max(bisect.bisect_right(delay_times, t) - 1, 0)][1]
        gate = OPEN
        for s, e, mode in down_windows:
            if s <= t < e:
                gate = DROP if mode == DROP or gate == DROP else HOLD
        if gate == OPEN and trace_bps < floor / 2:
            gate = HOLD  # a zero-capacity step of the trace is an outage too
        loss = base_loss_pct
        for s, e, pct in loss_windows:
            if s <= t < e:
                loss = max(loss, pct)
        step = Step(t, max(trace_bps, floor), gate, loss, trace_bps, delay_ms)
        if steps and (steps[-1].rate_bps, steps[-1].gate, steps[-1].loss_pct, steps[-1].delay_ms) == (
                step.rate_bps, step.gate, step.loss_pct, step.delay_ms):
            continue
        steps.append(step)
    return steps


def expected_rate_bps(steps: list[Step], t: float) -> float:
    """Capacity the emulated link should have at ``t`` (0 while the gate is closed)."""
    i = bisect.bisect_right([s.t for s in steps], t) - 1
    if i < 0:
        return 0.0
    s = steps[i]
    return 0.0 if s.gate != OPEN else s.rate_bps


def rounding_report(trace, direction: str, granularity: float) -> dict:
    """How much of the trace's volume the near-zero rounding changes (see module docstring)."""
    floor = floor_bps(granularity)
    sched = trace.schedule(direction, granularity)
    total = zeroed = raised = 0.0
    for i, (t, mbps) in enumerate(sched):
        end = sched[i + 1][0] if i + 1 < len(sched) else trace.duration
        bps, dt = mbps * 1e6, end - t
        total += bps * dt
        if bps < floor / 2:
            zeroed += bps * dt
        elif bps < floor:
            raised += (floor - bps) * dt
    return {"floor_mbps": floor / 1e6, "trace_mbit": total / 1e6, "zeroed_mbit": zeroed / 1e6,
            "added_mbit": raised / 1e6}

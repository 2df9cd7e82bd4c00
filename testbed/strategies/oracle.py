"""Oracle: the best plan in hindsight, given the link trace that actually happened — the upper bound.

How it knows the future without a socket or a clock: the trace (file, slice and the injected outage
windows) comes in its params — ``testbed run`` fills them from the experiment's ``traces`` and
``faults`` when they are not given — and the request's arrival time on the trace's clock comes from
``Context.t_arrival``, which the device agent sets before every ``plan`` call (trace time 0 = the
workload's start). Without ``t_arrival`` it counts requests at the open-loop rate (n / fps).
"""

from __future__ import annotations

import math

import numpy as np

from testbed.errors import ConfigError
from testbed.strategies.base import CODECS, MESSAGE_OVERHEAD_BYTES, REPLY_BYTES, Param, Plan, Strategy


class Oracle(Strategy):
    """Oracle: per request, the most accurate (exit, split) that meets the deadline on the real future link.

    For every exit e and every split s before it, the latency is computed on the trace itself, not
    on an estimate: device head to s, then the split's bytes pushed through the *future* uplink rates
    (outages are rate 0: the bytes wait), RTT, the cloud's tail to e, and the reply through the future
    downlink. The most accurate exit (validation accuracy from the model card) with a plan finishing
    by the deadline wins, the fastest split breaking ties; if none does, the shallowest exit runs on
    the device. Bounds: it knows the network, not which image is hard (expected accuracy per exit),
    and it ignores queueing behind its own earlier requests (one request per frame interval).
    """

    name = "oracle"
    params = {
        "trace": Param(None, str, optional=True,
                       help="trace file (any format testbed.traces reads) or 'constant:DOWN:UP' (Mbit/s)"),
        "slice_start": Param(0.0, float, 0.0, 1e7, help="trace time of the workload's start (s)"),
        "slice_end": Param(None, float, 0.0, 1e7, optional=True),
        "outages": Param([], list, help="injected outage windows 'START:END' (s, workload clock)"),
        "codec": Param("raw", str, choices=CODECS),
        "rtt_ms": Param(None, float, 0.0, 1e5, optional=True,
                        help="round trip without queueing; null: the last RTT measured while connected"),
    }

    def __init__(self, params: dict | None = None):
        super().__init__(params)
        self.trace = _load(self.p)
        self.requests_planned = 0
        self.rtt_ms = self.p["rtt_ms"] if self.p["rtt_ms"] is not None else 2.0

    def round_trip_ms(self, est) -> float:
        # An estimate taken during an outage is the timeout, not the path: keep the last good one.
        if self.p["rtt_ms"] is None and est.connected:
            self.rtt_ms = est.rtt_ms
        return self.rtt_ms

    def trace_time(self, context) -> float:
        t = getattr(context, "t_arrival", None)
        if t is None:
            t = self.requests_planned / max(context.fps, 1e-9)
        self.requests_planned += 1
        return max(0.0, float(t))

    def plan(self, estimates, profiles, context):
        profile = profiles[context.model]
        t0 = self.trace_time(context)
        rtt_ms = self.round_trip_ms(estimates)
        budget_ms = context.deadline_s * 1e3
        n_exits = len(profile.exit_after)
        order = sorted(range(n_exits), key=lambda e: (-(profile.exit_accuracy[e] if profile.exit_accuracy else e), -e))
        for exit_index in order:
            exit_pos = profile.position(profile.exit_after[exit_index])
            best, best_ms = None, math.inf
            for split in profile.split_points[: exit_pos + 1]:
                ms = self.latency_ms(profile, split, exit_index, exit_pos, estimates, t0, rtt_ms)
                if ms < best_ms:
                    best, best_ms = split, ms
            if best is not None and best_ms <= budget_ms:
                return Plan(split=best, exit_index=exit_index, codec=self.p["codec"],
                            note=f"oracle: exit {exit_index} in {best_ms:.1f} ms at t={t0:.2f} s")
        return Plan(split=profile.exit_after[0], exit_index=0, fallback=True,
                    note=f"oracle: nothing meets the deadline at t={t0:.2f} s: shallowest exit on device")

    def latency_ms(self, profile, split, exit_index, exit_pos, est, t0: float, rtt_ms: float) -> float:
        device_ms = profile.device_ms[split] * est.device_slowdown
        if profile.position(split) == exit_pos:
            head_ms = profile.exit_head_ms[exit_index] if profile.exit_head_ms else 0.0
            return device_ms + head_ms * est.device_slowdown
        if self.trace is None:
            return math.inf
        sent_at = t0 + device_ms / 1e3
        up_bytes = profile.bytes_at(split, self.p["codec"]) + MESSAGE_OVERHEAD_BYTES
        arrived = _finish_time(self.trace, "up", sent_at, up_bytes) + rtt_ms / 2e3
        tail_ms = max(profile.cloud_ms[split] - profile.cloud_ms[profile.exit_after[exit_index]], 0.0)
        replied = arrived + (tail_ms * est.cloud_slowdown + est.cloud_queue_ms) / 1e3
        done = _finish_time(self.trace, "down", replied, REPLY_BYTES) + rtt_ms / 2e3
        return (done - t0) * 1e3


def _finish_time(trace, direction: str, start: float, nbytes: float) -> float:
    """When ``nbytes`` sent at ``start`` have crossed a link whose rate follows ``trace`` (inf if never)."""
    rates = trace.rates(direction)
    ends = trace.ends
    remaining_bits = nbytes * 8.0
    t = start
    i = max(0, int(np.searchsorted(trace.times, t, side="right")) - 1)
    while i < len(rates):
        end = ends[i] if i < len(rates) - 1 else math.inf  # the last rate holds past the end
        rate_bps = float(rates[i]) * 1e6
        if rate_bps > 0:
            needed = remaining_bits / rate_bps
            if t + needed <= end:
                return t + needed
            remaining_bits -= (end - t) * rate_bps
        if math.isinf(end):
            return math.inf
        t, i = end, i + 1
    return math.inf


def _load(p: dict):
    """The trace the oracle plans on (workload clock), or None: then it never offloads."""
    from testbed.traces import Trace, constant, load_trace
    from testbed.traces.model import with_outages

    spec = p["trace"]
    if spec is None:
        return None
    if spec.startswith("constant:"):
        try:
            _, down, up = spec.split(":")
            trace: Trace = constant(float(down), float(up), 1e6)
        except ValueError:
            raise ConfigError("strategy_params.trace", f"expected 'constant:DOWN:UP' in Mbit/s, got {spec!r}") \
                from None
    else:
        trace = load_trace(spec)
        if p["slice_start"] or p["slice_end"] is not None:
            trace = trace.slice(p["slice_start"], p["slice_end"])
    windows = []
    for i, text in enumerate(p["outages"]):
        try:
            start, end = (float(v) for v in text.split(":"))
        except ValueError:
            raise ConfigError(f"strategy_params.outages[{i}]", f"expected 'START:END' in seconds, got {text!r}") \
                from None
        windows.append((start, end))
    return with_outages(trace, windows) if windows else trace

"""The in-memory bandwidth trace: piecewise-constant down/up rates over time."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from testbed.errors import TestbedError

DIRECTIONS = ("down", "up")


class TraceError(TestbedError):
    """A trace file or trace object is invalid; the message names the file and line when known."""

    def __init__(self, message: str, path: object = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.message = message
        where = self.path or ""
        if where and line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


def _as_array(name: str, values) -> np.ndarray:
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TraceError(f"{name}: not numeric ({exc})") from None
    if arr.ndim != 1:
        raise TraceError(f"{name}: must be one-dimensional, got shape {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)  # numpy fields: identity equality and hashing
class Trace:
    """Time-stamped link rates; row ``i`` holds from ``times[i]`` until ``times[i+1]`` (or ``duration``).

    ``down`` is cloud->device, ``up`` is device->cloud; rates in Mbit/s, RTT in ms, loss as a fraction.
    ``meta`` holds the provenance (name, source, citation, licence, derived, ...).
    """

    times: np.ndarray
    down_mbps: np.ndarray
    up_mbps: np.ndarray
    duration: float
    rtt_ms: np.ndarray | None = None
    loss: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        times = _as_array("times", self.times)
        if len(times) == 0:
            raise TraceError("trace is empty (no rows)")
        if times[0] != 0.0:
            raise TraceError(f"times must start at 0.0, got {times[0]!r}")
        if not np.all(np.isfinite(times)):
            raise TraceError("times contain NaN or infinity")
        steps = np.diff(times)
        if np.any(steps <= 0):
            i = int(np.argmax(steps <= 0)) + 1
            raise TraceError(
                f"times must be strictly increasing: times[{i}]={times[i]!r} after {times[i - 1]!r}"
            )
        object.__setattr__(self, "times", times)
        duration = float(self.duration)
        if not np.isfinite(duration) or duration <= times[-1]:
            raise TraceError(f"duration {duration!r} must be after the last time {times[-1]!r}")
        object.__setattr__(self, "duration", duration)
        for name in ("down_mbps", "up_mbps", "rtt_ms", "loss"):
            values = getattr(self, name)
            if values is None:
                if name in ("down_mbps", "up_mbps"):
                    raise TraceError(f"{name} is required")
                continue
            arr = _as_array(name, values)
            if arr.shape != times.shape:
                raise TraceError(f"{name} has {len(arr)} values for {len(times)} times")
            bad = ~np.isfinite(arr) | (arr < 0)
            if name == "loss":
                bad |= arr > 1
            if np.any(bad):
                i = int(np.argmax(bad))
                allowed = "between 0 and 1" if name == "loss" else "finite and >= 0"
                raise TraceError(f"{name}[{i}] = {arr[i]!r} at t={times[i]:g} s: must be {allowed}")
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "meta", dict(self.meta))

    # -- queries -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.times)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "trace"))

    @property
    def ends(self) -> np.ndarray:
        """End time of each row (the next row's time, or the duration for the last row)."""
        return np.append(self.times[1:], self.duration)

    def rates(self, direction: str) -> np.ndarray:
        """The rate column for ``'down'`` or ``'up'``."""
        if direction == "down":
            return self.down_mbps
        if direction == "up":
            return self.up_mbps
        raise TraceError(f"direction must be 'down' or 'up', got {direction!r}")

    def rate(self, direction: str, t: float, *, strict: bool = False) -> float:
        """Rate (Mbit/s) at time ``t``; past the duration the last value holds (or raise if ``strict``)."""
        values = self.rates(direction)
        if t < 0 or (strict and t >= self.duration):
            raise TraceError(f"time {t!r} is outside the trace [0, {self.duration:g})")
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        return float(values[i])

    def schedule(self, direction: str, granularity: float = 0.1) -> list[tuple[float, float]]:
        """``(time, Mbit/s)`` change points: the mean rate over each ``granularity`` bin, equal runs merged."""
        if not granularity > 0:
            raise TraceError(f"granularity must be > 0, got {granularity!r}")
        return self._binned(self.rates(direction), granularity)

    def rtt_schedule(self, granularity: float = 0.1) -> list[tuple[float, float]]:
        """``(time, RTT ms)`` change points like :meth:`schedule` (mean RTT per bin); [] without an RTT column."""
        if self.rtt_ms is None:
            return []
        if not granularity > 0:
            raise TraceError(f"granularity must be > 0, got {granularity!r}")
        return self._binned(self.rtt_ms, granularity)

    def _binned(self, values: np.ndarray, granularity: float) -> list[tuple[float, float]]:
        edges = bin_edges(self.duration, granularity)
        means = np.round(mean_over_bins(self.times, values, self.duration, edges), 6)
        keep = np.ones(len(means), dtype=bool)
        keep[1:] = means[1:] != means[:-1]
        return [(float(t), float(r)) for t, r in zip(edges[:-1][keep], means[keep], strict=True)]

    def outages(
        self, direction: str | float = "both", threshold_mbps: float = 0.0
    ) -> list[tuple[float, float]]:
        """``(start, end)`` windows where the rate is 0 or below ``threshold_mbps``.

        ``direction`` is ``'down'``, ``'up'`` or ``'both'`` (both directions out at once);
        ``outages(0.1)`` is accepted as a shorthand for ``outages('both', 0.1)``.
        """
        if isinstance(direction, (int, float)):
            direction, threshold_mbps = "both", float(direction)
        if direction == "both":
            out = _is_out(self.down_mbps, threshold_mbps) & _is_out(self.up_mbps, threshold_mbps)
        else:
            out = _is_out(self.rates(direction), threshold_mbps)
        return runs(out, self.times, self.ends)

    # -- transforms (see testbed.traces.transforms) --------------------------------------------

    def slice(self, start: float, end: float | None = None) -> Trace:
        from testbed.traces.transforms import slice_trace

        return slice_trace(self, start, end)

    def loop(self, duration: float) -> Trace:
        from testbed.traces.transforms import loop

        return loop(self, duration)

    def scale(
        self, factor: float | None = None, *, down: float | None = None, up: float | None = None
    ) -> Trace:
        from testbed.traces.transforms import scale

        return scale(self, factor, down=down, up=up)

    def clip(self, lo: float = 0.0, hi: float = float("inf")) -> Trace:
        from testbed.traces.transforms import clip

        return clip(self, lo, hi)

    def resample(self, granularity: float) -> Trace:
        from testbed.traces.transforms import resample

        return resample(self, granularity)


def _is_out(rates: np.ndarray, threshold: float) -> np.ndarray:
    return (rates == 0) | (rates < threshold)


def runs(mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[tuple[float, float]]:
    """Merge consecutive true rows of ``mask`` into ``(start, end)`` windows."""
    windows: list[tuple[float, float]] = []
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    change = np.diff(padded)
    for first, last in zip(np.flatnonzero(change == 1), np.flatnonzero(change == -1) - 1, strict=True):
        windows.append((float(starts[first]), float(ends[last])))
    return windows


def bin_edges(duration: float, granularity: float) -> np.ndarray:
    """Edges ``0, g, 2g, ..., duration`` (the last bin may be shorter)."""
    n = int(np.ceil(duration / granularity - 1e-9))
    edges = np.arange(n + 1, dtype=np.float64) * granularity
    edges[-1] = duration
    return np.round(edges, 9)


def mean_over_bins(times: np.ndarray, values: np.ndarray, duration: float, edges: np.ndarray) -> np.ndarray:
    """Time-weighted mean of a step function over each ``[edges[k], edges[k+1])`` bin."""
    bounds = np.append(times, duration)
    cumulative = np.concatenate(([0.0], np.cumsum(values * np.diff(bounds))))
    return np.diff(integral(bounds, cumulative, values, edges)) / np.diff(edges)


def integral(bounds: np.ndarray, cumulative: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Integral of the step function from 0 to each point of ``at`` (clamped to the trace)."""
    at = np.clip(at, 0.0, bounds[-1])
    i = np.clip(np.searchsorted(bounds, at, side="right") - 1, 0, len(values) - 1)
    return cumulative[i] + values[i] * (at - bounds[i])


def values_at(trace: Trace, name: str, at: np.ndarray) -> np.ndarray | None:
    """Column ``name`` evaluated at times ``at`` (step function, last value holds)."""
    values = getattr(trace, name)
    if values is None:
        return None
    i = np.clip(np.searchsorted(trace.times, at, side="right") - 1, 0, len(trace.times) - 1)
    return values[i]


# -- builders ----------------------------------------------------------------------------------


def constant(down: float, up: float, duration: float, **meta) -> Trace:
    """A trace with fixed rates for ``duration`` seconds."""
    meta.setdefault("name", f"constant-{down:g}-{up:g}")
    meta.setdefault("source", "synthetic")
    return Trace(np.array([0.0]), np.array([down]), np.array([up]), duration, meta=meta)


def steps(points, duration: float, **meta) -> Trace:
    """A trace from ``[(t, down, up), ...]`` change points (the first must be at t=0)."""
    points = list(points)
    if not points:
        raise TraceError("steps() needs at least one (t, down, up) point")
    try:
        t, down, up = (np.array(col, dtype=np.float64) for col in zip(*points, strict=True))
    except (TypeError, ValueError) as exc:
        raise TraceError(f"steps() points must be (t, down, up) numbers: {exc}") from None
    meta.setdefault("name", "steps")
    meta.setdefault("source", "synthetic")
    return Trace(t, down, up, duration, meta=meta)


def with_outages(trace: Trace, windows) -> Trace:
    """A copy of ``trace`` with the rate 0 in both directions during each ``(start, end)`` window."""
    windows = sorted((float(s), float(e)) for s, e in windows)
    for start, end in windows:
        if not 0 <= start < end:
            raise TraceError(f"outage window ({start:g}, {end:g}) must satisfy 0 <= start < end")
    cuts = [t for s, e in windows for t in (s, e) if t < trace.duration]
    times = np.unique(np.concatenate((trace.times, cuts)))
    columns = {name: values_at(trace, name, times) for name in ("down_mbps", "up_mbps", "rtt_ms", "loss")}
    out = np.zeros(len(times), dtype=bool)
    for start, end in windows:
        out |= (times >= start) & (times < end)
    for name in ("down_mbps", "up_mbps"):
        columns[name] = np.where(out, 0.0, columns[name])
    meta = dict(trace.meta)
    added = "; ".join(f"{s:g}-{e:g} s" for s, e in windows)
    meta["derived"] = _append_note(meta.get("derived"), f"outages (rate 0 both directions) at {added}")
    return merge_equal_rows(Trace(times, duration=trace.duration, meta=meta, **columns))


def combine(up_trace: Trace, down_trace: Trace, **meta) -> Trace:
    """A two-direction trace: uplink from ``up_trace``, downlink from ``down_trace``.

    Both are aligned on the union of their change points; the result lasts as long as the shorter one.
    """
    duration = min(up_trace.duration, down_trace.duration)
    times = np.unique(np.concatenate((up_trace.times, down_trace.times)))
    times = times[times < duration]
    merged = {
        "name": down_trace.meta.get("name", "trace"),
        "original_files": f"up: {_describe(up_trace)}; down: {_describe(down_trace)}",
    }
    notes = [
        f"{d}: {t.meta['derived']}"
        for d, t in (("up", up_trace), ("down", down_trace))
        if t.meta.get("derived")
    ]
    if notes:
        merged["derived"] = "; ".join(notes)
    for key in ("source", "citation", "licence"):
        values = [t.meta[key] for t in (down_trace, up_trace) if key in t.meta]
        if values:
            merged[key] = values[0] if len(set(values)) == 1 else " | ".join(values)
    merged.update(meta)
    rtt = values_at(down_trace, "rtt_ms", times)
    loss = values_at(down_trace, "loss", times)
    return merge_equal_rows(
        Trace(
            times,
            values_at(down_trace, "down_mbps", times),
            values_at(up_trace, "up_mbps", times),
            duration,
            rtt_ms=rtt,
            loss=loss,
            meta=merged,
        )
    )


def _describe(trace: Trace) -> str:
    return str(trace.meta.get("original_files") or trace.meta.get("name") or "trace")


def _append_note(previous, note: str) -> str:
    return f"{previous}; {note}" if previous else note


def merge_equal_rows(trace: Trace) -> Trace:
    """Drop rows whose every column equals the previous row's (same step function, fewer rows)."""
    columns = [c for c in (trace.down_mbps, trace.up_mbps, trace.rtt_ms, trace.loss) if c is not None]
    same = np.ones(len(trace.times) - 1, dtype=bool)
    for c in columns:
        same &= c[1:] == c[:-1]
    if not same.any():
        return trace
    keep = np.concatenate(([True], ~same))
    return Trace(
        trace.times[keep],
        trace.down_mbps[keep],
        trace.up_mbps[keep],
        trace.duration,
        rtt_ms=None if trace.rtt_ms is None else trace.rtt_ms[keep],
        loss=None if trace.loss is None else trace.loss[keep],
        meta=trace.meta,
    )

"""Pure transforms: each returns a new Trace and notes what it did in ``meta['derived']``."""

from __future__ import annotations

import numpy as np

from testbed.traces.model import (
    Trace,
    TraceError,
    _append_note,
    bin_edges,
    mean_over_bins,
    values_at,
)

COLUMNS = ("down_mbps", "up_mbps", "rtt_ms", "loss")


def _rebuild(trace: Trace, times: np.ndarray, duration: float, note: str, **columns) -> Trace:
    for name in COLUMNS:
        if name not in columns:
            columns[name] = values_at(trace, name, times)
    meta = dict(trace.meta)
    meta["derived"] = _append_note(meta.get("derived"), note)
    return Trace(times, duration=duration, meta=meta, **columns)


def slice_trace(trace: Trace, start: float, end: float | None = None) -> Trace:
    """The part of ``trace`` in ``[start, end)``, re-based to start at 0."""
    end = trace.duration if end is None else float(end)
    start = float(start)
    if not 0 <= start < end <= trace.duration + 1e-9:
        raise TraceError(
            f"slice [{start:g}, {end:g}) must lie inside [0, {trace.duration:g}] and not be empty"
        )
    end = min(end, trace.duration)
    inside = trace.times[(trace.times > start) & (trace.times < end)]
    times = np.concatenate(([start], inside))
    columns = {name: values_at(trace, name, times) for name in COLUMNS}
    return _rebuild(trace, times - start, end - start, f"sliced {start:g}-{end:g} s", **columns)


def loop(trace: Trace, duration: float) -> Trace:
    """Repeat ``trace`` end to end until ``duration`` seconds (cut in the last copy)."""
    if not duration > 0:
        raise TraceError(f"loop duration must be > 0, got {duration!r}")
    copies = int(np.ceil(duration / trace.duration))
    offsets = np.repeat(np.arange(copies) * trace.duration, len(trace.times))
    times = np.tile(trace.times, copies) + offsets
    keep = times < duration
    columns = {
        name: None if getattr(trace, name) is None else np.tile(getattr(trace, name), copies)[keep]
        for name in COLUMNS
    }
    return _rebuild(trace, times[keep], float(duration), f"looped to {duration:g} s", **columns)


def scale(
    trace: Trace, factor: float | None = None, *, down: float | None = None, up: float | None = None
) -> Trace:
    """Multiply the rates by ``factor``, or per direction with ``down=`` / ``up=``."""
    down_factor = down if down is not None else (1.0 if factor is None else factor)
    up_factor = up if up is not None else (1.0 if factor is None else factor)
    if min(down_factor, up_factor) < 0:
        raise TraceError("scale factors must be >= 0")
    return _rebuild(
        trace,
        trace.times,
        trace.duration,
        f"scaled down x{down_factor:g}, up x{up_factor:g}",
        down_mbps=trace.down_mbps * down_factor,
        up_mbps=trace.up_mbps * up_factor,
    )


def clip(trace: Trace, lo: float = 0.0, hi: float = float("inf")) -> Trace:
    """Limit both rate columns to ``[lo, hi]`` Mbit/s."""
    if not 0 <= lo <= hi:
        raise TraceError(f"clip bounds must satisfy 0 <= lo <= hi, got {lo!r}, {hi!r}")
    return _rebuild(
        trace,
        trace.times,
        trace.duration,
        f"clipped to [{lo:g}, {hi:g}] Mbit/s",
        down_mbps=np.clip(trace.down_mbps, lo, hi),
        up_mbps=np.clip(trace.up_mbps, lo, hi),
    )


def resample(trace: Trace, granularity: float) -> Trace:
    """Regular ``granularity``-second rows holding the time-weighted mean of each bin."""
    if not granularity > 0:
        raise TraceError(f"granularity must be > 0, got {granularity!r}")
    edges = bin_edges(trace.duration, granularity)
    columns = {}
    for name in COLUMNS:
        values = getattr(trace, name)
        columns[name] = (
            None
            if values is None
            else np.round(mean_over_bins(trace.times, values, trace.duration, edges), 9)
        )
    note = f"resampled to {granularity:g} s bins (time-weighted mean)"
    return _rebuild(trace, edges[:-1], trace.duration, note, **columns)

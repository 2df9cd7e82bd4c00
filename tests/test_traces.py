"""Trace model, builders, transforms and stats."""

from __future__ import annotations

import numpy as np
import pytest

from testbed import errors
from testbed.traces import (
    Trace,
    TraceError,
    clip,
    combine,
    constant,
    loop,
    resample,
    scale,
    slice_trace,
    stats,
    steps,
    with_outages,
)


@pytest.fixture
def stepped() -> Trace:
    # down: 10 Mbit/s for 0-2 s, 0 for 2-3 s, 4 for 3-5 s; up: 2, 0, 1
    return steps([(0, 10, 2), (2, 0, 0), (3, 4, 1)], duration=5, name="stepped")


def test_trace_error_is_a_testbed_error():
    assert issubclass(TraceError, errors.TestbedError)
    assert str(TraceError("bad", "x.csv", 17)) == "x.csv:17: bad"
    assert str(TraceError("bad", "x.csv")) == "x.csv: bad"


def test_constant():
    trace = constant(20, 5, 60)
    assert trace.duration == 60
    assert trace.rate("down", 0) == 20 and trace.rate("up", 59.9) == 5
    assert trace.times.dtype == np.float64
    assert trace.meta["source"] == "synthetic"


def test_arrays_are_read_only(stepped):
    with pytest.raises(ValueError):
        stepped.down_mbps[0] = 1


def test_rate_holds_until_next_row_and_after_duration(stepped):
    assert stepped.rate("down", 0) == 10
    assert stepped.rate("down", 1.999) == 10
    assert stepped.rate("down", 2.0) == 0
    assert stepped.rate("up", 3.5) == 1
    assert stepped.rate("down", 100) == 4  # last value holds
    with pytest.raises(TraceError, match="outside"):
        stepped.rate("down", 100, strict=True)
    with pytest.raises(TraceError, match="direction"):
        stepped.rate("sideways", 1)
    with pytest.raises(TraceError):
        stepped.rate("down", -1)


def test_schedule_merges_equal_bins(stepped):
    assert stepped.schedule("down", 1.0) == [(0.0, 10.0), (2.0, 0.0), (3.0, 4.0)]
    assert stepped.schedule("up", 0.5) == [(0.0, 2.0), (2.0, 0.0), (3.0, 1.0)]


def test_schedule_averages_within_a_bin():
    trace = steps([(0, 10, 1), (0.5, 0, 1)], duration=2)
    # first 1 s bin: half at 10, half at 0 -> 5; second bin 0
    assert trace.schedule("down", 1.0) == [(0.0, 5.0), (1.0, 0.0)]
    assert trace.schedule("up", 1.0) == [(0.0, 1.0)]


def test_schedule_partial_last_bin():
    trace = constant(3, 3, 1.25)
    assert trace.schedule("down", 0.5) == [(0.0, 3.0)]
    with pytest.raises(TraceError):
        trace.schedule("down", 0)


def test_outages(stepped):
    assert stepped.outages() == [(2.0, 3.0)]
    assert stepped.outages("down") == [(2.0, 3.0)]
    assert stepped.outages("up", 1.5) == [(2.0, 5.0)]
    assert stepped.outages("both", 5) == [(2.0, 5.0)]
    assert stepped.outages(5) == stepped.outages("both", 5)


def test_validation_errors():
    with pytest.raises(TraceError, match="empty"):
        Trace(np.array([]), np.array([]), np.array([]), 1.0)
    with pytest.raises(TraceError, match="start at 0"):
        Trace(np.array([1.0]), np.array([1.0]), np.array([1.0]), 2.0)
    with pytest.raises(TraceError, match="strictly increasing"):
        Trace(np.array([0.0, 2.0, 1.0]), np.ones(3), np.ones(3), 3.0)
    with pytest.raises(TraceError, match="duration"):
        Trace(np.array([0.0, 2.0]), np.ones(2), np.ones(2), 2.0)
    with pytest.raises(TraceError, match="down_mbps"):
        Trace(np.array([0.0, 1.0]), np.array([1.0, -1.0]), np.ones(2), 2.0)
    with pytest.raises(TraceError, match="up_mbps"):
        Trace(np.array([0.0, 1.0]), np.ones(2), np.array([1.0, np.nan]), 2.0)
    with pytest.raises(TraceError, match="loss"):
        Trace(np.array([0.0]), np.ones(1), np.ones(1), 1.0, loss=np.array([1.5]))
    with pytest.raises(TraceError, match="values for"):
        Trace(np.array([0.0, 1.0]), np.ones(3), np.ones(2), 2.0)
    with pytest.raises(TraceError):
        steps([], 1)


def test_with_outages_zeroes_both_directions(stepped):
    out = with_outages(stepped, [(0.5, 1.0), (4.5, 10)])
    assert out.rate("down", 0.4) == 10 and out.rate("down", 0.5) == 0 and out.rate("up", 0.9) == 0
    assert out.rate("down", 1.0) == 10
    assert out.rate("down", 4.4) == 4 and out.rate("up", 4.6) == 0
    assert out.duration == stepped.duration
    assert out.outages() == [(0.5, 1.0), (2.0, 3.0), (4.5, 5.0)]
    assert "outages" in out.meta["derived"]
    assert stepped.rate("down", 0.5) == 10  # original untouched
    with pytest.raises(TraceError):
        with_outages(stepped, [(3, 2)])


def test_combine_aligns_change_points():
    up = steps([(0, 1, 1), (1.5, 3, 3)], duration=4, name="u")
    down = steps([(0, 10, 10), (1, 20, 20)], duration=3, name="d")
    both = combine(up, down)
    assert both.duration == 3
    assert list(both.times) == [0, 1, 1.5]
    assert list(both.down_mbps) == [10, 20, 20]
    assert list(both.up_mbps) == [1, 1, 3]


def test_slice(stepped):
    part = slice_trace(stepped, 1, 4)
    assert part.duration == 3
    assert list(part.times) == [0, 1, 2]
    assert list(part.down_mbps) == [10, 0, 4]
    assert stepped.slice(3).duration == 2
    assert "sliced 1-4 s" in part.meta["derived"]
    with pytest.raises(TraceError):
        stepped.slice(4, 3)
    with pytest.raises(TraceError):
        stepped.slice(0, 6)


def test_loop(stepped):
    longer = loop(stepped, 12)
    assert longer.duration == 12
    assert longer.rate("down", 5.5) == 10 and longer.rate("down", 7.5) == 0 and longer.rate("down", 11) == 10
    shorter = stepped.loop(2.5)
    assert shorter.duration == 2.5 and list(shorter.times) == [0, 2]


def test_scale_and_clip(stepped):
    assert list(scale(stepped, 0.5).down_mbps) == [5, 0, 2]
    per_dir = stepped.scale(down=2, up=3)
    assert list(per_dir.down_mbps) == [20, 0, 8] and list(per_dir.up_mbps) == [6, 0, 3]
    clipped = clip(stepped, 1, 5)
    assert list(clipped.down_mbps) == [5, 1, 4] and list(clipped.up_mbps) == [2, 1, 1]
    with pytest.raises(TraceError):
        stepped.scale(-1)
    with pytest.raises(TraceError):
        stepped.clip(5, 1)


def test_resample_is_regular_and_preserves_volume(stepped):
    regular = resample(stepped, 0.5)
    assert len(regular) == 10
    assert np.allclose(np.diff(regular.times), 0.5)
    volume = lambda t: float(np.sum(t.down_mbps * np.diff(np.append(t.times, t.duration))))  # noqa: E731
    assert volume(regular) == pytest.approx(volume(stepped))
    coarse = stepped.resample(2)
    assert list(coarse.down_mbps) == [10, 2, 4]


def test_transforms_keep_rtt_and_loss():
    trace = Trace(
        np.array([0.0, 1.0]),
        np.ones(2),
        np.ones(2),
        2.0,
        rtt_ms=np.array([20.0, 40.0]),
        loss=np.array([0, 0.1]),
    )
    part = trace.slice(0.5, 2)
    assert list(part.rtt_ms) == [20, 40] and list(part.loss) == [0, 0.1]
    assert list(trace.resample(2).rtt_ms) == [30]


def test_stats(stepped):
    s = stats(stepped)
    down = s["down"]
    assert down["duration"] == 5
    assert down["mean"] == pytest.approx((10 * 2 + 0 + 4 * 2) / 5)
    assert down["min"] == 0 and down["max"] == 10
    assert down["zero_frac"] == pytest.approx(0.2) and down["outage_frac"] == pytest.approx(0.2)
    assert down["p50"] == 4 and down["p5"] == 0 and down["p95"] == 10
    assert down["longest_zero_s"] == 1 and down["longest_outage_s"] == 1
    assert set(s) == {"down", "up"}
    for key in ("p25", "p75"):
        assert key in s["up"]


def test_stats_outage_threshold():
    trace = steps([(0, 5, 5), (1, 0.05, 0.05), (3, 0, 0), (4, 5, 5)], duration=10)
    down = stats(trace)["down"]
    assert down["zero_frac"] == pytest.approx(0.1)
    assert down["outage_frac"] == pytest.approx(0.3)
    assert down["longest_outage_s"] == 3 and down["longest_zero_s"] == 1

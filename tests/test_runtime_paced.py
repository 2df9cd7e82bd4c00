"""Paced devices (testbed.devices profiles) and the shared trace window, on real Mininet hosts.

A paced device computes the real tensors on this host and releases each result when the profiled
hardware would have finished it (testbed/runtime/README.md). Short sessions on shipped checkpoints:
the timing tests use the 32x32 ResNet-20x2 of test_runtime_emulated.py (64 ms on a Raspberry Pi 4
profile, ~5 ms on this host: room to keep pace on a busy 2-core host), the others the quickstart's
Fashion-MNIST ResNet-20.
"""

from __future__ import annotations

import bisect
import csv
import json
import logging
import statistics

import pytest
import torch

from testbed.runtime import SessionConfig, run_session, validate_record
from testbed.traces import steps

pytestmark = [pytest.mark.root, pytest.mark.slow]

TIMED = {"model": "resnet-ee-w2.0-d3", "data": "digits", "data_options": {"size": 32, "channels": 1}}
QUICK = {"model": "resnet20-ee-wide", "data": "fashion-mnist", "data_options": {}}
CACHE = "results/benchmarks/models/cache"
SLOW, OTHER = "raspberry_pi4", "jetson_nano"
FAST = "edgetpu_eagle"  # ~0.7 ms for the Fashion-MNIST ResNet-20, which takes this host longer: always late
TOLERANCE = 0.05  # the target: local inference takes the profile's time +-5 %


def run(tmp_path, name: str, workload: dict, **overrides) -> tuple[list[dict], dict]:
    settings = {"topology": "topologies/device-cloud.yaml", **workload,
                "strategy": "device-only", "fps": 5.0, "duration_s": 4.0, "deadline_s": 1.0,
                "model_cache_dir": CACHE, "out_dir": str(tmp_path / name), **overrides}
    result = run_session(SessionConfig(**settings))
    records = [json.loads(line) for line in open(result.records_path)]
    for r in records:
        assert validate_record(r) == [], r
    return records, result.summary


def profiled_full_ms(profile_name: str, workload: dict) -> float:
    """The profile's nominal time for the whole model (what device-only runs per request)."""
    from testbed.devices import get_profile
    from testbed.models import load_checkpoint
    from testbed.runtime.session import _checkpoints

    name = workload["model"]
    model, card = load_checkpoint(_checkpoints([name], workload["data"], CACHE, {}, workload["data_options"])[name])
    torch.set_num_threads(1)
    return get_profile(profile_name).model_costs(model, tuple(card["dataset"]["input_shape"]))["full_ms"]


def test_two_profiles_side_by_side_compute_at_their_own_speed(tmp_path, clean_machine):
    """A Raspberry Pi 4 (64 ms per image) and a Jetson Nano (24 ms) in one network, each at its own speed."""
    profiles = {"device1": SLOW, "device2": OTHER}
    records, summary = run(tmp_path, "pair", TIMED, topology="topologies/fleet.yaml", params={"n_devices": 2},
                           device_profile=profiles, phase="staggered")
    assert summary["device_profile"] == profiles
    # staggered phases: device i of N sends at (i/N + k)/fps, so the two never compute at once
    for r in records:
        offset = 0.0 if r["device"] == "device1" else 0.1
        assert r["t_arrival"] == pytest.approx(offset + r["request_id"] / 5.0, abs=1e-6), r
    loops = [json.loads((tmp_path / "pair" / f"records-{d}.jsonl.loop.json").read_text()) for d in profiles]
    assert all(loop["realtime_compute"] == loop["paced"] for loop in loops), loops  # computes ran as SCHED_FIFO
    assert summary["pacing"]["paced_requests"] == len(records)
    medians = {}
    for device, profile in profiles.items():
        local = [r for r in records if r["device"] == device and r["outcome"] == "device_exit"]
        assert len(local) >= 18, f"{device}: {len(local)} local answers of 20"
        expected = profiled_full_ms(profile, TIMED)
        on_time = [r for r in local if not r["pace_late"]]
        for r in local:  # the latency is the real release: the profiled time plus any lateness
            assert r["latency_s"] * 1e3 >= 0.8 * expected + r["pace_late_ms"], r
        # The Pi 4's 64 ms leave this host (~5 ms per image when idle) room even when busy, the Nano's
        # 24 ms less; a shared 2-core host under load (measured: 9x slower compute) makes some late.
        assert len(on_time) >= (0.5 if profile == SLOW else 0.25) * len(local), (device, summary["pacing"])
        medians[device] = statistics.median(r["latency_s"] * 1e3 for r in on_time)
        assert medians[device] == pytest.approx(expected, rel=TOLERANCE), (device, profile, expected)
        assert statistics.median(r["device_compute_s"] * 1e3 for r in on_time) == pytest.approx(expected, rel=TOLERANCE)
    assert medians["device1"] > 2 * medians["device2"]  # each board kept its own speed


def test_a_profile_faster_than_the_host_is_flagged_late(tmp_path, clean_machine, caplog):
    expected = profiled_full_ms(FAST, QUICK)
    with caplog.at_level(logging.WARNING, logger="testbed.runtime.session"):
        records, summary = run(tmp_path, "fast", QUICK, device_profile=FAST, duration_s=3.0)
    local = [r for r in records if r["outcome"] == "device_exit"]
    assert local
    late = [r for r in local if r["pace_late"]]
    assert len(late) >= 0.8 * len(local)
    for r in late:  # the latency is what really happened: the profiled time plus the lateness
        assert r["pace_late_ms"] > 1.0
        assert r["latency_s"] * 1e3 >= expected + r["pace_late_ms"] - 0.5
    assert summary["pacing"]["late_fraction"] >= 0.8
    assert any("released late" in m for m in caplog.messages)


def trace_step_at(replay: list[tuple[float, float]], t: float) -> float | None:
    """The uplink trace rate in effect at trace time ``t`` (None within 30 ms of a change)."""
    times = [row[0] for row in replay]
    i = bisect.bisect_right(times, t) - 1
    near = [abs(t - times[j]) for j in (i, i + 1) if 0 < j < len(times)]
    return None if near and min(near) < 0.03 else replay[i][1]


def uplink_replay(out_dir) -> list[tuple[float, float]]:
    with open(out_dir / "replay.csv") as f:
        return [(float(r["applied_s"]), float(r["trace_mbps"])) for r in csv.DictReader(f) if r["direction"] == "up"]


def test_strategies_with_different_startup_meet_the_same_trace_steps(tmp_path, clean_machine):
    """A 5 s slower loader and a different strategy: request k still meets trace step k's rate."""
    # Steps on the replay's 0.1 s grid, half-way between requests (every 0.2 s).
    trace = steps([(0, 20, 20), (0.5, 2, 2), (1.1, 10, 10), (1.7, 1, 1), (2.3, 20, 20), (2.9, 5, 5)], duration=30)
    runs = {"slow-loader": dict(strategy="device-only", device_load_delay_s=5.0),
            "quick": dict(strategy="cloud-only")}
    seen = {}
    for name, overrides in runs.items():
        records, summary = run(tmp_path, name, QUICK, traces={"access": trace}, duration_s=3.6, **overrides)
        window = summary["trace_window"]
        assert abs(window["workload_start_offset_ms"]["device"]) < 20, window
        assert abs(window["replay_first_change_lag_ms"]) < 20, window
        replay = uplink_replay(tmp_path / name)
        seen[name] = {r["request_id"]: trace_step_at(replay, r["t_arrival"]) for r in records}
        seen[name + ".startup"] = window["startup_s"]
    assert seen["slow-loader.startup"] > seen["quick.startup"] + 3.0
    common = [k for k in seen["quick"] if seen["quick"][k] is not None and seen["slow-loader"].get(k) is not None]
    assert len(common) >= 16
    assert [seen["quick"][k] for k in common] == [seen["slow-loader"][k] for k in common]
    assert len({seen["quick"][k] for k in common}) >= 4  # the requests really span the trace's steps

"""Every strategy on a real emulated network: step trace (20 -> 0.05 -> 20 Mbit/s) plus an outage.

Workload: 5 fps for 20 s, deadline 1 s, device CPU share 0.01 (the tiny digits model then takes
~0.1 s on the device, so offloading pays off when the link is up). Trace time 0 = workload start.
"""

from __future__ import annotations

import collections
import json

import pytest

from testbed.errors import ConfigError
from testbed.runtime import SessionConfig, run_session, validate_record
from testbed.traces import steps

pytestmark = [pytest.mark.root, pytest.mark.slow]

FPS, DURATION, DEADLINE = 5.0, 20.0, 1.0
OUTAGE = (9.0, 12.0)
LOW = (4.0, 7.0)
# Stated slack: 95% of records finish within 0.15 s after their deadline, all within 2 s. Under a 1%
# CPU share a one-off CPU cost (e.g. the transport re-creating its socket after timeouts at the
# 0.05 Mbit/s step) stalls the agent for several 100 ms CFS periods; see the runtime's known issues.
DEADLINE_SLACK_S = 0.15
MAX_OVERSHOOT_S = 2.0
CACHE = "results/benchmarks/models/cache"


def session(strategy: str, tmp_path, **params) -> list[dict]:
    trace = steps([(0, 20, 20), (LOW[0], 0.05, 0.05), (LOW[1], 20, 20)], duration=30)
    cfg = SessionConfig(topology="topologies/device-cloud.yaml", params={"device_cpu": 0.01}, traces={"access": trace},
                        faults=[{"kind": "outage", "link": "access", "start": OUTAGE[0], "end": OUTAGE[1]}],
                        model="resnet20-ee", strategy=strategy, strategy_params=params, fps=FPS, duration_s=DURATION,
                        deadline_s=DEADLINE, out_dir=str(tmp_path / strategy), model_cache_dir=CACHE)
    result = run_session(cfg)
    records = [json.loads(line) for line in open(result.records_path)]
    start = json.loads(open(tmp_path / strategy / "go.json").read())["t_start_rel"]
    for r in records:
        r["t_rel"] = r["t_arrival"] - start
    assert result.n_requests == len(records)
    return records


def check_common(records: list[dict]) -> None:
    for r in records:
        clean = {k: v for k, v in r.items() if k != "t_rel"}
        assert validate_record(clean) == [], clean
        assert r["latency_s"] <= r["deadline_s"] + MAX_OVERSHOOT_S, r
    late = [r for r in records if r["latency_s"] > r["deadline_s"] + DEADLINE_SLACK_S]
    assert len(late) <= 0.05 * len(records), late
    ids = collections.Counter(r["request_id"] for r in records)
    assert sorted(ids) == list(range(int(FPS * DURATION))) and set(ids.values()) == {1}


def in_window(records, window, margin=1.0):
    return [r for r in records if window[0] + margin <= r["t_rel"] < window[1]]


@pytest.mark.parametrize("strategy", ["device-only", "edgent", "sc-ee-sparse", "device-aware"])
def test_strategy_produces_valid_records(strategy, tmp_path):
    records = session(strategy, tmp_path)
    check_common(records)
    assert sum(r["outcome"] in ("device_exit", "cloud", "fallback_exit") for r in records) >= 0.8 * len(records)


def test_cloud_only_times_out_during_outage(tmp_path, clean_machine):
    records = session("cloud-only", tmp_path)
    check_common(records)
    before = [r for r in records if 1.0 <= r["t_rel"] < LOW[0]]
    assert all(r["outcome"] == "cloud" for r in before)
    # Held packets are delivered when the link reopens: only requests whose deadline falls inside
    # the outage must time out.
    during = [r for r in records if OUTAGE[0] + 0.3 <= r["t_rel"] < OUTAGE[1] - DEADLINE]
    assert during and all(r["outcome"] == "timeout" for r in during)


@pytest.mark.parametrize("strategy", ["spinn", "appealnet"])
def test_progressive_and_appeal_keep_answering_during_outage(strategy, tmp_path):
    records = session(strategy, tmp_path)
    check_common(records)
    during = in_window(records, OUTAGE, margin=0.0)
    assert during and all(r["outcome"] in ("device_exit", "fallback_exit", "cloud") for r in during)
    assert sum(r["outcome"] != "cloud" for r in during) >= 0.8 * len(during)


def test_neurosurgeon_follows_the_link(tmp_path, clean_machine):
    records = session("neurosurgeon", tmp_path)
    check_common(records)
    before = [r for r in records if 1.0 <= r["t_rel"] < LOW[0]]
    assert sum(r["split"] == "input" for r in before) >= 0.8 * len(before)
    down = in_window(records, OUTAGE)
    assert down and all(r["split"] == "s3b2" for r in down)
    after = [r for r in records if OUTAGE[1] + 2.5 <= r["t_rel"]]
    assert any(r["split"] != "s3b2" for r in after), "did not return to offloading after the outage"


def test_bad_strategy_and_parameter_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="known"):
        run_session(SessionConfig(strategy="nope", out_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="strategy_params.threshold"):
        run_session(SessionConfig(strategy="device-only", strategy_params={"threshold": 7}, out_dir=str(tmp_path)))

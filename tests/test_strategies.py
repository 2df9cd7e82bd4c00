"""Strategy decisions on synthetic estimates and profiles (no root, no models)."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.errors import ConfigError
from testbed.runtime.energy import EnergyModel
from testbed.runtime.estimator import NetworkEstimator
from testbed.runtime.records import RECORD_KEYS, new_record, validate_record
from testbed.strategies import Context, Estimates, ModelProfile, get_strategy, list_strategies

SPLITS = ["input", "b1", "b2", "b3", "b4"]


def synthetic_profile(device_full_ms=20.0, cloud_full_ms=2.0, n=400, seed=0) -> ModelProfile:
    """4 blocks, exits after b1, b2, b4; early exits confident on the easy half of the samples."""
    rng = np.random.default_rng(seed)
    device_ms = {s: device_full_ms * i / 4 for i, s in enumerate(SPLITS)}
    cloud_ms = {s: cloud_full_ms * (4 - i) / 4 for i, s in enumerate(SPLITS)}
    split_bytes = {s: {"float32": 4096.0 if s != "input" else 1024.0, "int8_zstd": 600.0 if s != "input" else 250.0}
                   for s in SPLITS}
    easy = rng.random(n) < 0.5
    conf = np.stack([np.where(easy, 0.97, 0.6), np.where(easy, 0.99, 0.7), np.full(n, 0.99)], axis=1)
    correct = np.stack([easy | (rng.random(n) < 0.3), easy | (rng.random(n) < 0.6), rng.random(n) < 0.98], axis=1)
    return ModelProfile(name="m", split_points=SPLITS, device_ms=device_ms, cloud_ms=cloud_ms, split_bytes=split_bytes,
                        exit_after=["b1", "b2", "b4"], exit_accuracy=[0.65, 0.8, 0.98], exit_head_ms=[0.1, 0.1, 0.05],
                        confidences=conf, correct=correct)


CONTEXT = Context(model="m", deadline_s=0.5)
GOOD = Estimates(bw_up_mbps=50, bw_down_mbps=50, rtt_ms=1.0)
DOWN = Estimates(bw_up_mbps=0.0, bw_down_mbps=0.0, rtt_ms=500, connected=False)


def test_registry_lists_every_strategy():
    assert {"device-only", "cloud-only", "neurosurgeon", "edgent", "spinn", "appealnet", "sc-ee-sparse",
            "device-aware", "oracle"} <= set(list_strategies())


def test_unknown_strategy_lists_known_ones():
    with pytest.raises(ConfigError, match="known: .*neurosurgeon.*spinn"):
        get_strategy("magic")


@pytest.mark.parametrize("params, key", [({"max_accuracy_drop": 3}, "max_accuracy_drop"),
                                         ({"bogus": 1}, "bogus"), ({"codec": "jpeg"}, "codec"),
                                         ({"objective": "fun"}, "objective")])
def test_bad_parameter_names_key_and_allowed(params, key):
    with pytest.raises(ConfigError) as info:
        get_strategy("spinn", params)
    assert key in info.value.where
    assert "allowed" in str(info.value) or "must be" in str(info.value)


def test_neurosurgeon_offloads_on_fast_link_and_stays_local_when_down():
    ns = get_strategy("neurosurgeon")
    profiles = {"m": synthetic_profile()}
    assert ns.plan(GOOD, profiles, CONTEXT).split == "input"
    assert ns.plan(DOWN, profiles, CONTEXT).split == "b4"
    slow = Estimates(bw_up_mbps=0.01, bw_down_mbps=0.01, rtt_ms=1.0)
    assert ns.plan(slow, profiles, CONTEXT).split == "b4"


def test_neurosurgeon_accounts_for_server_load():
    ns = get_strategy("neurosurgeon")
    profiles = {"m": synthetic_profile(device_full_ms=8.0, cloud_full_ms=2.0)}
    loaded = Estimates(bw_up_mbps=50, bw_down_mbps=50, rtt_ms=1.0, cloud_queue_ms=30.0)
    assert ns.plan(GOOD, profiles, CONTEXT).split == "input"
    assert ns.plan(loaded, profiles, CONTEXT).split == "b4"


def test_edgent_picks_deepest_exit_within_requirement():
    profiles = {"m": synthetic_profile(device_full_ms=20.0)}
    tight = get_strategy("edgent", {"latency_ms": 12.0})
    plan = tight.plan(DOWN, profiles, CONTEXT)  # local only: exit at b2 costs 10 ms, final 20 ms
    assert plan.exit_index == 1 and plan.split == "b2"
    loose = get_strategy("edgent", {"latency_ms": 100.0})
    assert loose.plan(GOOD, profiles, CONTEXT).exit_index == 2


def test_spinn_co_optimises_and_falls_back_when_disconnected():
    spinn = get_strategy("spinn", {"max_accuracy_drop": 0.05})
    profiles = {"m": synthetic_profile()}
    online = spinn.plan(GOOD, profiles, CONTEXT)
    assert online.fallback and online.exit_threshold is not None and online.split != "b4"
    offline = spinn.plan(DOWN, profiles, CONTEXT)
    assert offline.split == "b4" and offline.fallback


def test_progressive_statistics_match_construction():
    profile = synthetic_profile()
    stats = profile.progressive("b2", 0.95)
    assert 0.4 < stats["exit_rate"][0] < 0.6  # the easy half leaves at the first exit
    assert stats["p_offload"] == pytest.approx(1 - stats["p_device"])


def test_appealnet_uses_validation_quantile_and_stops_appealing_when_down():
    profile = ModelProfile(name="appealnet-edge", split_points=["input", "edge"], device_ms={"input": 0, "edge": 1},
                           cloud_ms={"input": 1, "edge": 0}, split_bytes={}, appeal_q=np.linspace(0, 1, 101),
                           kind="appeal")
    strategy = get_strategy("appealnet", {"appeal_rate": 0.3})
    plan = strategy.plan(GOOD, {"appealnet-edge": profile}, CONTEXT)
    assert plan.appeal_threshold == pytest.approx(0.3) and plan.fallback
    assert strategy.plan(DOWN, {"appealnet-edge": profile}, CONTEXT).appeal_threshold == 0.0
    # The max-softmax gate: the same quantile rule on the edge classifier's confidence, and the plan says so.
    profile.edge_confidence = np.linspace(0.5, 1.0, 101)
    plan = get_strategy("appealnet", {"appeal_rate": 0.3, "score": "max-softmax"}).plan(
        GOOD, {"appealnet-edge": profile}, CONTEXT)
    assert plan.appeal_threshold == pytest.approx(0.65) and plan.appeal_score == "max-softmax"
    assert strategy.plan(GOOD, {"appealnet-edge": profile}, CONTEXT).appeal_score == "appeal"


def test_device_aware_picks_most_accurate_variant_meeting_target():
    fast, slow = synthetic_profile(), synthetic_profile()
    fast.name, slow.name = "a", "b"
    fast.exit_accuracy, slow.exit_accuracy = [0.5, 0.6, 0.9], [0.5, 0.6, 0.95]
    fast.extra, slow.extra = {"proxy_ms": 1.0, "device_ms_measured": 4.0}, {"proxy_ms": 3.0}
    strategy = get_strategy("device-aware", {"variants": ["a", "b"], "latency_target_ms": 13.0})
    strategy.setup({"a": fast, "b": slow}, CONTEXT, GOOD)
    assert strategy.speed_factor == pytest.approx(4.0) and strategy.variant == "b"  # 3 ms x 4 = 12 ms
    strategy = get_strategy("device-aware", {"variants": ["a", "b"], "latency_target_ms": 5.0})
    strategy.setup({"a": fast, "b": slow}, CONTEXT, GOOD)
    assert strategy.variant == "a"


def test_estimator_reacts_to_outage_and_recovery():
    est = NetworkEstimator()
    est.on_success(0.0, 16384, 0, 16384 * 8 / 20e6, None, 0.002)
    assert est.estimates(0.0).connected
    est.on_failure(1.0, 0.5)
    est.on_failure(1.5, 0.5)
    down = est.estimates(1.5)
    assert not down.connected and down.bw_up_mbps < 5
    est.on_success(2.0, 16384, 0, 16384 * 8 / 20e6, None, 0.002)
    assert est.estimates(2.0).connected and est.estimates(2.0).bw_up_mbps > 5


def test_energy_model_charges_compute_radio_and_tail():
    model = EnergyModel.from_dict({"radio": "lte", "compute_power_w": 2.0})
    assert model.request_energy(0.01) == pytest.approx(0.02)
    first = model.request_energy(0.0, 8000, 800, 0.01, 0.0, 0.01)
    second = model.request_energy(0.0, 8000, 800, 0.01, 1.0, 1.01)
    assert first > 0.3  # promotion
    assert second == pytest.approx(1.06 * 0.99 + (438.39 * 0.064 + 51.97 * 0.0064 + 1288.04 * 0.01) / 1e3, rel=1e-3)
    with pytest.raises(ConfigError, match="radio"):
        EnergyModel.from_dict({"radio": "5g-magic"})


def test_record_schema():
    record = new_record(request_id=0, device="d", strategy="s", t_arrival=1.0, t_finish=1.5, deadline_s=1.0,
                        latency_s=0.5, outcome="cloud", prediction=3, label=3, correct=True, energy_j=0.1)
    assert tuple(record) == RECORD_KEYS and validate_record(record) == []
    record["outcome"] = "lost"
    assert validate_record(record)


def test_estimator_in_flight_bound_reacts_before_any_deadline():
    est = NetworkEstimator()
    est.on_success(0.0, 16384, 0, 16384 * 8 / 20e6, None, 0.002)
    fresh = est.estimates(1.0, in_flight=[(4096, 0.01)])
    assert fresh.bw_up_mbps == pytest.approx(est.bw_up)  # a young request proves nothing
    stalled = est.estimates(1.2, in_flight=[(4096, 0.2)])
    assert stalled.bw_up_mbps < 0.2 and stalled.connected  # 4 kB not through in 0.2 s: < 0.17 Mbit/s


def test_estimator_small_messages_give_no_bandwidth_sample_and_recovery_replaces():
    est = NetworkEstimator(initial_mbps=10.0)
    est.on_success(0.0, 1024, 0, 1e-5, None, 0.001)  # passes within the shaper's bucket: no sample
    assert est.bw_up == pytest.approx(10.0)
    for t in range(5):
        est.on_failure(1.0 + t, 0.5)
    assert est.bw_up < 0.5 and not est.connected
    est.on_success(7.0, 16384, 0, (16384 - 3000) * 8 / 20e6, None, 0.002)
    assert est.bw_up == pytest.approx(20.0) and est.connected  # not averaged with the outage


def test_estimator_failure_with_bytes_bounds_the_rate():
    est = NetworkEstimator(initial_mbps=40.0)
    est.on_failure(1.0, 1.0, bytes_up=4096)
    assert est.bw_up <= 4096 * 8 / 1e6 + 1e-9


def test_fleet_summary_and_jain_index():
    from testbed.runtime.session import jain_index, summarise

    assert jain_index([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert jain_index([3.0, 0.0, 0.0]) == pytest.approx(1 / 3)
    assert jain_index([]) is None

    def rec(outcome, latency, correct=True, cloud=None):
        return {"outcome": outcome, "latency_s": latency, "deadline_s": 1.0, "correct": correct,
                "cloud_compute_s": cloud, "energy_j": 0.1}

    summary = summarise({"a": [rec("cloud", 0.1, cloud=0.01), rec("device_exit", 0.2)],
                         "b": [rec("timeout", 1.0, None), rec("cloud", 1.5, cloud=0.01)]}, 2.0,
                        {"compute_s": 0.02, "cpu_s": 0.02, "requests": 2})
    assert summary["devices"]["a"]["throughput_rps"] == pytest.approx(1.0)
    assert summary["devices"]["b"]["on_time"] == 0 and summary["devices"]["b"]["deadline_miss_rate"] == 1.0
    assert summary["jain_throughput"] == pytest.approx(0.5)
    assert summary["cloud_compute_s"] == pytest.approx(0.02) and summary["cloud_requests"] == 2


def test_oracle_plans_on_the_future_link_not_the_estimate(tmp_path):
    from testbed.traces import save_trace, steps

    # Device too slow for the final exit locally (600 ms > 500 ms deadline); the link is good, then
    # out from 5 to 10 s, then good again. Estimates say "down" throughout: only hindsight helps.
    trace = steps([(0, 20, 20), (5, 0, 0), (10, 20, 20)], duration=30)
    path = save_trace(trace, tmp_path / "trace.csv")
    oracle = get_strategy("oracle", {"trace": str(path)})
    profiles = {"m": synthetic_profile(device_full_ms=600.0)}

    def plan_at(t):
        return oracle.plan(DOWN, profiles, Context(model="m", deadline_s=0.5, t_arrival=t))

    good = plan_at(2.0)
    assert (good.split, good.exit_index) == ("input", 2)  # most accurate exit, offloaded
    in_outage = plan_at(7.0)
    assert (in_outage.split, in_outage.exit_index) == ("b2", 1)  # best exit reachable on the device
    recovering = plan_at(9.8)  # the link returns 0.2 s later: waiting for it still beats local
    assert recovering.split == "input" and recovering.exit_index == 2
    assert get_strategy("neurosurgeon").plan(DOWN, profiles, CONTEXT).split == "b4"  # estimate-based: local


def test_oracle_link_arithmetic_outages_param_and_errors():
    from testbed.strategies.oracle import _finish_time
    from testbed.traces import constant

    link = constant(1.0, 1.0, 10)
    assert _finish_time(link, "up", 0.0, 1000) == pytest.approx(0.008)  # 8000 bits at 1 Mbit/s
    oracle = get_strategy("oracle", {"trace": "constant:20:20", "outages": ["1:3"]})
    assert _finish_time(oracle.trace, "up", 1.5, 2500) == pytest.approx(3.001)  # waits for the link
    profiles = {"m": synthetic_profile(device_full_ms=600.0)}
    # No t_arrival: the oracle counts requests at the open-loop rate (request 10 at 5 fps = 2 s).
    counting = get_strategy("oracle", {"trace": "constant:20:20", "outages": ["1.9:2.6"]})
    plans = [counting.plan(GOOD, profiles, Context(model="m", deadline_s=0.5, fps=5.0)) for _ in range(11)]
    assert plans[0].split == "input" and plans[10].split != "input"
    # Without a trace it never offloads (it cannot know the link).
    assert get_strategy("oracle").plan(GOOD, profiles, Context(model="m", deadline_s=0.5, t_arrival=0)).split != "input"
    with pytest.raises(ConfigError, match="START:END"):
        get_strategy("oracle", {"trace": "constant:20:20", "outages": ["soon"]})
    with pytest.raises(ConfigError, match="constant:DOWN:UP"):
        get_strategy("oracle", {"trace": "constant:fast"})

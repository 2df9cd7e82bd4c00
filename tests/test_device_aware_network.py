"""Device-aware selection under the network (issue 11, item 4).

Unit tests of the ``device-aware`` strategy's per-request (network, split) choice on the real paced
profiles of the shipped NAS-Bench-201 candidates (testbed.devices cost models, the measured latency
table, the candidates' cards) -- nothing mocked -- and one short real-Mininet session with two
devices of different hardware sharing a link with an outage.
"""

from __future__ import annotations

import collections
import copy
import json

import pytest

from testbed.errors import ConfigError
from testbed.selection.emulated import candidate_profiles, read_choices
from testbed.selection.latency import load_measurements
from testbed.strategies import Context, Estimates, get_strategy

DEADLINE_S = 0.04
DEVICES = ("raspberry_pi4", "pixel3", "jetson_nano")
GOOD = Estimates(bw_up_mbps=5.0, bw_down_mbps=10.0, rtt_ms=2.0)  # a good LTE uplink
SLOW = Estimates(bw_up_mbps=0.3, bw_down_mbps=1.0, rtt_ms=2.0)
DOWN = Estimates(connected=False)


@pytest.fixture(scope="module")
def profiles():
    return {device: candidate_profiles(device) for device in DEVICES}


def strategy(profiles, deadline_s=DEADLINE_S, **params):
    s = get_strategy("device-aware", params)
    s.setup(profiles, Context(model="nb201-1304", deadline_s=deadline_s), GOOD)
    return s


def measured_ms(device: str, name: str) -> float:
    return float(load_measurements().column(device)[int(name.split("-")[1])])


def most_accurate(profiles) -> str:
    return max(profiles, key=lambda n: profiles[n].exit_accuracy[-1])


def test_too_slow_locally_network_is_chosen_with_a_split_when_the_link_is_good(profiles):
    pi = profiles["raspberry_pi4"]
    s = strategy(pi, latency="proxy", proxy="pixel3")
    best = most_accurate(pi)
    budget = DEADLINE_S * 1e3 * s.p["budget_fraction"]
    # The most accurate network cannot meet the deadline on the Pi 4: measured, predicted and paced.
    assert measured_ms("raspberry_pi4", best) > DEADLINE_S * 1e3
    assert s.predicted_ms[best] > budget
    assert pi[best].device_ms[pi[best].last_split] > DEADLINE_S * 1e3
    model, split, ms, feasible = s.choose(GOOD, pi, DEADLINE_S * 1e3)
    assert (model, feasible) == (best, True) and ms <= budget
    assert split != pi[best].last_split  # offloaded: the device runs at most a head
    plan = s.plan(GOOD, pi, Context(model="nb201-1304", deadline_s=DEADLINE_S))
    assert (plan.model, plan.cloud_model, plan.split) == (best, best, split)


def test_local_fallback_when_disconnected_or_the_link_is_too_slow(profiles):
    pi = profiles["raspberry_pi4"]
    s = strategy(pi, latency="proxy", proxy="pixel3")
    budget = DEADLINE_S * 1e3 * s.p["budget_fraction"]
    for estimates in (DOWN, SLOW):
        model, split, ms, feasible = s.choose(estimates, pi, DEADLINE_S * 1e3)
        assert split == pi[model].last_split, estimates  # everything on the device
        assert feasible and ms <= budget
        assert model != most_accurate(pi)
        assert measured_ms("raspberry_pi4", model) <= DEADLINE_S * 1e3  # and it really fits the Pi 4
    # Nothing fits locally at 10 ms on a Pi 4: the fastest network, flagged infeasible.
    model, split, _, feasible = s.choose(DOWN, pi, 10.0)
    assert not feasible and split == pi[model].last_split
    assert model == min(pi, key=lambda n: s.predicted_ms[n])


@pytest.mark.parametrize("device", DEVICES)
def test_proxy_equal_to_the_target_picks_the_oracles_network(profiles, device):
    table = load_measurements()
    for deadline_ms in (12, 15, 20, 25, 30, 40, 60, 80):
        proxy = strategy(profiles[device], deadline_ms / 1e3, latency="proxy", proxy=device, target=device)
        oracle = strategy(profiles[device], deadline_ms / 1e3, latency="target", target=device)
        for name in profiles[device]:  # the proxy->target map is the identity
            assert proxy.predicted_ms[name] == pytest.approx(table.column(device)[int(name.split("-")[1])], rel=1e-6)
        for estimates in (GOOD, SLOW, DOWN):
            mine = proxy.choose(estimates, profiles[device], deadline_ms)
            theirs = oracle.choose(estimates, profiles[device], deadline_ms)
            assert (mine[0], mine[1], mine[3]) == (theirs[0], theirs[1], theirs[3]), (device, deadline_ms, estimates)
            assert mine[2] == pytest.approx(theirs[2], rel=1e-6)


def test_proxy_ranking_is_not_the_targets(profiles):
    """The paper's subject: mapped Pixel 3 latencies order the candidates differently from the Pi 4."""
    s = strategy(profiles["raspberry_pi4"], latency="proxy", proxy="pixel3")
    names = list(profiles["raspberry_pi4"])
    predicted = sorted(names, key=lambda n: s.predicted_ms[n])
    measured = sorted(names, key=lambda n: measured_ms("raspberry_pi4", n))
    assert predicted != measured
    assert s.target == "raspberry_pi4" and s.source == "proxy"


def test_one_size_deploys_the_proxys_choice_on_every_device(profiles):
    chosen = {d: strategy(profiles[d], latency="one-size", proxy="pixel3").variant for d in DEVICES}
    assert len(set(chosen.values())) == 1
    network = chosen["pixel3"]
    assert measured_ms("pixel3", network) <= DEADLINE_S * 1e3 * 0.9
    # Deployed unchanged on the slower Pi 4, it misses the deadline whenever it must run locally.
    s = strategy(profiles["raspberry_pi4"], latency="one-size", proxy="pixel3")
    model, split, _, _ = s.choose(DOWN, profiles["raspberry_pi4"], DEADLINE_S * 1e3)
    assert model == network and split == profiles["raspberry_pi4"][network].last_split
    assert measured_ms("raspberry_pi4", network) > DEADLINE_S * 1e3


def test_device_only_selection_never_offloads(profiles):
    pi = profiles["raspberry_pi4"]
    s = strategy(pi, latency="proxy", proxy="pixel3", offload=False)
    assert s.models("x")["cloud"] == [] and not s.uses_network
    model, split, _, _ = s.choose(GOOD, pi, DEADLINE_S * 1e3)
    assert split == pi[model].last_split
    assert (model, split) == s.choose(DOWN, pi, DEADLINE_S * 1e3)[:2]


def test_cpu_share_mode_without_a_target_uses_the_profiled_times(profiles):
    pi = {n: copy.copy(p) for n, p in profiles["raspberry_pi4"].items()}
    for p in pi.values():
        p.extra = {k: v for k, v in p.extra.items() if k != "hardware"}
    s = strategy(pi, latency="proxy")
    assert s.source == "profiled" and s.target is None
    for n, p in pi.items():
        assert s.predicted_ms[n] == pytest.approx(p.device_ms[p.last_split] + p.exit_head_ms[-1])


@pytest.mark.parametrize("params, key", [({"proxy": "pixel9"}, "proxy"), ({"target": "toaster"}, "target"),
                                         ({"candidates": ["resnet20-ee"]}, "candidates"),
                                         ({"latency": "guess"}, "latency")])
def test_bad_parameters_name_the_key(params, key):
    with pytest.raises(ConfigError) as info:
        get_strategy("device-aware", params)
    assert key in info.value.where


# --- one real Mininet session -----------------------------------------------------------------------

PAIR = {"device1": "raspberry_pi4", "device2": "jetson_nano"}
OUTAGE = (1.6, 3.6)
DURATION_S = 5.0


@pytest.mark.root
@pytest.mark.slow
def test_two_devices_choose_different_networks_under_an_outage(tmp_path, profiles, clean_machine):
    from testbed.runtime import SessionConfig, run_session, validate_record
    from testbed.traces import constant

    link = Estimates(bw_up_mbps=10.0, bw_down_mbps=10.0, rtt_ms=1.0)
    planned = {d: strategy(profiles[p], latency="proxy", proxy="pixel3") for d, p in PAIR.items()}
    expected = {d: s.choose(DOWN, profiles[PAIR[d]], DEADLINE_S * 1e3)[0] for d, s in planned.items()}
    connected = {d: s.choose(link, profiles[PAIR[d]], DEADLINE_S * 1e3)[:2] for d, s in planned.items()}
    # The preconditions, from the profiles alone: locally the two boards need different networks, and on
    # the 10 Mbit/s link the Pi 4 offloads the network it cannot run in time itself.
    assert expected["device1"] != expected["device2"]
    assert connected["device1"][1] != profiles[PAIR["device1"]][connected["device1"][0]].last_split
    cfg = SessionConfig(topology="topologies/fleet.yaml",
                        params={"n_devices": 2, "device_profiles": list(PAIR.values())},
                        traces={"cell": constant(10, 10, 30)},
                        faults=[{"kind": "outage", "link": "cell", "start": OUTAGE[0], "end": OUTAGE[1]}],
                        model="nb201-1304", data="fashion-mnist", data_options={"size": 32},
                        strategy="device-aware", strategy_params={"latency": "proxy", "proxy": "pixel3"},
                        fps=5.0, duration_s=DURATION_S, deadline_s=DEADLINE_S, out_dir=str(tmp_path / "pair"))
    result = run_session(cfg)
    assert result.summary["device_profile"] == PAIR
    out = tmp_path / "pair"
    local_models = {}
    for device in PAIR:
        records = [json.loads(line) for line in open(out / f"records-{device}.jsonl")]
        assert len(records) == int(DURATION_S * 5)
        for r in records:
            assert validate_record(r) == [], r
        choices = read_choices(out / f"device-{device}.log")
        assert len(choices) >= 0.8 * len(records)
        # Each planned request's record names the network the strategy chose for it.
        chosen = {round(c["t"], 3): c["model"] for c in choices if c["t"] is not None}
        planned_records = [r for r in records if round(r["t_arrival"], 3) in chosen]
        assert len(planned_records) >= 0.8 * len(records)
        assert all(r["model"] == chosen[round(r["t_arrival"], 3)] for r in planned_records)
        # Connected before the outage: the link-dependent choice is made (the Pi 4 offloads).
        before = [(c["model"], c["split"]) for c in choices if c["t"] is not None and c["t"] < OUTAGE[0]]
        assert connected[device] in before, (device, before)
        local = [c["model"] for c in choices if c["local"]]
        assert local, f"{device}: never ran a network locally during the outage"
        local_models[device] = collections.Counter(local).most_common(1)[0][0]
        assert local_models[device] == expected[device]
        answered = [r for r in records if r["outcome"] in ("device_exit", "cloud", "fallback_exit")]
        assert len(answered) >= 0.6 * len(records)
    assert local_models["device1"] != local_models["device2"]

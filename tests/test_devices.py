"""Device profiles fitted on measured NAS-Bench-201 latencies: loading, lookups, costs, validation figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from testbed.devices import get_profile, list_profiles
from testbed.devices.data_table import latency_table
from testbed.devices.fit import (
    fit_device,
    fitted_devices_json,
    holdout_mask,
    load_features,
    network_features,
    predict,
    validation_figures,
)
from testbed.errors import ConfigError
from testbed.models.registry import build_model

torch.set_num_threads(1)


def test_every_profile_loads_with_label_energy_and_spread():
    profiles = list_profiles()
    assert len(profiles) == 18
    assert set(profiles) == set(latency_table().devices)
    for name, label in profiles.items():
        p = get_profile(name)
        assert (p.name, p.label) == (name, label)
        assert p.kind == ("server" if name in ("gtx1080ti", "intel_i7") else "device")
        assert p.workers == 1
        assert set(p.energy) >= {"compute_w", "idle_w"}
        for key in ("compute_w", "idle_w"):
            assert p.energy[key]["value"] > 0 and p.energy[key]["source"]
            if p.energy[key]["source"] == "assumed":
                assert p.energy[key]["assumption"]
        assert p.spread["source"] and p.spread["cv"] >= 0
    assert "[simulated]" in profiles["eyeriss_asic"] and "[simulated]" in profiles["fpga"]
    assert "[unconfirmed]" in profiles["snapdragon855_gpu"] and "[unconfirmed]" in profiles["jetson_nano_16bit"]
    assert "(server)" in profiles["gtx1080ti"] and "(server)" in profiles["intel_i7"]
    assert "DeepEdgeBench" in get_profile("raspberry_pi4").energy["compute_w"]["source"]
    assert get_profile("pixel3").energy["compute_w"]["source"] == "assumed"


def test_unknown_profile_and_bad_workers_name_the_key():
    with pytest.raises(ConfigError, match="device.profile") as info:
        get_profile("raspberry_pi5")
    assert "raspberry_pi4" in str(info.value)
    assert get_profile("gtx1080ti", workers=4).workers == 4
    with pytest.raises(ConfigError, match="device.workers"):
        get_profile("raspberry_pi4", workers=2)
    with pytest.raises(ConfigError, match="device.workers"):
        get_profile("intel_i7", workers=0)


def test_nb201_ms_is_the_measured_value_for_a_measured_network():
    table = latency_table()
    pi = get_profile("raspberry_pi4")
    for row in (0, 1, 1998):
        expected = table.ms[row, table.devices.index("raspberry_pi4")]
        assert pi.nb201_ms(row) == expected
        assert pi.nb201_ms(table.archs[row]) == expected
        assert pi.nb201_ms(f"nb201-{row}") == expected
    assert pi.nb201_ms(0) == 54.3741  # the CSV's first row, as written there
    # edgetpu_hwnasbench lacks values for some rows: those are predicted, positive and finite
    tpu = get_profile("edgetpu_hwnasbench")
    missing = int(np.flatnonzero(np.isnan(table.column("edgetpu_hwnasbench")))[0])
    value = tpu.nb201_ms(missing)
    assert math.isfinite(value) and 0.2 < value < 5


def test_nb201_ms_predicts_an_unmeasured_arch_near_measured_cells_with_the_same_operations():
    from collections import Counter

    from testbed.models.nasbench201 import parse_arch

    table = latency_table()
    arch = "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    assert table.row_of(arch) is None

    def op_counts(a):
        return Counter(op for node in parse_arch(a) for op, _ in node)

    same = [row for row, a in enumerate(table.archs) if op_counts(a) == op_counts(arch)]
    assert same
    pi = get_profile("raspberry_pi4")
    measured = table.column("raspberry_pi4")[same]
    assert pi.nb201_ms(arch) == pytest.approx(float(np.mean(measured)), rel=0.25)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_model_costs_split_consistently(shape):
    model = build_model("resnet20-ee", in_channels=shape[0], input_size=shape[1])
    pi = get_profile("raspberry_pi4")
    costs = pi.model_costs(model, shape)
    head, tail = costs["head_ms"], costs["tail_ms"]
    assert list(head) == model.split_points
    assert head["input"] == 0.0
    values = [head[s] for s in model.split_points]
    assert all(b > a for a, b in zip(values, values[1:])), values
    for split in model.split_points:
        assert head[split] + tail[split] == pytest.approx(costs["full_ms"], rel=1e-9), split
    assert len(costs["exit_ms"]) == model.num_exits and all(ms > 0 for ms in costs["exit_ms"])
    assert pi.model_costs(model, shape) is costs  # cached per class/config/shape
    # a whole-model estimate of a standalone module agrees with the split sum
    whole = pi.module_ms(torch.nn.Sequential(*model.blocks, model.exit_heads[-1]), torch.zeros(1, *shape))
    assert whole == pytest.approx(costs["full_ms"], rel=1e-9)


@pytest.mark.parametrize("device", ["raspberry_pi4", "jetson_nano", "fpga"])  # graphs: pruned, folded, full
def test_nb201_model_costs_match_the_fitted_network_prediction(device):
    from testbed.models.nasbench201 import NASBench201Net

    profile = get_profile(device)
    # node 1 is constant (zero), node 2 is dead (read only through 'none'), node 3 has a constant-fed conv
    arch = "|none~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    variants = [tuple(network_features(arch, graph=g)) for g in ("full", "pruned", "folded")]
    assert len(set(variants)) == 3
    model = NASBench201Net(arch)
    costs = profile.model_costs(model, (3, 32, 32))
    expected = profile.features_ms(network_features(arch, graph=profile.graph))
    assert costs["full_ms"] == pytest.approx(expected, rel=1e-9)


def test_raspberry_pi_is_slower_than_the_gpu_server_on_resnet20():
    model = build_model("resnet20-ee", in_channels=3, input_size=32)
    pi = get_profile("raspberry_pi4").model_costs(model, (3, 32, 32))["full_ms"]
    gpu = get_profile("gtx1080ti").model_costs(model, (3, 32, 32))["full_ms"]
    assert pi > gpu


def test_model_without_splits_gets_a_full_time():
    edge = build_model("appealnet-edge")
    costs = get_profile("pixel3").model_costs(edge, (1, 16, 16))
    assert costs["head_ms"] == {} and costs["full_ms"] > 0


def test_sample_ms_is_seeded_and_has_the_documented_spread():
    pi = get_profile("raspberry_pi4")
    a = [pi.sample_ms(40.0, np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1]
    draws = np.array([pi.sample_ms(40.0, rng) for rng in [np.random.default_rng(7)] for _ in range(4000)])
    assert draws.mean() == pytest.approx(40.0, rel=0.01)
    assert draws.std() / draws.mean() == pytest.approx(pi.spread["cv"], rel=0.1)
    assert get_profile("fpga").sample_ms(5.0, np.random.default_rng(0)) == 5.0  # simulated: deterministic


def test_cached_features_match_a_fresh_count():
    table = latency_table()
    features = load_features()
    rows = np.flatnonzero(holdout_mask(len(table.archs)))[:8]
    for graph, values in features.items():
        for row in rows:
            assert np.allclose(network_features(table.archs[row], graph=graph), values[row]), (graph, row)
    # the graph variants differ where a cell has dead nodes or constant-fed edges
    assert not np.allclose(features["full"], features["pruned"])
    assert not np.allclose(features["pruned"], features["folded"])


def test_whole_network_count_equals_the_per_stage_composition():
    from testbed.devices.features import features_and_output
    from testbed.models.nasbench201 import NASBench201Net

    arch = latency_table().archs[11]
    model = NASBench201Net(arch).eval()
    x, total = torch.zeros(1, 3, 32, 32), 0
    for block in model.blocks:
        vec, x = features_and_output(block, x)
        total = total + vec
    total = total + features_and_output(model.exit_heads[-1], x)[0]
    assert np.allclose(total, network_features(arch))


def test_shipped_validation_figures_are_what_a_refit_gives():
    """Refit one device on the training rows; coefficients and held-back figures match fitted.json."""
    table = latency_table()
    features = load_features()
    held = holdout_mask(len(table.archs))
    shipped = fitted_devices_json()["raspberry_pi4"]
    y = table.column("raspberry_pi4")
    graph_features = features[shipped["graph"]]
    coef = fit_device(graph_features[~held], y[~held])
    figures = validation_figures(predict(coef, graph_features[held]), y[held])
    assert figures == shipped["held_back"]
    assert figures["mape_pct"] < 15 and figures["spearman"] > 0.85
    profile = get_profile("raspberry_pi4")
    assert np.allclose(profile.coefficients, coef, rtol=1e-6, atol=0)


def test_listing_profiles_does_not_import_torch():
    """Topology validation and ``testbed --help`` list profiles; that must stay light."""
    import subprocess
    import sys

    code = ("import sys; from testbed.devices import list_profiles, get_profile; "
            "assert len(list_profiles()) == 18; get_profile('pixel3'); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_lists_profiles_and_predicts(capsys):
    from testbed.cli import main

    assert main(["devices", "list"]) == 0
    out = capsys.readouterr().out
    assert "raspberry_pi4" in out and "[simulated]" in out and "4.08%" in out
    assert main(["devices", "predict", "--model", "resnet20-ee", "--input", "1x28x28",
                 "--profiles", "raspberry_pi4,gtx1080ti", "--splits"]) == 0
    out = capsys.readouterr().out
    costs = get_profile("raspberry_pi4").model_costs(build_model("resnet20-ee", in_channels=1, input_size=28),
                                                    (1, 28, 28))
    assert f"{costs['full_ms']:.2f}" in out and "s2b0" in out

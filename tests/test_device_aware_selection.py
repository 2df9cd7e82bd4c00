"""Issue 11: latency monotonicity across the 18 measured devices and proxy-device selection.

Data-only and fast (seconds): the measured latency table, the committed candidate accuracies and the
committed reproduction outputs; nothing is trained here.
"""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from testbed.selection.candidates import choose_candidates, load_accuracies
from testbed.selection.latency import REPO_ROOT, Measurements, load_measurements
from testbed.selection.proxy import evaluate, select, summarise
from testbed.selection.reproduce import reproduce_monotonicity, reproduce_selection

MONOTONICITY = REPO_ROOT / "docs" / "reproductions" / "device-monotonicity"
SELECTION = REPO_ROOT / "docs" / "reproductions" / "device-aware-selection"
# (device a, device b, Spearman quoted in issue 11 / the data's SOURCE.md)
QUOTED = [("raspberry_pi4", "pixel3", 0.92), ("intel_i7", "gtx1080ti", 1.00), ("jetson_nano_16bit", "pixel3", 0.32)]


def _csv_columns(a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """Both devices' latencies straight from the CSV (independent of testbed.selection's reader)."""
    with open(load_measurements().path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    xs, ys = [], []
    for row in rows:
        if row[a].strip() and row[b].strip() and float(row[a]) >= 0 and float(row[b]) >= 0:
            xs.append(float(row[a]))
            ys.append(float(row[b]))
    return np.array(xs), np.array(ys)


@pytest.fixture(scope="module")
def table() -> Measurements:
    return load_measurements()


@pytest.fixture(scope="module")
def accuracy() -> dict[int, float]:
    return {i: c["accuracy"] for i, c in load_accuracies()["candidates"].items()}


def test_committed_pair_table_matches_three_recomputed_pairs():
    with open(MONOTONICITY / "pairs.csv", newline="") as handle:
        committed = {frozenset((r["proxy"], r["target"])): r for r in csv.DictReader(handle)}
    assert len(committed) == 18 * 17 // 2
    for a, b, quoted in QUOTED:
        x, y = _csv_columns(a, b)
        rho, tau = spearmanr(x, y).statistic, kendalltau(x, y).statistic
        row = committed[frozenset((a, b))]
        assert float(row["spearman"]) == pytest.approx(rho, abs=1e-4)
        assert float(row["kendall_tau_b"]) == pytest.approx(tau, abs=1e-4)
        assert int(row["rows"]) == len(x)
        assert round(rho, 2) == quoted
    # edgetpu_hwnasbench misses 259 rows: pairs with it use the pairwise-complete rows only
    assert int(committed[frozenset(("edgetpu_hwnasbench", "pixel3"))]["rows"]) == 1999 - 259


def test_monotonicity_reproduction_regenerates_committed_table(tmp_path):
    result = reproduce_monotonicity(tmp_path)
    assert {p.name for p in result["files"]} == {"heatmap.png", "pairs.csv", "README.md", "manifest.json"}
    assert (tmp_path / "pairs.csv").read_text() == (MONOTONICITY / "pairs.csv").read_text()
    assert (tmp_path / "heatmap.png").stat().st_size > 10_000
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["data"]["sha256"] == load_measurements().sha256
    assert "does not hold" not in (tmp_path / "README.md").read_text().split("## Proxy")[0]


def test_candidate_json_matches_candidate_list(table):
    cache = load_accuracies()
    indices = sorted(cache["candidates"])
    assert indices == choose_candidates(len(indices), table)
    assert 30 <= len(indices) <= 50
    for index, entry in cache["candidates"].items():
        assert entry["arch"] == table.archs[index]
        assert 0.1 < entry["accuracy"] <= 1.0
    assert cache["settings"]["command"].startswith("nice -n 10 .venv/bin/python scripts/train_nb201_candidates.py")
    assert cache["settings"]["latency_csv_sha256"] == table.sha256
    proxy_ms = table.column("pixel3")[indices]
    assert proxy_ms.max() / proxy_ms.min() > 2, "candidates should span the latency range"


@pytest.mark.parametrize("device", ["pixel3", "raspberry_pi4", "jetson_nano_16bit", "edgetpu_eagle"])
def test_selection_picks_oracle_network_when_proxy_is_target(table, accuracy, device):
    outcomes = evaluate(table, accuracy, device, [device])
    for level in {o.level for o in outcomes}:
        chosen = {o.method: o.arch_index for o in outcomes if o.level == level}
        assert chosen["proxy"] == chosen["oracle"] == chosen["one-size"], level
    assert all(o.regret == 0 for o in outcomes if o.method in ("proxy", "one-size"))


def test_regret_nonnegative_and_zero_for_oracle(table, accuracy):
    targets = [d for d in table.devices if d != "pixel3"]
    outcomes = evaluate(table, accuracy, "pixel3", targets)
    assert len(outcomes) == len(targets) * 9 * 5  # 9 budget levels x 5 methods
    assert all(o.regret >= 0 for o in outcomes)
    assert all(o.regret == 0 and o.hit for o in outcomes if o.method == "oracle")
    for o in outcomes:  # a hit is decided by the target's measurement, never by the method's belief
        assert o.hit == (table.column(o.target)[o.arch_index] <= o.deadline_ms)
    rows = summarise(outcomes)
    assert {r["method"] for r in rows} == {"oracle", "proxy", "proxy-predicted", "adapted", "one-size"}


def test_reversed_ranking_proxy_misses_deadlines():
    # Two devices whose rankings are opposite: the proxy's fast networks are the target's slow ones.
    archs = [f"|nor_conv_3x3~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~{i % 3}|"
             for i in range(60)]
    fast_to_slow = np.linspace(1.0, 10.0, 60)
    ms = np.column_stack([fast_to_slow, fast_to_slow[::-1]])
    fake = Measurements(archs, ["proxy_dev", "target_dev"], ms, REPO_ROOT / "README.md")
    accuracy = {i: 0.5 + 0.005 * i for i in range(0, 60, 6)}  # slower on the proxy = more accurate
    outcomes = evaluate(fake, accuracy, "proxy_dev", ["target_dev"], levels=(0.3,), calibration=5,
                        adaptation=8)
    by = {o.method: o for o in outcomes}
    assert by["oracle"].hit and by["oracle"].regret == 0
    assert by["one-size"].regret > 0
    assert by["oracle"].arch_index == max(accuracy)  # slowest on the proxy = fastest on the target


def test_select_rules():
    accuracy = {1: 0.80, 2: 0.90, 3: 0.85}
    assert select(accuracy, {1: 5.0, 2: 12.0, 3: 9.0}, 10.0) == 3
    assert select(accuracy, {1: 5.0, 2: 12.0, 3: 9.0}, 4.0) == 1  # nothing fits: the fastest
    with pytest.raises(ValueError, match="budget level"):
        evaluate(load_measurements(), accuracy, "pixel3", ["fpga"], levels=(1.5,))


def test_selection_reproduction_regenerates_committed_outcomes(tmp_path):
    result = reproduce_selection(tmp_path, proxy_sweep=False)
    assert (tmp_path / "outcomes.csv").read_text() == (SELECTION / "outcomes.csv").read_text()
    text = (tmp_path / "README.md").read_text()
    assert "one proxy enough?" in text and (tmp_path / "selection.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "manifest.json").read_text())["accuracy_json_sha256"]
    assert "Claim" in result["text"]


def test_cli_lists_data_reproductions(capsys):
    from testbed.errors import ConfigError
    from testbed.experiment_cli import reproduce_cmd

    reproduce_cmd(argparse.Namespace(name="list", out="results", resume=None, report_only=None))
    listed = capsys.readouterr().out
    assert "device-monotonicity" in listed and "device-aware-selection" in listed
    with pytest.raises(ConfigError, match="device-aware-selection"):
        reproduce_cmd(argparse.Namespace(name="device-aware-selectio", out="results", resume=None,
                                         report_only=None))


def test_data_reproduction_with_docs_off_writes_under_out_only(tmp_path, capsys):
    """`--docs ''` publishes nothing: the heatmap and its tables go under --out, docs/ is untouched."""
    from testbed.experiment_cli import reproduce_cmd

    published = SELECTION.parent / "device-monotonicity" / "manifest.json"
    before = published.stat().st_mtime_ns
    reproduce_cmd(argparse.Namespace(name="device-monotonicity", out=str(tmp_path), docs="", resume=None,
                                     report_only=None, quick=False))
    assert (tmp_path / "device-monotonicity" / "manifest.json").is_file()
    assert published.stat().st_mtime_ns == before
    assert str(tmp_path) in capsys.readouterr().out


def test_arch_string_to_model_forward(table):
    nasbench201 = pytest.importorskip("testbed.models.nasbench201")
    import torch

    index = sorted(load_accuracies()["candidates"])[0]
    # every one of the five operations, and a measured candidate
    for arch in (table.archs[index],
                 "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"):
        model = nasbench201.NASBench201Net(arch, num_classes=10, in_channels=1, input_size=28).eval()
        with torch.no_grad():
            logits = model(torch.randn(2, 1, 28, 28))
        assert logits.shape == (2, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("device", ["pixel3", "raspberry_pi4", "edgetpu_hwnasbench"])
def test_candidate_latency_agrees_with_device_profiles(table, device):
    from testbed.devices import get_profile

    profile = get_profile(device)
    for index in sorted(load_accuracies()["candidates"]):
        assert profile.nb201_ms(index) == pytest.approx(table.column(device)[index], rel=1e-9)
        assert profile.nb201_ms(table.archs[index]) == pytest.approx(table.column(device)[index], rel=1e-9)

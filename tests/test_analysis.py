"""Metric math on small synthetic record files, tables with t-distribution CIs, figures and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_experiment import fake_session, write_exp

from testbed.analysis import build_report, mean_ci, session_metrics
from testbed.analysis.metrics import accuracy_within, outage_windows, read_replay
from testbed.experiment import run_experiment


def rec(i, outcome="cloud", lat=0.1, correct=True, t=None, deadline=0.5, **kw):
    t = float(i) if t is None else t
    return {"request_id": i, "t_arrival": t, "t_finish": t + (lat or 0), "deadline_s": deadline,
            "latency_s": lat if outcome not in ("timeout", "failed") else None, "outcome": outcome,
            "correct": correct, **kw}


def test_session_metrics_by_hand():
    records = [rec(0, lat=0.1), rec(1, lat=0.2, correct=False), rec(2, "device_exit", lat=0.6),
               rec(3, "timeout", correct=False), rec(4, "fallback_exit", lat=0.3, energy_j=1.0, cloud_compute_s=0.5)]
    m = session_metrics(records, [], {"deadline_s": 0.5})
    assert m["requests"] == 5
    assert m["availability"] == pytest.approx(4 / 5)
    assert m["accuracy"] == pytest.approx(3 / 4)           # correct among answered
    assert m["timely_accuracy"] == pytest.approx(2 / 5)    # 0 and 4 (2 is late, 1 wrong)
    assert m["deadline_miss_rate"] == pytest.approx(2 / 5)  # 2 late, 3 timed out
    assert m["latency_p50_ms"] == pytest.approx(250.0)
    assert m["throughput_rps"] == pytest.approx(4 / 4.3)     # span 0 .. 4.3
    assert m["local_fraction"] == pytest.approx(2 / 5)
    assert m["energy_j_per_req"] == pytest.approx(0.2) and m["cloud_ms_per_req"] == pytest.approx(100.0)
    assert math.isnan(m["outage_accuracy"]) and m["outage_requests"] == 0


def test_outage_windows_from_replay(tmp_path):
    p = tmp_path / "replay.csv"
    p.write_text("scheduled_s,applied_s,link,direction,trace_mbps,rate_mbps,gate,loss_pct\n"
                 "0,0.001,access,up,5,5,open,0\n2,2.001,access,up,5,0,closed,0\n4,4.002,access,up,5,5,open,0\n"
                 "0,0.001,access,down,5,5,open,0\n3,3.5,access,down,5,0,drop,0\n5,5.0,access,down,5,5,open,0\n"
                 "9,9.0,access,down,5,0,closed,0\n")
    rows = read_replay(p)
    assert rows[1]["applied_s"] == pytest.approx(2.001)
    assert outage_windows(rows, end=10) == [(2.001, 5.0), (9.0, 10)]
    records = [rec(i, "timeout" if 2 <= i < 5 else "cloud", correct=not 2 <= i < 5, t=i + 0.5) for i in range(8)]
    m = session_metrics(records, rows, {})
    assert m["outage_requests"] == 3 and m["outage_availability"] == 0 and m["outage_accuracy"] == 0


def test_mean_ci_uses_t_distribution():
    m, h, n = mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3)
    assert h == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)
    m, h, n = mean_ci([5.0, float("nan")])
    assert m == 5.0 and math.isnan(h) and n == 1


def test_accuracy_within_bound():
    records = [rec(0, lat=0.1), rec(1, lat=0.3), rec(2, "timeout"), rec(3, lat=0.2, correct=False)]
    assert accuracy_within(records, 0.15) == 0.25
    assert accuracy_within(records, 1.0) == 0.5


def test_report_from_a_run(tmp_path):
    exp = write_exp(tmp_path, sweep={"bandwidth_scale": [0.5, 1.0]}, repeats=2)
    run = run_experiment(exp, out=tmp_path / "r", session=fake_session, progress=False)
    rep = build_report(run.parent)  # an experiment folder picks its newest run
    assert rep.run_dir == run
    assert len(rep.rows) == 4 and all(r.repeats == 2 for r in rep.rows)
    for name in ("metrics.csv", "metrics.md", "report.md", "figures/latency_cdf.png", "figures/latency_cdf.pdf",
                 "figures/availability_outage.png", "figures/throughput_vs_bandwidth.png",
                 "figures/accuracy_vs_latency_bound.png"):
        assert (run / name).exists(), name
    assert list(run.glob("figures/timeline_*.png"))
    cloud = next(r for r in rep.rows if r.strategy == "cloud-only")
    dev = next(r for r in rep.rows if r.strategy == "device-only")
    assert cloud.mean["outage_availability"] == 0 and dev.mean["outage_availability"] == 1
    assert math.isfinite(cloud.ci["latency_p50_ms"])  # two repeats -> an interval
    assert "±" in (run / "metrics.md").read_text()
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "latency_p95_ms_ci95" in header and "bandwidth_scale" in header
    assert "device-only" in rep.text
    # The headline is accuracy over ALL requests, labelled as such, before the answered-only accuracy.
    header_line = rep.text.splitlines()[0]
    assert header_line.index("acc. all reqs") < header_line.index("acc. answered")
    assert "misses and timeouts count as wrong" in rep.text
    report_md = (run / "report.md").read_text()
    assert report_md.index("## Headline: accuracy over all requests") < report_md.index("## Metrics")
    assert f"**cloud-only**: {cloud.mean['timely_accuracy']:.3f} ± " in report_md


def test_report_cli_and_paper_comparison(tmp_path, capsys):
    from testbed.analysis.paper import reproduce_report
    from testbed.cli import main

    exp = write_exp(tmp_path, paper={"claim": "spinn-outage", "ours": "device-only", "baselines": ["cloud-only"],
                                     "y": ["outage_availability", "accuracy"], "differences": ["synthetic"]})
    run = run_experiment(exp, out=tmp_path / "r", session=fake_session, progress=False)
    assert main(["report", str(run)]) == 0
    assert "metrics.csv" in capsys.readouterr().out
    comp = reproduce_report(run)
    assert "| claim | paper | ours" in comp.text and "synthetic" in comp.text
    assert "device-only: 100% answered" in comp.text
    assert all(Path(p).exists() for p in comp.figures)
    assert main(["report", str(tmp_path)]) == 2  # no run there: a clean error


def test_report_reads_only_result_files(tmp_path):
    """A run folder copied elsewhere (no experiment file, no traces) still reports."""
    import shutil

    exp = write_exp(tmp_path)
    run = run_experiment(exp, out=tmp_path / "r", session=fake_session, progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    exp.unlink()
    rep = build_report(copy, make_figures=False)
    assert {r.strategy for r in rep.rows} == {"device-only", "cloud-only"}
    assert json.loads((copy / "manifest.json").read_text())["status"] == "complete"


def test_figures_draw_overlapping_cis_as_one_and_start_at_zero():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from testbed.analysis.figures import honest_ylim, mark_indistinguishable, overlapping_group

    # 10.09 +- 0.01 vs 10.095 +- 0.01 overlap: one band; a third strategy far below is separate.
    assert overlapping_group([(10.09, 0.01), (10.095, 0.01), (3.0, 0.1)]) == pytest.approx((10.08, 10.105))
    assert overlapping_group([(10.0, 0.1), (5.0, 0.1)]) is None  # a real difference
    assert overlapping_group([(10.09, math.nan), (10.095, math.nan)]) is None  # one repeat: no claim either way
    fig, ax = plt.subplots()
    ax.plot([1, 2], [10.088, 10.098])
    honest_ylim(ax, [(10.088, 0.004), (10.098, 0.004)])
    assert ax.get_ylim()[0] == 0  # the auto-scaled 10.088..10.098 axis drew noise as a trend
    mark_indistinguishable(ax, {1.0: [(10.09, 0.01), (10.095, 0.01)], 2.0: [(10.0, 0.1), (5.0, 0.1)]})
    assert [t.get_text() for t in ax.texts] == ["n.s."]  # only where the CIs overlap
    plt.close(fig)


def test_claim_table_says_whether_the_direction_holds_and_docs_get_figure_table_manifest(tmp_path):
    from testbed.analysis.paper import reproduce_report
    from testbed.experiment_cli import publish_reproduction

    # Server cost: device-only sends nothing to the cloud (0 ms) vs cloud-only's 4 ms per answered request.
    exp = write_exp(tmp_path, repeats=2, paper={"claim": "spinn-server-cost", "ours": "device-only",
                                                "baselines": ["cloud-only"], "y": ["cloud_ms_per_req"]})
    run = run_experiment(exp, out=tmp_path / "r", session=fake_session, progress=False)
    comp = reproduce_report(run)
    row = next(line for line in comp.text.splitlines() if line.startswith("| server cost"))
    assert "| yes |" in row and "device-only 0 ± 0 vs cloud-only" in row
    # Reversed roles: the claim fails, and the table says so with the measured values.
    exp = write_exp(tmp_path, repeats=2, paper={"claim": "spinn-server-cost", "ours": "cloud-only",
                                                "baselines": ["device-only"], "y": ["cloud_ms_per_req"]})
    run = run_experiment(exp, out=tmp_path / "r2", session=fake_session, progress=False)
    comp = reproduce_report(run)
    row = next(line for line in comp.text.splitlines() if line.startswith("| server cost"))
    assert "| no |" in row and "vs device-only 0" in row
    target = publish_reproduction("demo", run, comp, tmp_path / "docs")
    assert {"claims.md", "manifest-summary.json"} <= {p.name for p in target.iterdir()}
    assert any(p.suffix == ".png" for p in target.iterdir())  # the paper figure
    summary = json.loads((target / "manifest-summary.json").read_text())
    assert summary["repeats"] == 2 and summary["status"] == "complete" and "git" in summary
    assert "regenerate, do not edit" in (target / "claims.md").read_text()
    # The index of every published claim is regenerated with it.
    index = (tmp_path / "docs" / "claims-summary.md").read_text()
    assert "| [demo](demo/claims.md) | server cost vs cloud-centric execution | up to 6.8x lower" in index
    assert "| no | 2 | - |" in index  # verdict, repeats, no paced devices in the fake sessions


def claim_row(tmp_path, run: str, strategies: list[str], paper: dict, starts: str) -> str:
    """The claim-table row starting with ``starts`` of a 2-repeat fake run of ``strategies``."""
    from testbed.analysis.paper import reproduce_report

    exp = write_exp(tmp_path, strategies=strategies, repeats=2, paper=paper)
    comp = reproduce_report(run_experiment(exp, out=tmp_path / run, session=fake_session, progress=False))
    return next(line for line in comp.text.splitlines() if line.startswith(starts))


def test_claims_no_single_metric_decides_get_a_verdict_with_the_measured_reason(tmp_path):
    # fake_session: cloud-only spends half device-only's energy per request but times out in the 5-8 s
    # outage, so its accuracy is ~30 points lower: "energy saved without sacrificing accuracy" fails.
    row = claim_row(tmp_path, "r", ["cloud-only", "device-only"],
                    {"claim": "appealnet-threshold", "ours": "cloud-only", "reference": "device-only",
                     "baselines": ["device-only"], "y": ["energy_j_per_req"]}, "| energy savings")
    assert "| no | every setting lost more than 1 pp accuracy vs device-only" in row, row
    # The other way round accuracy holds but energy is higher: the CIs say no.
    row = claim_row(tmp_path, "r2", ["device-only", "cloud-only"],
                    {"claim": "appealnet-threshold", "ours": "device-only", "reference": "cloud-only",
                     "baselines": ["cloud-only"], "y": ["energy_j_per_req"]}, "| energy savings")
    assert "| no | energy 0.02 ± 0 vs 0.01 ± 0 J/req (-100% saved)" in row, row
    # A direction checked against one named baseline only (outage answers vs cloud-only).
    row = claim_row(tmp_path, "r3", ["device-only", "cloud-only"],
                    {"claim": "spinn-outage", "ours": "device-only", "baselines": ["cloud-only"],
                     "y": ["outage_availability"]}, "| robust")
    assert "| yes | device-only 1 ± 0 vs cloud-only 0 ± 0" in row, row


def test_one_repeat_verdict_calls_a_few_percent_neither_way():
    """A quick run has no CI: 5.25 vs 5.23 req/s (0.4 % apart) must not read as 'the claim holds'."""
    from testbed.analysis.metrics import Row
    from testbed.analysis.paper import significance

    def row(strategy, value, ci=math.nan):
        return Row("c00", {}, strategy, 1, {"x": value}, {"x": ci}, [])

    assert significance(row("a", 5.25), row("b", 5.23), "x", True).startswith("not shown (1 repeat")
    assert significance(row("a", 35.4), row("b", 17.2), "x", True) == "yes (1 repeat, no CI)"
    assert significance(row("a", 17.2), row("b", 35.4), "x", True) == "no (1 repeat)"
    assert significance(row("a", 0.0), row("b", 6.0), "x", False) == "yes (1 repeat, no CI)"
    # with repeats the CIs decide, however small the difference
    assert significance(row("a", 5.25, 0.001), row("b", 5.23, 0.001), "x", True) == "yes"

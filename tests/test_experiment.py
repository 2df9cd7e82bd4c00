"""Experiment files (validation errors name file + key path), sweep cells, runner plumbing and resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from testbed.errors import ConfigError
from testbed.experiment import load_experiment, parse_experiment, read_manifest, run_experiment

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "name": "t",
    "topology": "topologies/device-cloud.yaml",
    "traces": {"access": {"file": "traces/att-lte-driving.csv", "slice": [0, 20]}},
    "faults": [{"kind": "outage", "link": "access", "start": 5, "end": 8}],
    "strategies": ["device-only", "cloud-only"],
    "workload": {"fps": 5, "duration_s": 10, "deadline_s": 0.5},
}


def parse(**changes):
    raw = json.loads(json.dumps(BASE))
    for k, v in changes.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    return parse_experiment(raw, "exp.yaml", base=REPO)


def error_of(**changes) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(**changes)
    return info.value


def test_every_shipped_experiment_validates():
    files = sorted((REPO / "experiments").rglob("*.yaml"))
    assert any(f.name == "quickstart.yaml" for f in files)
    for f in files:
        exp = load_experiment(f)
        assert exp.units(), f


@pytest.mark.parametrize("changes, where, words", [
    ({"bogus": 1}, "exp.yaml: bogus", "unknown key"),
    ({"workload": None}, "exp.yaml: workload", "missing"),
    ({"workload": {"fps": 0, "duration_s": 1, "deadline_s": 1}}, "exp.yaml: workload.fps", "> 0"),
    ({"workload": {"fps": 1, "duration_s": 1}}, "exp.yaml: workload.deadline_s", "missing"),
    ({"traces": {"nolink": "traces/att-lte-driving.csv"}}, "exp.yaml: traces.nolink", "unknown link"),
    ({"traces": {"access": {"file": "traces/nope.csv"}}}, "exp.yaml: traces.access.file", "not found"),
    ({"traces": {"access": {"file": "traces/att-lte-driving.csv", "slice": [9, 3]}}},
     "exp.yaml: traces.access.slice", "after start"),
    ({"traces": {"access": {"file": "traces/att-lte-driving.csv", "zoom": 2}}},
     "exp.yaml: traces.access.zoom", "allowed"),
    ({"faults": [{"kind": "outage", "link": "access", "start": 5}]}, "exp.yaml: faults[0].end", "missing"),
    ({"faults": [{"kind": "blackhole", "link": "access", "start": 1, "end": 2}]}, "exp.yaml: faults[0].kind",
     "outage"),
    ({"strategies": []}, "exp.yaml: strategies", "non-empty"),
    ({"strategies": ["device-only", "device-only"]}, "exp.yaml: strategies[1].label", "duplicate"),
    ({"workload": {"fps": 1, "duration_s": 1, "deadline_s": 1, "phase": "random"}}, "exp.yaml: workload.phase",
     "aligned or staggered"),
    ({"sweep": {"workload.phase": [1, 2]}}, "exp.yaml: sweep.workload.phase", "workload axes"),
    ({"sweep": {"colour": [1, 2]}}, "exp.yaml: sweep.colour", "unknown axis"),
    ({"sweep": {"bandwidth_scale": []}}, "exp.yaml: sweep.bandwidth_scale", "non-empty"),
    ({"sweep": {"workload.fps": [1, -2]}}, "exp.yaml: sweep.workload.fps[1]", "> 0"),
    ({"seeds": [1, 2], "repeats": 3}, "exp.yaml: repeats", "seeds"),
    ({"name": "has space"}, "exp.yaml: name", "folder"),
    ({"topology": "topologies/none.yaml"}, "exp.yaml: topology", "not found"),
    ({"params": {"nope": 1}}, "exp.yaml: topology", "unknown topology parameter"),
    ({"model": "resnet-9000"}, "exp.yaml: model", "unknown model"),
])
def test_validation_errors_name_file_and_key(changes, where, words):
    err = error_of(**changes)
    assert err.where == where, str(err)
    assert words in err.message, str(err)


def test_unknown_strategy_lists_known_ones():
    pytest.importorskip("testbed.strategies")
    err = error_of(strategies=["device-only", "teleport"])
    assert err.where == "exp.yaml: strategies[1].name"
    assert "spinn" in err.message


def test_bad_strategy_param_is_reported_with_its_path():
    pytest.importorskip("testbed.strategies")
    err = error_of(strategies=[{"name": "spinn", "params": {"objective": "fun"}}])
    assert err.where.startswith("exp.yaml: strategies[0] (spinn).params.objective")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(bad)


def test_sweep_is_a_cartesian_product_with_overrides():
    exp = parse(sweep={"bandwidth_scale": [0.5, 1.0], "workload.deadline_s": [0.2, 0.4, 0.8]},
                seeds=[3, 4])
    assert len(exp.cells) == 6
    assert len(exp.units()) == 6 * 2 * 2
    c = exp.cells[1]
    assert c.values == {"bandwidth_scale": 0.5, "workload.deadline_s": 0.4}
    assert c.config["workload"]["deadline_s"] == 0.4
    full = exp.cells[3].traces("x")["access"]
    half = exp.cells[0].traces("x")["access"]
    assert half.up_mbps.sum() == pytest.approx(full.up_mbps.sum() * 0.5)
    assert len({c.cell_id for c in exp.cells}) == 6


def test_trace_axis_and_constant_traces():
    exp = parse(sweep={"trace": [{"constant": {"down": 10, "up": 2}, "duration": 30},
                                 "traces/att-lte-driving.csv"]})
    t0 = exp.cells[0].traces("x")["access"]
    assert t0.rate("up", 3.0) == 2.0
    assert "att-lte" in exp.cells[1].cell_id


def test_strategy_param_axis():
    exp = parse(strategies=["cloud-only", {"name": "device-only", "label": "dev", "params": {"use_exits": True}}],
                sweep={"strategies.dev.params.threshold": [0.5, 0.9]})
    assert [c.config["strategies"]["dev"]["params"]["threshold"] for c in exp.cells] == [0.5, 0.9]
    assert exp.cells[0].config["strategies"]["dev"]["params"]["use_exits"] is True


# ---------------------------------------------------------------------------- runner (fake sessions)
def fake_session(settings: dict, traces: dict, out: Path, fail: set | None = None, calls: list | None = None):
    """Writes the files the runtime writes, with synthetic but plausible numbers."""
    if calls is not None:
        calls.append(out)
    if fail and out.parent.name in fail:
        raise RuntimeError("boom")
    rng = random.Random(settings["seed"])
    n = int(settings["fps"] * settings["duration_s"])
    local = settings["strategy"] == "device-only"
    recs = []
    for i in range(n):
        t = i / settings["fps"]
        outage = 5 <= t < 8
        outcome = "device_exit" if local else ("timeout" if outage else "cloud")
        lat = None if outcome == "timeout" else (0.05 if local else 0.2) * (1 + rng.random())
        recs.append({"request_id": i, "device": "device", "strategy": settings["strategy"], "t_arrival": t,
                     "t_finish": t + (lat or settings["deadline_s"]), "deadline_s": settings["deadline_s"],
                     "latency_s": lat, "outcome": outcome, "exit_index": 1 if local else 3, "split": 0,
                     "bytes_up": 0 if local else 800, "energy_j": 0.02 if local else 0.01,
                     "cloud_compute_s": 0 if local else 0.004, "correct": outcome != "timeout" and rng.random() < 0.9})
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rows = ["scheduled_s,applied_s,link,direction,trace_mbps,rate_mbps,gate,loss_pct"]
    for t in range(0, int(settings["duration_s"]) + 1):
        gate = "closed" if 5 <= t < 8 else "open"
        for d in ("up", "down"):
            rate = traces["access"].rate(d, float(t))
            rows.append(f"{t},{t},access,{d},{rate},{0 if gate != 'open' else rate},{gate},0")
    (out / "replay.csv").write_text("\n".join(rows) + "\n")
    return {"out_dir": str(out), "records_path": str(out / "records.jsonl"), "n_requests": n,
            "cloud_compute_s": sum(r["cloud_compute_s"] for r in recs), "wall_s": 0.01}


def write_exp(tmp_path, **changes) -> Path:
    raw = json.loads(json.dumps(BASE))
    raw["topology"] = str(REPO / raw["topology"])
    raw["traces"]["access"]["file"] = str(REPO / "traces/att-lte-driving.csv")
    raw.update(changes)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_run_writes_manifest_units_and_markers(tmp_path):
    exp = write_exp(tmp_path, sweep={"bandwidth_scale": [0.5, 1.0]}, repeats=2)
    run = run_experiment(exp, out=tmp_path / "results", session=fake_session, progress=False)
    m = read_manifest(run)
    assert m["status"] == "complete" and m["summary"] == {"units": 8, "done": 8, "failed": 0}
    for key in ("config", "git", "packages", "capabilities", "machine", "trace_sha256", "seeds"):
        assert key in m
    assert m["seeds"] == [0, 1]
    assert any(k.endswith("att-lte-driving.csv") for k in m["trace_sha256"])
    assert m["packages"]["numpy"]
    assert "not_emulated" in m["capabilities"]
    assert run.parent.name == "t" and run.parent.parent == tmp_path / "results"
    dones = sorted(run.glob("cells/*/*/r*/done.json"))
    assert len(dones) == 8
    info = json.loads((dones[0].parent / "unit.json").read_text())
    assert info["settings"]["seed"] in (0, 1) and info["trace_mean_mbps"]["access.up"] > 0


def test_identical_sessions_of_a_sweep_run_once(tmp_path):
    # Sweeping one strategy's parameter leaves the other strategy's session identical in every cell.
    exp = write_exp(tmp_path, strategies=["cloud-only", {"name": "device-only", "label": "dev",
                                                         "params": {"use_exits": True}}],
                    sweep={"strategies.dev.params.threshold": [0.5, 0.9]})
    calls: list = []
    run = run_experiment(exp, out=tmp_path / "r", session=lambda s, t, o: fake_session(s, t, o, calls=calls),
                         progress=False)
    c0, c1 = "c00-threshold=0.5", "c01-threshold=0.9"
    assert sorted(f"{c.parent.parent.name}/{c.parent.name}" for c in calls) == [f"{c0}/cloud-only", f"{c0}/dev",
                                                                                  f"{c1}/dev"]
    m = read_manifest(run)
    assert m["summary"]["done"] == 4 and m["reused_units"] == {f"{c1}/cloud-only/r0": f"{c0}/cloud-only/r0"}
    copy, original = run / f"cells/{c1}/cloud-only/r0", run / f"cells/{c0}/cloud-only/r0"
    assert json.loads((copy / "done.json").read_text())["reused_from"] == f"{c0}/cloud-only/r0"
    assert (copy / "records.jsonl").read_bytes() == (original / "records.jsonl").read_bytes()
    assert json.loads((copy / "unit.json").read_text())["cell_id"] == c1


def test_one_sweep_axis_sets_the_same_parameter_of_several_strategies():
    # AppealNet's q-gate and the max-softmax gate are compared at equal appeal rates: one axis, both labels.
    exp = parse(strategies=[{"name": "appealnet", "label": "q"},
                            {"name": "appealnet", "label": "softmax", "params": {"score": "max-softmax"}}],
                sweep={"strategies.q+softmax.params.appeal_rate": [0.2, 0.8]})
    assert [c.cell_id for c in exp.cells] == ["c00-appeal_rate=0.2", "c01-appeal_rate=0.8"]
    for cell, rate in zip(exp.cells, (0.2, 0.8), strict=True):
        params = {label: s["params"] for label, s in cell.config["strategies"].items()}
        assert params == {"q": {"appeal_rate": rate}, "softmax": {"score": "max-softmax", "appeal_rate": rate}}
    with pytest.raises(ConfigError, match=r"sweep.strategies.q\+nope.params.appeal_rate.*labels: q, softmax"):
        parse(strategies=[{"name": "appealnet", "label": "q"}, {"name": "appealnet", "label": "softmax"}],
              sweep={"strategies.q+nope.params.appeal_rate": [0.2]})


def test_resume_skips_completed_units_and_rejects_changed_config(tmp_path):
    exp = write_exp(tmp_path)
    run = run_experiment(exp, out=tmp_path / "r", session=lambda s, t, o: fake_session(s, t, o, fail={"cloud-only"}),
                         progress=False)
    m = read_manifest(run)
    assert m["status"] == "partial" and len(m["failed_units"]) == 1
    assert (run / "cells/c00/cloud-only/r0/error.json").exists()
    calls: list = []
    run_experiment(resume=run, session=lambda s, t, o: fake_session(s, t, o, calls=calls), progress=False)
    assert [c.parent.name for c in calls] == ["cloud-only"]  # device-only was done: skipped
    m = read_manifest(run)
    assert m["status"] == "complete" and m["resumed"]
    calls.clear()
    run_experiment(resume=run, session=lambda s, t, o: fake_session(s, t, o, calls=calls), progress=False)
    assert calls == []
    changed = write_exp(tmp_path, workload={"fps": 2, "duration_s": 10, "deadline_s": 0.5})
    with pytest.raises(ConfigError, match="differs"):
        run_experiment(changed, resume=run, session=fake_session, progress=False)


def test_interrupt_marks_partial_and_keeps_completed(tmp_path):
    exp = write_exp(tmp_path)

    def session(s, t, o):
        if s["strategy"] == "cloud-only":
            raise KeyboardInterrupt
        return fake_session(s, t, o)

    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, out=tmp_path / "r", session=session, progress=False)
    run = next((tmp_path / "r" / "t").iterdir())
    m = read_manifest(run)
    assert m["status"] == "partial" and m["interrupted"]
    assert m["units"]["c00/device-only/r0"] == "done" and m["units"]["c00/cloud-only/r0"] == "interrupted"
    assert (run / "cells/c00/device-only/r0/done.json").exists()
    assert not (run / "cells/c00/cloud-only/r0/done.json").exists()


def test_cli_check_lists_cells(capsys):
    from testbed.cli import main

    assert main(["run", "--check", str(REPO / "experiments/quickstart.yaml")]) == 0
    assert "sessions" in capsys.readouterr().out
    assert main(["run", "--check", str(REPO / "experiments/none.yaml")]) == 2


def test_data_options_are_validated_and_reach_the_session():
    from testbed.experiment.runner import session_settings

    exp = parse(data_options={"size": 32, "channels": 1})
    cell = exp.cells[0]
    strategy = next(iter(exp.strategies)) if not isinstance(exp.strategies, dict) else next(iter(exp.strategies.values()))
    assert session_settings(exp, cell, strategy, 0)["data_options"] == {"size": 32, "channels": 1}
    assert "data_options.width" in str(error_of(data_options={"width": 2}))
    assert "positive integer" in str(error_of(data_options={"size": 0}))

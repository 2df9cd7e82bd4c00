"""End to end on real Mininet (root): a tiny experiment, resume, and Ctrl-C leaving a clean machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from testbed.analysis import build_report
from testbed.experiment import read_manifest, run_experiment

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (Mininet, tc)")]


@pytest.fixture(autouse=True)
def _queue_for_the_machine(monkeypatch):
    monkeypatch.setenv("TESTBED_LOCK_WAIT", os.environ.get("TESTBED_LOCK_WAIT", "900"))
    pytest.importorskip("testbed.runtime.session")


def tiny(tmp_path, duration=10, strategies=("device-only", "cloud-only")) -> Path:
    raw = {"name": "tiny", "topology": str(REPO / "topologies/device-cloud.yaml"),
           "traces": {"access": {"file": str(REPO / "traces/att-lte-driving.csv"), "slice": [0, 20]}},
           "faults": [{"kind": "outage", "link": "access", "start": 4, "end": 7}],
           "model": "resnet20-ee", "data": "digits", "strategies": list(strategies),
           "workload": {"fps": 5, "duration_s": duration, "deadline_s": 0.5}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_tiny_experiment_end_to_end_and_resume(tmp_path):
    run = run_experiment(tiny(tmp_path), out=tmp_path / "results", progress=False)
    m = read_manifest(run)
    assert m["status"] == "complete", m.get("failed_units")
    assert m["capabilities"]["htb"] and m["trace_sha256"]
    for unit in ("device-only", "cloud-only"):
        d = run / "cells/c00" / unit / "r0"
        assert (d / "done.json").exists() and (d / "records.jsonl").exists() and (d / "replay.csv").exists()
        recs = [json.loads(x) for x in (d / "records.jsonl").read_text().splitlines() if x.strip()]
        assert len(recs) >= 20 and {r["strategy"] for r in recs} == {unit}
    rep = build_report(run)
    assert {r.strategy for r in rep.rows} == {"device-only", "cloud-only"}
    assert (run / "metrics.csv").exists() and (run / "figures/latency_cdf.png").exists()
    assert (run / "figures/timeline_c00.png").exists() and (run / "report.md").exists()
    dev = next(r for r in rep.rows if r.strategy == "device-only")
    assert dev.mean["availability"] == 1.0
    # resume: everything is done, nothing reruns
    before = (run / "cells/c00/cloud-only/r0/done.json").read_text()
    run_experiment(resume=run, progress=False)
    assert (run / "cells/c00/cloud-only/r0/done.json").read_text() == before
    assert read_manifest(run)["resumed"]


def test_ctrl_c_leaves_a_clean_machine_and_a_partial_run(tmp_path):
    from testbed.emulation.cleanup import STATE_DIR, leftovers, live_runs

    exp = tiny(tmp_path, duration=20, strategies=("device-only", "cloud-only"))
    out = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", str(exp), "--out", str(out),
                             "--no-progress"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # wait until the first session is running (its unit folder has records or the emulation is up)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if (STATE_DIR / f"run-{proc.pid}.json").exists():  # our emulation is up
            break
        time.sleep(0.5)
    time.sleep(5)
    assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert not (STATE_DIR / f"run-{proc.pid}.json").exists()
    if not [p for p in live_runs() if p != proc.pid]:  # others share the machine: judge only when alone
        left = leftovers()
        assert not any(left.values()), left
    run = next((out / "tiny").iterdir())
    m = read_manifest(run)
    assert m["status"] == "partial" and m.get("interrupted"), m["status"]
    assert "interrupted" in m["units"].values()


def test_reproduce_quick_writes_a_claim_table_with_measured_values(tmp_path, capsys):
    """`testbed reproduce sparsity --quick` on real Mininet: figure, claim table and manifest summary in docs."""
    import math
    import re

    from testbed.cli import main

    docs = tmp_path / "docs"
    assert main(["reproduce", "sparsity", "--quick", "--out", str(tmp_path / "results"), "--docs", str(docs)]) == 0
    target = docs / "sparsity"
    claims = (target / "claims.md").read_text()
    row = next(line for line in claims.splitlines() if line.startswith("| storage and compute"))
    # Storage/FLOPs ratios from the model cards and the accuracy difference, all measured and finite.
    matches = re.findall(r"(-?\d+\.\d+)x smaller|accuracy ([+-]\d+\.\d+) pp", row)
    numbers = [float(ratio or diff) for ratio, diff in matches]
    assert numbers and all(math.isfinite(v) for v in numbers), row
    # The verdict is decided from those numbers (>= 4x storage and FLOPs within 1 pp), not left to the reader.
    assert re.search(r"\| (yes|smaller, but no: .*|no: .*) \| storage \d+\.\d+x, FLOPs \d+\.\d+x", row), row
    summary = json.loads((target / "manifest-summary.json").read_text())
    assert summary["status"] == "complete" and summary["repeats"] == 1
    assert list(target.glob("*.png"))

"""``testbed traces ...`` through ``testbed.cli.main``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testbed.cli import main
from testbed.traces import load_trace

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "traces"
LIBRARY = REPO / "traces"


def test_import_single_file(tmp_path, capsys):
    src = tmp_path / "q.csv"
    src.write_text("13.9,Mbits/sec\n0,bits/sec\n500,Kbits/sec\n")
    out = tmp_path / "out" / "q-norm.csv"
    args = [
        "traces",
        "import",
        str(src),
        "-o",
        str(out),
        "--name",
        "q",
        "--source",
        "test",
        "--licence",
        "CC0",
    ]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    trace = load_trace(out)
    assert np.allclose(trace.down_mbps, [13.9, 0, 0.5])
    assert trace.meta["name"] == "q" and trace.meta["source"] == "test" and trace.meta["licence"] == "CC0"
    assert trace.meta["conversion"].startswith("testbed traces import")
    assert trace.meta["format"] == "value-unit"


def test_import_up_down_pair_with_window_and_slice(tmp_path):
    out = tmp_path / "pair.csv"
    args = [
        "traces",
        "import",
        "--up",
        str(DATA / "mahimahi_small.up"),
        "--down",
        str(DATA / "mahimahi_small.down"),
    ]
    args += ["--window", "0.005", "--slice", "0", "0.015", "-o", str(out)]
    assert main(args) == 0
    trace = load_trace(out)
    assert trace.duration == pytest.approx(0.015)
    assert np.allclose(trace.up_mbps, np.array([6, 2, 3]) * 2.4)
    assert np.allclose(trace.down_mbps, np.array([7, 1, 1]) * 2.4)
    assert "--window 0.005" in trace.meta["conversion"]
    assert "mahimahi_small.up" in trace.meta["original_files"]


def test_import_errors_are_one_line(tmp_path, capsys):
    assert main(["traces", "import", str(DATA / "nonmonotonic.csv"), "-o", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "nonmonotonic.csv:8: time 3.2 is not after previous time 3.4" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.csv").exists()
    assert (
        main(["traces", "import", "--up", str(DATA / "mahimahi_small.up"), "-o", str(tmp_path / "y.csv")])
        == 2
    )
    assert main(["traces", "import", str(tmp_path / "missing"), "-o", str(tmp_path / "z.csv")]) == 2
    assert "missing: no such file" in capsys.readouterr().err


def test_show(capsys):
    assert main(["traces", "show", str(LIBRARY / "att-lte-driving.csv"), "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "# name: att-lte-driving" in out and "# citation:" in out
    assert "time_s,down_mbps,up_mbps" in out and "more rows" in out


def test_stats_table(capsys):
    files = [str(LIBRARY / "att-lte-driving.csv"), str(LIBRARY / "subway-qtrain.csv")]
    assert main(["traces", "stats", *files]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["trace", "dir", "duration", "s"]
    assert len(out) == 5 and out[1].startswith("att-lte-driving.csv")
    assert main(["traces", "stats", "--markdown", files[0]]) == 0
    assert capsys.readouterr().out.startswith("| trace | dir |")


def test_list(capsys):
    assert main(["traces", "list"]) == 0
    out = capsys.readouterr().out
    for path in LIBRARY.glob("*.csv"):
        assert path.stem in out


def test_plot(tmp_path):
    out = tmp_path / "plots" / "subway.png"
    assert (
        main(["traces", "plot", str(LIBRARY / "subway-qtrain.csv"), "-o", str(out), "--granularity", "1"])
        == 0
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 5000


def test_traces_without_action_prints_help(capsys):
    assert main(["traces"]) == 2
    assert "import" in capsys.readouterr().out

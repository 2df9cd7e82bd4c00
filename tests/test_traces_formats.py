"""Trace readers, format detection, the normalized CSV round trip, bad input, and the real library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from testbed.traces import FORMATS, Trace, TraceError, combine, load_trace, save_trace, stats, steps

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "traces"
LIBRARY = REPO / "traces"
RAW = REPO.parent / "shared" / "traces-raw"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- normalized format ---------------------------------------------------------------------------


def test_round_trip(tmp_path):
    trace = Trace(
        np.array([0.0, 0.5, 2.25]),
        np.array([10.0, 0.0, 3.3333333]),
        np.array([1.0, 0.0, 2.0]),
        4.0,
        rtt_ms=np.array([20.0, 25.0, 30.0]),
        loss=np.array([0.0, 0.5, 0.01]),
        meta={
            "name": "rt",
            "source": "synthetic",
            "citation": "none",
            "licence": "CC0",
            "custom_key": "a\nb",
        },
    )
    path = save_trace(trace, tmp_path / "sub" / "rt.csv")
    text = path.read_text()
    assert text.startswith("# testbed-trace: 1\n# name: rt\n")
    assert "# duration_s: 4\n" in text and "time_s,down_mbps,up_mbps,rtt_ms,loss\n" in text
    back = load_trace(path)
    assert back.duration == 4.0
    for name in ("times", "down_mbps", "up_mbps", "rtt_ms", "loss"):
        assert np.allclose(getattr(back, name), getattr(trace, name))
    assert back.meta == {
        "name": "rt",
        "source": "synthetic",
        "citation": "none",
        "licence": "CC0",
        "custom_key": "a b",
    }


def test_normalized_duration_from_last_step(tmp_path):
    path = write(tmp_path, "t.csv", "time_s,down_mbps,up_mbps\n0,1,2\n1,3,4\n3,5,6\n")
    trace = load_trace(path)
    assert trace.duration == 5.0
    assert trace.rate("up", 4) == 6


def test_normalized_free_comments_and_blank_lines(tmp_path):
    path = write(
        tmp_path, "t.csv", "# just a note\n\n# name: x\ntime_s,down_mbps,up_mbps,loss\n0,1,2,0\n\n1,3,4,1\n"
    )
    trace = load_trace(path)
    assert trace.meta == {"name": "x"} and list(trace.loss) == [0, 1]


# -- foreign formats ---------------------------------------------------------------------------------


def test_mahimahi_small_fixture():
    up = load_trace(DATA / "mahimahi_small.up", window=0.005)
    assert up.meta["format"] == "mahimahi"
    assert up.duration == pytest.approx(0.02)
    assert np.allclose(up.times, [0, 0.005, 0.01, 0.015])
    assert np.allclose(up.down_mbps, np.array([6, 2, 3, 1]) * 2.4)  # 1500 B per opportunity / 5 ms
    assert np.array_equal(up.down_mbps, up.up_mbps)  # one direction fills both
    down = load_trace(DATA / "mahimahi_small.down", window=0.005, direction="down")
    assert down.meta["measured"] == "down"
    both = combine(up, down)
    assert np.allclose(both.up_mbps, np.array([6, 2, 3, 1]) * 2.4)
    assert np.allclose(both.down_mbps, np.array([7, 1, 1, 3]) * 2.4)


def test_mahimahi_default_window(tmp_path):
    stamps = "\n".join(str(ms) for ms in range(0, 1000, 1)) + "\n1000\n"  # one packet per ms = 12 Mbit/s
    trace = load_trace(write(tmp_path, "m.up", stamps))
    assert len(trace) == 10 and trace.duration == pytest.approx(1.0)
    assert np.allclose(trace.down_mbps[:-1], 12.0)


def test_cooked(tmp_path):
    trace = load_trace(write(tmp_path, "norway_x", "0.0\t4.0\n0.55\t4.5\n1.5 2.0\n"))
    assert trace.meta["format"] == "cooked"
    assert trace.duration == pytest.approx(2.45)
    assert trace.rate("down", 1.0) == 4.5


def test_value_unit_mixed_units(tmp_path):
    trace = load_trace(
        write(tmp_path, "m.csv", "13.9,Mbits/sec\r\n512,Kbits/sec\r\n0,bits/sec\r\n1,Gbits/sec\r\n")
    )
    assert trace.meta["format"] == "value-unit"
    assert np.allclose(trace.down_mbps, [13.9, 0.512, 0, 1000])
    assert trace.duration == 4


def test_bytes_per_second(tmp_path):
    trace = load_trace(write(tmp_path, "7_1_wifi.csv", "1,1000000\n2,2500000\n3,0\n"))
    assert trace.meta["format"] == "bytes-csv"
    assert list(trace.times) == [0, 1, 2] and trace.duration == 3
    assert np.allclose(trace.down_mbps, [8, 20, 0])


def test_5gophers(tmp_path):
    text = "protocol,num_tcp_conn,seq_num,A_throughput_mbps,B_throughput_mbps\nTCP,8,0,1,10\nTCP,8,1,2,20\nTCP,8,5,3,30\n"
    path = write(tmp_path, "car.csv", text)
    with pytest.raises(TraceError, match=r"car.csv:1: several throughput columns"):
        load_trace(path)
    trace = load_trace(path, column="B_throughput_mbps")
    assert trace.meta["format"] == "5gophers"
    assert list(trace.times) == [0, 1, 5] and trace.duration == 6 and list(trace.down_mbps) == [10, 20, 30]


def test_gnettrack_averages_duplicate_seconds(tmp_path):
    header = "Timestamp,NetworkMode,DL_bitrate,UL_bitrate\n"
    rows = "2019.12.16_14.23.32,5G,100,1\n2019.12.16_14.23.32,5G,300,1\n2019.12.16_14.23.35,LTE,5000,1\n"
    trace = load_trace(write(tmp_path, "g.csv", header + rows))
    assert trace.meta["format"] == "gnettrack"
    assert list(trace.times) == [0, 3] and trace.duration == 4
    assert np.allclose(trace.down_mbps, [0.2, 5.0])


def test_ghent_json(tmp_path):
    doc = {
        "type": "video",
        "downlink": {},
        "uplink": {
            "trace_pattern": [
                {"time": 0.5, "duration": 500, "capacity": 1000},
                {"time": 1.5, "duration": 1000, "capacity": 250},
            ]
        },
    }
    trace = load_trace(write(tmp_path, "report_bus.json", json.dumps(doc)))
    assert trace.meta["format"] == "ghent-json"
    assert list(trace.times) == [0, 0.5] and trace.duration == 1.5
    assert np.allclose(trace.down_mbps, [8.0, 2.0])


SRSUE = """\
[2022-06-03 17:20:24.534836] Software Radio Systems RAN (srsRAN) 3/6/2022 21:20:24 TZ:0
[2022-06-03 17:20:24.615929] ---------Signal-----------|-----------------DL-----------------|-----------UL-----------
[2022-06-03 17:20:24.615989]  cc  pci  rsrp   pl   cfo | mcs  snr  iter  brate  bler  ta_us | mcs   buff  brate  bler
[2022-06-03 17:20:24.616010]   0    1   -69   69 -4.5k |   2   16   1.0   4.5k    0%    1.6 |  22    0.0    35k    0%
[2022-06-03 17:20:25.615954]   0    1   -65   65 -4.5k |  12   16   1.0    762    0%    1.6 |  23    90k    28M    1%
[2022-06-03 17:20:26.615955] Warning: Detected Radio-Link Failure
[2022-06-03 17:20:29.615955]   0    1   -64   64 -4.5k |   0   17   0.0    0.0    0%    1.6 |  23    63k   1.5M    1%
"""


def test_srsue_log_gap_is_an_outage(tmp_path):
    trace = load_trace(write(tmp_path, "radio_log.txt", SRSUE))
    assert trace.meta["format"] == "srsue" and trace.meta["measured"] == "up"
    assert list(trace.times) == [0, 1, 2, 5] and trace.duration == 6
    assert np.allclose(trace.up_mbps, [0.035, 28, 0, 1.5])


def test_srsue_bad_brate_names_line(tmp_path):
    path = write(tmp_path, "radio_log.txt", SRSUE.replace("   28M", "  lots"))
    with pytest.raises(TraceError, match=r"radio_log.txt:5: UL brate 'lots'"):
        load_trace(path)


@pytest.mark.parametrize(
    "text, fmt",
    [
        ("# name: x\ntime_s,down_mbps,up_mbps\n0,1,1\n", "csv"),
        ("time_s,down_mbps,up_mbps\n0,1,1\n1,1,1\n", "csv"),
        ("0\n1\n2\n", "mahimahi"),
        ("0.0\t1.0\n1.0\t2.0\n", "cooked"),
        ("1.5,Mbits/sec\n", "value-unit"),
        ("1,1000\n2,2000\n", "bytes-csv"),
        ('{"uplink": {"trace_pattern": []}}', "ghent-json"),
        ("Timestamp,DL_bitrate\n", "gnettrack"),
        ("seq_num,throughput_mbps\n", "5gophers"),
        (SRSUE, "srsue"),
    ],
)
def test_detect_format(tmp_path, text, fmt):
    from testbed.traces import detect_format

    path = write(tmp_path, "t", text)
    assert detect_format(path, text.splitlines()) == fmt
    assert fmt in FORMATS


def test_fmt_overrides_detection(tmp_path):
    path = write(tmp_path, "t.txt", "0 1\n1 2\n")
    with pytest.raises(TraceError, match=r"t.txt:1: timestamp '0 1' is not an integer"):
        load_trace(path, fmt="mahimahi")
    with pytest.raises(TraceError, match="unknown format 'pcap'"):
        load_trace(path, fmt="pcap")


# -- bad input: every case names the file and the line -------------------------------------------------


@pytest.mark.parametrize(
    "fixture, message",
    [
        ("nonmonotonic.csv", r"nonmonotonic.csv:8: time 3.2 is not after previous time 3.4"),
        ("negative_rate.csv", r"negative_rate.csv:4: down_mbps -2 is negative"),
        ("nan_rate.csv", r"nan_rate.csv:4: down_mbps 'nan' is not a finite number"),
        ("non_numeric.csv", r"non_numeric.csv:3: down_mbps 'fast' is not a number"),
        ("empty.csv", r"empty.csv: trace is empty"),
        ("mahimahi_backwards.txt", r"mahimahi_backwards.txt:5: time 9 ms is before previous time 12 ms"),
        ("cooked_negative_time.txt", r"cooked_negative_time.txt:3: time -2 is negative"),
        ("mets_bad_unit.csv", r"mets_bad_unit.csv:4: unknown unit 'Furlongs/sec'"),
        ("iperf3_messy.txt", r"iperf3_messy.txt:1: unrecognised trace format"),
    ],
)
def test_bad_fixture(fixture, message):
    with pytest.raises(TraceError, match=message):
        load_trace(DATA / fixture)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"t:.*trace is empty"),
        ("\n\n", r"t:.*trace is empty"),
        ("time_s,down_mbps\n0,1\n", r"t:1: header"),
        ("time_s,down_mbps,up_mbps,jitter\n0,1,1,1\n", r"t:1: header"),
        ("time_s,down_mbps,up_mbps\n0,1\n", r"t:2: expected 3 fields"),
        ("time_s,down_mbps,up_mbps\n1,1,1\n2,1,1\n", r"t:2: first time must be 0"),
        ("time_s,down_mbps,up_mbps\n0,1,1\n-1,1,1\n", r"t:3: time -1 is negative"),
        ("time_s,down_mbps,up_mbps\n0,1,1\n0,1,1\n", r"t:3: time 0 is not after previous time 0"),
        ("time_s,down_mbps,up_mbps\n0,1,1\n", r"t:2: a single row has no duration"),
        ("# duration_s: 1\ntime_s,down_mbps,up_mbps\n0,1,1\n2,1,1\n", r"t:1: duration_s 1 is not after"),
        ("# duration_s: long\ntime_s,down_mbps,up_mbps\n0,1,1\n", r"t:1: duration_s 'long' is not a number"),
        ("time_s,down_mbps,up_mbps,loss\n0,1,1,1.5\n1,1,1,0\n", r"t:2: loss 1.5 is above 1"),
        ("time_s,down_mbps,up_mbps,rtt_ms\n0,1,1,inf\n1,1,1,0\n", r"t:2: rtt_ms 'inf' is not a finite"),
        ("0\n", r"t:1: trace has zero duration"),
        ("0\n-3\n", r"t:2: time -3 ms is negative"),
        ("0.0 1.0\n1.0 x\n", r"t:2: rate 'x' is not a number"),
        ("0.0 1.0\n1.0 2.0 3.0\n", r"t:2: expected 2 whitespace-separated fields"),
        ("1,1000\n1,2000\n", r"t:2: time 1 is not after previous time 1"),
        ("1,1000\n2,-5\n", r"t:2: bytes/s -5 is negative"),
        ("3.2,Mbits/sec\nabc,Mbits/sec\n", r"t:2: rate 'abc' is not a number"),
        ("Timestamp,DL_bitrate\n2019.12.16_14.23.32,5\nyesterday,5\n", r"t:3: Timestamp 'yesterday'"),
        ("Timestamp,DL_bitrate\n2019.12.16_14.23.33,5\n2019.12.16_14.23.32,5\n", r"t:3: time -1 is negative"),
        ("seq_num,throughput_mbps\n0,5\n1,-5\n", r"t:3: throughput_mbps -5 is negative"),
        ('{"uplink": ', r"t:1: invalid JSON"),
        ('{"uplink": {"trace_pattern": []}}', r"t:1: no non-empty"),
        ("hello world, this is not a trace\n", r"t:1: unrecognised trace format"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, text, message):
    with pytest.raises(TraceError, match=message):
        load_trace(write(tmp_path, "t", text))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(TraceError, match=r"nope.csv: no such file"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match="directory"):
        load_trace(tmp_path)


def test_binary_file(tmp_path):
    path = tmp_path / "b.csv"
    path.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(TraceError, match=r"b.csv: not a text file"):
        load_trace(path)


def test_bad_window_and_direction(tmp_path):
    path = write(tmp_path, "m", "0\n10\n")
    with pytest.raises(TraceError, match="window"):
        load_trace(path, window=0)
    with pytest.raises(TraceError, match="direction"):
        load_trace(path, direction="left")


def test_save_rejects_bad_meta_key(tmp_path):
    trace = steps([(0, 1, 1)], 1, **{"bad key": "x"})
    with pytest.raises(TraceError, match="meta key"):
        save_trace(trace, tmp_path / "x.csv")


# -- the real library -----------------------------------------------------------------------------------

LIBRARY_FILES = sorted(LIBRARY.glob("*.csv"))
PROVENANCE = ("name", "source", "citation", "licence", "derived", "original_files", "conversion")


def test_library_has_the_required_traces():
    names = {p.stem for p in LIBRARY_FILES}
    assert len(names) >= 6
    assert "att-lte-driving" in names
    for needed in ("hsdpa", "wifi", "5g", "drone", "subway"):
        assert any(needed in n for n in names), needed


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=[p.stem for p in LIBRARY_FILES])
def test_library_trace_is_valid_and_documented(path):
    trace = load_trace(path)
    assert trace.meta["name"] == path.stem
    for key in PROVENANCE:
        assert trace.meta.get(key), f"{path.name} lacks {key}"
    assert path.stat().st_size < 300_000
    assert 60 <= trace.duration <= 610
    assert path.name in (LIBRARY / "README.md").read_text()
    s = stats(trace)
    assert s["down"]["mean"] > 0 and s["up"]["mean"] > 0


def test_default_trace_is_two_directional():
    trace = load_trace(LIBRARY / "att-lte-driving.csv")
    assert trace.duration == pytest.approx(120.0)
    assert not np.array_equal(trace.down_mbps, trace.up_mbps)
    assert stats(trace)["down"]["mean"] == pytest.approx(4.5, abs=0.2)  # SOURCE.md: 4.52 Mbit/s
    assert stats(trace)["up"]["mean"] == pytest.approx(1.9, abs=0.1)  # SOURCE.md: 1.89 Mbit/s
    assert trace.schedule("down", 0.1)[0][0] == 0.0


def test_subway_trace_has_real_outages():
    trace = load_trace(LIBRARY / "subway-qtrain.csv")
    assert max(e - s for s, e in trace.outages("down", 0.1)) >= 10


# -- the raw data sets (skipped where ../shared/traces-raw is absent) ------------------------------------

raw = pytest.mark.skipif(not RAW.is_dir(), reason="raw data sets not present")


@raw
@pytest.mark.parametrize(
    "relpath, fmt, mean, options",
    [
        ("mahimahi-cellular/ATT-LTE-driving-2016.down", "mahimahi", 4.52, {}),
        ("hsdpa-fcc-cooked/norway_bus_1", "cooked", None, {}),
        ("nyu-mets-lte/bus62.csv", "value-unit", 2.64, {}),
        ("nyu-mets-lte/QTrain.csv", "value-unit", 8.50, {}),
        ("nyu-wifi-cellular-walking/7_1_cellular.csv", "bytes-csv", 47.4, {}),
        ("5gophers-5g/walking-trace.csv", "5gophers", 332.9, {}),
        ("5gophers-5g/car-driving-trace-1.csv", "5gophers", None, {"column": "Verizon_throughput_mbps"}),
        ("irish-5g-raca/Download-Static-B_2020.02.14_13.21.26.csv", "gnettrack", None, {}),
        ("ghent-4g-lte/report_foot_0001.json", "ghent-json", 41.59, {}),
        ("uav-aerpaw-lte/modelC_2022-06-03_17-20-10_radio_log.txt", "srsue", 18.71, {}),
    ],
)
def test_raw_files_detected_and_read(relpath, fmt, mean, options):
    trace = load_trace(RAW / relpath, **options)
    assert trace.meta["format"] == fmt
    if mean is not None:
        assert stats(trace)["down"]["mean"] == pytest.approx(mean, rel=0.02)


@raw
def test_raw_messy_iperf3_log_is_refused():
    with pytest.raises(TraceError, match=r"walk-2024-03-21_iperf3_data.txt:1: unrecognised"):
        load_trace(RAW / "uav-lte" / "walk-2024-03-21_iperf3_data.txt")


@raw
def test_convert_script_is_reproducible(tmp_path):
    import subprocess
    import sys

    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "convert_traces.py"),
            "--raw",
            str(RAW),
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    for path in LIBRARY_FILES:
        assert (tmp_path / path.name).read_text() == path.read_text(), path.name


def test_derived_drone_trace_is_labelled():
    trace = load_trace(LIBRARY / "drone-lte-sinr-derived.csv")
    assert "DERIVED" in trace.meta["derived"] and "36.942" in trace.meta["derived"]
    assert "alpha=0.6" in trace.meta["derived"]
    assert trace.down_mbps.max() <= 44.0 + 1e-9  # 4.4 bit/s/Hz x 10 MHz cap
    assert trace.up_mbps.max() <= 20.0 + 1e-9  # 2.0 bit/s/Hz x 10 MHz cap

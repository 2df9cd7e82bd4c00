#!/usr/bin/env python3
"""Regenerate the trace library in traces/ from the raw public data sets (read-only).

    .venv/bin/python scripts/convert_traces.py [--raw ../shared/traces-raw] [--out traces]

Each output is a normalized CSV (see traces/README.md) whose header records the source, citation, licence,
what was done and this command; the README's generated table is rewritten with the stats of every trace.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.traces import Trace, combine, load_trace, save_trace  # noqa: E402
from testbed.traces.stats import format_table, stats_rows  # noqa: E402

SLICE_S = 600.0  # long traces are cut to this many seconds to keep files small
BEGIN, END = "<!-- BEGIN GENERATED TABLE -->", "<!-- END GENERATED TABLE -->"

SOURCES = {
    "mahimahi-cellular": dict(
        source="Mahimahi cellular traces, github.com/ravinet/mahimahi traces/ @ ae477d4 (Saturator recordings)",
        citation='K. Winstein, A. Sivaraman, H. Balakrishnan, "Stochastic Forecasts Achieve High Throughput and '
        'Low Delay over Cellular Networks", USENIX NSDI 2013',
        licence="GPL-3.0 (repository); measurement data shipped in it",
    ),
    "hsdpa-fcc-cooked": dict(
        source="Norway HSDPA commute traces (Telenor, Oslo), Pensieve 'cooked' copy in "
        "github.com/confiwent/Real-world-bandwidth-traces @ d28c4fd",
        citation='H. Riiser, P. Vigmostad, C. Griwodz, P. Halvorsen, "Commute Path Bandwidth Traces from 3G '
        'Networks: Analysis and Applications", ACM MMSys 2013; prepared by H. Mao et al., Pensieve, SIGCOMM 2017',
        licence="MIT (repository); cite the MMSys 2013 paper",
    ),
    "nyu-wifi-cellular-walking": dict(
        source="Multipath wireless link traces, github.com/yguruprasad/Multipath-Wireless-Link-Traces @ 6c4742d",
        citation='I. Aydin, F. Fund, S. Panwar, "A Data Set and Reference Experiments for Multipath Wireless '
        'Emulation on Public Testbeds", IEEE INFOCOM 2023 CNERT workshop',
        licence="none stated; cite the paper",
    ),
    "5gophers-5g": dict(
        source="5Gophers 1.0 (commercial 5G mmWave, Minneapolis), copy in github.com/jhzuo/Offloading-FL @ 7133b70",
        citation='A. Narayanan, E. Ramadan, J. Carpenter, Q. Liu, Y. Liu, F. Qian, Z.-L. Zhang, "A First Look at '
        'Commercial 5G Performance on Smartphones", The Web Conference (WWW) 2020, doi 10.1145/3366423.3380169',
        licence="CC BY 4.0 (attribution: keep this citation)",
    ),
    "irish-5g-raca": dict(
        source="Irish commercial 5G dataset (operator B, Cork), github.com/uccmisl/5Gdataset @ 306d92e, "
        "5G-production-dataset.zip",
        citation='D. Raca, D. Leahy, C. J. Sreenan, J. J. Quinlan, "Beyond Throughput, The Next Generation: A 5G '
        'Dataset with Channel and Context Metrics", ACM MMSys 2020',
        licence="GPL-3.0 (repository); no separate data licence; cite the paper",
    ),
    "uav-aerpaw-lte": dict(
        source="AERPAW drone LTE measurements (private srsRAN cell, Lake Wheeler NC), "
        "github.com/signetlabdei/aerpaw-experiments @ 5b36838, UE/measurements",
        citation='M. Drago, A. Guerses, R. W. Heath Jr., M. Sichitiu, M. Zorzi, "End-to-end Full-Stack Drone '
        'Measurements: A Case Study Using AERPAW", 2022',
        licence="none stated; cite the paper",
    ),
    "uav-lte": dict(
        source="UAV-borne LTE radio metrics (Lawrence, Kansas), github.com/Sherwan-Abdullah/UAV-Project @ e62b198, "
        "Data Set/",
        citation="S. Abdullah, UAV-Project data set (github.com/Sherwan-Abdullah/UAV-Project); link model: "
        "3GPP TR 36.942 Annex A (truncated Shannon)",
        licence="none stated; cite the repository",
    ),
    "nyu-mets-lte": dict(
        source="NYU-METS LTE transit traces, github.com/NYU-METS/Main @ 886c73b, Sample_Traces/",
        citation='L. Mei, R. Hu, H. Cao, Y. Liu, Z. Han, F. Li, J. Li, "Realtime Mobile Bandwidth Prediction '
        'using LSTM Neural Networks", PAM 2019',
        licence="ODbL 1.0 (database) / DbCL 1.0 (contents): attribution and share-alike",
    ),
}


@dataclass
class Conversion:
    name: str
    dataset: str
    files: list[str]
    description: str
    build: object  # callable(raw_dir) -> (Trace, note)
    extra: dict = field(default_factory=dict)


def mahimahi_pair(stem: str):
    def build(raw: Path) -> tuple[Trace, str]:
        folder = raw / "mahimahi-cellular"
        up = load_trace(folder / f"{stem}.up", fmt="mahimahi", window=0.1, direction="up")
        down = load_trace(folder / f"{stem}.down", fmt="mahimahi", window=0.1, direction="down")
        return combine(up, down), (
            "uplink from .up and downlink from .down; Mahimahi delivery opportunities (1500 B each) "
            "counted in 0.1 s bins (Mbit/s = count x 12000 / 0.1 / 1e6)"
        )

    return build


def one_direction(folder: str, file: str, note: str, window: tuple[float, float] | None = None,
                  keep_rtt: bool = False, **options):
    def build(raw: Path) -> tuple[Trace, str]:
        trace = load_trace(raw / folder / file, **options)
        if not keep_rtt:  # an RTT column needs netem to replay: bandwidth-only traces run on every kernel
            trace = Trace(trace.times, trace.down_mbps, trace.up_mbps, trace.duration, None, trace.loss, trace.meta)
        text = f"{note}; the measured series is used for both directions"
        if window:
            trace = trace.slice(*window)
            text += f"; sliced to {window[0]:g}-{window[1]:g} s of the original"
        return trace, text

    return build


def longest_outage_window(folder: str, file: str, note: str):
    """A SLICE_S window (on a 60 s grid) around the file's longest run under 0.1 Mbit/s."""

    def build(raw: Path) -> tuple[Trace, str]:
        trace = load_trace(raw / folder / file, fmt="value-unit")
        start, end = max(trace.outages("down", 0.1), key=lambda w: w[1] - w[0])
        begin = min(max(0.0, (start + end) / 2 - SLICE_S / 2), trace.duration - SLICE_S)
        begin = float(int(begin // 60) * 60)
        text = (
            f"{note}; sliced to {begin:g}-{begin + SLICE_S:g} s of the original, a window chosen around its "
            f"longest outage ({start:g}-{end:g} s under 0.1 Mbit/s); the downlink series is used for both directions"
        )
        return trace.slice(begin, begin + SLICE_S), text

    return build


def aerpaw_flight(stem: str):
    def build(raw: Path) -> tuple[Trace, str]:
        folder = raw / "uav-aerpaw-lte"
        trace = load_trace(folder / f"{stem}_radio_log.txt", fmt="srsue")
        takeoff = None
        for line in (folder / f"{stem}_vehicle_log.txt").read_text().splitlines():
            if "Taking off" in line:
                takeoff = datetime.fromisoformat(line[1:27])
                break
        if takeoff is None:
            raise SystemExit(f"{stem}_vehicle_log.txt: no 'Taking off' line")
        start = round((takeoff - datetime.fromisoformat(trace.meta["clock_start"])).total_seconds())
        text = (
            "UL brate of each srsUE metrics line (saturated MGEN UDP uplink, so it is the scheduled uplink capacity, "
            "capped by the ~33 Mbit/s offered load); a gap over 1.5 s between metrics lines = 0 (UE disconnected); "
            f"sliced to {start:g}-{start + SLICE_S:g} s of the log, starting at take-off ({takeoff:%H:%M:%S}); "
            "downlink carried only control traffic, so the uplink series is also used for down"
        )
        return trace.slice(start, start + SLICE_S), text

    return build


# 3GPP TR 36.942 Annex A.2 truncated-Shannon link model: rate = alpha * B * log2(1 + SINR) between
# SINR_min and the SINR where the spectral efficiency reaches its cap; 0 below SINR_min.
SHANNON = {
    "down": dict(alpha=0.6, sinr_min_db=-10.0, max_bps_hz=4.4),
    "up": dict(alpha=0.4, sinr_min_db=-10.0, max_bps_hz=2.0),
}
BANDWIDTH_HZ = 10e6  # EARFCN 5230 = LTE band 13, a 10 MHz carrier (also assumed for the band-4 cell)
MAX_GAP_S = 10.0  # samples further apart than this are a logging gap, not an outage


def truncated_shannon_mbps(
    sinr_db: np.ndarray, alpha: float, sinr_min_db: float, max_bps_hz: float
) -> np.ndarray:
    efficiency = np.minimum(alpha * np.log2(1 + 10 ** (sinr_db / 10)), max_bps_hz)
    return np.where(sinr_db < sinr_min_db, 0.0, efficiency) * BANDWIDTH_HZ / 1e6


def uav_sinr_flight(file: str):
    """Derive a drone trace from logged SINR: the longest run of samples without a logging gap."""

    def build(raw: Path) -> tuple[Trace, str]:
        path = raw / "uav-lte" / file
        stamps, sinr = [], []
        for lineno, line in enumerate(path.read_text().splitlines()[1:], 2):  # line 1: malformed header
            fields = line.split(",")
            try:
                stamp = datetime.strptime(fields[0], "%m/%d/%y %H:%M:%S").timestamp()
                value = float(fields[12])
            except (ValueError, IndexError) as exc:
                raise SystemExit(f"{path}:{lineno}: {exc}") from None
            stamps.append(stamp)
            sinr.append(value)
        stamps, sinr = np.array(stamps), np.array(sinr)
        runs = np.split(np.arange(len(stamps)), np.flatnonzero(np.diff(stamps) > MAX_GAP_S) + 1)
        run = max(runs, key=lambda r: stamps[r[-1]] - stamps[r[0]])
        times = stamps[run] - stamps[run[0]]
        step = float(np.median(np.diff(times)))
        rates = {d: truncated_shannon_mbps(sinr[run], **p) for d, p in SHANNON.items()}
        trace = Trace(times, rates["down"], rates["up"], times[-1] + step)
        trace = trace.slice(0, min(SLICE_S, trace.duration))
        params = "; ".join(
            f"{d}: alpha={p['alpha']}, SINR_min={p['sinr_min_db']:g} dB, max {p['max_bps_hz']} bit/s/Hz"
            for d, p in SHANNON.items()
        )
        start = datetime.fromtimestamp(stamps[run[0]])
        text = (
            "DERIVED, not measured: rate = alpha x B x log2(1 + SINR) (3GPP TR 36.942 Annex A truncated Shannon), "
            f"0 below SINR_min, capped at the max spectral efficiency; B = {BANDWIDTH_HZ / 1e6:g} MHz; {params}; "
            "the serving cell's (downlink) SINR is used for both directions; each sample (~3 s apart) holds until "
            f"the next; the longest flight segment without a gap over {MAX_GAP_S:g} s, from {start:%Y-%m-%d %H:%M:%S}, "
            f"cut to its first {trace.duration:g} s"
        )
        return trace, text

    return build


CONVERSIONS = [
    Conversion(
        "att-lte-driving",
        "mahimahi-cellular",
        ["ATT-LTE-driving-2016.up", "ATT-LTE-driving-2016.down"],
        "LTE, driving (AT&T, 2016); the default quickstart trace",
        mahimahi_pair("ATT-LTE-driving-2016"),
    ),
    Conversion(
        "verizon-lte-short",
        "mahimahi-cellular",
        ["Verizon-LTE-short.up", "Verizon-LTE-short.down"],
        "LTE (Verizon), short recording",
        mahimahi_pair("Verizon-LTE-short"),
    ),
    Conversion(
        "hsdpa-norway-train",
        "hsdpa-fcc-cooked",
        ["norway_train_1"],
        "3G HSDPA on a commuter train (Oslo area), downlink",
        one_direction("hsdpa-fcc-cooked", "norway_train_1", "cooked 'time_s Mbit/s' rows", fmt="cooked"),
    ),
    Conversion(
        "wifi-walking-library",
        "nyu-wifi-cellular-walking",
        ["8_1_wifi.csv"],
        "WiFi, walking from a library reading room to outside (WiFi weakens, drops out)",
        one_direction(
            "nyu-wifi-cellular-walking", "8_1_wifi.csv", "timeInSeconds,BytesPerSecond rows", fmt="bytes-csv"
        ),
    ),
    Conversion(
        "5g-mmwave-walking",
        "5gophers-5g",
        ["walking-trace.csv"],
        "commercial 5G mmWave / 4G, walking (Minneapolis), downlink, 8 TCP connections",
        one_direction(
            "5gophers-5g",
            "walking-trace.csv",
            "column throughput_mbps",
            window=(0.0, SLICE_S),
            fmt="5gophers",
        ),
    ),
    Conversion(
        "5g-driving-cork",
        "irish-5g-raca",
        ["Download-Driving-B_2019.12.16_14.23.32.csv"],
        "commercial 5G NSA / LTE, driving (Cork), large-file download, downlink",
        one_direction(
            "irish-5g-raca",
            "Download-Driving-B_2019.12.16_14.23.32.csv",
            "DL_bitrate kbit/s -> Mbit/s, rows of one second averaged, missing seconds hold the previous rate",
            window=(0.0, SLICE_S),
            fmt="gnettrack",
        ),
    ),
    Conversion(
        "hspa-driving-cork-rtt",
        "irish-5g-raca",
        ["Download-Driving-B_2020.02.14_12.58.17.csv"],
        "commercial HSPA+ / LTE / 5G NSA, driving (Cork), large-file download, downlink, with ping RTT "
        "(replayed as netem delay: needs a kernel with netem)",
        one_direction(
            "irish-5g-raca",
            "Download-Driving-B_2020.02.14_12.58.17.csv",
            "DL_bitrate kbit/s -> Mbit/s, rows of one second averaged, missing seconds hold the previous rate; "
            "rtt_ms from PINGAVG (one ping every ~14 s, each sample holds until the next, the first also covers "
            "the seconds before it)",
            window=(0.0, SLICE_S),
            keep_rtt=True,
            fmt="gnettrack",
        ),
    ),
    Conversion(
        "drone-lte-uplink",
        "uav-aerpaw-lte",
        ["modelC_2022-06-03_17-20-10_radio_log.txt", "modelC_2022-06-03_17-20-10_vehicle_log.txt"],
        "drone (UAV) in flight at 25 m, LTE uplink measured on the drone (private cell)",
        aerpaw_flight("modelC_2022-06-03_17-20-10"),
    ),
    Conversion(
        "drone-lte-sinr-derived",
        "uav-lte",
        ["flight-2025-01-10_lte_data.txt"],
        "drone (UAV) in flight over a commercial LTE network; rates DERIVED from logged SINR with a link model",
        uav_sinr_flight("flight-2025-01-10_lte_data.txt"),
    ),
    Conversion(
        "subway-qtrain",
        "nyu-mets-lte",
        ["QTrain.csv"],
        "LTE on the NYC Q subway train (underground/elevated), real multi-second outages",
        longest_outage_window(
            "nyu-mets-lte", "QTrain.csv", "value,unit lines, one per second, converted to Mbit/s"
        ),
    ),
    Conversion(
        "rail-lirr",
        "nyu-mets-lte",
        ["Long_Island_Rail_Road.csv"],
        "LTE on the Long Island Rail Road, real outages up to ~27 s",
        longest_outage_window(
            "nyu-mets-lte",
            "Long_Island_Rail_Road.csv",
            "value,unit lines, one per second, converted to Mbit/s",
        ),
    ),
]


def convert(conversion: Conversion, raw: Path, out: Path) -> tuple[Path, Trace]:
    trace, note = conversion.build(raw)
    meta = {
        "name": conversion.name,
        "description": conversion.description,
        **SOURCES[conversion.dataset],
        "derived": note,
        "original_files": ", ".join(f"traces-raw/{conversion.dataset}/{f}" for f in conversion.files),
        "conversion": "scripts/convert_traces.py (regenerates every trace in traces/ from traces-raw/)",
        **conversion.extra,
    }
    trace = Trace(trace.times, trace.down_mbps, trace.up_mbps, trace.duration, trace.rtt_ms, trace.loss, meta)
    path = save_trace(trace, out / f"{conversion.name}.csv")
    return path, trace


def library_table(results: list[tuple[Path, Trace]]) -> str:
    lines = [
        "| trace | what | source (raw folder) | citation | licence | what was done |",
        "|---|---|---|---|---|---|",
    ]
    for path, trace in results:
        m = trace.meta
        lines.append(
            f"| `{path.name}` | {m['description']} | {m['source']} (`{m['original_files']}`) | {m['citation']} "
            f"| {m['licence']} | {m['derived']} |"
        )
    rows = [row for path, trace in results for row in stats_rows(path.stem, trace)]
    return (
        "\n".join(lines)
        + "\n\nStatistics (Mbit/s, time-weighted; `=0` and `<0.1` = fraction of time):\n\n"
        + (format_table(rows, markdown=True))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--raw", type=Path, default=REPO.parent / "shared" / "traces-raw", help="raw data sets"
    )
    parser.add_argument("--out", type=Path, default=REPO / "traces", help="library folder to write")
    parser.add_argument(
        "--no-readme", action="store_true", help="do not rewrite the README's generated table"
    )
    args = parser.parse_args(argv)
    results = []
    for conversion in CONVERSIONS:
        path, trace = convert(conversion, args.raw, args.out)
        results.append((path, trace))
        print(f"wrote {path} ({len(trace)} rows, {trace.duration:g} s, {path.stat().st_size // 1024} KiB)")
    readme = args.out / "README.md"
    if not args.no_readme and readme.exists():
        text = readme.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            readme.write_text(f"{head}{BEGIN}\n{library_table(results)}\n{END}{tail}")
            print(f"updated the table in {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

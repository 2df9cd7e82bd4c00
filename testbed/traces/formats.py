"""Trace file formats: the normalized CSV (read/write) and readers for published raw layouts.

Every reader parses the whole file first and raises :class:`TraceError` naming ``file:line`` on the first
bad value; only then is a :class:`Trace` built, so nothing is ever half-loaded.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from testbed.traces.model import DIRECTIONS, Trace, TraceError

FORMAT_VERSION = "1"
PACKET_BITS = 1500 * 8  # one Mahimahi delivery opportunity
META_ORDER = (
    "name",
    "description",
    "source",
    "citation",
    "licence",
    "derived",
    "original_files",
    "conversion",
)
OPTIONAL_COLUMNS = ("rtt_ms", "loss")


@dataclass
class Parsed:
    """What a reader found, before it becomes a Trace. ``rates`` alone = a one-direction source."""

    times: list[float]
    duration: float
    down: list[float] | None = None
    up: list[float] | None = None
    rates: list[float] | None = None
    measured: str = "down"  # direction a one-direction source measured
    rtt: list[float] | None = None
    loss: list[float] | None = None
    meta: dict = field(default_factory=dict)


# -- shared parsing helpers --------------------------------------------------------------------


def read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TraceError("no such file", path) from None
    except IsADirectoryError:
        raise TraceError("is a directory, not a trace file", path) from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"not a text file ({exc.reason} at byte {exc.start})", path) from None
    except OSError as exc:
        raise TraceError(f"cannot read: {exc.strerror}", path) from None
    return text.splitlines()


def number(path: Path, lineno: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{what} {text.strip()!r} is not a number", path, lineno) from None
    if not math.isfinite(value):
        raise TraceError(f"{what} {text.strip()!r} is not a finite number", path, lineno)
    return value


def rate_value(path: Path, lineno: int, text: str, what: str = "rate") -> float:
    value = number(path, lineno, text, what)
    if value < 0:
        raise TraceError(f"{what} {value:g} is negative", path, lineno)
    return value


def check_time(path: Path, lineno: int, t: float, previous: float | None) -> None:
    if t < 0:
        raise TraceError(f"time {t:g} is negative", path, lineno)
    if previous is not None and t <= previous:
        raise TraceError(f"time {t:g} is not after previous time {previous:g}", path, lineno)


def data_lines(lines: list[str]):
    """``(line_number, stripped_line)`` for non-blank lines."""
    for lineno, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped:
            yield lineno, stripped


def last_step_duration(path: Path, times: list[float], lineno: int) -> float:
    if len(times) < 2:
        raise TraceError("a single row has no duration (need duration_s or a second row)", path, lineno)
    return times[-1] + (times[-1] - times[-2])


def require_rows(path: Path, times: list, what: str = "data rows") -> None:
    if not times:
        raise TraceError(f"trace is empty: no {what}", path)


# -- normalized format ---------------------------------------------------------------------------


def read_normalized(path: Path, lines: list[str], **_) -> Parsed:
    """``# key: value`` provenance lines, a ``time_s,down_mbps,up_mbps[,rtt_ms][,loss]`` header, rows."""
    meta: dict[str, str] = {}
    duration = None
    duration_line = 0
    columns: list[str] | None = None
    rows: dict[str, list[float]] = {}
    times: list[float] = []
    lineno = 0
    for lineno, line in data_lines(lines):
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            key, value = key.strip(), value.strip()
            if not sep or columns is not None or not re.fullmatch(r"[A-Za-z0-9_-]+", key):
                continue  # free comment
            if key == "duration_s":
                duration, duration_line = number(path, lineno, value, "duration_s"), lineno
            elif key != "testbed-trace":
                meta[key] = value
            continue
        fields = [f.strip() for f in line.split(",")]
        if columns is None:
            columns = fields
            unknown = [c for c in columns if c not in ("time_s", "down_mbps", "up_mbps", *OPTIONAL_COLUMNS)]
            if (
                columns[:3] != ["time_s", "down_mbps", "up_mbps"]
                or unknown
                or len(set(columns)) != len(columns)
            ):
                raise TraceError(
                    f"header {line!r} must be time_s,down_mbps,up_mbps optionally followed by rtt_ms and/or loss",
                    path,
                    lineno,
                )
            rows = {c: [] for c in columns[1:]}
            continue
        if len(fields) != len(columns):
            raise TraceError(
                f"expected {len(columns)} fields ({','.join(columns)}), got {len(fields)}", path, lineno
            )
        t = number(path, lineno, fields[0], "time")
        check_time(path, lineno, t, times[-1] if times else None)
        if not times and t != 0:
            raise TraceError(f"first time must be 0, got {t:g}", path, lineno)
        times.append(t)
        for name, text in zip(columns[1:], fields[1:], strict=True):
            value = rate_value(path, lineno, text, name)
            if name == "loss" and value > 1:
                raise TraceError(f"loss {value:g} is above 1 (loss is a fraction 0..1)", path, lineno)
            rows[name].append(value)
    if columns is None:
        raise TraceError("trace is empty: no header row time_s,down_mbps,up_mbps", path)
    require_rows(path, times)
    if duration is None:
        duration = last_step_duration(path, times, lineno)
    elif duration <= times[-1]:
        raise TraceError(
            f"duration_s {duration:g} is not after the last time {times[-1]:g}", path, duration_line
        )
    return Parsed(
        times,
        duration,
        down=rows["down_mbps"],
        up=rows["up_mbps"],
        rtt=rows.get("rtt_ms"),
        loss=rows.get("loss"),
        meta=meta,
    )


def save_trace(trace: Trace, path) -> Path:
    """Write ``trace`` in the normalized CSV format (provenance header, then rows)."""
    path = Path(path)
    lines = [f"# testbed-trace: {FORMAT_VERSION}"]
    keys = [k for k in META_ORDER if k in trace.meta] + sorted(k for k in trace.meta if k not in META_ORDER)
    for key in keys:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(key)) or key in ("duration_s", "testbed-trace"):
            raise TraceError(f"meta key {key!r} cannot be written (use letters, digits, _ or -)", path)
        value = " ".join(str(trace.meta[key]).split())
        lines.append(f"# {key}: {value}")
    lines.append(f"# duration_s: {trace.duration:.10g}")
    columns = ["time_s", "down_mbps", "up_mbps"]
    data = [trace.times, trace.down_mbps, trace.up_mbps]
    for name in OPTIONAL_COLUMNS:
        if getattr(trace, name) is not None:
            columns.append(name)
            data.append(getattr(trace, name))
    lines.append(",".join(columns))
    for row in zip(*data, strict=True):
        lines.append(",".join(f"{v:.10g}" for v in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- Mahimahi --------------------------------------------------------------------------------------


def read_mahimahi(path: Path, lines: list[str], window: float = 0.1, **_) -> Parsed:
    """One integer ms timestamp per line = one 1500-byte delivery opportunity; binned into ``window`` s rates."""
    if not window > 0:
        raise TraceError(f"window must be > 0 s, got {window!r}", path)
    stamps: list[int] = []
    lineno = 0
    for lineno, line in data_lines(lines):
        try:
            ms = int(line)
        except ValueError:
            raise TraceError(
                f"timestamp {line!r} is not an integer number of milliseconds", path, lineno
            ) from None
        if ms < 0:
            raise TraceError(f"time {ms} ms is negative", path, lineno)
        if stamps and ms < stamps[-1]:
            raise TraceError(f"time {ms} ms is before previous time {stamps[-1]} ms", path, lineno)
        stamps.append(ms)
    require_rows(path, stamps, "timestamps")
    if stamps[-1] == 0:
        raise TraceError("trace has zero duration (last timestamp is 0 ms)", path, lineno)
    # Mahimahi loops with a period of the last timestamp; round it to whole windows.
    n_bins = max(1, round(stamps[-1] / 1000.0 / window))
    index = np.minimum((np.asarray(stamps) / 1000.0 / window + 1e-9).astype(int), n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    rates = counts * PACKET_BITS / 1e6 / window
    meta = {
        "derived": f"Mahimahi delivery opportunities (1500 B each) counted in {window:g} s bins; "
        f"period {stamps[-1]} ms rounded to {n_bins} bins"
    }
    return Parsed(
        list(np.round(np.arange(n_bins) * window, 9)), round(n_bins * window, 9), rates=list(rates), meta=meta
    )


# -- Pensieve "cooked" -------------------------------------------------------------------------------


def read_cooked(path: Path, lines: list[str], **_) -> Parsed:
    """Whitespace-separated ``time_s throughput_Mbps`` lines (Pensieve cooked traces)."""
    times: list[float] = []
    rates: list[float] = []
    lineno = 0
    for lineno, line in data_lines(lines):
        fields = line.split()
        if len(fields) != 2:
            raise TraceError(
                f"expected 2 whitespace-separated fields (time_s Mbit/s), got {len(fields)}", path, lineno
            )
        t = number(path, lineno, fields[0], "time")
        check_time(path, lineno, t, times[-1] if times else None)
        times.append(t)
        rates.append(rate_value(path, lineno, fields[1]))
    require_rows(path, times)
    return Parsed(times, last_step_duration(path, times, lineno), rates=rates)


# -- NYU-METS value,unit --------------------------------------------------------------------------------

UNIT_TO_MBPS = {"bits/sec": 1e-6, "kbits/sec": 1e-3, "mbits/sec": 1.0, "gbits/sec": 1e3}


def read_value_unit(path: Path, lines: list[str], **_) -> Parsed:
    """``value,unit`` per line, one line per second (NYU-METS); units bits/Kbits/Mbits/Gbits per sec."""
    rates: list[float] = []
    for lineno, line in data_lines(lines):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2:
            raise TraceError(f"expected 'value,unit', got {len(fields)} fields", path, lineno)
        factor = UNIT_TO_MBPS.get(fields[1].lower())
        if factor is None:
            raise TraceError(
                f"unknown unit {fields[1]!r} (expected one of bits/sec, Kbits/sec, Mbits/sec, Gbits/sec)",
                path,
                lineno,
            )
        rates.append(rate_value(path, lineno, fields[0]) * factor)
    require_rows(path, rates)
    return Parsed(
        [float(i) for i in range(len(rates))],
        float(len(rates)),
        rates=rates,
        meta={"derived": "one line per second; units converted to Mbit/s"},
    )


# -- timeInSeconds,BytesPerSecond -------------------------------------------------------------------------


def read_bytes_per_second(path: Path, lines: list[str], **_) -> Parsed:
    """Headerless ``time_s,bytes_per_second`` CSV; times shifted to start at 0."""
    times: list[float] = []
    rates: list[float] = []
    lineno = 0
    for lineno, line in data_lines(lines):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2:
            raise TraceError(f"expected 'time_s,bytes_per_second', got {len(fields)} fields", path, lineno)
        t = number(path, lineno, fields[0], "time")
        check_time(path, lineno, t, times[-1] if times else None)
        times.append(t)
        rates.append(rate_value(path, lineno, fields[1], "bytes/s") * 8 / 1e6)
    require_rows(path, times)
    return Parsed(
        times,
        last_step_duration(path, times, lineno),
        rates=rates,
        meta={"derived": "bytes/s x 8 / 1e6 = Mbit/s"},
    )


# -- CSV with a header: 5Gophers, G-NetTrack (Irish 5G) ------------------------------------------------


def _header(path: Path, lines: list[str]) -> tuple[int, list[str], list[tuple[int, list[str]]]]:
    rows = list(data_lines(lines))
    if not rows:
        raise TraceError("trace is empty", path)
    header_line, header = rows[0]
    return (
        header_line,
        [h.strip() for h in header.split(",")],
        [(n, [f.strip() for f in r.split(",")]) for n, r in rows[1:]],
    )


def read_5gophers(path: Path, lines: list[str], column: str | None = None, **_) -> Parsed:
    """5Gophers CSV: ``seq_num`` (s) and a ``*throughput_mbps`` column (choose with ``column=`` if several)."""
    header_line, header, rows = _header(path, lines)
    candidates = [h for h in header if h.endswith("throughput_mbps")]
    if column is None:
        if len(candidates) != 1:
            raise TraceError(
                f"several throughput columns {candidates}: choose one with column=", path, header_line
            )
        column = candidates[0]
    if column not in header:
        raise TraceError(f"no column {column!r} (have {header})", path, header_line)
    t_col, r_col = header.index("seq_num"), header.index(column)
    times: list[float] = []
    rates: list[float] = []
    lineno = header_line
    for lineno, fields in rows:
        if len(fields) < len(header):
            raise TraceError(f"expected {len(header)} fields, got {len(fields)}", path, lineno)
        t = number(path, lineno, fields[t_col], "seq_num")
        check_time(path, lineno, t, times[-1] if times else None)
        times.append(t)
        rates.append(rate_value(path, lineno, fields[r_col], column))
    require_rows(path, times)
    meta = {"derived": f"column {column}; seq_num as seconds, a missing second holds the previous rate"}
    return Parsed(times, times[-1] + 1.0, rates=rates, meta=meta)


def read_gnettrack(path: Path, lines: list[str], column: str | None = None, **_) -> Parsed:
    """G-NetTrack CSV (Irish 5G data set): ``Timestamp`` + ``DL_bitrate`` kbit/s; rows of one second averaged.

    Where the file has a ``PINGAVG`` column (ms, ``-`` = no ping in that row; G-NetTrack pings every
    ~14 s), it becomes the ``rtt_ms`` column: each sample holds until the next, and the first sample
    also covers the seconds before it.
    """
    header_line, header, rows = _header(path, lines)
    column = column or "DL_bitrate"
    if "Timestamp" not in header or column not in header:
        raise TraceError(f"need columns Timestamp and {column}", path, header_line)
    t_col, r_col = header.index("Timestamp"), header.index(column)
    ping_col = header.index("PINGAVG") if "PINGAVG" in header else None
    seconds: list[float] = []
    sums: list[float] = []
    counts: list[int] = []
    pings: list[list[float]] = []
    start = None
    for lineno, fields in rows:
        if len(fields) != len(header):
            raise TraceError(f"expected {len(header)} fields, got {len(fields)}", path, lineno)
        try:
            stamp = datetime.strptime(fields[t_col], "%Y.%m.%d_%H.%M.%S").timestamp()
        except ValueError:
            raise TraceError(
                f"Timestamp {fields[t_col]!r} is not YYYY.MM.DD_hh.mm.ss", path, lineno
            ) from None
        start = stamp if start is None else start
        t = stamp - start
        value = rate_value(path, lineno, fields[r_col], column) / 1000.0
        ping = None
        if ping_col is not None and fields[ping_col] not in ("-", ""):
            ping = rate_value(path, lineno, fields[ping_col], "PINGAVG")
        if seconds and t == seconds[-1]:
            sums[-1] += value
            counts[-1] += 1
        else:
            check_time(path, lineno, t, seconds[-1] if seconds else None)
            seconds.append(t)
            sums.append(value)
            counts.append(1)
            pings.append([])
        if ping is not None:
            pings[-1].append(ping)
    require_rows(path, seconds)
    rates = [s / c for s, c in zip(sums, counts, strict=True)]
    derived = (
        f"{column} kbit/s -> Mbit/s; rows of the same second averaged; "
        "a missing second holds the previous rate (no sample, not zero)"
    )
    rtt = _held_samples(pings)
    if rtt is not None:
        derived += (
            "; rtt_ms from PINGAVG (ms, one ping sample every ~14 s): each sample holds until the next, "
            "the first also covers the seconds before it"
        )
    return Parsed(seconds, seconds[-1] + 1.0, rates=rates, rtt=rtt, meta={"derived": derived})


def _held_samples(samples: list[list[float]]) -> list[float] | None:
    """Per-row value from sparse samples (mean of a row's samples, else the last one before; the first
    sample fills the rows before it); None when there is no sample at all."""
    means = [sum(s) / len(s) if s else None for s in samples]
    first = next((m for m in means if m is not None), None)
    if first is None:
        return None
    out, last = [], first
    for m in means:
        last = m if m is not None else last
        out.append(last)
    return out


# -- Ghent JSON (ReCoCo / AlphaRTC-gym layout) ------------------------------------------------------------


def read_ghent_json(path: Path, lines: list[str], **_) -> Parsed:
    """``{"uplink"|"downlink": {"trace_pattern": [{time (s, end), duration (ms), capacity (bytes/ms)}]}}``."""
    try:
        doc = json.loads("\n".join(lines))
    except json.JSONDecodeError as exc:
        raise TraceError(f"invalid JSON: {exc.msg}", path, exc.lineno) from None
    patterns = {}
    for key in ("downlink", "uplink"):
        part = doc.get(key) if isinstance(doc, dict) else None
        if isinstance(part, dict) and part.get("trace_pattern"):
            patterns[key] = part["trace_pattern"]
    if not patterns:
        raise TraceError("no non-empty downlink/uplink trace_pattern", path, 1)
    key, pattern = next(iter(patterns.items()))
    starts: list[float] = []
    rates: list[float] = []
    end = None
    for i, sample in enumerate(pattern):
        where = f"{key}.trace_pattern[{i}]"
        try:
            t, dur, cap = (float(sample[k]) for k in ("time", "duration", "capacity"))
        except (KeyError, TypeError, ValueError):
            raise TraceError(f"{where}: needs numeric time, duration and capacity", path) from None
        if not (math.isfinite(cap) and cap >= 0):
            raise TraceError(f"{where}: capacity {cap!r} must be a finite number >= 0", path)
        start = end if end is not None else t - dur / 1000.0
        if start < 0 or t <= start:
            raise TraceError(f"{where}: time {t:g} is not after previous time {start:g}", path)
        starts.append(start)
        rates.append(cap * 8 / 1000.0)
        end = t
    meta = {
        "derived": f"{key} trace_pattern; capacity bytes/ms x 8 / 1000 = Mbit/s; each sample spans the "
        "interval ending at its time"
    }
    return Parsed(starts, end, rates=rates, meta=meta)


# -- srsRAN srsUE console log (AERPAW) ---------------------------------------------------------------------

SRS_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)\]\s?(.*)$")
SI_SUFFIX = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}


def si_number(path: Path, lineno: int, text: str, what: str) -> float:
    match = re.fullmatch(r"([0-9.]+)([kMG]?)", text)
    if not match:
        raise TraceError(f"{what} {text!r} is not a number with an optional k/M/G suffix", path, lineno)
    return number(path, lineno, match.group(1), what) * SI_SUFFIX[match.group(2)]


def read_srsue(path: Path, lines: list[str], gap_s: float = 1.5, **_) -> Parsed:
    """srsUE metrics log: one line a second with UL ``brate`` (bit/s); a gap over ``gap_s`` is a 0 outage."""
    times: list[float] = []
    rates: list[float] = []
    start_stamp = None
    previous = None
    for lineno, line in enumerate(lines, 1):
        match = SRS_LINE.match(line)
        if not match:
            continue
        body = match.group(2)
        parts = body.split("|")
        if len(parts) != 3 or not parts[0].split() or not parts[0].split()[0].isdigit():
            continue  # event line or column header
        ul = parts[2].split()
        if len(ul) != 4:
            raise TraceError(
                f"UL metrics {parts[2].strip()!r} should have 4 fields (mcs buff brate bler)", path, lineno
            )
        stamp = datetime.fromisoformat(match.group(1)).timestamp()
        start_stamp = stamp if start_stamp is None else start_stamp
        t = round(stamp - start_stamp, 3)
        check_time(path, lineno, t, previous)
        if previous is not None and t - previous > gap_s:
            times.append(round(previous + 1.0, 3))
            rates.append(0.0)
        times.append(t)
        rates.append(si_number(path, lineno, ul[2], "UL brate") / 1e6)
        previous = t
    require_rows(path, times, "srsUE metrics lines")
    meta = {
        "derived": f"UL brate (bit/s) of each srsUE metrics line; a gap over {gap_s:g} s between lines = 0 Mbit/s "
        "(UE disconnected)",
        "clock_start": datetime.fromtimestamp(start_stamp).isoformat(sep=" "),
    }
    return Parsed(times, round(times[-1] + 1.0, 3), rates=rates, measured="up", meta=meta)


# -- detection and loading --------------------------------------------------------------------------------

READERS = {
    "csv": read_normalized,
    "mahimahi": read_mahimahi,
    "cooked": read_cooked,
    "value-unit": read_value_unit,
    "bytes-csv": read_bytes_per_second,
    "5gophers": read_5gophers,
    "gnettrack": read_gnettrack,
    "ghent-json": read_ghent_json,
    "srsue": read_srsue,
}
FORMATS = tuple(READERS)
NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def detect_format(path: Path, lines: list[str]) -> str:
    """Guess the format from the first meaningful lines."""
    head = [(n, line) for n, line in data_lines(lines[:200])]
    if not head:
        raise TraceError("trace is empty", path)
    lineno, first = head[0]
    first_fields = [f.strip() for f in first.split(",")]
    if first.startswith("{"):
        return "ghent-json"
    if first.startswith("#") or first_fields[0] == "time_s":
        return "csv"
    if first_fields[0] == "Timestamp" and "DL_bitrate" in first_fields:
        return "gnettrack"
    if "seq_num" in first_fields and any(f.endswith("throughput_mbps") for f in first_fields):
        return "5gophers"
    if any(SRS_LINE.match(line) for _, line in head):
        return "srsue"
    if re.fullmatch(r"\d+", first):
        return "mahimahi"
    if re.fullmatch(rf"{NUM}\s*,\s*[A-Za-z]*bits/sec", first):
        return "value-unit"
    if re.fullmatch(rf"{NUM}\s*,\s*{NUM}", first):
        return "bytes-csv"
    if re.fullmatch(rf"{NUM}\s+{NUM}", first):
        return "cooked"
    raise TraceError(
        f"unrecognised trace format (line {first[:60]!r}); pass fmt= one of {', '.join(FORMATS)}",
        path,
        lineno,
    )


def load_trace(
    path, fmt: str | None = None, window: float = 0.1, direction: str | None = None, column: str | None = None
) -> Trace:
    """Read a trace file in any known format (auto-detected unless ``fmt`` is given).

    One-direction sources fill both directions with the same series; ``direction='down'|'up'`` says which
    direction the file measured (kept in ``meta['measured']``; :func:`combine` pairs two such files).
    ``window`` bins Mahimahi traces; ``column`` picks a CSV column (5Gophers carriers, G-NetTrack).
    """
    path = Path(path)
    if fmt is not None and fmt not in READERS:
        raise TraceError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}", path)
    if direction is not None and direction not in DIRECTIONS:
        raise TraceError(f"direction must be 'down' or 'up', got {direction!r}", path)
    lines = read_lines(path)
    fmt = fmt or detect_format(path, lines)
    parsed = READERS[fmt](path, lines, window=window, column=column)
    return build_trace(path, fmt, parsed, direction)


def build_trace(path: Path, fmt: str, parsed: Parsed, direction: str | None) -> Trace:
    times = np.asarray(parsed.times, dtype=np.float64)
    offset = times[0]
    meta = dict(parsed.meta)
    if fmt != "csv":
        meta.setdefault("original_files", path.name)
        meta["format"] = fmt
        if offset:
            meta["derived"] = (meta.get("derived", "") + f"; times shifted by -{offset:g} s").lstrip("; ")
    if parsed.rates is not None:
        measured = direction or parsed.measured
        other = "up" if measured == "down" else "down"
        meta["measured"] = measured
        meta.setdefault("note", f"one-direction source: the {measured} series is also used for {other}")
        down = up = parsed.rates
    else:
        down, up = parsed.down, parsed.up
    try:
        return Trace(
            times - offset,
            np.asarray(down, dtype=np.float64),
            np.asarray(up, dtype=np.float64),
            parsed.duration - offset,
            rtt_ms=None if parsed.rtt is None else np.asarray(parsed.rtt, dtype=np.float64),
            loss=None if parsed.loss is None else np.asarray(parsed.loss, dtype=np.float64),
            meta=meta,
        )
    except TraceError as exc:
        raise TraceError(exc.message, path) from None

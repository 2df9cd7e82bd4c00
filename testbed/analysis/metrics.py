"""Records -> per-session metrics -> per (cell, strategy) means with 95% confidence intervals.

Reads only result files: ``records.jsonl``, ``replay.csv`` and the runner's ``unit.json`` /
``done.json`` in each unit folder. Definitions (per session, i.e. one strategy x cell x repeat):

* requests: records in the session;
* answered: outcome in {device_exit, cloud, fallback_exit} (not timeout / failed);
* availability: answered / requests;
* timely accuracy, the headline ("acc. all reqs"): (correct and latency <= deadline) / ALL requests,
  so a missed deadline or an unanswered request counts as wrong;
* accuracy ("acc. answered"): correct / answered requests only -- high even when most requests missed;
* latency p50/p95/p99 (ms): over answered requests;
* throughput (req/s): answered / (last t_finish - first t_arrival); goodput: on-time answers / same span;
* deadline-miss rate: requests not answered within their deadline / requests;
* outage windows: intervals where replay.csv's gate != open on any link/direction; outage
  availability / accuracy count the requests that *arrived* in such a window (unanswered = wrong);
* device energy (J per request, and total), cloud compute (s total, ms per request).

Confidence intervals: mean over repeats +- t(0.975, n-1) * sd / sqrt(n); NaN with one repeat.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ANSWERED = ("device_exit", "cloud", "fallback_exit")
LOCAL = ("device_exit", "fallback_exit")

# column -> (header, format) in display order
COLUMNS: dict[str, tuple[str, str]] = {
    "requests": ("requests", "{:.0f}"),
    "timely_accuracy": ("acc. all reqs", "{:.3f}"),  # correct and on time / all requests: the headline
    "accuracy": ("acc. answered", "{:.3f}"),  # correct / answered only: read next to the miss rate
    "latency_p50_ms": ("p50 ms", "{:.1f}"),
    "latency_p95_ms": ("p95 ms", "{:.1f}"),
    "latency_p99_ms": ("p99 ms", "{:.1f}"),
    "throughput_rps": ("thr. req/s", "{:.2f}"),
    "goodput_rps": ("on-time req/s", "{:.2f}"),
    "deadline_miss_rate": ("miss rate", "{:.3f}"),
    "availability": ("avail.", "{:.3f}"),
    "outage_requests": ("outage req.", "{:.0f}"),
    "outage_availability": ("outage avail.", "{:.3f}"),
    "outage_accuracy": ("outage acc.", "{:.3f}"),
    "local_fraction": ("local frac.", "{:.3f}"),
    "energy_j_per_req": ("energy J/req", "{:.4f}"),
    "device_energy_j": ("energy J", "{:.2f}"),
    "cloud_compute_s": ("cloud s", "{:.3f}"),
    "cloud_ms_per_req": ("cloud ms/req", "{:.2f}"),
    "kb_up_per_req": ("kB up/req", "{:.1f}"),
}
SUMMARY_COLUMNS = ("requests", "timely_accuracy", "deadline_miss_rate", "goodput_rps", "latency_p50_ms",
                   "latency_p95_ms", "accuracy", "availability", "outage_accuracy", "energy_j_per_req",
                   "cloud_ms_per_req")
HEADLINE_NOTE = ("acc. all reqs = answered correctly within the deadline / all requests (misses and timeouts count "
                 "as wrong); acc. answered = correct / answered requests only.")


@dataclass
class Unit:
    """One session's result files."""

    path: Path
    info: dict
    records: list[dict]
    replay: list[dict]
    done: dict | None = None
    metrics: dict = field(default_factory=dict)

    @property
    def cell_id(self) -> str:
        return self.info.get("cell_id", "c00")

    @property
    def strategy(self) -> str:
        return self.info.get("strategy_label") or self.info.get("settings", {}).get("strategy", "?")

    @property
    def repeat(self) -> int:
        return int(self.info.get("repeat", 0))


# ---------------------------------------------------------------------------- reading
def read_records(path: str | Path) -> list[dict]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def read_replay(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key in ("scheduled_s", "applied_s", "trace_mbps", "rate_mbps", "loss_pct"):
                if key in row and row[key] not in (None, ""):
                    try:
                        row[key] = float(row[key])
                    except ValueError:
                        row[key] = math.nan
            rows.append(row)
    return rows


def load_unit(path: str | Path) -> Unit | None:
    """A completed unit folder (``done.json`` present), or None."""
    path = Path(path)
    if not (path / "done.json").exists() or not (path / "records.jsonl").exists():
        return None
    info = json.loads((path / "unit.json").read_text()) if (path / "unit.json").exists() else {}
    return Unit(path=path, info=info, records=read_records(path / "records.jsonl"),
                replay=read_replay(path / "replay.csv"), done=json.loads((path / "done.json").read_text()))


def load_units(run_dir: str | Path) -> list[Unit]:
    run_dir = Path(run_dir)
    units = []
    for done in sorted(run_dir.glob("cells/*/*/r*/done.json")):
        unit = load_unit(done.parent)
        if unit is not None:
            unit.metrics = session_metrics(unit.records, unit.replay, unit.info.get("settings", {}))
            units.append(unit)
    units.sort(key=lambda u: (u.info.get("cell_index", 0), u.cell_id, u.strategy, u.repeat))
    return units


# ---------------------------------------------------------------------------- outages
def outage_windows(replay: list[dict], end: float | None = None) -> list[tuple[float, float]]:
    """Merged [start, end) windows in which some link direction's gate was not open."""
    by_port: dict[tuple, list[dict]] = {}
    for row in replay:
        by_port.setdefault((row.get("link"), row.get("direction")), []).append(row)
    windows = []
    for rows in by_port.values():
        rows.sort(key=lambda r: r["applied_s"])
        for i, row in enumerate(rows):
            if str(row.get("gate", "open")).strip().lower() in ("open", ""):
                continue
            start = row["applied_s"]
            stop = rows[i + 1]["applied_s"] if i + 1 < len(rows) else (end if end is not None else math.inf)
            if stop > start:
                windows.append((start, stop))
    windows.sort()
    merged: list[list[float]] = []
    for a, b in windows:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def in_windows(t: float, windows: list[tuple[float, float]]) -> bool:
    return any(a <= t < b for a, b in windows)


# ---------------------------------------------------------------------------- per session
def _num(r: dict, key: str) -> float:
    v = r.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


def answered(r: dict) -> bool:
    return r.get("outcome") in ANSWERED and r.get("latency_s") is not None


def on_time(r: dict, default_deadline: float | None = None) -> bool:
    deadline = r.get("deadline_s", default_deadline)
    return answered(r) and (deadline is None or float(r["latency_s"]) <= float(deadline))


def session_metrics(records: list[dict], replay: list[dict] | None = None, settings: dict | None = None) -> dict:
    settings = settings or {}
    n = len(records)
    nan = math.nan
    if n == 0:
        return {k: (0.0 if k == "requests" else nan) for k in COLUMNS}
    ok = [r for r in records if answered(r)]
    lat_ms = np.array([float(r["latency_s"]) * 1000 for r in ok]) if ok else np.array([])
    correct = [bool(r.get("correct")) for r in ok]
    deadline = settings.get("deadline_s")
    timely = [on_time(r, deadline) for r in records]
    t_start = min(_num(r, "t_arrival") for r in records)
    t_end = max((_num(r, "t_finish") for r in ok), default=t_start)
    span = t_end - t_start
    if span <= 0:
        span = float(settings.get("duration_s") or nan)
    windows = outage_windows(replay or [], end=max(_num(r, "t_finish") for r in records) + 1)
    during = [r for r in records if in_windows(_num(r, "t_arrival"), windows)]
    energy = sum(_num(r, "energy_j") for r in records)
    cloud = sum(_num(r, "cloud_compute_s") for r in records)

    def pct(q):
        return float(np.percentile(lat_ms, q)) if len(lat_ms) else nan

    return {
        "requests": float(n),
        "accuracy": float(np.mean(correct)) if ok else nan,
        "timely_accuracy": float(np.mean([t and bool(r.get("correct")) for t, r in zip(timely, records)])),
        "latency_p50_ms": pct(50),
        "latency_p95_ms": pct(95),
        "latency_p99_ms": pct(99),
        "throughput_rps": len(ok) / span if span and span > 0 else nan,
        "goodput_rps": sum(timely) / span if span and span > 0 else nan,
        "deadline_miss_rate": 1.0 - float(np.mean(timely)),
        "availability": len(ok) / n,
        "outage_requests": float(len(during)),
        "outage_availability": (sum(answered(r) for r in during) / len(during)) if during else nan,
        "outage_accuracy": (sum(answered(r) and bool(r.get("correct")) for r in during) / len(during))
        if during else nan,
        "local_fraction": sum(r.get("outcome") in LOCAL for r in records) / n,
        "energy_j_per_req": energy / n,
        "device_energy_j": energy,
        "cloud_compute_s": cloud,
        "cloud_ms_per_req": cloud / n * 1000,
        "kb_up_per_req": sum(_num(r, "bytes_up") for r in records) / n / 1000,
    }


def accuracy_within(records: list[dict], bound_s: float) -> float:
    """Fraction of requests answered correctly within ``bound_s`` seconds (post-hoc latency bound)."""
    if not records:
        return math.nan
    return sum(answered(r) and bool(r.get("correct")) and float(r["latency_s"]) <= bound_s
               for r in records) / len(records)


# ---------------------------------------------------------------------------- over repeats
def t_quantile(df: int, q: float = 0.975) -> float:
    try:
        from scipy import stats

        return float(stats.t.ppf(q, df))
    except ImportError:  # pragma: no cover - scipy ships with scikit-learn
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
                 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
        return table.get(df, table[max(k for k in table if k <= df)] if df > 1 else 12.706)


def mean_ci(values: list[float]) -> tuple[float, float, int]:
    """(mean, 95% CI half-width, n) over the finite values; half-width NaN when n < 2."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    if len(v) == 1:
        return float(v[0]), math.nan, 1
    return float(v.mean()), float(t_quantile(len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))), len(v)


@dataclass
class Row:
    """One (cell, strategy) line of the metrics table."""

    cell_id: str
    cell_values: dict
    strategy: str
    repeats: int
    mean: dict
    ci: dict
    units: list[Unit]


def aggregate(units: list[Unit]) -> list[Row]:
    groups: dict[tuple[str, str], list[Unit]] = {}
    for u in units:
        groups.setdefault((u.cell_id, u.strategy), []).append(u)
    rows = []
    for (cell, strat), us in groups.items():
        mean, ci = {}, {}
        for col in COLUMNS:
            m, h, _ = mean_ci([u.metrics.get(col, math.nan) for u in us])
            mean[col], ci[col] = m, h
        rows.append(Row(cell_id=cell, cell_values=us[0].info.get("cell_values", {}), strategy=strat,
                        repeats=len(us), mean=mean, ci=ci, units=us))
    return rows

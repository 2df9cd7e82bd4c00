"""Figures (PNG + PDF, matplotlib Agg) from result files only.

* ``latency_cdf``: per-request latency CDF per strategy (one panel per cell, up to 6 cells);
* ``timeline``: trace bandwidth and applied rate (outages shaded) over per-request latency and the
  chosen exit / split, one panel per strategy (first repeat of each cell, up to 3 cells);
* ``throughput_vs_bandwidth``: throughput against the cells' mean uplink trace rate (sweeps only);
* ``accuracy_vs_latency_bound``: fraction answered correctly within a latency bound, per strategy;
* ``availability_outage``: availability overall vs during outage windows, and accuracy in outages.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from testbed.analysis.metrics import Row, Unit, accuracy_within, answered, outage_windows

MAX_CELLS = 6


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.tight_layout()
    for p in paths:
        fig.savefig(p, dpi=130)
    _plt().close(fig)
    return paths


def _cells(units: list[Unit]) -> list[str]:
    return list(dict.fromkeys(u.cell_id for u in units))  # first-seen order


def _strategies(units: list[Unit]) -> list[str]:
    return list(dict.fromkeys(u.strategy for u in units))


def _colors(names: list[str]) -> dict[str, str]:
    cmap = _plt().get_cmap("tab10")
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def _panels(n: int, width: float = 4.5, height: float = 3.2):
    plt = _plt()
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def latency_cdf(units: list[Unit], out_dir: Path) -> list[Path]:
    cells = _cells(units)[:MAX_CELLS]
    strategies = _strategies(units)
    colors = _colors(strategies)
    fig, axes = _panels(len(cells))
    for ax, cell in zip(axes, cells):
        for s in strategies:
            lat = np.sort([float(r["latency_s"]) * 1000 for u in units if u.cell_id == cell and u.strategy == s
                           for r in u.records if answered(r)])
            if len(lat):
                ax.step(lat, np.arange(1, len(lat) + 1) / len(lat), where="post", label=s, color=colors[s])
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, answered requests)")
        ax.set_ylabel("CDF")
        ax.set_title(cell, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save(fig, out_dir, "latency_cdf")


def _replay_series(unit: Unit, direction: str = "up"):
    rows = [r for r in unit.replay if r.get("direction") == direction]
    if not rows:
        return None
    link = rows[0].get("link")
    rows = sorted((r for r in rows if r.get("link") == link), key=lambda r: r["applied_s"])
    t = np.array([r["applied_s"] for r in rows])
    return link, t, np.array([r.get("trace_mbps", np.nan) for r in rows]), np.array(
        [r.get("rate_mbps", np.nan) for r in rows])


def timeline(units: list[Unit], out_dir: Path) -> list[Path]:
    plt = _plt()
    paths = []
    for cell in _cells(units)[:3]:
        first = {}
        for u in units:
            if u.cell_id == cell and u.strategy not in first:
                first[u.strategy] = u
        strategies = list(first)
        fig, axes = plt.subplots(len(strategies) + 1, 1, figsize=(10, 1.9 * (len(strategies) + 1)), sharex=True)
        top = axes[0]
        ref = next(iter(first.values()))
        end = max((float(r.get("t_finish") or r.get("t_arrival") or 0) for r in ref.records), default=0) + 1
        windows = outage_windows(ref.replay, end=end)
        for d, style in (("up", "-"), ("down", "--")):
            series = _replay_series(ref, d)
            if series:
                link, t, trace, _rate = series
                top.step(t, trace, where="post", ls=style, lw=1, label=f"{link} {d}link trace")
        top.set_ylabel("Mbit/s")
        top.legend(fontsize=7, loc="upper right")
        for ax, s in zip(axes[1:], strategies):
            recs = first[s].records
            for outcome, marker in (("device_exit", "o"), ("cloud", "s"), ("fallback_exit", "^")):
                pts = [(r["t_arrival"], float(r["latency_s"]) * 1000) for r in recs
                       if r.get("outcome") == outcome and r.get("latency_s") is not None]
                if pts:
                    ax.scatter(*zip(*pts), s=8, marker=marker, label=outcome)
            lost = [r["t_arrival"] for r in recs if not answered(r)]
            if lost:
                ax.scatter(lost, [1.0] * len(lost), s=12, marker="x", color="red", label="timeout/failed")
            ax.set_yscale("log")
            ax.set_ylabel(f"{s}\nlatency ms", fontsize=8)
            twin = ax.twinx()
            pts = sorted((r["t_arrival"], r.get("split")) for r in recs if isinstance(r.get("split"), (int, float)))
            if pts:
                twin.step(*zip(*pts), where="post", color="gray", lw=0.8, alpha=0.7)
            ex = sorted((r["t_arrival"], r.get("exit_index")) for r in recs
                        if isinstance(r.get("exit_index"), (int, float)))
            if ex:
                twin.scatter(*zip(*ex), s=3, color="black", alpha=0.4)
            twin.set_ylabel("split (line)\nexit (dots)", fontsize=7)
            ax.legend(fontsize=6, loc="upper left", ncol=4)
        for ax in axes:
            for a, b in windows:
                ax.axvspan(a, min(b, end), color="red", alpha=0.12)
        axes[-1].set_xlabel("time since replay start (s); red = outage (gate closed)")
        fig.suptitle(f"{cell}: link vs per-request latency and chosen split/exit", fontsize=10)
        paths += save(fig, out_dir, f"timeline_{cell}")
    return paths


def _errorbar_lines(ax, rows: list[Row], x_of, metric: str, colors: dict):
    """Means with 95 % CIs per strategy; overlapping CIs shaded as one; y axis from zero."""
    for s in colors:
        pts = sorted((x_of(r), r.mean[metric], r.ci[metric]) for r in rows if r.strategy == s and x_of(r) is not None)
        if pts:
            x, y, e = zip(*pts)
            e = [0 if not math.isfinite(v) else v for v in e]
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=s, color=colors[s])
    by_x: dict[float, list[tuple[float, float]]] = {}
    for r in rows:
        if x_of(r) is not None and math.isfinite(r.mean[metric]):
            by_x.setdefault(x_of(r), []).append((r.mean[metric], r.ci[metric]))
    mark_indistinguishable(ax, by_x)
    honest_ylim(ax, [(m, h) for values in by_x.values() for m, h in values])


def overlapping_group(values: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(low, high) spanned by the means whose 95 % CIs overlap the best one's, if at least two do.

    Differences inside the CI are not differences: a figure draws them as one band. Without a CI
    (one repeat) nothing can be called different or equal, so nothing is marked.
    """
    if len(values) < 2 or not all(math.isfinite(h) for _, h in values):
        return None
    best_mean, best_ci = max(values, key=lambda v: v[0])
    same = [(m, h) for m, h in values if m + h >= best_mean - best_ci and m - h <= best_mean + best_ci]
    if len(same) < 2:
        return None
    return min(m - h for m, h in same), max(m + h for m, h in same)


def mark_indistinguishable(ax, by_x: dict) -> None:
    """A grey band with 'n.s.' where the best strategies' CIs overlap at an x."""
    xs = sorted(by_x)
    width = 0.04 * ((xs[-1] - xs[0]) or 1.0) if xs else 0.0
    labelled = False
    for x in xs:
        group = overlapping_group(by_x[x])
        if group:
            ax.fill_between([x - width, x + width], group[0], group[1], color="0.6", alpha=0.3, lw=0,
                            label=None if labelled else "CIs overlap (n.s.)")
            ax.annotate("n.s.", (x, group[1]), ha="center", va="bottom", fontsize=7, color="0.35")
            labelled = True


def honest_ylim(ax, values: list[tuple[float, float]]) -> None:
    """Non-negative metrics start at zero, so noise between close values cannot read as a trend."""
    finite = [(m, h if math.isfinite(h) else 0.0) for m, h in values if math.isfinite(m)]
    if not finite:
        return
    low = min(m - h for m, h in finite)
    high = max(m + h for m, h in finite)
    if low >= 0:
        ax.set_ylim(0, high * 1.1 if high > 0 else 1.0)


def mean_uplink(row: Row) -> float | None:
    vals = [v for u in row.units for k, v in u.info.get("trace_mean_mbps", {}).items() if k.endswith(".up")]
    return float(np.mean(vals)) if vals else None


def throughput_vs_bandwidth(rows: list[Row], out_dir: Path) -> list[Path]:
    if len({r.cell_id for r in rows}) < 2 or all(mean_uplink(r) is None for r in rows):
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    _errorbar_lines(ax, rows, mean_uplink, "throughput_rps", _colors(sorted({r.strategy for r in rows})))
    ax.set_xlabel("mean uplink trace bandwidth (Mbit/s)")
    ax.set_ylabel("throughput (answered req/s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, out_dir, "throughput_vs_bandwidth")


def accuracy_vs_latency_bound(units: list[Unit], out_dir: Path) -> list[Path]:
    strategies = _strategies(units)
    colors = _colors(strategies)
    lat = [float(r["latency_s"]) for u in units for r in u.records if answered(r)]
    if not lat:
        return []
    bounds = np.geomspace(max(min(lat), 1e-3), max(lat) * 1.05, 40)
    cells = _cells(units)[:MAX_CELLS]
    fig, axes = _panels(len(cells))
    for ax, cell in zip(axes, cells):
        for s in strategies:
            recs = [r for u in units if u.cell_id == cell and u.strategy == s for r in u.records]
            if recs:
                ax.plot(bounds * 1000, [accuracy_within(recs, b) for b in bounds], label=s, color=colors[s])
        ax.set_xscale("log")
        ax.set_xlabel("latency bound (ms)")
        ax.set_ylabel("accuracy within bound")
        ax.set_title(cell, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save(fig, out_dir, "accuracy_vs_latency_bound")


def availability_outage(rows: list[Row], out_dir: Path) -> list[Path]:
    if not any(math.isfinite(r.mean["outage_requests"]) and r.mean["outage_requests"] > 0 for r in rows):
        return []
    plt = _plt()
    strategies = sorted({r.strategy for r in rows}, key=[r.strategy for r in rows].index)
    metrics = [("availability", "availability (all)"), ("outage_availability", "availability in outage"),
               ("outage_accuracy", "accuracy in outage")]
    fig, ax = plt.subplots(figsize=(1.6 * len(strategies) + 2, 4))
    width = 0.8 / len(metrics)
    for i, (m, label) in enumerate(metrics):
        vals, errs = [], []
        for s in strategies:
            rs = [r for r in rows if r.strategy == s]
            v = [r.mean[m] for r in rs if math.isfinite(r.mean[m])]
            vals.append(float(np.mean(v)) if v else 0.0)
            e = [r.ci[m] for r in rs if math.isfinite(r.ci[m])]
            errs.append(float(np.mean(e)) if e else 0.0)
        ax.bar(np.arange(len(strategies)) + i * width, vals, width, yerr=errs, capsize=3, label=label)
    ax.set_xticks(np.arange(len(strategies)) + width, strategies, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction of requests")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, out_dir, "availability_outage")


def all_figures(units: list[Unit], rows: list[Row], out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    if not units:
        return []
    paths = []
    for fn, arg in ((latency_cdf, units), (timeline, units), (throughput_vs_bandwidth, rows),
                    (accuracy_vs_latency_bound, units), (availability_outage, rows)):
        paths += fn(arg, out_dir)
    return paths

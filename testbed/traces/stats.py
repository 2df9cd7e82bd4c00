"""Time-weighted summary statistics of a trace, per direction."""

from __future__ import annotations

import numpy as np

from testbed.traces.model import DIRECTIONS, Trace

OUTAGE_MBPS = 0.1  # "near-zero" threshold used for the outage fraction and longest outage
PERCENTILES = (5, 25, 50, 75, 95)


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The value below which a fraction ``q/100`` of the total weight (time) lies."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    i = int(np.searchsorted(cumulative, q / 100.0 * cumulative[-1] - 1e-12, side="left"))
    return float(values[order][min(i, len(values) - 1)])


def direction_stats(trace: Trace, direction: str) -> dict:
    rates = trace.rates(direction)
    weights = np.diff(np.append(trace.times, trace.duration))
    result = {
        "duration": trace.duration,
        "mean": float(np.sum(rates * weights) / trace.duration),
        **{f"p{q}": weighted_percentile(rates, weights, q) for q in PERCENTILES},
        "min": float(rates.min()),
        "max": float(rates.max()),
        "zero_frac": float(weights[rates == 0].sum() / trace.duration),
        "outage_frac": float(weights[rates < OUTAGE_MBPS].sum() / trace.duration),
    }
    zero = trace.outages(direction, 0.0)
    near_zero = trace.outages(direction, OUTAGE_MBPS)
    result["longest_zero_s"] = max((e - s for s, e in zero), default=0.0)
    result["longest_outage_s"] = max((e - s for s, e in near_zero), default=0.0)
    return result


def stats(trace: Trace) -> dict:
    """``{'down': {...}, 'up': {...}}`` with duration, mean, p5..p95, min, max,
    ``zero_frac`` (rate == 0), ``outage_frac`` (rate < 0.1 Mbit/s), ``longest_zero_s``, ``longest_outage_s``."""
    return {direction: direction_stats(trace, direction) for direction in DIRECTIONS}


TABLE_COLUMNS = ("mean", "p5", "p50", "p95", "min", "max", "zero_frac", "outage_frac", "longest_outage_s")
TABLE_HEADERS = ("mean", "p5", "p50", "p95", "min", "max", "=0", "<0.1", "longest <0.1 s")


def stats_rows(name: str, trace: Trace) -> list[list[str]]:
    """Table rows (one per direction) for :func:`format_table`."""
    rows = []
    for direction, values in stats(trace).items():
        cells = [name, direction, f"{trace.duration:g}"]
        for key in TABLE_COLUMNS:
            value = values[key]
            if key.endswith("frac"):
                cells.append(f"{value:.3f}")
            elif key.startswith("longest"):
                cells.append(f"{value:.1f}")
            else:
                cells.append(f"{value:.2f}")
        rows.append(cells)
    return rows


def format_table(rows: list[list[str]], markdown: bool = False) -> str:
    """Render stats rows as an aligned text table or a Markdown table."""
    headers = ["trace", "dir", "duration s", *TABLE_HEADERS]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*row) for row in [headers, *rows])

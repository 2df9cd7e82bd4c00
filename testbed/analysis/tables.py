"""The metrics table as CSV (mean and CI columns), Markdown (mean +- CI) and console text."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from testbed.analysis.metrics import COLUMNS, HEADLINE_NOTE, SUMMARY_COLUMNS, Row


def _cell_text(row: Row) -> str:
    if not row.cell_values:
        return row.cell_id
    return ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in row.cell_values.items())


def _short(v) -> str:
    if isinstance(v, dict):
        if "file" in v:
            return Path(str(v["file"])).stem
        if "constant" in v:
            c = v["constant"]
            return f"{c.get('up', 0):g}/{c.get('down', 0):g}Mbps"
        return "{...}"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _fmt(value: float, fmt: str) -> str:
    return "-" if value is None or not math.isfinite(value) else fmt.format(value)


def write_csv(rows: list[Row], path: str | Path) -> Path:
    path = Path(path)
    axes = sorted({k for r in rows for k in r.cell_values})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell", *axes, "strategy", "repeats"] + [c for col in COLUMNS for c in (col, f"{col}_ci95")])
        for r in rows:
            w.writerow([r.cell_id, *[_short(r.cell_values.get(a, "")) for a in axes], r.strategy, r.repeats]
                       + [x for col in COLUMNS for x in (_num(r.mean[col]), _num(r.ci[col]))])
    return path


def _num(v: float) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.6g}"


def markdown(rows: list[Row], columns=tuple(COLUMNS)) -> str:
    headers = ["cell", "strategy", "n"] + [COLUMNS[c][0] for c in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        cells = [_cell_text(r), r.strategy, str(r.repeats)]
        for c in columns:
            m, h = r.mean[c], r.ci[c]
            text = _fmt(m, COLUMNS[c][1])
            if h is not None and math.isfinite(h) and text != "-":
                text += " ± " + COLUMNS[c][1].format(h)
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(rows: list[Row], columns=SUMMARY_COLUMNS) -> str:
    """Aligned console table (means; ± CI when there are repeats)."""
    headers = ["cell", "strategy"] + [COLUMNS[c][0] for c in columns]
    body = []
    for r in rows:
        line = [_cell_text(r)[:28], r.strategy]
        for c in columns:
            text = _fmt(r.mean[c], COLUMNS[c][1])
            if math.isfinite(r.ci[c]) and text != "-":
                text += "±" + COLUMNS[c][1].format(r.ci[c])
            line.append(text)
        body.append(line)
    widths = [max(len(x) for x in col) for col in zip(headers, *body)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))] + [fmt.format(*b) for b in body]
    return "\n".join([*lines, "", HEADLINE_NOTE])

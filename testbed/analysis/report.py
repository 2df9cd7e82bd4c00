"""``testbed report RESULTS_DIR``: metrics table (CSV + Markdown), figures and report.md from result files."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from testbed.analysis import figures, tables
from testbed.analysis.metrics import HEADLINE_NOTE, Row, Unit, aggregate, load_units
from testbed.errors import TestbedError


@dataclass
class Report:
    run_dir: Path
    manifest: dict
    units: list[Unit]
    rows: list[Row]
    text: str
    files: list[Path] = field(default_factory=list)


def find_run_dir(path: str | Path) -> Path:
    """A run folder (has manifest.json), or the newest run under an experiment folder."""
    path = Path(path)
    if (path / "manifest.json").exists():
        return path
    runs = sorted((p.parent for p in path.glob("*/manifest.json")), key=lambda p: p.stat().st_mtime)
    if runs:
        return runs[-1]
    raise TestbedError(f"{path}: no manifest.json here or in its sub-folders (give a run folder of 'testbed run')")


def build_report(results_dir: str | Path, out_dir: str | Path | None = None, make_figures: bool = True) -> Report:
    run_dir = find_run_dir(results_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    units = load_units(run_dir)
    if not units:
        raise TestbedError(f"{run_dir}: no completed sessions (no cells/*/*/r*/done.json with records.jsonl)")
    rows = aggregate(units)
    out = Path(out_dir) if out_dir else run_dir
    out.mkdir(parents=True, exist_ok=True)
    files = [tables.write_csv(rows, out / "metrics.csv")]
    md = tables.markdown(rows)
    (out / "metrics.md").write_text(md + "\n")
    files.append(out / "metrics.md")
    figs = figures.all_figures(units, rows, out / "figures") if make_figures else []
    files += figs
    text = tables.text_table(rows)
    report_md = render_markdown(manifest, rows, md, [p for p in figs if p.suffix == ".png"], out)
    (out / "report.md").write_text(report_md)
    files.append(out / "report.md")
    return Report(run_dir=run_dir, manifest=manifest, units=units, rows=rows, text=text, files=files)


def headline_lines(rows: list[Row]) -> list[str]:
    """One line per (cell, strategy): accuracy over ALL requests first, the answered-only figure after."""
    out = []
    for r in rows:
        cell = tables._cell_text(r)
        ci = r.ci["timely_accuracy"]
        ci_text = f" ± {ci:.3f}" if math.isfinite(ci) else " (1 repeat: no CI)"
        out.append(f"- {cell} · **{r.strategy}**: {r.mean['timely_accuracy']:.3f}{ci_text} of all requests answered "
                   f"correctly on time ({r.mean['deadline_miss_rate']:.0%} missed the deadline; accuracy over "
                   f"answered requests only: {r.mean['accuracy']:.3f})")
    return out


def render_markdown(manifest: dict, rows: list[Row], table_md: str, pngs: list[Path], out: Path) -> str:
    caps = manifest.get("capabilities", {})
    not_emulated = caps.get("not_emulated") or [k for k, v in caps.items() if v is False]
    cfg = manifest.get("config", {})
    lines = [
        f"# {manifest.get('experiment', '?')} — run {manifest.get('run_id', '?')}",
        "",
        f"Status: **{manifest.get('status', '?')}**; {len(rows)} (cell, strategy) rows; seeds "
        f"{manifest.get('seeds')}; git {str((manifest.get('git') or {}).get('commit'))[:12]}"
        f"{' (dirty)' if (manifest.get('git') or {}).get('dirty') else ''}.",
        "",
        f"Topology `{cfg.get('topology')}`, model `{cfg.get('model', 'default')}` on `{cfg.get('data', 'default')}`, "
        f"workload {cfg.get('workload')}, SLA {cfg.get('sla', {})}, faults {cfg.get('faults', [])}.",
        "",
        f"Not emulated on this machine: {', '.join(not_emulated) if not_emulated else 'nothing missing'}.",
        "",
        "## Headline: accuracy over all requests",
        "",
        *headline_lines(rows),
        "",
        "## Metrics (mean ± 95% CI over repeats, t-distribution)",
        "",
        HEADLINE_NOTE,
        "",
        table_md,
        "",
        "Definitions: see `testbed.analysis.metrics` (availability = answered / requests; outage columns count "
        "requests arriving while a link's gate was closed in replay.csv; unanswered counts as wrong).",
        "",
        "## Figures",
        "",
    ]
    for p in pngs:
        rel = p.relative_to(out) if p.is_relative_to(out) else p
        lines += [f"![{p.stem}]({rel})", ""]
    return "\n".join(lines)

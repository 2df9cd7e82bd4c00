"""Paper reproductions: the figure of a paper experiment and our headline numbers next to the paper's claims.

A paper experiment (``experiments/paper/*.yaml``) carries a ``paper`` block::

    paper:
      claim: spinn-throughput          # key into CLAIMS below
      ours: spinn                      # strategy label of the reproduced system
      baselines: [neurosurgeon, cloud-only]
      x: uplink_mbps                   # a sweep axis, or uplink_mbps (mean uplink trace rate of the cell)
      y: [goodput_rps, timely_accuracy]
      differences: ["...", "..."]      # how our setup differs from the paper's

Claims come from /work/shared/notes/offloading-literature.md ([S] = stated in the abstract we read).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from testbed.analysis import figures
from testbed.analysis.metrics import COLUMNS, Row, aggregate, load_units
from testbed.analysis.report import find_run_dir


def _by(rows: list[Row], strategy: str) -> dict[str, Row]:
    return {r.cell_id: r for r in rows if r.strategy == strategy}


def _fin(v: float) -> bool:
    return v is not None and math.isfinite(v)


def _best_ratio(rows, ours, baselines, metric, invert=False) -> tuple[float, str]:
    """max over cells of ours/best-baseline (or best-baseline/ours when lower is better)."""
    best, where = math.nan, ""
    mine = _by(rows, ours)
    for cell, r in mine.items():
        base = [_by(rows, b).get(cell) for b in baselines]
        vals = [b.mean[metric] for b in base if b is not None and _fin(b.mean[metric])]
        if not vals or not _fin(r.mean[metric]):
            continue
        if invert:
            ref = min(vals)
            ratio = ref / r.mean[metric] if r.mean[metric] > 0 else math.inf
        else:
            ref = max(vals)
            ratio = r.mean[metric] / ref if ref > 0 else math.inf
        if not _fin(best) or ratio > best:
            best, where = ratio, cell
    return best, where


def _best_diff(rows, ours, baselines, metric) -> tuple[float, str]:
    best, where = math.nan, ""
    for cell, r in _by(rows, ours).items():
        vals = [b.mean[metric] for b in (_by(rows, x).get(cell) for x in baselines) if b and _fin(b.mean[metric])]
        if vals and _fin(r.mean[metric]):
            d = r.mean[metric] - max(vals)
            if not _fin(best) or d > best:
                best, where = d, cell
    return best, where


def _x(v: float, fmt="{:.2f}x") -> str:
    return fmt.format(v) if _fin(v) else "n/a"


# ---------------------------------------------------------------------------- claims
@dataclass
class Claim:
    claim: str
    paper: str
    measure: Callable[[list[Row], dict], str]
    # (metric, higher is better): the direction the paper claims for ours vs the best baseline
    direction: tuple[str, bool] | None = None


def direction_verdict(rows: list[Row], p: dict, metric: str, higher_better: bool) -> tuple[str, str]:
    """Does ours beat the best baseline on ``metric`` in the cell where it does best? (verdict, measured reason).

    With repeats the 95 % CIs decide: disjoint and better = holds, overlapping = not shown (n.s.).
    """
    sign = 1.0 if higher_better else -1.0
    best = None
    for cell, mine in _by(rows, p["ours"]).items():
        base = [b for b in (_by(rows, x).get(cell) for x in p["baselines"] if x != p["ours"])
                if b is not None and _fin(b.mean[metric])]
        if not base or not _fin(mine.mean[metric]):
            continue
        rival = max(base, key=lambda b: sign * b.mean[metric])
        margin = sign * (mine.mean[metric] - rival.mean[metric])
        if best is None or margin > best[0]:
            best = (margin, cell, mine, rival)
    if best is None:
        return "n/a", f"no cell with both {p['ours']} and a baseline measured"
    margin, cell, mine, rival = best
    ci_mine, ci_rival = mine.ci[metric], rival.ci[metric]
    values = (f"{p['ours']} {_pm(mine.mean[metric], ci_mine)} vs {rival.strategy} "
              f"{_pm(rival.mean[metric], ci_rival)} {COLUMNS.get(metric, (metric,))[0]} at {cell}")
    if not (_fin(ci_mine) and _fin(ci_rival)):
        return ("yes (1 repeat, no CI)" if margin > 0 else "no (1 repeat)"), values
    if margin > ci_mine + ci_rival:
        return "yes", values
    if margin >= -(ci_mine + ci_rival):
        return "not shown (CIs overlap)", values
    return "no", values


def _pm(mean: float, ci: float) -> str:
    return f"{mean:.3g} ± {ci:.2g}" if _fin(ci) else f"{mean:.3g}"


def _spinn_throughput(rows, p):
    r, cell = _best_ratio(rows, p["ours"], p["baselines"], "goodput_rps")
    closed = any(u.info.get("settings", {}).get("workload") == "closed" for row in rows for u in row.units)
    # Open loop at a rate every strategy serves says nothing about capacity: say which one was measured.
    what = ("sustained on-time throughput (closed loop: capacity within the deadline)" if closed else
            "on-time answers/s at the offered open-loop rate (not capacity)")
    return f"{_x(r)} {what} vs best of {', '.join(p['baselines'])} (at {cell})"


def _spinn_accuracy(rows, p):
    d, cell = _best_diff(rows, p["ours"], p["baselines"], "timely_accuracy")
    return f"{d * 100:+.1f} pp accuracy within the deadline vs best baseline (at {cell})" if _fin(d) else "n/a"


def _spinn_server(rows, p):
    r, cell = _best_ratio(rows, p["ours"], [b for b in p["baselines"] if b != p["ours"]], "cloud_ms_per_req",
                          invert=True)
    others = [b for b in p["baselines"]]
    return f"{_x(r)} lower cloud compute per request than the lowest of {', '.join(others)} (at {cell})"


def _spinn_outage(rows, p):
    out = []
    for s in [p["ours"], *p["baselines"]]:
        rs = [r for r in rows if r.strategy == s]
        av = [r.mean["outage_availability"] for r in rs if _fin(r.mean["outage_availability"])]
        ac = [r.mean["outage_accuracy"] for r in rs if _fin(r.mean["outage_accuracy"])]
        if av:
            out.append(f"{s}: {np.mean(av):.0%} answered, {np.mean(ac):.0%} correct during outages")
    return "; ".join(out) or "no requests arrived during an outage"


def _appeal_energy(rows, p):
    ref_name = p.get("reference", "cloud-only")
    ref = [r for r in rows if r.strategy == ref_name]
    mine = [r for r in rows if r.strategy == p["ours"]]
    if not ref or not mine:
        return "n/a (needs the appeal strategy and the reference strategy)"
    e_ref = np.nanmean([r.mean["energy_j_per_req"] for r in ref])
    a_ref = np.nanmean([r.mean["accuracy"] for r in ref])
    ok = [r for r in mine if _fin(r.mean["accuracy"]) and r.mean["accuracy"] >= a_ref - 0.01]
    if not ok or not e_ref:
        best = max(mine, key=lambda r: r.mean["accuracy"] if _fin(r.mean["accuracy"]) else -1)
        return (f"no threshold kept accuracy within 1 pp of {ref_name} ({a_ref:.3f}); best {best.mean['accuracy']:.3f}"
                f" at {best.cell_id} with {1 - best.mean['energy_j_per_req'] / e_ref:.0%} energy saved")
    best = min(ok, key=lambda r: r.mean["energy_j_per_req"])
    return (f"{1 - best.mean['energy_j_per_req'] / e_ref:.0%} device energy saved vs {ref_name} at accuracy "
            f"{best.mean['accuracy']:.3f} (vs {a_ref:.3f}) at {best.cell_id}")


def _sparsity(rows, p):
    cards = p.get("_cards", {})
    parts = []
    if len(cards) >= 2:
        dense, sparse = cards.get(p["baselines"][0]), cards.get(p["ours"])
        for key in ("params", "flops", "size_bytes"):
            if dense and sparse and dense.get(key) and sparse.get(key):
                parts.append(f"{key} {dense[key] / sparse[key]:.2f}x smaller")
    d, cell = _best_diff(rows, p["ours"], p["baselines"], "accuracy")
    parts.append(f"accuracy {d * 100:+.1f} pp sparse vs dense" if _fin(d) else "accuracy n/a")
    if len(cards) < 2:
        parts.append("model cards not found in the results (compute/storage ratio from `testbed models card`)")
    return "; ".join(parts)


def _device_aware(rows, p):
    out = []
    for s in [p["ours"], *p["baselines"]]:
        rs = sorted((r for r in rows if r.strategy == s), key=lambda r: r.cell_id)
        if rs:
            hits = ", ".join(f"{_cell_label(r)}: {1 - r.mean['deadline_miss_rate']:.0%}" for r in rs)
            out.append(f"{s} hit rate [{hits}]")
    return "; ".join(out)


def _cell_label(r: Row) -> str:
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in r.cell_values.items()) or r.cell_id


CLAIMS: dict[str, list[Claim]] = {
    "spinn-throughput": [
        Claim("SPINN throughput vs collaborative counterparts under varying network conditions",
              "up to 2x [S abstract]", _spinn_throughput, ("goodput_rps", True)),
        Claim("SPINN accuracy under latency constraints", "+20.7% [S abstract]", _spinn_accuracy,
              ("timely_accuracy", True))],
    "spinn-sla": [
        Claim("SPINN accuracy under latency constraints (SLA sweep)", "+20.7% [S abstract]", _spinn_accuracy,
              ("timely_accuracy", True)),
        Claim("SPINN throughput vs collaborative counterparts", "up to 2x [S abstract]", _spinn_throughput,
              ("goodput_rps", True))],
    "spinn-outage": [
        Claim("robust under uncertain connectivity: the device keeps answering from local exits when the server "
              "is unreachable", "qualitative [S abstract]; time series with connectivity loss [R]", _spinn_outage)],
    "spinn-server-cost": [
        Claim("server cost vs cloud-centric execution", "up to 6.8x lower [S abstract]", _spinn_server,
              ("cloud_ms_per_req", False))],
    "appealnet-threshold": [
        Claim("energy savings without sacrificing accuracy", ">40% (DAC'21) / >80% (arXiv v1) [S abstract]",
              _appeal_energy)],
    "sparsity": [
        Claim("storage and compute reduction with predefined sparsity, same accuracy", ">4x [S abstract]",
              _sparsity)],
    "device-aware": [
        Claim("device-aware selection meets latency targets across heterogeneous devices without per-device "
              "search (latency monotonicity)", "qualitative [S abstract]; no single headline number", _device_aware)],
}


# ---------------------------------------------------------------------------- figure + table
@dataclass
class Comparison:
    text: str
    path: Path
    figures: list[Path] = field(default_factory=list)


def _x_of(axis: str) -> Callable[[Row], float | None]:
    if axis == "uplink_mbps":
        return figures.mean_uplink

    def get(r: Row):
        v = r.cell_values.get(axis)
        return float(v) if isinstance(v, (int, float)) else None

    return get


def paper_figure(rows: list[Row], p: dict, out_dir: Path, name: str) -> list[Path]:
    plt = figures._plt()
    ys = p.get("y") or ["goodput_rps", "accuracy"]
    x_axis = p.get("x")
    labels = [p["ours"], *p.get("baselines", [])]
    labels += [s for s in dict.fromkeys(r.strategy for r in rows) if s not in labels]
    colors = figures._colors(labels)
    fig, axes = plt.subplots(1, len(ys), figsize=(5 * len(ys), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], ys):
        header = COLUMNS.get(metric, (metric,))[0]
        xs = _x_of(x_axis) if x_axis else None
        if xs is not None and any(xs(r) is not None for r in rows):
            figures._errorbar_lines(ax, rows, xs, metric, colors)
            ax.set_xlabel("mean uplink trace bandwidth (Mbit/s)" if x_axis == "uplink_mbps" else x_axis)
        else:  # no numeric axis: bars per strategy, with the 95 % CI when there is a single cell
            means = [np.nanmean([r.mean[metric] for r in rows if r.strategy == s]) for s in labels]
            cis = [_single_ci(rows, s, metric) for s in labels]
            ax.bar(labels, means, color=[colors[s] for s in labels],
                   yerr=[c if math.isfinite(c) else 0.0 for c in cis], capsize=3)
            ax.tick_params(axis="x", rotation=20)
            group = figures.overlapping_group([(m, c) for m, c in zip(means, cis, strict=True) if math.isfinite(m)])
            if group:
                ax.axhspan(group[0], group[1], color="0.6", alpha=0.25, lw=0, label="CIs overlap (n.s.)")
            figures.honest_ylim(ax, list(zip(means, cis, strict=True)))
        ax.set_ylabel(header)
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8)
    repeats = min((r.repeats for r in rows), default=0)
    note = "error bars: 95 % CI over repeats" if repeats >= 2 else "1 repeat: no confidence interval"
    fig.suptitle(f"{p.get('title', name)}  ({note})", fontsize=10)
    return figures.save(fig, out_dir, f"paper_{name}")


def _single_ci(rows: list[Row], strategy: str, metric: str) -> float:
    mine = [r for r in rows if r.strategy == strategy]
    return mine[0].ci[metric] if len(mine) == 1 else math.nan


def _cards(rows: list[Row]) -> dict[str, dict]:
    """Model cards copied into unit folders (``model_card.json`` / ``card.json``), by strategy."""
    out = {}
    for r in rows:
        for u in r.units:
            for name in ("model_card.json", "card.json"):
                path = u.path / name
                if path.exists() and r.strategy not in out:
                    out[r.strategy] = json.loads(path.read_text())
    return out


def reproduce_report(results_dir: str | Path) -> Comparison:
    run_dir = find_run_dir(results_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    p = dict(manifest.get("config", {}).get("paper") or {})
    name = manifest.get("experiment", "paper")
    if not p:
        p = {"claim": name, "ours": manifest["strategies"][0]["label"],
             "baselines": [s["label"] for s in manifest["strategies"][1:]]}
    p.setdefault("baselines", [])
    rows = aggregate(load_units(run_dir))
    p["_cards"] = _cards(rows)
    figs = paper_figure(rows, p, run_dir / "figures", name)
    claims = CLAIMS.get(p.get("claim", name), [])
    lines = [f"# {name}: our measurement vs the paper", "",
             f"Run `{run_dir}` (status {manifest.get('status')}), seeds {manifest.get('seeds')}.", "",
             "| claim | paper | ours (this run) | direction holds? | measured (mean ± 95 % CI) |",
             "|---|---|---|---|---|"]
    for c in claims:
        verdict, values = direction_verdict(rows, p, *c.direction) if c.direction else ("see values", "")
        lines.append(f"| {c.claim} | {c.paper} | {c.measure(rows, p)} | {verdict} | {values} |")
    if not claims:
        lines.append(f"| (no claims registered for {p.get('claim', name)!r}) | | | | |")
    caps = manifest.get("capabilities", {})
    diffs = list(p.get("differences") or [])
    if caps.get("netem") is False:
        diffs.append("no sch_netem on this kernel: no propagation delay or jitter, only rate/outage/loss shaping")
    diffs.append(f"machine: {manifest.get('machine', {}).get('cpu_count')} CPU cores shared by device and cloud "
                 "(cgroup CPU quotas), not the paper's hardware; absolute numbers differ, compare trends and ratios")
    lines += ["", "Where our setup differs:", ""] + [f"- {d}" for d in diffs]
    lines += ["", f"Figure: {', '.join(str(f) for f in figs)}", ""]
    text = "\n".join(lines)
    path = run_dir / "paper_comparison.md"
    path.write_text(text)
    return Comparison(text=text, path=path, figures=figs)

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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from testbed.analysis import figures
from testbed.analysis.metrics import COLUMNS, Row, aggregate, load_units
from testbed.analysis.report import find_run_dir
from testbed.runtime.session import pacing_summary


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
    against: list[str] | None = None  # the baselines of ``direction`` (None: the experiment's)
    # A claim no single metric decides: (rows, paper block) -> (verdict, measured values behind it)
    verdict: Callable[[list[Row], dict], tuple[str, str]] | None = None

    def decide(self, rows: list[Row], p: dict) -> tuple[str, str]:
        if self.verdict is not None:
            return self.verdict(rows, p)
        if self.direction is not None:
            against = [b for b in (self.against or p["baselines"]) if any(r.strategy == b for r in rows)]
            return direction_verdict(rows, {**p, "baselines": against}, *self.direction)
        return "see values", ""


# Relative difference below which a single repeat decides nothing (quick runs): the full run's 95 % CIs
# reached ~12 % of the mean (SPINN closed-loop throughput 35.2 +- 4.2 req/s).
SINGLE_RUN_NOISE = 0.05


def significance(mine: Row, rival: Row, metric: str, higher_better: bool) -> str:
    """Is ``mine`` better than ``rival`` on ``metric``? The 95 % CIs decide when there are repeats."""
    margin = (1.0 if higher_better else -1.0) * (mine.mean[metric] - rival.mean[metric])
    ci_mine, ci_rival = mine.ci[metric], rival.ci[metric]
    if not (_fin(ci_mine) and _fin(ci_rival)):
        # without a CI, a difference of a few percent is run-to-run noise: call it neither way
        scale = max(abs(mine.mean[metric]), abs(rival.mean[metric]))
        if scale > 0 and abs(margin) < SINGLE_RUN_NOISE * scale:
            return f"not shown (1 repeat: within {SINGLE_RUN_NOISE:.0%})"
        return "yes (1 repeat, no CI)" if margin > 0 else "no (1 repeat)"
    if margin > ci_mine + ci_rival:
        return "yes"
    if margin >= -(ci_mine + ci_rival):
        return "not shown (CIs overlap)"
    return "no"


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
    values = (f"{p['ours']} {_pm(mine.mean[metric], mine.ci[metric])} vs {rival.strategy} "
              f"{_pm(rival.mean[metric], rival.ci[metric])} {COLUMNS.get(metric, (metric,))[0]} at {cell}")
    return significance(mine, rival, metric, higher_better), values


def _pm(mean: float, ci: float) -> str:
    if not _fin(ci):
        return f"{mean:.3g}"
    return f"{mean:.3g} ± {ci:.2g}" if abs(ci) > 1e-9 * max(1.0, abs(mean)) else f"{mean:.3g} ± 0"  # float noise


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
    others = [b for b in p["baselines"] if b != p["ours"]]
    if r == math.inf:  # ours used no server time at all there: a ratio would be infinite
        return f"{p['ours']} used no server compute per request (answered on the device) at {cell}"
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


EQUAL_ACCURACY_PP = 1.0  # "without sacrificing accuracy": at most this many points below the reference


def _appeal_best(rows, p) -> tuple[tuple | None, list[str]]:
    """The setting of ours that saves most energy vs the reference among those whose mean accuracy (over
    all requests) is at most EQUAL_ACCURACY_PP lower, and the settings that lost more."""
    ref_name = p.get("reference", "cloud-only")
    best, lost = None, []
    for cell, mine in _by(rows, p["ours"]).items():
        ref = _by(rows, ref_name).get(cell)
        if ref is None or not _fin(ref.mean["energy_j_per_req"]) or ref.mean["energy_j_per_req"] <= 0:
            continue
        if mine.mean["timely_accuracy"] < ref.mean["timely_accuracy"] - EQUAL_ACCURACY_PP / 100:
            lost.append(f"{_cell_label(mine)}: {mine.mean['timely_accuracy']:.3f} vs {ref.mean['timely_accuracy']:.3f}")
            continue
        saving = 1 - mine.mean["energy_j_per_req"] / ref.mean["energy_j_per_req"]
        if best is None or saving > best[0]:
            best = (saving, mine, ref)
    return best, lost


def _appeal_energy(rows, p):
    best, lost = _appeal_best(rows, p)
    ref_name = p.get("reference", "cloud-only")
    if best is None:
        return f"no setting kept accuracy within {EQUAL_ACCURACY_PP:g} pp of {ref_name}"
    saving, mine, ref = best
    return (f"{saving:.0%} device energy saved vs {ref_name} at accuracy {mine.mean['timely_accuracy']:.3f} "
            f"(vs {ref.mean['timely_accuracy']:.3f}) at {_cell_label(mine)}")


def _appeal_energy_verdict(rows, p):
    best, lost = _appeal_best(rows, p)
    if best is None:
        return "no", (f"every setting lost more than {EQUAL_ACCURACY_PP:g} pp accuracy vs "
                      f"{p.get('reference', 'cloud-only')} ({'; '.join(lost) or 'nothing measured'})")
    saving, mine, ref = best
    values = (f"energy {_pm(mine.mean['energy_j_per_req'], mine.ci['energy_j_per_req'])} vs "
              f"{_pm(ref.mean['energy_j_per_req'], ref.ci['energy_j_per_req'])} J/req ({saving:.0%} saved), "
              f"accuracy (all requests) {_pm(mine.mean['timely_accuracy'], mine.ci['timely_accuracy'])} vs "
              f"{_pm(ref.mean['timely_accuracy'], ref.ci['timely_accuracy'])} at {_cell_label(mine)}")
    return significance(mine, ref, "energy_j_per_req", higher_better=False), values


def _appeal_gate(rows, p):
    """q(x) vs max-softmax gating at equal appeal rates: emulated accuracy, and the card's test-set view."""
    parts = []
    for cell, mine in sorted(_by(rows, p["ours"]).items()):
        other = _by(rows, "softmax-gate").get(cell)
        if other is not None:
            parts.append(f"{_cell_label(mine)}: {mine.mean['timely_accuracy']:.3f} vs {other.mean['timely_accuracy']:.3f}")
    text = "accuracy (all requests) q-gate vs softmax-gate [" + "; ".join(parts) + "]" if parts else "n/a (no softmax-gate)"
    card = next((c for cards in p.get("_cards", {}).values() for c in cards.values() if c.get("appeal")), None)
    if card:
        auroc = card["appeal"].get("auroc_edge_correct", {})
        rates = "; ".join(f"{t['appeal_rate']:g}: {t['q_gate_accuracy']:.3f} vs {t['softmax_gate_accuracy']:.3f}"
                          for t in card["appeal"].get("tradeoff", []) if 0 < t["appeal_rate"] < 1)
        text += (f"; test set (card, all test images): AUROC for 'edge is right' q {auroc.get('q')} vs max-softmax "
                 f"{auroc.get('max_softmax')}, accuracy at appeal rate [{rates}]")
    return text


def _model_ratios(p) -> dict | None:
    """Dense/sparse parameter (= fp32 storage) and FLOP ratios and final-exit test accuracy, from the cards."""
    cards = p.get("_cards", {})
    sparse = next(iter(cards.get(p["ours"], {}).values()), None)
    dense = next(iter(cards.get(p["baselines"][0], {}).values()), None) if p["baselines"] else None
    if not sparse or not dense:
        return None
    device_ms = None
    if p.get("_device_profile"):
        from testbed.devices import get_profile
        from testbed.models.registry import build_model

        hardware = get_profile(p["_device_profile"])
        device_ms = tuple(hardware.model_costs(build_model(c["model"], **c["model_kwargs"]).eval(),
                                               tuple(c["dataset"]["input_shape"]))["full_ms"] for c in (sparse, dense))
    return {"storage": dense["params_total"] / sparse["params_total"], "device_ms": device_ms,
            "flops": dense["flops_backbone_and_final_exit"] / sparse["flops_backbone_and_final_exit"],
            "accuracy_pp": 100 * (sparse["exits"][-1]["test_accuracy"] - dense["exits"][-1]["test_accuracy"]),
            "test_images": (sparse.get("dataset") or {}).get("sizes", {}).get("test")}


SPARSITY_TARGET = 4.0  # the paper's ">4x" storage and compute reduction


def _sparsity(rows, p):
    parts = []
    ratios = _model_ratios(p)
    if ratios:
        parts.append(f"storage (fp32 parameters) {ratios['storage']:.2f}x and FLOPs {ratios['flops']:.2f}x "
                     f"smaller; final-exit test accuracy {ratios['accuracy_pp']:+.2f} pp (model cards)")
    else:
        parts.append("model cards not found in the results (compute/storage ratio from `testbed models card`)")
    d, _ = _best_diff(rows, p["ours"], p["baselines"], "accuracy")
    parts.append(f"emulated run: accuracy {d * 100:+.1f} pp sparse vs dense" if _fin(d) else "accuracy n/a")
    if ratios and ratios.get("device_ms"):
        sparse_ms, dense_ms = ratios["device_ms"]
        parts.append(f"whole network on the emulated {p.get('_device_profile')}: {sparse_ms:.2f} vs {dense_ms:.2f} ms "
                     f"(device profile's cost model)")
    return "; ".join(parts)


def _sparsity_verdict(rows, p):
    ratios = _model_ratios(p)
    if not ratios:
        return "n/a", "no model cards in the results"
    reasons = [f"{what} {ratios[what]:.2f}x < {SPARSITY_TARGET:g}x" for what in ("storage", "flops")
               if ratios[what] < SPARSITY_TARGET]
    if ratios["accuracy_pp"] < -EQUAL_ACCURACY_PP:
        reasons.append(f"accuracy {ratios['accuracy_pp']:+.2f} pp (more than {EQUAL_ACCURACY_PP:g} pp lost)")
    values = (f"storage {ratios['storage']:.2f}x, FLOPs {ratios['flops']:.2f}x, accuracy {ratios['accuracy_pp']:+.2f} pp"
              f" on {ratios['test_images'] or 'the'} test images (cards)")
    if not reasons:
        return "yes", values
    direction = all(ratios[w] > 1 for w in ("storage", "flops"))
    return (f"{'smaller, but ' if direction else ''}no: {'; '.join(reasons)}"), values


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
              "is unreachable", "qualitative [S abstract]; time series with connectivity loss [R]", _spinn_outage,
              ("outage_availability", True), against=["cloud-only"])],
    "spinn-server-cost": [
        Claim("server cost vs cloud-centric execution", "up to 6.8x lower [S abstract]", _spinn_server,
              ("cloud_ms_per_req", False))],
    "appealnet-threshold": [
        Claim("energy savings without sacrificing accuracy (vs cloud-only, accuracy within 1 pp)",
              ">40% (DAC'21) / >80% (arXiv v1) [S abstract]", _appeal_energy, verdict=_appeal_energy_verdict),
        Claim("the appeal head q(x) gates better than the little network's softmax confidence (same pair, equal "
              "appeal rate)", "qualitative: softmax confidence 'is known to be inaccurate' [S arXiv v1]",
              _appeal_gate, ("timely_accuracy", True), against=["softmax-gate"])],
    "sparsity": [
        Claim("storage and compute reduction with predefined sparsity, same accuracy (within 1 pp)",
              ">4x [S abstract]", _sparsity, verdict=_sparsity_verdict)],
    "device-aware": [
        Claim("device-aware selection meets latency targets across heterogeneous devices without per-device "
              "search (latency monotonicity): proxy-based selection misses fewer deadlines than one network "
              "for every device", "qualitative [S abstract]; no single headline number", _device_aware,
              ("deadline_miss_rate", False), against=["one-size"])],
}


# ---------------------------------------------------------------------------- figure + table
@dataclass
class Comparison:
    text: str
    path: Path
    figures: list[Path] = field(default_factory=list)
    claims: list[dict] = field(default_factory=list)  # {claim, paper, ours, verdict, values}: the table's rows


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
            ax.set_xlabel("mean uplink trace bandwidth (Mbit/s)" if x_axis == "uplink_mbps"
                          else p.get("x_label") or x_axis.split(".")[-1])
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


def plan_mix_table(rows: list[Row]) -> list[str]:
    """Per strategy: where its requests were answered, the splits it offloaded at, its p50 latency."""
    by_strategy: dict[str, list[dict]] = {}
    for r in rows:
        for u in r.units:
            by_strategy.setdefault(r.strategy, []).extend(u.records)
    out = ["| strategy | requests | answered on the device | offloaded | fallback exit | timed out / failed | "
           "offloaded at (share of offloads) | paced results > 1 ms late (device or server) |", "|---|---|---|---|---|---|---|---|"]
    for strategy, records in sorted(by_strategy.items()):
        n = len(records) or 1
        outcomes = Counter(rec.get("outcome") for rec in records)
        splits = Counter(str(rec.get("split")) for rec in records if rec.get("outcome") == "cloud")
        offloads = sum(splits.values())
        top = ", ".join(f"{s} {c / offloads:.0%}" for s, c in splits.most_common(2)) if offloads else "-"
        pacing = pacing_summary(records)
        late = f"{pacing['late_fraction']:.0%}" if pacing else "-"
        out.append(f"| {strategy} | {len(records)} | {outcomes['device_exit'] / n:.0%} | {outcomes['cloud'] / n:.0%} | "
                   f"{outcomes['fallback_exit'] / n:.0%} | {(outcomes['timeout'] + outcomes['failed']) / n:.0%} | "
                   f"{top} | {late} |")
    return out


def _sessions(rows: list[Row]) -> dict[str, dict]:
    """One device session config (``session-<device>.json``) per strategy."""
    out = {}
    for r in rows:
        for u in r.units:
            session = next(iter(sorted(u.path.glob("session-*.json"))), None)
            if session is not None and r.strategy not in out:
                out[r.strategy] = json.loads(session.read_text())
    return out


def _cards(sessions: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """strategy -> model -> the card of the checkpoint its device sessions loaded."""
    from testbed.models.train import CheckpointError, read_card

    out: dict[str, dict[str, dict]] = {}
    for strategy, cfg in sessions.items():
        for model, directory in (cfg.get("models") or {}).items():
            try:
                out.setdefault(strategy, {})[model] = read_card(directory)
            except (CheckpointError, OSError, ValueError):
                continue
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
    sessions = _sessions(rows)
    p["_cards"] = _cards(sessions)
    p["_device_profile"] = next((c.get("device_profile") for c in sessions.values() if c.get("device_profile")), None)
    figs = paper_figure(rows, p, run_dir / "figures", name)
    claims = CLAIMS.get(p.get("claim", name), [])
    lines = [f"# {name}: our measurement vs the paper", "",
             f"Run `{run_dir}` (status {manifest.get('status')}), seeds {manifest.get('seeds')}.", "",
             "| claim | paper | ours (this run) | direction holds? | measured (mean ± 95 % CI) |",
             "|---|---|---|---|---|"]
    verdicts = []
    for c in claims:
        verdict, values = c.decide(rows, p)
        verdicts.append({"claim": c.claim, "paper": c.paper, "ours": c.measure(rows, p), "verdict": verdict,
                         "values": values})
        lines.append("| " + " | ".join(verdicts[-1].values()) + " |")
    if not claims:
        lines.append(f"| (no claims registered for {p.get('claim', name)!r}) | | | | |")
    lines += ["", "How each strategy ran (all cells and repeats pooled; the measured reason behind the verdicts):", "",
              *plan_mix_table(rows)]
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
    return Comparison(text=text, path=path, figures=figs, claims=verdicts)

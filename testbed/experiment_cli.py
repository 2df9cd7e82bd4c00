"""``testbed run``, ``testbed report``, ``testbed reproduce`` and ``testbed quickstart``."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_DIR = REPO_ROOT / "experiments" / "paper"
log = logging.getLogger("testbed.reproduce")
QUICKSTART = REPO_ROOT / "experiments" / "quickstart.yaml"
DOCS_DIR = REPO_ROOT / "docs" / "reproductions"
QUICK_DURATION_S = 4.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an experiment: every cell x strategy x repeat on a fresh emulated network")
    p.add_argument("experiment", nargs="?", help="experiment YAML (optional with --resume)")
    p.add_argument("--out", default="results", help="results root (default: results/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run, skipping sessions with done.json")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed session")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--report", action="store_true", help="write the report when the run finishes")
    p.add_argument("--check", action="store_true", help="only validate the experiment file and list its cells")
    p.add_argument("--cluster", metavar="CLUSTER.yaml", help="place the hosts across the servers of this cluster "
                   "(Mininet cluster mode over SSH; docs/cluster.md)")
    p.set_defaults(func=run_cmd)

    p = sub.add_parser("report", help="metrics table, figures and report.md from a run's result files")
    p.add_argument("results", help="a run folder (results/<experiment>/<run-id>) or an experiment folder (newest run)")
    p.add_argument("--out", help="write here instead of into the run folder")
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=report_cmd)

    p = sub.add_parser("reproduce", help="run a paper experiment (experiments/paper/NAME.yaml) and compare with "
                                         "the paper's claims")
    p.add_argument("name", help="experiment name in experiments/paper/, 'all', or 'list'")
    p.add_argument("--out", default="results")
    p.add_argument("--resume", metavar="RUN_DIR")
    p.add_argument("--report-only", metavar="RUN_DIR", help="skip running: rebuild figure + comparison from a run")
    p.add_argument("--quick", action="store_true",
                   help=f"1 repeat, sessions cut to {QUICK_DURATION_S:g} s or 2 s past the last fault (no CIs)")
    p.add_argument("--docs", default=str(DOCS_DIR), metavar="DIR",
                   help="copy each figure, claim table and manifest summary to DIR/<name>/ (default: "
                        "docs/reproductions); '' to skip")
    p.set_defaults(func=reproduce_cmd)

    p = sub.add_parser("quickstart", help="the README's first command: run experiments/quickstart.yaml and report")
    p.add_argument("--out", default="results")
    p.add_argument("--experiment", default=str(QUICKSTART))
    p.set_defaults(func=quickstart)


def run_cmd(args) -> int:
    from testbed.experiment import load_experiment, run_experiment

    if args.check:
        exp = load_experiment(args.experiment)
        print(f"{exp.source}: ok — {len(exp.cells)} cells x {len(exp.strategies)} strategies x {exp.repeats} "
              f"repeats = {len(exp.units())} sessions")
        for c in exp.cells:
            print(f"  {c.cell_id}")
        return 0
    try:
        run_dir = run_experiment(args.experiment, out=args.out, resume=args.resume, progress=not args.no_progress,
                                 fail_fast=args.fail_fast, **({"cluster": args.cluster} if args.cluster else {}))
    except KeyboardInterrupt:
        print("testbed run: interrupted; completed sessions kept, run marked partial "
              "(continue with: testbed run --resume RUN_DIR)")
        raise
    from testbed.experiment import read_manifest

    m = read_manifest(run_dir)
    print(f"run {m['status']}: {run_dir} ({m['summary']['done']}/{m['summary']['units']} sessions"
          f"{', failed: ' + ', '.join(m['failed_units']) if m['failed_units'] else ''})")
    if args.report:
        _print_report(run_dir)
    return 0 if m["status"] == "complete" else 1


def _print_report(results, out=None, figures=True):
    from testbed.analysis import build_report

    rep = build_report(results, out_dir=out, make_figures=figures)
    print(rep.text)
    where = Path(out) if out else rep.run_dir
    print(f"\ntable: {where / 'metrics.csv'}, {where / 'metrics.md'}\nreport: {where / 'report.md'}")
    figs = [p for p in rep.files if p.suffix == ".png"]
    if figs:
        print(f"figures: {figs[0].parent}/ ({', '.join(p.stem for p in figs)})")
    return rep


def report_cmd(args) -> int:
    _print_report(args.results, args.out, not args.no_figures)
    return 0


def paper_experiments() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PAPER_DIR.glob("*.yaml"))}


def data_reproductions() -> dict:
    """Reproductions computed from shipped measurements alone (no emulated network): name -> function."""
    from testbed.selection.reproduce import DATA_REPRODUCTIONS

    return DATA_REPRODUCTIONS


def reproduce_cmd(args) -> int:
    from testbed.analysis.paper import reproduce_report
    from testbed.errors import ConfigError
    from testbed.experiment import run_experiment

    available = paper_experiments()
    data_only = data_reproductions()
    if args.name == "list":
        for name, path in available.items():
            print(f"{name:28s} {path.relative_to(REPO_ROOT)}")
        for name in data_only:
            print(f"{name:28s} (from measured data only; writes docs/reproductions/)")
        return 0
    if args.name in data_only or args.name == "all":
        for name in data_only if args.name == "all" else [args.name]:
            print(f"== reproducing {name} (data only) ==")
            # --docs '' means "publish nothing": the data-only tables then go with the run's output.
            out = Path(args.docs) / name if args.docs else Path(args.out) / name
            result = data_only[name](out=out)
            print(result["text"])
            print(f"files: {', '.join(str(p) for p in result['files'])}")
        if args.name != "all":
            return 0
    names = list(available) if args.name == "all" else [args.name]
    for name in names:
        if name not in available:
            raise ConfigError("reproduce", f"no experiments/paper/{name}.yaml; available: "
                                           f"{', '.join([*available, *data_only])}")
    rc = 0
    timings: list[tuple[str, float, str]] = []  # (experiment, wall s, outcome)
    t_all = time.monotonic()
    for name in names:
        t0 = time.monotonic()
        try:
            if args.report_only:
                run_dir = Path(args.report_only)
            else:
                print(f"== reproducing {name}{' (quick)' if args.quick else ''} ==", flush=True)
                experiment = quick_variant(available[name], Path(args.out)) if args.quick else available[name]
                run_dir = run_experiment(experiment, out=args.out, resume=args.resume)
            _print_report(run_dir)
            comparison = reproduce_report(run_dir)
            print(comparison.text)
            print(f"paper figure: {', '.join(str(p) for p in comparison.figures)}\ncomparison: {comparison.path}")
            if args.docs:
                wall_s = None if args.report_only else time.monotonic() - t0
                print(f"docs: {publish_reproduction(name, run_dir, comparison, Path(args.docs), wall_s)}")
            timings.append((name, time.monotonic() - t0, "ok"))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # `all`: one failed experiment must not cost the others their run
            if len(names) == 1:
                raise
            log.exception("reproduce %s failed", name)
            timings.append((name, time.monotonic() - t0, f"failed: {type(exc).__name__}: {exc}"))
            rc = 1
    if len(names) > 1:
        print(f"\n== reproduce {args.name}{' --quick' if args.quick else ''}: "
              f"{time.monotonic() - t_all:.0f} s wall ==")
        for name, wall, outcome in timings:
            print(f"  {name:24s} {wall:7.0f} s  {outcome}")
    return rc


def quick_variant(path: Path, out: Path) -> Path:
    """A copy of a paper experiment with 1 repeat and short sessions, paths made absolute, under ``out``."""
    import yaml

    from testbed.experiment.schema import resolve_path

    raw = yaml.safe_load(path.read_text())
    raw["repeats"] = 1
    # Shorter sessions, but never so short that an injected fault (the outage a figure is about) is cut off.
    last_fault_end = max((float(f.get("end", 0)) for f in raw.get("faults") or []), default=0.0)
    raw["workload"]["duration_s"] = min(float(raw["workload"]["duration_s"]),
                                        max(QUICK_DURATION_S, last_fault_end + 2.0))
    raw["topology"] = str(resolve_path(raw["topology"], path.parent))
    for spec in (raw.get("traces") or {}).values():
        if isinstance(spec, dict) and "file" in spec:
            spec["file"] = str(resolve_path(spec["file"], path.parent))
    raw["description"] = f"{raw.get('description', '')} [quick: 1 repeat, <= {QUICK_DURATION_S:g} s sessions]"
    target = out / "quick-experiments" / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(raw, sort_keys=False))
    return target


def publish_reproduction(name: str, run_dir: Path, comparison, docs: Path, wall_s: float | None = None) -> Path:
    """Figure (PNG), claim table and manifest summary of a run into ``docs/<name>/`` (regenerated, never edited)."""
    import json
    import shutil

    target = docs / name
    target.mkdir(parents=True, exist_ok=True)
    for figure in comparison.figures:
        if Path(figure).suffix == ".png":
            shutil.copy2(figure, target / Path(figure).name)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    caps = manifest.get("capabilities", {})
    previous = target / "manifest-summary.json"
    if wall_s is None and previous.is_file():  # --report-only: keep the wall time the run itself took
        before = json.loads(previous.read_text())
        wall_s = before.get("wall_s") if before.get("run_dir") == str(run_dir) else None
    summary = {
        "experiment": name, "run_dir": str(run_dir), "status": manifest.get("status"),
        "git": manifest.get("git"), "machine": manifest.get("machine"),
        "kernel": (manifest.get("machine") or {}).get("kernel") or caps.get("kernel"),
        "repeats": manifest.get("config", {}).get("repeats", 1),
        "workload": manifest.get("config", {}).get("workload"),
        "not_emulated": caps.get("not_emulated") or [k for k, v in caps.items() if v is False],
        "units": manifest.get("summary"),
        "wall_s": None if wall_s is None else round(wall_s, 1),
        "quick": "[quick:" in str(manifest.get("config", {}).get("description", "")),
        "pacing": _pacing_totals(run_dir),
        "claims": comparison.claims,
    }
    (target / "manifest-summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (target / "claims.md").write_text(comparison.text + f"\n\nGenerated by `testbed reproduce {name}` from "
                                      f"`{run_dir}`; regenerate, do not edit.\n")
    write_reproduction_index(docs)
    return target


def _pacing_totals(run_dir: Path) -> dict | None:
    """Paced results (device or server) over every session of a run, and how many the host released late."""
    import json

    paced = late = 0
    for path in Path(run_dir).glob("cells/*/*/r*/summary.json"):
        pacing = json.loads(path.read_text()).get("pacing") or {}
        paced += pacing.get("paced_requests", 0)
        late += pacing.get("late_requests", 0)
    return {"paced_requests": paced, "late_requests": late,
            "late_fraction": round(late / paced, 4)} if paced else None


INDEX_NAME = "claims-summary.md"


def write_reproduction_index(docs: Path) -> Path:
    """``docs/claims-summary.md``: every published experiment's claims and verdicts in one table (generated)."""
    import json

    lines = ["# Claims at a glance", "",
             "Generated from the claims in each `*/manifest-summary.json` by `testbed reproduce`; "
             "regenerate, do not edit. Verdicts: 95 % CIs over repeats decide (\"1 repeat\" = a quick run, "
             "no CI). Paced late = device or server results this host released more than 1 ms after the "
             "profiled time.", "",
             "| experiment | claim | paper | direction holds? | repeats | paced late | wall |",
             "|---|---|---|---|---|---|---|"]
    for claims in sorted(docs.glob("*/claims.md")):
        meta_path = claims.parent / "manifest-summary.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        pacing = meta.get("pacing") or {}
        late = f"{pacing['late_fraction']:.1%}" if pacing else "-"
        wall = f"{meta['wall_s'] / 60:.1f} min" if meta.get("wall_s") else "-"
        repeats = f"{meta.get('repeats', '?')}{' (quick)' if meta.get('quick') else ''}"
        name = claims.parent.name
        for claim in meta.get("claims") or []:
            lines.append(f"| [{name}]({name}/claims.md) | {claim['claim']} | {claim['paper']} | {claim['verdict']} | "
                         f"{repeats} | {late} | {wall} |")
    data_only = sorted(d.parent.name for d in docs.glob("*/README.md") if not (d.parent / "claims.md").exists())
    if data_only:
        lines += ["", "From measured data alone (no emulated network; claim tables inside): " +
                  ", ".join(f"[{n}]({n}/README.md)" for n in data_only) + "."]
    path = docs / INDEX_NAME
    path.write_text("\n".join(lines) + "\n")
    return path


def _runtime_available() -> bool:
    try:
        from testbed.runtime import run_session  # noqa: F401
    except ImportError:
        return False
    return True


def quickstart(args) -> int:
    if not _runtime_available():
        return _replay_demo(args)
    from testbed.experiment import run_experiment

    t0 = time.monotonic()
    print(f"quickstart: running {args.experiment} (shipped checkpoints; other models train on first use) ...")
    run_dir = run_experiment(args.experiment, out=args.out)
    rep = _print_report(run_dir)
    _print_pacing(run_dir)
    print(f"\nquickstart: {len(rep.units)} sessions in {time.monotonic() - t0:.0f} s wall; results in {run_dir}")
    return 0


def _print_pacing(run_dir) -> None:
    """Which hardware each session emulated and how many results this host released late."""
    import json

    for path in sorted(Path(run_dir).glob("cells/*/*/r*/summary.json")):
        summary = json.loads(path.read_text())
        devices = ", ".join(sorted({p or "CPU share" for p in (summary.get("device_profile") or {}).values()}))
        pacing = summary.get("pacing")
        late = (f"{pacing['late_requests']}/{pacing['paced_requests']} released > 1 ms late "
                f"(p99 {pacing['p99_error_ms']:.1f} ms): the host could not keep pace" if pacing and
                pacing["late_requests"] else "every result released on time" if pacing else "not paced")
        print(f"  {path.parent.parent.name:14s} device: {devices or '-'}; server: "
              f"{summary.get('server_profile') or 'host CPU'}; {late}")


def _replay_demo(args) -> int:
    """Fallback while the device/cloud runtime is not installed: replay the LTE trace with an outage."""
    from testbed.emulation.cli import replay_demo

    print("quickstart: testbed.runtime is not available; running the trace-replay demo instead")
    ns = argparse.Namespace(trace="traces/att-lte-driving.csv", topology="topologies/device-cloud.yaml",
                            direction="down", duration=60.0, outage="20:25", granularity=0.1,
                            out=str(Path(args.out) / "quickstart-replay"))
    return replay_demo(ns)

"""``testbed doctor``, ``testbed cleanup`` and ``testbed replay-demo``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="what this machine can emulate, and what that means")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--quiet", action="store_true", help="only warn about what is missing")
    p.set_defaults(func=doctor)

    p = sub.add_parser("cleanup", help="remove what killed runs left behind (only this testbed's objects)")
    p.add_argument("--force", action="store_true", help="also stop emulations that are still running")
    p.add_argument("--cluster", metavar="CLUSTER.yaml", help="also clean every server of this cluster (over SSH)")
    p.set_defaults(func=cleanup_cmd)

    p = sub.add_parser("replay-demo", help="replay a real trace with an outage and measure a TCP flow over it")
    p.add_argument("--trace", default="traces/att-lte-driving.csv")
    p.add_argument("--topology", default="topologies/device-cloud.yaml")
    p.add_argument("--direction", choices=["down", "up"], default="down")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of trace to replay")
    p.add_argument("--outage", default="20:25", help="START:END seconds of an injected outage ('' for none)")
    p.add_argument("--granularity", type=float, default=0.1, help="replay step in seconds")
    p.add_argument("--out", default="results/replay-demo")
    p.set_defaults(func=replay_demo)


def doctor(args) -> int:
    import json

    from testbed.emulation import capabilities, cleanup

    caps = capabilities.probe()
    if args.json:
        print(json.dumps({"capabilities": caps.as_dict(), "leftovers": cleanup.leftovers()}, indent=2))
        return 0
    essential_missing = [n for n, ok, _ in caps.lines() if not ok and n in
                         ("root", "mininet (python)", "mnexec", "HTB qdisc", "TBF qdisc")]
    if args.quiet:
        for name, ok, meaning in caps.lines():
            if not ok:
                print(f"testbed doctor: {name}: {meaning}")
        return 1 if essential_missing else 0
    print("testbed doctor: what this machine can emulate\n")
    for name, ok, meaning in caps.lines():
        print(f"  [{'x' if ok else ' '}] {name:<20} {meaning}")
    left = cleanup.leftovers()
    print()
    if any(left.values()):
        print(f"  leftovers of earlier runs: {left} -> run 'testbed cleanup'")
    else:
        print("  no leftovers of earlier runs")
    if essential_missing:
        print(f"\n  cannot emulate: missing {', '.join(essential_missing)}")
        return 1
    print("\n  emulation: ready" + ("" if caps.netem else " (rate, outages and loss; no delay/jitter: no netem)"))
    return 0


def cleanup_cmd(args) -> int:
    from testbed.emulation import cleanup

    if getattr(args, "cluster", None):
        from testbed.emulation.cluster import cleanup_cluster, load_cluster

        done = cleanup_cluster(load_cluster(args.cluster), force=args.force)
    else:
        done = cleanup.cleanup(force=args.force)
    for line in done:
        print(f"  {line}")
    print("testbed cleanup: " + ("nothing to clean" if not done else f"{len(done)} actions"))
    return 0


def replay_demo(args) -> int:
    from pathlib import Path

    from testbed.emulation import fidelity
    from testbed.emulation.emulation import resolve_path
    from testbed.traces import load_trace

    trace = load_trace(resolve_path(args.trace))
    duration = min(args.duration, trace.duration)
    faults = []
    if args.outage:
        start, end = (float(x) for x in args.outage.split(":"))
        faults.append({"kind": "outage", "link": "access", "start": start, "end": end})
    out = Path(args.out)
    print(f"replaying {trace.meta.get('name', args.trace)} ({args.direction}link, {duration:g} s, "
          f"{args.granularity * 1000:g} ms steps, outage {args.outage or 'none'}) on {args.topology} ...")
    fid = fidelity.measure(resolve_path(args.topology), trace, args.direction, duration, faults,
                           args.granularity, out_dir=out, params={"device_cpu": None, "cloud_cpu": None})
    print(f"\n{'t (s)':>6} {'trace':>8} {'achieved':>9} {'error':>7}   (Mbit/s, link layer, per second)")
    for t, e, a in zip(fid.starts, fid.expected_mbps, fid.achieved_mbps):
        err = f"{(a - e) / e:+.0%}" if e >= 1 else ("outage" if e == 0 else "")
        print(f"{t:6.0f} {e:8.2f} {a:9.2f} {err:>7}")
    s = fid.summary()
    print(f"\nmedian |error| {s['median_error']:.1%}, p95 {s['p95_error']:.1%} over {s['windows']} windows "
          f">= 1 Mbit/s; delivered {s['delivered_fraction']:.1%} of the trace's bytes; "
          f"rate-change lag median {s['lag_median_ms']:.3f} ms, max {s['lag_max_ms']:.3f} ms "
          f"({s['changes']} changes)")
    png = out / "replay-demo.png"
    fidelity.plot(fid, png, title=f"{trace.meta.get('name', '')} {args.direction}link: trace vs achieved")
    print(f"plot: {png}\nreplay log: {out / 'replay.csv'}")
    return 0

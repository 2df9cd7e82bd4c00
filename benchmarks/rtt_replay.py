"""RTT replay fidelity: a trace's rtt_ms column replayed as netem delay, measured by ping per replay step.

Each direction's netem delay is changed in place (netlink) at every step to half the trace's RTT. A
ping every 10 ms from device to cloud measures the RTT; each probe is compared with what the
timeline says it should see (the request takes the uplink delay at its send time, the reply the
downlink delay when it turns around, in order), minus the kernel's own latency (measured
over a 1.5 s window at 2 ms RTT before the trace). Prints, per trace: probes, steps, per-step median error |measured - expected|
(median and p95 over steps), and the replayer's schedule lag. Needs a kernel with sch_netem (run it
in the stock-kernel VM: ``sudo bash scripts/vmtest.sh --bench``).

    sudo .venv/bin/python benchmarks/rtt_replay.py [--duration 20]

Target at 100 ms steps: median per-step error <= 2 ms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.emulation import Emulation, fidelity, probe  # noqa: E402
from testbed.emulation.topology import parse_topology  # noqa: E402
from testbed.traces import Trace, load_trace  # noqa: E402


def topology(up: dict | None = None, down: dict | None = None):
    link = {"ends": ["device", "cloud"], "bw_mbps": 100, "queue_packets": 200}
    if up:
        link["up"] = up
    if down:
        link["down"] = down
    return parse_topology({"name": "rtt-bench", "hosts": {"device": {"role": "device"}, "cloud": {"role": "cloud"}},
                           "links": {"access": link}})


def at_constant_rate(trace: Trace, rate_mbps: float = 50.0) -> Trace:
    """The trace's RTT column at a constant rate: what is measured is the RTT replay, not queueing (the
    HSPA trace starts with seconds at ~0 Mbit/s, where a ping waits behind the rate, not the delay)."""
    n = len(trace.times)
    return Trace(trace.times, np.full(n, rate_mbps), np.full(n, rate_mbps), trace.duration, rtt_ms=trace.rtt_ms,
                 meta={**trace.meta, "name": f"{trace.meta.get('name', 'trace')} (RTT only, {rate_mbps:g} Mbit/s)"})


def busiest_rtt_window(trace: Trace, duration: float) -> float:
    """Start (s, whole seconds) of the ``duration`` window with the most RTT changes, then the widest swing."""
    starts = np.arange(0, max(1.0, trace.duration - duration), 1.0)

    def score(a):
        rtt = trace.rtt_ms[(trace.times >= a) & (trace.times < a + duration)]
        return (int(np.sum(np.diff(rtt) != 0)), float(np.ptp(rtt)) if len(rtt) else 0.0)

    return float(max(starts, key=score))


def run(trace: Trace, duration: float, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    trace = fidelity.with_calibration(trace)  # 1.5 s at 2 ms RTT: the kernel's own latency in this run
    with Emulation(topology(), traces={"access": trace}, log_dir=out, granularity=0.1) as emu:
        sent, rtts = fidelity.ping_probe(emu, "device", "cloud", duration + 1.5)
        up, down = emu.timeline("access", "up"), emu.timeline("access", "down")
    base = fidelity.calibration_baseline(up, down, sent, rtts)
    fid = fidelity.rtt_fidelity(up, down, sent, rtts, base, warmup=1.6)
    s = fid.summary()
    for start, error, rows in fid.worst_steps(3):  # where the largest per-step errors are (a long tail)
        probes = ", ".join(f"{a:.3f}s {m:.1f}/{e:.1f}ms" for a, m, e in rows[:4])
        print(f"{out.name}: step {start:.1f} s error {error:+.1f} ms, {len(rows)} probes (sent, measured/expected): "
              f"{probes}")
    lags = fidelity.read_lags(out / "replay.csv")
    lags = lags[lags >= 0]
    s["lag_median_ms"] = float(np.median(lags)) if len(lags) else float("nan")
    s["changes"] = int(len(lags))
    in_window = [x for x in up if 1.5 <= x.t < duration + 1.5]
    s["rtt_range_ms"] = (2 * min(x.delay_ms for x in in_window), 2 * max(x.delay_ms for x in in_window))
    return s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--real", default=str(REPO / "traces" / "hspa-driving-cork-rtt.csv"))
    p.add_argument("--real-start", type=float, default=None,
                   help="where in the real trace to start (s); default: the window where its RTT changes most often")
    p.add_argument("--out", default="/tmp/tb-bench-rtt")
    args = p.parse_args()
    if not probe().netem:
        sys.exit("rtt_replay: this kernel has no sch_netem; run it in the stock-kernel VM "
                 "(sudo bash scripts/vmtest.sh --bench)")
    full = load_trace(args.real)
    start = busiest_rtt_window(full, args.duration) if args.real_start is None else args.real_start
    real = at_constant_rate(full.slice(start, start + args.duration))
    rows = [("synthetic walk", run(fidelity.rtt_walk(args.duration), args.duration, Path(args.out) / "walk")),
            (f"{Path(args.real).stem} from {start:g} s, RTT only", run(real, args.duration, Path(args.out) / "real"))]
    import platform

    print(f"\nRTT replay at 100 ms steps, {args.duration:g} s per trace, kernel {platform.release()}, "
          "ping every 10 ms; the kernel's own latency (measured in each run over 1.5 s at 2 ms RTT) taken out\n")
    print("| trace | RTT range ms | kernel's own ms | probes | steps | per-step median err ms | p95 err ms | changes "
          "| lag median ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s['rtt_range_ms'][0]:g}-{s['rtt_range_ms'][1]:g} | {s['baseline_ms']:.2f} | "
              f"{s['probes']} | {s['steps']} | "
              f"{s['median_abs_error_ms']:.2f} | {s['p95_abs_error_ms']:.2f} | {s['changes']} | "
              f"{s['lag_median_ms']:.3f} |")


if __name__ == "__main__":
    main()

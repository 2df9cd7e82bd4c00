"""How faithfully an emulated link follows its trace: a backlogged TCP flow, measured at the receiver.

Used by ``testbed replay-demo``, the integration tests and the replay-fidelity
benchmark. Rates are compared at the link layer: the sink counts TCP payload,
which is converted to wire bytes (1514-byte frames carry 1448 payload bytes
with TCP timestamps), since the trace and HTB both count whole frames.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from testbed.emulation.emulation import Emulation
from testbed.emulation.schedule import OPEN, Step

WIRE_PER_PAYLOAD = 1514 / 1448
SINK_PORT = 5001
# SO_SNDBUF for a flow that must not lose a segment on a 200-packet queue: Linux doubles it and counts
# skb overhead, which leaves well under 200 full-size segments in flight (measured: no overflow loss
# on a 6 Mbit/s link with 10 ms each way, where an uncapped CUBIC flow overflows it every few seconds)
LOSSLESS_SEND_BUFFER = 64 * 1024


@dataclass
class Fidelity:
    window: float
    starts: np.ndarray  # window start times, s since replay start
    expected_mbps: np.ndarray  # trace rate averaged over each window (0 in outages)
    achieved_mbps: np.ndarray  # receiver-side, link-layer
    lags_ms: np.ndarray  # applied - scheduled for every rate/gate change
    outages: list[tuple[float, float]] = field(default_factory=list)

    def delivered_fraction(self, warmup: float = 1.0) -> float:
        """Bytes delivered / bytes the trace offered, after ``warmup`` s (connection setup, slow start)."""
        k = int(round(warmup / self.window))
        return float(self.achieved_mbps[k:].sum() / max(self.expected_mbps[k:].sum(), 1e-9))

    def errors(self, min_rate_mbps: float = 1.0, skip: list[float] | None = None,
               warmup: float = 1.0) -> np.ndarray:
        """|achieved - expected| / expected per window with expected >= ``min_rate_mbps``.

        Leaves out the first ``warmup`` seconds and, for each time in ``skip`` (e.g. the step
        changes of a step trace, where TCP needs a few RTTs to find the new rate), the window
        that holds it and the next one.
        """
        keep = self.expected_mbps >= min_rate_mbps
        keep[: int(round(warmup / self.window))] = False
        for t in skip or []:
            i = int(t // self.window)
            keep[i: i + 2] = False
        e = self.expected_mbps[keep]
        return np.abs(self.achieved_mbps[keep] - e) / e

    def summary(self, skip: list[float] | None = None) -> dict:
        err = self.errors(skip=skip)
        return {
            "windows": int(len(err)),
            "median_error": float(np.median(err)) if len(err) else float("nan"),
            "p95_error": float(np.percentile(err, 95)) if len(err) else float("nan"),
            "delivered_fraction": self.delivered_fraction(),
            "lag_median_ms": float(np.median(self.lags_ms)) if len(self.lags_ms) else float("nan"),
            "lag_max_ms": float(np.max(self.lags_ms)) if len(self.lags_ms) else float("nan"),
            "changes": int(len(self.lags_ms)),
        }


def expected_per_window(steps: list[Step], duration: float, window: float) -> np.ndarray:
    """Mean trace rate (Mbit/s) per window; closed-gate time counts as zero."""
    fine = 0.001
    t = np.arange(0, duration, fine)
    times = np.array([s.t for s in steps])
    idx = np.searchsorted(times, t, side="right") - 1
    rate = np.array([0.0 if s.gate != OPEN else s.trace_bps for s in steps])[np.clip(idx, 0, None)]
    n = int(duration / window)
    per = int(round(window / fine))
    return rate[: n * per].reshape(n, per).mean(axis=1) / 1e6


def read_lags(replay_csv: Path) -> np.ndarray:
    with open(replay_csv) as f:
        rows = [r for r in csv.DictReader(f) if float(r["scheduled_s"]) > 0]
    return np.array([(float(r["applied_s"]) - float(r["scheduled_s"])) * 1000 for r in rows])


FLOWPROBE = str(Path(__file__).with_name("flowprobe.py"))  # run as a script: no package imports, fast start


def run_flow(emu: Emulation, direction: str, duration: float, out_dir: Path, link: str = "access",
             send_buffer: int | None = None) -> dict:
    """Backlogged TCP over ``link`` in ``direction`` from t≈0 to ``duration``; returns the sink's record.

    ``send_buffer`` (bytes) caps what the flow keeps in flight; below the link's queue no segment is
    lost, so per-window bytes measure the link without TCP's loss recovery (see ``flowprobe.source``).

    With an emulation built with ``hold_clock=True``, the probes are started first and the replay
    clock once they are up (a slow CPU, e.g. the stock-kernel VM's emulated one, may need seconds to
    start a Python process); otherwise they start on the running clock.
    """
    spec = emu.topology.links[link]
    sender, receiver = (spec.a, spec.b) if direction == "up" else (spec.b, spec.a)
    src_host, dst_host = emu.host(sender), emu.host(receiver)
    sink_file = out_dir / f"sink-{direction}.json"
    py = sys.executable
    held = emu.t0 is None
    if held:
        began = time.monotonic()
        dst_host.popen([py, "-c", "pass"]).wait(120)
        t0 = time.monotonic() + 4 * (time.monotonic() - began) + 1.0
    else:
        t0 = emu.t0
    sink = dst_host.popen([py, FLOWPROBE, "sink", "--port", str(SINK_PORT), "--duration", str(duration),
                           "--out", str(sink_file), "--t0", str(t0)])
    if not held:
        time.sleep(0.2)
    # with a held clock the source starts alongside the sink (it retries its connect), so both run by t0
    source = src_host.popen([py, FLOWPROBE, "source", "--host", dst_host.IP(), "--port", str(SINK_PORT),
                             "--duration", str(t0 + duration - time.monotonic())]
                            + (["--send-buffer", str(int(send_buffer))] if send_buffer else []))
    if held:
        ready = sink.stdout.readline().decode().strip()
        if ready != "ready" or time.monotonic() > t0:
            source.kill()
            raise RuntimeError(f"flow sink not ready before the clock start ({ready!r})")
        emu.start_clock(t0)
    try:
        sink.wait(timeout=t0 + duration - time.monotonic() + 60)
    finally:
        source.kill()
        source.wait()
    if sink.returncode != 0:
        raise RuntimeError(f"flow sink failed: {sink.stderr.read().decode() if sink.stderr else ''}")
    return json.loads(sink_file.read_text())


def one_direction(trace, direction: str, other_mbps: float = 1000.0):
    """The trace with the other direction wide open.

    A TCP flow's ACKs cross the reverse direction: replaying a real uplink with its outages
    stalls a downlink flow (faithfully), which would hide how well the measured direction
    itself follows its trace.
    """
    from dataclasses import replace

    other = np.full(len(trace.times), float(other_mbps))
    return replace(trace, **({"up_mbps": other} if direction == "down" else {"down_mbps": other}))


def measure(topology: str | Path, trace, direction: str = "down", duration: float | None = None,
            faults=(), granularity: float = 0.1, window: float = 1.0, out_dir: str | Path = "/tmp/tb-fidelity",
            params: dict | None = None, link: str = "access", isolate: bool = True,
            send_buffer: int | None = None) -> Fidelity:
    """Replay ``trace`` on ``link`` and measure a backlogged flow in ``direction``.

    ``isolate`` opens the reverse direction wide (see :func:`one_direction`); ``send_buffer`` caps
    the flow's bytes in flight (see :func:`run_flow`).
    """
    from testbed.emulation.flowprobe import per_window

    if isolate:
        trace = one_direction(trace, direction)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    duration = float(duration or trace.duration)
    with Emulation.from_yaml(topology, traces={link: trace}, faults=list(faults), log_dir=out_dir,
                             granularity=granularity, params=params) as emu:
        result = run_flow(emu, direction, duration, out_dir, link, send_buffer=send_buffer)
        steps = emu.timeline(link, direction)
    achieved = per_window(result, window) * WIRE_PER_PAYLOAD
    expected = expected_per_window(steps, duration, window)
    n = min(len(achieved), len(expected))
    outages = []
    for s, nxt in zip(steps, steps[1:] + [None]):
        if s.gate != OPEN and s.t < duration:
            outages.append((s.t, nxt.t if nxt else duration))
    return Fidelity(window=window, starts=np.arange(n) * window, expected_mbps=expected[:n],
                    achieved_mbps=achieved[:n], lags_ms=read_lags(out_dir / "replay.csv"),
                    outages=outages)


def plot(fid: Fidelity, path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.step(fid.starts, fid.expected_mbps, where="post", label="trace", color="0.3")
    ax.step(fid.starts, fid.achieved_mbps, where="post", label="achieved (receiver)", color="tab:blue")
    for s, e in fid.outages:
        ax.axvspan(s, e, color="tab:red", alpha=0.15, lw=0)
    ax.set_xlabel("time since replay start (s)")
    ax.set_ylabel(f"Mbit/s per {fid.window:g} s")
    s = fid.summary()
    ax.set_title(title or f"median error {s['median_error']:.1%}, delivered {s['delivered_fraction']:.1%}")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- RTT replay


def delay_at(steps: list[Step], t: float) -> float:
    """The netem delay (ms) a direction's timeline applies at ``t``."""
    i = np.searchsorted([s.t for s in steps], t, side="right") - 1
    return steps[max(int(i), 0)].delay_ms


def expected_rtts_ms(up: list[Step], down: list[Step], sent_s: np.ndarray) -> np.ndarray:
    """What a probe sent at each time should measure (ms, without the kernel's own latency).

    The request takes the uplink's delay at its send time, the reply the downlink's delay when it is
    sent back; netem keeps each direction in order (it has a rate, see ``shaping``), so a packet never
    leaves before the one ahead of it even when the delay drops.
    """
    out = np.empty(len(sent_s))
    last_up = last_down = -np.inf
    for i, t in enumerate(sent_s):
        at_cloud = max(last_up, t + delay_at(up, t) / 1000)
        back = max(last_down, at_cloud + delay_at(down, at_cloud) / 1000)
        last_up, last_down = at_cloud, back
        out[i] = (back - t) * 1000
    return out


def ping_probe(emu: Emulation, src: str, dst: str, duration: float, interval: float = 0.01) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """Ping ``dst`` from ``src`` for ``duration`` s: (send times on the replay clock in s, RTTs in ms)."""
    import re

    count = int(duration / interval)
    # ping -D stamps each reply with the wall clock; the replay clock is monotonic: map one onto the other
    wall_minus_mono = time.time() - time.monotonic()
    out = emu.host(src).cmd(f"ping -D -n -c {count} -i {interval} -W 2 {emu.host(dst).IP()}")
    rows = re.findall(r"^\[([\d.]+)\].*time=([\d.]+) ms", out, re.M)
    stamps = np.array([float(a) for a, _ in rows])
    rtts = np.array([float(b) for _, b in rows])
    step_ms = (time.time() - time.monotonic() - wall_minus_mono) * 1e3
    if abs(step_ms) > 5:  # the mapping assumed none: send times after the step are off by that much
        print(f"ping_probe: the wall clock moved {step_ms:+.1f} ms against the monotonic clock during the probe")
    sent = stamps - rtts / 1000 - wall_minus_mono - emu.t0
    return sent, rtts


@dataclass
class RttFidelity:
    """Per-step medians of measured - expected RTT (ms), the kernel's own latency taken out, and the
    probes behind them (in send order)."""

    step_starts: np.ndarray
    step_errors_ms: np.ndarray  # median over the probes sent in each step
    baseline_ms: float
    granularity: float
    sent_s: np.ndarray  # each probe's send time on the replay clock
    rtts_ms: np.ndarray  # what it measured
    expected_ms: np.ndarray  # what the timeline says it should have (without the kernel's own latency)

    @property
    def probes(self) -> int:
        return int(len(self.sent_s))

    def summary(self) -> dict:
        err = np.abs(self.step_errors_ms)
        return {"steps": int(len(err)), "probes": self.probes, "baseline_ms": self.baseline_ms,
                "median_abs_error_ms": float(np.median(err)) if len(err) else float("nan"),
                "p95_abs_error_ms": float(np.percentile(err, 95)) if len(err) else float("nan")}

    def worst_steps(self, n: int = 3) -> list[tuple[float, float, np.ndarray]]:
        """The ``n`` steps with the largest |error|: (start s, error ms, their probes as rows of send time
        s, measured ms, expected ms), to explain a long tail."""
        out = []
        for i in np.argsort(-np.abs(self.step_errors_ms))[:n]:
            start = float(self.step_starts[i])
            keep = (self.sent_s >= start) & (self.sent_s < start + self.granularity)
            rows = np.column_stack((self.sent_s[keep], self.rtts_ms[keep], self.expected_ms[keep]))
            out.append((start, float(self.step_errors_ms[i]), rows))
        return out


def rtt_fidelity(up: list[Step], down: list[Step], sent_s: np.ndarray, rtts_ms: np.ndarray, baseline_ms: float,
                 granularity: float = 0.1, warmup: float = 0.5) -> RttFidelity:
    """Compare every probe with :func:`expected_rtts_ms` and summarise per replay step."""
    order = np.argsort(sent_s)
    sent_s, rtts_ms = sent_s[order], rtts_ms[order]
    expected = expected_rtts_ms(up, down, sent_s)
    error = rtts_ms - baseline_ms - expected
    steps = np.floor(sent_s / granularity).astype(int)
    starts, errors = [], []
    for k in np.unique(steps):
        if k * granularity < warmup:
            continue
        starts.append(k * granularity)
        errors.append(float(np.median(error[steps == k])))
    return RttFidelity(np.array(starts), np.array(errors), baseline_ms, granularity, sent_s, rtts_ms, expected)


def rtt_walk(duration: float = 10.0, step: float = 0.1, seed: int = 13, rate_mbps: float = 50.0):
    """A synthetic RTT trace: a new RTT every ``step`` s, a random walk (jumps up to 30 ms) reflected
    inside 20..160 ms, at a constant rate. (A clipped walk sat at 160 ms for a third of its steps.)"""
    from testbed.traces import Trace

    rng = np.random.default_rng(seed)
    n = int(round(duration / step))
    rtt, x = np.empty(n), 80.0
    for i, jump in enumerate(rng.uniform(-30, 30, n)):
        x += jump
        x = 320 - x if x > 160 else 40 - x if x < 20 else x
        rtt[i] = round(x, 1)
    return Trace(np.arange(n) * step, np.full(n, rate_mbps), np.full(n, rate_mbps), duration, rtt_ms=rtt,
                 meta={"name": f"synthetic RTT random walk (new RTT every {step * 1e3:g} ms, 20-160 ms)"})


def with_calibration(trace, seconds: float = 1.5, rtt_ms: float = 2.0):
    """``trace`` delayed by ``seconds`` of a fixed small RTT (its first rates): probes there measure what
    the kernel adds by itself in this very run (netem timer wake-ups, late on an emulated CPU)."""
    from testbed.traces import Trace

    cat = np.concatenate
    return Trace(cat(([0.0], trace.times + seconds)), cat((trace.down_mbps[:1], trace.down_mbps)),
                 cat((trace.up_mbps[:1], trace.up_mbps)), trace.duration + seconds,
                 rtt_ms=cat(([rtt_ms], trace.rtt_ms)), meta=dict(trace.meta))


def calibration_baseline(up: list[Step], down: list[Step], sent_s: np.ndarray, rtts_ms: np.ndarray,
                         start: float = 0.3, end: float = 1.4) -> float:
    """Median of measured - expected RTT over the probes sent in the calibration window (ms)."""
    keep = (sent_s >= start) & (sent_s < end)
    if keep.sum() < 10:
        raise RuntimeError(f"only {int(keep.sum())} probes in the calibration window {start}-{end} s")
    return float(np.median(rtts_ms[keep] - expected_rtts_ms(up, down, sent_s[keep])))

"""The trace replayer: a separate process that applies every port's timeline on time.

It runs in its own process (not a thread) so that the GIL, garbage collection
or a busy experiment loop in the controlling process cannot delay a rate
change; it asks for SCHED_FIFO when allowed, and dies with its parent
(PR_SET_PDEATHSIG) so a crashed run cannot leave it changing qdiscs.

Every applied change is logged as one CSV row: scheduled and applied time
(seconds since replay start, same monotonic clock as every host), link,
direction, the trace's rate, the applied rate, gate state, loss and netem delay (one way, ms).
"""

from __future__ import annotations

import ctypes
import heapq
import logging
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

from testbed.emulation import netlink
from testbed.emulation.schedule import Step
from testbed.emulation.shaping import Port, PortDriver

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
MAX_LEAD_S = 0.010  # never start a change more than this early
LOG_HEADER = "scheduled_s,applied_s,link,direction,trace_mbps,rate_mbps,gate,loss_pct,delay_ms\n"


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # pragma: no cover
        pass


def _realtime_priority() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(20))
    except (OSError, AttributeError):
        pass


def _run(ports: list[Port], timelines: list[list[Step]], t0: float, log_path: str | None,
         stop: mp.synchronize.Event, ready: mp.synchronize.Event) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    _realtime_priority()
    socks: dict[int | None, netlink.TcSocket] = {}
    drivers = []
    for port, steps in zip(ports, timelines):
        if port.netns_pid not in socks:
            socks[port.netns_pid] = netlink.TcSocket(port.netns_pid)
        driver = PortDriver(port, socks[port.netns_pid], steps[0])
        driver.open_kick_socket()
        drivers.append(driver)
    out = open(log_path, "a", buffering=1) if log_path else None
    # (time, port index, step index): a merged stream over all ports, in time order
    queue = [(steps[1].t, i, 1) for i, steps in enumerate(timelines) if len(steps) > 1]
    heapq.heapify(queue)
    apply_cost_s = 0.0  # moving average of how long one change takes the kernel
    for driver in drivers:
        for _ in range(3):
            began = time.monotonic()
            driver.rewrite_rate()
            apply_cost_s = min(MAX_LEAD_S, time.monotonic() - began)
    ready.set()
    try:
        while queue and not stop.is_set():
            t, i, k = queue[0]
            # A change takes the kernel ~2-4 ms here (measured); start it that much early, as the
            # recent changes took, so that it completes on schedule. No busy-wait: at real-time
            # priority it would take a core from the paced device agents on a 2-core host.
            delay = t0 + t - apply_cost_s - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            heapq.heappop(queue)
            step = timelines[i][k]
            began = time.monotonic()
            try:
                drivers[i].apply(step)
            except Exception as exc:  # keep replaying the other ports; the log shows the failure
                log.error("replay %s at %.3f s: %s", ports[i].key, t, exc)
            done = time.monotonic()
            apply_cost_s = min(MAX_LEAD_S, 0.8 * apply_cost_s + 0.2 * (done - began))
            applied = done - t0
            if out:
                out.write(f"{t:.6f},{applied:.6f},{ports[i].link},{ports[i].direction},"
                          f"{step.trace_bps / 1e6:.6f},{step.rate_bps / 1e6:.6f},{step.gate},{step.loss_pct:g},"
                          f"{step.delay_ms:g}\n")
            if k + 1 < len(timelines[i]):
                heapq.heappush(queue, (timelines[i][k + 1].t, i, k + 1))
    finally:
        for d in drivers:
            d.close()
        for s in socks.values():
            s.close()
        if out:
            out.close()


class Replayer:
    """Starts/stops the replay process for a set of ports and their timelines."""

    def __init__(self, ports: list[Port], timelines: list[list[Step]], log_dir: Path | None):
        self.ports = ports
        self.timelines = timelines
        self.log_path = str(log_dir / "replay.csv") if log_dir else None
        self.process: mp.Process | None = None
        self._ctx = mp.get_context("fork")
        self._stop = self._ctx.Event()

    def start(self, t0: float) -> None:
        if self.log_path:
            with open(self.log_path, "w") as f:
                f.write(LOG_HEADER)
                for port, steps in zip(self.ports, self.timelines):  # the state installed at t = 0
                    s = steps[0]
                    f.write(f"0,0,{port.link},{port.direction},{s.trace_bps / 1e6:.6f},{s.rate_bps / 1e6:.6f},"
                            f"{s.gate},{s.loss_pct:g},{s.delay_ms:g}\n")
        ready = self._ctx.Event()
        self.process = self._ctx.Process(target=_run, name="testbed-replay", daemon=True,
                                         args=(self.ports, self.timelines, t0, self.log_path, self._stop, ready))
        self.process.start()
        if not ready.wait(10):
            self.stop()
            raise RuntimeError("trace replayer did not start within 10 s")

    def stop(self) -> None:
        if self.process is None:
            return
        self._stop.set()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(2)
        self.process = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

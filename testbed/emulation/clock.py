"""Clock offsets between this machine's monotonic clock and another server's, by SSH round trips.

One persistent SSH session runs a tiny echo loop on the other server that answers every line with
its ``time.monotonic()``. For each of ``samples`` round trips, the local clock is read just before
the request (``t_send``) and just after the reply (``t_recv``); the reply was read somewhere in
between, so ``offset = remote - (t_send + t_recv) / 2`` is exact to within half the round trip. The
round trip with the smallest RTT gives the estimate and its bound (the classic min-RTT method, as
in Cristian's algorithm / NTP's clock filter):

    offset_s        remote_monotonic - local_monotonic, at the moment of the best sample
    uncertainty_s   min RTT / 2: the true offset lies within offset_s +- uncertainty_s

``local + offset_s`` converts a local monotonic time to the server's clock (and ``remote - offset_s``
back). Measured at the start and at the end of a run, the two estimates give the drift
(``drift_ppm``), and any time between can be converted by interpolating.
"""

from __future__ import annotations

import select
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass

from testbed.errors import TestbedError

ECHO_LOOP = ("import sys, time\n"
             "for _ in sys.stdin:\n"
             "    sys.stdout.write(repr(time.monotonic()) + '\\n')\n"
             "    sys.stdout.flush()\n")


@dataclass(frozen=True)
class OffsetSample:
    server: str
    local_monotonic: float  # midpoint of the best round trip, local clock
    offset_s: float  # remote - local
    uncertainty_s: float  # min RTT / 2
    min_rtt_s: float
    median_rtt_s: float
    samples: int

    def as_dict(self) -> dict:
        return asdict(self)


def measure_offset(ssh_argv: list[str], server: str, python: str = "python3", samples: int = 32,
                   timeout: float = 20.0) -> OffsetSample:
    """Offset of ``server``'s monotonic clock from ours, via ``ssh_argv`` (a full ssh command up to the
    destination, e.g. ``["ssh", "-p", "22", "root@10.0.0.2"]``); for the local machine, ``ssh_argv=[]``.
    """
    if samples < 1:
        raise TestbedError(f"clock offset: samples must be >= 1, got {samples}")
    remote_cmd = [python, "-u", "-c", ECHO_LOOP]
    argv = ssh_argv + [" ".join(shlex.quote(a) for a in remote_cmd)] if ssh_argv else remote_cmd
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1)
    best: tuple[float, float, float] | None = None  # rtt, midpoint, remote
    rtts = []
    deadline = time.monotonic() + timeout
    try:
        # first round trip: connection set-up and interpreter start, not counted
        for i in range(samples + 1):
            if time.monotonic() > deadline:
                raise TestbedError(f"clock offset to {server}: no answer within {timeout:g} s")
            t_send = time.monotonic()
            proc.stdin.write("\n")
            proc.stdin.flush()
            if not select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TestbedError(f"clock offset to {server}: no answer within {timeout:g} s")
            line = proc.stdout.readline()
            t_recv = time.monotonic()
            if not line:
                err = proc.stderr.read().strip()
                raise TestbedError(f"clock offset to {server}: the echo loop ended ({err or 'no message'}); "
                                   f"command: {' '.join(argv[:6])} ...")
            if i == 0:
                continue
            remote = float(line)
            rtt = t_recv - t_send
            rtts.append(rtt)
            mid = (t_send + t_recv) / 2
            if best is None or rtt < best[0]:
                best = (rtt, mid, remote)
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            f.close()
    rtt, mid, remote = best
    rtts.sort()
    return OffsetSample(server=server, local_monotonic=mid, offset_s=remote - mid, uncertainty_s=rtt / 2,
                        min_rtt_s=rtt, median_rtt_s=rtts[len(rtts) // 2], samples=len(rtts))


def drift(start: OffsetSample, end: OffsetSample) -> dict:
    """Start and end estimates combined: drift in ppm and the offset's bound over the run."""
    span = end.local_monotonic - start.local_monotonic
    ppm = (end.offset_s - start.offset_s) / span * 1e6 if span > 0 else 0.0
    return {"server": start.server, "start": start.as_dict(), "end": end.as_dict(), "span_s": span,
            "drift_ppm": ppm, "offset_change_s": end.offset_s - start.offset_s,
            "uncertainty_s": max(start.uncertainty_s, end.uncertainty_s)}


def to_remote(local_t: float, start: OffsetSample, end: OffsetSample | None = None) -> float:
    """A local monotonic time on the server's clock (interpolating between start and end estimates)."""
    if end is None or end.local_monotonic == start.local_monotonic:
        return local_t + start.offset_s
    frac = (local_t - start.local_monotonic) / (end.local_monotonic - start.local_monotonic)
    return local_t + start.offset_s + frac * (end.offset_s - start.offset_s)

"""Backlogged TCP source and receiver-side meter, for measuring what an emulated link carries.

Run inside emulated hosts (``python -m testbed.emulation.flowprobe sink|source``).
The sink records received bytes in fixed bins of the shared monotonic clock,
so its series lines up with the replay clock of the emulation (``t0``).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

BIN_S = 0.01


def sink(port: int, duration: float, out: str, t0: float) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(1)
    print("ready", flush=True)
    srv.settimeout(duration + 30)
    conn, _ = srv.accept()
    conn.settimeout(0.2)
    n_bins = int(duration / BIN_S) + 1
    counts = [0] * n_bins  # no numpy here: the probe must start fast (an emulated CPU in the stock-kernel VM)
    buf = bytearray(1 << 20)
    end = t0 + duration
    while True:
        now = time.monotonic()
        if now >= end:
            break
        try:
            n = conn.recv_into(buf)
        except TimeoutError:
            continue
        except OSError:
            break
        if n == 0:
            break
        i = int((time.monotonic() - t0) / BIN_S)
        if 0 <= i < n_bins:
            counts[i] += n
    conn.close()
    with open(out, "w") as f:
        json.dump({"t0": t0, "bin_s": BIN_S, "bytes": counts}, f)


def source(host: str, port: int, duration: float, congestion: str = "cubic", send_buffer: int | None = None) -> None:
    """Send as fast as TCP allows for ``duration`` seconds.

    ``send_buffer`` (bytes, SO_SNDBUF) caps what the flow keeps in flight. Below the link's queue it
    never overflows the queue, so no segment is lost: the receiver's per-window bytes then measure the
    link alone, without TCP's loss recovery (a lost segment withholds everything behind it from the
    application until its retransmission has crossed the queue, which shifts bytes between windows).
    """
    end = time.monotonic() + duration
    chunk = b"\0" * 65536
    for _ in range(100):
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # CUBIC by default: loss-based and steady per second, so the link's fidelity is what is measured,
            # not BBR's periodic ProbeRTT dips (Debian's default here is BBR).
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())
            if send_buffer:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
            s.settimeout(2)
            s.connect((host, port))
            break
        except OSError:
            time.sleep(0.05)
    else:
        sys.exit(f"source: cannot connect to {host}:{port}")
    s.settimeout(1.0)
    while time.monotonic() < end:
        try:
            s.send(chunk)
        except TimeoutError:
            continue
        except OSError:
            break
    s.close()


def per_window(result: dict, window: float):
    """Received Mbit/s per ``window`` seconds from a sink result (a numpy array)."""
    import numpy as np

    b = np.asarray(result["bytes"], dtype=float)
    k = int(round(window / result["bin_s"]))
    n = len(b) // k
    return b[: n * k].reshape(n, k).sum(axis=1) * 8 / window / 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sink")
    s.add_argument("--port", type=int, default=5001)
    s.add_argument("--duration", type=float, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--t0", type=float, required=True, help="replay start on the monotonic clock")
    c = sub.add_parser("source")
    c.add_argument("--host", required=True)
    c.add_argument("--port", type=int, default=5001)
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--congestion", default="cubic", help="TCP congestion control of the flow")
    c.add_argument("--send-buffer", type=int, default=None,
                   help="SO_SNDBUF in bytes: caps what the flow keeps in flight (below the queue: no loss)")
    a = p.parse_args()
    if a.cmd == "sink":
        sink(a.port, a.duration, a.out, a.t0)
    else:
        source(a.host, a.port, a.duration, a.congestion, a.send_buffer)


if __name__ == "__main__":
    main()

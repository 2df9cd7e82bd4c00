"""Transport benchmark: ZeroMQ tensor transport vs a plain TCP socket, side by side in one run.

    .venv/bin/python benchmarks/transport.py [--quick] [--no-emulation]

(a) loopback round-trip goodput (echo) for 1 KB .. 64 MB vs sendall/recv_into of the same bytes;
(b) per-message overhead for small tensors; (c) goodput over an emulated link shaped to 10 and
50 Mbit/s (needs root and testbed.emulation; skipped otherwise); (d) codec size ratio and
encode+decode time on a ReLU feature map. Both servers run as subprocesses (one core each).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = [1_000, 16_000, 256_000, 1_000_000, 4_000_000, 16_000_000, 64_000_000]


# -- plain TCP echo baseline ---------------------------------------------------------


def plain_server(port: int) -> None:
    """Length-prefixed echo: recv_into a buffer, sendall it back (the best a socket can do)."""
    listener = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray(max(SIZES))
    while True:
        head = recv_exact(conn, memoryview(bytearray(8)))
        if head is None:
            return
        (size,) = struct.unpack("<Q", head)
        view = memoryview(buffer)[:size]
        recv_exact(conn, view)
        conn.sendall(struct.pack("<Q", size))
        conn.sendall(view)


def recv_exact(conn: socket.socket, view: memoryview):
    got = 0
    while got < len(view):
        n = conn.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return view


def raw_zmq_server(port: int) -> None:
    """Bare pyzmq ROUTER echo (no header, no validation, no workers): the libzmq floor."""
    import zmq

    sock = zmq.Context().socket(zmq.ROUTER)
    sock.bind(f"tcp://127.0.0.1:{port}")
    print("ready", flush=True)
    while True:
        sock.send_multipart(sock.recv_multipart(copy=False), copy=False)


class RawZmqClient:
    def __init__(self, port: int, chunk: int = 256 * 1024):
        import zmq

        self.zmq = zmq
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.chunk = chunk

    def roundtrip(self, payload: np.ndarray) -> None:
        view = memoryview(payload).cast("B")
        frames = [b"h"] + [view[i : i + self.chunk] for i in range(0, len(view), self.chunk)]
        self.sock.send_multipart(frames, copy=payload.nbytes < 65536)
        self.sock.recv_multipart(copy=False)


class PlainClient:
    def __init__(self, port: int):
        self.conn = socket.create_connection(("127.0.0.1", port))
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = memoryview(bytearray(8))

    def roundtrip(self, payload: np.ndarray, out: np.ndarray) -> None:
        self.conn.sendall(struct.pack("<Q", payload.nbytes))
        self.conn.sendall(memoryview(payload).cast("B"))
        recv_exact(self.conn, self.head)
        recv_exact(self.conn, memoryview(out).cast("B"))


# -- measurement helpers -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def repeats_for(size: int, quick: bool) -> int:
    budget = 64_000_000 if quick else 512_000_000
    return int(min(2000 if size < 100_000 else 200, max(5, budget // max(size, 1))))


def timed(fn, repeats: int, warmup: int = 3) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def loopback(quick: bool) -> tuple[list[dict], list[dict]]:
    from testbed.transport import Client

    zport, pport, rport = free_port(), free_port(), free_port()
    zserver = start([sys.executable, "-m", "testbed.transport.server", "--endpoint", f"tcp://127.0.0.1:{zport}",
                     "--workers", "1"])
    pserver = start([sys.executable, __file__, "--plain-server", str(pport)])
    rserver = start([sys.executable, __file__, "--raw-zmq-server", str(rport)])
    pserver.stdout.readline()
    rserver.stdout.readline()
    rows, small = [], []
    try:
        plain = PlainClient(pport)
        raw = RawZmqClient(rport)
        with Client(f"tcp://127.0.0.1:{zport}") as client:
            while not client.ping(1.0).ok:
                pass
            for size in ([16, 1_000] + SIZES[1:2]):
                payload = np.ones(size // 4, np.float32)
                out = np.empty_like(payload)
                t_zmq = timed(lambda p=payload: client.request([p], deadline_s=10), repeats_for(size, quick) * 2)
                t_tcp = timed(lambda p=payload, o=out: plain.roundtrip(p, o), repeats_for(size, quick) * 2)
                t_raw = timed(lambda p=payload: raw.roundtrip(p), repeats_for(size, quick) * 2)
                small.append({"bytes": size, "zmq_us": t_zmq * 1e6, "tcp_us": t_tcp * 1e6, "raw_us": t_raw * 1e6,
                              "overhead_us": (t_zmq - t_tcp) * 1e6})
            for size in SIZES:
                payload = np.random.default_rng(0).integers(0, 255, size, np.uint8)
                out = np.empty_like(payload)

                def zmq_roundtrip(p=payload):
                    result = client.request([p], deadline_s=30)
                    assert result.ok and result.tensors["0"].nbytes == p.nbytes, result.error

                reps = repeats_for(size, quick)
                t_zmq = timed(zmq_roundtrip, reps)
                t_tcp = timed(lambda p=payload, o=out: plain.roundtrip(p, o), reps)
                t_raw = timed(lambda p=payload: raw.roundtrip(p), reps)
                rows.append({"bytes": size, "zmq_ms": t_zmq * 1e3, "tcp_ms": t_tcp * 1e3, "raw_ms": t_raw * 1e3,
                             "raw_ratio": t_tcp / t_raw,
                             "zmq_MBps": 2 * size / t_zmq / 1e6, "tcp_MBps": 2 * size / t_tcp / 1e6,
                             "ratio": t_tcp / t_zmq})
        plain.conn.close()
    finally:
        for proc in (zserver, pserver, rserver):
            proc.terminate()
            proc.wait(10)
    return rows, small


def codecs_table() -> list[dict]:
    from testbed.transport.codecs import available_codecs, decode, encode

    rng = np.random.default_rng(0)
    # ReLU output of a conv layer: roughly half zeros, positive half-normal values
    fmap = np.maximum(rng.standard_normal((1, 64, 16, 16)).astype(np.float32) * 0.8 + 0.1, 0)
    rows = []
    for codec in available_codecs():
        encoded = encode(fmap, codec)
        wire = np.frombuffer(bytearray(encoded.payload), np.uint8)
        t_enc = timed(lambda c=codec: encode(fmap, c), 50)
        t_dec = timed(lambda d=encoded.descriptor, w=wire: decode(d, w), 50)
        err = float(np.abs(np.asarray(decode(encoded.descriptor, wire)) - fmap).max())
        rows.append({"codec": codec, "bytes": encoded.descriptor["nbytes"], "ratio": fmap.nbytes / encoded.descriptor["nbytes"],
                     "encode_us": t_enc * 1e6, "decode_us": t_dec * 1e6, "max_err": err})
    return rows, float((fmap == 0).mean())


EMU_DEVICE = """
import json, sys, time
import numpy as np
from testbed.transport import Client
endpoint, size = sys.argv[1], int(sys.argv[2])
with Client(endpoint) as client:
    while not client.ping(1.0).ok:
        pass
    payload = np.ones(size, np.uint8)
    client.request([payload], op="discard", deadline_s=60)
    samples = []
    for _ in range(3):
        t0 = time.perf_counter()
        r = client.request([payload], op="discard", deadline_s=60)
        samples.append(time.perf_counter() - t0)
        assert r.ok, r.error
    print(json.dumps({"seconds": sorted(samples)[1]}))
"""


def emulated(rates: list[float]) -> tuple[list[dict], str]:
    import os

    if os.geteuid() != 0:
        return [], "needs root"
    try:
        from testbed.emulation import Emulation
        from testbed.traces import constant
    except ImportError as exc:
        return [], f"testbed.emulation not available ({exc})"
    script = REPO / "benchmarks" / ".transport_emu_device.py"
    script.write_text(EMU_DEVICE)
    rows = []
    try:
        for rate in rates:
            size = int(rate * 1e6 / 8 * 2)  # ~2 s of transfer
            with Emulation.from_yaml(REPO / "topologies/device-cloud.yaml",
                                     traces={"access": constant(rate, rate, 600)}) as emu:
                cloud, device = emu.host("cloud"), emu.host("device")
                endpoint = f"tcp://{cloud.IP()}:5555"
                server = cloud.popen([sys.executable, "-m", "testbed.transport.server", "--endpoint", endpoint,
                                      "--workers", "1"], cwd=str(REPO))
                proc = device.popen([sys.executable, str(script), endpoint, str(size)], cwd=str(REPO),
                                    stdout=subprocess.PIPE, text=True)
                out, _ = proc.communicate(timeout=120)
                server.terminate()
                server.wait(10)
            seconds = json.loads(out.strip().splitlines()[-1])["seconds"]
            goodput = size * 8 / seconds / 1e6
            rows.append({"rate_mbps": rate, "bytes": size, "seconds": seconds, "goodput_mbps": goodput,
                         "fraction": goodput / rate})
    except Exception as exc:  # a machine that cannot emulate still gets the loopback tables
        return rows, f"emulation failed: {exc}"
    finally:
        script.unlink(missing_ok=True)
    return rows, ""


def human(size: int) -> str:
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--no-emulation", action="store_true", help="skip (c)")
    parser.add_argument("--plain-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--raw-zmq-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server:
        plain_server(args.plain_server)
        return 0
    if args.raw_zmq_server:
        raw_zmq_server(args.raw_zmq_server)
        return 0

    rows, small = loopback(args.quick)
    print("(a) loopback echo round trip, median; goodput counts bytes both ways.")
    print("    transport = testbed.transport Client/Server (1 worker); tcp = sendall/recv_into;")
    print("    bare zmq = pyzmq DEALER->ROUTER echo of the same chunks (no header, no workers)")
    print(f"{'size':>8} {'transport ms':>13} {'tcp ms':>9} {'bare zmq ms':>12} {'transport MB/s':>15} "
          f"{'tcp MB/s':>9} {'transport/tcp':>14} {'bare zmq/tcp':>13}")
    for r in rows:
        print(f"{human(r['bytes']):>8} {r['zmq_ms']:13.3f} {r['tcp_ms']:9.3f} {r['raw_ms']:12.3f} "
              f"{r['zmq_MBps']:15.0f} {r['tcp_MBps']:9.0f} {r['ratio']:14.2f} {r['raw_ratio']:13.2f}")
    print("\n(b) per-message overhead (small tensors, median round trip)")
    print(f"{'size':>8} {'transport us':>13} {'tcp us':>9} {'bare zmq us':>12} {'overhead vs tcp us':>19}")
    for r in small:
        print(f"{human(r['bytes']):>8} {r['zmq_us']:13.1f} {r['tcp_us']:9.1f} {r['raw_us']:12.1f} "
              f"{r['overhead_us']:19.1f}")
    print("\n(c) emulated link (upload of ~2 s of data, op=discard)")
    if args.no_emulation:
        print("    skipped: --no-emulation")
    else:
        emu_rows, why = emulated([10.0, 50.0])
        for r in emu_rows:
            print(f"    {r['rate_mbps']:g} Mbit/s: {human(r['bytes'])} in {r['seconds']:.2f} s = "
                  f"{r['goodput_mbps']:.1f} Mbit/s ({r['fraction']:.2f} of the shaped rate)")
        if why:
            print(f"    skipped: {why}")
    codec_rows, sparsity = codecs_table()
    print(f"\n(d) codecs on a ReLU feature map 1x64x16x16 float32 ({sparsity:.0%} zeros, seed 0)")
    print(f"{'codec':>12} {'bytes':>7} {'ratio':>6} {'enc us':>8} {'dec us':>8} {'max err':>8}")
    for r in codec_rows:
        print(f"{r['codec']:>12} {r['bytes']:7d} {r['ratio']:6.2f} {r['encode_us']:8.1f} {r['decode_us']:8.1f} "
              f"{r['max_err']:8.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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


def plain_server(port: int, fresh: bool) -> None:
    """Length-prefixed echo: recv_into a buffer, sendall it back (the best a socket can do).

    ``fresh``: receive every message into a newly allocated array, as a receiver that hands
    the tensor to its caller must (the transport does); otherwise one preallocated buffer.
    """
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
        view = memoryview(np.empty(size, np.uint8)) if fresh else memoryview(buffer)[:size]
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
    def __init__(self, port: int, fresh: bool):
        self.conn = socket.create_connection(("127.0.0.1", port))
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = memoryview(bytearray(8))
        self.fresh = fresh
        self.out = np.empty(max(SIZES), np.uint8)

    def roundtrip(self, payload: np.ndarray) -> None:
        self.conn.sendall(struct.pack("<Q", payload.nbytes))
        self.conn.sendall(memoryview(payload).cast("B"))
        recv_exact(self.conn, self.head)
        out = np.empty(payload.nbytes, np.uint8) if self.fresh else self.out[: payload.nbytes]
        recv_exact(self.conn, memoryview(out))


# -- measurement helpers -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def repeats_for(size: int, quick: bool) -> int:
    budget = 64_000_000 if quick else 512_000_000
    return int(min(2000 if size < 100_000 else 200, max(5, budget // max(size, 1))))


def side_by_side(fns: dict, repeats: int, rounds: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each fn, interleaved in ``rounds`` so drift hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    per_round = max(3, repeats // rounds)
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def loopback(quick: bool, rounds: int, big_chunk: int) -> tuple[list[dict], list[dict]]:
    from testbed.transport import Client

    ports = {name: free_port() for name in ("zmq", "zmq_big", "tcp", "tcp_fresh", "raw", "raw_big")}
    server = [sys.executable, "-m", "testbed.transport.server", "--workers", "1"]
    procs = [
        start(server + ["--endpoint", f"tcp://127.0.0.1:{ports['zmq']}"]),
        start(server + ["--endpoint", f"tcp://127.0.0.1:{ports['zmq_big']}", "--chunk-kib", str(big_chunk // 1024)]),
    ]
    waits = [start([sys.executable, __file__, "--plain-server", str(ports["tcp"])]),
             start([sys.executable, __file__, "--plain-server", str(ports["tcp_fresh"]), "--fresh"]),
             start([sys.executable, __file__, "--raw-zmq-server", str(ports["raw"])]),
             start([sys.executable, __file__, "--raw-zmq-server", str(ports["raw_big"])])]
    procs += waits
    for proc in waits:
        proc.stdout.readline()
    rows, small = [], []
    try:
        plain, plain_fresh = PlainClient(ports["tcp"], False), PlainClient(ports["tcp_fresh"], True)
        raw, raw_big = RawZmqClient(ports["raw"]), RawZmqClient(ports["raw_big"], big_chunk)
        with Client(f"tcp://127.0.0.1:{ports['zmq']}") as client, \
                Client(f"tcp://127.0.0.1:{ports['zmq_big']}", chunk=big_chunk) as client_big:
            for c in (client, client_big):
                while not c.ping(1.0).ok:  # also tells the client the server's max_chunk
                    pass
            for size in ([16, 1_000] + SIZES[1:2]):
                payload = np.ones(size // 4, np.float32)
                t = side_by_side({
                    "zmq": lambda p=payload: client.request([p], deadline_s=10),
                    "pool": lambda p=payload: client.request([p], op="sleep", meta={"sleep_s": 0}, deadline_s=10),
                    "tcp": lambda p=payload: plain.roundtrip(p),
                    "raw": lambda p=payload: raw.roundtrip(p),
                }, repeats_for(size, quick) * 2, rounds)
                small.append({"bytes": size, **{f"{k}_us": v * 1e6 for k, v in t.items()},
                              "overhead_us": (t["zmq"] - t["tcp"]) * 1e6})
            t = side_by_side({"ping": lambda: client.ping(10)}, repeats_for(16, quick) * 2, rounds)
            small.append({"bytes": 0, "ping_us": t["ping"] * 1e6})
            for size in SIZES:
                payload = np.random.default_rng(0).integers(0, 255, size, np.uint8)

                def zmq_roundtrip(c, p=payload):
                    result = c.request([p], deadline_s=30)
                    assert result.ok and result.tensors["0"].nbytes == p.nbytes, result.error

                t = side_by_side({
                    "zmq": lambda: zmq_roundtrip(client),
                    "zmq_big": lambda: zmq_roundtrip(client_big),
                    "tcp": lambda p=payload: plain.roundtrip(p),
                    "tcp_fresh": lambda p=payload: plain_fresh.roundtrip(p),
                    "raw": lambda p=payload: raw.roundtrip(p),
                    "raw_big": lambda p=payload: raw_big.roundtrip(p),
                }, repeats_for(size, quick), rounds)
                rows.append({"bytes": size, **{f"{k}_ms": v * 1e3 for k, v in t.items()},
                             **{f"{k}_ratio": t["tcp"] / v for k, v in t.items()},
                             "zmq_big_fresh_ratio": t["tcp_fresh"] / t["zmq_big"]})
        for c in (plain, plain_fresh):
            c.conn.close()
    finally:
        for proc in procs:
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
        t = side_by_side({"enc": lambda c=codec: encode(fmap, c),
                          "dec": lambda d=encoded.descriptor, w=wire: decode(d, w)}, 50, 1)
        t_enc, t_dec = t["enc"], t["dec"]
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
    from testbed.transport.protocol import CHUNK, chunk_for_link

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per measurement (default 3)")
    parser.add_argument("--big-chunk-kib", type=int, default=4096,
                        help="chunk of the fast-link configuration (default 4096 = chunk_for_link(1 Gbit/s, 3 s))")
    parser.add_argument("--no-emulation", action="store_true", help="skip (c)")
    parser.add_argument("--plain-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fresh", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--raw-zmq-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server:
        plain_server(args.plain_server, args.fresh)
        return 0
    if args.raw_zmq_server:
        raw_zmq_server(args.raw_zmq_server)
        return 0

    big = args.big_chunk_kib * 1024
    rows, small = loopback(args.quick, args.rounds, big)
    print(f"(a) loopback echo round trip, median of {args.rounds} interleaved rounds; goodput counts bytes both ways.")
    print(f"    transport = testbed.transport Client/Server, chunk {CHUNK >> 10} KiB (default) or {big >> 10} KiB "
          f"(chunk_for_link(1 Gbit/s, 3 s) = {chunk_for_link(1e9, 3.0) >> 10} KiB);")
    print("    tcp = sendall/recv_into into one preallocated buffer, tcp fresh = a new array per message (as the")
    print("    transport delivers); bare zmq = pyzmq DEALER->ROUTER echo of the same chunks (no header, no copy out)")
    print(f"{'size':>8} {'transport':>10} {'tr. big':>8} {'tcp':>7} {'tcp fresh':>10} {'bare zmq':>9} "
          f"{'bare big':>9} {'MB/s big':>9} | {'tr/tcp':>7} {'big/tcp':>8} {'big/fresh':>10} {'bare/tcp':>9} "
          f"{'bare big/tcp':>13}")
    for r in rows:
        print(f"{human(r['bytes']):>8} {r['zmq_ms']:8.3f}ms {r['zmq_big_ms']:8.3f} {r['tcp_ms']:7.3f} "
              f"{r['tcp_fresh_ms']:10.3f} {r['raw_ms']:9.3f} {r['raw_big_ms']:9.3f} "
              f"{2 * r['bytes'] / r['zmq_big_ms'] / 1e3:9.0f} | {r['zmq_ratio']:7.2f} {r['zmq_big_ratio']:8.2f} "
              f"{r['zmq_big_fresh_ratio']:10.2f} {r['raw_ratio']:9.2f} {r['raw_big_ratio']:13.2f}")
    print("\n(b) per-message overhead (small tensors, median round trip, us); transport echo runs inline in the")
    print("    server's I/O thread, 'via pool' is the same echo through the worker pool (op=sleep, 0 s)")
    print(f"{'size':>8} {'transport':>10} {'via pool':>9} {'tcp':>7} {'bare zmq':>9} {'overhead vs tcp':>16}")
    for r in small:
        if "ping_us" in r:
            print(f"{'ping':>8} {r['ping_us']:10.1f}")
            continue
        print(f"{human(r['bytes']):>8} {r['zmq_us']:10.1f} {r['pool_us']:9.1f} {r['tcp_us']:7.1f} "
              f"{r['raw_us']:9.1f} {r['overhead_us']:16.1f}")
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

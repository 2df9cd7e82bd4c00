"""Cluster mode: start-up and per-request overhead of a 2-server fleet vs one server; the tunnel's
own RTT and throughput ceiling.

    sudo .venv/bin/python benchmarks/cluster.py                 # 16 and 64 devices
    sudo .venv/bin/python benchmarks/cluster.py --devices 16 --requests 200

The second "server" is this machine reached over our own sshd on 127.0.0.1
(``testbed.emulation.cluster.loopback_server``), so the figures include everything the remote path
costs (SSH shells, SSH tap tunnels, remote records) but not a real wire between machines: on real
servers, add the network's own RTT and capacity. For each fleet size:

* start-up: seconds from ``start()`` to a built, shaped network, one server vs two;
* per-request: a TCP request/response (256 B up, 64 B down, one connection per device, sequential)
  from every device to the cloud host, median and p99 per request, for devices on the controller vs
  devices across the tunnel (the fleet's cell is left unshaped here so only the tunnel differs);
* the tunnel: ping RTT and an iperf3 TCP ceiling from a remote device to a local one, with the same
  between two local devices as the baseline.

Writes benchmarks/results/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.emulation import Emulation  # noqa: E402
from testbed.emulation.cluster import ClusterEmulation, load_cluster, loopback_server  # noqa: E402
from testbed.emulation.topology import DirectionSpec, load_topology  # noqa: E402

ECHO_SERVER = """
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 7100)); s.listen(512)
def serve(c):
    with c:
        while True:
            b = c.recv(4096)
            if not b:
                return
            c.sendall(b"x" * 64)
while True:
    c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

CLIENT = """
import socket, sys, time, json
n = int(sys.argv[2]); c = socket.create_connection((sys.argv[1], 7100), timeout=10)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
out = []
for _ in range(n):
    t = time.monotonic(); c.sendall(b"r" * 256); got = 0
    while got < 64:
        got += len(c.recv(4096))
    out.append((time.monotonic() - t) * 1e3)
print(json.dumps(out))
"""


def timed(cls):
    """``cls`` whose start-up (network build and shaping, not the wait for the machine lock) is timed."""
    class Timed(cls):
        def _build(self):
            t = time.monotonic()
            super()._build()
            self.startup_s = time.monotonic() - t

    return Timed


def per_request(emu, devices: list[str], n: int) -> dict[str, list[float]]:
    cloud = emu.host("cloud")
    fd, client = tempfile.mkstemp(suffix=".py", prefix="cluster-bench-client-")
    os.write(fd, CLIENT.encode())
    os.close(fd)
    srv = cloud.popen([sys.executable, "-c", ECHO_SERVER])
    time.sleep(1.0)
    try:
        out = {}
        for d in devices:
            res = emu.host(d).cmd(f"{sys.executable} {client} {cloud.IP()} {n}")
            out[d] = json.loads(res.strip().splitlines()[-1])
        return out
    finally:
        srv.kill()
        srv.wait(5)
        os.unlink(client)


def stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"n": len(xs), "median_ms": statistics.median(xs), "p99_ms": xs[min(len(xs) - 1, int(0.99 * len(xs)))],
            "mean_ms": statistics.fmean(xs)}


def run(n_devices: int, requests: int, cluster_yaml: Path) -> dict:
    params = {"n_devices": n_devices, "device_cpu": None, "cloud_cpu": None, "device_profiles": None}
    topo = load_topology(REPO / "topologies/fleet.yaml", params=params)
    # the cell unshaped: the comparison isolates what the tunnel adds
    topo = replace(topo, links={k: replace(v, up=DirectionSpec(), down=DirectionSpec()) for k, v in topo.links.items()})
    row: dict = {"devices": n_devices}
    with timed(Emulation)(topo) as emu:
        row["one_server_startup_s"] = emu.startup_s
        sample = [f"device{i}" for i in (1, 3)]
        lat = per_request(emu, sample, requests)
        row["one_server_request"] = stats([x for v in lat.values() for x in v])
    with timed(ClusterEmulation)(topo, load_cluster(cluster_yaml)) as emu:
        row["two_server_startup_s"] = emu.startup_s  # incl. ssh precheck, tunnels, clock offsets
        row["remote_devices"] = sum(1 for v in emu.placement.values() if v != "main")
        lat = per_request(emu, ["device1", "device3", "device2", "device4"], requests)
        row["two_server_local_device_request"] = stats(lat["device1"] + lat["device3"])
        row["two_server_remote_device_request"] = stats(lat["device2"] + lat["device4"])
        row["tunnel"] = emu.measure_tunnels(duration=3.0, pings=100)["loop"]
        row["clock_offset"] = emu.clock_report()["loop"]
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[16, 64])
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--out", default=str(REPO / "benchmarks/results/cluster.json"))
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="testbed-cluster-bench-") as tmp, loopback_server(tmp) as cfg:
        for n in args.devices:
            row = run(n, args.requests, cfg)
            rows.append(row)
            tun = row["tunnel"]
            print(f"{n:3d} devices: start-up one server {row['one_server_startup_s']:.1f} s, two servers "
                  f"{row['two_server_startup_s']:.1f} s ({row['remote_devices']} remote); request median/p99 "
                  f"one server {row['one_server_request']['median_ms']:.3f}/{row['one_server_request']['p99_ms']:.3f} ms, "
                  f"local device {row['two_server_local_device_request']['median_ms']:.3f}/"
                  f"{row['two_server_local_device_request']['p99_ms']:.3f} ms, remote device "
                  f"{row['two_server_remote_device_request']['median_ms']:.3f}/"
                  f"{row['two_server_remote_device_request']['p99_ms']:.3f} ms; tunnel ping avg "
                  f"{tun['ping']['avg_ms']:.3f} ms (baseline {tun['baseline']['ping']['avg_ms']:.3f}), iperf3 "
                  f"{tun['iperf3']['mbps']:.0f} Mbit/s (baseline {tun['baseline']['iperf3']['mbps']:.0f})", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine_note": "second server = this machine over sshd on 127.0.0.1", "rows": rows},
                              indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

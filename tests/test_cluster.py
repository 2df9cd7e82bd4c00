"""Cluster mode on one machine: our own sshd on 127.0.0.1 is the second "server", so Mininet's remote
path (SSH shells, SSH tap tunnels, remote records and remote cleanup) really runs.

The sshd is started by the fixture in a temp dir (own config, host key, throwaway client key,
authorized_keys, known_hosts), listens on 127.0.0.1 at a free port, and is killed at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.emulation import cleanup
from testbed.emulation.cluster import (
    REMOTE_STATE,
    ClusterEmulation,
    load_cluster,
    loopback_server,
    parse_cluster,
    remote_leftovers,
)
from testbed.emulation.topology import load_topology, parse_topology
from testbed.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ schema (no root needed)

def test_schema_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"servers: must be a non-empty list"):
        parse_cluster({"servers": []})
    with pytest.raises(ConfigError, match=r"servers\[0\].host: the first server is this machine"):
        parse_cluster({"servers": [{"name": "a", "host": "127.0.0.1"}]})
    with pytest.raises(ConfigError, match=r"servers\[1\].prot: unknown key; allowed: name, host"):
        parse_cluster({"servers": [{"name": "a", "host": "localhost"}, {"name": "b", "host": "127.0.0.1", "prot": 1}]})
    with pytest.raises(ConfigError, match=r"servers\[1\].port: must be a TCP port"):
        parse_cluster({"servers": [{"name": "a", "host": "localhost"}, {"name": "b", "host": "127.0.0.1",
                                                                       "port": 70000}]})
    with pytest.raises(ConfigError, match=r"servers\[1\].key: file not found"):
        parse_cluster({"servers": [{"name": "a", "host": "localhost"},
                                   {"name": "b", "host": "127.0.0.1", "key": str(tmp_path / "nope")}]})
    with pytest.raises(ConfigError, match=r"servers\[1\].name: server name 'a' is used twice"):
        parse_cluster({"servers": [{"name": "a", "host": "localhost"}, {"name": "a", "host": "127.0.0.1"}]})
    with pytest.raises(ConfigError, match=r"placement: must be one of round-robin"):
        parse_cluster({"servers": [{"name": "a", "host": "localhost"}], "placement": "random"})
    f = tmp_path / "c.yaml"
    f.write_text("servers: [\n")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: not valid YAML"):
        load_cluster(f)


def test_placement_round_robin_and_explicit():
    topo = load_topology(REPO / "topologies/fleet.yaml", params={"n_devices": 4})
    c = parse_cluster({"servers": [{"name": "a", "host": "localhost"}, {"name": "b", "host": "127.0.0.1"}]})
    p = c.place(topo)
    assert [p[f"device{i}"] for i in range(1, 5)] == ["a", "b", "a", "b"]
    assert p["cloud"] == "a" and p["ap"] == "a"  # switches and the server stay on the controller
    c2 = parse_cluster({"servers": [{"name": "a", "host": "localhost"}, {"name": "b", "host": "127.0.0.1"}],
                        "placement": {"device3": "b"}})
    assert c2.place(topo)["device3"] == "b" and c2.place(topo)["device1"] == "a"
    with pytest.raises(ConfigError, match=r"placement.cloud: 'cloud' sends on a shaped or traced link \(cell\)"):
        parse_cluster({"servers": [{"name": "a", "host": "localhost"}, {"name": "b", "host": "127.0.0.1"}],
                       "placement": {"cloud": "b"}}).place(topo)
    with pytest.raises(ConfigError, match=r"placement.device9: unknown host"):
        parse_cluster({"servers": [{"name": "a", "host": "localhost"}], "placement": {"device9": "a"}}).place(topo)
    with pytest.raises(ConfigError, match=r"placement.device1: unknown server 'zz'"):
        parse_cluster({"servers": [{"name": "a", "host": "localhost"}], "placement": {"device1": "zz"}}).place(topo)
    # a device whose own link is traced stays where the shaping is
    dc = load_topology(REPO / "topologies/device-cloud.yaml")
    assert set(c.place(dc, {"device", "cloud"}).values()) == {"a"}


# ------------------------------------------------------------------ a real second "server" over SSH

@pytest.fixture
def loopback_sshd(tmp_path_factory):
    """An sshd of our own on 127.0.0.1:<free port>, root login by a throwaway key, tunnels allowed."""
    with loopback_server(tmp_path_factory.mktemp("sshd")) as cfg:
        yield cfg


def _nothing_left(cluster_yaml: Path):
    left = cleanup.leftovers()
    assert not any(left.values()), f"local leftovers: {left}"
    remote = remote_leftovers()  # the "remote" server is this kernel: read its state directly too
    assert not any(remote.values()), f"remote leftovers: {remote}"
    assert not list(cleanup.STATE_DIR.glob("cluster-ssh-*"))
    # tunnel ssh clients are children of their run; none may be left orphaned or be ours
    tunnels = subprocess.run(["pgrep", "-f", "Tunnel=ethernet"], capture_output=True, text=True).stdout.split()
    assert not [p for p in tunnels if cleanup._ppid(int(p)) in (1, os.getpid())], tunnels


@pytest.mark.root
def test_two_server_fleet_exchanges_traffic_and_cleans_up(loopback_sshd, tmp_path):
    cluster = load_cluster(loopback_sshd)
    with ClusterEmulation.from_yaml(REPO / "topologies/fleet.yaml", cluster=cluster, log_dir=tmp_path / "run",
                                    params={"n_devices": 3, "device_cpu": 0.5, "cloud_cpu": None}) as emu:
        assert emu.placement["device2"] == "loop" and emu.placement["device1"] == "main"
        assert emu.crossing_links == ["radio2"] and emu.placement["device3"] == "main"
        d2 = emu.host("device2")
        assert d2.isRemote and d2.cmd("echo $$").strip() == str(d2.pid)
        # the remote host's shell runs under sshd, not under this process
        assert "sshd" in Path(f"/proc/{cleanup._ppid(d2.pid)}/cmdline").read_text()
        rec = json.loads(Path(f"{REMOTE_STATE}/{emu.run_id}.json").read_text())
        assert d2.pid in rec["host_pids"] and "tb1a-device2" in rec["interfaces"]
        # real traffic across the tunnel: remote device2 -> cloud through the shaped cell, and to device1
        out = d2.cmd(f"ping -c 3 -i 0.2 -W 2 {emu.host('cloud').IP()}")
        assert " 0% packet loss" in out, out
        proc = d2.popen(["python3", "-c", "import os; print(os.getpid())"])
        assert proc.communicate(timeout=20)[0].strip()  # remote popen through ssh works
        tun = emu.measure_tunnels(duration=0.5, pings=10)["loop"]
        assert tun["from"] == "device2" and tun["ping"]["loss_pct"] == 0.0
        assert tun["iperf3"]["mbps"] > 1.0 and tun["baseline"]["iperf3"]["mbps"] > 1.0
        off = emu.clock_report()["loop"]
        # the same kernel: the measured offset must be zero within its own bound
        assert abs(off["start"]["offset_s"]) <= off["start"]["uncertainty_s"] + 1e-4
        cgroup = Path(rec["cgroups"][0])  # device2's CPU share, a cgroup on the "remote" server
        assert str(d2.pid) in (cgroup / "cgroup.procs").read_text().split()
        quota = cgroup / "cpu.cfs_quota_us"
        assert int((quota if quota.exists() else cgroup / "cpu.max").read_text().split()[0]) == 50_000
    info = json.loads((tmp_path / "run/cluster.json").read_text())
    assert "end" in info["clock_offsets"]["loop"] and info["tunnels"]["loop"]["iperf3"]["mbps"] > 1
    assert not Path(f"{REMOTE_STATE}/{emu.run_id}.json").exists()
    assert not cgroup.exists()
    _nothing_left(loopback_sshd)


KILLED_RUN = """
import sys, time
from testbed.emulation.cluster import ClusterEmulation
emu = ClusterEmulation.from_yaml(sys.argv[1], cluster=sys.argv[2], params={"n_devices": 2, "cloud_cpu": None})
emu.start()
d2 = emu.host("device2")
d2.popen(["sleep", "300"])   # a process in the remote host, started over ssh
print("READY", emu.run_id, d2.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.root
def test_killed_run_is_cleaned_on_both_servers(loopback_sshd, tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN)
    proc = subprocess.Popen([sys.executable, str(script), str(REPO / "topologies/fleet.yaml"), str(loopback_sshd)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    line = proc.stdout.readline()
    assert line.startswith("READY"), proc.stderr.read() if proc.poll() is not None else line
    _, run_id, remote_pid = line.split()
    remote_record = Path(f"{REMOTE_STATE}/{run_id}.json")
    assert remote_record.exists()
    inodes = set(json.loads(remote_record.read_text())["netns_inodes"])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    # the run is dead; its remote host's processes are still there until cleanup
    assert cleanup.processes_in_netns(inodes), "the remote host died with the controller: nothing to test"
    out = subprocess.run([str(REPO / ".venv/bin/testbed"), "cleanup", "--cluster", str(loopback_sshd)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "loop: removed record" in out.stdout and "loop: killed" in out.stdout, out.stdout
    assert not cleanup.processes_in_netns(inodes)
    assert not remote_record.exists()
    _nothing_left(loopback_sshd)


def test_topology_without_remote_hosts_needs_no_ssh():
    topo = parse_topology({"hosts": {"d": {"role": "device"}, "c": {"role": "cloud"}},
                           "links": {"l": {"ends": ["d", "c"], "bw_mbps": 5}}})
    c = parse_cluster({"servers": [{"name": "a", "host": "localhost"}, {"name": "b", "host": "127.0.0.1"}]})
    assert set(c.place(topo).values()) == {"a"}  # d sends on the shaped link: stays with the shaping


def test_cluster_mode_refuses_an_ovs_topology():
    topo = load_topology(REPO / "topologies" / "fleet.yaml", params={"n_devices": 2, "switch": "ovs"})
    c = parse_cluster({"servers": [{"name": "a", "host": "localhost"}, {"name": "b", "host": "127.0.0.1"}]})
    with pytest.raises(ConfigError, match=r"fleet\.yaml: switch: cluster mode builds Linux bridges"):
        ClusterEmulation(topo, c)


@pytest.mark.root
def test_fleet_session_split_across_two_servers(loopback_sshd, tmp_path):
    """A fleet session with device2 on the 'remote' server: per-request records from both servers, the
    remote agent started on its own clock's start, and the cluster's measurements in the summary."""
    from testbed.runtime import SessionConfig, run_session

    cfg = SessionConfig(topology="topologies/fleet.yaml", params={"n_devices": 2}, model="resnet20-ee",
                        strategy="cloud-only", fps=5.0, duration_s=2.0, deadline_s=1.0, out_dir=str(tmp_path / "s"),
                        device_profile="cpu", cluster=str(loopback_sshd))
    result = run_session(cfg)
    records = [json.loads(line) for line in open(result.records_path)]
    by_device = {d: [r for r in records if r.get("device") == d] for d in ("device1", "device2")}
    assert len(by_device["device1"]) == 10 and len(by_device["device2"]) == 10, {k: len(v) for k, v in by_device.items()}
    # cloud-only: the remote device's requests crossed the tunnel and the shaped cell and were answered
    assert sum(r["outcome"] == "cloud" for r in by_device["device2"]) >= 8, [r["outcome"] for r in by_device["device2"]]
    info = result.summary["cluster"]
    assert info["placement"]["device2"] == "loop" and info["crossing_links"] == ["radio2"]
    go = json.loads((tmp_path / "s/go-loop.json").read_text())
    assert abs(go["t_start"] - go["controller_t_start"] - go["offset_s"]) < 1e-9
    assert info["tunnels"]["loop"]["iperf3"]["mbps"] > 1.0
    assert "drift_ppm" in info["clock_offsets"]["loop"]
    _nothing_left(loopback_sshd)

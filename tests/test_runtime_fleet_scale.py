"""Fleets of device agents forked from one process (testbed.runtime.launcher) on real Mininet hosts.

A forked agent must live in its host's network namespace (reachable at the host's address, from
another host) and share the imported code with its siblings, so that a fleet costs a fraction
of a process per device: a separately started agent measured ~230 MB PSS (torch, sklearn, the
testbed), a forked one ~30 MB.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest

from testbed.runtime.launcher import AgentLauncher, launcher_for, memory_kb

pytestmark = [pytest.mark.root]

MODEL = "resnet20-ee"  # shipped, on 16x16 digits: nothing to train


def test_unknown_launch_mode_is_refused():
    from testbed.errors import ConfigError

    with pytest.raises(ConfigError, match="agent_launch"):
        launcher_for("threads", 8)
    assert launcher_for("process", 64) is None
    assert launcher_for("auto", 1) is None


def test_forked_server_lives_in_its_host(tmp_path, clean_machine):
    """Fork a transport server into the cloud host; the device host reaches it at the cloud's address."""
    from testbed.emulation import Emulation

    with Emulation.from_yaml("topologies/device-cloud.yaml", log_dir=tmp_path) as emu, \
            AgentLauncher(log_path=tmp_path / "launcher.log") as launcher:
        cloud, device = emu.host("cloud"), emu.host("device")
        server = launcher.spawn("testbed.transport.server", ["--endpoint", "tcp://*:5599"], netns_pid=cloud.pid,
                                log_path=tmp_path / "server.log", name="server")
        assert os.stat(f"/proc/{server.pid}/ns/net").st_ino == os.stat(f"/proc/{cloud.pid}/ns/net").st_ino
        assert os.stat(f"/proc/{server.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        ping = (f"from testbed.transport import Client; c = Client('tcp://{cloud.IP()}:5599'); "
                "print('pong', c.ping(deadline_s=20.0).ok); c.close()")
        out = device.cmd(f"{sys.executable} -c \"{ping}\"")
        assert "pong True" in out, out
        server.terminate()  # the server's own SIGTERM handler: drain and exit 0
        assert server.wait(timeout=15) == 0
        straggler = launcher.spawn("testbed.transport.server", ["--endpoint", "tcp://*:5598"], netns_pid=cloud.pid,
                                   name="straggler")
    assert straggler.poll() is not None  # closing the launcher stopped what it had forked
    assert not os.path.exists(f"/proc/{straggler.pid}")


class AgentMemory(threading.Thread):
    """Peak summed PSS of the zygote's children (the forked agents) while a session runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak_kb = 0
        self.peak_agents = 0

    def run(self) -> None:
        while not self.stop.wait(0.3):
            zygotes = [p for p in _children(os.getpid()) if b"testbed.runtime.launcher" in _cmdline(p)]
            agents = [c for z in zygotes for c in _children(z)]
            total = sum(memory_kb(pid).get("Pss", 0) for pid in agents)
            if total > self.peak_kb:
                self.peak_kb, self.peak_agents = total, len(agents)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


@pytest.mark.slow
def test_fleet_of_forked_agents_shares_memory(tmp_path, clean_machine):
    from testbed.runtime import SessionConfig, run_session, validate_record

    n = 8
    cfg = SessionConfig(topology="topologies/fleet.yaml", params={"n_devices": n}, model=MODEL, strategy="cloud-only",
                        fps=5.0, duration_s=3.0, deadline_s=1.0, out_dir=str(tmp_path / "s"), agent_launch="fork",
                        device_profile="cpu")
    sampler = AgentMemory()
    sampler.start()
    t0 = time.monotonic()
    try:
        result = run_session(cfg)
    finally:
        sampler.stop.set()
        sampler.join()
    records = [json.loads(line) for line in open(result.records_path)]
    assert len(records) == n * 15
    assert all(validate_record(r) == [] for r in records)
    # cloud-only answers prove every agent reached the cloud from inside its own host
    by_device = {r["device"] for r in records if r["outcome"] == "cloud"}
    assert by_device == {f"device{i}" for i in range(1, n + 1)}, by_device
    assert sampler.peak_agents == n
    per_agent_mb = sampler.peak_kb / 1024 / n
    # a separately started agent: ~230 MB PSS; shared pages make a forked one a fraction of that
    assert per_agent_mb < 90, f"{per_agent_mb:.0f} MB PSS per forked agent"
    print(f"{n} forked agents: {per_agent_mb:.0f} MB PSS each at peak; session {time.monotonic() - t0:.0f} s")

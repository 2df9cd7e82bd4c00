"""``Emulation``: a Mininet network built from a topology, shaped by traces and faults.

    with Emulation.from_yaml("topologies/device-cloud.yaml",
                             traces={"access": "traces/att-lte-driving.csv"},
                             faults=[{"kind": "outage", "link": "access", "start": 10, "end": 15}],
                             log_dir="results/demo") as emu:
        emu.host("cloud").popen(["python", "-m", "my.server"])
        print(emu.elapsed())

Entering builds and starts the network (Linux bridges and no controller by
default), installs static shaping, then starts the replay clock at t = 0.
Leaving, an exception, Ctrl-C or SIGTERM tears everything down.

With ``hold_clock=True`` the network is built with every timeline's first step
(trace step 0, faults at t = 0) installed and held; ``emu.start_clock(t)`` later
starts the trace and fault clock at the monotonic time ``t`` (e.g. when every
process in the hosts has loaded), so trace time 0 is a moment the caller chose:

    with Emulation.from_yaml(..., hold_clock=True) as emu:
        ...                                   # start processes, wait until they are ready
        emu.start_clock(time.monotonic() + 1)  # trace time 0 in one second
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from testbed.emulation import capabilities, cleanup, schedule, shaping
from testbed.emulation.faults import Fault, parse_fault
from testbed.emulation.replay import Replayer
from testbed.emulation.topology import SWITCH_KINDS, Topology, load_topology
from testbed.errors import CapabilityError, ConfigError, TestbedError

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
CPU_PERIOD_US = 100_000


def resolve_path(path: str | Path, base: Path | None = None) -> Path:
    """A user path as given, else relative to the topology file's folder, else to the repo root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    for root in (base, REPO_ROOT):
        if root is not None and (root / p).exists():
            return root / p
    return p


def _host_class():
    from mininet.node import Host

    class TestbedHost(Host):
        """A Mininet host whose processes (shell and ``popen``) all run in its CPU cgroup."""

        cgroup_tasks: str | None = None

        def popen(self, *args, **kwargs):
            proc = super().popen(*args, **kwargs)
            if self.cgroup_tasks:
                # From outside: mnexec remounts /sys in the host, hiding the cgroup tree there. The
                # process is moved microseconds after fork, long before it starts any work.
                with open(self.cgroup_tasks, "w") as f:
                    f.write(str(proc.pid))
            return proc

    return TestbedHost


def _bridge_class():
    from mininet.node import Switch

    class TestbedBridge(Switch):
        """A Linux bridge made with iproute2 (no bridge-utils, no controller, no STP)."""

        def start(self, _controllers):
            subprocess.run(["ip", "link", "add", "name", self.name, "type", "bridge"], check=True,
                           capture_output=True)
            for intf in self.intfList():
                if intf.name != "lo":
                    subprocess.run(["ip", "link", "set", "dev", intf.name, "master", self.name], check=True,
                                   capture_output=True)
            subprocess.run(["ip", "link", "set", "dev", self.name, "up"], check=True, capture_output=True)

        def stop(self, deleteIntfs=True):  # noqa: N803 - Mininet's signature
            subprocess.run(["ip", "link", "del", self.name], capture_output=True)
            super().stop(deleteIntfs)

        def connected(self):
            return True

    return TestbedBridge


class Emulation:
    """A running emulated network. Use as a context manager; see the module docstring."""

    def __init__(self, topology: Topology, traces: dict[str, Any] | None = None,
                 faults: list[Fault | dict] | None = None, log_dir: str | Path | None = None,
                 granularity: float = 0.1, switch: str | None = None, horizon: float = 3600.0,
                 caps: capabilities.Capabilities | None = None, hold_clock: bool = False):
        if not (0.01 <= granularity <= 60):
            raise ConfigError("granularity", f"replay granularity must be within 0.01..60 s, got {granularity}")
        if switch is not None and switch not in SWITCH_KINDS:
            raise ConfigError("switch", f"must be one of {', '.join(SWITCH_KINDS)}; got {switch!r}")
        self.topology = topology
        self.granularity = granularity
        self.switch = switch or topology.switch  # None: the topology's ``switch:`` (default linuxbridge)
        self.horizon = horizon
        self.log_dir = Path(log_dir) if log_dir else None
        self.caps = caps or capabilities.probe()
        self.faults = [parse_fault(f, f"faults[{i}]", set(topology.links)) for i, f in enumerate(faults or [])]
        self.traces = self._load_traces(traces or {})
        self._check_capabilities()
        self.timelines: dict[str, list[schedule.Step]] = {}
        self.ports: list[shaping.Port] = []
        self.net = None
        self.hold_clock = hold_clock
        self.t0: float | None = None  # monotonic time of trace time 0 (None while the clock is held)
        self._record: cleanup.RunRecord | None = None
        self._replayer: Replayer | None = None
        self._old_handlers: dict[int, Any] = {}
        self._nodes: dict[str, Any] = {}

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_yaml(cls, topology_path: str | Path, traces: dict[str, Any] | None = None,
                  faults: list[Fault | dict] | None = None, log_dir: str | Path | None = None,
                  params: dict[str, Any] | None = None, **kwargs) -> Emulation:
        return cls(load_topology(resolve_path(topology_path), params=params), traces=traces, faults=faults,
                   log_dir=log_dir, **kwargs)

    def _load_traces(self, overrides: dict[str, Any]) -> dict[tuple[str, str], Any]:
        """(link, direction) -> Trace, from the topology's ``trace`` keys and the caller's overrides."""
        from testbed.traces import Trace, load_trace

        base = Path(self.topology.source).parent if self.topology.source != "<dict>" else None
        for link in overrides:
            if link not in self.topology.links:
                raise ConfigError("traces", f"unknown link {link!r}; links are: "
                                  f"{', '.join(sorted(self.topology.links))}")
        cache: dict[str, Any] = {}

        def load(spec):
            if isinstance(spec, Trace):
                return spec
            path = str(resolve_path(spec, base))
            if path not in cache:
                cache[path] = load_trace(path)
            return cache[path]

        out = {}
        for lname, link in self.topology.links.items():
            for d in ("up", "down"):
                spec = overrides.get(lname, link.direction(d).trace)
                if spec is not None:
                    out[(lname, d)] = load(spec)
        return out

    def _check_capabilities(self) -> None:
        """Refuse up front what this kernel cannot emulate, rather than silently dropping it."""
        c = self.caps
        missing = [name for name, ok in (("root", c.root), ("mininet", c.mininet), ("mnexec", c.mnexec),
                                         ("HTB", c.htb), ("TBF", c.tbf)) if not ok]
        if missing:
            raise CapabilityError(f"cannot emulate here: missing {', '.join(missing)} (see 'testbed doctor')")
        if self.switch == "ovs" and not c.ovs:
            raise CapabilityError(f"{self.topology.source}: switch: ovs was asked for but Open vSwitch is not available "
                                  "here (it needs the openvswitch kernel module and a running ovs-vswitchd; see 'testbed doctor')")
        if not c.linux_bridge and self.topology.switches and self.switch == "linuxbridge":
            raise CapabilityError("this kernel cannot create Linux bridges")
        for lname, link in self.topology.links.items():
            for d in ("up", "down"):
                spec = link.direction(d)
                if (spec.delay_ms or spec.jitter_ms) and not c.netem:
                    raise CapabilityError(
                        f"{self.topology.source}: links.{lname}.{d} asks for delay {spec.delay_ms} ms / jitter "
                        f"{spec.jitter_ms} ms, but this kernel has no sch_netem: delay cannot be emulated here. "
                        "Remove the delay or run on a kernel with netem (see 'testbed doctor').")
                trace = self.traces.get((lname, d))
                if trace is not None and trace.rtt_ms is not None and not c.netem:
                    raise CapabilityError(
                        f"links.{lname}.{d}: trace {trace.name!r} carries an RTT column (rtt_ms), replayed as "
                        "netem delay, but this kernel has no sch_netem: delay cannot be emulated here. Drop the "
                        "column (testbed traces import keeps it) or run on a kernel with netem (see 'testbed doctor').")
        wants_loss = {(f.link, d) for f in self.faults if f.kind == "loss" for d in f.directions()}
        for lname, link in self.topology.links.items():
            for d in ("up", "down"):
                spec = link.direction(d)
                replays_rtt = getattr(self.traces.get((lname, d)), "rtt_ms", None) is not None
                uses_netem = c.netem and (spec.delay_ms or spec.jitter_ms or spec.loss_pct or (lname, d) in wants_loss
                                          or replays_rtt)
                if uses_netem and any(
                        f.link == lname and d in f.directions() and f.mode == "drop" and f.kind != "loss"
                        for f in self.faults):
                    # the drop gate empties a fifo's limit; a netem leaf has no such switch
                    raise CapabilityError(f"links.{lname}.{d}: a drop-mode outage cannot be combined with "
                                          "delay/jitter/loss on the same direction; use mode: hold")
                if (spec.loss_pct or (lname, d) in wants_loss) and not c.netem:
                    if not c.iptables_statistic:
                        raise CapabilityError(f"links.{lname}.{d}: loss asked for, but neither netem nor "
                                              "iptables' statistic match is available")
                    if link.a not in self.topology.hosts and link.b not in self.topology.hosts:
                        raise CapabilityError(f"links.{lname}: loss between two switches needs netem")
        if any(h.cpu for h in self.topology.hosts.values()) and not c.cgroup_cpu:
            raise CapabilityError("hosts ask for CPU shares but no cgroup cpu controller is mounted")

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> Emulation:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._install_signal_handlers()  # first: a signal while queueing for the lock must still clean up
        self._record = cleanup.RunRecord()
        try:
            self._record.acquire()
            self._build()
            self._shape()
            if self.hold_clock:
                self._write_logs()
            else:
                self.start_clock(time.monotonic())
        except BaseException:
            self.stop()
            raise

    def start_clock(self, t0: float) -> None:
        """Start the trace and fault clock: trace time 0 is the monotonic time ``t0`` (now or later).

        Until then the links hold their first step. The replayer process is started here and sleeps
        until ``t0`` + the first change, so a ``t0`` a little in the future is kept exactly.
        """
        if self.net is None:
            raise TestbedError("start_clock: the emulation is not running")
        if self.t0 is not None:
            raise TestbedError(f"start_clock: the clock already started (t0 = {self.t0:.3f})")
        if t0 < time.monotonic() - 1.0:
            raise TestbedError(f"start_clock: t0 is {time.monotonic() - t0:.1f} s in the past")
        self.t0 = float(t0)
        if self._replayer:
            self._replayer.start(self.t0)
            self._record.add("helper_pids", self._replayer.pid)
        self._write_logs()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum, _frame):
            raise KeyboardInterrupt(f"signal {signum}")

        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, on_signal)

    def _build(self) -> None:
        from mininet.link import Link
        from mininet.log import setLogLevel
        from mininet.net import Mininet

        setLogLevel("warning")
        topo = self.topology
        if self.switch == "ovs":
            from mininet.node import OVSBridge as switch_cls
        else:
            switch_cls = _bridge_class()
        net = Mininet(topo=None, build=False, controller=None, host=_host_class(), switch=switch_cls, link=Link,
                      autoSetMacs=True, waitConnected=False)
        self.net = net
        for name in topo.hosts:
            self._nodes[name] = net.addHost(name)
        for i, name in enumerate(topo.switches):
            self._nodes[name] = net.addSwitch(f"tbs{i}-{name}"[:15], dpid=f"{i + 1:016x}")
            self._record.add("bridges", self._nodes[name].name)
        for i, link in enumerate(topo.links.values()):
            n1, n2 = f"tb{i}a-{link.a}"[:15], f"tb{i}b-{link.b}"[:15]
            self._record.add("interfaces", n1, n2)
            net.addLink(self._nodes[link.a], self._nodes[link.b], intfName1=n1, intfName2=n2)
        for name in topo.hosts:
            h = self._nodes[name]
            self._record.add("host_pids", h.pid)
            self._record.add("netns_inodes", cleanup.netns_inode(h.pid))
        for name in topo.switches:
            self._record.add("host_pids", self._nodes[name].pid)
        net.build()
        net.start()
        net.staticArp()  # no ARP across a link that may be in an outage
        self._limit_cpu()

    def _limit_cpu(self) -> None:
        run_group = f"{cleanup.CGROUP_PARENT}/{os.getpid()}"
        for spec in self.topology.hosts.values():
            if not spec.cpu:
                continue
            host = self._nodes[spec.name]
            if self.caps.cgroup_cpu == "v1":
                path = Path("/sys/fs/cgroup/cpu") / run_group / spec.name
                path.mkdir(parents=True, exist_ok=True)
                self._record.add("cgroups", str(path))
                (path / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                (path / "cpu.cfs_quota_us").write_text(str(int(spec.cpu * CPU_PERIOD_US)))
                tasks = path / "cgroup.procs"
            else:
                path = Path("/sys/fs/cgroup") / run_group / spec.name
                path.mkdir(parents=True, exist_ok=True)
                self._record.add("cgroups", str(path))
                (path / "cpu.max").write_text(f"{int(spec.cpu * CPU_PERIOD_US)} {CPU_PERIOD_US}")
                tasks = path / "cgroup.procs"
            tasks.write_text(str(host.pid))
            host.cgroup_tasks = str(tasks)
        if self.caps.cgroup_cpu == "v1" and any(h.cpu for h in self.topology.hosts.values()):
            self._record.add("cgroups", str(Path("/sys/fs/cgroup/cpu") / run_group))

    def _netns_pid(self, node_name: str) -> int | None:
        return self._nodes[node_name].pid if node_name in self.topology.hosts else None

    def _shape(self) -> None:
        topo = self.topology
        offloads_off = self.caps.ethtool
        for i, link in enumerate(topo.links.values()):
            names = {"up": f"tb{i}a-{link.a}"[:15], "down": f"tb{i}b-{link.b}"[:15]}
            if offloads_off:
                for node, ifname in ((link.a, names["up"]), (link.b, names["down"])):
                    shaping.run(self._netns_pid(node), ["ethtool", "-K", ifname, "tso", "off", "gso", "off",
                                                        "gro", "off"], check=False)
            for d in ("up", "down"):
                spec = link.direction(d)
                trace = self.traces.get((link.name, d))
                has_fault = any(f.link == link.name and d in f.directions() for f in self.faults)
                if not (spec.shaped or trace is not None or has_fault):
                    continue
                sender = link.sender(d)
                receiver = link.b if d == "up" else link.a
                loss_mode = None
                wants_loss = spec.loss_pct or any(f.kind == "loss" and f.link == link.name and d in f.directions()
                                                  for f in self.faults)
                loss_ns, loss_match = None, ()
                if wants_loss:
                    if self.caps.netem:
                        loss_mode = "netem"
                    else:
                        loss_mode = "iptables"
                        if sender in topo.hosts:
                            loss_ns, loss_match = self._netns_pid(sender), ("OUTPUT", "-o", names[d])
                        else:
                            other = names["down" if d == "up" else "up"]
                            loss_ns, loss_match = self._netns_pid(receiver), ("INPUT", "-i", other)
                port = shaping.Port(
                    link=link.name, direction=d, node=sender, ifname=names[d], netns_pid=self._netns_pid(sender),
                    queue_packets=spec.queue_packets, use_netem=self.caps.netem and bool(
                        spec.delay_ms or spec.jitter_ms or loss_mode == "netem"
                        or (trace is not None and trace.rtt_ms is not None)),
                    delay_ms=spec.delay_ms, jitter_ms=spec.jitter_ms, loss_mode=loss_mode,
                    loss_netns_pid=loss_ns, loss_match=loss_match)
                static_bps = spec.bw_mbps * 1e6 if spec.bw_mbps else None
                steps = schedule.build_timeline(trace, d, static_bps, spec.loss_pct, self.faults, link.name,
                                                self.granularity, self.horizon, base_delay_ms=spec.delay_ms)
                port.delay_line_packets = shaping.delay_line_packets(steps, spec.jitter_ms)
                shaping.install(port, steps[0])
                if loss_mode == "iptables" and steps[0].loss_pct:
                    shaping.set_loss(port, 0.0, steps[0].loss_pct)
                self.ports.append(port)
                self.timelines[port.key] = steps
        if any(len(s) > 1 for s in self.timelines.values()):
            self._replayer = Replayer(self.ports, [self.timelines[p.key] for p in self.ports], self.log_dir)
            if self.log_dir:
                self.log_dir.mkdir(parents=True, exist_ok=True)

    def _write_logs(self) -> None:
        if not self.log_dir:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        info = {
            "topology": self.topology.source, "params": self.topology.params, "granularity_s": self.granularity,
            "t0_monotonic": self.t0, "capabilities": self.caps.as_dict(),
            "traces": {f"{k[0]}.{k[1]}": t.meta.get("name", "") for k, t in self.traces.items()},
            "faults": [f.__dict__ for f in self.faults],
            "hosts": {n: {"ip": self._nodes[n].IP(), "role": h.role, "cpu": h.cpu}
                      for n, h in self.topology.hosts.items()},
            "ports": {p.key: {"node": p.node, "ifname": p.ifname} for p in self.ports},
        }
        (self.log_dir / "emulation.json").write_text(json.dumps(info, indent=2))

    def stop(self) -> None:
        """Tear down everything; safe to call twice and after a partial start."""
        if self._replayer:
            self._replayer.stop()
            self._replayer = None
        record = self._record
        try:
            if record:
                # Killing every process in the hosts' namespaces (shells included) makes the kernel
                # destroy the namespaces and the veth ends in them; Mininet's own stop() would need
                # the very shells that may be dead or hung after a crash or Ctrl-C.
                cleanup.kill_netns_processes(set(record.data["netns_inodes"]) - {None})
            if self.net is not None:
                for node in self.net.hosts + self.net.switches:
                    if node.shell is not None:
                        with contextlib.suppress(OSError):
                            node.shell.kill()
                        with contextlib.suppress(Exception):
                            node.shell.wait(2)
                    for pipe in (node.stdin, node.stdout):
                        with contextlib.suppress(Exception):
                            pipe.close()
                self.net = None
        finally:
            if record:
                cleanup.teardown(record.data)  # bridges, root-side interfaces, cgroups
                record.release()
                self._record = None
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
            self._old_handlers.clear()

    # ----------------------------------------------------------------- use
    def host(self, name: str):
        """The Mininet host (``.cmd``, ``.popen``, ``.IP()``)."""
        if name not in self.topology.hosts:
            raise TestbedError(f"no host {name!r}; hosts are: {', '.join(self.topology.hosts)}")
        return self._nodes[name]

    def hosts(self, role: str | None = None) -> list[str]:
        return [h.name for h in self.topology.hosts.values() if role is None or h.role == role]

    def elapsed(self) -> float:
        """Seconds since the replay clock started (monotonic, the same clock in every host)."""
        if self.t0 is None:
            raise TestbedError("the emulation is not running or its clock is held (see start_clock)")
        return time.monotonic() - self.t0

    def timeline(self, link: str, direction: str) -> list[schedule.Step]:
        return self.timelines.get(f"{link}.{direction}", [])

    def expected_rate_bps(self, link: str, direction: str, t: float) -> float:
        steps = self.timeline(link, direction)
        return schedule.expected_rate_bps(steps, t) if steps else float("inf")

    @property
    def replay_log(self) -> Path | None:
        return self.log_dir / "replay.csv" if self.log_dir else None

"""Fleets past one machine: a topology's hosts placed across servers with Mininet's cluster mode.

Built on Mininet's cluster edition (``mininet/examples/cluster.py``: ``RemoteHost``, ``RemoteLink``
over SSH ``-w`` tap tunnels). A ``cluster.yaml`` lists the servers and the placement::

    servers:
      - {name: main, host: localhost}             # servers[0]: this machine, the controller
      - name: b
        host: 10.0.0.2                            # what ssh connects to
        user: root                                # default root
        port: 22                                  # default 22
        key: /root/.ssh/testbed_ed25519           # identity file (optional)
        known_hosts: /root/.ssh/testbed_known     # optional: strict host-key checking against it
        python: /opt/testbed/.venv/bin/python     # default: this interpreter's path (same venv path)
    placement: round-robin                        # or an explicit map {device1: b, device2: main}

``round-robin`` deals the *device* hosts whose own traffic is not shaped over every server in order;
everything else (switches, cloud and edge hosts, hosts that send on a shaped link) stays on
``servers[0]``. Shaped and traced directions are shaped where their sender is, and that must be
``servers[0]`` (the replayer changes the rates there, in place, over netlink): an explicit placement
that puts a shaped link's sender elsewhere is refused with a clear error. A link whose ends are on
different servers is an SSH tap tunnel (``ssh -o Tunnel=ethernet -w L:R``); what it adds is measured
(:meth:`ClusterEmulation.measure_tunnels`: RTT by ping, ceiling by iperf3) and written to
``cluster.json`` with the servers' clock offsets (:mod:`testbed.emulation.clock`) at start and end.

Cleanup: each remote server keeps a record of what the run created there
(``/run/testbed/cluster/<controller>-<pid>.json``: host shells, namespace inodes, interfaces,
cgroups); ``stop()`` removes it over SSH, and ``testbed cleanup --cluster cluster.yaml`` removes
what a killed run left on every server (``python -m testbed.emulation.cluster remote-cleanup`` runs
there), then cleans this machine as ``testbed cleanup`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed.emulation import cleanup, clock, shaping
from testbed.emulation.emulation import Emulation, _bridge_class, _host_class, resolve_path
from testbed.emulation.topology import Topology, load_topology
from testbed.errors import ConfigError, TestbedError

SERVER_KEYS = ("name", "host", "user", "port", "key", "known_hosts", "python")
TOP_KEYS = ("servers", "placement")
PLACEMENTS = ("round-robin",)
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")
LOCAL = "localhost"
REMOTE_STATE = "/run/testbed/cluster"  # on every server: records of what runs created there
REMOTE_CGROUP = "testbed-cluster"  # cgroup parent on remote servers (never touched by plain cleanup)
TAP_BASE = 100  # ssh -w numbers: tap devices tapN


@dataclass(frozen=True)
class Server:
    name: str
    host: str
    user: str = "root"
    port: int = 22
    key: str | None = None
    known_hosts: str | None = None
    python: str = sys.executable

    @property
    def local(self) -> bool:
        return self.host == LOCAL


@dataclass(frozen=True)
class ClusterConfig:
    servers: tuple[Server, ...]
    placement: str | dict[str, str]
    source: str = "<dict>"

    def server(self, name: str) -> Server:
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def controller(self) -> Server:
        return self.servers[0]

    def place(self, topology: Topology, shaped_senders: set[str] | None = None) -> dict[str, str]:
        """node name -> server name, for every host and switch of ``topology``; errors name the key."""
        shaped = set(shaped_senders if shaped_senders is not None else _shaped_senders(topology))
        first = self.controller.name
        out = {n: first for n in (*topology.hosts, *topology.switches)}
        if self.placement == "round-robin":
            movable = [h.name for h in topology.hosts.values() if h.role == "device" and h.name not in shaped]
            for i, name in enumerate(movable):
                out[name] = self.servers[i % len(self.servers)].name
            return out
        names = [s.name for s in self.servers]
        for node, server in self.placement.items():
            where = f"{self.source}: placement.{node}"
            if node in topology.switches:
                raise ConfigError(where, f"{node!r} is a switch; switches stay on the controller ({first})")
            if node not in topology.hosts:
                raise ConfigError(where, f"unknown host {node!r} in topology {topology.name!r}; hosts are: "
                                  f"{', '.join(topology.hosts)}")
            if server not in names:
                raise ConfigError(where, f"unknown server {server!r}; servers are: {', '.join(names)}")
            if server != first and node in shaped:
                links = [ln for ln, lk in topology.links.items() if node in (lk.a, lk.b)]
                raise ConfigError(where, f"{node!r} sends on a shaped or traced link ({', '.join(links)}); shaping "
                                  f"runs on the controller, so {node!r} must stay on {first!r}")
            out[node] = server
        return out


def _shaped_senders(topology: Topology, extra: set[tuple[str, str]] = frozenset()) -> set[str]:
    """Nodes that send on a shaped direction (rate, delay, loss, trace, or in ``extra`` (link, dir))."""
    out = set()
    for lname, link in topology.links.items():
        for d in ("up", "down"):
            if link.direction(d).shaped or (lname, d) in extra:
                out.add(link.sender(d))
    return out


def load_cluster(path: str | Path) -> ClusterConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "cluster file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"{path}:{mark.line + 1}" if mark else str(path),
                          f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_cluster(raw, source=str(path))


def parse_cluster(raw: Any, source: str = "<dict>") -> ClusterConfig:
    if not isinstance(raw, dict):
        raise ConfigError(source, "must be a mapping with keys: servers, placement")
    for k in raw:
        if k not in TOP_KEYS:
            raise ConfigError(f"{source}: {k}", f"unknown key; allowed: {', '.join(TOP_KEYS)}")
    servers_raw = raw.get("servers")
    if not isinstance(servers_raw, list) or not servers_raw:
        raise ConfigError(f"{source}: servers", "must be a non-empty list of servers "
                          "(the first is this machine: {name: main, host: localhost})")
    servers = []
    for i, s in enumerate(servers_raw):
        key = f"{source}: servers[{i}]"
        if not isinstance(s, dict):
            raise ConfigError(key, "must be a mapping with keys: " + ", ".join(SERVER_KEYS))
        for k in s:
            if k not in SERVER_KEYS:
                raise ConfigError(f"{key}.{k}", f"unknown key; allowed: {', '.join(SERVER_KEYS)}")
        name, host = s.get("name"), s.get("host")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigError(f"{key}.name", f"must be a name (letter first, then letters, digits, '_.-'), got {name!r}")
        if any(o.name == name for o in servers):
            raise ConfigError(f"{key}.name", f"server name {name!r} is used twice")
        if not isinstance(host, str) or not host or any(c.isspace() for c in host) or host.startswith("-"):
            raise ConfigError(f"{key}.host", f"must be a host name or address, got {host!r}")
        if i == 0 and host != LOCAL:
            raise ConfigError(f"{key}.host", f"the first server is this machine (the controller): host must be "
                              f"{LOCAL!r}, got {host!r}")
        if i > 0 and host == LOCAL:
            raise ConfigError(f"{key}.host", f"only servers[0] is {LOCAL!r}; give the address ssh connects to")
        user = s.get("user", "root")
        if not isinstance(user, str) or not re.match(r"^[a-z_][a-z0-9_.-]*$", user):
            raise ConfigError(f"{key}.user", f"must be a user name, got {user!r}")
        port = s.get("port", 22)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigError(f"{key}.port", f"must be a TCP port 1..65535, got {port!r}")
        paths = {}
        for k in ("key", "known_hosts"):
            v = s.get(k)
            if v is not None:
                p = resolve_path(str(v), Path(source).parent if source != "<dict>" else None)
                if not p.is_file():
                    raise ConfigError(f"{key}.{k}", f"file not found: {v}")
                paths[k] = str(p.resolve())
        python = s.get("python", sys.executable)
        if not isinstance(python, str) or not python:
            raise ConfigError(f"{key}.python", "must be the path of the testbed's venv python on that server")
        servers.append(Server(name=name, host=host, user=user, port=port, python=python, **paths))
    placement = raw.get("placement", "round-robin")
    if isinstance(placement, str):
        if placement not in PLACEMENTS:
            raise ConfigError(f"{source}: placement", f"must be one of {', '.join(PLACEMENTS)} or a map "
                              f"{{host: server}}, got {placement!r}")
    elif isinstance(placement, dict):
        placement = {str(k): v for k, v in placement.items()}
        for k, v in placement.items():
            if not isinstance(v, str):
                raise ConfigError(f"{source}: placement.{k}", f"must be a server name, got {v!r}")
    else:
        raise ConfigError(f"{source}: placement", "must be 'round-robin' or a map {host: server}")
    return ClusterConfig(servers=tuple(servers), placement=placement, source=source)


# --------------------------------------------------------------------------- ssh

def ssh_argv(server: Server, control_dir: str | None = None, tt: bool = False) -> list[str]:
    """The ssh command up to the destination; ``control_dir``: share one connection (ControlMaster)."""
    a = ["ssh", "-q", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", str(server.port)]
    if server.key:
        a += ["-i", server.key, "-o", "IdentitiesOnly=yes"]
    if server.known_hosts:
        a += ["-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    if control_dir:
        a += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir}/%C", "-o", "ControlPersist=no"]
    else:
        a += ["-o", "ControlPath=none"]
    if tt:
        a.append("-tt")
    return a + ["-l", server.user, server.host]


def remote_command(argv: list[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def ssh_run(server: Server, argv: list[str], control_dir: str | None = None, input: str | None = None,
            timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(ssh_argv(server, control_dir) + [remote_command(argv)], input=input, text=True,
                          capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise TestbedError(f"server {server.name} ({server.user}@{server.host}:{server.port}): "
                           f"{' '.join(argv[:4])} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def precheck(server: Server, control_dir: str | None = None) -> None:
    """One SSH round trip that needs root, mnexec and the testbed's python there; clear error if not."""
    probe = ("test \"$(id -u)\" = 0 || { echo 'not root'; exit 3; }; command -v mnexec >/dev/null || "
             "{ echo 'mnexec missing (apt install mininet)'; exit 4; }; test -e /dev/net/tun || "
             "{ echo 'no /dev/net/tun'; exit 5; }; " + shlex.quote(server.python)
             + " -c 'import testbed' || { echo 'python cannot import testbed: " + server.python + "'; exit 6; }")
    try:
        proc = subprocess.run(ssh_argv(server, control_dir) + [probe], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise TestbedError(f"server {server.name}: ssh {server.user}@{server.host}:{server.port} timed out") from None
    if proc.returncode != 0:
        why = (proc.stdout.strip().splitlines() or [""])[-1] or proc.stderr.strip() or "ssh failed"
        raise TestbedError(f"server {server.name}: ssh {server.user}@{server.host} -p {server.port}: {why} (exit "
                           f"{proc.returncode}); see docs/cluster.md for the key, sshd and venv set-up")


# --------------------------------------------------------------------------- Mininet classes

def _remote_host_class():
    from mininet.examples.cluster import RemoteHost
    from mininet.node import Node

    class TestbedRemoteHost(RemoteHost):
        """Mininet's RemoteHost, reached with our ssh options (port, key, known_hosts, shared connection),
        as root without sudo; its processes can run in a CPU cgroup on the server."""

        cgroup_tasks = None  # local cgroup path: none (the cgroup lives on the server)

        def __init__(self, name, cluster_server: Server, control_dir: str, **kwargs):
            self.cluster_server = cluster_server
            self.control_dir = control_dir
            self.remote_cgroup_procs: str | None = None
            super().__init__(name, server=cluster_server.host, user=cluster_server.user, **kwargs)

        def _popen(self, cmd, sudo=True, tt=True, **params):  # noqa: ARG002 - Mininet's signature
            if isinstance(cmd, str):
                cmd = cmd.split()
            if self.isRemote:
                cmd = ssh_argv(self.cluster_server, self.control_dir, tt=tt) + [remote_command(cmd)]
            params.setdefault("preexec_fn", os.setpgrp)
            return Node._popen(self, cmd, **params)

        def popen(self, *args, **kwargs):
            if self.remote_cgroup_procs and "mncmd" not in kwargs:
                kwargs["mncmd"] = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', self.remote_cgroup_procs,
                                   "mnexec", "-da", str(self.pid)]
            return super().popen(*args, **kwargs)

    return TestbedRemoteHost


def _tunnel_link_class(emu: ClusterEmulation):
    from mininet.examples.cluster import RemoteLink

    class SSHTapLink(RemoteLink):
        """Mininet's SSH tunnel link, with our ssh options and tap numbers that do not collide (the two
        ends may share a kernel when the 'remote' server is this machine)."""

        def makeTunnel(self, node1, node2, intfname1, intfname2, addr1=None, addr2=None):  # noqa: N802
            if getattr(node1, "isRemote", False):
                node1, node2 = node2, node1
                intfname1, intfname2, addr1, addr2 = intfname2, intfname1, addr2, addr1
            return emu._make_tunnel(node1, node2, intfname1, intfname2, addr1, addr2)

    return SSHTapLink


# --------------------------------------------------------------------------- the emulation

@dataclass
class _RemoteRecord:
    server: Server
    data: dict = field(default_factory=dict)


class ClusterEmulation(Emulation):
    """An :class:`Emulation` whose hosts are placed across the servers of a :class:`ClusterConfig`."""

    def __init__(self, topology: Topology, cluster: ClusterConfig, **kwargs):
        if (kwargs.get("switch") or topology.switch) == "ovs":
            # the tunnels attach to Linux bridges on every server (Mininet's cluster mode does the same)
            raise ConfigError(f"{topology.source}: switch", "cluster mode builds Linux bridges; switch: ovs runs on "
                              "one machine only (drop the cluster file or use switch: linuxbridge)")
        super().__init__(topology, **kwargs)
        self.cluster = cluster
        extra = {k for k in self.traces} | {(f.link, d) for f in self.faults for d in f.directions()}
        self.placement = cluster.place(topology, _shaped_senders(topology, extra))
        used = sorted(set(self.placement.values()) - {cluster.controller.name})
        self.remote_servers = [cluster.server(n) for n in used]
        self.run_id = f"{socket.gethostname()}-{os.getpid()}"
        self.control_dir: str | None = None
        self._remote: dict[str, _RemoteRecord] = {}
        self._taps_taken: dict[str, set[str]] = {}
        self._next_tap = TAP_BASE
        self.crossing_links: list[str] = []
        self.offsets_start: dict[str, clock.OffsetSample] = {}
        self.offsets_end: dict[str, clock.OffsetSample] = {}
        self.tunnels: dict[str, dict] = {}
        self.build_s: float | None = None
        self.go_times: dict[str, float] = {}  # server -> workload start on its own monotonic clock

    @classmethod
    def from_yaml(cls, topology_path, cluster: ClusterConfig | str | Path | None = None, traces=None, faults=None,
                  log_dir=None, params=None, **kwargs) -> ClusterEmulation:
        if not isinstance(cluster, ClusterConfig):
            cluster = load_cluster(cluster)
        return cls(load_topology(resolve_path(topology_path), params=params), cluster, traces=traces,
                   faults=faults, log_dir=log_dir, **kwargs)

    def server_of(self, node: str) -> Server:
        return self.cluster.server(self.placement[node])

    # ---------------------------------------------------------------- build
    def _build(self) -> None:
        from mininet.link import Link
        from mininet.log import setLogLevel
        from mininet.net import Mininet

        t_build = time.monotonic()
        setLogLevel("warning")
        self.control_dir = str(cleanup.STATE_DIR / f"cluster-ssh-{os.getpid()}")
        os.makedirs(self.control_dir, mode=0o700, exist_ok=True)
        self._record.data["cluster"] = {"run_id": self.run_id, "control_dir": self.control_dir,
                                        "servers": [s.name for s in self.remote_servers]}
        self._record.save()
        for s in self.remote_servers:
            precheck(s, None)
            self._remote[s.name] = _RemoteRecord(s, {
                "run_id": self.run_id, "controller": socket.gethostname(), "controller_pid": os.getpid(),
                "server": s.name, "started": time.time(), "host_pids": [], "netns_inodes": [], "interfaces": [],
                "cgroups": []})
            names = ssh_run(s, ["ip", "-o", "link", "show"], None).stdout
            self._taps_taken[s.name] = {ln.split(":")[1].strip().split("@")[0] for ln in names.splitlines()
                                        if ":" in ln}
        self._taps_taken[LOCAL] = set(cleanup.link_names())
        topo = self.topology
        net = Mininet(topo=None, build=False, controller=None, host=_host_class(), switch=_bridge_class(), link=Link,
                      autoSetMacs=True, waitConnected=False)
        self.net = net
        remote_cls = _remote_host_class()
        tunnel_cls = _tunnel_link_class(self)
        for name in topo.hosts:
            server = self.server_of(name)
            if server.local:
                node = self._nodes[name] = net.addHost(name)
                self._record.add("host_pids", node.pid)
                self._record.add("netns_inodes", cleanup.netns_inode(node.pid))
            else:
                node = self._nodes[name] = net.addHost(name, cls=remote_cls, cluster_server=server,
                                                      control_dir=self.control_dir)
                self._record.add("helper_pids", node.shell.pid)  # the local ssh client of its shell
                ino = node.rcmd(["stat", "-L", "-c", "%i", f"/proc/{node.pid}/ns/net"]).strip()
                rec = self._remote[server.name].data
                rec["host_pids"].append(node.pid)
                rec["netns_inodes"].append(int(ino) if ino.isdigit() else None)
        self._save_remote_records()
        for i, name in enumerate(topo.switches):
            self._nodes[name] = net.addSwitch(f"tbs{i}-{name}"[:15], dpid=f"{i + 1:016x}")
            self._record.add("bridges", self._nodes[name].name)
        for i, link in enumerate(topo.links.values()):
            n1, n2 = f"tb{i}a-{link.a}"[:15], f"tb{i}b-{link.b}"[:15]
            s1, s2 = self.server_of(link.a), self.server_of(link.b)
            for ifname, srv in ((n1, s1), (n2, s2)):
                if srv.local:
                    self._record.add("interfaces", ifname)
                else:
                    self._remote[srv.name].data["interfaces"].append(ifname)
            if s1.name != s2.name:
                self.crossing_links.append(link.name)
                net.addLink(self._nodes[link.a], self._nodes[link.b], intfName1=n1, intfName2=n2, cls=tunnel_cls)
            elif s1.local:
                net.addLink(self._nodes[link.a], self._nodes[link.b], intfName1=n1, intfName2=n2)
            else:  # both ends on the same remote server: a veth pair made there, by the hosts' shells
                net.addLink(self._nodes[link.a], self._nodes[link.b], intfName1=n1, intfName2=n2, cls=tunnel_cls)
        for name in topo.switches:
            self._record.add("host_pids", self._nodes[name].pid)
        self._save_remote_records()
        net.build()
        net.start()
        net.staticArp()
        self._limit_cpu()
        self._save_remote_records()
        self.build_s = time.monotonic() - t_build
        for s in self.remote_servers:
            self.offsets_start[s.name] = clock.measure_offset(ssh_argv(s, self.control_dir), s.name, s.python)

    def _make_tunnel(self, node1, node2, intfname1, intfname2, addr1, addr2):
        """An SSH tap tunnel between local ``node1`` and remote ``node2`` (Mininet's RemoteLink.makeTunnel,
        with free tap numbers on each side and our ssh options)."""
        server = node2.cluster_server
        n1 = self._free_tap(LOCAL)
        n2 = self._free_tap(server.name, also=LOCAL)
        self._record.add("interfaces", f"tap{n1}")
        self._remote[server.name].data["interfaces"].append(f"tap{n2}")
        self._save_remote_records()
        cmd = ssh_argv(server) + ["-n", "-o", "Tunnel=ethernet", "-o", "ExitOnForwardFailure=yes", "-w", f"{n1}:{n2}",
                                  "echo @"]
        tunnel = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  preexec_fn=os.setpgrp)
        self._record.add("helper_pids", tunnel.pid)
        ready, _, _ = select.select([tunnel.stdout], [], [], 20)
        ch = tunnel.stdout.read(1).decode() if ready else ""
        if ch != "@":
            tunnel.kill()
            err = tunnel.stderr.read().decode().strip() if tunnel.poll() is not None else "timed out"
            raise TestbedError(f"tunnel {node1.name}:{intfname1} == {server.name}:{node2.name}:{intfname2} failed: "
                               f"{err or 'no answer'} (sshd needs 'PermitTunnel yes'; see docs/cluster.md)")
        for node, tap, name, addr, local in ((node1, f"tap{n1}", intfname1, addr1, True),
                                             (node2, f"tap{n2}", intfname2, addr2, False)):
            if getattr(node, "inNamespace", True):
                argv = ["ip", "link", "set", tap, "netns", str(node.pid)]
                out = subprocess.run(argv, capture_output=True, text=True).stderr if local else node.rcmd(argv)
                if out.strip():
                    raise TestbedError(f"tunnel: moving {tap} into {node.name} failed: {out.strip()}")
            res = node.cmd("ip link set", tap, "name", name, *(("address", addr) if addr else ()))
            if res.strip():
                raise TestbedError(f"tunnel: renaming {tap} to {name} on {node.name} failed: {res.strip()}")
        return tunnel

    def _free_tap(self, server: str, also: str | None = None) -> int:
        taken = self._taps_taken[server] | (self._taps_taken[also] if also else set())
        while f"tap{self._next_tap}" in taken:
            self._next_tap += 1
        n = self._next_tap
        self._taps_taken[server].add(f"tap{n}")
        self._next_tap += 1
        return n

    def _save_remote_records(self) -> None:
        for rec in self._remote.values():
            path = f"{REMOTE_STATE}/{self.run_id}.json"
            ssh_run(rec.server, ["sh", "-c", f'mkdir -p {REMOTE_STATE} && cat > "$0.tmp" && mv "$0.tmp" "$0"', path],
                    self.control_dir, input=json.dumps(rec.data))

    def _limit_cpu(self) -> None:
        local_only = [h for h in self.topology.hosts.values() if self.server_of(h.name).local]
        remote = [h for h in self.topology.hosts.values() if h.cpu and not self.server_of(h.name).local]
        topo = self.topology
        self.topology = dataclasses.replace(topo, hosts={h.name: h for h in local_only})
        try:
            super()._limit_cpu()
        finally:
            self.topology = topo
        for spec in remote:
            node = self._nodes[spec.name]
            quota = int(spec.cpu * 100_000)
            rel = f"{REMOTE_CGROUP}/{self.run_id}/{spec.name}"
            script = (f'if [ -d /sys/fs/cgroup/cpu ]; then d=/sys/fs/cgroup/cpu/{rel}; mkdir -p "$d" && '
                      f'echo 100000 > "$d/cpu.cfs_period_us" && echo {quota} > "$d/cpu.cfs_quota_us"; '
                      f'else for p in /sys/fs/cgroup /sys/fs/cgroup/{REMOTE_CGROUP} '
                      f'/sys/fs/cgroup/{REMOTE_CGROUP}/{self.run_id}; do mkdir -p "$p"; '
                      f'echo +cpu > "$p/cgroup.subtree_control" 2>/dev/null; done; d=/sys/fs/cgroup/{rel}; '
                      f'mkdir -p "$d" && echo "{quota} 100000" > "$d/cpu.max"; fi && '
                      f'echo {node.pid} > "$d/cgroup.procs" && echo "$d"')
            out = node.rcmd(["sh", "-c", script]).strip().splitlines()
            path = out[-1].strip() if out else ""
            if not path.startswith("/sys/fs/cgroup"):
                raise TestbedError(f"{spec.name}: could not create its CPU cgroup on {self.server_of(spec.name).name}: "
                                   f"{' '.join(out)}")
            node.remote_cgroup_procs = f"{path}/cgroup.procs"
            rec = self._remote[self.server_of(spec.name).name].data
            rec["cgroups"].append(path)
            parent = str(Path(path).parent)
            if parent not in rec["cgroups"]:
                rec["cgroups"].append(parent)

    def _netns_pid(self, node_name: str) -> int | None:
        if node_name in self.topology.hosts and not self.server_of(node_name).local:
            raise TestbedError(f"{node_name} is on server {self.placement[node_name]}: not shaped here")
        return super()._netns_pid(node_name)

    def _shape(self) -> None:
        # offloads off on every end (remote ends through their host's shell), then the usual shaping,
        # whose senders are all on this machine (ClusterConfig.place refuses the rest)
        if self.caps.ethtool:
            for i, link in enumerate(self.topology.links.values()):
                for node, ifname in ((link.a, f"tb{i}a-{link.a}"[:15]), (link.b, f"tb{i}b-{link.b}"[:15])):
                    argv = ["ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off"]
                    if node in self.topology.hosts and not self.server_of(node).local:
                        self._nodes[node].cmd(" ".join(argv), "2>/dev/null")
                    else:
                        shaping.run(super()._netns_pid(node), argv, check=False)
        caps = self.caps
        self.caps = dataclasses.replace(caps, ethtool=False)
        try:
            super()._shape()
        finally:
            self.caps = caps

    # ---------------------------------------------------------------- measurement
    def measure_tunnels(self, duration: float = 2.0, pings: int = 50) -> dict[str, dict]:
        """RTT (ping) and throughput ceiling (iperf3, TCP, remote -> local) across each remote server's
        tunnels, on an unshaped path, with the same measured between two local hosts as the baseline."""
        out = {}
        for s in self.remote_servers:
            remote_hosts = [h for h in self.topology.hosts if self.placement[h] == s.name]
            local_hosts = [h for h in self.topology.hosts if self.server_of(h).local]
            pair = self._unshaped_pair(remote_hosts, local_hosts)
            if pair is None:
                out[s.name] = {"note": "no unshaped path from a host on this server to one on the controller"}
                continue
            hr, hl = pair
            entry = {"from": hr, "to": hl, "path": self._path(hr, hl), "crossing": True,
                     "ping": self._ping(hr, hl, pings), "iperf3": self._iperf(hr, hl, duration)}
            base = self._unshaped_pair([h for h in local_hosts if h != hl], [hl])
            if base:
                entry["baseline"] = {"from": base[0], "to": hl, "path": self._path(base[0], hl),
                                     "ping": self._ping(base[0], hl, pings), "iperf3": self._iperf(base[0], hl, duration)}
                entry["added_rtt_ms"] = entry["ping"]["avg_ms"] - entry["baseline"]["ping"]["avg_ms"]
                entry["added_min_rtt_ms"] = entry["ping"]["min_ms"] - entry["baseline"]["ping"]["min_ms"]
            out[s.name] = entry
        self.tunnels = out
        self._write_cluster_log()
        return out

    def _path(self, a: str, b: str) -> list[str] | None:
        adj: dict[str, list[tuple[str, str]]] = {}
        for lname, lk in self.topology.links.items():
            adj.setdefault(lk.a, []).append((lk.b, lname))
            adj.setdefault(lk.b, []).append((lk.a, lname))
        prev: dict[str, tuple[str, str] | None] = {a: None}
        queue = [a]
        while queue:
            n = queue.pop(0)
            for m, lname in adj.get(n, []):
                if m not in prev and (m == b or m in self.topology.switches):
                    prev[m] = (n, lname)
                    queue.append(m)
        if b not in prev:
            return None
        links, n = [], b
        while prev[n] is not None:
            n, lname = prev[n]
            links.append(lname)
        return links[::-1]

    def _unshaped_pair(self, froms: list[str], tos: list[str]) -> tuple[str, str] | None:
        shaped = {p.link for p in self.ports}
        for a in froms:
            for b in tos:
                path = self._path(a, b)
                if path and not shaped & set(path):
                    return a, b
        return None

    def _ping(self, a: str, b: str, count: int) -> dict:
        out = self._nodes[a].cmd(f"ping -c {count} -i 0.01 -w {count // 10 + 10} -q {self._nodes[b].IP()}")
        m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", out)
        loss = re.search(r"([\d.]+)% packet loss", out)
        if not m:
            raise TestbedError(f"ping {a} -> {b} failed: {out.strip()[-300:]}")
        return {"count": count, "min_ms": float(m[1]), "avg_ms": float(m[2]), "max_ms": float(m[3]),
                "mdev_ms": float(m[4]), "loss_pct": float(loss[1]) if loss else None}

    def _iperf(self, a: str, b: str, duration: float) -> dict:
        server = self._nodes[b].popen(["iperf3", "-s", "-1", "-p", "5299"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            secs = max(1, round(duration))  # iperf3 takes whole seconds (-t 0 would run for ever)
            out = self._nodes[a].cmd(f"timeout {secs + 15} iperf3 -c {self._nodes[b].IP()} -p 5299 -t {secs} -J")
        finally:
            with contextlib.suppress(Exception):
                server.kill()
                server.wait(5)
        try:
            res = json.loads(out[out.index("{"):])
            bps = res["end"]["sum_received"]["bits_per_second"]
        except (ValueError, KeyError) as exc:
            raise TestbedError(f"iperf3 {a} -> {b} failed: {out.strip()[-300:]}") from exc
        return {"seconds": secs, "mbps": bps / 1e6,
                "retransmits": res["end"].get("sum_sent", {}).get("retransmits")}

    def clock_report(self) -> dict[str, dict]:
        """Per server: offset of its monotonic clock from ours at start (and end, with drift), +- uncertainty."""
        out = {}
        for name, start in self.offsets_start.items():
            end = self.offsets_end.get(name)
            out[name] = clock.drift(start, end) if end else {"server": name, "start": start.as_dict(),
                                                            "uncertainty_s": start.uncertainty_s}
        return out

    def go_file(self, host: str) -> str:
        """The start file a host's agent waits for: ``go.json`` here, ``go-<server>.json`` elsewhere."""
        server = self.placement.get(host, self.cluster.controller.name)
        return "go.json" if server == self.cluster.controller.name else f"go-{server}.json"

    def info(self) -> dict:
        return {"run_id": self.run_id, "cluster": self.cluster.source,
                "servers": [{"name": s.name, "host": s.host, "user": s.user, "port": s.port}
                            for s in self.cluster.servers],
                "placement": self.placement, "crossing_links": self.crossing_links,
                "build_s": self.build_s, "clock_offsets": self.clock_report(), "tunnels": self.tunnels,
                "start_on_server_clock": self.go_times,
                "note": "records' times are relative to trace time 0 on their host's own monotonic clock; "
                        "remote hosts got trace time 0 converted with the start offset (uncertainty_s)"}

    def _write_cluster_log(self) -> None:
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / "cluster.json").write_text(json.dumps(self.info(), indent=2))

    # ---------------------------------------------------------------- teardown
    def stop(self) -> None:
        try:
            if self.net is not None and self.offsets_start:
                for s in self.remote_servers:
                    with contextlib.suppress(Exception):
                        self.offsets_end[s.name] = clock.measure_offset(ssh_argv(s, self.control_dir), s.name,
                                                                        s.python, samples=16, timeout=10.0)
                with contextlib.suppress(OSError):
                    self._write_cluster_log()
            for rec in self._remote.values():  # a fresh connection: the shared one may be what failed
                with contextlib.suppress(Exception):
                    remote_cleanup(rec.server, run_id=self.run_id, control_dir=None)
            self._remote.clear()
        finally:
            super().stop()
            if self.control_dir:
                shutil.rmtree(self.control_dir, ignore_errors=True)


def write_go_files(emu: ClusterEmulation, out: Path, t_start: float) -> dict[str, float]:
    """``go-<server>.json`` for each remote server: the workload start ``t_start`` (our monotonic clock)
    on that server's monotonic clock, by the offset measured at start (+- its uncertainty)."""
    shifted = {}
    for s in emu.remote_servers:
        off = emu.offsets_start[s.name].offset_s
        shifted[s.name] = t_start + off
        tmp = Path(out) / f"go-{s.name}.json.tmp"
        tmp.write_text(json.dumps({"t_start": t_start + off, "t0": t_start + off, "controller_t_start": t_start,
                                   "offset_s": off, "uncertainty_s": emu.offsets_start[s.name].uncertainty_s}))
        tmp.replace(Path(out) / f"go-{s.name}.json")
    emu.go_times = shifted
    return shifted


# --------------------------------------------------------------------------- cleanup

def remote_cleanup(server: Server, run_id: str | None = None, keep_pids: list[int] = (),
                   control_dir: str | None = None) -> list[str]:
    """On ``server``, remove what this controller's runs left (one run, or every run whose controller
    pid is not in ``keep_pids``). Returns the lines it printed there."""
    argv = [server.python, "-m", "testbed.emulation.cluster", "remote-cleanup", "--controller", socket.gethostname()]
    if run_id:
        argv += ["--run-id", run_id]
    if keep_pids:
        argv += ["--keep", ",".join(map(str, keep_pids))]
    proc = ssh_run(server, argv, control_dir, timeout=120)
    return [f"{server.name}: {ln}" for ln in proc.stdout.splitlines() if ln.strip()]


def cleanup_cluster(cluster: ClusterConfig, force: bool = False) -> list[str]:
    """``testbed cleanup --cluster``: every remote server first (over fresh SSH connections), then here."""
    live = [] if force else [p for p in cleanup.live_runs() if p != os.getpid()]
    done = []
    for s in cluster.servers[1:]:
        try:
            done += remote_cleanup(s, keep_pids=live)
        except (TestbedError, subprocess.TimeoutExpired) as exc:
            done.append(f"{s.name}: could not clean: {exc}")
    done += cleanup.cleanup(force=force)
    for d in cleanup.STATE_DIR.glob("cluster-ssh-*") if cleanup.STATE_DIR.exists() else []:
        pid = d.name.rsplit("-", 1)[-1]
        if pid.isdigit() and (not cleanup.pid_alive(int(pid)) or (force and int(pid) != os.getpid())):
            shutil.rmtree(d, ignore_errors=True)
            done.append(f"removed ssh control dir {d}")
    return done


def _clean_record(data: dict, other_inodes: set[int]) -> list[str]:
    done = []
    inodes = {i for i in data.get("netns_inodes", []) if i} - other_inodes
    n = cleanup.kill_netns_processes(inodes)
    if n:
        done.append(f"killed {n} processes in {len(inodes)} emulated hosts")
    for pid in data.get("host_pids", []):
        if cleanup.pid_alive(pid) and cleanup._is_mininet_shell(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            done.append(f"killed host shell {pid}")
    existing = set(cleanup.link_names())
    for name in data.get("interfaces", []):
        if name in existing and cleanup.delete_link(name):
            done.append(f"deleted link {name}")
    for cg in sorted(data.get("cgroups", []), key=len, reverse=True):
        procs = Path(cg) / "cgroup.procs"
        for t in (procs.read_text().split() if procs.exists() else []):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(t), signal.SIGKILL)
        if cleanup.remove_cgroup(cg):
            done.append(f"removed cgroup {cg}")
    return done


def remote_cleanup_here(controller: str, run_id: str | None, keep: set[int]) -> list[str]:
    """Runs on a server: clean the records of ``controller``'s runs (``run_id``, or all but ``keep``)."""
    state = Path(REMOTE_STATE)
    if not state.exists():
        return []
    records = {}
    for f in state.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            records[f] = json.loads(f.read_text())
    chosen = [f for f, d in records.items() if d.get("controller") == controller
              and (d.get("run_id") == run_id if run_id else int(d.get("controller_pid", 0)) not in keep)]
    done = []
    others = {i for f, d in records.items() if f not in chosen for i in d.get("netns_inodes", []) if i}
    others |= cleanup._inodes_of_live_runs()
    for f in chosen:
        done += _clean_record(records[f], others)
        f.unlink(missing_ok=True)
        done.append(f"removed record {f.name}")
    for f in state.glob("*.tmp"):
        f.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        state.rmdir()
    for root in (Path("/sys/fs/cgroup/cpu") / REMOTE_CGROUP, Path("/sys/fs/cgroup") / REMOTE_CGROUP):
        with contextlib.suppress(OSError):
            root.rmdir()  # only when empty
    return done


def remote_leftovers() -> dict[str, list]:
    """What cluster runs left on this server (tests, doctor): records, cgroups and tap devices of runs
    whose controller is gone. Runs controlled from this machine by a live process are not leftovers."""
    state = Path(REMOTE_STATE)
    me = socket.gethostname()

    def live(run_id: str) -> bool:
        host, _, pid = run_id.rpartition("-")
        return host == me and pid.isdigit() and int(pid) != os.getpid() and cleanup.pid_alive(int(pid))

    records, live_links = [], set()
    for f in sorted(state.glob("*.json")) if state.exists() else []:
        if live(f.stem):
            with contextlib.suppress(OSError, ValueError):
                live_links.update(json.loads(f.read_text()).get("interfaces", []))
            continue
        records.append(f.name)
    cgroups = []
    for root in (Path("/sys/fs/cgroup/cpu") / REMOTE_CGROUP, Path("/sys/fs/cgroup") / REMOTE_CGROUP):
        if root.exists():
            cgroups += [str(p) for p in root.rglob("*") if p.is_dir() and not live(p.relative_to(root).parts[0])]
    return {"records": records, "cgroups": cgroups,
            "taps": [n for n in cleanup.link_names() if re.match(r"^tap\d+$", n) and n not in live_links]}


# --------------------------------------------------------------------------- one-machine "cluster"

@contextlib.contextmanager
def loopback_server(workdir: str | Path, sshd: str | None = None):
    """A second "server" on this machine, for tests and benchmarks: our own sshd on 127.0.0.1 at a free
    port (own config, host key and throwaway client key in ``workdir``; root login by key only; tunnels
    allowed), killed on exit. Yields the path of a ``cluster.yaml`` (servers: main = localhost, loop =
    127.0.0.1 over that sshd; placement round-robin). Nothing system-wide changes, except that sshd's
    privilege-separation dir ``/run/sshd`` is created (empty) if missing and removed again."""
    sshd = sshd or shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        raise TestbedError("sshd missing: apt-get install openssh-server (scripts/install.sh installs it)")
    d = Path(workdir)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    for k in ("host_key", "client_key"):
        for f in (d / k, d / f"{k}.pub"):
            f.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / k)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text()}")
    (d / "sshd_config").write_text("\n".join([
        f"ListenAddress 127.0.0.1:{port}", f"HostKey {d}/host_key", f"PidFile {d}/sshd.pid",
        f"AuthorizedKeysFile {d}/authorized_keys", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitTunnel yes", "MaxSessions 1000",
        "MaxStartups 200", "UseDNS no", ""]))
    made_privsep = not Path("/run/sshd").exists()
    if made_privsep:
        os.makedirs("/run/sshd", mode=0o755)
    log = open(d / "sshd.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise TestbedError(f"sshd did not start: {(d / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.05)
        cfg = d / "cluster.yaml"
        cfg.write_text(yaml.safe_dump({
            "servers": [{"name": "main", "host": LOCAL},
                        {"name": "loop", "host": "127.0.0.1", "port": port, "user": "root",
                         "key": str(d / "client_key"), "known_hosts": str(d / "known_hosts"),
                         "python": sys.executable}],
            "placement": "round-robin"}, sort_keys=False))
        yield cfg
    finally:
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                   text=True).stdout.split()]
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in children:  # per-connection sshd processes of this sshd, if any outlived it (by pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()
        if made_privsep:
            with contextlib.suppress(OSError):
                os.rmdir("/run/sshd")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.emulation.cluster")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("remote-cleanup", help="(runs on a server over SSH) clean a controller's cluster runs")
    c.add_argument("--controller", required=True)
    c.add_argument("--run-id")
    c.add_argument("--keep", default="", help="controller pids whose runs are alive")
    sub.add_parser("leftovers", help="JSON: what cluster runs left on this server")
    args = p.parse_args(argv)
    if args.cmd == "leftovers":
        print(json.dumps(remote_leftovers()))
        return 0
    keep = {int(x) for x in args.keep.split(",") if x.strip().isdigit()}
    for line in remote_cleanup_here(args.controller, args.run_id, keep):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

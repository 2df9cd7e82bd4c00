"""Probe what this machine's kernel and userland can emulate.

Each probe tries the real thing (a qdisc on a throw-away veth pair, a cgroup
file, a binary) instead of trusting config files, so the answer holds for the
kernel actually running. Results feed ``testbed doctor``, the refusal of
topologies that ask for something impossible, and every run's manifest.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass

PROBE_IF = "tbprobe0"
PROBE_OVS_BRIDGE = "tbprobeovs0"


@dataclass(frozen=True)
class Capabilities:
    root: bool
    mnexec: bool
    mininet: bool
    htb: bool
    tbf: bool
    netem: bool
    ovs: bool
    linux_bridge: bool
    cgroup_cpu: str | None  # "v1", "v2" or None
    iptables_statistic: bool
    ethtool: bool

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[tuple[str, bool, str]]:
        """(feature, available, what it means) rows for ``testbed doctor``."""
        c = self
        return [
            ("root", c.root, "needed for namespaces, veths and tc" if not c.root else "running as root"),
            ("mininet (python)", c.mininet, "Mininet library importable from this interpreter"),
            ("mnexec", c.mnexec, "Mininet's namespace helper on PATH"),
            ("HTB qdisc", c.htb, "rate shaping and in-place trace replay (tc class change)"),
            ("TBF qdisc", c.tbf, "outage gate (hold/drop packets while a link is down)"),
            ("netem qdisc", c.netem, "delay, jitter and loss emulation" if c.netem else
             "NOT available: delay/jitter requests are refused; loss falls back to iptables"),
            ("iptables statistic", c.iptables_statistic, "random loss without netem"),
            ("Linux bridge", c.linux_bridge, "switches (default)"),
            ("Open vSwitch", c.ovs, "switches (optional: a topology's switch: ovs)" if c.ovs else
             "NOT available: a topology with switch: ovs is refused (needs the openvswitch module and "
             "ovs-vswitchd)"),
            ("cgroup cpu", bool(c.cgroup_cpu), f"per-host CPU limits ({c.cgroup_cpu})" if c.cgroup_cpu
             else "NOT available: host cpu shares are refused"),
            ("ethtool", c.ethtool, "turn off segmentation offloads on shaped links (exact shaping)"),
        ]


def _run(cmd: list[str], timeout: float = 10) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _qdisc_available(kind_args: list[str]) -> bool:
    return _run(["tc", "qdisc", "add", "dev", PROBE_IF, "root", *kind_args])


@functools.lru_cache(maxsize=1)
def probe() -> Capabilities:
    root = os.geteuid() == 0
    try:
        import mininet.net  # noqa: F401

        has_mininet = True
    except ImportError:
        has_mininet = False
    htb = tbf = netem = False
    if root and shutil.which("tc") and _run(["ip", "link", "add", PROBE_IF, "type", "veth", "peer", "name",
                                             PROBE_IF + "p"]):
        try:
            htb = _qdisc_available(["handle", "1:", "htb"])
            _run(["tc", "qdisc", "del", "dev", PROBE_IF, "root"])
            tbf = _qdisc_available(["tbf", "rate", "1mbit", "burst", "10k", "limit", "10k"])
            _run(["tc", "qdisc", "del", "dev", PROBE_IF, "root"])
            netem = _qdisc_available(["netem", "delay", "1ms"])
        finally:
            _run(["ip", "link", "del", PROBE_IF])
    linux_bridge = False
    if root and _run(["ip", "link", "add", PROBE_IF, "type", "bridge"]):
        linux_bridge = True
        _run(["ip", "link", "del", PROBE_IF])
    ovs = _ovs_bridge_works() if root else False
    if os.path.exists("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"):
        cgroup = "v1"
    elif os.path.exists("/sys/fs/cgroup/cgroup.controllers") and "cpu" in open(
            "/sys/fs/cgroup/cgroup.controllers").read().split():
        cgroup = "v2"
    else:
        cgroup = None
    stat = _iptables_statistic_loads()
    return Capabilities(
        root=root, mnexec=bool(shutil.which("mnexec")), mininet=has_mininet, htb=htb, tbf=tbf, netem=netem,
        ovs=ovs, linux_bridge=linux_bridge, cgroup_cpu=cgroup, iptables_statistic=bool(stat),
        ethtool=bool(shutil.which("ethtool")),
    )


def _ovs_bridge_works() -> bool:
    """Create and delete an OVS bridge: ``ovs-vsctl show`` alone succeeds with a database but no
    ovs-vswitchd or no openvswitch kernel module, where Mininet's OVS switches then fail."""
    if not shutil.which("ovs-vsctl") or not _run(["ovs-vsctl", "--timeout=2", "show"]):
        return False
    try:
        return _run(["ovs-vsctl", "--timeout=30", "add-br", PROBE_OVS_BRIDGE], timeout=40)
    finally:
        _run(["ovs-vsctl", "--timeout=30", "--if-exists", "del-br", PROBE_OVS_BRIDGE], timeout=40)


def _iptables_statistic_loads() -> bool:
    """Add and delete a statistic-match rule in a scratch chain (the only sure test)."""
    if os.geteuid() != 0 or not shutil.which("iptables"):
        return False
    chain = "TBPROBE"
    _run(["iptables", "-w", "-N", chain])
    ok = _run(["iptables", "-w", "-A", chain, "-m", "statistic", "--mode", "random", "--probability", "0.5",
               "-j", "RETURN"])
    _run(["iptables", "-w", "-F", chain])
    _run(["iptables", "-w", "-X", chain])
    return ok

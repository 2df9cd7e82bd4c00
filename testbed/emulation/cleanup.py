"""Leave a clean machine: a record of what each run created, and its removal.

Every running emulation writes ``/run/testbed/run-<pid>.json`` listing its
bridges, interfaces, host shells, network-namespace inodes and cgroups, and
updates it as it builds. Normal exit, exceptions and signals tear down from
that record; ``testbed cleanup`` does the same for runs whose process died
(SIGKILL, power-cut of the controller), and only ever touches this testbed's
objects: names it recorded, or interface/bridge names with its own prefixes.
Processes are found through their network namespace, so children that left
the host shell's process group (daemons, ``popen``) are found too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

STATE_DIR = Path(os.environ.get("TESTBED_STATE_DIR", "/run/testbed"))
CGROUP_PARENT = "testbed"
# interface and bridge names this testbed creates (see emulation.Emulation)
OWN_LINK_RE = re.compile(r"^(tb\d+[ab]-|tbs\d+-)")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def processes_in_netns(inodes: set[int]) -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        ino = netns_inode(int(entry))
        if ino is not None and ino in inodes:
            found.append(int(entry))
    return found


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def orphans(pids: list[int]) -> list[int]:
    """The processes among ``pids`` whose ancestry reaches init without passing a process outside ``pids``.

    A dead run's leftovers are re-parented to init; a namespace inode can be reused by a *new* namespace,
    whose processes descend from a live controller: those are never touched.
    """
    candidates = set(pids)
    out = []
    for pid in pids:
        p, seen = pid, 0
        while p in candidates and seen < 64:
            p, seen = _ppid(p), seen + 1
        if p in (0, 1, None):
            out.append(pid)
    return out


def kill_netns_processes(inodes: set[int], grace: float = 1.0, orphans_only: bool = False) -> int:
    """SIGTERM then SIGKILL every process living in one of these network namespaces.

    ``orphans_only`` (cleanup of a dead run) spares processes that a live controller started.
    """
    if not inodes:
        return 0
    pids = processes_in_netns(inodes)
    if orphans_only:
        pids = orphans(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.02)
    for pid in (orphans(processes_in_netns(inodes)) if orphans_only else processes_in_netns(inodes)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # reap our own children so they do not linger as zombies
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    return len(pids)


def _is_mininet_shell(pid: int) -> bool:
    try:
        return b"mininet:" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def link_names() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def delete_link(name: str) -> bool:
    return subprocess.run(["ip", "link", "del", name], capture_output=True).returncode == 0


def remove_cgroup(path: str) -> bool:
    p = Path(path)
    if not p.exists():
        return False
    for _ in range(50):
        try:
            p.rmdir()
            return True
        except OSError:
            time.sleep(0.02)  # tasks still exiting
    return False


class RunRecord:
    """The on-disk record of one live emulation."""

    def __init__(self, pid: int | None = None):
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.pid = pid or os.getpid()
        self.path = STATE_DIR / f"run-{self.pid}.json"
        self.data: dict = {"pid": self.pid, "started": time.time(), "bridges": [], "interfaces": [],
                           "netns_inodes": [], "host_pids": [], "cgroups": [], "helper_pids": []}
        self._lock_fd: int | None = None

    def acquire(self) -> None:
        """One emulation at a time on a machine: interface names and tc handles would collide."""
        fd = os.open(STATE_DIR / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        # TESTBED_LOCK_WAIT=S queues behind a running emulation for up to S seconds (shared dev boxes)
        deadline = time.monotonic() + float(os.environ.get("TESTBED_LOCK_WAIT", "0"))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
            os.close(fd)
            owners = [p for p in live_runs() if p != self.pid]
            from testbed.errors import TestbedError

            raise TestbedError(f"another testbed emulation is running (pid {', '.join(map(str, owners)) or '?'}); "
                               "wait for it, or run 'testbed cleanup' if it is stuck") from None
        self._lock_fd = fd
        self.save()

    def add(self, key: str, *values) -> None:
        self.data[key].extend(v for v in values if v not in self.data[key])
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def teardown(data: dict, dead_run: bool = False) -> list[str]:
    """Remove everything a run record lists. Returns a line per object removed.

    ``dead_run``: the record's process is gone, so its namespace inodes may have been reused; only
    orphaned processes are killed, and nothing that a live run's record claims.
    """
    done = []
    for pid in data.get("helper_pids", []):
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            done.append(f"killed helper process {pid}")
    inodes = set(data.get("netns_inodes", [])) - {None}
    if dead_run:
        inodes -= _inodes_of_live_runs()
    n = kill_netns_processes(inodes, orphans_only=dead_run)
    if n:
        done.append(f"killed {n} processes in {len(inodes)} emulated hosts")
    for pid in data.get("host_pids", []):
        if pid_alive(pid) and _is_mininet_shell(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    live_links = _links_of_live_runs() if dead_run else set()
    for name in set(data.get("bridges", [])) - live_links:
        if _delete_ovs_bridge(name):
            done.append(f"deleted OVS bridge {name}")
    existing = set(link_names()) - live_links
    for name in data.get("bridges", []) + data.get("interfaces", []):
        if name in existing and delete_link(name):
            done.append(f"deleted link {name}")
    for cg in data.get("cgroups", []):
        if remove_cgroup(cg):
            done.append(f"removed cgroup {cg}")
    for parent in {str(Path(cg).parent) for cg in data.get("cgroups", []) if Path(cg).name != str(data["pid"])}:
        if Path(parent).name == CGROUP_PARENT:
            with contextlib.suppress(OSError):
                Path(parent).rmdir()  # fails while another run uses it: fine
    return done


def _delete_ovs_bridge(name: str) -> bool:
    """An OVS bridge (``switch: ovs``) lives in OVS's database: ``ip link del`` cannot remove it."""
    if not shutil.which("ovs-vsctl"):
        return False
    try:
        if subprocess.run(["ovs-vsctl", "--timeout=5", "br-exists", name], capture_output=True,
                          timeout=10).returncode != 0:
            return False
        return subprocess.run(["ovs-vsctl", "--timeout=5", "del-br", name], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _live_records() -> list[dict]:
    out = []
    for pid in live_runs():
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads((STATE_DIR / f"run-{pid}.json").read_text()))
    return out


def _inodes_of_live_runs() -> set[int]:
    return {i for r in _live_records() for i in r.get("netns_inodes", [])}


def _links_of_live_runs() -> set[str]:
    return {n for r in _live_records() for n in r.get("interfaces", []) + r.get("bridges", [])}


def live_runs() -> list[int]:
    if not STATE_DIR.exists():
        return []
    pids = []
    for f in STATE_DIR.glob("run-*.json"):
        with contextlib.suppress(ValueError):
            pid = int(f.stem.split("-")[1])
            if pid_alive(pid):
                pids.append(pid)
    return pids


def cleanup(force: bool = False) -> list[str]:
    """Clean up after runs that died. ``force`` also tears down runs whose process is alive."""
    done: list[str] = []
    live_skipped = []
    if STATE_DIR.exists():
        for f in sorted(STATE_DIR.glob("run-*.json")):
            try:
                data = json.loads(f.read_text())
            except (OSError, ValueError):
                f.unlink(missing_ok=True)
                continue
            pid = int(data.get("pid", 0))
            if pid and pid_alive(pid) and pid != os.getpid():
                if not force:
                    live_skipped.append(pid)
                    continue
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                done.append(f"killed running emulation {pid}")
            done += teardown(data, dead_run=True)
            f.unlink(missing_ok=True)
            done.append(f"removed record {f.name}")
    # objects with our prefixes that no live record claims (e.g. a crash between create and record)
    for name in set(link_names()) - _links_of_live_runs():
        if OWN_LINK_RE.match(name) and delete_link(name):
            done.append(f"deleted stray link {name}")
    cg_root = Path("/sys/fs/cgroup/cpu") / CGROUP_PARENT
    live = set(live_runs()) - {os.getpid()}
    if cg_root.exists():
        for run_dir in cg_root.iterdir():
            if not run_dir.is_dir() or (run_dir.name.isdigit() and int(run_dir.name) in live):
                continue
            for host_dir in [d for d in run_dir.iterdir() if d.is_dir()] + [run_dir]:
                procs = host_dir / "cgroup.procs"
                for t in (procs.read_text().split() if procs.exists() else []):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(t), signal.SIGKILL)
                if remove_cgroup(str(host_dir)):
                    done.append(f"removed stray cgroup {host_dir}")
    if live_skipped:
        done.append(f"left alone: emulation(s) still running: {', '.join(map(str, live_skipped))} "
                    "(use --force to stop them)")
    return done


def _run_pid_of_cgroup(name: str) -> int | None:
    return int(name) if name.isdigit() else None


def leftovers() -> dict[str, list]:
    """Objects of this testbed that no live emulation owns (used by tests and ``testbed doctor``).

    Records, cgroups, links and Mininet shells of emulations still running in *other* processes are
    not leftovers; those of dead processes, and of this process (which should have torn down), are.
    """
    me = os.getpid()

    def owned_by_live_other(pid: int | None) -> bool:
        return pid is not None and pid != me and pid_alive(pid)

    records, live_links, dead_inodes = [], set(), set()
    if STATE_DIR.exists():
        for f in STATE_DIR.glob("run-*.json"):
            pid = int(f.stem.split("-")[1]) if f.stem.split("-")[1].isdigit() else None
            try:
                data = json.loads(f.read_text())
            except (OSError, ValueError):
                data = {}
            if owned_by_live_other(pid):
                live_links.update(data.get("interfaces", []) + data.get("bridges", []))
                continue
            records.append(f.name)
            dead_inodes.update(i for i in data.get("netns_inodes", []) if i)
    cg_root = Path("/sys/fs/cgroup/cpu") / CGROUP_PARENT
    cgroups = [c.name for c in cg_root.iterdir() if c.is_dir() and not owned_by_live_other(_run_pid_of_cgroup(c.name))
               ] if cg_root.exists() else []
    shells = []
    for pid in subprocess.run(["pgrep", "-f", "mininet:"], capture_output=True, text=True).stdout.split():
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if not owned_by_live_other(ppid):
            shells.append(int(pid))
    return {
        "links": [n for n in link_names() if OWN_LINK_RE.match(n) and n not in live_links],
        "records": records,
        "cgroups": cgroups,
        "mininet_shells": shells,
        # processes still running inside the network namespaces of runs that are gone
        "processes": orphans(processes_in_netns(dead_inodes - _inodes_of_live_runs())) if dead_inodes else [],
    }

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


def kill_netns_processes(inodes: set[int], grace: float = 1.0) -> int:
    """SIGTERM then SIGKILL every process living in one of these network namespaces."""
    if not inodes:
        return 0
    pids = processes_in_netns(inodes)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.02)
    for pid in processes_in_netns(inodes):
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


def teardown(data: dict) -> list[str]:
    """Remove everything a run record lists. Returns a line per object removed."""
    done = []
    for pid in data.get("helper_pids", []):
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            done.append(f"killed helper process {pid}")
    inodes = set(data.get("netns_inodes", []))
    n = kill_netns_processes(inodes)
    if n:
        done.append(f"killed {n} processes in {len(inodes)} emulated hosts")
    for pid in data.get("host_pids", []):
        if pid_alive(pid) and _is_mininet_shell(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    existing = set(link_names())
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
            done += teardown(data)
            f.unlink(missing_ok=True)
            done.append(f"removed record {f.name}")
    if not live_skipped:
        # objects with our prefixes that no record lists (e.g. a crash between create and record)
        for name in link_names():
            if OWN_LINK_RE.match(name) and delete_link(name):
                done.append(f"deleted stray link {name}")
        cg_root = Path("/sys/fs/cgroup/cpu") / CGROUP_PARENT
        if cg_root.exists():
            for child in cg_root.iterdir():
                if child.is_dir():
                    tasks = (child / "tasks").read_text().split() if (child / "tasks").exists() else []
                    for t in tasks:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(t), signal.SIGKILL)
                    if remove_cgroup(str(child)):
                        done.append(f"removed stray cgroup {child}")
    else:
        done.append(f"left alone: emulation(s) still running: {', '.join(map(str, live_skipped))} "
                    "(use --force to stop them)")
    return done


def leftovers() -> dict[str, list]:
    """What of this testbed is on the machine now (used by tests and ``testbed doctor``)."""
    cg_root = Path("/sys/fs/cgroup/cpu") / CGROUP_PARENT
    return {
        "links": [n for n in link_names() if OWN_LINK_RE.match(n)],
        "records": [f.name for f in STATE_DIR.glob("run-*.json")] if STATE_DIR.exists() else [],
        "cgroups": [c.name for c in cg_root.iterdir() if c.is_dir()] if cg_root.exists() else [],
        "mininet_shells": [int(p) for p in subprocess.run(["pgrep", "-f", "mininet:"], capture_output=True,
                                                           text=True).stdout.split()],
    }

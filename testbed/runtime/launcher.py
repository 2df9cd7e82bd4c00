"""Fork-server for device agents: one process imports torch once, each agent is a fork of it.

A device agent started as its own ``python`` costs ~1.6 s of CPU to import torch and the testbed
and ~150 MB of private memory before it loads a model, so 64 of them need ~100 s of CPU on two
cores and ~10-15 GB. The fork-server (a *zygote*) pays that once: it imports everything an agent
needs, freezes its objects for the garbage collector (so children do not copy the pages just to
mark them), and forks one child per agent. A child enters its host's network namespace (``setns``
on ``/proc/<host pid>/ns/net``; Python 3.11 has no ``os.setns``), points stdout/stderr at its log
and runs the agent's ``main``. The imported code and data stay shared copy-on-write.

    with AgentLauncher() as launcher:                      # in the controller, outside any host
        proc = launcher.spawn("testbed.runtime.device", ["--config", path], netns_pid=host.pid,
                              log_path="device1.log")
        proc.poll(); proc.wait(timeout=60); proc.kill()    # a subprocess.Popen-like handle

Children are not the controller's children: the zygote reaps them and reports their exit codes;
signals go through a pidfd, so a recycled pid is never signalled. Clean-up: closing the launcher
(or the controller dying: ``PR_SET_PDEATHSIG``) kills the zygote, and the zygote's death kills
every child it forked; children live in their host's namespace, where the emulation's own
clean-up finds them too. The mount namespace is not entered: an agent sees the controller's
``/sys``, which it does not read.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from testbed.emulation.netlink import enter_netns

log = logging.getLogger("testbed.runtime.launcher")

PR_SET_PDEATHSIG = 1
READY_TIMEOUT_S = 60.0
ENTER_TIMEOUT_S = 5.0  # longest a fork may take to enter its host's namespace before the zygote moves on
# What an agent imports: loaded once in the zygote, shared by every child.
# sklearn.datasets: the digits loader's import alone is ~80 MB per process.
PRELOAD = ("torch", "numpy", "zmq", "testbed.runtime.device", "testbed.runtime.execution", "testbed.transport",
           "testbed.models", "testbed.data", "testbed.strategies", "testbed.devices", "sklearn.datasets")

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """SIGKILL this process when the process (thread) that forked it dies."""
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def memory_kb(pid: int) -> dict[str, int]:
    """``Rss``, ``Pss``, ``Private_Dirty``... of a process in kB (``/proc/PID/smaps_rollup``); {} if gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


# -- the zygote (its own process) -------------------------------------------------------------------

def _child(request: dict, entered_fd: int) -> None:
    """In the forked child: enter the host, redirect output, run the module's ``main``; never returns.

    ``entered_fd`` is closed once the child is in its host's namespace (or on exit), which is what
    the zygote waits for before reporting the pid: a caller never sees an agent outside its host."""
    code = 1
    try:
        _die_with_parent()  # the zygote's death takes its children with it
        os.setsid()  # own session: a terminal's Ctrl-C reaches the controller, which stops agents in order
        if request.get("netns_pid"):
            enter_netns(int(request["netns_pid"]))
        os.close(entered_fd)
        if request.get("cwd"):
            os.chdir(request["cwd"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        log_path = request.get("log_path") or os.devnull  # never the zygote's channel to the controller
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        import importlib

        module = importlib.import_module(request["module"])
        sys.argv = [request["module"], *request["args"]]
        result = module.main(list(request["args"]))
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report anything, then leave without running the zygote's code
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _warm_lazy_imports() -> None:
    """Run once what agents import lazily at start-up: the device profiles' operation counter pulls in
    sympy and torch's dispatch machinery (~100 MB per process if each agent imported them itself)."""
    import torch

    from testbed.devices.features import op_features

    op_features(torch.nn.Conv2d(1, 1, 1), torch.zeros(1, 1, 2, 2))


def _serve() -> int:
    """Zygote loop: JSON lines in (spawn requests), JSON lines out (spawned pids, exit codes)."""
    _die_with_parent()
    if os.getppid() == 1:  # the controller died before prctl took effect
        return 1
    # The channel to the controller gets a private descriptor; whatever an import prints goes to the log.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import gc
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # an optional module (e.g. device profiles) is loaded by the agent then
            print(f"launcher: not preloaded {name}: {exc}", file=sys.stderr)
    import torch

    torch.set_num_threads(1)  # before any fork: children never start an intra-op pool of their own
    try:
        _warm_lazy_imports()
    except Exception as exc:  # noqa: BLE001 - an optimisation: the agent imports what it needs anyway
        print(f"launcher: warm-up skipped: {exc}", file=sys.stderr)
    gc.collect()
    gc.freeze()

    def send(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    send({"ready": os.getpid()})
    children: set[int] = set()
    stdin = sys.stdin.buffer
    buffered = b""
    try:
        while True:
            readable, _, _ = select.select([stdin], [], [], 0.05)
            while children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                children.discard(pid)
                send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
            if not readable:
                continue
            chunk = os.read(stdin.fileno(), 65536)
            if not chunk:  # the controller closed us: stop everything we started
                return 0
            buffered += chunk
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                request = json.loads(line)
                entered_r, entered_w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(entered_r)
                    _child(request, entered_w)
                os.close(entered_w)
                # EOF once the child has entered its namespace (or died); bounded so that a stuck
                # child cannot stall every other spawn.
                select.select([entered_r], [], [], ENTER_TIMEOUT_S)
                os.close(entered_r)
                children.add(pid)
                send({"id": request["id"], "pid": pid})
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        end = time.monotonic() + 2.0
        while children and time.monotonic() < end:  # reap them: no process of the run outlives close()
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)
            children.discard(pid)


# -- the controller's side --------------------------------------------------------------------------

class ForkedAgent:
    """A ``subprocess.Popen``-like handle on a child of the zygote (``pid``, ``poll``, ``wait``, ``kill``)."""

    def __init__(self, launcher: AgentLauncher, pid: int, name: str):
        self._launcher = launcher
        self.pid = pid
        self.name = name
        self.returncode: int | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # already gone (its exit code is on its way from the zygote)
            self._pidfd = None

    def poll(self) -> int | None:
        if self.returncode is None:
            code = self._launcher._exit_code(self.pid)
            if code is not None:
                self.returncode = code
                self._close_pidfd()
            elif not self._launcher.alive():
                self.returncode = -signal.SIGKILL  # the zygote died, and its children with it
                self._close_pidfd()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired(self.name, timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None and self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class AgentLauncher:
    """Start a zygote (:meth:`start`), fork agents from it (:meth:`spawn`), stop it (:meth:`close`)."""

    def __init__(self, log_path: str | Path | None = None, python: str = sys.executable):
        self.log_path = log_path
        self.python = python
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._lock = threading.Lock()
        self._spawned: dict[int, int] = {}
        self._exits: dict[int, int] = {}
        self._changed = threading.Condition(self._lock)
        self._next_id = 0
        self._reader: threading.Thread | None = None
        self.agents: list[ForkedAgent] = []
        self.zygote_pid: int | None = None  # set once the zygote has imported everything

    def start(self, timeout: float = READY_TIMEOUT_S) -> AgentLauncher:
        self._log = open(self.log_path, "a") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        # A session of its own: Ctrl-C in a terminal reaches the controller only, which then closes us.
        self._proc = subprocess.Popen([self.python, "-m", "testbed.runtime.launcher", "--serve"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                      start_new_session=True)
        self._reader = threading.Thread(target=self._read, name="launcher-reader", daemon=True)
        self._reader.start()
        end = time.monotonic() + timeout
        with self._changed:
            while self.zygote_pid is None:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"agent launcher exited with {self._proc.returncode} before it was ready"
                                       f"{'; see ' + str(self.log_path) if self.log_path else ''}")
                if time.monotonic() > end:
                    self.close()
                    raise RuntimeError(f"agent launcher not ready after {timeout:.0f} s")
                self._changed.wait(0.1)
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            message = json.loads(line)
            with self._changed:
                if "ready" in message:
                    self.zygote_pid = message["ready"]
                elif "exit" in message:
                    self._exits[message["exit"]] = message["code"]
                else:
                    self._spawned[message["id"]] = message["pid"]
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _exit_code(self, pid: int) -> int | None:
        with self._lock:
            return self._exits.get(pid)

    def spawn(self, module: str, args: list[str], *, netns_pid: int | None = None, log_path: str | Path | None = None,
              name: str | None = None, timeout: float = 10.0) -> ForkedAgent:
        """Fork an agent running ``module.main(args)`` inside the network namespace of ``netns_pid``."""
        if not self.alive():
            raise RuntimeError("agent launcher is not running (call start() first)")
        with self._changed:
            request_id = self._next_id
            self._next_id += 1
            request = {"id": request_id, "module": module, "args": [str(a) for a in args], "cwd": os.getcwd(),
                       "netns_pid": netns_pid, "log_path": str(log_path) if log_path else None}
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
            end = time.monotonic() + timeout
            while request_id not in self._spawned:
                if not self.alive() or time.monotonic() > end:
                    raise RuntimeError(f"agent launcher did not fork {name or module}")
                self._changed.wait(0.1)
            pid = self._spawned.pop(request_id)
        agent = ForkedAgent(self, pid, name or module)
        self.agents.append(agent)
        return agent

    def close(self) -> None:
        """Stop the zygote; it kills every agent still running."""
        if self._proc is None:
            return
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for agent in self.agents:
            agent.poll()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._proc = None

    def __enter__(self) -> AgentLauncher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


LAUNCH_MODES = ("auto", "fork", "process")
FORK_FROM_DEVICES = 4  # "auto": fleets this large share one zygote; smaller ones start a process each


def launcher_for(mode: str, n_devices: int, log_path: str | Path | None = None,
                 timeout: float = READY_TIMEOUT_S) -> AgentLauncher | None:
    """A started launcher when ``mode`` (``SessionConfig.agent_launch``) asks to fork agents, else None."""
    if mode not in LAUNCH_MODES:
        from testbed.errors import ConfigError

        raise ConfigError("agent_launch", f"must be one of {', '.join(LAUNCH_MODES)}, got {mode!r}")
    if mode == "process" or (mode == "auto" and n_devices < FORK_FROM_DEVICES):
        return None
    return AgentLauncher(log_path=log_path).start(timeout)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["--serve"]:
        print("usage: python -m testbed.runtime.launcher --serve  (started by AgentLauncher)", file=sys.stderr)
        return 2
    return _serve()


if __name__ == "__main__":
    raise SystemExit(main())

"""Device emulation at fleet scale: paced devices of mixed profiles, 1 to 64 of them on this host.

For each fleet size, runs ``topologies/fleet.yaml`` with N devices (profiles cycled over
raspberry_pi4, pixel3, jetson_nano), every device at ``--fps`` requests/s (device-only by default:
every request is a paced local inference), and prints side by side:

* release error |emulated - profiled| per request (the record's ``pace_late_ms``: how long after
  the profiled finish the host really released the result), p50 / p99 / max;
* the fraction of late requests (``pace_late``: released > 1 ms after the profiled finish) and of
  requests never paced (timeouts: the emulated device was busy past their deadline);
* host CPU during the workload: the run's own processes (agents, cloud, zygote) in cores, and the
  whole machine's busy cores (other users' load included, which makes the figures pessimistic);
* memory: peak sum of PSS and of RSS over the run's processes (PSS counts pages shared
  copy-on-write once; RSS sums count them in every process), and PSS per device agent (its share
  of the pages it shares with the zygote and its siblings included).

    sudo .venv/bin/python benchmarks/device_emulation.py [--fleets 1,8,32,64] [--duration 20]
    sudo .venv/bin/python benchmarks/device_emulation.py --fleets 8 --launch process,fork   # memory

Each fleet runs twice: ``staggered`` (device i of N sends at (i/N + k)/fps, as independent cameras
would) and ``aligned`` (every device at k/fps: N inferences land on the host's cores at once, so the
last finishes ~N x compute / cores later; a bound of the host, not of the pacing).

Targets on the 2-core host: p99 error <= 2 ms and <= 1 % late up to 32 devices; 64 devices run and
report what they could not pace. The table goes to stdout and ``--out``/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.runtime.launcher import memory_kb  # noqa: E402

PROFILES = ("raspberry_pi4", "pixel3", "jetson_nano")
os.environ.setdefault("TESTBED_LOCK_WAIT", "1800")  # queue behind other emulations on this machine
TICKS = os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (agents, cloud, zygote and its forks, host shells)."""
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent_of[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], {root}
    while frontier:
        children = [pid for pid, ppid in parent_of.items() if ppid in frontier]
        found += children
        frontier = set(children)
    return found


def is_agent(pid: int) -> bool:
    """A device agent: started as its own process, or forked by the launcher's zygote (not the zygote)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        parent_cmdline = Path(f"/proc/{parent}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"testbed.runtime.device" in cmdline or (b"testbed.runtime.launcher" in cmdline
                                                      and b"testbed.runtime.launcher" in parent_cmdline)


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def machine_busy_s() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICKS


class Sampler(threading.Thread):
    """Samples the run's processes every ``interval`` s for memory peaks (smaps_rollup: costly, so at the
    default priority); a second, real-time thread takes the CPU counters exactly at the workload's start
    and end (cheap /proc/<pid>/stat reads), so an overloaded run still gets its CPU figures."""

    def __init__(self, out_dir: Path, duration_s: float, interval: float = 0.5):
        super().__init__(daemon=True, name="sampler")
        self.out_dir, self.duration_s, self.interval = out_dir, duration_s, interval
        self.stop = threading.Event()
        self.peak_pss_kb = self.peak_rss_kb = 0
        self.peak_processes = 0
        self.peak_agents_pss_kb = self.peak_agents = 0
        self.window: dict[str, Any] = {}  # cpu0/cpu1: {pid: CPU s}, busy0/busy1, t0/t1 at the workload's edges
        self.window_thread = threading.Thread(target=self.cpu_window, daemon=True, name="cpu-window")

    def start(self) -> None:
        super().start()
        self.window_thread.start()

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        self.window_thread.join(timeout)

    def cpu_window(self) -> None:
        try:  # above the agents' real-time computes (5) and releases (10); two short wake-ups only
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(15))
        except OSError:
            pass
        go = self.out_dir / "go.json"
        while not go.exists():
            if self.stop.wait(0.05):
                return
        t_start = float(json.loads(go.read_text())["t_start"])  # written whole (renamed into place)
        me = os.getpid()
        for edge, suffix in ((t_start, "0"), (t_start + self.duration_s, "1")):
            if self.stop.wait(max(0.0, edge - time.monotonic())):
                return
            cpu = {pid: cpu_seconds(pid) for pid in descendants(me)}
            self.window.update({f"cpu{suffix}": cpu, f"busy{suffix}": machine_busy_s(), f"t{suffix}": time.monotonic()})

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.is_set():
            pids = descendants(me)
            pss = rss = agents_pss = agents = 0
            for pid in pids:
                mem = memory_kb(pid)
                pss += mem.get("Pss", 0)
                rss += mem.get("Rss", 0)
                if is_agent(pid):
                    agents_pss += mem.get("Pss", 0)
                    agents += 1
            if pss > self.peak_pss_kb:
                self.peak_pss_kb, self.peak_processes = pss, len(pids)
            if agents_pss > self.peak_agents_pss_kb:
                self.peak_agents_pss_kb, self.peak_agents = agents_pss, agents
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.stop.wait(self.interval)

    def cpu_cores(self) -> tuple[float | None, float | None]:
        w = self.window
        if "cpu1" not in w:  # the workload's end was not seen: no figure
            return None, None
        span = w["t1"] - w["t0"]
        used = sum((c or 0.0) - (w["cpu0"].get(pid) or 0.0) for pid, c in w["cpu1"].items())
        return used / span, (w["busy1"] - w["busy0"]) / span


def run_fleet(n: int, launch: str, phase: str, args, out_root: Path) -> dict:
    from testbed.runtime import SessionConfig, run_session

    out = out_root / f"n{n}-{launch}-{phase}"
    profiles = {f"device{i}": PROFILES[(i - 1) % len(PROFILES)] for i in range(1, n + 1)}
    cfg = SessionConfig(topology=str(REPO / "topologies" / "fleet.yaml"), params={"n_devices": n},
                        model=args.model, data_options={"size": args.size, "channels": 1}, strategy=args.strategy,
                        fps=args.fps, duration_s=args.duration, deadline_s=args.deadline, out_dir=str(out),
                        model_cache_dir=args.cache, device_profile=profiles, seed=args.seed,
                        agent_launch=launch, phase=phase)
    (out / "go.json").unlink(missing_ok=True)  # a previous run's: the sampler would time a window long gone
    sampler = Sampler(out, args.duration)
    sampler.start()
    wall0 = time.monotonic()
    try:
        result = run_session(cfg)
    finally:
        sampler.stop.set()
        sampler.join()
    records = [json.loads(line) for line in open(result.records_path)]
    paced = [r for r in records if r.get("pace_late_ms") is not None]
    errors = np.array([r["pace_late_ms"] for r in paced]) if paced else np.array([np.nan])
    own_cores, machine_cores = sampler.cpu_cores()
    late_by_profile = {}
    for name in PROFILES:
        mine = [r for r in paced if profiles.get(r["device"]) == name]
        if mine:
            late_by_profile[name] = sum(bool(r.get("pace_late")) for r in mine) / len(mine)
    return {"devices": n, "launch": launch, "phase": phase, "requests": len(records), "paced": len(paced),
            "unpaced": len(records) - len(paced),
            "timeouts": sum(r["outcome"] == "timeout" for r in records),
            "p50_error_ms": float(np.percentile(errors, 50)), "p99_error_ms": float(np.percentile(errors, 99)),
            "max_error_ms": float(np.max(errors)),
            "late_fraction": sum(bool(r.get("pace_late")) for r in paced) / len(paced) if paced else None,
            "run_cpu_cores": own_cores, "machine_busy_cores": machine_cores,
            "peak_pss_mb": sampler.peak_pss_kb / 1024, "peak_rss_sum_mb": sampler.peak_rss_kb / 1024,
            "agent_pss_mb": sampler.peak_agents_pss_kb / 1024 / max(1, sampler.peak_agents),
            "agents_seen": sampler.peak_agents, "processes_at_peak": sampler.peak_processes,
            "late_by_profile": late_by_profile, "session_wall_s": time.monotonic() - wall0, "out_dir": str(out)}


def fmt(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def print_table(rows: list[dict]) -> None:
    columns = [("devices", "devices", "d"), ("launch", "launch", "s"), ("phase", "phase", "s"), ("requests", "requests", "d"),
               ("p50 err ms", "p50_error_ms", ".3f"), ("p99 err ms", "p99_error_ms", ".3f"),
               ("max err ms", "max_error_ms", ".1f"), ("late %", "late_fraction", ".2%"),
               ("unpaced", "unpaced", "d"), ("run CPU cores", "run_cpu_cores", ".2f"),
               ("machine busy cores", "machine_busy_cores", ".2f"), ("peak PSS MB", "peak_pss_mb", ".0f"),
               ("PSS/agent MB", "agent_pss_mb", ".0f"), ("peak RSS sum MB", "peak_rss_sum_mb", ".0f")]
    print("  ".join(f"{title:>{max(len(title), 8)}s}" for title, _, _ in columns))
    for row in rows:
        cells = []
        for title, key, spec in columns:
            value = row[key]
            text = str(value) if spec == "s" else fmt(value, spec)
            cells.append(f"{text:>{max(len(title), 8)}s}")
        print("  ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleets", default="1,8,32,64", help="fleet sizes, comma-separated")
    parser.add_argument("--launch", default="auto", help="agent launch modes to compare: auto, fork, process")
    parser.add_argument("--phase", default="staggered,aligned",
                        help="arrival phases to compare: staggered (device i of N at (i/N + k)/fps, as "
                             "independent cameras) and aligned (every device at k/fps: all fire at once)")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--deadline", type=float, default=1.0)
    parser.add_argument("--strategy", default="device-only")
    parser.add_argument("--model", default="resnet-ee-w2.0-d3")
    parser.add_argument("--size", type=int, default=32, help="digits upsampled to SIZE x SIZE (1 channel)")
    parser.add_argument("--cache", default=str(REPO / "results" / "benchmarks" / "models" / "cache"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "device_emulation"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in [int(x) for x in args.fleets.split(",")]:
        for launch, phase in [(la, ph) for la in args.launch.split(",") for ph in args.phase.split(",")]:
            print(f"fleet of {n} ({launch}, {phase}) ...", flush=True)
            rows.append(run_fleet(n, launch, phase, args, out_root))
            print_table(rows[-1:])
            (out_root / "results.json").write_text(json.dumps(rows, indent=2))  # kept if a later fleet fails
    print(f"\n{args.strategy}, {args.model} ({args.size}x{args.size} digits), {args.fps:g} requests/s per device, "
          f"{args.duration:g} s, profiles cycled {', '.join(PROFILES)}; host: {os.cpu_count()} CPUs")
    print_table(rows)
    for row in rows:
        print(f"{row['devices']:>3d} devices ({row['launch']}, {row['phase']}): late by profile "
              + ", ".join(f"{name} {fraction:.1%}" for name, fraction in row["late_by_profile"].items()))
    (out_root / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

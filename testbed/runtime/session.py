"""Session runner: one emulation, one cloud server, N device agents, merged records.

    from testbed.runtime import SessionConfig, run_session
    result = run_session(SessionConfig(topology="topologies/device-cloud.yaml", strategy="spinn",
                                       traces={"access": "traces/att-lte-driving.csv"}, out_dir="results/x"))
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import ConfigError, TestbedError
from testbed.runtime.launcher import launcher_for

log = logging.getLogger("testbed.runtime.session")
CLOUD_PORT = 5555
READY_TIMEOUT_S = 120.0
START_LEAD_S = 1.0  # agreed start (trace time 0) this long after every process is ready
CPU_MODE = "cpu"


PHASES = ("aligned", "staggered")


def phase_offset_s(phase: str, index: int, n_devices: int, fps: float) -> float:
    """Seconds after t0 of device ``index``'s first open-loop request (see ``SessionConfig.phase``)."""
    return index / (n_devices * fps) if phase == "staggered" else 0.0


@dataclass
class SessionConfig:
    topology: str = "topologies/device-cloud.yaml"
    params: dict = field(default_factory=dict)
    traces: dict = field(default_factory=dict)  # link -> trace path or Trace
    faults: list = field(default_factory=list)
    model: str = "resnet20-ee"
    data: str = "digits"
    # The dataset's directory (cifar10, cifar100, imagefolder, idx; optional for fashion-mnist and your
    # own loader): the models train on it (part of their cache key) and the device agents send its images.
    data_root: str | None = None
    strategy: str = "device-only"
    strategy_params: dict = field(default_factory=dict)
    fps: float = 5.0
    duration_s: float = 15.0
    deadline_s: float = 0.5
    sla: dict = field(default_factory=dict)
    seed: int = 0
    out_dir: str = "results/session"
    devices: list[str] | None = None  # None: every device-role host
    # Optional extras (defaults keep the documented API unchanged):
    workload: str = "open"  # or "closed"
    # Open loop: when each device's periodic requests fall. "aligned": every device at t0 + k/fps (all
    # fire together: the worst case for a host that computes every device's tensors); "staggered":
    # device i of N at t0 + (i/N + k)/fps, as independent cameras would be, the same in every strategy.
    phase: str = "aligned"
    energy: dict = field(default_factory=dict)  # {"radio": "lte"|"wifi"|"3g", "compute_power_w": 2.0}
    model_cache_dir: str | None = None  # None: testbed.models default cache
    # Dataset options for every model of the session (``DataConfig`` fields: size, channels, ...);
    # empty = the models' defaults (digits at 16x16, 1 channel). See docs in testbed/runtime/README.
    data_options: dict = field(default_factory=dict)
    # Hardware the device hosts compute like (testbed.devices profiles; paced execution, see
    # testbed/runtime/README.md): None = each host's ``device: {profile: ...}`` in the topology
    # (hosts without one use their CPU share); a name = every device; "cpu" = CPU-share mode for
    # every device; a mapping {device host: name or "cpu"} per device.
    device_profile: str | dict | None = None
    # The cloud host's server profile (None: the topology's ``device: {profile: ...}`` of the cloud host).
    server_profile: str | None = None
    # Accelerators of the server profile (None: the profile's default): requests queue for them.
    server_workers: int | None = None
    # How device agents start: "process" = a python each; "fork" = forked from one process that
    # imported torch once (shared memory, ~0.1 s start; testbed.runtime.launcher); "auto" = fork
    # from launcher.FORK_FROM_DEVICES devices.
    agent_launch: str = "auto"
    # CPU-share mode. CFS period (ms) for the device hosts' CPU quota: the share is enforced at this
    # granularity, so a 0.25-core device runs an inference ~4x slower instead of at full speed then
    # idle 75 ms. The kernel's smallest quota is 1 ms, so the period is lengthened to 1 ms / share
    # where needed (0.2 core: 5 ms). None keeps the topology's 100 ms period.
    device_cpu_period_ms: float | None = 2.0
    # Cluster mode (testbed.emulation.cluster, docs/cluster.md): a cluster.yaml placing the hosts across
    # servers; None = this machine only.
    cluster: str | None = None
    # CPU-share mode. Per-device CPU shares (cores) overriding the topology's, e.g. {"device1": 0.5,
    # "device2": 0.2} for a fleet of unequal devices from one ``count:`` host entry.
    device_cpu: dict = field(default_factory=dict)
    # Extra seconds a device agent waits before it reports ready, emulating a slow loader (a real
    # board reading models from an SD card). The trace clock waits for it like for any start-up.
    device_load_delay_s: float | dict = 0.0
    # How long the device agents and the server may take to start (import torch, load the models) before
    # the session gives up. An emulated CPU needs more: torch's import alone takes ~50 s in a TCG VM.
    ready_timeout_s: float = READY_TIMEOUT_S


@dataclass
class SessionResult:
    out_dir: str
    records_path: str
    n_requests: int
    cloud_compute_s: float
    wall_s: float
    summary: dict = field(default_factory=dict)  # also in <out_dir>/summary.json: per device, fairness, cloud


def _checkpoints(names: list[str], data: str, cache_dir: str | None, epochs_for: dict[str, int],
                 data_options: dict | None = None, data_root: str | None = None) -> dict[str, str]:
    from testbed.models import checkpoint_dir, load_or_train
    from testbed.models.train import DataConfig, TrainConfig

    out = {}
    for name in names:
        train = TrainConfig(epochs=epochs_for[name]) if name in epochs_for else TrainConfig()
        config = DataConfig(**{"name": data, **(data_options or {}), **({"root": data_root} if data_root else {})})
        load_or_train(name, config, cache_dir=cache_dir, train=train)
        out[name] = str(checkpoint_dir(name, config, train, None, cache_dir).resolve())
    return out


def _proxy_latencies(names: list[str], input_shape) -> dict[str, float]:
    """Full-model latency of each variant on this (proxy) host, unlimited CPU, batch 1."""
    from testbed.models.family import measure_family

    rows = measure_family(names, input_shape=tuple(input_shape), cpu_shares=(None,), repeats=10)
    return {r["name"]: r["latency_ms"]["unlimited"] for r in rows}


def resolve_profiles(cfg: SessionConfig, topology, devices: list[str], cloud: str) -> tuple[dict, str | None]:
    """({device host: profile name or None for CPU-share mode}, the cloud's server profile or None)."""
    from testbed.emulation.topology import check_profile

    spec = cfg.device_profile
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(devices))
        if unknown:
            raise ConfigError("device_profile", f"unknown device hosts {unknown}; device hosts: {', '.join(devices)}")
    elif spec is not None and not isinstance(spec, str):
        raise ConfigError("device_profile", f"must be a profile name, {CPU_MODE!r} or a mapping "
                          f"{{device host: profile}}, got {spec!r}")
    chosen = {}
    for name in devices:
        choice = spec.get(name, topology.hosts[name].profile) if isinstance(spec, dict) else \
            (topology.hosts[name].profile if spec is None else spec)
        where = f"device_profile.{name}" if isinstance(spec, dict) else "device_profile"
        chosen[name] = None if choice in (None, CPU_MODE) else check_profile(choice, where)
    server = cfg.server_profile or topology.hosts[cloud].profile
    if server is not None:
        server = check_profile(server, "server_profile")
    return chosen, server


def _replay_lag_ms(replay_csv: Path) -> float | None:
    """Applied minus scheduled time of the first trace change after t = 0 (the clock's start error)."""
    if not replay_csv.exists():
        return None
    for line in replay_csv.read_text().splitlines()[1:]:
        scheduled, applied = (float(x) for x in line.split(",")[:2])
        if scheduled > 0:
            return (applied - scheduled) * 1e3
    return None


def pacing_summary(records: list[dict]) -> dict | None:
    """Paced requests: fraction released > 1 ms after the profiled finish, release error p50/p99."""
    import numpy as np

    errors = [r["pace_late_ms"] for r in records if r.get("pace_late_ms") is not None]
    if not errors:
        return None
    late = sum(bool(r.get("pace_late")) for r in records if r.get("pace_late_ms") is not None)
    return {"paced_requests": len(errors), "late_requests": late, "late_fraction": late / len(errors),
            "p50_error_ms": float(np.percentile(errors, 50)), "p99_error_ms": float(np.percentile(errors, 99)),
            "max_error_ms": float(max(errors))}


def _set_cpu(tasks_path: str, cores: float, period_ms: float | None) -> None:
    """Rewrite a host's cgroup CPU quota: ``cores`` per ``period_ms`` (cgroup v1 or v2)."""
    folder = Path(tasks_path).parent
    period_us = int((period_ms or 100.0) * 1000)
    period_us = min(1_000_000, max(period_us, int(1000 / cores)))  # quota >= 1 ms, period <= 1 s
    quota_us = max(1000, int(cores * period_us))
    if (folder / "cpu.max").exists():
        (folder / "cpu.max").write_text(f"{quota_us} {period_us}")
    else:
        (folder / "cpu.cfs_quota_us").write_text("-1")
        (folder / "cpu.cfs_period_us").write_text(str(period_us))
        (folder / "cpu.cfs_quota_us").write_text(str(quota_us))


def _read_cpu(tasks_path: str) -> str:
    folder = Path(tasks_path).parent
    if (folder / "cpu.max").exists():
        return (folder / "cpu.max").read_text().strip()
    return f"{(folder / 'cpu.cfs_quota_us').read_text().strip()} {(folder / 'cpu.cfs_period_us').read_text().strip()}"


def jain_index(values: list[float]) -> float | None:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 = equal shares, 1/n = one takes all."""
    if not values or not any(values):
        return None
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def summarise(records_by_device: dict[str, list[dict]], duration_s: float, cloud_stats: dict | None) -> dict:
    """Per-device served/throughput/deadline misses, Jain's index over throughput, server cost."""
    devices = {}
    for name, records in records_by_device.items():
        answered = [r for r in records if r["outcome"] in ("device_exit", "cloud", "fallback_exit")]
        on_time = [r for r in answered if r["latency_s"] <= r["deadline_s"]]
        correct = [r for r in on_time if r["correct"]]
        devices[name] = {"requests": len(records), "answered": len(answered), "on_time": len(on_time),
                         "throughput_rps": len(on_time) / duration_s if duration_s else 0.0,
                         "goodput_rps": len(correct) / duration_s if duration_s else 0.0,
                         "deadline_miss_rate": 1 - len(on_time) / len(records) if records else None,
                         "offloaded": sum(r["outcome"] == "cloud" for r in records),
                         "cloud_compute_s": sum(r["cloud_compute_s"] or 0.0 for r in records),
                         "energy_j": sum(r["energy_j"] or 0.0 for r in records)}
    cloud = cloud_stats or {}
    return {"devices": devices,
            "jain_throughput": jain_index([d["throughput_rps"] for d in devices.values()]),
            "jain_goodput": jain_index([d["goodput_rps"] for d in devices.values()]),
            "cloud_compute_s": cloud.get("compute_s", 0.0), "cloud_cpu_s": cloud.get("cpu_s", 0.0),
            "cloud_requests": cloud.get("requests", 0)}


def _wait_for(paths: list[Path], procs: dict[str, Any], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise TestbedError(f"{name} exited with {proc.returncode} before {what}; see its log in "
                                   f"{paths[0].parent}")
        if time.monotonic() > end:
            raise TestbedError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def _cluster_emulation(cfg: SessionConfig, topology, out: Path):
    from testbed.emulation.cluster import ClusterEmulation, load_cluster

    return ClusterEmulation(topology, load_cluster(cfg.cluster), traces=dict(cfg.traces or {}),
                            faults=list(cfg.faults or []), log_dir=out, hold_clock=True)


def _go_file(emu, host: str) -> str:
    return emu.go_file(host) if hasattr(emu, "go_file") else "go.json"  # cluster: one per server (its clock)


def run_session(cfg: SessionConfig) -> SessionResult:
    """Run one session; see the module docstring.

    The network is built with every trace's first step held; the trace and fault clock starts
    (trace time 0) at the same instant as the workload, once every process is ready, so request k
    of every strategy meets the same trace step however long the processes took to load.
    """
    from testbed.emulation import Emulation
    from testbed.emulation.emulation import resolve_path
    from testbed.emulation.topology import load_topology
    from testbed.strategies import get_strategy

    wall0 = time.monotonic()
    strategy = get_strategy(cfg.strategy, cfg.strategy_params)
    for key, value, low in (("fps", cfg.fps, 0.0), ("duration_s", cfg.duration_s, 0.0),
                            ("deadline_s", cfg.deadline_s, 0.0), ("ready_timeout_s", cfg.ready_timeout_s, 0.0)):
        if not isinstance(value, (int, float)) or value <= low:
            raise ConfigError(key, f"must be a number > {low:g}, got {value!r}")
    if cfg.workload not in ("open", "closed"):
        raise ConfigError("workload", f"must be 'open' or 'closed', got {cfg.workload!r}")
    if cfg.phase not in PHASES:
        raise ConfigError("phase", f"must be one of {', '.join(PHASES)}, got {cfg.phase!r}")
    topology = load_topology(resolve_path(cfg.topology), params=cfg.params)
    cloud_names = topology.hosts_with_role("cloud")
    if not cloud_names:
        raise ConfigError("topology", f"{cfg.topology} has no host with role 'cloud'")
    cloud_name = cloud_names[0]
    devices = cfg.devices or topology.hosts_with_role("device")
    unknown = [d for d in devices if d not in topology.hosts]
    if unknown:
        raise ConfigError("devices", f"unknown hosts {unknown}; device hosts: "
                          f"{', '.join(topology.hosts_with_role('device'))}")
    profiles, server_profile = resolve_profiles(cfg, topology, devices, cloud_name)
    paced_with_cpu = sorted(name for name in cfg.device_cpu if profiles.get(name))
    if paced_with_cpu:
        raise ConfigError("device_cpu", f"CPU shares apply in CPU-share mode, but {', '.join(paced_with_cpu)} "
                          f"compute like a profile ({', '.join(profiles[n] for n in paced_with_cpu)}); set "
                          "device_profile to 'cpu' (or {device: 'cpu'}) to use shares")
    out = Path(cfg.out_dir).resolve()
    # Built only on entry; constructing it checks the kernel's capabilities (netem, OVS), the traces and
    # the faults first, before any model is loaded or trained.
    emulation = Emulation(topology, traces=dict(cfg.traces or {}), faults=list(cfg.faults or []), log_dir=out,
                          hold_clock=True) if not cfg.cluster else _cluster_emulation(cfg, topology, out)
    wanted = strategy.models(cfg.model)
    epochs = {v: strategy.p["variant_epochs"] for v in wanted["device"]} if "variant_epochs" in strategy.p else {}
    data_root = str(Path(cfg.data_root).resolve()) if cfg.data_root else None  # one cache key, any cwd
    device_models = _checkpoints(wanted["device"], cfg.data, cfg.model_cache_dir, epochs, cfg.data_options,
                                 data_root)
    cloud_models = _checkpoints(wanted["cloud"], cfg.data, cfg.model_cache_dir, epochs, cfg.data_options,
                                data_root)
    proxy_ms = {}
    if cfg.strategy == "device-aware" and not all(profiles.values()):
        from testbed.models import read_card

        shape = read_card(next(iter(device_models.values())))["dataset"]["input_shape"]
        proxy_ms = _proxy_latencies(list(device_models), shape)

    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("*.ready")) + list(out.glob("go.json")) + list(out.glob("records*.jsonl")):
        stale.unlink()
    python = sys.executable
    procs: dict[str, Any] = {}
    logs = []
    launcher = None  # the agents' fork-server, for fleets (testbed.runtime.launcher)
    trace_window: dict[str, Any] = {}
    with emulation as emu:
        built = time.monotonic()
        cloud = emu.host(cloud_name)
        cpu_limits = {}
        # CPU-share mode only: a device with a profile is paced instead and runs unlimited.
        cpu_of = {name: (float(cfg.device_cpu.get(name, emu.topology.hosts[name].cpu or 0) or 0) or None)
                  if profiles[name] is None else None for name in devices}
        for name in devices:
            tasks = getattr(emu.host(name), "cgroup_tasks", None)
            if tasks and cpu_of[name] and (cfg.device_cpu_period_ms or name in cfg.device_cpu):
                _set_cpu(tasks, cpu_of[name], cfg.device_cpu_period_ms)
                cpu_limits[name] = _read_cpu(tasks)
            elif name in cfg.device_cpu and not tasks and profiles[name] is None:
                raise ConfigError("device_cpu", f"host {name} has no CPU cgroup to change (give it a cpu share "
                                  "in the topology)")
        try:
            cloud_cfg = {"endpoint": f"tcp://*:{CLOUD_PORT}", "models": cloud_models,
                         "cpu_share": emu.topology.hosts[cloud_name].cpu, "profile": server_profile,
                         "workers": cfg.server_workers or emu.topology.hosts[cloud_name].workers,
                         "seed": cfg.seed,
                         "stats_path": str(out / "cloud_stats.json"), "ready_path": str(out / "cloud.ready")}
            (out / "cloud.json").write_text(json.dumps(cloud_cfg, indent=2))
            log_file = open(out / "cloud.log", "w")  # noqa: SIM115
            logs.append(log_file)
            if cloud_models:
                procs["cloud"] = cloud.popen([python, "-m", "testbed.runtime.cloud", "--config", str(out / "cloud.json")],
                                             stdout=log_file, stderr=log_file)
            ready = [out / "cloud.ready"] if cloud_models else []
            load_delay = cfg.device_load_delay_s
            launcher = launcher_for(cfg.agent_launch, len(devices), out / "launcher.log", cfg.ready_timeout_s)
            for index, name in enumerate(devices):
                session = {
                    "device": name, "endpoint": f"tcp://{cloud.IP()}:{CLOUD_PORT}",
                    "models": device_models, "session_model": cfg.model, "data": cfg.data,
                    "data_root": data_root,
                    "strategy": cfg.strategy, "strategy_params": cfg.strategy_params, "fps": cfg.fps,
                    "duration_s": cfg.duration_s, "deadline_s": cfg.deadline_s, "sla": cfg.sla,
                    "seed": cfg.seed + index, "workload": cfg.workload, "energy": cfg.energy,
                    "phase_s": phase_offset_s(cfg.phase, index, len(devices), cfg.fps),
                    "cpu": cpu_of[name], "proxy_ms": proxy_ms, "device_profile": profiles[name],
                    "server_profile": server_profile,
                    "load_delay_s": float(load_delay.get(name, 0.0) if isinstance(load_delay, dict) else load_delay),
                    "out_path": str(out / f"records-{name}.jsonl"), "ready_path": str(out / f"{name}.ready"),
                    "go_path": str(out / _go_file(emu, name))}
                (out / f"session-{name}.json").write_text(json.dumps(session, indent=2))
                log_file = open(out / f"device-{name}.log", "w")  # noqa: SIM115
                logs.append(log_file)
                # Start-up (imports, model loading) runs outside the host's CPU limit; in CPU-share
                # mode the agent joins the host's cgroup once ready, before the workload starts.
                host = emu.host(name)
                if launcher is not None and not getattr(host, "isRemote", False):  # remote: host.popen over ssh
                    procs[name] = launcher.spawn("testbed.runtime.device", ["--config", out / f"session-{name}.json"],
                                                 netns_pid=host.pid, log_path=out / f"device-{name}.log", name=name)
                    ready.append(out / f"{name}.ready")
                    continue
                launch = super(type(host), host).popen if getattr(host, "cgroup_tasks", None) else host.popen
                procs[name] = launch(
                    [python, "-m", "testbed.runtime.device", "--config", str(out / f"session-{name}.json")],
                    stdout=log_file, stderr=log_file)
                ready.append(out / f"{name}.ready")
            _wait_for(ready, procs, cfg.ready_timeout_s, "all processes to be ready (SessionConfig.ready_timeout_s)")
            for name in devices:
                tasks = getattr(emu.host(name), "cgroup_tasks", None)
                if tasks and profiles[name] is None:
                    Path(tasks).write_text(str(procs[name].pid))
            t_start = time.monotonic() + START_LEAD_S
            emu.start_clock(t_start)  # trace time 0 = the workload's start, for every strategy alike
            trace_window = {"t0_monotonic": t_start, "startup_s": t_start - built}
            # Written whole, then renamed: agents poll for the file and must never read it half-written.
            (out / "go.json.tmp").write_text(json.dumps({"t_start": t_start, "t0": t_start}))
            (out / "go.json.tmp").replace(out / "go.json")
            if cfg.cluster:  # each server's agents get the start on their own monotonic clock
                from testbed.emulation.cluster import write_go_files

                write_go_files(emu, out, t_start)
            end = t_start + cfg.duration_s + cfg.deadline_s + 30.0
            for name in devices:
                proc = procs[name]
                try:
                    proc.wait(timeout=max(1.0, end - time.monotonic()))
                except Exception:  # noqa: BLE001 - a hung agent must not hang the session
                    proc.kill()
                    raise TestbedError(f"device agent {name} did not finish; see {out}/device-{name}.log") from None
                if proc.returncode != 0:
                    raise TestbedError(f"device agent {name} exited with {proc.returncode}; "
                                       f"see {out}/device-{name}.log")
            if cfg.cluster:
                emu.measure_tunnels(duration=1.0, pings=20)
        finally:
            if "cloud" in procs and procs["cloud"].poll() is None:
                procs["cloud"].terminate()
                try:
                    procs["cloud"].wait(timeout=10)
                except Exception:  # noqa: BLE001
                    procs["cloud"].kill()
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
            if launcher is not None:
                launcher.close()
            for f in logs:
                f.close()
    records_path = out / "records.jsonl"
    n = 0
    by_device: dict[str, list[dict]] = {}
    with open(records_path, "w") as merged:
        for name in devices:
            part = out / f"records-{name}.jsonl"
            by_device[name] = []
            if part.exists():
                for line in part.read_text().splitlines():
                    if line.strip():
                        merged.write(line + "\n")
                        by_device[name].append(json.loads(line))
                        n += 1
    stats_path = out / "cloud_stats.json"
    cloud_stats = json.loads(stats_path.read_text()) if stats_path.exists() else None
    cloud_compute = cloud_stats["compute_s"] if cloud_stats else 0.0
    summary = summarise(by_device, cfg.duration_s, cloud_stats)
    summary["device_profile"] = profiles
    summary["server_profile"] = server_profile
    summary["device_cpu"] = cpu_of
    summary["device_cpu_period_ms"] = cfg.device_cpu_period_ms
    summary["device_cpu_limit"] = cpu_limits
    summary["switch"] = emu.switch  # linuxbridge or ovs (the topology's ``switch:``)
    starts, realtime = {}, {}
    for name in devices:
        loop_path = out / f"records-{name}.jsonl.loop.json"
        if loop_path.exists():
            loop = json.loads(loop_path.read_text())
            starts[name] = loop.get("workload_start_s")
            if loop.get("realtime_release") is not None:
                realtime[name] = loop["realtime_release"]
    trace_window["workload_start_offset_ms"] = {k: None if v is None else v * 1e3 for k, v in starts.items()}
    trace_window["replay_first_change_lag_ms"] = _replay_lag_ms(out / "replay.csv")
    summary["trace_window"] = trace_window
    if cfg.cluster:
        summary["cluster"] = emu.info()  # placement, clock offsets (start, end, drift), tunnels' RTT/ceiling
    pacing = pacing_summary([r for rows in by_device.values() for r in rows])
    if pacing is not None:
        # True per device: releases waited as SCHED_FIFO; otherwise why not (testbed.runtime.realtime).
        pacing["realtime_release"] = realtime
    summary["pacing"] = pacing
    if pacing and pacing["late_requests"]:
        log.warning("%s: %d of %d paced requests (%.1f %%) were released late (> 1 ms after the profiled finish; "
                    "p99 error %.1f ms): the host could not keep pace with the profile; their records say "
                    "pace_late and their latency is what really happened", out.name, pacing["late_requests"],
                    pacing["paced_requests"], 100 * pacing["late_fraction"], pacing["p99_error_ms"])
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return SessionResult(out_dir=str(out), records_path=str(records_path), n_requests=n,
                         cloud_compute_s=cloud_compute, wall_s=time.monotonic() - wall0, summary=summary)

"""SPINN: progressive inference with an online scheduler over (split, confidence threshold)."""

from __future__ import annotations

import math

from testbed.strategies.base import CODECS, Param, Plan, Strategy, offload_ms, transfer_ms

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)


class Spinn(Strategy):
    """SPINN (Laskaridis et al., MobiCom 2020): progressive inference + split, co-optimised online.

    Formulation (our reading; SPINN's full text was not available, see the literature notes):
    exits up to the split run on the device and answer when calibrated max-softmax ≥ thr;
    otherwise the split tensor is sent int8-quantised and zstd-compressed (SPINN's lossy +
    lossless communication optimiser) and the server finishes with the final exit.
    The scheduler enumerates every (split s, thr) pair and predicts from the offline
    profiles (exit rates and accuracy per thr measured on the validation split, device/server
    times per split) and the online estimates (B, RTT, server queue, device SF):

    * latency of an offloaded request ``L(s) = T_dev(s)·SF + RTT + D_s/B + Q + T_srv(s)``;
      requests answered by an exit finish earlier;
    * throughput ``1 / max(E[T_dev], P_off·D_s/B, P_off·T_srv)`` (pipelined bottleneck stage);
    * accuracy ``A(s, thr)``; server cost ``P_off · T_srv(s)``.

    SLA: ``L(s) ≤ latency_ms`` (default: deadline × 0.8) and ``A ≥ A_final − max_accuracy_drop``;
    among feasible pairs maximise ``objective`` (throughput by default; ties: accuracy, then lower
    server cost). Re-planned for every request, so the plan follows B/RTT/SF changes.
    Disconnection/timeout: the runtime answers with the best exit computed so far
    (``fallback_exit``); while the link is estimated down, offloading is infeasible and the
    scheduler keeps everything on the device (split = last block, exits active).
    """

    name = "spinn"
    params = {"latency_ms": Param(None, float, 0.1, 1e6, optional=True),
              "max_accuracy_drop": Param(0.02, float, 0.0, 1.0),
              "objective": Param("throughput", str, choices=("throughput", "latency", "accuracy", "server_cost")),
              "codec": Param("int8+zstd", str, choices=CODECS)}

    def __init__(self, params=None):
        super().__init__(params)
        self._stats: dict = {}

    def candidates(self, profile):
        key = profile.name
        if key not in self._stats:
            # Splits at or after the first exit only, so a timed-out offload always has an exit
            # to fall back to (choice made here; SPINN's fallback is "the latest exit computed").
            first = profile.position(profile.exit_after[0])
            self._stats[key] = {(s, thr): profile.progressive(s, thr) for s in profile.split_points
                                if profile.position(s) >= first for thr in THRESHOLDS}
        return self._stats[key]

    def evaluate(self, profile, split, thr, stats, est) -> dict:
        codec = self.p["codec"]
        device_ms = stats["device_ms"] * est.device_slowdown
        p_off = stats.get("p_offload", 0.0)
        if split == profile.last_split:
            worst = profile.device_ms[split] * est.device_slowdown
            bottleneck = device_ms
        else:
            network = offload_ms(profile, split, codec, est)
            worst = profile.device_ms[split] * est.device_slowdown + network
            uplink = transfer_ms(profile.bytes_at(split, codec), est.bw_up_mbps)
            server = profile.cloud_ms[split] * est.cloud_slowdown
            bottleneck = max(device_ms, p_off * uplink, p_off * server) if p_off > 0 else device_ms
            if math.isinf(network):
                worst = bottleneck = math.inf
        return {"split": split, "thr": thr, "latency_ms": worst,
                "mean_latency_ms": device_ms + (p_off * (worst - profile.device_ms[split] * est.device_slowdown)
                                                if p_off and not math.isinf(worst) else 0.0),
                "throughput": 1e3 / bottleneck if bottleneck > 0 else math.inf,
                "accuracy": stats["accuracy"], "server_ms": p_off * profile.cloud_ms[split]}

    def plan(self, estimates, profiles, context):
        profile = profiles[context.model]
        sla = {**context.sla, **{k: v for k, v in self.p.items() if v is not None}}
        bound = sla.get("latency_ms") or context.deadline_s * 1e3 * 0.8
        final = len(profile.exit_after) - 1
        best_accuracy = float(profile.correct[:, final].mean()) if profile.correct is not None else 1.0
        floor = best_accuracy - sla.get("max_accuracy_drop", 0.02)
        rows = [self.evaluate(profile, s, thr, stats, estimates)
                for (s, thr), stats in self.candidates(profile).items()]
        feasible = [r for r in rows if r["latency_ms"] <= bound and r["accuracy"] >= floor - 1e-9]
        objective = sla.get("objective", "throughput")
        if not feasible:  # relax accuracy first, keep the deadline
            feasible = [r for r in rows if r["latency_ms"] <= bound] or \
                       [r for r in rows if r["split"] == profile.last_split]
            objective = "accuracy"
        keys = {"throughput": lambda r: (r["throughput"], r["accuracy"], -r["server_ms"]),
                "latency": lambda r: (-r["mean_latency_ms"], r["accuracy"], -r["server_ms"]),
                "accuracy": lambda r: (r["accuracy"], r["throughput"], -r["server_ms"]),
                "server_cost": lambda r: (-r["server_ms"], r["accuracy"], r["throughput"])}
        best = max(feasible, key=keys[objective])
        return Plan(split=best["split"], exit_threshold=best["thr"], codec=self.p["codec"], fallback=True,
                    note=f"thr {best['thr']} acc {best['accuracy']:.3f} L {best['latency_ms']:.1f} ms")

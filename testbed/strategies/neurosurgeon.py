"""Neurosurgeon: latency-optimal split from per-block profiles, bandwidth and server load."""

from __future__ import annotations

import math

from testbed.strategies.base import CODECS, Param, Plan, Strategy, split_latency_ms


class Neurosurgeon(Strategy):
    """Neurosurgeon (Kang et al., ASPLOS 2017): per-request split minimising predicted latency.

    Formulation: for every split point s, ``T(s) = T_dev(s)·SF + RTT + D_s/B_up + Q_srv +
    T_srv(s)·load + reply/B_down`` with profiled head/tail times, the device's online speed factor
    SF, the EWMA bandwidth/RTT and the server's reported queueing and slowdown ("server load");
    ``argmin_s T(s)``. The paper's per-layer-type regression models are replaced by measured
    per-block profiles (our models are small chains); its energy objective is available as
    ``objective: energy`` (device compute power × head time + radio power × transfer time).
    Early exits are not used. Re-decided for every request from the latest estimates.
    Disconnection: with the link estimated down (timeouts, no success since) every offloading
    split costs infinity, so it runs device-only until probes see the link again.
    """

    name = "neurosurgeon"
    params = {"codec": Param("raw", str, choices=CODECS, help="feature encoding"),
              "objective": Param("latency", str, choices=("latency", "energy")),
              "compute_power_w": Param(2.0, float, 0.0, 100.0), "radio_power_w": Param(1.3, float, 0.0, 100.0)}

    def cost(self, profile, split, est) -> float:
        latency = split_latency_ms(profile, split, self.p["codec"], est)
        if self.p["objective"] == "latency" or math.isinf(latency):
            return latency
        device = profile.device_ms[split] * est.device_slowdown
        return self.p["compute_power_w"] * device + self.p["radio_power_w"] * (latency - device)

    def plan(self, estimates, profiles, context):
        profile = profiles[context.model]
        costs = {s: self.cost(profile, s, estimates) for s in profile.split_points}
        best = min(profile.split_points, key=lambda s: (costs[s], -profile.position(s)))
        return Plan(split=best, codec=self.p["codec"], note=f"predicted {costs[best]:.2f}")

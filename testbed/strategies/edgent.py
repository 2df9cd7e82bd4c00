"""Edgent: right-sizing (exit) + partition maximising accuracy under a latency requirement."""

from __future__ import annotations

import math

from testbed.strategies.base import CODECS, Param, Plan, Strategy, offload_ms


class Edgent(Strategy):
    """Edgent (Li, Zhou, Chen, MECOMM'18 / IEEE TWC'19): deepest exit whose best split meets the latency requirement.

    Formulation: for exits from deepest to shallowest, predict ``T(e, s) = T_dev(s) +
    [RTT + D_s/B + T_srv(s→e)]`` for every split s before exit e (the branch is cut at exit e:
    no blocks after it run), take ``min_s``; return the deepest (most accurate) exit with
    ``min_s T(e, s) <= L_req``. ``L_req`` is ``latency_ms`` or, if null, the session deadline ×
    ``deadline_fraction``. If no exit is feasible, the paper reports infeasibility; we run the
    shallowest exit on the device (choice made here). The TWC dynamic variant's bandwidth
    buckets are replaced by re-deciding per request from the EWMA bandwidth (equivalent for
    a piecewise-constant decision). Disconnection: offloading costs infinity, so only fully
    local (exit, split) pairs remain feasible.
    """

    name = "edgent"
    params = {"latency_ms": Param(None, float, 0.1, 1e6, optional=True, help="latency requirement"),
              "deadline_fraction": Param(0.5, float, 0.01, 1.0),
              "codec": Param("raw", str, choices=CODECS)}

    def plan(self, estimates, profiles, context):
        profile = profiles[context.model]
        requirement = self.p["latency_ms"] or context.deadline_s * 1e3 * self.p["deadline_fraction"]
        n_exits = len(profile.exit_after)
        by_accuracy = sorted(range(n_exits), key=lambda e: (-(profile.exit_accuracy[e] if profile.exit_accuracy
                                                               else e), -e))
        for exit_index in by_accuracy:
            exit_pos = profile.position(profile.exit_after[exit_index])
            best, best_ms = None, math.inf
            for split in profile.split_points[: exit_pos + 1]:
                ms = self.branch_ms(profile, split, exit_index, exit_pos, estimates)
                if ms < best_ms:
                    best, best_ms = split, ms
            if best is not None and best_ms <= requirement:
                return Plan(split=best, exit_index=exit_index, codec=self.p["codec"],
                            note=f"exit {exit_index} predicted {best_ms:.2f} ms")
        return Plan(split=profile.exit_after[0], exit_index=0, note="infeasible: shallowest exit on device")

    def branch_ms(self, profile, split, exit_index, exit_pos, est) -> float:
        device = profile.device_ms[split] * est.device_slowdown
        if profile.position(split) == exit_pos:
            head_ms = profile.exit_head_ms[exit_index] if profile.exit_head_ms else 0.0
            return device + head_ms * est.device_slowdown
        # Server runs split -> exit: approximate its time by the tail difference.
        tail_to_exit = profile.cloud_ms[split] - profile.cloud_ms[profile.exit_after[exit_index]]
        network = offload_ms(profile, split, self.p["codec"], est)
        return device + network - profile.cloud_ms[split] * est.cloud_slowdown + max(tail_to_exit, 0.0) \
            * est.cloud_slowdown

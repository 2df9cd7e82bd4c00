"""Device-only: the whole model on the device."""

from __future__ import annotations

from testbed.strategies.base import Param, Plan, Strategy


class DeviceOnly(Strategy):
    """Device-only: run the full model (final exit) locally; the reference every figure normalises to.

    Source: the baseline of Neurosurgeon (Kang et al., ASPLOS'17) and every later paper.
    Formulation: split = last block, no network. Disconnection: unaffected.
    ``use_exits`` (default false) lets the device stop at the first exit whose calibrated
    confidence reaches ``threshold`` (BranchyNet-style local early exit).
    """

    name = "device-only"
    uses_network = False
    params = {"use_exits": Param(False, bool, help="answer from early exits when confident"),
              "threshold": Param(0.9, float, 0.0, 1.0, help="confidence for early exits")}

    def models(self, session_model):
        return {"device": [session_model], "cloud": []}

    def plan(self, estimates, profiles, context):
        profile = profiles[context.model]
        return Plan(split=profile.last_split, exit_threshold=self.p["threshold"] if self.p["use_exits"] else None,
                    note="device-only")

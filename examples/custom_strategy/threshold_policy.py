"""Your own strategy: answer at the first exit when confident enough, else offload to the cloud.

Referenced from an experiment as ``name: threshold_policy:ConfidenceGate``. A strategy subclasses
``testbed.Strategy``, declares its parameters with ``testbed.Param`` (validated, errors name the
key) and returns a ``testbed.Plan`` per request from the device's network estimates and the model's
profile; the device agent executes the plan.
"""

from testbed import Param, Plan, Strategy


class ConfidenceGate(Strategy):
    """Run up to the first exit; answer there if its confidence >= threshold, else ship its features."""

    name = "confidence-gate"
    params = {
        "threshold": Param(0.9, float, 0.0, 1.0, help="calibrated confidence needed to answer early"),
        "codec": Param("float16", str, choices=("raw", "float16", "int8"), help="encoding of shipped features"),
    }

    def plan(self, estimates, profiles, context):
        profile = profiles[context.model]
        if not estimates.connected:  # no cloud reachable: run the whole model on the device
            return Plan(split=profile.last_split, note="offline: device only")
        first_exit = profile.exit_after[0]
        return Plan(split=first_exit, exit_threshold=self.p["threshold"], codec=self.p["codec"], fallback=True,
                    note=f"gate at {first_exit}")

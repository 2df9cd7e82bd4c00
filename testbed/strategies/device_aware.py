"""Device-aware model selection: per device, the model variant (and split) meeting a latency target."""

from __future__ import annotations

from testbed.strategies.base import CODECS, Param, Plan, Strategy, split_latency_ms

DEFAULT_VARIANTS = ["resnet-ee-w0.25-d1", "resnet-ee-w0.5-d1", "resnet-ee-w0.5-d2", "resnet-ee-w0.5-d3"]


class DeviceAware(Strategy):
    """Device-aware selection (Lu, Yang, Ren 2020; "One Proxy Device Is Enough", arXiv 2111.01203).

    Formulation: latency of every variant is known on a *proxy* host (measured by the runner
    before the emulation, ``ModelProfile.extra["proxy_ms"]``); by latency (rank) monotonicity a
    device's latency is the proxy latency × the device's speed factor, which the device measures
    once on a reference variant (``extra["device_ms_measured"]`` of one model). The strategy picks,
    once per device at set-up, the most accurate variant whose predicted full-model latency ≤
    ``latency_target_ms`` (default: deadline × 0.25); then, per request, the latency-optimal split
    of that variant (Neurosurgeon's formulation). If none fits, the fastest variant. The paper's
    NN-based optimiser over device features is replaced by this predictor + argmax (choice made
    here). Disconnection: splits that offload cost infinity, so the chosen variant runs locally.
    """

    name = "device-aware"
    params = {"variants": Param(DEFAULT_VARIANTS, list), "latency_target_ms": Param(None, float, 0.01, 1e6,
                                                                                    optional=True),
              "variant_epochs": Param(15, int, 1, 1000), "codec": Param("raw", str, choices=CODECS)}

    def __init__(self, params=None):
        super().__init__(params)
        self.variant: str | None = None
        self.speed_factor = 1.0
        self.predicted_ms: dict[str, float] = {}

    def models(self, session_model):
        return {"device": list(self.p["variants"]), "cloud": list(self.p["variants"])}

    def setup(self, profiles, context, estimates):
        variants = [v for v in self.p["variants"] if v in profiles]
        reference = next((v for v in variants if "device_ms_measured" in profiles[v].extra), None)
        if reference is not None and profiles[reference].extra.get("proxy_ms"):
            self.speed_factor = profiles[reference].extra["device_ms_measured"] / profiles[reference].extra["proxy_ms"]
        target = self.p["latency_target_ms"] or context.deadline_s * 1e3 * 0.25
        self.predicted_ms = {v: profiles[v].extra.get("proxy_ms", profiles[v].device_ms[profiles[v].last_split])
                             * self.speed_factor for v in variants}
        feasible = [v for v in variants if self.predicted_ms[v] <= target]
        if feasible:
            self.variant = max(feasible, key=lambda v: (profiles[v].exit_accuracy[-1], -self.predicted_ms[v]))
        else:
            self.variant = min(variants, key=lambda v: self.predicted_ms[v])

    def plan(self, estimates, profiles, context):
        if self.variant is None:
            self.setup(profiles, context, estimates)
        profile = profiles[self.variant]
        best = min(profile.split_points,
                   key=lambda s: (split_latency_ms(profile, s, self.p["codec"], estimates), -profile.position(s)))
        return Plan(split=best, model=self.variant, cloud_model=self.variant, codec=self.p["codec"],
                    note=f"variant {self.variant} predicted {self.predicted_ms.get(self.variant, 0):.2f} ms")

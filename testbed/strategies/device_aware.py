"""Device-aware selection under the network: per request, the (network, split) that meets the deadline."""

from __future__ import annotations

import logging
import math
import re

from testbed.errors import ConfigError
from testbed.strategies.base import CODECS, Param, Plan, Strategy, offload_ms, split_latency_ms

log = logging.getLogger("testbed.strategies.device_aware")

# Six of the 30 measured NAS-Bench-201 candidates of testbed.selection (rows of the latency table),
# spanning the latency range, with rankings that differ between devices (e.g. nb201-1296 is the 3rd
# fastest on a Pixel 3 but the 4th on a Raspberry Pi 4 and the 5th on a Jetson Nano). Shipped trained
# with the Fashion-MNIST recipe at 32x32 (testbed/models/shipped/build.py, group nb201; experiments set
# data: fashion-mnist and data_options: {size: 32} to use them).
DEFAULT_CANDIDATES = ["nb201-522", "nb201-1548", "nb201-1296", "nb201-1427", "nb201-892", "nb201-1304"]
LATENCY_SOURCES = ("proxy", "target", "profiled", "one-size")
LEGACY_VARIANTS = ["resnet-ee-w0.25-d1", "resnet-ee-w0.5-d1", "resnet-ee-w0.5-d2", "resnet-ee-w0.5-d3"]
CHOICE_PREFIX = "device-aware choice:"  # one log line per request: why (the record says which network)
_NB201 = re.compile(r"^nb201-(?P<index>[0-9]+)$")


class DeviceAware(Strategy):
    """Device-aware selection (Lu et al., "One Proxy Device Is Enough", SIGMETRICS'22) under a live network.

    Candidates: measured NAS-Bench-201 networks (``nb201-<arch_index>``), each held on the device and
    the server. Latency of candidate n on the target device T, whole network:

    * ``latency: proxy`` (the paper's proxy method, ``testbed.selection.proxy``'s ``proxy-predicted``):
      the proxy device's measured latency mapped to T by a monotone log-log fit on ``calibration``
      other networks measured on both (never a candidate);
    * ``target``: T's own measurement of n (the per-device oracle of the data-only experiment);
    * ``profiled``: the runtime's profile of n on this device (a paced device's cost-model times, or
      the host's in CPU-share mode): the emulation's own oracle;
    * ``one-size``: the proxy's latency unmapped, and one network for every device -- the most
      accurate candidate that fits ``budget_fraction`` x deadline on the proxy.

    T is the paced device's profile (``ModelProfile.extra["hardware"]``) or ``target``; without
    either (CPU-share mode) every source falls back to ``profiled``. Splits: the whole-network
    prediction is apportioned to split points by the profile's per-block cost shares. Per request
    (so whenever the estimated network changes): predict every (n, split) as device head +
    [RTT + upload at the estimated bandwidth + server queue + server tail + reply] (Neurosurgeon's
    formulation; the server tail from the server profile), keep the pairs within ``budget_fraction`` x
    deadline, and take the most accurate (the candidate's card test accuracy); among equally accurate
    pairs the one that needs no network (the whole network locally: no exposure to the link or the
    shared server), then the fastest; if none fits, the fastest pair. Disconnected: offloading costs
    infinity, so the choice is the best network that fits *locally*. ``offload: false`` = device-only
    selection. Predictions are used as they are: no correction from the measured device times.
    Each choice is logged (``CHOICE_PREFIX``) with its reasons; the request record's ``model`` names the network.

    Legacy (``variants`` given): the ResNet-EE variant family and one speed factor of a CPU share,
    chosen once at set-up against ``latency_target_ms`` (kept for the tests that use it).
    """

    name = "device-aware"
    params = {
        "candidates": Param(DEFAULT_CANDIDATES, list, help="registry names nb201-<arch_index>"),
        "latency": Param("proxy", str, choices=LATENCY_SOURCES, help="what the latency prediction knows"),
        "proxy": Param("pixel3", str, help="proxy device (a column of the latency data)"),
        "target": Param(None, str, optional=True, help="target device; null: the paced device's profile"),
        "calibration": Param(10, int, 2, 500, help="target measurements of the proxy->target map"),
        "offload": Param(True, bool, help="false: device-only selection (no split offloads)"),
        "budget_fraction": Param(0.9, float, 0.05, 1.0, help="plan within this fraction of the deadline"),
        "codec": Param("raw", str, choices=CODECS),
        # 4 = the Fashion-MNIST recipe's epochs: the shipped candidates' checkpoint key (other data trains them
        # on first use for this many epochs; null = that dataset's recipe).
        "variant_epochs": Param(4, int, 1, 1000, optional=True, help="training epochs of the candidates"),
        "variants": Param(None, list, optional=True, help="legacy: ResNet-EE variants + CPU speed factor"),
        "latency_target_ms": Param(None, float, 0.01, 1e6, optional=True, help="legacy: variant latency target"),
    }

    def __init__(self, params=None):
        super().__init__(params)
        from testbed.selection.latency import load_measurements

        devices = load_measurements().devices
        for key in ("proxy", "target"):
            if self.p[key] is not None and self.p[key] not in devices:
                raise ConfigError(f"strategy_params.{key}", f"unknown device {self.p[key]!r}; measured devices: "
                                  f"{', '.join(devices)}")
        if self.p["variants"] is None:
            bad = [c for c in self.p["candidates"] if not _NB201.match(c)]
            if bad or not self.p["candidates"]:
                raise ConfigError("strategy_params.candidates", f"must be nb201-<arch_index> names, got {bad or '[]'}")
        self.variant: str | None = None  # legacy: the chosen variant; new: the one-size network (else None)
        self.speed_factor = 1.0
        self.predicted_ms: dict[str, float] = {}  # whole network on the target, per candidate
        self.head_ms: dict[str, dict[str, float]] = {}  # predicted device head per (candidate, split)
        self.source = self.p["latency"]
        self.uses_network = bool(self.p["offload"])  # device-only selection: no probes (no cloud either)
        self.target: str | None = None
        self.ready = False

    def models(self, session_model):
        names = self.p["variants"] if self.p["variants"] is not None else self.p["candidates"]
        return {"device": list(names), "cloud": list(names) if self.p["offload"] else []}

    # -- set-up: the latency each candidate is believed to have on this device -----------------------
    def setup(self, profiles, context, estimates):
        if self.p["variants"] is not None:
            return self._legacy_setup(profiles, context)
        cands = [c for c in self.p["candidates"] if c in profiles]
        if not cands:
            raise ConfigError("strategy_params.candidates", f"none of {self.p['candidates']} is loaded "
                              f"(the device holds {sorted(profiles)})")
        hardware = next((profiles[c].extra.get("hardware") for c in cands if profiles[c].extra.get("hardware")), None)
        self.target = self.p["target"] or hardware
        if self.source != "profiled" and self.target is None:
            log.warning("device-aware: no target device (CPU-share mode, no 'target'): latency = the profiled times")
            self.source = "profiled"
        profiled = {c: _profiled_full_ms(profiles[c]) for c in cands}
        self.predicted_ms = predicted_full_ms(cands, self.source, self.p["proxy"], self.target,
                                              self.p["calibration"], profiled)
        budget = context.deadline_s * 1e3 * self.p["budget_fraction"]
        if self.source == "one-size":  # the proxy's own choice, deployed on every device
            fits = [c for c in cands if self.predicted_ms[c] <= budget]
            self.variant = max(fits, key=lambda c: (_accuracy(profiles[c]), -self.predicted_ms[c])) if fits \
                else min(cands, key=lambda c: self.predicted_ms[c])
        self.head_ms = {c: {s: self.predicted_ms[c] * share for s, share in _head_shares(profiles[c]).items()}
                        for c in cands}
        self.ready = True
        log.info("device-aware setup: target=%s latency=%s proxy=%s budget=%.1f ms%s; predicted / profiled "
                 "whole-network ms: %s", self.target, self.source, self.p["proxy"], budget,
                 f" one-size={self.variant}" if self.variant else "",
                 ", ".join(f"{c} {self.predicted_ms[c]:.1f}/{profiled[c]:.1f} (acc {_accuracy(profiles[c]):.3f})"
                           for c in cands))

    # -- per request --------------------------------------------------------------------------------
    def plan(self, estimates, profiles, context):
        if self.p["variants"] is not None:
            return self._legacy_plan(estimates, profiles, context)
        if not self.ready:
            self.setup(profiles, context, estimates)
        model, split, ms, feasible = self.choose(estimates, profiles, context.deadline_s * 1e3)
        log.info("%s t=%s model=%s split=%s local=%d predicted_ms=%.2f feasible=%d connected=%d bw_up=%.3f",
                 CHOICE_PREFIX, "-" if context.t_arrival is None else f"{context.t_arrival:.3f}", model, split,
                 split == profiles[model].last_split, ms, feasible, estimates.connected, estimates.bw_up_mbps)
        return Plan(split=split, model=model, cloud_model=model, codec=self.p["codec"],
                    note=f"{model}@{split} predicted {ms:.1f} ms ({self.source})"
                         + ("" if feasible else ": nothing fits, fastest"))

    def choose(self, estimates, profiles, deadline_ms: float) -> tuple[str, str, float, bool]:
        """(candidate, split, predicted ms, meets the budget) for the current network estimate."""
        budget = deadline_ms * self.p["budget_fraction"]
        options = []
        for c in [self.variant] if self.variant else self.head_ms:
            profile = profiles[c]
            splits = profile.split_points if self.p["offload"] else [profile.last_split]
            for s in splits:
                ms = self.head_ms[c][s]
                if s != profile.last_split:
                    ms += offload_ms(profile, s, self.p["codec"], estimates)
                if math.isfinite(ms):
                    options.append((c, s, ms, _accuracy(profile), s == profile.last_split))
        fits = [o for o in options if o[2] <= budget]
        if fits:  # most accurate; equally accurate: no network needed (local), then the fastest
            c, s, ms, _, _ = max(fits, key=lambda o: (o[3], o[4], -o[2]))
            return c, s, ms, True
        c, s, ms, _, _ = min(options, key=lambda o: o[2])
        return c, s, ms, False

    # -- legacy: ResNet-EE variants, one speed factor on a CPU share ---------------------------------
    def _legacy_setup(self, profiles, context):
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

    def _legacy_plan(self, estimates, profiles, context):
        if self.variant is None:
            self._legacy_setup(profiles, context)
        profile = profiles[self.variant]
        best = min(profile.split_points,
                   key=lambda s: (split_latency_ms(profile, s, self.p["codec"], estimates), -profile.position(s)))
        return Plan(split=best, model=self.variant, cloud_model=self.variant, codec=self.p["codec"],
                    note=f"variant {self.variant} predicted {self.predicted_ms.get(self.variant, 0):.2f} ms")


def _accuracy(profile) -> float:
    return float(profile.exit_accuracy[-1]) if profile.exit_accuracy else 0.0


def _profiled_full_ms(profile) -> float:
    """What the runtime charges for a local answer: blocks to the last split + the final exit head."""
    return float(profile.device_ms[profile.last_split]) + (float(profile.exit_head_ms[-1]) if profile.exit_head_ms
                                                           else 0.0)


def _head_shares(profile) -> dict[str, float]:
    """Share of the whole network's time spent up to each split (the last split = 1: the final exit too)."""
    full = _profiled_full_ms(profile)
    shares = {s: (float(profile.device_ms[s]) / full if full > 0 else 0.0) for s in profile.split_points}
    shares[profile.split_points[0]] = 0.0
    shares[profile.last_split] = 1.0
    return shares


def predicted_full_ms(candidates: list[str], source: str, proxy: str, target: str | None, calibration: int,
                      profiled: dict[str, float] | None = None) -> dict[str, float]:
    """Whole-network latency (ms) each candidate is believed to have on ``target``, by ``source``."""
    if source == "profiled":
        if profiled is None:
            raise ValueError("source 'profiled' needs the profiled times")
        return {c: float(profiled[c]) for c in candidates}
    from testbed.selection.candidates import load_accuracies
    from testbed.selection.latency import load_measurements
    from testbed.selection.proxy import calibration_rows, monotone_map

    table = load_measurements()
    rows = {c: int(_NB201.match(c)["index"]) for c in candidates}
    proxy_ms = table.column(proxy)
    if source == "one-size":
        return {c: float(proxy_ms[rows[c]]) for c in candidates}
    target_ms = table.column(target)
    if source == "target":
        return {c: float(target_ms[rows[c]]) for c in candidates}
    # proxy: a monotone map fitted on networks that are neither these nor the selection's candidates
    try:
        excluded = set(load_accuracies()["candidates"])
    except FileNotFoundError:
        excluded = set()
    calib = calibration_rows(table, proxy, target, excluded | set(rows.values()), calibration)
    mapped = monotone_map(proxy_ms[calib], target_ms[calib])
    return {c: float(mapped(proxy_ms[rows[c]])) for c in candidates}

"""Device energy per request: compute + radio (active transfer, promotion and tail).

Radio model: Huang et al., "A Close Examination of Performance and Power Characteristics of 4G LTE
Networks", MobiSys 2012, Table 3 (power = α_u·t_u + α_d·t_d + β in mW with throughputs t in Mbit/s;
promotion and tail states). The numbers below are our recollection of that table, not re-read from
the paper: verify before quoting them as the paper's. Energy of a transfer is therefore
``α_u·Mbit_up + α_d·Mbit_down + β·active_s``. Tail: after each transfer the radio stays in the
high-power tail for ``tail_s``; the tail energy since the previous transfer (cut short by this one)
and a promotion when the radio had gone idle are charged to the request that causes them.

Paced devices (a ``testbed.devices`` profile): compute energy is the profile's ``compute_w`` times
the profiled compute time of the request, and the radio defaults to the profile's radio; every
number keeps its source (``EnergyModel.sources``: a citation or "assumed").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# name -> (alpha_up mW/Mbps, alpha_down mW/Mbps, beta mW, promotion mW, promotion s, tail mW, tail s)
RADIO_PROFILES = {
    "lte": (438.39, 51.97, 1288.04, 1210.7, 0.2601, 1060.0, 11.576),
    "wifi": (283.17, 137.01, 132.86, 124.4, 0.0791, 119.3, 0.2381),
    "3g": (868.98, 122.12, 817.88, 659.4, 0.5821, 803.9, 8.0882),
}


@dataclass
class EnergyModel:
    """Per-device energy parameters; ``compute_power_w`` is the CPU's active power (configurable)."""

    radio: str = "lte"
    compute_power_w: float = 2.0
    sources: dict = field(default_factory=dict)  # parameter -> where its value comes from
    _last_transfer_end: float | None = None

    @classmethod
    def from_dict(cls, spec: dict | None, hardware: Any = None) -> EnergyModel:
        """Settings from ``spec`` (experiment ``energy:``), else the device profile's, else the defaults."""
        spec = dict(spec or {})
        profile_energy = dict(getattr(hardware, "energy", None) or {})
        compute = profile_energy.get("compute_w")
        sources = {"compute_power_w": "default 2.0 W (assumed)", "radio": "default lte"}
        power = 2.0
        if "compute_power_w" in spec:
            power, sources["compute_power_w"] = float(spec["compute_power_w"]), "experiment energy.compute_power_w"
        elif compute is not None:
            power = float(compute["value"] if isinstance(compute, dict) else compute)
            origin = compute.get("source", "assumed") if isinstance(compute, dict) else "assumed"
            sources["compute_power_w"] = f"profile {hardware.name}: {origin}"
        radio = spec.get("radio")
        if radio is not None:
            sources["radio"] = "experiment energy.radio"
        elif profile_energy.get("radio"):
            radio, sources["radio"] = profile_energy["radio"], f"profile {hardware.name}"
        model = cls(radio=radio or "lte", compute_power_w=power, sources=sources)
        if model.radio not in RADIO_PROFILES:
            from testbed.errors import ConfigError

            raise ConfigError("energy.radio", f"must be one of {', '.join(RADIO_PROFILES)}, got {model.radio!r}")
        return model

    def request_energy(self, compute_s: float, bytes_up: int = 0, bytes_down: int = 0, active_s: float = 0.0,
                       t_start: float | None = None, t_end: float | None = None) -> float:
        """Joules for one request; ``t_start``/``t_end`` bound its radio activity (None: no radio use)."""
        energy = compute_s * self.compute_power_w
        if t_start is None or t_end is None:
            return energy
        a_up, a_down, beta, p_promo, t_promo, p_tail, t_tail = RADIO_PROFILES[self.radio]
        energy += (a_up * bytes_up * 8 / 1e6 + a_down * bytes_down * 8 / 1e6 + beta * active_s) / 1e3
        if self._last_transfer_end is None or t_start - self._last_transfer_end > t_tail:
            energy += p_promo * t_promo / 1e3
            if self._last_transfer_end is not None:
                energy += p_tail * t_tail / 1e3
        else:
            energy += p_tail * max(0.0, t_start - self._last_transfer_end) / 1e3
        self._last_transfer_end = max(t_end, self._last_transfer_end or t_end)
        return energy

"""Device and server profiles fitted on measured latency of 1,999 CNNs on 18 real devices.

    from testbed.devices import get_profile, list_profiles
    pi = get_profile("raspberry_pi4")
    costs = pi.model_costs(model, (3, 32, 32))     # head_ms / tail_ms per split, exit_ms, full_ms
    gpu = get_profile("gtx1080ti", workers=4)      # a server with 4 parallel workers

Design, validation and limits: docs/devices.md. Attributes load lazily (no torch at import).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DeviceProfile": "profile", "get_profile": "profile", "list_profiles": "profile",
    "model_features": "profile", "latency_table": "data_table", "LatencyTable": "data_table",
    "op_features": "features", "FEATURES": "features",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"testbed.devices.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'testbed.devices' has no attribute {name!r}")

"""Device agent, cloud server, workload, network estimator, energy model, records, session runner.

    from testbed.runtime import SessionConfig, run_session
    result = run_session(SessionConfig(topology="topologies/device-cloud.yaml", strategy="spinn", ...))
    result.records_path   # one JSONL record per request, keys: testbed.runtime.records.RECORD_KEYS

Processes: ``python -m testbed.runtime.cloud --config cloud.json`` (inside the cloud host) and
``python -m testbed.runtime.device --config session.json`` (inside each device host).
"""

from __future__ import annotations

import importlib

_EXPORTS = {"SessionConfig": "session", "SessionResult": "session", "run_session": "session",
            "RECORD_KEYS": "records", "OUTCOMES": "records", "validate_record": "records",
            "EnergyModel": "energy", "RADIO_PROFILES": "energy", "NetworkEstimator": "estimator"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"testbed.runtime.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'testbed.runtime' has no attribute {name!r}")

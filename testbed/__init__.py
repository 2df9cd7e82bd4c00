"""Network-emulation testbed for device/cloud collaborative DNN inference.

The public API for your own models, strategies and datasets (see docs/extending.md) loads lazily,
so ``import testbed`` does not import torch::

    from testbed import Strategy, Param, Plan        # a strategy: subclass Strategy, return Plans
    from testbed import SplittableNet, exit_head      # a model: named blocks + exit heads (torch)
    from testbed import Dataset, Split                # a dataset loader may return these
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # strategies (testbed.strategies.base): what plan() receives and returns
    "Strategy": "testbed.strategies.base", "Param": "testbed.strategies.base", "Plan": "testbed.strategies.base",
    "Estimates": "testbed.strategies.base", "ModelProfile": "testbed.strategies.base",
    "Context": "testbed.strategies.base", "offload_ms": "testbed.strategies.base",
    "split_latency_ms": "testbed.strategies.base",
    # models (torch): the split/exit protocol, and its check
    "SplittableNet": "testbed.models.nets", "ExitInfo": "testbed.models.nets", "exit_head": "testbed.models.nets",
    "SequentialNet": "testbed.models.user", "check_model": "testbed.models.user",
    # datasets
    "Dataset": "testbed.data", "Split": "testbed.data",
    # errors from user objects
    "UserCodeError": "testbed.user_code", "ConfigError": "testbed.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'testbed' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

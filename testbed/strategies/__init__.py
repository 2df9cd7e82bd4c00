"""Offloading strategies behind one interface, one file each, looked up by name.

    from testbed.strategies import get_strategy, list_strategies
    strategy = get_strategy("spinn", {"max_accuracy_drop": 0.02})   # ConfigError on bad input
    plan = strategy.plan(estimates, profiles, context)

Adding a strategy = one module here defining a ``Strategy`` subclass with a unique ``name``,
plus its module name in ``STRATEGY_MODULES``.
"""

from __future__ import annotations

import importlib

from testbed.errors import ConfigError
from testbed.strategies.base import Context, Estimates, ModelProfile, Param, Plan, Strategy

STRATEGY_MODULES = ("device_only", "cloud_only", "neurosurgeon", "edgent", "spinn", "appealnet", "sc_ee_sparse",
                    "device_aware")

__all__ = ["Context", "Estimates", "ModelProfile", "Param", "Plan", "Strategy", "get_strategy",
           "list_strategies", "strategy_class"]


def _registry() -> dict[str, type[Strategy]]:
    out: dict[str, type[Strategy]] = {}
    for module_name in STRATEGY_MODULES:
        module = importlib.import_module(f"testbed.strategies.{module_name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Strategy) and value.name and value.__module__ == module.__name__:
                out[value.name] = value
    return out


def list_strategies() -> dict[str, str]:
    """Registered names -> first docstring line."""
    return {name: (cls.__doc__ or "").strip().splitlines()[0] for name, cls in sorted(_registry().items())}


def strategy_class(name: str) -> type[Strategy]:
    registry = _registry()
    if name not in registry:
        raise ConfigError("strategy", f"unknown strategy {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


def get_strategy(name: str, params: dict | None = None) -> Strategy:
    """An instance of strategy ``name`` with validated ``params``."""
    return strategy_class(name)(params)

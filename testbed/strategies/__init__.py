"""Offloading strategies behind one interface, one file each, looked up by name.

    from testbed.strategies import get_strategy, list_strategies
    strategy = get_strategy("spinn", {"max_accuracy_drop": 0.02})   # ConfigError on bad input
    plan = strategy.plan(estimates, profiles, context)

Adding a strategy = one module here defining a ``Strategy`` subclass with a unique ``name``,
plus its module name in ``STRATEGY_MODULES``. Or keep it in your own code and name it by
reference: ``get_strategy("my_pkg.policy:MyScheduler")`` / ``path/to/policy.py:MyScheduler`` (a
``Strategy`` subclass implementing ``plan``; its ``params`` are validated like the built-ins').
"""

from __future__ import annotations

import importlib

from testbed.errors import ConfigError
from testbed.strategies.base import Context, Estimates, ModelProfile, Param, Plan, Strategy
from testbed.user_code import is_user_ref

STRATEGY_MODULES = ("device_only", "cloud_only", "neurosurgeon", "edgent", "spinn", "appealnet", "sc_ee_sparse",
                    "device_aware", "oracle")

__all__ = ["Context", "Estimates", "ModelProfile", "Param", "Plan", "Strategy", "get_strategy",
           "list_strategies", "strategy_class", "user_strategy_class"]


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


def user_strategy_class(ref: str) -> type[Strategy]:
    """The ``Strategy`` subclass a ``module:Class`` reference names, checked; UserCodeError if it is not one."""
    from testbed.user_code import UserCodeError, load_object

    cls = load_object(ref)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise UserCodeError(ref, f"is a {type(cls).__name__ if not isinstance(cls, type) else cls.__name__}; "
                                 "expected a subclass of testbed.Strategy")
    if cls.plan is Strategy.plan:
        raise UserCodeError(ref, f"{cls.__name__} lacks plan(estimates, profiles, context) -> testbed.Plan")
    if not isinstance(cls.params, dict) or not all(isinstance(p, Param) for p in cls.params.values()):
        raise UserCodeError(ref, f"{cls.__name__}.params must be a dict of name -> testbed.Param, "
                                 f"got {cls.params!r}")
    if not cls.name:
        cls.name = ref.rpartition(":")[2]  # records and errors need a name; the class's own is clearest
    return cls


def strategy_class(name: str) -> type[Strategy]:
    if is_user_ref(name):
        return user_strategy_class(name)
    registry = _registry()
    if name not in registry:
        raise ConfigError("strategy", f"unknown strategy {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


def get_strategy(name: str, params: dict | None = None) -> Strategy:
    """An instance of strategy ``name`` with validated ``params``."""
    strategy = strategy_class(name)(params)
    if is_user_ref(name):
        strategy.plan = _checked_plan(name, strategy.plan)
    return strategy


def _checked_plan(ref: str, plan):
    """The user's ``plan`` with its answer checked: a wrong one fails on the first request, by name."""
    from testbed.user_code import UserCodeError

    def checked(estimates, profiles, context):
        result = plan(estimates, profiles, context)
        if not isinstance(result, Plan):
            raise UserCodeError(ref, f"plan() returned a {type(result).__name__}; expected a testbed.Plan")
        model = result.model or context.model
        profile = profiles.get(model)
        if profile is None:
            raise UserCodeError(ref, f"plan() chose model {model!r}; the device holds {sorted(profiles)}")
        if result.appeal_threshold is None and result.split not in profile.split_points:
            raise UserCodeError(ref, f"plan() chose split {result.split!r}; {model}'s split points are "
                                     f"{profile.split_points}")
        return result

    return checked

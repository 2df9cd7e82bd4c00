"""``DeviceProfile``: how long any part of any model takes on one of the 18 measured devices.

Predictions apply the device's fitted cost model (``data/fitted.json``, built by
``python -m testbed.devices.fit``) to the features of the part (``features.py``). Loading a profile
never refits. See docs/devices.md for the design, validation figures and limits.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np

from testbed.devices import catalog
from testbed.devices.data_table import latency_table
from testbed.errors import ConfigError

INPUT = "input"


@functools.cache
def fitted() -> dict:
    from testbed.devices.data_table import FITTED_JSON

    try:
        return json.loads(FITTED_JSON.read_text())
    except FileNotFoundError:
        raise ConfigError(str(FITTED_JSON), "missing; rebuild it with "
                          "`nice -n 10 .venv/bin/python -m testbed.devices.fit`") from None


@functools.cache
def _check_feature_order() -> None:
    from testbed.devices.features import FEATURES

    if list(fitted()["features"]) != list(FEATURES):
        raise ConfigError("testbed/devices/data/fitted.json: features",
                          f"fitted for {fitted()['features']}, but features.py counts {list(FEATURES)}; "
                          "rebuild with `nice -n 10 .venv/bin/python -m testbed.devices.fit --refresh-features`")


# Features per (model class, config, input shape): device-independent, so every profile shares them.
_FEATURE_CACHE: dict[tuple, dict] = {}


def _model_key(model, input_shape: tuple[int, ...], graph: str = "pruned") -> tuple | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    graph = graph if hasattr(model, "cell") else ""  # only NAS-Bench-201 cells have graph variants
    return (type(model).__module__, type(model).__qualname__, json.dumps(config, sort_keys=True, default=str),
            tuple(input_shape), graph)


def _costed_block(model, block, graph: str):
    """The module whose operations a device executes for ``block``: a NAS-Bench-201 cell is counted in the
    device's graph variant (dead nodes run or not, constant edges folded or not); anything else as is."""
    from testbed.models.nasbench201 import Cell

    if graph == "pruned" or not isinstance(block, Cell) or not hasattr(model, "cell"):
        return block
    return Cell(model.cell, block.channels, graph).eval()


def model_features(model, input_shape: tuple[int, ...], graph: str = "pruned") -> dict:
    """Per-block, per-exit and whole-model features of ``model`` at batch 1 (cached per class/config/shape).

    For a ``SplittableNet``: ``{"blocks": [...], "exits": [...], "full": vec}``. For a model without
    split points (e.g. the AppealNet edge network): ``{"full": vec}`` (``forward_with_appeal`` if it has one).
    ``graph`` applies to NAS-Bench-201 cells only (see ``testbed.models.nasbench201.GRAPHS``).
    """
    import torch

    from testbed.devices.features import features_and_output, op_features

    key = _model_key(model, input_shape, graph)
    if key is not None and key in _FEATURE_CACHE:
        return _FEATURE_CACHE[key]
    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        x = torch.zeros(1, *input_shape, device=device)
        if hasattr(model, "split_points") and hasattr(model, "exit_heads"):
            blocks, outputs = [], {INPUT: x}
            for name, block in zip(model.block_names, model.blocks):
                costed = _costed_block(model, block, graph)
                vec, out = features_and_output(costed, x)
                if costed is not block:  # the variant counts; the real block gives the next input
                    out = block(x)
                blocks.append(vec)
                outputs[name] = x = out
            exits = [features_and_output(model.exit_heads[info.index], outputs[info.after])[0]
                     for info in model.exits]
            result = {"blocks": blocks, "exits": exits, "full": sum(blocks) + exits[-1]}
        else:
            call = (lambda m, inp: m.forward_with_appeal(inp)) if hasattr(model, "forward_with_appeal") else None
            result = {"full": op_features(model, x, call=call)}
    finally:
        model.train(was_training)
    if key is not None:
        _FEATURE_CACHE[key] = result
    return result


class DeviceProfile:
    """A measured device (or server) as a cost model; see ``get_profile``."""

    def __init__(self, name: str, workers: int = 1):
        info = catalog.entry(name)
        self.name = name
        self.label: str = info["label"]
        self.source: str = info["source"]
        self.status: str = info["status"]            # confirmed / unconfirmed / simulated
        self.kind: str = info["kind"]                # device / server
        self.hardware_class: str = info["hardware_class"]
        self.workers = int(workers)
        self.energy: dict = info["energy"]
        self.spread: dict = info["spread"]
        table = fitted()
        entry = table["devices"][name]
        # Coefficient order = feature order of the fit; features.py checks it is still its own.
        self.coefficients = np.array([entry["coefficients"][f] for f in (*table["features"], "intercept_ms")])
        self.graph: str = entry.get("graph", "pruned")  # NAS-Bench-201 cell variant this device executes
        self.validation: dict = {"held_back": entry["held_back"], "train": entry["train"]}
        self._costs_cache: dict[tuple, dict] = {}

    def __repr__(self) -> str:
        return f"DeviceProfile({self.name!r}, kind={self.kind!r}, workers={self.workers})"

    @property
    def overhead_ms(self) -> float:
        """Per-inference constant of the fit (framework call, input transfer), charged once per inference."""
        return float(self.coefficients[-1])

    def features_ms(self, features: np.ndarray, overhead: bool = True) -> float:
        """Predicted ms of work with these features; ``overhead`` adds the per-inference constant."""
        _check_feature_order()
        ms = float(np.dot(self.coefficients[:-1], features))
        return ms + self.overhead_ms if overhead else ms

    def module_ms(self, module, example_input) -> float:
        """Predicted ms of ``module(example_input)`` at batch 1 on this device, as one inference."""
        from testbed.devices.features import op_features

        return self.features_ms(op_features(module, example_input))

    def model_costs(self, model, input_shape: tuple[int, ...]) -> dict:
        """Per-split device/cloud times of ``model`` on this device (cached per class/config/shape).

        ``head_ms[s]``: blocks up to split ``s`` (0 at ``input``); ``tail_ms[s]``: blocks after ``s`` plus
        the final exit head (as ``ModelProfile.cloud_ms``); ``exit_ms[e]``: exit head ``e`` alone. The
        per-inference overhead is charged once, to the part that starts the inference (the head when it
        runs any block, the tail otherwise), so ``head_ms[s] + tail_ms[s] == full_ms`` at every split.
        A model without split points gets only ``full_ms``.
        """
        input_shape = tuple(input_shape)
        key = _model_key(model, input_shape, self.graph)
        if key is not None and key in self._costs_cache:
            return self._costs_cache[key]
        feats = model_features(model, input_shape, self.graph)
        overhead = self.overhead_ms
        if "blocks" not in feats:
            costs = {"head_ms": {}, "tail_ms": {}, "exit_ms": [], "full_ms": self.features_ms(feats["full"])}
        else:
            block_ms = [self.features_ms(f, overhead=False) for f in feats["blocks"]]
            exit_ms = [self.features_ms(f, overhead=False) for f in feats["exits"]]
            cumulative = np.concatenate([[0.0], np.cumsum(block_ms)])
            total = float(cumulative[-1])
            head, tail = {}, {}
            for position, split in enumerate(model.split_points):
                done = float(cumulative[position])
                head[split] = done + overhead if position > 0 else 0.0
                tail[split] = total - done + exit_ms[-1] + (overhead if position == 0 else 0.0)
            costs = {"head_ms": head, "tail_ms": tail, "exit_ms": exit_ms,
                     "full_ms": total + exit_ms[-1] + overhead, "overhead_ms": overhead}
        if key is not None:
            self._costs_cache[key] = costs
        return costs

    def nb201_ms(self, arch_or_index: str | int) -> float:
        """Measured ms of a NAS-Bench-201 network from the data (exact), else the cost model's prediction.

        ``arch_or_index``: an ``arch`` string, a row ``arch_index`` of the data, or ``"nb201-<index>"``.
        Predictions (an arch outside the data, or a network this device lacks a value for) assume the
        fit's 32x32x3 input.
        """
        table = latency_table()
        if isinstance(arch_or_index, str) and arch_or_index.startswith("nb201-"):
            arch_or_index = arch_or_index[len("nb201-"):]
            if not arch_or_index.isdigit():
                raise ConfigError("device.nb201", f"'nb201-{arch_or_index}': expected nb201-<arch_index>")
            arch_or_index = int(arch_or_index)
        if isinstance(arch_or_index, (int, np.integer)):
            if not 0 <= arch_or_index < len(table.archs):
                raise ConfigError("device.nb201", f"arch_index {arch_or_index} outside 0..{len(table.archs) - 1}")
            row, arch = int(arch_or_index), table.archs[int(arch_or_index)]
        else:
            arch, row = arch_or_index, table.row_of(arch_or_index)
        if row is not None:
            value = table.column(self.name)[row]
            if not math.isnan(value):
                return float(value)
        from testbed.devices.fit import FIT_INPUT_SHAPE, network_features

        return self.features_ms(network_features(arch, FIT_INPUT_SHAPE, self.graph))

    def sample_ms(self, nominal_ms: float, rng: np.random.Generator) -> float:
        """One run's time: lognormal around ``nominal_ms`` (mean = nominal) with the profile's CV."""
        cv = float(self.spread["cv"])
        if cv <= 0 or nominal_ms <= 0:
            return float(nominal_ms)
        sigma = math.sqrt(math.log1p(cv * cv))
        return float(nominal_ms * rng.lognormal(-sigma * sigma / 2, sigma))


def list_profiles() -> dict[str, str]:
    """Profile name -> one-line label (with [unconfirmed]/[simulated] flags; servers say '(server)')."""
    return {name: catalog.entry(name)["label"] for name in catalog.device_names()}


def get_profile(name: str, workers: int | None = None) -> DeviceProfile:
    """The named profile; ``workers`` (servers only) is the number of parallel workers."""
    names = catalog.device_names()
    if name not in names:
        raise ConfigError("device.profile", f"unknown profile {name!r}; known: {', '.join(names)}")
    kind = catalog.entry(name)["kind"]
    if workers is None:
        workers = 1
    elif kind != "server":
        if workers != 1:
            raise ConfigError("device.workers", f"{name} is a device (one accelerator, workers=1); only the "
                              f"servers {', '.join(catalog.SERVERS)} take workers")
    elif not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError("device.workers", f"must be an integer >= 1, got {workers!r}")
    return DeviceProfile(name, workers)

"""Your own model: ``model: my_pkg.nets:build`` (or ``path/to/nets.py:build``) in an experiment.

The callable is called with the keyword arguments it accepts among ``num_classes``, ``in_channels``
and ``input_size`` (taken from the dataset), plus any ``model_kwargs`` given explicitly, and must
return either

* a :class:`~testbed.models.nets.SplittableNet` (subclass it: name your blocks, say after which
  blocks exit heads sit; the last exit sits after the last block and is the final classifier), or
  any ``nn.Module`` with the same protocol (:data:`PROTOCOL`), or
* a plain ``nn.Sequential`` whose last child outputs the logits: the testbed splits it between
  its children (split points named after them) and gives it a single exit, the final output.

:func:`check_model` runs the protocol on a sample input and raises one-line
:class:`~testbed.user_code.UserCodeError` naming the reference and the missing piece.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from testbed.models.nets import INPUT, SplittableNet
from testbed.user_code import UserCodeError, load_callable

# attribute -> what is expected (the protocol SplittableNet implements; profiling, training, model
# cards and the runtime use exactly these).
PROTOCOL = {
    "block_names": "list of unique block names in execution order",
    "blocks": "sequence of nn.Module, one per block name",
    "exit_heads": "sequence of nn.Module, one per exit",
    "exits": "list of exit records with .index (int) and .after (a block name), last after the last block",
    "split_points": "list of names: 'input' then every block name",
    "num_exits": "int, number of exits",
    "config": "dict of the model's configuration (JSON-able, recorded in the model card)",
    "split_index": "method split_index(split) -> int position (0 for 'input')",
    "head": "method head(x, upto) -> (features tensor, [(exit index, logits), ...])",
    "tail": "method tail(features, start) -> logits tensor",
    "forward_all_exits": "method forward_all_exits(x) -> [logits of every exit]",
}
DATA_KWARGS = ("num_classes", "in_channels", "input_size")  # filled from the dataset when accepted


class SequentialNet(SplittableNet):
    """A plain ``nn.Sequential`` as a split-able model: split between children, one (final) exit."""

    def __init__(self, sequential: nn.Sequential, config: dict | None = None):
        # Children of nn.Sequential(a, b) are named "0", "1": split points become "layer0", "layer1".
        names = [f"layer{name}" if name.isdigit() else name for name, _ in sequential.named_children()]
        super().__init__(names, list(sequential.children()), [names[-1]], [nn.Identity()], config or {})


def _accepted(fn, kwargs: dict) -> dict:
    """The dataset-derived keyword arguments ``fn`` declares (all of them if it takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k not in DATA_KWARGS or k in parameters}


def build_user_model(ref: str, **kwargs):
    """Call the user's builder, wrap a plain ``nn.Sequential``, check the protocol on a sample input."""
    builder = load_callable(ref, "a function or class returning a torch nn.Module")
    try:
        model = builder(**_accepted(builder, kwargs))
    except TypeError as exc:
        raise UserCodeError(ref, f"calling it with {sorted(_accepted(builder, kwargs))} failed: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise UserCodeError(ref, f"returned a {type(model).__name__}; expected a torch nn.Module "
                                 "(a SplittableNet or an nn.Sequential)")
    if not _has_protocol(model):
        if type(model) is not nn.Sequential:
            missing = [name for name in PROTOCOL if not hasattr(model, name)]
            raise UserCodeError(ref, f"{type(model).__name__} lacks {missing[0]} ({PROTOCOL[missing[0]]}); "
                                     "subclass testbed.SplittableNet or return an nn.Sequential")
        if len(model) < 1:
            raise UserCodeError(ref, "returned an empty nn.Sequential; expected at least one layer")
        model = SequentialNet(model)
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise UserCodeError(ref, f"config must be a dict (recorded in the model card), got {type(config).__name__}")
    model.config = {**kwargs, **config}
    if {"in_channels", "input_size"} <= set(kwargs):
        shape = (kwargs["in_channels"], kwargs["input_size"], kwargs["input_size"])
        check_model(model, ref, shape, kwargs.get("num_classes"))
    return model


def _has_protocol(model) -> bool:
    return all(hasattr(model, name) for name in PROTOCOL)


def check_model(model, ref: str, input_shape: tuple[int, ...], num_classes: int | None = None) -> None:
    """Run the protocol once on zeros of ``input_shape``; UserCodeError names the broken piece."""
    name = type(model).__name__
    for attribute, expected in PROTOCOL.items():
        if not hasattr(model, attribute):
            raise UserCodeError(ref, f"{name} lacks {attribute} (expected {expected})")
    points = list(model.split_points)
    if not points or points[0] != INPUT or points[1:] != list(model.block_names):
        raise UserCodeError(ref, f"{name}.split_points must be ['input', *block_names], got {points}")
    if len(model.blocks) != len(model.block_names):
        raise UserCodeError(ref, f"{name}.blocks has {len(model.blocks)} modules for "
                                 f"{len(model.block_names)} block names")
    if not model.exits or model.exits[-1].after != points[-1]:
        raise UserCodeError(ref, f"{name}.exits must end with the final classifier after {points[-1]!r}")
    if model.num_exits != len(model.exits) or len(model.exit_heads) != len(model.exits):
        raise UserCodeError(ref, f"{name}: num_exits ({model.num_exits}), exits ({len(model.exits)}) and "
                                 f"exit_heads ({len(model.exit_heads)}) must agree")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(1, *input_shape)
            for split in points:
                out = _call(ref, f"{name}.head(x, upto={split!r})", lambda s=split: model.head(x, upto=s))
                if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor)
                        and isinstance(out[1], list)):
                    raise UserCodeError(ref, f"{name}.head(x, upto={split!r}) returned {_kind(out)}; expected "
                                             "(features tensor, [(exit index, logits), ...])")
                logits = _call(ref, f"{name}.tail(features, start={split!r})",
                               lambda s=split, f=out[0]: model.tail(f, start=s))
                _check_logits(ref, f"{name}.tail(features, start={split!r})", logits, num_classes)
            outputs = _call(ref, f"{name}.forward_all_exits(x)", lambda: model.forward_all_exits(x))
            if not isinstance(outputs, (list, tuple)) or len(outputs) != model.num_exits:
                raise UserCodeError(ref, f"{name}.forward_all_exits(x) returned {_kind(outputs)}; expected a list "
                                         f"of {model.num_exits} logits tensors, one per exit")
            for index, logits in enumerate(outputs):
                _check_logits(ref, f"{name}.forward_all_exits(x)[{index}]", logits, num_classes)
    finally:
        model.train(was_training)


def _call(ref: str, what: str, fn):
    try:
        return fn()
    except UserCodeError:
        raise
    except Exception as exc:
        raise UserCodeError(ref, f"{what} raised {type(exc).__name__}: {exc}") from exc


def _kind(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def _check_logits(ref: str, what: str, logits, num_classes: int | None) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 1 or (
            num_classes is not None and logits.shape[1] != num_classes):
        classes = num_classes if num_classes is not None else "num_classes"
        raise UserCodeError(ref, f"{what} returned {_kind(logits)}; expected logits of shape (1, {classes})")

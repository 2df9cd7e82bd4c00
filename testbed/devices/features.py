"""Cost features of one forward pass, counted per tensor operation (what a device executes).

A ``TorchDispatchMode`` sees every ATen operation the module runs at batch 1 (convolutions, matrix
products, batch norm, pooling, activations, residual additions, concatenations), including
functional ones that forward hooks on modules would miss (``out + shortcut``, node sums in a cell).
Each operation adds to one of a few features; views (reshape, transpose, ...) cost nothing:

``conv_kxk_macs``   multiply-accumulates of dense/grouped convolutions with a kernel larger than 1x1
``matmul_macs``     MACs of 1x1 convolutions and linear layers (both are matrix products)
``window_elems``    output elements x window area of pooling and depthwise convolutions (per-channel
                    sliding windows: a 3x3 average pool and a 3x3 depthwise conv do the same work)
``elementwise_elems`` output elements of batch norm, activations, additions, copies, zeros
``ops``             number of such operations (a per-kernel launch/dispatch overhead)

The per-inference constant (framework call, input copy) is the cost model's intercept, not a feature.
Modules can be run on ``meta`` tensors (shapes only, no arithmetic), which makes counting 2,000
networks take seconds.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

FEATURES = ("conv_kxk_macs", "matmul_macs", "window_elems", "elementwise_elems", "ops")

aten = torch.ops.aten

# Operations that only reinterpret memory (or are bookkeeping): no cost, not counted.
_FREE = {
    "view", "_unsafe_view", "reshape", "transpose", "t", "permute", "expand", "alias", "detach", "squeeze",
    "unsqueeze", "flatten", "as_strided", "slice", "select", "split", "split_with_sizes", "unbind",
    "lift_fresh", "empty", "empty_like", "empty_strided", "_reshape_alias", "unflatten", "chunk", "narrow",
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size", "_to_copy_noop",
}
_POOL_WINDOW = {"avg_pool2d", "max_pool2d", "max_pool2d_with_indices"}
_ADAPTIVE_POOL = {"_adaptive_avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "sum", "amax"}
_MATMUL = {"mm", "addmm", "bmm", "matmul", "linear", "baddbmm"}


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.totals = dict.fromkeys(FEATURES, 0.0)
        self.unknown: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func._overloadpacket.__name__.rstrip("_")  # in-place relu_ costs what relu does
        if name in _FREE:
            return out
        result = _first_tensor(out)
        out_elems = float(result.numel()) if result is not None else 0.0
        totals = self.totals
        if name in ("convolution", "_convolution", "conv2d"):
            weight = args[1]
            groups = args[8] if len(args) > 8 else kwargs.get("groups", 1)
            in_per_group = weight.shape[1]
            window = math.prod(weight.shape[2:])
            if groups > 1 and in_per_group == 1:  # depthwise: one window per output element
                totals["window_elems"] += out_elems * window
            elif window == 1:
                totals["matmul_macs"] += out_elems * in_per_group
            else:
                totals["conv_kxk_macs"] += out_elems * in_per_group * window
        elif name in _MATMUL:
            operand = args[1] if name in ("addmm", "baddbmm") else args[0]
            totals["matmul_macs"] += out_elems * float(operand.shape[-1])
        elif name in _POOL_WINDOW:
            kernel = args[1]
            area = math.prod(kernel) if isinstance(kernel, (list, tuple)) and len(kernel) > 1 else int(kernel[0]) ** 2
            totals["window_elems"] += out_elems * area
        elif name in _ADAPTIVE_POOL:
            source = _first_tensor(args)
            totals["window_elems"] += float(source.numel()) if source is not None else out_elems
        else:
            # batch norm, activations, add/mul, cat, copies, zeros: one pass over the output
            totals["elementwise_elems"] += out_elems
            if result is None:
                self.unknown.add(name)
        totals["ops"] += 1
        return out


def op_features(module: torch.nn.Module, example_input: torch.Tensor, call=None) -> np.ndarray:
    """Feature vector (order ``FEATURES``) of one batch-1 forward pass of ``module`` on ``example_input``.

    ``call(module, x)`` replaces ``module(x)`` when the part to cost is not the plain forward (e.g. an
    AppealNet edge's ``forward_with_appeal``). The input is cut to batch 1.
    """
    x = example_input[:1] if example_input.dim() > 0 and example_input.shape[0] > 1 else example_input
    counter = _Counter()
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), counter:
            if call is None:
                module(x)
            else:
                call(module, x)
    finally:
        module.train(was_training)
    return np.array([counter.totals[name] for name in FEATURES], dtype=float)


def features_and_output(module: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Like ``op_features`` but also returns the output (to chain blocks one after another)."""
    counter = _Counter()
    with torch.no_grad(), counter:
        out = module(x)
    return np.array([counter.totals[name] for name in FEATURES], dtype=float), out

"""Example handlers to load with ``testbed serve --op NAME=MODULE:CALLABLE`` (docs/protocol.md).

``testbed serve --op stats=testbed.transport.handlers:tensor_stats`` adds an op that
answers, for every tensor received, a float64 vector ``[numel, sum, min, max]``.
A handler takes a :class:`~testbed.transport.server.Request` and returns tensors
(dict or list), or ``(tensors, info)`` with ``info`` a small JSON object.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def tensor_stats(request: Any) -> tuple[dict[str, np.ndarray], dict]:
    """Per input tensor: ``[numel, sum, min, max]`` as float64 (zeros for empty tensors)."""
    out = {}
    for name, tensor in request.tensors.items():
        values = np.asarray(tensor.float() if hasattr(tensor, "float") else tensor, dtype=np.float64)
        if values.size:
            out[name] = np.array([values.size, values.sum(), values.min(), values.max()])
        else:
            out[name] = np.zeros(4)
    return out, {"tensors": len(out)}

"""Your own dataset: ``data: my_pkg.data:load`` (or ``path/to/data.py:load``) in an experiment.

The callable is called with the keyword arguments it declares among ``size``, ``channels``,
``seed``, ``root`` and ``limit`` (all of them if it takes ``**kwargs``; those not set are left
out, so its own defaults apply) and returns a mapping (or an
object with attributes) holding:

* ``train``, ``val``, ``test``: each a pair ``(x, y)`` of numpy arrays -- ``x`` float32 images
  ``(N, C, H, W)``, already normalised as the model should see them; ``y`` int64 labels ``(N,)`` in
  ``0 .. num_classes-1``. ``val`` calibrates the exits' confidences; ``test`` is what devices send.
  All three share one ``(C, H, W)``.
* ``num_classes`` (optional, default: largest label + 1) and ``class_names`` (optional).

A :class:`testbed.data.Dataset` is accepted as it is. The arrays are checked and copied into a
``Dataset`` (checksummed in the model card like the built-in datasets).
"""

from __future__ import annotations

import inspect

import numpy as np

from testbed.user_code import UserCodeError, load_callable

OPTION_NAMES = ("size", "channels", "seed", "root", "limit")


def _get(result, key: str, default=None):
    if isinstance(result, dict):
        return result.get(key, default)
    return getattr(result, key, default)


def load_user_dataset(ref: str, **options):
    from testbed.data import Dataset, Split

    loader = load_callable(ref, "a function returning {train, val, test: (x, y) arrays, num_classes}")
    try:
        parameters = inspect.signature(loader).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    except (TypeError, ValueError):
        parameters, takes_all = {}, True
    given = {k: v for k, v in options.items()  # None: not set, the loader's own default applies
             if k in OPTION_NAMES and v is not None and (takes_all or k in parameters)}
    try:
        result = loader(**given)
    except UserCodeError:
        raise
    except Exception as exc:
        raise UserCodeError(ref, f"calling it with {sorted(given)} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(result, Dataset):
        return result
    if result is None or not all(_get(result, key) is not None for key in ("train", "val", "test")):
        raise UserCodeError(ref, f"returned {type(result).__name__}; expected a mapping with train, val and "
                                 "test, each (x float32 N,C,H,W, y int64 N)")
    splits = {}
    for key in ("train", "val", "test"):
        part = _get(result, key)
        if not (isinstance(part, (tuple, list)) and len(part) == 2):
            raise UserCodeError(ref, f"{key} is a {type(part).__name__}; expected a pair (x, y) of numpy arrays")
        x, y = np.asarray(part[0]), np.asarray(part[1])
        if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
            raise UserCodeError(ref, f"{key} x has shape {x.shape} and dtype {x.dtype}; expected float32 (N, C, H, W)")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x) or len(y) == 0:
            raise UserCodeError(ref, f"{key} y has shape {y.shape} and dtype {y.dtype}; expected {len(x)} int64 "
                                     "labels (N,)")
        splits[key] = Split(np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64))
    shapes = {key: split.x.shape[1:] for key, split in splits.items()}
    if len(set(shapes.values())) != 1:
        raise UserCodeError(ref, f"train/val/test images differ in shape: {shapes}; expected one (C, H, W)")
    largest = max(int(split.y.max()) for split in splits.values())
    num_classes = int(_get(result, "num_classes", largest + 1))
    if min(int(split.y.min()) for split in splits.values()) < 0 or largest >= num_classes:
        raise UserCodeError(ref, f"labels must lie in 0..{num_classes - 1}, got up to {largest}")
    class_names = [str(name) for name in (_get(result, "class_names") or range(num_classes))]
    if len(class_names) != num_classes:
        raise UserCodeError(ref, f"class_names has {len(class_names)} entries for {num_classes} classes")
    return Dataset(ref, splits["train"], splits["val"], splits["test"], num_classes=num_classes,
                   class_names=class_names, source=ref, options={k: v for k, v in options.items() if v is not None})

"""Your own dataset: synthetic grey images of three shapes (bar, cross, box), generated from a seed.

Referenced from an experiment as ``data: shapes_data.py:load``. The loader receives the options it
declares among size, channels, seed, root and limit, and returns train/val/test ``(x, y)`` pairs:
x float32 (N, C, H, W) already normalised, y int64 (N,) labels, plus num_classes and class_names.
"""

import numpy as np

CLASS_NAMES = ["bar", "cross", "box"]


def _shape(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    image = np.zeros((size, size), dtype=np.float32)
    length = int(rng.integers(size // 2, size - 2))  # shapes span half the image or more
    lo = int(rng.integers(1, size - length))
    hi = lo + length - 1
    at = int(rng.integers(2, size - 2))
    if kind == 0:  # a horizontal or vertical bar
        if rng.random() < 0.5:
            image[at - 1:at + 1, lo:hi + 1] = 1
        else:
            image[lo:hi + 1, at - 1:at + 1] = 1
    elif kind == 1:  # a cross
        image[at - 1:at + 1, lo:hi + 1] = 1
        middle = (lo + hi) // 2
        image[lo:hi + 1, middle - 1:middle + 1] = 1
    else:  # the outline of a box
        image[lo:hi + 1, lo] = image[lo:hi + 1, hi] = 1
        image[lo, lo:hi + 1] = image[hi, lo:hi + 1] = 1
    return image


def _split(n: int, size: int, channels: int, rng: np.random.Generator):
    y = rng.integers(0, len(CLASS_NAMES), n).astype(np.int64)
    x = np.stack([_shape(int(label), size, rng) for label in y])
    x = x + rng.normal(0, 0.25, x.shape).astype(np.float32)  # noise makes some images hard
    x = np.repeat(x[:, None], channels, axis=1)
    return ((x - 0.2) / 0.5).astype(np.float32), y


def load(size: int = 16, channels: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"train": _split(900, size, channels, rng), "val": _split(200, size, channels, rng),
            "test": _split(200, size, channels, rng), "num_classes": len(CLASS_NAMES),
            "class_names": CLASS_NAMES}

"""Datasets for training and evaluating the split-able models, all read from local disk.

Nothing here downloads: the testbed runs inside emulated hosts without internet, and results
must be reproducible, so every split is deterministic and carries a sha256 checksum that model
cards record.

Sources:

* ``fashion-mnist`` -- Fashion-MNIST (70,000 28x28 grey images of clothing, 10 classes) from
  Debian's ``dataset-fashion-mnist`` package (IDX files under ``/usr/share/datasets/fashion-mnist``,
  or ``root=`` another copy). The default data of the quickstart and the paper experiments: hard
  enough that early exits, AppealNet and sparsity trade accuracy for latency.
* ``digits`` -- scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), resized.
  Too easy to tell strategies apart (every ResNet exit but the first is >= 0.98 accurate); kept
  for the fastest unit tests.
* ``cifar10`` / ``cifar100`` -- user-provided directory in the standard python-pickle layout.
* ``imagefolder`` -- user-provided ``root/<class>/<image>.png|jpg`` tree (read with Pillow).
* ``idx`` -- user-provided MNIST / Fashion-MNIST style IDX files (``*-images-idx3-ubyte[.gz]``);
  Debian's ``dataset-fashion-mnist`` package installs them under ``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from testbed.errors import TestbedError
from testbed.user_code import is_user_ref

DATASET_NAMES = ("digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "idx")
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                         "bag", "ankle boot"]
# Side length used when ``size`` is not given: the images' own resolution (digits: the historical 16).
NATIVE_SIZE = {"digits": 16, "fashion-mnist": 28, "cifar10": 32, "cifar100": 32, "imagefolder": 32, "idx": 28}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
# Read from the user's directory (``root=``): required, nothing is bundled or downloaded.
ROOT_REQUIRED = ("cifar10", "cifar100", "imagefolder", "idx")
# ``root=`` optional: another copy than the Debian package's FASHION_MNIST_ROOT.
ROOT_OPTIONAL = ("fashion-mnist",)


class DataError(TestbedError):
    """A dataset is missing or malformed; the message names the path and what was expected."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        self.message = message
        super().__init__(f"{path}: {message}")


@dataclass
class Split:
    """One split: float32 images (N, C, H, W), normalised, and int64 labels (N,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    @property
    def sha256(self) -> str:
        """Checksum of the exact tensors a model saw (images + labels), for model cards."""
        digest = hashlib.sha256()
        digest.update(str(self.x.shape).encode())
        digest.update(np.ascontiguousarray(self.x, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.y, dtype=np.int64).tobytes())
        return digest.hexdigest()


@dataclass
class Dataset:
    """Train/val/test splits plus what a model needs to know to consume them."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: list[str]
    source: str
    options: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.train.x.shape[1:])  # type: ignore[return-value]

    def checksums(self) -> dict[str, str]:
        return {"train": self.train.sha256, "val": self.val.sha256, "test": self.test.sha256}

    def describe(self) -> dict:
        """JSON-able summary for model cards."""
        return {
            "name": self.name,
            "source": self.source,
            "options": self.options,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "sha256": self.checksums(),
        }


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    size: int | None = None,
    channels: int = 1,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    limit: int | None = None,
) -> Dataset:
    """Load ``name`` resized to ``size``x``size`` (default: ``NATIVE_SIZE[name]``) with ``channels``
    channels, split deterministically.

    Datasets with an official test set (CIFAR, IDX) keep it as ``test`` and carve ``val`` from the
    training part; the others are split train/val/test by a seeded stratified permutation.
    ``limit`` caps the number of training images (quick experiments on large sets).
    """
    if is_user_ref(name):  # the user's own loader, module:callable (see testbed.user_data)
        from testbed.user_data import load_user_dataset

        return load_user_dataset(name, root=root, size=size, channels=channels, seed=seed, limit=limit)
    if name not in DATASET_NAMES:
        raise DataError(name, f"unknown dataset; choose one of {', '.join(DATASET_NAMES)} or your own "
                              "module:callable")
    if channels not in (1, 3):
        raise DataError(name, f"channels must be 1 or 3, got {channels}")
    size = NATIVE_SIZE[name] if size is None else size
    if size < 4:
        raise DataError(name, f"size must be >= 4 pixels, got {size}")
    options = {"size": size, "channels": channels, "seed": seed, "val_fraction": val_fraction}
    test_images = test_labels = None
    if name == "digits":
        images, labels, class_names, source = _load_digits()
        options["test_fraction"] = test_fraction
    elif name in ("cifar10", "cifar100"):
        path = _require_root(name, root)
        images, labels, test_images, test_labels, class_names = _load_cifar(path, name)
        source = str(path)
    elif name == "fashion-mnist":
        path = _fashion_mnist_root(root)
        images, labels, test_images, test_labels = _load_idx(path)
        class_names = list(FASHION_MNIST_CLASSES)
        source = str(path)
    elif name == "imagefolder":
        path = _require_root(name, root)
        images, labels, class_names = _load_image_folder(path)
        source = str(path)
        options["test_fraction"] = test_fraction
    else:
        path = _require_root(name, root)
        images, labels, test_images, test_labels = _load_idx(path)
        class_names = [str(i) for i in range(int(labels.max()) + 1)]
        source = str(path)
    if limit is not None:
        options["limit"] = limit

    rng = np.random.default_rng(seed)
    if test_images is None:
        train_idx, val_idx, test_idx = _stratified_split(labels, val_fraction, test_fraction, rng)
        parts = [(images[i], labels[i]) for i in (train_idx, val_idx, test_idx)]
    else:
        train_idx, val_idx, _ = _stratified_split(labels, val_fraction, 0.0, rng)
        parts = [(images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx]),
                 (test_images, test_labels)]
    if limit is not None:
        parts[0] = (parts[0][0][:limit], parts[0][1][:limit])

    prepared = [_to_float(x, size, channels) for x, _ in parts]
    mean = prepared[0].mean(axis=(0, 2, 3), keepdims=True)
    std = prepared[0].std(axis=(0, 2, 3), keepdims=True) + 1e-6
    splits = [Split(((x - mean) / std).astype(np.float32), y.astype(np.int64))
              for x, (_, y) in zip(prepared, parts, strict=True)]
    options["normalise_mean"] = [round(float(v), 6) for v in mean.ravel()]
    options["normalise_std"] = [round(float(v), 6) for v in std.ravel()]
    return Dataset(name, *splits, num_classes=len(class_names), class_names=class_names,
                   source=source, options=options)


def check_root(name: str, root: str | Path | None) -> None:
    """Check that ``root`` holds ``name``'s layout by file names alone (nothing is read), so a config
    can be rejected before anything runs; raises :class:`DataError` naming the path and the layout."""
    if name in ("cifar10", "cifar100"):
        _cifar_files(_require_root(name, root), name)
    elif name == "imagefolder":
        _image_folder_classes(_require_root(name, root))
    elif name == "idx":
        path = _require_root(name, root)
        for prefix in IDX_PREFIXES:
            _idx_file(path, prefix)
    elif name == "fashion-mnist":
        _fashion_mnist_root(root)


# --- sources -------------------------------------------------------------------------------------


def _require_root(name: str, root: str | Path | None) -> Path:
    if root is None:
        raise DataError(name, "needs a directory: pass root=... (CLI: --data-root DIR); nothing is downloaded")
    path = Path(root)
    if not path.is_dir():
        raise DataError(path, f"{name} directory does not exist")
    return path


def _fashion_mnist_root(root: str | Path | None) -> Path:
    path = Path(root) if root is not None else FASHION_MNIST_ROOT
    names = [f"{p}-ubyte.gz" for p in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3",
                                        "t10k-labels-idx1")]
    if not all((path / n).is_file() or (path / n[:-3]).is_file() for n in names):
        raise DataError(path, "Fashion-MNIST IDX files not found (expected " + ", ".join(names) + "); "
                              "install them with `apt-get install dataset-fashion-mnist` (scripts/install.sh "
                              "does) or pass root=DIR holding the same files; nothing is downloaded")
    return path


def _load_digits() -> tuple[np.ndarray, np.ndarray, list[str], str]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0 * 255.0).astype(np.uint8)[:, :, :, None]  # N,H,W,1
    return images, bunch.target.astype(np.int64), [str(i) for i in range(10)], "sklearn.datasets.load_digits"


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(path, "missing file (expected the python-pickle CIFAR layout)")
    try:
        with path.open("rb") as handle:
            return pickle.load(handle, encoding="bytes")
    except Exception as exc:  # pickle raises many types on garbage
        raise DataError(path, f"not a CIFAR python pickle ({type(exc).__name__}: {exc})") from None


def _cifar_arrays(path: Path, batch: dict, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    if b"data" not in batch or label_key not in batch:
        keys = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in batch)
        raise DataError(path, f"expected keys b'data' and {label_key!r}, found {keys}")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(path, f"b'data' must be N x 3072 uint8 rows, got shape {data.shape}")
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if len(labels) != len(data):
        raise DataError(path, f"{len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _cifar_files(path: Path, name: str) -> tuple[list[str], str]:
    """(training files, test file) of the python-pickle layout, all present in ``path``."""
    if name == "cifar10":
        train_files, test_file = [f"data_batch_{i}" for i in range(1, 6)], "test_batch"
    else:
        train_files, test_file = ["train"], "test"
    missing = [f for f in [*train_files, test_file] if not (path / f).is_file()]
    if missing:
        raise DataError(path, f"{name} expects files {', '.join([*train_files, test_file])} "
                              f"(python version of the dataset); missing: {', '.join(missing)}")
    return train_files, test_file


def _load_cifar(path: Path, name: str):
    if name == "cifar10":
        label_key, meta_file, names_key = b"labels", "batches.meta", b"label_names"
    else:
        label_key, meta_file, names_key = b"fine_labels", "meta", b"fine_label_names"
    train_files, test_file = _cifar_files(path, name)
    train = [_cifar_arrays(path / f, _unpickle(path / f), label_key) for f in train_files]
    test_x, test_y = _cifar_arrays(path / test_file, _unpickle(path / test_file), label_key)
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    num_classes = 10 if name == "cifar10" else 100
    class_names = [str(i) for i in range(num_classes)]
    if (path / meta_file).is_file():
        meta = _unpickle(path / meta_file)
        if names_key in meta:
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    bad = [y for y in (train_y, test_y) if y.min() < 0 or y.max() >= num_classes]
    if bad:
        raise DataError(path, f"labels must lie in 0..{num_classes - 1}")
    return train_x, train_y, test_x, test_y, class_names


def _image_folder_classes(path: Path) -> list[Path]:
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    if len(class_dirs) < 2:
        raise DataError(path, "expected an ImageFolder layout: one sub-directory per class "
                              f"(at least 2) holding {'/'.join(sorted(IMAGE_SUFFIXES))} files")
    return class_dirs


def _load_image_folder(path: Path):
    from PIL import Image, UnidentifiedImageError

    class_dirs = _image_folder_classes(path)
    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(class_dir, "class directory holds no image files")
        for file in files:
            try:
                with Image.open(file) as image:
                    images.append(np.asarray(image.convert("RGB").resize((32, 32), Image.BILINEAR)))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(file, f"cannot read image ({exc})") from None
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), [p.name for p in class_dirs]


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("bad magic (expected unsigned-byte IDX)")
        shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()
    except (OSError, ValueError, struct.error) as exc:
        raise DataError(path, f"not an IDX file ({exc})") from None


IDX_PREFIXES = ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")


def _idx_file(path: Path, prefix: str) -> Path:
    for candidate in (f"{prefix}-ubyte", f"{prefix}-ubyte.gz"):
        if (path / candidate).is_file():
            return path / candidate
    raise DataError(path, f"missing {prefix}-ubyte[.gz] (MNIST/Fashion-MNIST IDX layout)")


def _load_idx(path: Path):
    train_images, train_labels, test_images, test_labels = (_idx_file(path, prefix) for prefix in IDX_PREFIXES)
    train_x = _read_idx(train_images)[:, :, :, None]
    train_y = _read_idx(train_labels).astype(np.int64)
    test_x = _read_idx(test_images)[:, :, :, None]
    test_y = _read_idx(test_labels).astype(np.int64)
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise DataError(path, "image and label counts differ")
    return train_x, train_y, test_x, test_y


# --- preprocessing -------------------------------------------------------------------------------


def _stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, rng):
    """Per-class seeded permutation so every split keeps the class balance."""
    train, val, test = [], [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        test.extend(idx[:n_test])
        val.extend(idx[n_test:n_test + n_val])
        train.extend(idx[n_test + n_val:])
    return (np.sort(np.asarray(part, dtype=np.int64)) for part in (train, val, test))


def _to_float(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 N,H,W,C -> float32 N,C,size,size in [0,1] (bilinear resize, grey<->RGB as asked)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[1] == 3 and channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.repeat(1, 3, 1, 1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.numpy().astype(np.float32)

"""Dataset loaders: deterministic splits with checksums, user datasets, clear errors."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from testbed import errors
from testbed.data import DataError, load_dataset


def test_digits_splits_are_deterministic_stratified_and_checksummed():
    first = load_dataset("digits", size=16, channels=1, seed=0)
    again = load_dataset("digits", size=16, channels=1, seed=0)
    other = load_dataset("digits", size=16, channels=1, seed=1)
    assert first.input_shape == (1, 16, 16)
    assert first.num_classes == 10
    assert len(first.train) + len(first.val) + len(first.test) == 1797
    assert first.checksums() == again.checksums()
    assert first.checksums()["test"] != other.checksums()["test"]
    assert len(set(first.checksums().values())) == 3
    assert set(np.unique(first.test.y)) == set(range(10))  # stratified: every class in every split
    assert abs(float(first.train.x.mean())) < 1e-3  # normalised with train statistics
    described = first.describe()
    assert described["sizes"]["test"] == len(first.test) and len(described["sha256"]["train"]) == 64


def test_digits_resolution_and_channels_are_configurable():
    data = load_dataset("digits", size=32, channels=3)
    assert data.train.x.shape[1:] == (3, 32, 32)
    assert data.train.x.dtype == np.float32 and data.train.y.dtype == np.int64


def _write_cifar10(root, per_batch=6, shape=(3072,)):
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, *shape), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, per_batch))}
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return root


def test_cifar10_pickle_layout(tmp_path):
    root = _write_cifar10(tmp_path / "cifar-10-batches-py")
    data = load_dataset("cifar10", root=root, size=32, channels=3)
    assert data.input_shape == (3, 32, 32)
    assert len(data.test) == 6 and len(data.train) + len(data.val) == 30
    assert data.class_names[3] == "c3"


def test_cifar100_pickle_layout(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 20), ("test", 5)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"fine_labels": list(rng.integers(0, 100, n))}
        (root / name).write_bytes(pickle.dumps(batch))
    data = load_dataset("cifar100", root=root, size=16, channels=1)
    assert data.num_classes == 100 and data.input_shape == (1, 16, 16) and len(data.test) == 5


def test_cifar_errors_name_the_path_and_expectation(tmp_path):
    root = _write_cifar10(tmp_path / "c10")
    (root / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3") as info:
        load_dataset("cifar10", root=root)
    assert str(root) in str(info.value)

    root = _write_cifar10(tmp_path / "garbage")
    (root / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch.*not a CIFAR python pickle"):
        load_dataset("cifar10", root=root)

    root = _write_cifar10(tmp_path / "shape", shape=(100,))
    with pytest.raises(DataError, match="N x 3072"):
        load_dataset("cifar10", root=root)

    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="needs a directory"):
        load_dataset("cifar10")


def _write_image_folder(root, classes=("cat", "dog"), per_class=4):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_image_folder(tmp_path):
    root = _write_image_folder(tmp_path / "images")
    data = load_dataset("imagefolder", root=root, size=16, channels=3, val_fraction=0.25, test_fraction=0.25)
    assert data.class_names == ["cat", "dog"]
    assert data.input_shape == (3, 16, 16)
    assert len(data.train) + len(data.val) + len(data.test) == 8


def test_image_folder_errors(tmp_path):
    root = _write_image_folder(tmp_path / "bad")
    (root / "dog" / "broken.png").write_bytes(b"no image here")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset("imagefolder", root=root)
    (root / "dog" / "broken.png").unlink()
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*no image files"):
        load_dataset("imagefolder", root=root)
    flat = tmp_path / "flat"
    flat.mkdir()
    with pytest.raises(DataError, match="one sub-directory per class"):
        load_dataset("imagefolder", root=flat)


def _idx(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()


def test_idx_fashion_mnist_layout(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 10)):
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))))
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(np.arange(n, dtype=np.uint8) % 10))
    data = load_dataset("idx", root=tmp_path, size=16)
    assert data.input_shape == (1, 16, 16) and len(data.test) == 10 and data.num_classes == 10
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x01\x02garbage")
    with pytest.raises(DataError, match="not an IDX file"):
        load_dataset("idx", root=tmp_path)


def test_fashion_mnist_builtin_reads_the_debian_package_or_a_given_root(tmp_path):
    from testbed.data import FASHION_MNIST_ROOT

    if (FASHION_MNIST_ROOT / "t10k-labels-idx1-ubyte.gz").is_file():  # scripts/install.sh installs it
        data = load_dataset("fashion-mnist")
        assert data.input_shape == (1, 28, 28)  # native size by default
        assert (len(data.train) + len(data.val), len(data.test)) == (60000, 10000)
        assert data.class_names[0] == "t-shirt/top" and set(np.unique(data.test.y)) == set(range(10))
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))))
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.arange(n, dtype=np.uint8) % 10)))
    copy = load_dataset("fashion-mnist", root=tmp_path, size=32)
    assert copy.input_shape == (1, 32, 32) and len(copy.test) == 10 and copy.class_names[-1] == "ankle boot"
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as info:
        load_dataset("fashion-mnist", root=tmp_path)
    assert str(tmp_path) in str(info.value) and "t10k-images-idx3-ubyte.gz" in str(info.value)


def test_cifar10_from_a_users_directory_through_the_training_config(tmp_path):
    from testbed.models.train import DataConfig

    root = _write_cifar10(tmp_path / "cifar-10-batches-py")
    config = DataConfig(name="cifar10", root=str(root))
    assert config.resolved().size == 32  # CIFAR's native size unless asked otherwise
    data = config.load()
    assert data.input_shape == (1, 32, 32) and data.source == str(root) and len(data.test) == 6
    with pytest.raises(DataError, match="needs a directory"):
        DataConfig(name="cifar10").load()


def test_unknown_dataset_and_bad_options():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="channels"):
        load_dataset("digits", channels=2)
    assert issubclass(DataError, errors.TestbedError)

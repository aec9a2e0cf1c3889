# SPDX-License-Identifier: Apache-2.0
# IDX I/O against hand-built bytes, Fashion-MNIST / digits loaders, and the dataset splits.
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zerobit.data.fashion_mnist as fashion_mnist_module
from zerobit.data import (
    dataset_info,
    dataset_names,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    read_idx,
    split_indices,
    write_idx,
)

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape) + payload


def make_fashion_dir(directory: Path, sizes: dict[str, int], gz: bool) -> dict[str, np.ndarray]:
    """Writes tiny Fashion-MNIST files; image i has pixel (0, 0) == i so samples are traceable."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    images = {}
    for split, n in sizes.items():
        pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        pixels[:, 0, 0] = np.arange(n)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(directory / (FILES[split][0] + suffix), pixels)
        write_idx(directory / (FILES[split][1] + suffix), labels)
        images[split] = pixels
    return images


def test_write_idx_produces_the_documented_bytes(tmp_path: Path) -> None:
    labels = np.array([3, 1, 4], dtype=np.uint8)
    write_idx(tmp_path / "labels", labels)
    assert (tmp_path / "labels").read_bytes() == bytes.fromhex("00000801 00000003 030104")
    values = np.array([[1, -2], [300, 4]], dtype=np.int16)
    write_idx(tmp_path / "values", values)
    expected = idx_bytes(0x0B, (2, 2), struct.pack(">4h", 1, -2, 300, 4))
    assert (tmp_path / "values").read_bytes() == expected


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("name", ["plain-idx3-ubyte", "compressed-idx3-ubyte.gz"])
def test_round_trip_plain_and_gzip(tmp_path: Path, dtype: str, name: str) -> None:
    array = (np.arange(2 * 3 * 4).reshape(2, 3, 4) * 7 - 20).astype(dtype)
    write_idx(tmp_path / name, array)
    raw = (tmp_path / name).read_bytes()
    assert raw.startswith(b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, array)


def test_read_hand_built_image_file(tmp_path: Path) -> None:
    pixels = bytes(range(2 * 3 * 2))
    (tmp_path / "images").write_bytes(idx_bytes(0x08, (2, 3, 2), pixels))
    np.testing.assert_array_equal(
        read_idx(tmp_path / "images"), np.arange(12, dtype=np.uint8).reshape(2, 3, 2)
    )
    # gzip is recognised by content, whatever the file is called.
    (tmp_path / "images-no-suffix").write_bytes(
        gzip.compress(idx_bytes(0x0D, (2,), struct.pack(">2f", 1.5, -2.25)))
    )
    np.testing.assert_array_equal(read_idx(tmp_path / "images-no-suffix"), [1.5, -2.25])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x05", "not an IDX file"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x05", "unsupported IDX dtype code 0x07"),
        (b"\x00\x00\x08", "truncated IDX header"),
        (b"\x00\x00\x08\x03" + struct.pack(">2I", 2, 2), "truncated IDX header"),
        (idx_bytes(0x08, (2, 3), b"\x00" * 5), "truncated IDX payload.*needs 6 bytes.*found 5"),
        (idx_bytes(0x08, (2, 3), b"\x00" * 7), "oversized IDX payload.*needs 6 bytes.*found 7"),
        (idx_bytes(0x0C, (2,), b"\x00" * 7), "truncated IDX payload.*needs 8 bytes"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
    ],
)
def test_malformed_files_raise_value_error_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_truncated_gzip_raises_value_error(tmp_path: Path) -> None:
    write_idx(tmp_path / "labels.gz", np.arange(200, dtype=np.uint8))
    raw = (tmp_path / "labels.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cut.gz.*gzip"):
        read_idx(tmp_path / "cut.gz")


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    cut=st.integers(1, 1000),
    dtype=st.sampled_from(["uint8", "int16", "float64"]),
)
def test_any_truncation_raises_value_error(
    tmp_path_factory: pytest.TempPathFactory, shape: list[int], cut: int, dtype: str
) -> None:
    path = tmp_path_factory.mktemp("idx") / "file"
    write_idx(path, np.ones(shape, dtype=dtype))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 1 - cut % len(raw)])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


def test_write_idx_rejects_unrepresentable_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot store dtype int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="shape"):
        write_idx(tmp_path / "x", np.array(5, dtype=np.uint8))


@pytest.mark.parametrize("gz", [False, True])
def test_load_fashion_mnist_from_data_dir(tmp_path: Path, gz: bool) -> None:
    written = make_fashion_dir(tmp_path, {"train": 12, "test": 4}, gz=gz)
    for split, n in (("train", 12), ("test", 4)):
        images, labels = load_fashion_mnist(tmp_path, split)
        assert images.dtype == torch.float32 and images.shape == (n, 1, 28, 28)
        expected = torch.from_numpy(written[split].astype(np.float32) / np.float32(255))
        torch.testing.assert_close(images[:, 0], expected, rtol=0, atol=0)
        assert labels.dtype == torch.int64
        assert labels.tolist() == [i % 10 for i in range(n)]


def test_load_fashion_mnist_rejects_mismatched_files(tmp_path: Path) -> None:
    make_fashion_dir(tmp_path, {"train": 3}, gz=False)
    write_idx(tmp_path / FILES["train"][1], np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.*uint8 labels \\(3,\\)"):
        load_fashion_mnist(tmp_path)
    write_idx(tmp_path / FILES["train"][1], np.array([0, 10, 1], dtype=np.uint8))
    with pytest.raises(ValueError, match="label 10 outside 0..9"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist(tmp_path, "validation")


def test_missing_fashion_mnist_names_package_and_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fashion_mnist_module, "FASHION_MNIST_DIR", tmp_path / "absent")
    for call in (lambda: load_fashion_mnist(), lambda: load_fashion_mnist(tmp_path, "test")):
        with pytest.raises(FileNotFoundError) as error:
            call()
        message = str(error.value)
        assert "dataset-fashion-mnist" in message and "data_dir" in message
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


@pytest.mark.skipif(
    not (fashion_mnist_module.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_installed_fashion_mnist_has_the_published_sizes() -> None:
    images, labels = load_fashion_mnist(split="test")
    assert images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(labels).tolist() == [1000] * 10
    assert images.min().item() == 0.0 and images.max().item() == 1.0


def test_load_digits_matches_scikit_learn() -> None:
    from sklearn.datasets import load_digits as sklearn_load_digits

    images, labels = load_digits()
    reference = sklearn_load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == reference.target.tolist()
    flat = images.reshape(1797, 64).numpy()
    np.testing.assert_array_equal(flat * 16, reference.data.astype(np.float32))
    assert flat.min() == 0.0 and flat.max() == 1.0


def test_load_dataset_digits_split_sizes_and_info() -> None:
    splits = load_dataset("digits", seed=3)
    train, val, test, info = splits
    assert (len(train), len(val), len(test)) == (1437 - 144, 144, 360)
    assert info == dataset_info("digits")
    assert info.input_shape == (1, 8, 8) and info.num_classes == 10
    assert "/ 16" in info.preprocessing
    image, label = train[0]
    assert image.shape == (1, 8, 8) and label.dtype == torch.int64
    assert len(load_dataset("digits", subset=100).train) == 100


def sample_ids(dataset: torch.utils.data.TensorDataset) -> list[int]:
    return (dataset.tensors[0][:, 0, 0, 0] * 255).round().to(torch.int64).tolist()


def test_load_dataset_splits_are_disjoint_and_deterministic(tmp_path: Path) -> None:
    make_fashion_dir(tmp_path, {"train": 60, "test": 5}, gz=True)
    first = load_dataset("fashion-mnist", data_dir=tmp_path, seed=7)
    train, val = sample_ids(first.train), sample_ids(first.val)
    assert len(val) == 6 and len(train) == 54
    assert sorted(train + val) == list(range(60))
    assert sample_ids(first.test) == list(range(5))
    # The split is numpy's permutation for the seed, independently recomputed.
    assert val == sorted(np.random.default_rng(7).permutation(60)[:6].tolist())
    again = load_dataset("fashion-mnist", data_dir=tmp_path, seed=7)
    assert sample_ids(again.train) == train and sample_ids(again.val) == val
    assert sample_ids(load_dataset("fashion-mnist", data_dir=tmp_path, seed=8).val) != val
    # subset draws from the training part only and leaves the validation set unchanged.
    small = load_dataset("fashion-mnist", data_dir=tmp_path, subset=10, seed=7)
    assert sample_ids(small.val) == val
    assert len(sample_ids(small.train)) == 10 and set(sample_ids(small.train)) <= set(train)
    labels = first.train.tensors[1].tolist()
    assert labels == [i % 10 for i in train]


def test_split_indices_and_load_dataset_errors() -> None:
    train, val = split_indices(10, 0.0, seed=0)
    assert train.tolist() == list(range(10)) and val.size == 0
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, 1.0, seed=0)
    with pytest.raises(ValueError, match="subset must be between 1 and 9"):
        split_indices(10, 0.1, seed=0, subset=10)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*digits.*fashion-mnist"):
        load_dataset("cifar")
    assert set(dataset_names()) >= {"digits", "fashion-mnist"}

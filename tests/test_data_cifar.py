# SPDX-License-Identifier: Apache-2.0
# CIFAR-10 python batches, .pt tensor files and image folders, written in the real formats.
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zerobit.data.cifar10 as cifar10_module
from zerobit.data import (
    image_folder_classes,
    load_cifar10,
    load_dataset,
    load_image_folder,
    load_local_dataset,
    load_tensor_dataset,
    read_cifar_batch,
)

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def write_batch(path: Path, data: np.ndarray, labels: list[int], protocol: int = 2) -> None:
    """A batch as the original archive holds it (python-2 era dict with bytes keys)."""
    batch = {
        b"batch_label": b"training batch",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def make_cifar(root: Path, per_batch: int = 3) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for index, name in enumerate([*TRAIN_BATCHES, "test_batch"]):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        data[:, 0] = np.arange(per_batch) + 10 * index  # traceable: red pixel (0, 0)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        write_batch(folder / name, data, labels, protocol=2 if index % 2 else 4)
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("nested", [True, False])
def test_cifar10_reads_back_exactly(tmp_path: Path, nested: bool) -> None:
    written = make_cifar(tmp_path)
    data_dir = tmp_path if nested else tmp_path / "cifar-10-batches-py"
    images, labels = load_cifar10(data_dir, "train")
    assert images.shape == (15, 3, 32, 32) and images.dtype == torch.float32
    data = np.concatenate([written[name][0] for name in TRAIN_BATCHES])
    expected = data.reshape(15, 3, 32, 32).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(images.numpy(), expected)
    # Layout: 1024 red values row-major, then green, then blue.
    assert images[4, 1, 2, 5].item() == data[4, 1024 + 2 * 32 + 5] / np.float32(255)
    assert labels.dtype == torch.int64
    assert labels.tolist() == sum((written[name][1] for name in TRAIN_BATCHES), [])
    test_images, test_labels = load_cifar10(data_dir, "test")
    assert (test_images[:, 0, 0, 0] * 255).round().tolist() == [50.0, 51.0, 52.0]
    assert test_labels.tolist() == written["test_batch"][1]


def test_cifar10_registry_split(tmp_path: Path) -> None:
    make_cifar(tmp_path, per_batch=4)
    splits = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.2, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 4, 4)
    assert splits.info.input_shape == (3, 32, 32) and splits.info.num_classes == 10


def test_cifar10_missing_files_say_where_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cifar10_module, "CIFAR10_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="data_batch_1 not found.*cifar-10-python.tar.gz"):
        load_cifar10()
    make_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4 not found.*data_dir"):
        load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_cifar10(tmp_path, "validation")


def test_cifar10_corrupt_batches_raise_value_error(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    write_batch(path, np.zeros((2, 3072), np.uint8), [1, 2])
    raw = path.read_bytes()
    for cut in (1, 10, len(raw) // 2, len(raw) - 1):
        path.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="data_batch_1: not a readable CIFAR-10 batch"):
            read_cifar_batch(path)
    # A pickle that would run a command is refused, not executed.
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    with pytest.raises(ValueError, match="refusing to load global os.system"):
        read_cifar_batch(path)
    assert not (tmp_path / "pwned").exists()
    write_batch(path, np.zeros((2, 3000), np.uint8), [1, 2])
    with pytest.raises(ValueError, match=r"\(N, 3072\), got \(2, 3000\)"):
        read_cifar_batch(path)
    write_batch(path, np.zeros((2, 3072), np.uint8), [1, 10])
    with pytest.raises(ValueError, match="labels outside 0..9"):
        read_cifar_batch(path)
    write_batch(path, np.zeros((2, 3072), np.uint8), [1])
    with pytest.raises(ValueError, match="labels for 2 images"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="expected a dict"):
        read_cifar_batch(path)


# --- a user's own data ---


def test_tensor_dataset_round_trip(tmp_path: Path) -> None:
    content = {
        "train_x": torch.arange(24, dtype=torch.float64).reshape(6, 2, 2),
        "train_y": torch.tensor([0, 1, 2, 0, 1, 2], dtype=torch.int32),
        "test_x": torch.ones(2, 2, 2),
        "test_y": torch.tensor([2, 1]),
    }
    torch.save(content, tmp_path / "mine.pt")
    (train_x, train_y), (test_x, test_y) = load_tensor_dataset(tmp_path / "mine.pt")
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    assert train_x.flatten().tolist() == list(range(24)) and train_y.tolist() == [0, 1, 2] * 2
    assert torch.equal(test_x, torch.ones(2, 2, 2)) and test_y.tolist() == [2, 1]
    splits = load_local_dataset(tmp_path / "mine.pt", val_fraction=0.5, seed=1)
    assert splits.info.name == "tensors" and splits.info.input_shape == (2, 2)
    assert splits.info.num_classes == 3
    val = sorted(np.random.default_rng(1).permutation(6)[:3].tolist())
    assert splits.val.tensors[0][:, 0, 0].tolist() == [4.0 * i for i in val]
    assert len(splits.train) == 3 and len(splits.test) == 2


def test_tensor_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.pt.*torch.save"):
        load_tensor_dataset(tmp_path / "absent.pt")
    good = {
        "train_x": torch.zeros(3, 4),
        "train_y": torch.zeros(3, dtype=torch.int64),
        "test_x": torch.zeros(1, 4),
        "test_y": torch.zeros(1, dtype=torch.int64),
    }
    torch.save({k: v for k, v in good.items() if k != "test_y"}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="a.pt: expected a dict with keys"):
        load_tensor_dataset(tmp_path / "a.pt")
    torch.save({**good, "train_y": torch.zeros(3)}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="b.pt: train_y must be an integer tensor"):
        load_tensor_dataset(tmp_path / "b.pt")
    torch.save({**good, "test_x": torch.zeros(1, 5)}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"c.pt: train_x samples \(4,\) and test_x samples \(5,\)"):
        load_tensor_dataset(tmp_path / "c.pt")
    torch.save(good, tmp_path / "d.pt")
    (tmp_path / "d.pt").write_bytes((tmp_path / "d.pt").read_bytes()[:200])
    with pytest.raises(
        ValueError, match=r"d.pt: not loadable with torch.load\(weights_only=True\)"
    ):
        load_tensor_dataset(tmp_path / "d.pt")


def write_image(path: Path, array: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)  # the mode follows from dtype and shape
    assert image.mode == mode
    image.save(path)


def test_image_folder_grayscale(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pixels = {}
    for split, names in (("train", ["b", "a"]), ("test", ["a"])):
        for cls in ("zebra", "cat"):
            for name in names:
                array = rng.integers(0, 256, size=(5, 7), dtype=np.uint8)
                suffix = ".pgm" if cls == "cat" and split == "train" else ".png"
                write_image(tmp_path / split / cls / f"{name}{suffix}", array, "L")
                pixels[(split, cls, name)] = array
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored\n")
    assert image_folder_classes(tmp_path) == ("cat", "zebra")
    (train_x, train_y), (test_x, test_y) = load_image_folder(tmp_path)
    assert train_x.shape == (4, 1, 5, 7) and test_x.shape == (2, 1, 5, 7)
    assert train_y.tolist() == [0, 0, 1, 1] and test_y.tolist() == [0, 1]
    order = [("cat", "a"), ("cat", "b"), ("zebra", "a"), ("zebra", "b")]
    expected = np.stack([pixels[("train", c, n)] for c, n in order]).astype(np.float32) / 255
    np.testing.assert_array_equal(train_x[:, 0].numpy(), expected)
    splits = load_local_dataset(tmp_path, val_fraction=0.25)
    assert splits.info.name == "image-folder" and splits.info.input_shape == (1, 5, 7)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3, 1, 2)


def test_image_folder_mixed_modes_become_rgb(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    color = np.arange(36, dtype=np.uint8).reshape(3, 4, 3)
    write_image(tmp_path / "train" / "a" / "0.png", gray, "L")
    write_image(tmp_path / "train" / "b" / "0.png", color, "RGB")
    rgba = np.concatenate([color, np.full((3, 4, 1), 7, np.uint8)], axis=2)
    write_image(tmp_path / "test" / "b" / "0.png", rgba, "RGBA")
    (train_x, train_y), (test_x, test_y) = load_image_folder(tmp_path)
    assert train_x.shape == (2, 3, 3, 4) and train_y.tolist() == [0, 1]
    for channel in range(3):
        np.testing.assert_array_equal(train_x[0, channel].numpy(), gray / np.float32(255))
    np.testing.assert_array_equal(train_x[1].numpy(), color.transpose(2, 0, 1) / np.float32(255))
    np.testing.assert_array_equal(test_x[0].numpy(), color.transpose(2, 0, 1) / np.float32(255))
    assert test_y.tolist() == [1]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no class folders"):
        load_image_folder(tmp_path)
    write_image(tmp_path / "train" / "a" / "0.png", np.zeros((4, 4), np.uint8), "L")
    with pytest.raises(FileNotFoundError, match="test not found"):
        load_image_folder(tmp_path)
    write_image(tmp_path / "test" / "a" / "0.png", np.zeros((4, 5), np.uint8), "L")
    with pytest.raises(ValueError, match=r"test/a/0.png: image is 5x4 .* 4x4; resize"):
        load_image_folder(tmp_path)
    write_image(tmp_path / "test" / "a" / "0.png", np.zeros((4, 4), np.uint8), "L")
    write_image(tmp_path / "test" / "c" / "0.png", np.zeros((4, 4), np.uint8), "L")
    with pytest.raises(ValueError, match=r"class folder\(s\) \['c'\] have no counterpart"):
        load_image_folder(tmp_path)
    os.remove(tmp_path / "test" / "c" / "0.png")
    (tmp_path / "test" / "c").rmdir()
    (tmp_path / "train" / "a" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match=r"train/a/1.png: not a readable image"):
        load_image_folder(tmp_path)
    write_image(tmp_path / "train" / "a" / "1.png", np.zeros((4, 4), np.uint16), "I;16")
    with pytest.raises(ValueError, match=r"1.png: image mode 'I;16' is not 8-bit"):
        load_image_folder(tmp_path)

# SPDX-License-Identifier: Apache-2.0
# CIFAR-10 from the "python version" pickled batches, read with a restricted unpickler.
"""CIFAR-10, python version (``cifar-10-python.tar.gz``).

The archive extracts to ``cifar-10-batches-py/`` holding ``data_batch_1`` .. ``data_batch_5``
(10,000 training images each) and ``test_batch`` (10,000). Each is a pickled dict with
``b"data"``: uint8 (10000, 3072), one image per row as 1024 red, 1024 green then 1024 blue
values, each plane row-major 32x32; and ``b"labels"``: 10,000 ints in 0..9.

Pickle can run arbitrary code, so the batches are read with an unpickler that accepts only the
numpy array reconstructors such a file needs and rejects everything else with ValueError.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zerobit.data.datasets import Arrays, DatasetInfo, register_dataset

CIFAR10_DIR = Path("~/.cache/zerobit/cifar10").expanduser()
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_INFO = DatasetInfo(
    name="cifar10",
    input_shape=(3, 32, 32),
    num_classes=10,
    preprocessing=(
        "CIFAR-10 python batches (data_batch_1..5: 50,000, test_batch: 10,000); uint8 RGB / 255 "
        "as float32 in [0, 1], shape (3, 32, 32); no normalization, no augmentation here (spec "
        "§5.4's rotation / translation / flip belong to the training loop)"
    ),
)
# (module, name) pairs a CIFAR-10 batch pickle may reference, whatever numpy wrote it.
_ALLOWED_GLOBALS = frozenset(
    {
        ("_codecs", "encode"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler limited to plain containers and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global only if a numpy array pickle needs it."""
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch.

    Args:
        path: A ``data_batch_*`` or ``test_batch`` file.

    Returns:
        ``(data, labels)``: data uint8 (N, 3072) as stored; labels int64 (N,) in 0..9.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a readable pickle of the documented dict, or its arrays
            have the wrong type, shape or label range. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch {path} not found")
    try:
        with path.open("rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    # Corrupt pickle bytes can raise nearly any exception type (EOFError, KeyError, struct and
    # unicode errors, ...); each means "not a valid batch file".
    except Exception as error:
        raise ValueError(f"{path}: not a readable CIFAR-10 batch pickle ({error})") from error
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: expected a dict with keys b'data' and b'labels'")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(f"{path}: b'data' must be a uint8 array (N, 3072)")
    if data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' must be (N, 3072), got {data.shape}")
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: b'labels' is not a list of integers ({error})") from error
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {labels.shape} labels for {len(data)} images")
    if labels.size and not 0 <= labels.min() <= labels.max() <= 9:
        raise ValueError(f"{path}: labels outside 0..9 ({labels.min()}..{labels.max()})")
    return data, labels


def _folder(data_dir: str | os.PathLike[str] | None) -> Path:
    directory = CIFAR10_DIR if data_dir is None else Path(data_dir)
    nested = directory / CIFAR10_FOLDER
    return nested if nested.is_dir() else directory


def load_cifar10(data_dir: str | os.PathLike[str] | None = None, split: str = "train") -> Arrays:
    """Load one split of CIFAR-10.

    Args:
        data_dir: The ``cifar-10-batches-py`` folder or the folder that contains it (None:
            ``~/.cache/zerobit/cifar10``).
        split: ``"train"`` (the five data batches, in order) or ``"test"`` (``test_batch``).

    Returns:
        ``(images, labels)``: images float32 (N, 3, 32, 32) (channels R, G, B), the uint8 values
        divided by 255; labels int64 (N,) in 0..9 (see ``CIFAR10_CLASSES``).

    Raises:
        ValueError: On an unknown split or a malformed batch file.
        FileNotFoundError: If a batch file is missing; the message says where to get them.
    """
    if split not in CIFAR10_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = _folder(data_dir)
    for name in CIFAR10_FILES[split]:
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"CIFAR-10 batch {name} not found in {directory}. Download {CIFAR10_URL}, "
                f"extract it (tar xzf) and pass data_dir= pointing at {CIFAR10_FOLDER}/ or the "
                f"folder holding it (default {CIFAR10_DIR}); it must hold "
                f"{', '.join(CIFAR10_FILES['train'] + CIFAR10_FILES['test'])}."
            )
    batches = [read_cifar_batch(directory / name) for name in CIFAR10_FILES[split]]
    data = np.concatenate([data for data, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    images = torch.from_numpy(data).reshape(-1, 3, 32, 32).to(torch.float32).div_(255)
    return images, torch.from_numpy(labels)


@register_dataset(CIFAR10_INFO)
def _load_cifar10_splits(data_dir: str | os.PathLike[str] | None) -> tuple[Arrays, Arrays]:
    return load_cifar10(data_dir, "train"), load_cifar10(data_dir, "test")

# SPDX-License-Identifier: Apache-2.0
# Fashion-MNIST from IDX files, by default those of the Debian package dataset-fashion-mnist.
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from zerobit.data.datasets import Arrays, DatasetInfo, register_dataset
from zerobit.data.idx import read_idx

DEBIAN_PACKAGE = "dataset-fashion-mnist"
# Where the Debian package installs the four gzip-compressed IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_INFO = DatasetInfo(
    name="fashion-mnist",
    input_shape=(1, 28, 28),
    num_classes=10,
    preprocessing=(
        "Fashion-MNIST IDX files (train-*: 60,000, t10k-*: 10,000); uint8 pixel / 255 as float32 "
        "in [0, 1], shape (1, 28, 28); no normalization, no augmentation"
    ),
)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem} (or {stem}.gz) not found in {directory}. Install the Debian "
        f"package {DEBIAN_PACKAGE!r} (apt-get install {DEBIAN_PACKAGE}; it provides "
        f"{FASHION_MNIST_DIR}/{stem}.gz), or pass data_dir= pointing at a folder that holds the "
        f"IDX files {', '.join(s for pair in FASHION_MNIST_FILES.values() for s in pair)} "
        "(plain or .gz)."
    )


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None, split: str = "train"
) -> Arrays:
    """Load one split of Fashion-MNIST.

    Args:
        data_dir: Folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or with a
            ``.gz`` suffix (the uncompressed name wins if both exist). None uses
            ``/usr/share/datasets/fashion-mnist``, where the Debian package
            ``dataset-fashion-mnist`` installs them.
        split: ``"train"`` (60,000 samples) or ``"test"`` (10,000).

    Returns:
        ``(images, labels)``: images float32 (N, 1, 28, 28), the uint8 pixels divided by 255;
        labels int64 (N,) in 0..9 (see ``FASHION_MNIST_CLASSES``).

    Raises:
        ValueError: If ``split`` is unknown or the files do not hold matching uint8 28x28 images
            and labels in 0..9.
        FileNotFoundError: If a file is missing; the message names the Debian package and the
            ``data_dir`` option.
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = FASHION_MNIST_DIR if data_dir is None else Path(data_dir)
    image_stem, label_stem = FASHION_MNIST_FILES[split]
    image_path, label_path = _find(directory, image_stem), _find(directory, label_stem)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or images.ndim != 3:
        raise ValueError(
            f"{image_path}: expected uint8 images (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.shape != (len(images),):
        raise ValueError(
            f"{label_path}: expected uint8 labels ({len(images)},) to match {image_path.name}, "
            f"got {labels.dtype} {labels.shape}"
        )
    if labels.size and labels.max() >= 10:
        raise ValueError(f"{label_path}: label {labels.max()} outside 0..9")
    image_tensor = torch.from_numpy(images).to(torch.float32).div_(255).unsqueeze(1)
    return image_tensor, torch.from_numpy(labels).to(torch.int64)


@register_dataset(FASHION_MNIST_INFO)
def _load_fashion_mnist_splits(data_dir: str | os.PathLike[str] | None) -> tuple[Arrays, Arrays]:
    return load_fashion_mnist(data_dir, "train"), load_fashion_mnist(data_dir, "test")

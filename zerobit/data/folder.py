# SPDX-License-Identifier: Apache-2.0
# A user's own data: a .pt file of tensors or a folder of images, as train / val / test splits.
"""Datasets that live at a path instead of under a registry name.

Two layouts are read:

* a ``.pt`` file written by ``torch.save({"train_x": ..., "train_y": ..., "test_x": ...,
  "test_y": ...}, path)`` (loaded with ``weights_only=True``, so it runs no code);
* an image folder ``root/train/<class>/<image>`` and ``root/test/<class>/<image>`` (PNG, PGM,
  PPM, BMP or JPEG, read with Pillow); the classes are the sorted names of ``root/train``'s
  subfolders, label ``i`` being the ``i``-th.

Their shape and number of classes come from the data, so they cannot sit in the name registry
(whose :class:`~zerobit.data.datasets.DatasetInfo` is fixed); :func:`load_local_dataset` gives
them the same :class:`~zerobit.data.datasets.DatasetSplits` interface as
:func:`~zerobit.data.datasets.load_dataset`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from zerobit.data.datasets import Arrays, DatasetInfo, DatasetSplits, split_indices

TENSOR_KEYS = ("train_x", "train_y", "test_x", "test_y")
IMAGE_SUFFIXES = frozenset({".png", ".pgm", ".ppm", ".pnm", ".bmp", ".jpg", ".jpeg"})
# Pillow modes read as 8-bit grayscale / as 8-bit colour (alpha dropped, palettes expanded).
_GRAY_MODES = frozenset({"1", "L", "LA"})
_COLOR_MODES = frozenset({"P", "RGB", "RGBA"})


def _as_arrays(path: Path, images: object, labels: object, split: str) -> Arrays:
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError(f"{path}: {split}_x and {split}_y must be tensors")
    if not images.is_floating_point() or images.ndim < 2:
        raise ValueError(
            f"{path}: {split}_x must be a floating-point tensor (N, ...), got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.shape != (len(images),):
        raise ValueError(
            f"{path}: {split}_y must be an integer tensor ({len(images)},), got {labels.dtype} "
            f"{tuple(labels.shape)}"
        )
    if labels.numel() and labels.min() < 0:
        raise ValueError(f"{path}: {split}_y holds a negative label {int(labels.min())}")
    return images.to(torch.float32), labels.to(torch.int64)


def load_tensor_dataset(path: str | os.PathLike[str]) -> tuple[Arrays, Arrays]:
    """Load a ``.pt`` file of train and test tensors.

    Args:
        path: A file saved with ``torch.save`` holding a dict with ``"train_x"`` float (N, ...),
            ``"train_y"`` integer (N,), ``"test_x"`` float (M, ...) and ``"test_y"`` integer
            (M,); the sample shapes of train and test must agree.

    Returns:
        ``((train_x, train_y), (test_x, test_y))``: inputs float32, labels int64, on the CPU.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file cannot be loaded with ``weights_only=True``, lacks a key, or holds
            tensors of the wrong kind or shape. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"tensor dataset {path} not found; write one with torch.save({{'train_x': ..., "
            f"'train_y': ..., 'test_x': ..., 'test_y': ...}}, path)"
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load raises pickle, zip and runtime errors of many types on a corrupt file.
    except Exception as error:
        raise ValueError(
            f"{path}: not loadable with torch.load(weights_only=True) ({error})"
        ) from error
    if not isinstance(content, dict) or any(key not in content for key in TENSOR_KEYS):
        raise ValueError(f"{path}: expected a dict with keys {', '.join(TENSOR_KEYS)}")
    train = _as_arrays(path, content["train_x"], content["train_y"], "train")
    test = _as_arrays(path, content["test_x"], content["test_y"], "test")
    if train[0].shape[1:] != test[0].shape[1:]:
        raise ValueError(
            f"{path}: train_x samples {tuple(train[0].shape[1:])} and test_x samples "
            f"{tuple(test[0].shape[1:])} differ in shape"
        )
    return train, test


def image_folder_classes(root: str | os.PathLike[str]) -> tuple[str, ...]:
    """Return the class names of an image folder: the sorted subfolders of ``root/train``.

    Raises:
        FileNotFoundError: If ``root/train`` has no subfolder.
    """
    train = Path(root) / "train"
    classes = sorted(p.name for p in train.iterdir() if p.is_dir()) if train.is_dir() else []
    if not classes:
        raise FileNotFoundError(
            f"no class folders in {train}; an image folder is root/train/<class>/*.png and "
            "root/test/<class>/*.png"
        )
    return tuple(classes)


def _image_files(root: Path, split: str, classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    directory = root / split
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} not found; an image folder needs train/ and test/")
    unknown = sorted(
        p.name for p in directory.iterdir() if p.is_dir() and p.name not in set(classes)
    )
    if unknown:
        raise ValueError(f"{directory}: class folder(s) {unknown} have no counterpart in train/")
    files = [
        (image, label)
        for label, name in enumerate(classes)
        if (directory / name).is_dir()
        for image in sorted((directory / name).iterdir())
        if image.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise FileNotFoundError(
            f"no image ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders of {directory}"
        )
    return files


def _read_images(files: list[tuple[Path, int]]) -> tuple[list[np.ndarray], list[Path]]:
    """Decode every file to uint8 (H, W) if all are grayscale, else (H, W, 3)."""
    from PIL import Image  # Pillow comes with matplotlib; imported late to keep zerobit light

    opened = []
    for path, _ in files:
        try:
            with Image.open(path) as image:
                image.load()
                opened.append(image.copy())
        # Pillow reports undecodable or truncated files as OSError, SyntaxError or ValueError.
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"{path}: not a readable image ({error})") from error
        if opened[-1].mode not in _GRAY_MODES | _COLOR_MODES:
            raise ValueError(
                f"{path}: image mode {opened[-1].mode!r} is not 8-bit grayscale or colour "
                f"(supported: {', '.join(sorted(_GRAY_MODES | _COLOR_MODES))})"
            )
    target = "L" if all(image.mode in _GRAY_MODES for image in opened) else "RGB"
    return [np.asarray(image.convert(target)) for image in opened], [p for p, _ in files]


def load_image_folder(root: str | os.PathLike[str]) -> tuple[Arrays, Arrays]:
    """Load ``root/train/<class>/*`` and ``root/test/<class>/*`` images.

    Images are decoded with Pillow. If every image is grayscale (modes 1, L, LA) the result has
    one channel, otherwise three (grayscale images repeated, alpha dropped, palettes expanded).
    All images, train and test, must have the same width and height.

    Args:
        root: Folder holding ``train/`` and ``test/``, each with one subfolder per class; the
            classes are ``image_folder_classes(root)``.

    Returns:
        ``((train_images, train_labels), (test_images, test_labels))``: images float32 (N, C, H,
        W), the 8-bit values / 255; labels int64 (N,) indexing the sorted class names. Within a
        split, samples are ordered by class, then by file name.

    Raises:
        FileNotFoundError: If ``train/`` or ``test/`` is missing or holds no image.
        ValueError: If an image cannot be decoded, has an unsupported mode (e.g. 16-bit), or its
            size differs from the first image's; or ``test/`` has a class ``train/`` lacks. The
            message names the file.
    """
    root = Path(root)
    classes = image_folder_classes(root)
    train_files, test_files = (
        _image_files(root, "train", classes),
        _image_files(root, "test", classes),
    )
    arrays, paths = _read_images(train_files + test_files)
    expected = arrays[0].shape
    for array, path in zip(arrays, paths):
        if array.shape[:2] != expected[:2]:
            raise ValueError(
                f"{path}: image is {array.shape[1]}x{array.shape[0]} (width x height), but "
                f"{paths[0]} is {expected[1]}x{expected[0]}; resize all images to one size"
            )
    stacked = torch.from_numpy(np.stack(arrays))
    images = (stacked.unsqueeze(1) if stacked.ndim == 3 else stacked.permute(0, 3, 1, 2)).to(
        torch.float32
    ) / 255
    labels = torch.tensor([label for _, label in train_files + test_files], dtype=torch.int64)
    cut = len(train_files)
    return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])


def load_local_dataset(
    path: str | os.PathLike[str],
    subset: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> DatasetSplits:
    """Load a ``.pt`` tensor file or an image folder as train / validation / test sets.

    The counterpart of :func:`~zerobit.data.datasets.load_dataset` for data at a path: the
    validation set is held out of the training data by
    :func:`~zerobit.data.datasets.split_indices` in the same way.

    Args:
        path: A file (read by :func:`load_tensor_dataset`) or a folder (read by
            :func:`load_image_folder`).
        subset: Keep only this many training samples (chosen by ``seed``), or None for all.
        seed: Seed of the validation split and of the subset.
        val_fraction: Fraction of the training data held out for validation, in [0, 1).

    Returns:
        ``DatasetSplits(train, val, test, info)``; ``info.name`` is ``"tensors"`` or
        ``"image-folder"``, ``info.input_shape`` the sample shape and ``info.num_classes`` the
        number of class folders, or the largest label + 1 (at least 2) for a tensor file.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: On malformed data or a bad ``subset`` / ``val_fraction``.
    """
    path = Path(path)
    if path.is_dir():
        (train, test), name = load_image_folder(path), "image-folder"
        num_classes = max(2, len(image_folder_classes(path)))
        recipe = f"images of {path} (sorted class folders), 8-bit / 255, no normalization"
    else:
        (train, test), name = load_tensor_dataset(path), "tensors"
        labels = torch.cat([train[1], test[1]])
        num_classes = max(2, int(labels.max()) + 1 if labels.numel() else 2)
        recipe = f"tensors of {path} as stored, cast to float32 / int64"
    info = DatasetInfo(name, tuple(train[0].shape[1:]), num_classes, recipe)
    train_idx, val_idx = split_indices(len(train[1]), val_fraction, seed, subset)
    train_index, val_index = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return DatasetSplits(
        train=TensorDataset(train[0][train_index], train[1][train_index]),
        val=TensorDataset(train[0][val_index], train[1][val_index]),
        test=TensorDataset(*test),
        info=info,
    )

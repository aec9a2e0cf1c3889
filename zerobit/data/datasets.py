# SPDX-License-Identifier: Apache-2.0
# Dataset descriptions, the name-keyed dataset registry and the train/val/test split.
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from torch.utils.data import TensorDataset

# (images float32 (N, *input_shape), labels int64 (N,)).
Arrays = tuple[torch.Tensor, torch.Tensor]
# Loads (train, test) arrays; receives the user's data_dir (None: the dataset's default location).
SplitLoader = Callable[[str | os.PathLike[str] | None], tuple[Arrays, Arrays]]
_Loader = TypeVar("_Loader", bound=SplitLoader)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset, and how to reproduce its input.

    Attributes:
        name: Registry key, e.g. ``"fashion-mnist"``.
        input_shape: Shape of one sample without the batch dimension, e.g. ``(1, 28, 28)``.
        num_classes: Number of classes; labels are ``0 .. num_classes - 1``.
        preprocessing: Human-readable recipe from the raw files to the model input, precise
            enough for a third party to reproduce it (e.g. ``"uint8 pixel / 255, no
            normalization"``).
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    preprocessing: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("DatasetInfo.name must be non-empty")
        shape = tuple(self.input_shape)
        if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"input_shape must be positive ints, got {self.input_shape!r}")
        object.__setattr__(self, "input_shape", shape)
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {self.num_classes!r}")
        if not self.preprocessing:
            raise ValueError("DatasetInfo.preprocessing must describe the input pipeline")


class DatasetSplits(NamedTuple):
    """Train, validation and test sets of one dataset plus its description.

    Each set holds images float32 (N, *info.input_shape) and labels int64 (N,).
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    info: DatasetInfo


_DATASETS: dict[str, tuple[DatasetInfo, SplitLoader]] = {}


def register_dataset(info: DatasetInfo) -> Callable[[_Loader], _Loader]:
    """Register a loader of (train, test) arrays under ``info.name``.

    Args:
        info: Description of the dataset the loader returns.

    Returns:
        A decorator that records the loader and returns it unchanged.

    Raises:
        ValueError: If ``info.name`` is already registered.
    """

    def decorator(loader: _Loader) -> _Loader:
        if info.name in _DATASETS:
            raise ValueError(f"dataset {info.name!r} is already registered")
        _DATASETS[info.name] = (info, loader)
        return loader

    return decorator


def dataset_names() -> tuple[str, ...]:
    """Return the registered dataset names, sorted."""
    return tuple(sorted(_DATASETS))


def _entry(name: str) -> tuple[DatasetInfo, SplitLoader]:
    try:
        return _DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; available datasets: {', '.join(dataset_names())}"
        ) from None


def dataset_info(name: str) -> DatasetInfo:
    """Return the description of a registered dataset without loading it.

    Args:
        name: Registry key, one of :func:`dataset_names`.

    Returns:
        The dataset's :class:`DatasetInfo`.

    Raises:
        ValueError: If ``name`` is not registered.
    """
    return _entry(name)[0]


def split_indices(
    num_samples: int, val_fraction: float, seed: int, subset: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Choose the training and validation indices of a training set.

    The validation set is the first ``round(num_samples * val_fraction)`` entries of
    ``numpy.random.default_rng(seed).permutation(num_samples)``; the training set is the rest, cut
    to its first ``subset`` entries if given. So the validation set depends only on the seed and
    the fraction, never on ``subset``. Both index arrays are returned sorted.

    Args:
        num_samples: Size of the full training set.
        val_fraction: Fraction held out for validation, in [0, 1).
        seed: Seed of the permutation.
        subset: Number of training samples to keep, or None for all.

    Returns:
        ``(train_indices, val_indices)``, int64 arrays.

    Raises:
        ValueError: If ``val_fraction`` is outside [0, 1) or ``subset`` is not in
            ``1 .. num_samples - len(val_indices)``.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    permutation = np.random.default_rng(seed).permutation(num_samples)
    num_val = round(num_samples * val_fraction)
    val, train = permutation[:num_val], permutation[num_val:]
    if subset is not None:
        if not 1 <= subset <= len(train):
            raise ValueError(
                f"subset must be between 1 and {len(train)} (training samples left after the "
                f"validation split), got {subset!r}"
            )
        train = train[:subset]
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


def _check_arrays(info: DatasetInfo, split: str, arrays: Arrays) -> None:
    images, labels = arrays
    if images.dtype != torch.float32 or tuple(images.shape[1:]) != info.input_shape:
        raise ValueError(
            f"{info.name} {split} images must be float32 (N, {info.input_shape}), got "
            f"{images.dtype} {tuple(images.shape)}"
        )
    if labels.dtype != torch.int64 or labels.shape != (len(images),):
        raise ValueError(f"{info.name} {split} labels must be int64 ({len(images)},)")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    subset: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> DatasetSplits:
    """Load a registered dataset as train / validation / test tensor datasets.

    The validation set is held out from the training data with :func:`split_indices` (deterministic
    for ``seed``); the test set is the dataset's own test split.

    Args:
        name: Registry key, one of :func:`dataset_names` (``"digits"``, ``"fashion-mnist"``).
        data_dir: Folder holding the raw files; None uses the dataset's default location. Ignored
            by datasets bundled with a package (``"digits"``).
        subset: Keep only this many training samples (chosen by ``seed``), or None for all. The
            validation and test sets are not reduced.
        seed: Seed of the validation split and of the subset.
        val_fraction: Fraction of the training data held out for validation, in [0, 1).

    Returns:
        ``DatasetSplits(train, val, test, info)``; each set yields (image float32
        ``info.input_shape``, label int64 scalar).

    Raises:
        ValueError: On an unknown name, a bad ``subset`` / ``val_fraction``, or malformed files.
        FileNotFoundError: If the dataset's files are not found (the message says where to get
            them).
    """
    info, loader = _entry(name)
    train_arrays, test_arrays = loader(data_dir)
    _check_arrays(info, "train", train_arrays)
    _check_arrays(info, "test", test_arrays)
    images, labels = train_arrays
    train_idx, val_idx = split_indices(len(labels), val_fraction, seed, subset)
    train_index = torch.from_numpy(train_idx)
    val_index = torch.from_numpy(val_idx)
    return DatasetSplits(
        train=TensorDataset(images[train_index], labels[train_index]),
        val=TensorDataset(images[val_index], labels[val_index]),
        test=TensorDataset(*test_arrays),
        info=info,
    )

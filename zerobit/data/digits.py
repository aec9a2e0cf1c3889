# SPDX-License-Identifier: Apache-2.0
# scikit-learn's bundled 8x8 handwritten digits: a dataset that needs no download.
from __future__ import annotations

import os

import numpy as np
import torch

from zerobit.data.datasets import Arrays, DatasetInfo, register_dataset

# The bundle has no test split; this many samples, chosen by a fixed seed, form one.
DIGITS_TEST_SIZE = 360
DIGITS_TEST_SEED = 0
DIGITS_INFO = DatasetInfo(
    name="digits",
    input_shape=(1, 8, 8),
    num_classes=10,
    preprocessing=(
        "sklearn.datasets.load_digits() (1,797 samples, integer pixels 0..16) / 16 as float32 in "
        "[0, 1], shape (1, 8, 8); no normalization, no augmentation; test set = the first 360 "
        "indices of numpy.random.default_rng(0).permutation(1797)"
    ),
)


def load_digits() -> Arrays:
    """Load all of scikit-learn's 8x8 digits (bundled with scikit-learn, no download).

    Returns:
        ``(images, labels)``: images float32 (1797, 1, 8, 8), the 0..16 pixel values divided by
        16; labels int64 (1797,) in 0..9.
    """
    # Imported here because scikit-learn is slow to import and only this loader needs it.
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    images = torch.from_numpy(bunch.images).to(torch.float32).div_(16).unsqueeze(1)
    return images, torch.from_numpy(bunch.target).to(torch.int64)


@register_dataset(DIGITS_INFO)
def _load_digits_splits(data_dir: str | os.PathLike[str] | None) -> tuple[Arrays, Arrays]:
    del data_dir  # bundled with scikit-learn
    images, labels = load_digits()
    permutation = np.random.default_rng(DIGITS_TEST_SEED).permutation(len(labels))
    test = torch.from_numpy(np.sort(permutation[:DIGITS_TEST_SIZE]))
    train = torch.from_numpy(np.sort(permutation[DIGITS_TEST_SIZE:]))
    return (images[train], labels[train]), (images[test], labels[test])

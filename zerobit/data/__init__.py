# SPDX-License-Identifier: Apache-2.0
# Dataset loaders, IDX file I/O and the name-keyed dataset registry.
from zerobit.data.datasets import (
    DatasetInfo,
    DatasetSplits,
    dataset_info,
    dataset_names,
    load_dataset,
    register_dataset,
    split_indices,
)
from zerobit.data.digits import load_digits
from zerobit.data.fashion_mnist import load_fashion_mnist
from zerobit.data.idx import read_idx, write_idx

__all__ = [
    "DatasetInfo",
    "DatasetSplits",
    "dataset_info",
    "dataset_names",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "read_idx",
    "register_dataset",
    "split_indices",
    "write_idx",
]

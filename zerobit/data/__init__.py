# SPDX-License-Identifier: Apache-2.0
# Dataset loaders, audio features, IDX file I/O and the name-keyed dataset registry.
from zerobit.data.audio import (
    dct_matrix,
    fit_length,
    hz_to_mel,
    log_mel,
    mel_filterbank,
    mel_to_hz,
    mfcc,
    read_wav,
    resample,
)
from zerobit.data.cifar10 import CIFAR10_CLASSES, load_cifar10, read_cifar_batch
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
from zerobit.data.folder import (
    image_folder_classes,
    load_image_folder,
    load_local_dataset,
    load_tensor_dataset,
)
from zerobit.data.idx import read_idx, write_idx
from zerobit.data.kws import (
    KwsRecipe,
    espeak_variants,
    espeak_version,
    kws_cache_key,
    load_kws,
    split_voices,
)
from zerobit.data.speech_commands import (
    SPEECH_COMMANDS_CLASSES,
    load_speech_commands,
    speech_commands_clips,
)

__all__ = [
    "CIFAR10_CLASSES",
    "SPEECH_COMMANDS_CLASSES",
    "DatasetInfo",
    "DatasetSplits",
    "KwsRecipe",
    "dataset_info",
    "dataset_names",
    "dct_matrix",
    "espeak_variants",
    "espeak_version",
    "fit_length",
    "hz_to_mel",
    "image_folder_classes",
    "kws_cache_key",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_kws",
    "load_local_dataset",
    "load_speech_commands",
    "load_tensor_dataset",
    "log_mel",
    "mel_filterbank",
    "mel_to_hz",
    "mfcc",
    "read_cifar_batch",
    "read_idx",
    "read_wav",
    "register_dataset",
    "resample",
    "speech_commands_clips",
    "split_indices",
    "split_voices",
    "write_idx",
]

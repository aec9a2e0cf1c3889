# SPDX-License-Identifier: Apache-2.0
# zerobit: joint pruning and channel-wise mixed-precision search for tiny neural networks.
from zerobit import cost
from zerobit.config import LayerOverride, Sampling, SearchSpace
from zerobit.export import export, load_artifact
from zerobit.search import FrozenModel, SearchModel, convert, freeze

__version__ = "0.1.0"

__all__ = [
    "FrozenModel",
    "LayerOverride",
    "Sampling",
    "SearchModel",
    "SearchSpace",
    "__version__",
    "convert",
    "cost",
    "export",
    "freeze",
    "load_artifact",
]

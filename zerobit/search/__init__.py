# SPDX-License-Identifier: Apache-2.0
# Public API of the search: convert a model, search it, read out and freeze its architecture.
from zerobit.search.frozen import FrozenLayer, FrozenModel, IntegerLayer
from zerobit.search.model import SearchModel, convert, freeze
from zerobit.search.sampling import discretize, sample_probs

__all__ = [
    "FrozenLayer",
    "FrozenModel",
    "IntegerLayer",
    "SearchModel",
    "convert",
    "discretize",
    "freeze",
    "sample_probs",
]

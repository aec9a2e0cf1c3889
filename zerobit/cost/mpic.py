# SPDX-License-Identifier: Apache-2.0
# MPIC cost model: cycles of a RISC-V core with mixed-precision SIMD (Ottavi et al., 2020).
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch

from zerobit.cost.batch import LayerBatch
from zerobit.cost.registry import register_cost
from zerobit.cost.spec import LayerSpec, Number, mixed_precision_sum

MPIC_THROUGHPUT: Mapping[tuple[int, int], float] = MappingProxyType(
    {
        (2, 2): 6.5,
        (2, 4): 4.0,
        (2, 8): 2.2,
        (4, 2): 3.9,
        (4, 4): 3.5,
        (4, 8): 2.1,
        (8, 2): 2.5,
        (8, 4): 2.3,
        (8, 8): 2.1,
    }
)
"""MPIC throughput in MAC/cycle, keyed by (input activation bits, weight bits)."""

_ACT_BITS = (2, 4, 8)
_WEIGHT_BITS = (0, 2, 4, 8)


def mpic_supported_bits() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return the bit-widths the MPIC model knows.

    Returns:
        ``(activation bits, weight bits)`` = ``((2, 4, 8), (0, 2, 4, 8))``; 0-bit weights are
        pruned channels and cost nothing.
    """
    return _ACT_BITS, _WEIGHT_BITS


def mpic_batched(batch: LayerBatch) -> torch.Tensor:
    """Batched :func:`mpic`: cycles of every layer, as one 0-dim tensor."""
    cycles_per_mac = {pair: 1.0 / throughput for pair, throughput in MPIC_THROUGHPUT.items()}
    return batch.per_mac_sum(cycles_per_mac)


@register_cost("mpic", batched=mpic_batched)
def mpic(spec: LayerSpec) -> Number:
    """Return the expected MPIC cycles, Σ_a θ_a · Σ_{p>0} N_p · MACs per output channel / T[a][p].

    ``a`` is the layer's input activation bit-width; ``T`` is :data:`MPIC_THROUGHPUT`. Bias MACs
    are not counted. Summed over a network and rounded to the nearest int, this reproduces the
    published figures (e.g. ResNet-8 w8a8: 5,953,158 cycles).

    Args:
        spec: The layer.

    Returns:
        Cycles, a float for a Python spec, otherwise a 0-dim tensor.

    Raises:
        ValueError: If the spec has activation or weight bits outside the table.
    """
    bad_act = sorted(set(spec.input_bits) - set(_ACT_BITS))
    bad_weight = sorted(set(spec.weight_bits) - set(_WEIGHT_BITS))
    if bad_act or bad_weight:
        raise ValueError(
            f"layer {spec.name!r}: the MPIC model supports activation bits {_ACT_BITS} and weight "
            f"bits {_WEIGHT_BITS}, got input_bits={spec.input_bits}, "
            f"weight_bits={spec.weight_bits}"
        )
    return mixed_precision_sum(
        spec, lambda layer_macs, act, weight: layer_macs / MPIC_THROUGHPUT[(act, weight)]
    )

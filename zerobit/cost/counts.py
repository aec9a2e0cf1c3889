# SPDX-License-Identifier: Apache-2.0
# Hardware-agnostic cost models: weight bits (size), MACs and BitOps.
from __future__ import annotations

from zerobit.cost.registry import register_cost
from zerobit.cost.spec import LayerSpec, Number, mixed_precision_sum, zero_like


@register_cost("size")
def size(spec: LayerSpec) -> Number:
    """Return the expected number of weight bits, Σ_p p · N_p · fan_in · prod(kernel_size).

    0-bit (pruned) channels count 0; biases are not counted. A depthwise output channel holds
    prod(kernel_size) weights (fan-in 1). Whether Ĉ_in is detached is the caller's choice: pass a
    detached ``in_channels`` for the paper-faithful behaviour.

    Args:
        spec: The layer.

    Returns:
        Bits, an int for an all-int spec, otherwise a float or a 0-dim tensor.
    """
    weights_per_channel = spec.fan_in * spec.kernel_volume
    total = zero_like(spec)
    for bits, count in zip(spec.weight_bits, spec.channels):
        if bits > 0:
            total = total + bits * count
    return total * weights_per_channel


@register_cost("macs")
def macs(spec: LayerSpec) -> Number:
    """Return the expected multiply-accumulates, Σ_{p>0} N_p · MACs per output channel.

    Bias additions are not counted.

    Args:
        spec: The layer.

    Returns:
        MACs, an int for an all-int spec, otherwise a float or a 0-dim tensor.
    """
    return spec.kept_channels * spec.macs_per_output_channel


@register_cost("bitops")
def bitops(spec: LayerSpec) -> Number:
    """Return the expected EdMIPS bit operations, Σ_a θ_a·a · Σ_{p>0} p·N_p · MACs per channel.

    Args:
        spec: The layer.

    Returns:
        BitOps, an int for an all-int spec, otherwise a float or a 0-dim tensor.
    """
    return mixed_precision_sum(spec, lambda layer_macs, act, weight: layer_macs * (act * weight))

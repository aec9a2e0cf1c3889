# SPDX-License-Identifier: Apache-2.0
# Hardware-agnostic cost models: weight bits (size), MACs and BitOps.
from __future__ import annotations

import torch

from zerobit.cost.batch import LayerBatch
from zerobit.cost.registry import register_cost
from zerobit.cost.spec import LayerSpec, Number, mixed_precision_sum, zero_like


def size_batched(batch: LayerBatch) -> torch.Tensor:
    """Batched :func:`size`: Σ_layers Σ_p p · N_p · fan_in · prod(kernel_size)."""
    bits_per_channel = batch.channels @ batch.weight_bits_tensor
    return (bits_per_channel * batch.fan_in * batch.kernel_volume).sum()


def macs_batched(batch: LayerBatch) -> torch.Tensor:
    """Batched :func:`macs`: Σ_layers kept channels · MACs per output channel."""
    return (batch.kept_channels * batch.macs_per_output_channel).sum()


def bitops_batched(batch: LayerBatch) -> torch.Tensor:
    """Batched :func:`bitops`: Σ_layers (Σ_a θ_a·a) · (Σ_p p·N_p) · MACs per output channel."""
    act = batch.input_probs @ batch.input_bits_tensor
    weight = batch.channels @ batch.weight_bits_tensor
    return (act * weight * batch.macs_per_output_channel).sum()


@register_cost("size", batched=size_batched)
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


@register_cost("macs", batched=macs_batched)
def macs(spec: LayerSpec) -> Number:
    """Return the expected multiply-accumulates, Σ_{p>0} N_p · MACs per output channel.

    Bias additions are not counted.

    Args:
        spec: The layer.

    Returns:
        MACs, an int for an all-int spec, otherwise a float or a 0-dim tensor.
    """
    return spec.kept_channels * spec.macs_per_output_channel


@register_cost("bitops", batched=bitops_batched)
def bitops(spec: LayerSpec) -> Number:
    """Return the expected EdMIPS bit operations, Σ_a θ_a·a · Σ_{p>0} p·N_p · MACs per channel.

    Args:
        spec: The layer.

    Returns:
        BitOps, an int for an all-int spec, otherwise a float or a 0-dim tensor.
    """
    return mixed_precision_sum(spec, lambda layer_macs, act, weight: layer_macs * (act * weight))

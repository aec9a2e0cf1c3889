# SPDX-License-Identifier: Apache-2.0
# Builds cost-model LayerSpecs from a graph analysis and per-group channel counts.
from __future__ import annotations

from collections.abc import Sequence

from zerobit.cost import LayerSpec, Number
from zerobit.graph.analysis import GraphAnalysis


def kept_channels(bits: Sequence[int], channels: Sequence[Number]) -> Number:
    """Count the channels not at 0 bits: sum of ``channels`` over non-zero ``bits``."""
    total: Number = 0
    for b, n in zip(bits, channels):
        if b != 0:
            total = total + n
    return total


def build_layer_specs(
    analysis: GraphAnalysis,
    group_bits: Sequence[tuple[int, ...]],
    group_channels: Sequence[Sequence[Number]],
    act_bits: Sequence[tuple[int, ...]],
    act_probs: Sequence[Sequence[Number]],
    detach_inputs: bool = False,
) -> list[LayerSpec]:
    """One LayerSpec per searchable layer.

    Args:
        analysis: The graph analysis the model was built from.
        group_bits: Candidate weight bits of each channel group.
        group_channels: Expected (or exact) channel count at each candidate, per group.
        act_bits: Candidate bits of each activation group.
        act_probs: Probability of each candidate, per activation group.
        detach_inputs: Detach the effective input channel counts (no gradient flows to the
            producers through a consumer's cost).

    Returns:
        The specs in graph order.
    """
    kept = [kept_channels(b, n) for b, n in zip(group_bits, group_channels)]
    specs = []
    for info in analysis.layers.values():
        in_channels: Number = 0
        for group, multiplier in info.input_channels:
            in_channels = in_channels + (multiplier if group is None else multiplier * kept[group])
        if detach_inputs and hasattr(in_channels, "detach"):
            in_channels = in_channels.detach()  # type: ignore[union-attr]
        act_group = analysis.points[info.input_point].group
        specs.append(
            LayerSpec(
                name=info.name,
                kind=info.kind,
                in_channels=in_channels,
                kernel_size=info.kernel_size,
                output_size=info.output_size,
                weight_bits=tuple(group_bits[info.group]),
                channels=tuple(group_channels[info.group]),
                input_bits=tuple(act_bits[act_group]),
                input_probs=tuple(act_probs[act_group]),
                groups=info.conv_groups,
            )
        )
    return specs

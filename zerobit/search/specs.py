# SPDX-License-Identifier: Apache-2.0
# Builds cost-model LayerSpecs from a graph analysis and per-group channel counts.
from __future__ import annotations

from collections.abc import Sequence

import torch

from zerobit.cost import LayerSpec, Number
from zerobit.cost.batch import LayerBatch
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
                float_output=info.output_point is None,
            )
        )
    return specs


class LayerBatchBuilder:
    """Builds a :class:`~zerobit.cost.batch.LayerBatch` from per-group probabilities.

    Everything that depends only on the graph (which group feeds which layer, the linear map from
    kept channels to effective input channels, the bit-width columns) is laid out once here, so
    that a search step turns its probabilities into a batch with a few tensor ops.

    Args:
        analysis: The graph analysis the model was built from.
        group_bits: Candidate weight bits of each channel group.
        act_bits: Candidate bits of each activation group.
    """

    def __init__(
        self,
        analysis: GraphAnalysis,
        group_bits: Sequence[tuple[int, ...]],
        act_bits: Sequence[tuple[int, ...]],
    ) -> None:
        layers = list(analysis.layers.values())
        self.weight_bits = tuple(sorted({b for bits in group_bits for b in bits}))
        self.input_bits = tuple(sorted({b for bits in act_bits for b in bits}))
        self._groups = len(group_bits)
        self._act_groups = len(act_bits)
        # Flat position of (group, candidate) in a (groups x union bits) table, per candidate row.
        width, act_width = len(self.weight_bits), len(self.input_bits)
        self._weight_slots = torch.tensor(
            [g * width + self.weight_bits.index(b) for g, bs in enumerate(group_bits) for b in bs]
        )
        self._act_slots = torch.tensor(
            [a * act_width + self.input_bits.index(b) for a, bs in enumerate(act_bits) for b in bs]
        )
        self._kept_mask = torch.tensor([float(b > 0) for b in self.weight_bits])
        self._layer_group = torch.tensor([info.group for info in layers])
        act_group = [analysis.points[info.input_point].group for info in layers]
        self._layer_act_group = torch.tensor(act_group)
        # in_channels = inputs_from_groups @ kept + constant_inputs
        self._inputs_from_groups = torch.zeros(len(layers), len(group_bits))
        self._constant_inputs = torch.zeros(len(layers))
        for row, info in enumerate(layers):
            for group, multiplier in info.input_channels:
                if group is None:
                    self._constant_inputs[row] += multiplier
                else:
                    self._inputs_from_groups[row, group] += multiplier
        self._static = dict(
            names=tuple(info.name for info in layers),
            kinds=tuple(info.kind for info in layers),
            kernel_sizes=tuple(info.kernel_size for info in layers),
            output_sizes=tuple(info.output_size for info in layers),
            groups=tuple(info.conv_groups for info in layers),
            layer_weight_bits=tuple(tuple(group_bits[info.group]) for info in layers),
            layer_input_bits=tuple(tuple(act_bits[a]) for a in act_group),
        )

    def _move(self, device: torch.device) -> None:
        for name in (
            "_weight_slots",
            "_act_slots",
            "_kept_mask",
            "_layer_group",
            "_layer_act_group",
            "_inputs_from_groups",
            "_constant_inputs",
        ):
            setattr(self, name, getattr(self, name).to(device))

    def build(
        self,
        group_channels: Sequence[torch.Tensor],
        act_probs: Sequence[torch.Tensor],
        detach_inputs: bool = False,
    ) -> LayerBatch:
        """Stack one step's expected counts into a batch.

        Args:
            group_channels: Per group, the (P_g,) expected channel count at each candidate.
            act_probs: Per activation group, the (A_g,) probability of each candidate.
            detach_inputs: Detach the effective input channel counts.

        Returns:
            The batch, differentiable w.r.t. the given tensors.
        """
        flat = torch.cat(list(group_channels))
        if flat.device != self._kept_mask.device:
            self._move(flat.device)
        table = flat.new_zeros(self._groups * len(self.weight_bits))
        table = table.index_add(0, self._weight_slots, flat).view(self._groups, -1)
        kept = table @ self._kept_mask
        in_channels = self._inputs_from_groups @ kept + self._constant_inputs
        if detach_inputs:
            in_channels = in_channels.detach()
        act_flat = torch.cat(list(act_probs))
        act_table = act_flat.new_zeros(self._act_groups * len(self.input_bits))
        act_table = act_table.index_add(0, self._act_slots, act_flat).view(self._act_groups, -1)
        return LayerBatch(
            **self._static,  # type: ignore[arg-type]
            weight_bits=self.weight_bits,
            input_bits=self.input_bits,
            in_channels=in_channels,
            channels=table.index_select(0, self._layer_group),
            input_probs=act_table.index_select(0, self._layer_act_group),
        )

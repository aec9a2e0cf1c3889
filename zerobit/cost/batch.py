# SPDX-License-Identifier: Apache-2.0
# LayerBatch: every layer of a model stacked into a few tensors, so that a cost model can price
# the whole network in a handful of vectorized ops during the search.
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TypeAlias

import torch

from zerobit.cost.spec import LayerSpec


@dataclass(frozen=True, eq=False)
class LayerBatch:
    """The layers of a model as stacked tensors, one row per layer.

    The batched twin of a list of :class:`~zerobit.cost.LayerSpec`: the static geometry is kept as
    tuples, the quantities the search differentiates are tensors. Candidate bit-widths are the
    union over the layers (``weight_bits``, ``input_bits``); a layer that lacks a candidate has a
    0 in that column, so a cost that is linear in the counts needs no masks. The per-layer
    candidates are kept (``layer_weight_bits``, ``layer_input_bits``) for validation.

    Attributes:
        names, kinds, kernel_sizes, output_sizes, groups: As the LayerSpec fields, per layer.
        layer_weight_bits, layer_input_bits: Each layer's own candidates.
        weight_bits: Union of the weight candidates, the columns of ``channels``.
        input_bits: Union of the input-activation candidates, the columns of ``input_probs``.
        in_channels: (L,) effective input channels Ĉ_in.
        channels: (L, len(weight_bits)) expected output channels at each weight bit-width.
        input_probs: (L, len(input_bits)) probability of each input bit-width.
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    output_sizes: tuple[tuple[int, ...], ...]
    groups: tuple[int, ...]
    layer_weight_bits: tuple[tuple[int, ...], ...]
    layer_input_bits: tuple[tuple[int, ...], ...]
    weight_bits: tuple[int, ...]
    input_bits: tuple[int, ...]
    in_channels: torch.Tensor
    channels: torch.Tensor
    input_probs: torch.Tensor

    def __post_init__(self) -> None:
        rows = len(self.names)
        if self.channels.shape != (rows, len(self.weight_bits)):
            raise ValueError(
                f"channels must be ({rows}, {len(self.weight_bits)}), got "
                f"{tuple(self.channels.shape)}"
            )
        if self.input_probs.shape != (rows, len(self.input_bits)):
            raise ValueError(
                f"input_probs must be ({rows}, {len(self.input_bits)}), got "
                f"{tuple(self.input_probs.shape)}"
            )
        if self.in_channels.shape != (rows,):
            raise ValueError(f"in_channels must be ({rows},), got {tuple(self.in_channels.shape)}")

    @classmethod
    def from_specs(cls, specs: Sequence[LayerSpec]) -> LayerBatch:
        """Stack LayerSpecs (numbers or 0-dim tensors) into a batch.

        Args:
            specs: At least one layer.

        Returns:
            The batch; gradients flow back to any tensor fields of the specs.
        """
        if not specs:
            raise ValueError("a LayerBatch needs at least one layer")
        weight_bits = tuple(sorted({b for s in specs for b in s.weight_bits}))
        input_bits = tuple(sorted({b for s in specs for b in s.input_bits}))
        zero = torch.zeros(())
        channels, probs = [], []
        for spec in specs:
            row = dict(zip(spec.weight_bits, spec.channels))
            channels.append(torch.stack([torch.as_tensor(row.get(b, zero)) for b in weight_bits]))
            prow = dict(zip(spec.input_bits, spec.input_probs))
            probs.append(torch.stack([torch.as_tensor(prow.get(b, zero)) for b in input_bits]))
        return cls(
            names=tuple(s.name for s in specs),
            kinds=tuple(s.kind for s in specs),
            kernel_sizes=tuple(s.kernel_size for s in specs),
            output_sizes=tuple(s.output_size for s in specs),
            groups=tuple(s.groups for s in specs),
            layer_weight_bits=tuple(s.weight_bits for s in specs),
            layer_input_bits=tuple(s.input_bits for s in specs),
            weight_bits=weight_bits,
            input_bits=input_bits,
            in_channels=torch.stack([torch.as_tensor(s.in_channels) for s in specs]).float(),
            channels=torch.stack(channels).float(),
            input_probs=torch.stack(probs).float(),
        )

    def _static(self, values: Sequence[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=self.channels.dtype, device=self.channels.device)

    @cached_property
    def weight_bits_tensor(self) -> torch.Tensor:
        """(B,) the weight candidates as floats."""
        return self._static(self.weight_bits)

    @cached_property
    def input_bits_tensor(self) -> torch.Tensor:
        """(A,) the input-activation candidates as floats."""
        return self._static(self.input_bits)

    @cached_property
    def kernel_volume(self) -> torch.Tensor:
        """(L,) kernel taps per layer."""
        return self._static([math.prod(k) for k in self.kernel_sizes])

    @cached_property
    def output_volume(self) -> torch.Tensor:
        """(L,) output positions per layer."""
        return self._static([math.prod(o) for o in self.output_sizes])

    @cached_property
    def fan_in(self) -> torch.Tensor:
        """(L,) input channels read by one output channel (1 for depthwise)."""
        depthwise = [k == "depthwise" for k in self.kinds]
        scale = self._static([0.0 if d else 1.0 / g for d, g in zip(depthwise, self.groups)])
        return self.in_channels * scale + self._static([float(d) for d in depthwise])

    @cached_property
    def macs_per_output_channel(self) -> torch.Tensor:
        """(L,) MACs of one kept output channel."""
        return self.fan_in * (self.kernel_volume * self.output_volume)

    @cached_property
    def kept_channels(self) -> torch.Tensor:
        """(L,) expected kept output channels (non-zero weight bits)."""
        return self.channels @ (self.weight_bits_tensor > 0).to(self.channels.dtype)

    def per_mac_sum(self, cost_per_mac: Mapping[tuple[int, int], float]) -> torch.Tensor:
        """Return Σ_layers Σ_a θ_a · Σ_{p>0} N_p · MACs per channel · c[a, p].

        Args:
            cost_per_mac: ``c`` keyed by ``(act_bits, weight_bits)``; only the pairs that some
                layer has (with weight bits > 0) are looked up.

        Returns:
            A 0-dim tensor.

        Raises:
            ValueError: If a layer has a pair the table lacks; the message names the layer.
        """
        used: set[tuple[int, int]] = set()
        for name, acts, weights in zip(self.names, self.layer_input_bits, self.layer_weight_bits):
            pairs = {(a, p) for a in acts for p in weights if p > 0}
            missing = sorted(pairs - set(cost_per_mac))
            if missing:
                raise ValueError(
                    f"layer {name!r}: the cost table has no entry for (act_bits, weight_bits) "
                    f"{missing}; it covers {sorted(cost_per_mac)}"
                )
            used |= pairs
        matrix = self._static(
            [
                cost_per_mac[(a, p)] if (a, p) in used else 0.0
                for a in self.input_bits
                for p in self.weight_bits
            ]
        ).view(len(self.input_bits), len(self.weight_bits))
        per_channel = self.input_probs @ matrix  # (L, B): expected cost of one MAC at bits p
        return ((per_channel * self.channels).sum(dim=1) * self.macs_per_output_channel).sum()


BatchedCost: TypeAlias = Callable[[LayerBatch], torch.Tensor]
"""The batched twin of a cost model: the whole model's cost from a :class:`LayerBatch`."""


def batched_cost(function: object) -> BatchedCost | None:
    """Return the batched twin of a cost function, or None if it has none.

    A function registered with ``register_cost(name, batched=...)`` and a
    :class:`~zerobit.cost.CostTable` have one; a plain user callable does not (the search then
    prices its layers one spec at a time).
    """
    batched = getattr(function, "batched", None)
    return batched if callable(batched) else None

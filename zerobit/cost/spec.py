# SPDX-License-Identifier: Apache-2.0
# LayerSpec: the typed description of one conv/linear layer that every cost model reads.
from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import torch

Number: TypeAlias = int | float | torch.Tensor
"""A count or probability: a Python number (discrete model) or a 0-dim tensor (search)."""

LAYER_KINDS = frozenset({"conv", "depthwise", "linear"})


def _is_number(value: object) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dim() == 0
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_index(value: object) -> object:
    # Accept int-likes (numpy ints, torch.Size entries); anything else is left for the checks.
    if isinstance(value, bool):
        return value
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return value


def _is_bits(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class LayerSpec:
    """One conv/linear layer as the cost models see it.

    Counts and probabilities may be Python numbers (a discrete model: the costs are then exact
    Python numbers) or 0-dim tensors carrying autograd (during the search: the costs are then
    0-dim tensors differentiable w.r.t. them). Tensor values are not range-checked, so that
    building a spec never synchronizes with an accelerator.

    Attributes:
        name: Layer name, used in error messages.
        kind: ``"conv"``, ``"depthwise"`` or ``"linear"``.
        in_channels: Effective number of input channels Ĉ_in seen by the layer (after a
            flatten, including the spatial multiplier).
        kernel_size: ``(kh, kw)`` for a 2-d conv, ``(k,)`` for a 1-d conv, ``()`` for linear.
        output_size: Spatial output dims, ``(H_o, W_o)``, ``(L_o,)`` or ``()`` for linear.
        weight_bits: Candidate weight bit-widths of the output channels, e.g. ``(0, 2, 4, 8)``;
            0 means pruned.
        channels: Expected number of output channels N_p at each ``weight_bits`` entry; they
            sum to C_out.
        input_bits: Candidate bit-widths of the layer's input activation, e.g. ``(8,)``.
        input_probs: Probability θ_a of each ``input_bits`` entry; they sum to 1.
        groups: Conv groups of a non-depthwise grouped conv (fan-in = in_channels / groups).
            Must be 1 for the other kinds.
        float_output: Whether the layer's output stays float (the logits of a graph output:
            dequantized rather than requantized). Only the ``flash`` cost reads it.
    """

    name: str
    kind: str
    in_channels: Number
    kernel_size: tuple[int, ...]
    output_size: tuple[int, ...]
    weight_bits: tuple[int, ...]
    channels: tuple[Number, ...]
    input_bits: tuple[int, ...]
    input_probs: tuple[Number, ...]
    groups: int = 1
    float_output: bool = False

    def __post_init__(self) -> None:
        where = f"layer {self.name!r}"
        self._coerce_sequences(where)
        if not isinstance(self.float_output, bool):
            raise ValueError(f"{where}: float_output must be a bool, got {self.float_output!r}")
        if self.kind not in LAYER_KINDS:
            raise ValueError(
                f"{where}: kind must be one of {sorted(LAYER_KINDS)}, got {self.kind!r}"
            )
        self._check_geometry(where)
        self._check_weights(where)
        self._check_inputs(where)

    def _coerce_sequences(self, where: str) -> None:
        # Store plain tuples whatever sequence was passed (lists, torch.Size), so specs compare
        # and hash consistently; int-like dims and bits become ints.
        for field in ("kernel_size", "output_size", "weight_bits", "input_bits"):
            object.__setattr__(
                self, field, tuple(_as_index(v) for v in self._sequence(field, where))
            )
        for field in ("channels", "input_probs"):
            object.__setattr__(self, field, self._sequence(field, where))

    def _sequence(self, field: str, where: str) -> tuple[object, ...]:
        value = getattr(self, field)
        if isinstance(value, str | torch.Tensor):
            raise ValueError(f"{where}: {field} must be a tuple, got {value!r}")
        try:
            return tuple(value)
        except TypeError:
            raise ValueError(f"{where}: {field} must be a tuple, got {value!r}") from None

    def _check_geometry(self, where: str) -> None:
        kernel, output = self.kernel_size, self.output_size
        if self.kind == "linear":
            if kernel or output:
                raise ValueError(
                    f"{where}: a linear layer has kernel_size=() and output_size=(), "
                    f"got {kernel} and {output}"
                )
        else:
            if not 1 <= len(kernel) <= 3 or len(output) != len(kernel):
                raise ValueError(
                    f"{where}: a {self.kind} layer needs 1 to 3 kernel dims and as many output "
                    f"dims, got kernel_size={kernel}, output_size={output}"
                )
        for dim in kernel + output:
            if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
                raise ValueError(
                    f"{where}: kernel and output dims must be positive ints, got {dim!r}"
                )
        if not isinstance(self.groups, int) or self.groups < 1:
            raise ValueError(f"{where}: groups must be a positive int, got {self.groups!r}")
        if self.groups != 1 and self.kind != "conv":
            raise ValueError(
                f"{where}: groups only applies to kind 'conv' (a depthwise layer is kind "
                f"'depthwise' with groups=1), got groups={self.groups} for kind {self.kind!r}"
            )
        if not _is_number(self.in_channels):
            raise ValueError(f"{where}: in_channels must be a number or a 0-dim tensor")
        if not isinstance(self.in_channels, torch.Tensor):
            if self.in_channels < 0:
                raise ValueError(f"{where}: in_channels must be >= 0, got {self.in_channels}")
            if isinstance(self.in_channels, int) and self.in_channels % self.groups:
                raise ValueError(
                    f"{where}: in_channels={self.in_channels} is not divisible by "
                    f"groups={self.groups}"
                )

    def _check_weights(self, where: str) -> None:
        if not self.weight_bits or len(self.weight_bits) != len(self.channels):
            raise ValueError(
                f"{where}: weight_bits and channels must be non-empty and of equal length, got "
                f"{len(self.weight_bits)} and {len(self.channels)}"
            )
        if not all(_is_bits(bits) for bits in self.weight_bits):
            raise ValueError(f"{where}: weight_bits must be ints >= 0, got {self.weight_bits}")
        if len(set(self.weight_bits)) != len(self.weight_bits):
            raise ValueError(f"{where}: weight_bits has duplicates: {self.weight_bits}")
        for count in self.channels:
            if not _is_number(count):
                raise ValueError(f"{where}: channels must be numbers or 0-dim tensors")
            if not isinstance(count, torch.Tensor) and count < 0:
                raise ValueError(f"{where}: channel counts must be >= 0, got {self.channels}")

    def _check_inputs(self, where: str) -> None:
        if not self.input_bits or len(self.input_bits) != len(self.input_probs):
            raise ValueError(
                f"{where}: input_bits and input_probs must be non-empty and of equal length, got "
                f"{len(self.input_bits)} and {len(self.input_probs)}"
            )
        if not all(_is_bits(bits) and bits > 0 for bits in self.input_bits):
            raise ValueError(f"{where}: input_bits must be ints >= 1, got {self.input_bits}")
        if len(set(self.input_bits)) != len(self.input_bits):
            raise ValueError(f"{where}: input_bits has duplicates: {self.input_bits}")
        if not all(_is_number(prob) for prob in self.input_probs):
            raise ValueError(f"{where}: input_probs must be numbers or 0-dim tensors")
        plain = [prob for prob in self.input_probs if not isinstance(prob, torch.Tensor)]
        if any(not 0 <= prob <= 1 for prob in plain):
            raise ValueError(f"{where}: input_probs must lie in [0, 1], got {self.input_probs}")
        if len(plain) == len(self.input_probs) and not math.isclose(sum(plain), 1, abs_tol=1e-6):
            raise ValueError(f"{where}: input_probs must sum to 1, got {self.input_probs}")

    @property
    def fan_in(self) -> Number:
        """Input channels read by one output channel: Ĉ_in / groups, or 1 for depthwise."""
        if self.kind == "depthwise":
            return 1
        if self.groups == 1:
            return self.in_channels
        if isinstance(self.in_channels, int):
            return self.in_channels // self.groups  # divisibility checked in __post_init__
        return self.in_channels / self.groups

    @property
    def kernel_volume(self) -> int:
        """Number of kernel taps, prod(kernel_size) (1 for linear)."""
        return math.prod(self.kernel_size)

    @property
    def output_volume(self) -> int:
        """Number of output positions, prod(output_size) (1 for linear)."""
        return math.prod(self.output_size)

    @property
    def macs_per_output_channel(self) -> Number:
        """MACs of one kept output channel: fan_in · prod(kernel_size) · prod(output_size)."""
        return self.fan_in * (self.kernel_volume * self.output_volume)

    @property
    def kept_channels(self) -> Number:
        """Expected number of kept output channels, Σ_{p>0} N_p."""
        total = zero_like(self)
        for bits, count in zip(self.weight_bits, self.channels):
            if bits > 0:
                total = total + count
        return total


def zero_like(spec: LayerSpec) -> Number:
    """Return 0 in the number type of ``spec``.

    A cost model starts its sums from this value, so that it returns a tensor whenever the spec
    holds one (even if every term is skipped, e.g. all channels at 0 bits) and a sum of costs
    can always be back-propagated.

    Args:
        spec: The layer.

    Returns:
        ``0`` (int) for an all-Python spec; otherwise a 0-dim zero tensor connected to the first
        tensor field, so that its gradient is 0 rather than missing.
    """
    for value in (spec.in_channels, *spec.channels, *spec.input_probs):
        if isinstance(value, torch.Tensor):
            return value * 0
    return 0


def mixed_precision_sum(spec: LayerSpec, term: Callable[[Number, int, int], Number]) -> Number:
    """Return Σ_a θ_a · Σ_{p>0} term(N_p · MACs per output channel, a, p).

    The common shape of every MAC-based cost: the expected MACs of each (input bits a, weight
    bits p) pair, weighted by a per-pair cost. 0-bit channels are skipped (they cost nothing).

    Args:
        spec: The layer.
        term: ``term(macs, act_bits, weight_bits)``, the cost of ``macs`` MACs at that pair.

    Returns:
        The expected cost, a Python number or a 0-dim tensor.
    """
    macs_per_channel = spec.macs_per_output_channel
    total = zero_like(spec)
    for act_bits, prob in zip(spec.input_bits, spec.input_probs):
        inner = zero_like(spec)
        for weight_bits, count in zip(spec.weight_bits, spec.channels):
            if weight_bits > 0:
                inner = inner + term(count * macs_per_channel, act_bits, weight_bits)
        total = total + prob * inner
    return total

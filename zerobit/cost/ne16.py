# SPDX-License-Identifier: Apache-2.0
# NE16 cost model: analytical latency of the GreenWaves/PULP NE16 accelerator, in cycles.
from __future__ import annotations

import functools
from typing import Literal

import torch

from zerobit.cost.batch import LayerBatch
from zerobit.cost.registry import register_cost
from zerobit.cost.spec import LayerSpec, Number, zero_like

# Hardware constants of the model (spec §4.4).
INPUT_BUFFER = (5, 5, 16)  # H, W, K: input-channel block of 16
OUTPUT_BUFFER = (3, 3, 32)  # H, W, K: 3x3 spatial tile, output-channel block of 32
FIFO_LATENCY = 6
MEMORY_THROUGHPUT = 256  # bits per cycle
ACTIVATION_BITS = 8  # input and output activations
NORMQUANT_SCALE_BITS = 32
MULTIPLIERS = 4
UPDATE_IDX_LATENCY = 2
MAX_WEIGHT_BITS = 8

Mode = Literal["3x3", "1x1", "depthwise"]


def _exact_ceil_div(a: int, b: int) -> int:
    return (a - 1) // b + 1


# Stage latencies that do not depend on the layer (every term is a constant of the hardware).
_LOAD_1X1 = 10 + OUTPUT_BUFFER[0] * OUTPUT_BUFFER[1] * _exact_ceil_div(
    INPUT_BUFFER[2] * ACTIVATION_BITS, MEMORY_THROUGHPUT
)
_LOAD_3X3 = FIFO_LATENCY + INPUT_BUFFER[0] * INPUT_BUFFER[1] * _exact_ceil_div(
    INPUT_BUFFER[2] * ACTIVATION_BITS, MEMORY_THROUGHPUT
)
_STREAM_OUT = (
    3
    + OUTPUT_BUFFER[0]
    * OUTPUT_BUFFER[1]
    * _exact_ceil_div(OUTPUT_BUFFER[2] * ACTIVATION_BITS, MEMORY_THROUGHPUT)
    + 1
)


def _straight_through(exact: torch.Tensor, x: torch.Tensor, divisor: int) -> torch.Tensor:
    # Forward value `exact`; gradient 1/divisor, the mean slope of a staircase of step `divisor`
    # (the paper-era code used slope 1, which inflates gradients up to 32x, spec §7.2 item 8).
    if not x.is_floating_point():
        return exact
    scaled = x / divisor
    return exact + (scaled - scaled.detach())


def floor_div(x: Number, divisor: int) -> Number:
    """Return ⌊x / divisor⌋ exactly; a tensor ``x`` gets gradient 1/divisor.

    Args:
        x: The numerator.
        divisor: A positive int.

    Returns:
        An int for an int ``x``, a float for a float, otherwise a 0-dim tensor.
    """
    if isinstance(x, torch.Tensor):
        exact = torch.div(x.detach(), divisor, rounding_mode="floor")
        return _straight_through(exact, x, divisor)
    return x // divisor


def ceil_div(x: Number, divisor: int) -> Number:
    """Return cd(x, divisor) = ⌊(x - 1) / divisor⌋ + 1 exactly; gradient 1/divisor.

    This is the model's definition, which equals ⌈x / divisor⌉ for integer ``x``.

    Args:
        x: The numerator.
        divisor: A positive int.

    Returns:
        An int for an int ``x``, a float for a float, otherwise a 0-dim tensor.
    """
    return floor_div(x - 1, divisor) + 1


def mod(x: Number, divisor: int) -> Number:
    """Return x mod divisor exactly; a tensor ``x`` gets gradient 1/divisor (Part A item 11).

    Args:
        x: The numerator.
        divisor: A positive int.

    Returns:
        An int for an int ``x``, a float for a float, otherwise a 0-dim tensor.
    """
    if isinstance(x, torch.Tensor):
        return _straight_through(torch.remainder(x.detach(), divisor), x, divisor)
    return x % divisor


def _if_nonzero(condition: Number, value: Number, soft: bool = False) -> Number:
    """Return ``value`` where ``condition != 0``, else 0, without a host sync for tensors.

    With ``soft``, a floating-point ``condition`` (a remainder of channels, >= 0) weights
    ``value`` by ``min(condition, 1)`` instead: the same on whole counts, and for a fraction of a
    channel the first-order expectation (a bit-width holding a total probability m < 1 is
    present in a sampled architecture with probability about m), not a whole iteration.
    """
    if soft and isinstance(condition, torch.Tensor) and condition.is_floating_point():
        return torch.clamp(condition, 0.0, 1.0) * value
    if soft and isinstance(condition, float):
        return min(max(condition, 0.0), 1.0) * value
    if isinstance(condition, torch.Tensor):
        value_tensor = torch.as_tensor(value)
        return torch.where(condition != 0, value_tensor, torch.zeros_like(value_tensor))
    return value if condition != 0 else 0


def _iteration(out_channels: Number, mode: Mode, bits: Number, input_blocks: Number) -> Number:
    """Cycles of one spatial tile for one block of ``out_channels`` output channels."""
    norm_quant = 9 + ceil_div(out_channels * (NORMQUANT_SCALE_BITS // 8), MULTIPLIERS)
    if mode == "depthwise":
        weight_offset = FIFO_LATENCY + out_channels
        matvec = FIFO_LATENCY + out_channels * bits
        return _LOAD_3X3 + weight_offset + matvec + UPDATE_IDX_LATENCY + norm_quant + _STREAM_OUT
    if mode == "1x1":
        load, matvec = _LOAD_1X1, FIFO_LATENCY + out_channels  # 1x1 mode is not bit-serial
    else:
        load, matvec = _LOAD_3X3, FIFO_LATENCY + out_channels * bits
    per_input_block = load + FIFO_LATENCY + matvec + UPDATE_IDX_LATENCY
    return input_blocks * per_input_block + norm_quant + _STREAM_OUT


def ne16_mode_latency(
    output_size: tuple[int, int],
    out_channels: Number,
    in_channels: Number,
    weight_bits: int,
    mode: Mode,
    soft: bool = False,
) -> Number:
    """Cycles of one NE16 pass over a whole layer in one mode (one 3×3 or 1×1 kernel slice).

    Implements ``n_sp · (n_full · Iteration(K_b) + [r ≠ 0] · Iteration(r))`` of spec §4.4;
    with ``soft``, ``[r ≠ 0]`` is ``min(r, 1)`` for a fractional ``r`` (see ``ne16_soft``).

    Args:
        output_size: ``(H_o, W_o)``.
        out_channels: K_o, the output channels of this pass.
        in_channels: K_i, the input channels (unused in depthwise mode).
        weight_bits: Weight bit-width b, from 1 to 8.
        mode: ``"3x3"``, ``"1x1"`` or ``"depthwise"``.
        soft: Weight the last, partial block by its fraction of a channel when below one.

    Returns:
        Cycles: an int for int channel counts, otherwise a float or a 0-dim tensor.

    Raises:
        ValueError: For an unknown mode.
    """
    if mode not in ("3x3", "1x1", "depthwise"):
        raise ValueError(f"NE16 mode must be '3x3', '1x1' or 'depthwise', got {mode!r}")
    block = INPUT_BUFFER[2] if mode == "depthwise" else OUTPUT_BUFFER[2]
    full_blocks = floor_div(out_channels, block)
    remainder = mod(out_channels, block)
    input_blocks = ceil_div(in_channels, INPUT_BUFFER[2])
    # Spatial tiles are counted on the exact ints: there is nothing to differentiate.
    tiles = _exact_ceil_div(output_size[0], OUTPUT_BUFFER[0]) * _exact_ceil_div(
        output_size[1], OUTPUT_BUFFER[1]
    )
    body = full_blocks * _iteration(block, mode, weight_bits, input_blocks)
    tail = _if_nonzero(remainder, _iteration(remainder, mode, weight_bits, input_blocks), soft)
    return tiles * (body + tail)


def ne16_kernel_passes(kernel_size: tuple[int, int]) -> tuple[int, int]:
    """Split a kh×kw kernel into NE16 passes.

    Args:
        kernel_size: ``(kh, kw)``.

    Returns:
        ``(n3, n1)``: passes in 3×3 mode, ⌊kh/3⌋·⌊kw/3⌋, and in 1×1 mode,
        (kh mod 3)·kw + (kw mod 3)·kh − (kh mod 3)·(kw mod 3). E.g. 10×4 gives (3, 13).
    """
    kh, kw = kernel_size
    return (kh // 3) * (kw // 3), (kh % 3) * kw + (kw % 3) * kh - (kh % 3) * (kw % 3)


def ne16_latency(
    output_size: tuple[int, int],
    kernel_size: tuple[int, int],
    out_channels: Number,
    in_channels: Number,
    weight_bits: int,
    depthwise: bool = False,
    soft: bool = False,
) -> Number:
    """NE16 cycles of one layer whose output channels all have ``weight_bits`` bits.

    The kernel runs as ``n3`` passes in 3×3 mode plus ``n1`` in 1×1 mode (see
    :func:`ne16_kernel_passes`), each over the whole output. Every pass of a depthwise layer
    runs in depthwise mode: spec §4.4 only defines 3×3 depthwise kernels, and the paper-era code
    would model the 1×1 slices of a larger depthwise kernel as dense convs.

    Args:
        output_size: ``(H_o, W_o)``.
        kernel_size: ``(kh, kw)``.
        out_channels: K_o.
        in_channels: K_i.
        weight_bits: Weight bit-width b, from 1 to 8.
        depthwise: Whether the layer is depthwise.
        soft: See :func:`ne16_mode_latency`.

    Returns:
        Cycles: an int for int channel counts, otherwise a float or a 0-dim tensor.

    Raises:
        ValueError: If ``weight_bits`` is outside 1..8 or a size is not a pair of positive ints.
    """
    if not 1 <= weight_bits <= MAX_WEIGHT_BITS:
        raise ValueError(f"NE16 weights have 1 to {MAX_WEIGHT_BITS} bits, got {weight_bits}")
    for name, dims in (("output_size", output_size), ("kernel_size", kernel_size)):
        if len(dims) != 2 or min(dims) < 1:
            raise ValueError(f"NE16 {name} must be two positive ints, got {dims}")
    passes_3x3, passes_1x1 = ne16_kernel_passes(kernel_size)
    modes: tuple[Mode, Mode] = ("depthwise", "depthwise") if depthwise else ("3x3", "1x1")
    total: Number = 0
    for passes, mode in zip((passes_3x3, passes_1x1), modes):
        if passes:
            pass_latency = ne16_mode_latency(
                output_size, out_channels, in_channels, weight_bits, mode, soft
            )
            total = total + passes * pass_latency
    return total


def _check_layer(
    where: str,
    kind: str,
    groups: int,
    kernel_size: tuple[int, ...],
    weight_bits: tuple[int, ...],
    input_bits: tuple[int, ...],
) -> None:
    if tuple(input_bits) != (ACTIVATION_BITS,):
        raise ValueError(
            f"{where}: the NE16 model needs 8-bit input activations (input_bits=(8,)), "
            f"got input_bits={input_bits}"
        )
    if max(weight_bits) > MAX_WEIGHT_BITS:
        raise ValueError(
            f"{where}: NE16 weights have at most {MAX_WEIGHT_BITS} bits, got {weight_bits}"
        )
    if groups != 1:
        raise ValueError(f"{where}: the NE16 model has no grouped convs (groups={groups})")
    if len(kernel_size) > 2:
        raise ValueError(f"{where}: the NE16 model has no 3-d convs")


def _as_2d(dims: tuple[int, ...]) -> tuple[int, int]:
    # Pad 1-d and linear layers to 2-d: (k,) -> (1, k), () -> (1, 1).
    padded = (1, 1, *dims)[-2:]
    return padded[0], padded[1]


def ne16_batched(batch: LayerBatch, soft: bool = False) -> torch.Tensor:
    """Batched :func:`ne16`: every (layer, non-zero bit-width) sub-layer priced at once.

    The same formulas as :func:`ne16_mode_latency`, evaluated elementwise on an
    (L, bit-widths) grid; each layer's passes in 3×3, 1×1 and depthwise mode weight the three
    mode latencies.
    """
    coefficients: dict[Mode, list[float]] = {"3x3": [], "1x1": [], "depthwise": []}
    tiles = []
    for where, kind, groups, kernel, output, w_bits, a_bits in zip(
        batch.names,
        batch.kinds,
        batch.groups,
        batch.kernel_sizes,
        batch.output_sizes,
        batch.layer_weight_bits,
        batch.layer_input_bits,
    ):
        _check_layer(f"layer {where!r}", kind, groups, kernel, w_bits, a_bits)
        passes_3x3, passes_1x1 = ne16_kernel_passes(_as_2d(kernel))
        depthwise = kind == "depthwise"
        coefficients["3x3"].append(0.0 if depthwise else passes_3x3)
        coefficients["1x1"].append(0.0 if depthwise else passes_1x1)
        coefficients["depthwise"].append(passes_3x3 + passes_1x1 if depthwise else 0.0)
        out_h, out_w = _as_2d(output)
        tiles.append(
            _exact_ceil_div(out_h, OUTPUT_BUFFER[0]) * _exact_ceil_div(out_w, OUTPUT_BUFFER[1])
        )
    nonzero = [i for i, bits in enumerate(batch.weight_bits) if bits > 0]
    like = batch.channels
    channels = like[:, nonzero]  # (L, B')
    bits = torch.tensor([batch.weight_bits[i] for i in nonzero], dtype=like.dtype)
    input_blocks = torch.as_tensor(ceil_div(batch.in_channels, INPUT_BUFFER[2])).unsqueeze(1)
    total = torch.zeros_like(channels)
    for mode, values in coefficients.items():
        if not any(values):
            continue
        block = INPUT_BUFFER[2] if mode == "depthwise" else OUTPUT_BUFFER[2]
        full_blocks = floor_div(channels, block)
        remainder = mod(channels, block)
        body = full_blocks * _iteration(block, mode, bits, input_blocks)
        tail = _if_nonzero(remainder, _iteration(remainder, mode, bits, input_blocks), soft)
        weight = torch.tensor(values, dtype=like.dtype).unsqueeze(1)
        total = total + weight * (body + tail)
    per_layer_tiles = torch.tensor(tiles, dtype=like.dtype).unsqueeze(1)
    return (total * per_layer_tiles).sum()


@register_cost("ne16", batched=ne16_batched)
def ne16(spec: LayerSpec) -> Number:
    """Return the expected NE16 cycles, Σ_{p>0} NE16(H_o, W_o, K_o=N_p, K_i=Ĉ_in, k, b=p).

    Each non-zero weight bit-width runs as its own sub-layer (one launch per bit-width group).
    A linear layer is a 1×1 conv with a 1×1 output; a conv1d with kernel (k,) and output (L,)
    is a (1, k) conv with a (1, L) output. ``floor``, ceil-division and ``mod`` are exact in the
    forward pass and back-propagate slope 1/N; the ``[r != 0]`` branch is piecewise.

    Args:
        spec: The layer; input activations must be 8 bits (``input_bits == (8,)``).

    Returns:
        Cycles: an int for an all-int spec, otherwise a float or a 0-dim tensor.

    Raises:
        ValueError: For input activations other than 8 bits, weights above 8 bits, a grouped
            (non-depthwise) conv or a 3-d conv.
    """
    return _ne16(spec, soft=False)


@register_cost("ne16_soft", batched=functools.partial(ne16_batched, soft=True))
def ne16_soft(spec: LayerSpec) -> Number:
    """:func:`ne16` with the partial-block branch ``[r != 0]`` weighted by ``min(r, 1)``.

    Equal to :func:`ne16` whenever the channel counts are whole (every discrete architecture,
    so every reported cost and budget check). During the search the counts are expected
    values: a bit-width that keeps a sliver of probability has a fractional remainder, which
    :func:`ne16` charges a whole tile iteration for, so that cost stays above the argmax model's
    at any temperature. ``ne16_soft`` charges that fraction of it, the first-order expectation
    over sampled architectures, and lets the search see the saving of emptying a bit-width.

    Args:
        spec: As for :func:`ne16`.

    Returns:
        Cycles, as for :func:`ne16`.
    """
    return _ne16(spec, soft=True)


def _ne16(spec: LayerSpec, soft: bool) -> Number:
    _check_layer(
        f"layer {spec.name!r}",
        spec.kind,
        spec.groups,
        spec.kernel_size,
        spec.weight_bits,
        spec.input_bits,
    )
    kernel, output = _as_2d(spec.kernel_size), _as_2d(spec.output_size)
    total = zero_like(spec)
    for bits, count in zip(spec.weight_bits, spec.channels):
        if bits > 0:
            latency = ne16_latency(
                (output[0], output[1]),
                (kernel[0], kernel[1]),
                count,
                spec.in_channels,
                bits,
                depthwise=spec.kind == "depthwise",
                soft=soft,
            )
            total = total + latency
    return total

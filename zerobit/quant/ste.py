# SPDX-License-Identifier: Apache-2.0
# Fused straight-through autograd functions for the search: one Function per call, whatever |P|.
"""Straight-through estimators for the mixed-precision search.

Each mixture over candidate bit-widths is one :class:`torch.autograd.Function`: the backward
pass recomputes what it needs from the saved input instead of keeping one quantized copy per
candidate, so a mixture saves one tensor (like ``relu``) and builds no per-candidate graph. On
the CPU the activation mixture runs fused C++ kernels, one pass over the tensor per direction
(:mod:`zerobit.quant._native`, compiled at first use); elsewhere, or when they cannot be built or
``ZEROBIT_NATIVE=0``, it loops over the few candidates with in-place passes on reused buffers,
slice by slice so that the data stays in cache. Both paths give the same forward values bit for
bit and the same ``dL/dx``; the clip and probability gradients, sums over the tensor, agree to
the rounding of the summation order.

Gradient rules (zerobit Part A items 6-8, spec §2.3, §7.2 items 3 and 5):

* Weights: ``dL/dW = dL/dW_eff`` (identity through every candidate, 0 bits included, no clipping
  mask); ``dL/dtheta[p, c] = sum over channel c of g * Q_p(W)[c]``; nothing flows into the scale.
* Activations (LSQ-style, per candidate q with ``u = x / s_q``): ``dL/dx = g * sum_q theta_q *
  1[lo_q < u < hi_q]``; ``dL/dtheta_q = sum g * fq_q(x)``; ``dL/dclip_q = theta_q / hi_q * sum g *
  (round(u) - u inside, the clamped code lo_q or hi_q outside)``.
* Bias: slope ``keep`` with respect to ``b``, ``dL/dkeep = g * b_q``, nothing through the scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor

from zerobit.quant import _native
from zerobit.quant.primitives import (
    _bias_codes,
    _per_channel,
    _uniform_levels,
    _weight_grid,
    act_range,
    candidate_weight_ranges,
    check_act_bits,
    check_weight_bits,
    weight_levels,
)

__all__ = [
    "fake_quant_act",
    "mixed_act_quant",
    "mixed_weight_quant",
    "quantize_bias_ste",
    "round_ste",
]

_hardtanh_backward_out = torch.ops.aten.hardtanh_backward.grad_input


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad


def round_ste(x: Tensor) -> Tensor:
    """Round half to even in the forward pass, identity in the backward pass.

    Args:
        x: Float, any shape.

    Returns:
        ``torch.round(x)``, same shape and dtype; its gradient passes to ``x`` unchanged.
    """
    return cast(Tensor, _RoundSTE.apply(x))


def _weight_candidates(
    weight: Tensor, bits: Sequence[int], ranges: Tensor
) -> list[tuple[Tensor, Tensor] | None]:
    """Float codes and scales of each candidate, None for the 0-bit one (Q_0 = 0)."""
    return [
        None if bit == 0 else _weight_grid(weight, _uniform_levels(weight, bit), ranges[index])
        for index, bit in enumerate(bits)
    ]


class _MixedWeightQuant(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, weight: Tensor, probs: Tensor, bits: tuple[int, ...], ranges: Tensor
    ) -> Tensor:
        ctx.save_for_backward(weight, ranges)
        ctx.bits = bits
        ctx.native = _native.supports_weight(weight, probs, ranges)
        if ctx.native:
            levels = [weight_levels(bit) for bit in bits]
            return _native.weight_forward(weight, probs, levels, ranges)
        mixed = torch.zeros_like(weight)
        theta = probs.detach()
        for index, grid in enumerate(_weight_candidates(weight, bits, ranges)):
            if grid is not None:
                codes, scale = grid
                mixed.add_(codes.mul_(_per_channel(theta[index] * scale, weight)))
        return mixed

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        weight, ranges = ctx.saved_tensors
        grad_probs = None
        if ctx.needs_input_grad[1] and ctx.native and grad.dtype == weight.dtype:
            levels = [weight_levels(bit) for bit in ctx.bits]
            grad_probs = _native.weight_backward(weight, grad, levels, ranges)
        elif ctx.needs_input_grad[1]:
            rows = []
            for grid in _weight_candidates(weight, ctx.bits, ranges):
                if grid is None:
                    rows.append(grad.new_zeros(weight.shape[0]))
                else:
                    codes, scale = grid
                    rows.append((grad * codes).reshape(weight.shape[0], -1).sum(dim=1) * scale)
            grad_probs = torch.stack(rows)
        return (grad if ctx.needs_input_grad[0] else None), grad_probs, None, None


def mixed_weight_quant(
    weight: Tensor,
    probs: Tensor,
    bits: Sequence[int],
    weight_range: str = "minmax",
    ranges: Tensor | None = None,
) -> Tensor:
    """Return the effective weights ``W_eff[c] = sum_p probs[p, c] * Q_p(W)[c]``, with Q_0 = 0.

    ``Q_p`` is the narrow-range symmetric per-channel quantizer of
    :func:`zerobit.quant.fake_quantize_weight` with the range rule ``weight_range``. The sum
    runs over the candidates in order, each term computed as ``(probs[p, c] * s_{p,c}) *
    codes_p`` (products rounded in the weight dtype), so a one-hot column gives exactly
    ``s_{p,c} * codes_p``. Backward: ``dL/dW = dL/dW_eff`` (straight-through identity for every
    candidate, equal to ``sum_p probs[p, c] * g`` when a column sums to 1); ``dL/dprobs[p, c] =
    sum over channel c of g * Q_p(W)[c]``; the channel ranges are detached.

    Args:
        weight: Float (C_out, ...) latent weights.
        probs: Float (P, C_out), the per-channel probabilities over ``bits`` (per-layer
            probabilities: expand a (P, 1) tensor).
        bits: The P candidate bit-widths, each 0 or 2..8.
        weight_range: One of :data:`zerobit.quant.WEIGHT_RANGES`.
        ranges: ``candidate_weight_ranges(weight, bits, weight_range)`` if already computed
            (the searchable layer shares them with its bias scale), (P, C_out).

    Returns:
        ``weight.dtype``, shaped like ``weight``.

    Raises:
        ValueError: If a bit-width or the range rule is invalid or the shapes do not match.
    """
    bits = tuple(bits)
    if not bits:
        raise ValueError("bits must name at least one candidate")
    for bit in bits:
        check_weight_bits(bit)
    if weight.dim() == 0 or probs.shape != (len(bits), weight.shape[0]):
        raise ValueError(
            f"probs must have shape (len(bits), C_out) = ({len(bits)}, "
            f"{weight.shape[0] if weight.dim() else '?'}), got {tuple(probs.shape)}"
        )
    if ranges is None:
        ranges = candidate_weight_ranges(weight, bits, weight_range)
    elif ranges.shape != probs.shape:
        raise ValueError(
            f"ranges must have shape {tuple(probs.shape)} like probs, got {tuple(ranges.shape)}"
        )
    return cast(Tensor, _MixedWeightQuant.apply(weight, probs, bits, ranges.detach()))


# The candidates' passes run slice by slice, so that each slice of x, g and the temporaries is
# reused from cache instead of being streamed from memory once per pass: on the 2-core CPU this
# halves the backward time of a (128, 16, 28, 28) tensor against whole-tensor passes.
_SLICE_BYTES = 1 << 20


def _slice_length(x: Tensor) -> int:
    return max(1, _SLICE_BYTES // x.element_size())


def _act_forward(
    x: Tensor, ranges: list[tuple[int, int]], scales: list[float], weights: list[float]
) -> Tensor:
    """Sum over the candidates with ``weights[q] != 0`` of ``weights[q] * codes_q``, like x."""
    active = [q for q, weight in enumerate(weights) if weight != 0.0]
    if not active:
        return torch.zeros_like(x)
    if _native.supports(x):
        return _native.act_forward(
            x,
            [scales[q] for q in active],
            [ranges[q] for q in active],
            [weights[q] for q in active],
        )
    flat = x.reshape(-1)
    mixed = torch.empty_like(flat)
    length = _slice_length(x)
    buffer = flat.new_empty(min(length, flat.numel())) if len(active) > 1 else None
    for start in range(0, flat.numel(), length):
        source, target = flat[start : start + length], mixed[start : start + length]
        for index, q in enumerate(active):
            low, high = ranges[q]
            out = target if index == 0 else cast(Tensor, buffer)[: source.numel()]
            torch.div(source, scales[q], out=out).round_().clamp_(low, high).mul_(weights[q])
            if index:
                target.add_(out)
    return mixed.view(x.shape)


def _act_backward(
    ctx: Any, x: Tensor, grad: Tensor, need_x: bool, need_clips: bool, need_probs: bool
) -> tuple[Tensor | None, Tensor]:
    """Return dL/dx (like x) and, per candidate, ``(sum g * codes, sum g * d)``, float64 (Q, 2)."""
    if _native.supports(x) and grad.dtype == x.dtype and grad.device == x.device:
        needs = (need_x, need_clips, need_probs)
        return _native.act_backward(x, grad, ctx.scales, ctx.ranges, ctx.theta, needs)
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    length = _slice_length(x)
    grad_x = torch.empty_like(flat_x) if need_x else None
    partial = flat_x.new_zeros((flat_x.numel() + length - 1) // length, len(ctx.ranges), 2)
    scaled, codes, temporary = (flat_x.new_empty(min(length, flat_x.numel())) for _ in range(3))
    for chunk, start in enumerate(range(0, flat_x.numel(), length)):
        source, grad_slice = flat_x[start : start + length], flat_grad[start : start + length]
        size = source.numel()
        u, c, tmp = scaled[:size], codes[:size], temporary[:size]
        grad_x_slice = None if grad_x is None else grad_x[start : start + length]
        first = True
        for q, (low, high) in enumerate(ctx.ranges):
            theta = ctx.theta[q]
            want_codes = need_probs or (theta != 0.0 and need_clips)
            if not (want_codes or (theta != 0.0 and grad_x_slice is not None)):
                continue
            torch.div(source, ctx.scales[q], out=u)
            if want_codes:
                torch.clamp(u, low, high, out=c).round_()
                if need_probs:
                    torch.dot(grad_slice, c, out=partial[chunk, q, 0])
                if theta != 0.0 and need_clips:
                    # d = c - u inside the range, the clamped code outside; formed elementwise
                    # (exactly: Sterbenz) so the clip gradient is not a difference of large sums.
                    c.sub_(_hardtanh_backward_out(u, u, low, high, grad_input=tmp))
                    torch.dot(grad_slice, c, out=partial[chunk, q, 1])
            if theta != 0.0 and grad_x_slice is not None:
                if first:
                    _hardtanh_backward_out(grad_slice, u, low, high, grad_input=grad_x_slice)
                    if theta != 1.0:
                        grad_x_slice.mul_(theta)
                    first = False
                else:
                    _hardtanh_backward_out(grad_slice, u, low, high, grad_input=tmp)
                    grad_x_slice.add_(tmp, alpha=theta)
        if first and grad_x_slice is not None:
            grad_x_slice.zero_()
    sums = partial.sum(dim=0, dtype=torch.float64)
    return (None if grad_x is None else grad_x.view(x.shape)), sums


class _MixedActQuant(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, clips: Tensor, probs: Tensor, bits: tuple[int, ...], signed: bool
    ) -> Tensor:
        ranges = [act_range(bit, signed) for bit in bits]
        highs = torch.tensor([high for _, high in ranges], dtype=clips.dtype, device=clips.device)
        scales = clips.detach() / highs
        # Python floats (exact copies of the tensor values) select the scalar kernels and let
        # zero-probability candidates be skipped without touching memory; checking them in
        # Python saves tensor ops, each costly next to these few numbers (NaN fails too).
        ctx.ranges, ctx.scales, ctx.theta = ranges, scales.tolist(), probs.detach().tolist()
        if not all(scale > 0 for scale in ctx.scales):
            raise ValueError(f"activation clips must be > 0, got {clips.detach().tolist()}")
        ctx.clips_dtype, ctx.probs_dtype = clips.dtype, probs.dtype
        ctx.devices = clips.device, probs.device
        ctx.save_for_backward(x)
        weights = (probs.detach() * scales).tolist()
        return _act_forward(x, ranges, ctx.scales, weights)

    @staticmethod
    def backward(
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        (x,) = ctx.saved_tensors
        need_x, need_clips, need_probs = ctx.needs_input_grad[:3]
        grad_x, sums = _act_backward(ctx, x, grad, need_x, need_clips, need_probs)
        # float64 products in Python, rounded once to the parameters' dtypes by torch.tensor.
        rows = sums.tolist()
        grad_clips = grad_probs = None
        if need_clips:
            clip_values = [
                d_sum * (theta / high)
                for (_, d_sum), theta, (_, high) in zip(rows, ctx.theta, ctx.ranges)
            ]
            grad_clips = torch.tensor(clip_values, dtype=ctx.clips_dtype, device=ctx.devices[0])
        if need_probs:
            probs_values = [codes_sum * scale for (codes_sum, _), scale in zip(rows, ctx.scales)]
            grad_probs = torch.tensor(probs_values, dtype=ctx.probs_dtype, device=ctx.devices[1])
        return grad_x, grad_clips, grad_probs, None, None


def _check_act_args(x: Tensor, clips: Tensor, probs: Tensor, bits: tuple[int, ...]) -> None:
    if not bits:
        raise ValueError("bits must name at least one candidate")
    for bit in bits:
        check_act_bits(bit)
    if clips.shape != (len(bits),) or probs.shape != (len(bits),):
        raise ValueError(
            f"clips and probs must have shape (len(bits),) = ({len(bits)},), got "
            f"{tuple(clips.shape)} and {tuple(probs.shape)}"
        )
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be a float tensor, got {x.dtype}")


def mixed_act_quant(
    x: Tensor, clips: Tensor, probs: Tensor, bits: Sequence[int], signed: bool
) -> Tensor:
    """Return ``y = sum_q probs[q] * fq_q(x)``, a mixture of per-tensor activation quantizers.

    ``fq_q(x) = s_q * clamp(round_half_even(x / s_q), lo_q, hi_q)`` with ``s_q = clips[q] / hi_q``
    (:func:`zerobit.quant.fake_quantize_act`). The sum runs over the candidates in order, each
    term computed as ``(probs[q] * s_q) * codes_q`` with the product rounded in the dtype of
    ``probs``; candidates with ``probs[q] == 0`` are skipped, so a one-hot ``probs`` costs one
    candidate and gives exactly ``fq_q(x)``. The backward pass (LSQ-style, ``u = x / s_q``):

    * ``dL/dx = g * sum_q probs[q] * 1[lo_q < u < hi_q]`` (open interval);
    * ``dL/dprobs[q] = sum g * fq_q(x)``, for every candidate (also the skipped ones), when
      ``probs`` requires a gradient;
    * ``dL/dclips[q] = probs[q] / hi_q * sum g * d_q`` with ``d_q = round(u) - u`` where
      ``lo_q < u < hi_q`` and the clamped code (``lo_q`` or ``hi_q``) elsewhere.

    Only ``x`` is saved for the backward pass. Contiguous inputs avoid a copy there.

    Args:
        x: Float, any shape.
        clips: Float (Q,), one learned clip per candidate, each > 0.
        probs: Float (Q,), the probabilities over the candidates.
        bits: The Q candidate bit-widths, each 2..8.
        signed: Whether the quantizers are signed (see :func:`zerobit.quant.act_range`).

    Returns:
        ``x.dtype``, shaped like ``x``.

    Raises:
        ValueError: If a bit-width or shape is invalid or a clip is not positive.
    """
    bits = tuple(bits)
    _check_act_args(x, clips, probs, bits)
    return cast(Tensor, _MixedActQuant.apply(x, clips, probs, bits, bool(signed)))


def fake_quant_act(x: Tensor, clip: Tensor, bits: int, signed: bool) -> Tensor:
    """Fake-quantize activations with one learned clip (gradients of :func:`mixed_act_quant`).

    Args:
        x: Float, any shape.
        clip: Float, 0-dim or (1,), the learned clip ``beta > 0``.
        bits: Activation bit-width (2..8).
        signed: Whether the quantizer is signed.

    Returns:
        ``x.dtype``, shaped like ``x``; bit-exact with
        ``fake_quantize_act(x, act_scale(clip, bits, signed), bits, signed)``.

    Raises:
        ValueError: If ``bits`` is invalid or the clip is not a positive scalar.
    """
    if clip.numel() != 1 or clip.dim() > 1:
        raise ValueError(f"clip must be 0-dim or (1,), got {tuple(clip.shape)}")
    probs = torch.ones(1, dtype=clip.dtype, device=clip.device)
    return mixed_act_quant(x, clip.reshape(1), probs, (bits,), signed)


class _QuantizeBiasSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, bias: Tensor, scale: Tensor, keep: Tensor) -> Tensor:
        value = (_bias_codes(bias, scale) * scale.detach().to(torch.float64)).to(bias.dtype)
        ctx.save_for_backward(value, keep)
        ctx.bias_shape = bias.shape
        return keep * value

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None]:
        value, keep = ctx.saved_tensors
        grad_bias = (grad * keep).sum_to_size(ctx.bias_shape) if ctx.needs_input_grad[0] else None
        grad_keep = (grad * value).sum_to_size(keep.shape) if ctx.needs_input_grad[2] else None
        return grad_bias, None, grad_keep


def quantize_bias_ste(bias: Tensor, scale: Tensor, keep: Tensor | None = None) -> Tensor:
    """Quantize a bias on its scale, scaled by the channel's keep probability.

    Forward: ``keep * b_q`` with ``b_q = s * clamp(round_half_even(b / s), -2^31, 2^31 - 1)``
    (float64 arithmetic, then cast to ``bias.dtype``) and ``b_q = 0`` where ``s == 0``. The codes
    are those of :func:`zerobit.quant.quantize_bias` when ``scale`` is formed the same way,
    ``input_scale * weight_scale`` in float32. Backward: ``dL/db = g * keep``,
    ``dL/dkeep = g * b_q``, and no gradient into the scale (Part A item 6).

    Args:
        bias: Float (C_out,).
        scale: Float (C_out,), the bias scale ``s_in * s_w[c]`` (possibly mixed over candidates).
        keep: Float broadcastable to (C_out,), the probability that each channel is kept
            (``1 - probs[0-bit]``); None means 1.

    Returns:
        (C_out,), the dtype of ``keep * bias``.
    """
    if keep is None:
        keep = torch.ones((), dtype=bias.dtype, device=bias.device)
    return cast(Tensor, _QuantizeBiasSTE.apply(bias, scale, keep))

# SPDX-License-Identifier: Apache-2.0
# Fused straight-through autograd functions for the search: one Function per call, whatever |P|.
"""Straight-through estimators for the mixed-precision search.

Each mixture over candidate bit-widths is one :class:`torch.autograd.Function`: the forward pass
loops over the few candidates on preallocated buffers, the backward pass recomputes what it needs
from the saved input instead of keeping one quantized copy per candidate, so a mixture saves one
tensor (like ``relu``) and builds no per-candidate graph.

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

from zerobit.quant.primitives import (
    _bias_codes,
    _per_channel,
    _uniform_levels,
    _weight_grid,
    act_range,
    check_act_bits,
    check_weight_bits,
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


def _weight_candidates(weight: Tensor, bits: Sequence[int]) -> list[tuple[Tensor, Tensor] | None]:
    """Float codes and scales of each candidate, None for the 0-bit one (Q_0 = 0)."""
    grids: list[tuple[Tensor, Tensor] | None] = []
    for bit in bits:
        if bit == 0:
            grids.append(None)
            continue
        grids.append(_weight_grid(weight, _uniform_levels(weight, bit)))
    return grids


class _MixedWeightQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: Tensor, probs: Tensor, bits: tuple[int, ...]) -> Tensor:
        mixed = torch.zeros_like(weight)
        theta = probs.detach()
        for index, grid in enumerate(_weight_candidates(weight, bits)):
            if grid is not None:
                codes, scale = grid
                mixed.add_(codes.mul_(_per_channel(theta[index] * scale, weight)))
        ctx.save_for_backward(weight)
        ctx.bits = bits
        return mixed

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        (weight,) = ctx.saved_tensors
        grad_probs = None
        if ctx.needs_input_grad[1]:
            rows = []
            for grid in _weight_candidates(weight, ctx.bits):
                if grid is None:
                    rows.append(grad.new_zeros(weight.shape[0]))
                else:
                    codes, scale = grid
                    rows.append((grad * codes).reshape(weight.shape[0], -1).sum(dim=1) * scale)
            grad_probs = torch.stack(rows)
        return (grad if ctx.needs_input_grad[0] else None), grad_probs, None


def mixed_weight_quant(weight: Tensor, probs: Tensor, bits: Sequence[int]) -> Tensor:
    """Return the effective weights ``W_eff[c] = sum_p probs[p, c] * Q_p(W)[c]``, with Q_0 = 0.

    ``Q_p`` is the narrow-range symmetric per-channel quantizer of
    :func:`zerobit.quant.fake_quantize_weight`. The sum runs over the candidates in order, each
    term computed as ``(probs[p, c] * s_{p,c}) * codes_p`` (products rounded in the weight dtype),
    so a one-hot column gives exactly ``s_{p,c} * codes_p``. Backward: ``dL/dW = dL/dW_eff``
    (straight-through identity for every candidate, equal to ``sum_p probs[p, c] * g`` when a
    column sums to 1); ``dL/dprobs[p, c] = sum over channel c of g * Q_p(W)[c]``; the channel
    maxima are detached.

    Args:
        weight: Float (C_out, ...) latent weights.
        probs: Float (P, C_out), the per-channel probabilities over ``bits`` (per-layer
            probabilities: expand a (P, 1) tensor).
        bits: The P candidate bit-widths, each 0 or 2..8.

    Returns:
        ``weight.dtype``, shaped like ``weight``.

    Raises:
        ValueError: If a bit-width is invalid or the shapes do not match.
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
    return cast(Tensor, _MixedWeightQuant.apply(weight, probs, bits))


class _MixedActQuant(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, clips: Tensor, probs: Tensor, bits: tuple[int, ...], signed: bool
    ) -> Tensor:
        ranges = [act_range(bit, signed) for bit in bits]
        highs = torch.tensor([high for _, high in ranges], dtype=clips.dtype, device=clips.device)
        scales_tensor = clips.detach() / highs
        # Python floats (exact copies of the float32 values) let every pass use the scalar fast
        # path and let zero-probability candidates be skipped without touching memory.
        scales = scales_tensor.tolist()
        weights = (probs.detach() * scales_tensor).tolist()
        theta = probs.detach().tolist()
        if min(clips.detach().tolist()) <= 0:
            raise ValueError(f"activation clips must be > 0, got {clips.detach().tolist()}")
        mixed: Tensor | None = None
        buffer: Tensor | None = None
        for q, (low, high) in enumerate(ranges):
            if theta[q] == 0.0:
                continue
            if mixed is None:
                target = mixed = torch.empty_like(x)
            else:
                target = buffer = torch.empty_like(x) if buffer is None else buffer
            torch.div(x, scales[q], out=target).round_().clamp_(low, high).mul_(weights[q])
            if target is not mixed:
                mixed.add_(target)
        ctx.save_for_backward(x)
        ctx.ranges, ctx.scales, ctx.theta = ranges, scales, theta
        ctx.clips_dtype, ctx.probs_dtype = clips.dtype, probs.dtype
        return torch.zeros_like(x) if mixed is None else mixed

    @staticmethod
    def backward(
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        (x,) = ctx.saved_tensors
        need_x, need_clips, need_probs = ctx.needs_input_grad[:3]
        x = x.contiguous()
        grad = grad.contiguous()
        flat_grad = grad.view(-1)
        scaled = torch.empty_like(x)  # u = x / s
        codes = torch.empty_like(x)
        inside = torch.empty_like(x)  # u * 1[lo < u < hi], or g * 1[lo < u < hi]
        zero = grad.new_zeros(())
        grad_x: Tensor | None = None
        grad_clips = [zero] * len(ctx.ranges)
        grad_probs = [zero] * len(ctx.ranges)
        for q, (low, high) in enumerate(ctx.ranges):
            theta, scale = ctx.theta[q], ctx.scales[q]
            active = theta != 0.0
            if not (need_probs or (active and (need_x or need_clips))):
                continue
            torch.div(x, scale, out=scaled)
            if need_probs or (active and need_clips):
                torch.clamp(scaled, low, high, out=codes).round_()
            if need_probs:
                grad_probs[q] = torch.dot(flat_grad, codes.view(-1)) * scale
            if active and need_clips:
                # c - u inside the range and the clamped code outside, formed elementwise (it
                # is exact: Sterbenz) so that the sum is not a difference of two large sums.
                codes.sub_(_hardtanh_backward_out(scaled, scaled, low, high, grad_input=inside))
                grad_clips[q] = torch.dot(flat_grad, codes.view(-1)) * (theta / high)
            if active and need_x:
                if grad_x is None:
                    grad_x = _hardtanh_backward_out(
                        grad, scaled, low, high, grad_input=torch.empty_like(x)
                    )
                    if theta != 1.0:
                        grad_x.mul_(theta)
                else:
                    _hardtanh_backward_out(grad, scaled, low, high, grad_input=inside)
                    grad_x.add_(inside, alpha=theta)
        if need_x and grad_x is None:
            grad_x = torch.zeros_like(x)
        return (
            grad_x,
            torch.stack(grad_clips).to(ctx.clips_dtype) if need_clips else None,
            torch.stack(grad_probs).to(ctx.probs_dtype) if need_probs else None,
            None,
            None,
        )


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

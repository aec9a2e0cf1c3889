# SPDX-License-Identifier: Apache-2.0
# Pure quantization arithmetic shared by the search, freeze() and every exporter; no state.
"""Quantization primitives.

Conventions (zerobit Part A items 7-9):

* Weights: symmetric per output channel (dim 0), narrow range. For ``bits`` p >= 2,
  ``n_p = 2^(p-1) - 1``, ``s_{p,c} = r_{p,c} / n_p``,
  ``codes = clamp(round_half_even(W / s), -n_p, n_p)``. The range ``r_{p,c}`` (detached) is
  chosen by the *weight range* (:data:`WEIGHT_RANGES`): ``"minmax"`` (the paper's) takes
  ``m_c = max |W[c]|`` (1 when the channel is all zero); ``"mse"`` takes the fraction of ``m_c``
  in :data:`MSE_RANGE_FRACTIONS` whose codes reconstruct ``W[c]`` with the least squared error
  at ``p`` bits (:func:`weight_ranges`). ``bits`` 0 means the channel is pruned: codes 0 and
  scale 0. 1 bit is not a valid width.
* Activations: per tensor, learned clip ``beta > 0``. Unsigned codes lie in ``[0, 2^q - 1]``,
  signed ones in ``[-2^(q-1), 2^(q-1) - 1]``; ``s = beta / hi``;
  ``codes = clamp(round_half_even(x / s), lo, hi)``.
* Bias: int32 codes on the scale ``s_in * s_w[c]`` (float64 division); 0 where that scale is 0.
* Requantization: ``floor((acc * M + 2^(n-1)) / 2^n)`` in int64, the one rounding every backend
  ports (:func:`requantize`); :func:`requantize_float64` computes the same integers faster in
  float64 within bounds that :func:`requantize_float64_exact` checks.

Every division is an IEEE division (not a multiplication by a reciprocal) and every rounding is
round-half-to-even unless stated, so the results are reproducible bit for bit in other languages.
"""

from __future__ import annotations

from typing import overload

import torch
from torch import Tensor

__all__ = [
    "ACT_BITS",
    "INT32_MAX",
    "INT32_MIN",
    "MSE_RANGE_FRACTIONS",
    "WEIGHT_BITS",
    "WEIGHT_RANGES",
    "act_range",
    "act_scale",
    "candidate_weight_ranges",
    "candidate_weight_scales",
    "check_act_bits",
    "check_weight_bits",
    "check_weight_range",
    "dequantize_weight",
    "fake_quantize_act",
    "fake_quantize_weight",
    "integer_avg_pool_divide",
    "quantize_act",
    "quantize_bias",
    "quantize_multiplier",
    "quantize_weight",
    "quantize_weight_per_channel",
    "requantize",
    "requantize_float64",
    "requantize_float64_exact",
    "weight_levels",
    "weight_ranges",
    "weight_scale",
]

WEIGHT_BITS: tuple[int, ...] = (0, 2, 3, 4, 5, 6, 7, 8)
"""Valid weight bit-widths; 0 means the channel is pruned."""
WEIGHT_RANGES: tuple[str, ...] = ("minmax", "mse")
"""How a channel's weight range is chosen: its largest magnitude (``"minmax"``, the paper's), or
the clipped range with the least squared quantization error at each bit-width (``"mse"``)."""
MSE_RANGE_FRACTIONS: tuple[float, ...] = tuple(1.0 - k / 20 for k in range(16))
"""Fractions of ``max |W[c]|`` the ``"mse"`` range tries, widest first (1.0 down to 0.25)."""
#: Elements of the (fractions, channels, weights) error tensor evaluated at once.
_RANGE_CHUNK = 1 << 18
ACT_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
"""Valid activation bit-widths (signed or unsigned)."""
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

# requantize() accepts accumulators in [-2^31, 2^31] and multipliers below 2^31, so that
# |acc * M| + 2^61 < 2^62 + 2^61 never overflows int64.
_ACC_LIMIT = 2**31
_MULTIPLIER_LIMIT = 2**31
_MAX_SHIFT = 62
# requantize_float64() is exact while |acc * M| <= 2^51 and n <= 52 (proof in its docstring).
_FLOAT64_PRODUCT_LIMIT = 2**51
_FLOAT64_MAX_SHIFT = 52


def check_weight_bits(bits: int) -> None:
    """Raise unless ``bits`` is a valid weight bit-width (0 or 2..8).

    Args:
        bits: Candidate bit-width.

    Raises:
        ValueError: If ``bits`` is not in :data:`WEIGHT_BITS`.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in WEIGHT_BITS:
        raise ValueError(f"weight bits must be one of {WEIGHT_BITS}, got {bits!r}")


def check_act_bits(bits: int) -> None:
    """Raise unless ``bits`` is a valid activation bit-width (2..8).

    Args:
        bits: Candidate bit-width.

    Raises:
        ValueError: If ``bits`` is not in :data:`ACT_BITS`.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in ACT_BITS:
        raise ValueError(f"activation bits must be one of {ACT_BITS}, got {bits!r}")


def weight_levels(bits: int) -> int:
    """Return ``n_p``, the largest weight code magnitude: ``2^(bits-1) - 1``, or 0 for 0 bits.

    Args:
        bits: Weight bit-width (0 or 2..8).

    Returns:
        ``n_p``; codes lie in ``[-n_p, n_p]`` (narrow range).

    Raises:
        ValueError: If ``bits`` is not a valid weight bit-width.
    """
    check_weight_bits(bits)
    return 0 if bits == 0 else 2 ** (bits - 1) - 1


def _channel_max_abs(weight: Tensor) -> Tensor:
    """Detached ``max |W[c]|`` over every dim but 0, with 1 for all-zero channels; (C_out,)."""
    max_abs = weight.detach().reshape(weight.shape[0], -1).abs().amax(dim=1)
    # An all-zero channel quantizes to zero codes whatever the scale; 1 keeps the division finite.
    return torch.where(max_abs == 0, torch.ones_like(max_abs), max_abs)


def _per_channel(values: Tensor, like: Tensor) -> Tensor:
    """View a (C_out,) tensor so that it broadcasts against ``like`` along dim 0."""
    return values.reshape((-1,) + (1,) * (like.dim() - 1))


def check_weight_range(weight_range: str) -> None:
    """Raise ``ValueError`` unless ``weight_range`` is one of :data:`WEIGHT_RANGES`.

    Args:
        weight_range: Name of a weight range rule.
    """
    if weight_range not in WEIGHT_RANGES:
        raise ValueError(f"weight_range must be one of {WEIGHT_RANGES}, got {weight_range!r}")


def weight_ranges(
    weight: Tensor, levels: Tensor, weight_range: str = "minmax", max_abs: Tensor | None = None
) -> Tensor:
    """Return each output channel's quantization range ``r_c`` (the scale is ``r_c / n_p``).

    ``"minmax"``: ``max |W[c]|`` (1 for an all-zero channel). ``"mse"``: the fraction ``f`` of it
    in :data:`MSE_RANGE_FRACTIONS` that minimizes ``sum_k (Q(W[c, k]) - W[c, k])^2`` (summed in
    float64) with the grid of ``levels[c]``; the first, widest, fraction wins a tie, so an
    all-zero or a pruned channel keeps ``max |W[c]|``. A channel's range depends only on its
    own weights and level, so the per-channel and per-candidate quantizers agree bit for bit.

    Args:
        weight: Float (C_out, ...).
        levels: (C_out,) or (P, C_out) ``n_p`` per channel (0: pruned), dtype of ``weight``.
        weight_range: One of :data:`WEIGHT_RANGES`.
        max_abs: ``max |W[c]|`` if already computed, (C_out,).

    Returns:
        Detached ranges shaped like ``levels``, dtype of ``weight``.

    Raises:
        ValueError: For an unknown ``weight_range``.
    """
    check_weight_range(weight_range)
    if max_abs is None:
        max_abs = _channel_max_abs(weight)
    ranges = max_abs.expand_as(levels).clone()
    if weight_range == "minmax":
        return ranges
    rows = weight.detach().reshape(weight.shape[0], -1)
    fractions = torch.tensor(MSE_RANGE_FRACTIONS, dtype=weight.dtype, device=weight.device)
    # One search per distinct width over every channel, whatever the layout of ``levels``: the
    # same tensors, so the same sums, for the per-channel and the per-candidate quantizers.
    for level in torch.unique(levels).tolist():
        if level == 0:
            continue  # pruned: the range is never used
        best = fractions[_best_fractions(rows, max_abs, fractions, level)]
        ranges = torch.where(levels == level, best * max_abs, ranges)
    return ranges


def _best_fractions(rows: Tensor, max_abs: Tensor, fractions: Tensor, level: float) -> Tensor:
    """Index of the fraction whose grid at ``level`` fits each row of ``rows`` best, (C,)."""
    step = max(1, _RANGE_CHUNK // max(1, rows.numel()))
    errors = []
    for start in range(0, len(fractions), step):
        part = fractions[start : start + step].unsqueeze(1)  # (F, 1)
        scale = (part * max_abs / level).unsqueeze(-1)  # (F, C, 1)
        codes = torch.round(rows / scale).clamp_(-level, level)
        errors.append((codes.mul_(scale).sub_(rows)).double().square_().sum(-1))
    return torch.cat(errors).argmin(dim=0)  # first minimum: the widest range on a tie


def _weight_grid(
    weight: Tensor, levels: Tensor, ranges: Tensor | None = None, weight_range: str = "minmax"
) -> tuple[Tensor, Tensor]:
    """Float codes and scales for per-channel ``levels`` (n_p, 0 for pruned channels).

    The single implementation behind every weight quantizer, so that the uniform, per-channel
    and fused-autograd paths agree bit for bit.

    Args:
        weight: Float (C_out, ...).
        levels: Same float dtype as ``weight``, (C_out,): ``n_p`` per channel, 0 where pruned.
        ranges: ``weight_ranges(weight, levels, weight_range)`` if already computed, (C_out,).
        weight_range: One of :data:`WEIGHT_RANGES`, used when ``ranges`` is None.

    Returns:
        ``(codes, scale)``: codes as integer-valued floats shaped like ``weight`` and the scale,
        (C_out,), both in ``weight.dtype``.
    """
    pruned = levels == 0
    safe_levels = torch.where(pruned, torch.ones_like(levels), levels)
    if ranges is None:
        ranges = weight_ranges(weight, levels, weight_range)
    scale = ranges / safe_levels
    view_levels = _per_channel(levels, weight)
    codes = torch.round(weight.detach() / _per_channel(scale, weight))
    codes = codes.clamp_(-view_levels, view_levels)
    scale = torch.where(pruned, torch.zeros_like(scale), scale)
    return codes, scale


def _uniform_levels(weight: Tensor, bits: int) -> Tensor:
    """``n_p`` for every channel, (C_out,) in ``weight.dtype``."""
    if weight.dim() == 0:
        raise ValueError("weight must have at least one dimension (the output channels)")
    return torch.full(
        (weight.shape[0],), float(weight_levels(bits)), dtype=weight.dtype, device=weight.device
    )


def candidate_weight_ranges(
    weight: Tensor, bits: tuple[int, ...], weight_range: str = "minmax"
) -> Tensor:
    """Return every candidate bit-width's per-channel range at once (see :func:`weight_ranges`).

    Args:
        weight: Float (C_out, ...).
        bits: Candidate bit-widths (0: the pruned candidate, whose range is ``max |W[c]|``).
        weight_range: One of :data:`WEIGHT_RANGES`.

    Returns:
        ``weight.dtype`` (len(bits), C_out), detached; one pass over the weights for the maxima.
    """
    if weight.dim() == 0:
        raise ValueError("weight must have at least one dimension (the output channels)")
    levels = torch.tensor(
        [float(weight_levels(b)) for b in bits], dtype=weight.dtype, device=weight.device
    )
    levels = levels.unsqueeze(1).expand(len(bits), weight.shape[0])
    return weight_ranges(weight, levels, weight_range)


def candidate_weight_scales(
    weight: Tensor,
    bits: tuple[int, ...],
    weight_range: str = "minmax",
    ranges: Tensor | None = None,
) -> Tensor:
    """Return the scale of every candidate bit-width at once, bit-identical to :func:`weight_scale`.

    Args:
        weight: Float (C_out, ...).
        bits: Candidate bit-widths (0 gives scale 0).
        weight_range: One of :data:`WEIGHT_RANGES`.
        ranges: ``candidate_weight_ranges(weight, bits, weight_range)`` if already computed.

    Returns:
        ``weight.dtype`` (len(bits), C_out), detached.
    """
    if ranges is None:
        ranges = candidate_weight_ranges(weight, bits, weight_range)
    rows = []
    for index, b in enumerate(bits):
        levels = weight_levels(b)
        rows.append(ranges[index] / float(levels) if levels else torch.zeros_like(ranges[index]))
    return torch.stack(rows)


def weight_scale(weight: Tensor, bits: int, weight_range: str = "minmax") -> Tensor:
    """Return the per-output-channel weight scale ``s = r_c / (2^(bits-1) - 1)``.

    Args:
        weight: Float (C_out, ...) (Linear: (C_out, C_in); Conv: (C_out, C_in/groups, *k)).
        bits: Weight bit-width; 0 gives scale 0 (pruned).
        weight_range: How the range ``r_c`` is chosen, one of :data:`WEIGHT_RANGES`
            (``"minmax"``: ``max |W[c]|``).

    Returns:
        ``weight.dtype`` (C_out,); detached from ``weight``.

    Raises:
        ValueError: If ``bits`` is invalid or ``weight`` is 0-dim.
    """
    return _weight_grid(weight, _uniform_levels(weight, bits), weight_range=weight_range)[1]


def quantize_weight(
    weight: Tensor, bits: int, weight_range: str = "minmax"
) -> tuple[Tensor, Tensor]:
    """Quantize weights symmetrically per output channel (narrow range).

    Args:
        weight: Float (C_out, ...).
        bits: Weight bit-width (0 or 2..8); 0 gives zero codes and zero scale.
        weight_range: One of :data:`WEIGHT_RANGES`.

    Returns:
        ``(codes, scale)``: int32 codes shaped like ``weight``, in ``[-n_p, n_p]``, and the
        ``weight.dtype`` scale (C_out,). ``codes * scale`` (per channel) dequantizes.

    Raises:
        ValueError: If ``bits`` is invalid or ``weight`` is 0-dim.

    Example:
        >>> codes, scale = quantize_weight(torch.tensor([[1.0, -0.5, 0.2]]), bits=2)
        >>> codes.tolist(), scale.tolist()
        ([[1, 0, 0]], [1.0])
        >>> codes, scale = quantize_weight(torch.tensor([[1.0, -0.5, 0.2]]), 2, "mse")
        >>> codes.tolist(), scale.tolist()
        ([[1, -1, 0]], [0.75])
    """
    codes, scale = _weight_grid(weight, _uniform_levels(weight, bits), weight_range=weight_range)
    return codes.to(torch.int32), scale


def quantize_weight_per_channel(
    weight: Tensor, bits: Tensor, weight_range: str = "minmax"
) -> tuple[Tensor, Tensor]:
    """Quantize each output channel with its own bit-width.

    Bit-exact with :func:`quantize_weight` called once per distinct width.

    Args:
        weight: Float (C_out, ...).
        bits: Integer (C_out,), each 0 or 2..8; 0 marks a pruned channel.
        weight_range: One of :data:`WEIGHT_RANGES`.

    Returns:
        ``(codes, scale)``: int32 codes shaped like ``weight`` and the ``weight.dtype`` scale
        (C_out,); pruned channels have zero codes and zero scale.

    Raises:
        ValueError: If ``bits`` has the wrong shape or dtype or holds an invalid width.
    """
    if weight.dim() == 0 or bits.shape != (weight.shape[0],):
        raise ValueError(
            f"bits must have shape (C_out,) = ({weight.shape[0] if weight.dim() else '?'},), "
            f"got {tuple(bits.shape)}"
        )
    if bits.dtype.is_floating_point or bits.dtype.is_complex or bits.dtype == torch.bool:
        raise ValueError(f"bits must be an integer tensor, got {bits.dtype}")
    for value in torch.unique(bits).tolist():
        check_weight_bits(int(value))
    bits = bits.to(device=weight.device, dtype=torch.int64)
    levels = torch.where(bits == 0, 0, (1 << (bits - 1).clamp(min=0)) - 1).to(weight.dtype)
    codes, scale = _weight_grid(weight, levels, weight_range=weight_range)
    return codes.to(torch.int32), scale


def dequantize_weight(codes: Tensor, scale: Tensor) -> Tensor:
    """Return ``codes * scale`` per output channel.

    Args:
        codes: Integer (C_out, ...).
        scale: Float (C_out,).

    Returns:
        ``scale.dtype``, shaped like ``codes``.
    """
    return codes.to(scale.dtype) * _per_channel(scale, codes)


def fake_quantize_weight(weight: Tensor, bits: int, weight_range: str = "minmax") -> Tensor:
    """Quantize and dequantize weights; equals ``dequantize_weight(*quantize_weight(...))``.

    Args:
        weight: Float (C_out, ...).
        bits: Weight bit-width (0 or 2..8); 0 gives zeros.
        weight_range: One of :data:`WEIGHT_RANGES`.

    Returns:
        ``weight.dtype``, shaped like ``weight``; carries no gradient.

    Raises:
        ValueError: If ``bits`` is invalid.
    """
    codes, scale = _weight_grid(weight, _uniform_levels(weight, bits), weight_range=weight_range)
    return codes * _per_channel(scale, weight)


def act_range(bits: int, signed: bool) -> tuple[int, int]:
    """Return the activation code range ``(lo, hi)``.

    Args:
        bits: Activation bit-width (2..8).
        signed: Two's complement range ``[-2^(q-1), 2^(q-1) - 1]`` if true, else ``[0, 2^q - 1]``.

    Returns:
        ``(lo, hi)``, inclusive.

    Raises:
        ValueError: If ``bits`` is invalid.

    Example:
        >>> act_range(4, signed=False), act_range(4, signed=True)
        ((0, 15), (-8, 7))
    """
    check_act_bits(bits)
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def act_scale(clip: Tensor, bits: int, signed: bool) -> Tensor:
    """Return the activation scale ``s = clip / hi``.

    Args:
        clip: Float, any shape (usually 0-dim); the learned clip ``beta > 0``.
        bits: Activation bit-width (2..8).
        signed: Whether the quantizer is signed.

    Returns:
        ``clip.dtype``, shaped like ``clip``.

    Raises:
        ValueError: If ``bits`` is invalid.
    """
    return clip / act_range(bits, signed)[1]


def _act_codes(x: Tensor, scale: Tensor | float, bits: int, signed: bool) -> Tensor:
    lo, hi = act_range(bits, signed)
    if isinstance(scale, Tensor):
        scale = scale.detach()
    return torch.round(x.detach() / scale).clamp_(lo, hi)


def quantize_act(x: Tensor, scale: Tensor | float, bits: int, signed: bool) -> Tensor:
    """Quantize activations per tensor: ``clamp(round_half_even(x / s), lo, hi)``.

    Args:
        x: Float, any shape.
        scale: Positive scale ``s``, a Python float or a 0-dim tensor (see :func:`act_scale`).
        bits: Activation bit-width (2..8).
        signed: Whether the quantizer is signed (see :func:`act_range`).

    Returns:
        int32 codes shaped like ``x``.

    Raises:
        ValueError: If ``bits`` is invalid.
    """
    return _act_codes(x, scale, bits, signed).to(torch.int32)


def fake_quantize_act(x: Tensor, scale: Tensor | float, bits: int, signed: bool) -> Tensor:
    """Quantize and dequantize activations: ``codes * s``.

    Args:
        x: Float, any shape.
        scale: Positive scale ``s``, a Python float or a 0-dim tensor.
        bits: Activation bit-width (2..8).
        signed: Whether the quantizer is signed.

    Returns:
        ``x.dtype``, shaped like ``x``. No straight-through gradient; see
        :func:`zerobit.quant.fake_quant_act` for training.

    Raises:
        ValueError: If ``bits`` is invalid.
    """
    if isinstance(scale, Tensor):
        scale = scale.detach()
    return _act_codes(x, scale, bits, signed).mul_(scale)


def _bias_codes(bias: Tensor, scale: Tensor) -> Tensor:
    """float64 bias codes on the bias scale ``scale``; shared with the bias STE."""
    # float64 division and clamp: exact int32 bounds (2^31 - 1 is not a float32) and one rounding.
    scale = scale.detach().to(torch.float64)
    zero = scale == 0
    codes = torch.round(bias.detach().to(torch.float64) / torch.where(zero, 1.0, scale))
    return torch.where(zero, 0.0, codes.clamp_(INT32_MIN, INT32_MAX))


def quantize_bias(bias: Tensor, input_scale: Tensor, weight_scale: Tensor) -> Tensor:
    """Quantize a bias to int32 on the accumulator scale ``s_b = s_in * s_w[c]``.

    ``s_b`` is the product formed in the scales' dtype (one float32 multiply, as the search's
    :func:`zerobit.quant.quantize_bias_ste` receives it); then, in float64,
    ``b_int = clamp(round_half_even(b / s_b), -2^31, 2^31 - 1)``, and 0 where ``s_b == 0``
    (pruned channel).

    Args:
        bias: Float (C_out,).
        input_scale: Float, 0-dim or (1,); the input activation scale.
        weight_scale: Float (C_out,); the per-channel weight scale.

    Returns:
        int32 (C_out,).
    """
    return _bias_codes(bias, input_scale.detach() * weight_scale.detach()).to(torch.int32)


@overload
def quantize_multiplier(real: float) -> tuple[int, int]: ...
@overload
def quantize_multiplier(real: Tensor) -> tuple[Tensor, Tensor]: ...
def quantize_multiplier(real: float | Tensor) -> tuple[int, int] | tuple[Tensor, Tensor]:
    """Represent a real multiplier as ``M * 2^-n`` for :func:`requantize`.

    With ``real = f * 2^e`` (``frexp``, f in [0.5, 1)): ``M = round_half_even(f * 2^31)``,
    ``n = 31 - e``; a rounding carry to ``2^31`` becomes ``M = 2^30, n - 1``. So M lies in
    [2^30, 2^31) (31 significant bits) and ``|M * 2^-n - real| <= real * 2^-31``. If ``n`` would
    exceed 62 (``real < 2^-32``), it saturates: ``n = 62``, ``M = round_half_even(real * 2^62)``
    (fewer significant bits, possibly 0). ``real == 0`` gives ``(0, 0)``. All steps are exact in
    float64, so the tensor and scalar paths agree bit for bit.

    Args:
        real: A float >= 0, or a float tensor of any shape (converted to float64) holding one
            multiplier per entry (e.g. per output channel).

    Returns:
        ``(M, n)``: Python ints for a float input; int64 tensors shaped like ``real`` otherwise.

    Raises:
        ValueError: If a multiplier is negative, not finite, or ``>= 2^31 - 1/2`` (it would need
            ``n < 0``).

    Example:
        >>> quantize_multiplier(0.25)
        (1073741824, 32)
    """
    if isinstance(real, Tensor):
        return _quantize_multiplier(real.detach().to(torch.float64))
    multiplier, shift = _quantize_multiplier(torch.tensor(float(real), dtype=torch.float64))
    return int(multiplier), int(shift)


def _quantize_multiplier(real: Tensor) -> tuple[Tensor, Tensor]:
    if not bool(torch.isfinite(real).all()) or bool((real < 0).any()):
        raise ValueError("multipliers must be finite and >= 0")
    mantissa, exponent = torch.frexp(real)
    # Scaling by a power of two is exact in float64, so only the round below rounds.
    multiplier = torch.round(mantissa * 2.0**31)
    shift = 31 - exponent.to(torch.int64)
    carry = multiplier == 2.0**31
    multiplier = torch.where(carry, 2.0**30, multiplier)
    shift = torch.where(carry, shift - 1, shift)
    if bool((shift < 0).any()):
        raise ValueError(f"multipliers must be < 2^31 - 1/2, got max {real.max().item()!r}")
    saturated = shift > _MAX_SHIFT
    tiny = torch.round(real * 2.0**_MAX_SHIFT)
    multiplier = torch.where(saturated, tiny, multiplier)
    shift = torch.where(saturated, _MAX_SHIFT, shift)
    zero = real == 0
    multiplier = torch.where(zero, 0.0, multiplier).to(torch.int64)
    shift = torch.where(zero, 0, shift)
    return multiplier, shift


def _broadcast_along(values: Tensor, acc: Tensor, dim: int | None) -> Tensor:
    if dim is None or values.dim() == 0:
        return values
    if (
        not -acc.dim() <= dim < acc.dim()
        or values.dim() != 1
        or values.shape[0] not in (1, acc.shape[dim])
    ):
        raise ValueError(
            f"with dim={dim} the multiplier and shift must be 1-D with acc.shape[dim] entries, "
            f"acc is {tuple(acc.shape)}, got {tuple(values.shape)}"
        )
    dim = dim % acc.dim()
    return values.reshape((-1,) + (1,) * (acc.dim() - 1 - dim))


def requantize(
    acc: Tensor, multiplier: Tensor | int, shift: Tensor | int, dim: int | None = None
) -> Tensor:
    """Rescale integer accumulators: ``floor((acc * M + 2^(n-1)) / 2^n)``, ``acc * M`` for n = 0.

    This is the one rounding of zerobit's integer arithmetic (round half up, toward +inf), used
    by the frozen model, the integer reference, ONNX and C. It is computed in int64 with an
    arithmetic right shift, which floors. A C port must use the portable floor shift
    ``x >= 0 ? x >> n : ~((~x) >> n)`` rather than ``>>`` on a negative value (implementation-
    defined before C23). With ``|acc| <= 2^31`` and ``0 <= M < 2^31``, ``|acc * M| < 2^62`` and
    the bias ``2^(n-1) <= 2^61``, so nothing overflows int64.

    Args:
        acc: Integer, any shape; converted to int64. Each entry in ``[-2^31, 2^31]`` (an int32
            accumulator plus a bias).
        multiplier: ``M`` in ``[0, 2^31)``: a Python int or an integer tensor broadcastable to
            ``acc`` (or, with ``dim``, 1-D of length ``acc.shape[dim]``).
        shift: ``n`` in ``[0, 62]``, same forms as ``multiplier``.
        dim: If given, 1-D ``multiplier`` and ``shift`` apply along this dim of ``acc`` (e.g.
            ``dim=1`` for per-channel NCHW); otherwise they broadcast as ordinary tensors.

    Returns:
        int64, the broadcast shape of ``acc``, ``multiplier`` and ``shift``.

    Raises:
        ValueError: If an argument is out of range, not integer, or has an incompatible shape.

    Example:
        >>> requantize(torch.tensor([5, -5, 6, -6]), 1, 2)  # x / 4, half rounds up
        tensor([ 1, -1,  2, -1])
    """
    if acc.dtype.is_floating_point or acc.dtype.is_complex or acc.dtype == torch.bool:
        raise ValueError(f"acc must be an integer tensor, got {acc.dtype}")
    acc = acc.to(torch.int64)
    multiplier, shift = _requantize_arguments(multiplier, shift, acc)
    if acc.numel():
        low, high = torch.aminmax(acc)
        if low < -_ACC_LIMIT or high > _ACC_LIMIT:
            raise ValueError(f"acc must lie in [-2^31, 2^31], got [{int(low)}, {int(high)}]")
    multiplier = _broadcast_along(multiplier, acc, dim)
    shift = _broadcast_along(shift, acc, dim)
    half = torch.where(shift > 0, torch.ones_like(shift) << (shift - 1).clamp(min=0), 0)
    return (acc * multiplier + half) >> shift


def requantize_float64_exact(
    acc_bound: Tensor | int, multiplier: Tensor | int, shift: Tensor | int
) -> bool:
    """Tell whether :func:`requantize_float64` equals :func:`requantize` for these arguments.

    It does for every integer ``acc`` with ``|acc| <= acc_bound`` when ``acc_bound <= 2^31``
    (the range :func:`requantize` accepts), ``acc_bound * M <= 2^51`` and ``n <= 52``, entry by
    entry after broadcasting; the proof is in :func:`requantize_float64`.

    Args:
        acc_bound: Bound on ``|acc|``: a Python int or an integer tensor broadcastable against
            ``multiplier`` and ``shift`` (e.g. one bound per output channel).
        multiplier: ``M`` as for :func:`requantize` (without ``dim``).
        shift: ``n`` as for :func:`requantize` (without ``dim``).

    Returns:
        True if the float64 path is exact for every such accumulator.

    Raises:
        ValueError: If an argument is not an integer or out of :func:`requantize`'s range.
    """
    bound = _integer_argument(acc_bound, torch.empty(0), "acc_bound")
    multiplier, shift = _requantize_arguments(multiplier, shift, bound)
    if bool((bound < 0).any()):
        raise ValueError("acc_bound must be >= 0")
    # Checked first, so that the product below stays under 2^62.
    if bool((bound > _ACC_LIMIT).any()):
        return False
    return bool((bound * multiplier <= _FLOAT64_PRODUCT_LIMIT).all()) and bool(
        (shift <= _FLOAT64_MAX_SHIFT).all()
    )


def requantize_float64(
    acc: Tensor, multiplier: Tensor | int, shift: Tensor | int, dim: int | None = None
) -> Tensor:
    """:func:`requantize` computed in float64: ``floor(acc * (M * 2^-n) + 1/2)``.

    A faster equivalent for accumulators held as integer-valued floats (what the frozen model's
    convolutions produce), exact only within the bounds that :func:`requantize_float64_exact`
    checks; callers fall back to :func:`requantize` outside them. Proof: ``f = M * 2^-n`` is
    exact (M has at most 31 significant bits, ``2^-62`` is a normal float64); with
    ``|acc * M| <= 2^51`` the product ``acc * f = (acc * M) * 2^-n`` is exact, and so is
    ``acc * f + 1/2 = (2 * acc * M + 2^n) * 2^-(n+1)`` for ``n <= 52``, an integer of magnitude
    at most ``2^52 + 2^52 = 2^53`` times a power of two. Its floor is then exactly
    ``floor((acc * M + 2^(n-1)) / 2^n)``, and ``acc * M`` for ``n = 0``.

    Args:
        acc: Float32 or float64 holding integers, any shape. Not range-checked: the caller
            bounds it with :func:`requantize_float64_exact`.
        multiplier: ``M`` in ``[0, 2^31)``, as for :func:`requantize`.
        shift: ``n`` in ``[0, 62]``, as for :func:`requantize`.
        dim: As for :func:`requantize`.

    Returns:
        float64 holding integers, the broadcast shape of ``acc``, ``multiplier`` and ``shift``.

    Raises:
        ValueError: If ``acc`` is not a float tensor or ``multiplier`` or ``shift`` is out of
            range, not integer, or has an incompatible shape.

    Example:
        >>> requantize_float64(torch.tensor([5.0, -5.0, 6.0, -6.0]), 1, 2)
        tensor([ 1., -1.,  2., -1.], dtype=torch.float64)
    """
    if not acc.dtype.is_floating_point:
        raise ValueError(f"acc must be a float tensor holding integers, got {acc.dtype}")
    multiplier, shift = _requantize_arguments(multiplier, shift, acc)
    # M / 2^n: both exact in float64, so the IEEE division is exact.
    factor = multiplier.to(torch.float64) / (torch.ones_like(shift) << shift).to(torch.float64)
    factor = _broadcast_along(factor, acc, dim)
    out = torch.empty(
        torch.broadcast_shapes(acc.shape, factor.shape), dtype=torch.float64, device=acc.device
    )
    out.copy_(acc)
    return out.mul_(factor).add_(0.5).floor_()


def _requantize_arguments(
    multiplier: Tensor | int, shift: Tensor | int, like: Tensor
) -> tuple[Tensor, Tensor]:
    """``multiplier`` and ``shift`` as int64 tensors on ``like``'s device, range-checked."""
    multiplier = _integer_argument(multiplier, like, "multiplier")
    shift = _integer_argument(shift, like, "shift")
    if multiplier.numel() and not (multiplier.min() >= 0 and multiplier.max() < _MULTIPLIER_LIMIT):
        raise ValueError("multiplier must lie in [0, 2^31)")
    if shift.numel() and not (shift.min() >= 0 and shift.max() <= _MAX_SHIFT):
        raise ValueError(f"shift must lie in [0, {_MAX_SHIFT}]")
    return multiplier, shift


def _integer_argument(value: Tensor | int, acc: Tensor, name: str) -> Tensor:
    if isinstance(value, Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got {value.dtype}")
        return value.to(device=acc.device, dtype=torch.int64)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int or an integer tensor, got {value!r}")
    return torch.tensor(value, dtype=torch.int64, device=acc.device)


def integer_avg_pool_divide(total: Tensor, count: int) -> Tensor:
    """Divide integer sums by a window size the way the integer average pool does.

    ``requantize(total, *quantize_multiplier(1 / count))``. For a power-of-two ``count`` = 2^k
    (M = 2^30, n = 30 + k) this is exactly ``floor((total + count / 2) / count)`` (round half up)
    over the whole accumulator range. For other counts the multiplier carries a relative error
    <= 2^-31: the result equals round-half-up of the exact quotient whenever ``|total| < 2^30``
    and ``count`` is odd (no exact ties exist); for even counts an exact tie may round down.
    Whatever the count, every backend computes this same integer.

    Args:
        total: Integer sums of ``count`` codes, any shape; entries in ``[-2^31, 2^31]``.
        count: Number of summed elements (the pooling window), >= 1.

    Returns:
        int64, shaped like ``total``.

    Raises:
        ValueError: If ``count < 1`` or ``total`` is out of range.

    Example:
        >>> integer_avg_pool_divide(torch.tensor([6, -6, 5]), 4)
        tensor([ 2, -1,  1])
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1, got {count!r}")
    multiplier, shift = quantize_multiplier(1.0 / count)
    return requantize(total, multiplier, shift)

# SPDX-License-Identifier: Apache-2.0
# Tests of zerobit.quant.primitives: bit-exact against naive loops over Python ints / numpy scalars.
from __future__ import annotations

import doctest
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zerobit.quant.primitives
from zerobit.quant import (
    INT32_MAX,
    INT32_MIN,
    act_range,
    act_scale,
    dequantize_weight,
    fake_quantize_act,
    fake_quantize_weight,
    integer_avg_pool_divide,
    quantize_act,
    quantize_bias,
    quantize_multiplier,
    quantize_weight,
    quantize_weight_per_channel,
    requantize,
    requantize_float64,
    requantize_float64_exact,
    weight_levels,
    weight_scale,
)

PROFILE = settings(derandomize=True, max_examples=200, deadline=None)
FEW = settings(derandomize=True, max_examples=40, deadline=None)

ACC = st.integers(min_value=-(2**31), max_value=2**31)
MULTIPLIER = st.integers(min_value=0, max_value=2**31 - 1)
SHIFT = st.integers(min_value=0, max_value=62)
WEIGHT_BITS = st.sampled_from([2, 3, 4, 5, 6, 7, 8])
ACT_BITS = st.sampled_from([2, 3, 4, 5, 6, 7, 8])


def test_docstring_examples_run():
    failures, _ = doctest.testmod(zerobit.quant.primitives, extraglobs={"torch": torch})
    assert failures == 0


# --- requantize -------------------------------------------------------------------------------


def naive_requantize(acc: int, multiplier: int, shift: int) -> int:
    """floor((acc * M + 2^(n-1)) / 2^n) with Python's exact integers and floor division."""
    half = 2 ** (shift - 1) if shift > 0 else 0
    return (acc * multiplier + half) // 2**shift


@PROFILE
@given(st.lists(st.tuples(ACC, MULTIPLIER, SHIFT), min_size=1, max_size=64))
def test_requantize_matches_python_integers(rows):
    acc, multiplier, shift = (torch.tensor(column, dtype=torch.int64) for column in zip(*rows))
    expected = [naive_requantize(*row) for row in rows]
    assert requantize(acc, multiplier, shift).tolist() == expected


def test_requantize_edges_and_ties():
    accs = [-(2**31), -(2**31) + 1, -3, -2, -1, 0, 1, 2, 3, 2**31 - 1, 2**31]
    multipliers = [0, 1, 3, 2**30, 2**31 - 1]
    shifts = [0, 1, 2, 30, 31, 32, 61, 62]
    rows = [(a, m, n) for a in accs for m in multipliers for n in shifts]
    # Exact halves: acc * M = (2j + 1) * 2^(n-1) rounds up (toward +inf), also for negatives.
    rows += [
        (sign * (2 * j + 1) * 2 ** (n - 1), 1, n)
        for n in (1, 2, 5, 31)
        for j in (0, 1, 7)
        for sign in (1, -1)
        if (2 * j + 1) * 2 ** (n - 1) <= 2**31
    ]
    acc, multiplier, shift = (torch.tensor(column, dtype=torch.int64) for column in zip(*rows))
    assert requantize(acc, multiplier, shift).tolist() == [naive_requantize(*r) for r in rows]
    halves = torch.tensor([1, -1, 3, -3, 5, -5])
    assert requantize(halves, 1, 1).tolist() == [1, 0, 2, -1, 3, -2]


def test_requantize_per_channel_dim_and_scalars():
    generator = torch.Generator().manual_seed(0)
    acc = torch.randint(-(2**31), 2**31, (2, 3, 4, 5), generator=generator)
    multiplier = torch.tensor([1, 2**30, 2**31 - 1])
    shift = torch.tensor([0, 31, 62])
    out = requantize(acc.to(torch.int32), multiplier, shift, dim=1)
    expected = [
        [
            [
                [
                    naive_requantize(int(acc[b, c, h, w]), int(multiplier[c]), int(shift[c]))
                    for w in range(5)
                ]
                for h in range(4)
            ]
            for c in range(3)
        ]
        for b in range(2)
    ]
    assert out.dtype == torch.int64
    assert out.tolist() == expected
    assert torch.equal(out, requantize(acc, multiplier.view(3, 1, 1), shift.view(3, 1, 1)))
    assert requantize(acc[:, :, 0, 0], 5, 3, dim=None).tolist() == [
        [naive_requantize(int(a), 5, 3) for a in row] for row in acc[:, :, 0, 0]
    ]


@pytest.mark.parametrize(
    ("acc", "multiplier", "shift", "dim"),
    [
        (torch.tensor([2**31 + 1]), 1, 0, None),
        (torch.tensor([-(2**31) - 1]), 1, 0, None),
        (torch.tensor([1]), 2**31, 0, None),
        (torch.tensor([1]), -1, 0, None),
        (torch.tensor([1]), 1, 63, None),
        (torch.tensor([1]), 1, -1, None),
        (torch.tensor([1.0]), 1, 0, None),
        (torch.tensor([1]), 1.5, 0, None),
        (torch.tensor([1]), torch.tensor([1.0]), 0, None),
        (torch.zeros(2, 3, dtype=torch.int64), torch.ones(2, dtype=torch.int64), 0, 1),
        (torch.zeros(2, 3, dtype=torch.int64), torch.ones(3, dtype=torch.int64), 0, 2),
    ],
)
def test_requantize_rejects_out_of_range(acc, multiplier, shift, dim):
    with pytest.raises(ValueError):
        requantize(acc, multiplier, shift, dim=dim)


# --- requantize_float64 -----------------------------------------------------------------------


def float64_bounds_hold(acc: int, multiplier: int, shift: int) -> bool:
    """The stated bounds of requantize_float64, with Python's exact integers."""
    return abs(acc) <= 2**31 and abs(acc) * multiplier <= 2**51 and shift <= 52


@st.composite
def float64_rows(draw: st.DrawFn) -> tuple[int, int, int]:
    """Any M and n <= 52, and any acc in the whole range those bounds allow for them."""
    multiplier = draw(MULTIPLIER)
    shift = draw(st.integers(min_value=0, max_value=52))
    limit = min(2**31, 2**51 // max(multiplier, 1))
    acc = draw(
        st.one_of(
            st.integers(min_value=-limit, max_value=limit),
            st.sampled_from([-limit, -limit + 1, -1, 0, 1, limit - 1, limit]),
        )
    )
    return acc, multiplier, shift


@st.composite
def float64_ties(draw: st.DrawFn) -> tuple[int, int, int]:
    """Exact halves: acc * M = (2j + 1) * 2^(n-1), within the bounds (M a power of two)."""
    shift = draw(st.integers(min_value=1, max_value=52))
    # acc = odd * 2^(n-1-power) must fit in 2^31 for odd = 1
    power = draw(st.integers(min_value=max(0, shift - 32), max_value=min(shift - 1, 30)))
    top = min(2**31, 2**51 >> power) // 2 ** (shift - 1 - power)
    odd = 2 * draw(st.integers(min_value=0, max_value=max((top - 1) // 2, 0))) + 1
    acc = odd * 2 ** (shift - 1 - power) * draw(st.sampled_from([1, -1]))
    return acc, 2**power, shift


def check_float64_rows(rows: list[tuple[int, int, int]]) -> None:
    acc, multiplier, shift = (torch.tensor(column, dtype=torch.int64) for column in zip(*rows))
    expected = [naive_requantize(*row) for row in rows]
    assert requantize(acc, multiplier, shift).tolist() == expected
    out = requantize_float64(acc.to(torch.float64), multiplier, shift)
    assert out.dtype == torch.float64
    assert [int(v) for v in out.tolist()] == expected
    small = acc.abs() < 2**24  # float32 holds these accumulators exactly
    if bool(small.any()):
        out32 = requantize_float64(acc[small].float(), multiplier[small], shift[small])
        assert [int(v) for v in out32.tolist()] == [e for e, k in zip(expected, small) if k]


@PROFILE
@given(st.lists(st.one_of(float64_rows(), float64_ties()), min_size=1, max_size=64))
def test_requantize_float64_equals_requantize_within_its_bounds(rows):
    for acc, multiplier, shift in rows:
        assert float64_bounds_hold(acc, multiplier, shift)
        assert requantize_float64_exact(abs(acc), multiplier, shift)
    check_float64_rows(rows)


@PROFILE
@given(st.lists(st.tuples(ACC, MULTIPLIER, SHIFT), min_size=1, max_size=64))
def test_requantize_float64_exact_states_the_bounds_over_the_whole_range(rows):
    held = [row for row in rows if float64_bounds_hold(*row)]
    for acc, multiplier, shift in rows:
        expected = float64_bounds_hold(acc, multiplier, shift)
        assert requantize_float64_exact(abs(acc), multiplier, shift) == expected
    if held:
        check_float64_rows(held)


def test_requantize_float64_edges_and_per_channel_bounds():
    rows = [
        (sign * (2**51 // m), m, n)
        for m in (1, 3, 2**20 + 1, 2**30, 2**31 - 1)
        for n in (0, 1, 31, 52)
        for sign in (1, -1)
        if 2**51 // m <= 2**31
    ]
    rows += [(a, 0, n) for a in (-(2**31), 2**31) for n in (0, 52)]
    check_float64_rows(rows)
    multiplier = torch.tensor([2**30, 2**31 - 1, 0])
    shift = torch.tensor([40, 52, 0])
    assert requantize_float64_exact(torch.tensor([2**21, 2**20, 2**31]), multiplier, shift)
    assert not requantize_float64_exact(torch.tensor([2**21 + 1, 0, 0]), multiplier, shift)
    assert not requantize_float64_exact(2**31 + 1, 0, 0)
    assert not requantize_float64_exact(0, 1, 53)
    generator = torch.Generator().manual_seed(0)
    acc = torch.randint(-(2**20), 2**20, (2, 3, 4, 5), generator=generator)
    out = requantize_float64(acc.float(), multiplier, shift, dim=1)
    assert torch.equal(out, requantize(acc, multiplier, shift, dim=1).double())


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (requantize_float64, (torch.tensor([1]), 1, 0)),
        (requantize_float64, (torch.tensor([1.0]), 2**31, 0)),
        (requantize_float64, (torch.tensor([1.0]), 1, 63)),
        (requantize_float64, (torch.zeros(2, 3), torch.ones(2, dtype=torch.int64), 0, 1)),
        (requantize_float64_exact, (-1, 1, 0)),
        (requantize_float64_exact, (1.5, 1, 0)),
        (requantize_float64_exact, (1, -1, 0)),
        (requantize_float64_exact, (1, 1, 63)),
    ],
)
def test_requantize_float64_rejects_bad_arguments(call, args):
    with pytest.raises(ValueError):
        call(*args)


# --- quantize_multiplier ----------------------------------------------------------------------


def naive_quantize_multiplier(real: float) -> tuple[int, int]:
    """The documented algorithm, with math.frexp and Python's exact integers."""
    if real == 0:
        return 0, 0
    mantissa, exponent = math.frexp(real)
    multiplier, shift = round(mantissa * 2**31), 31 - exponent
    if multiplier == 2**31:
        multiplier, shift = 2**30, shift - 1
    if shift > 62:
        return round(Fraction(real) * 2**62), 62
    return multiplier, shift


REALS = st.one_of(
    st.floats(min_value=0.0, max_value=2.0**31 - 1.0),
    st.floats(min_value=2.0**-80, max_value=1.0),
    st.sampled_from([1.0, 0.5, 1 - 2.0**-53, 2.0**-32, 2.0**-33, 2.0**-70, 5e-324, 2.0**31 - 1]),
)


@PROFILE
@given(st.lists(REALS, min_size=1, max_size=32))
def test_quantize_multiplier_matches_scalar_oracle(reals):
    multiplier, shift = quantize_multiplier(torch.tensor(reals, dtype=torch.float64))
    assert multiplier.dtype == shift.dtype == torch.int64
    expected = [naive_quantize_multiplier(r) for r in reals]
    assert list(zip(multiplier.tolist(), shift.tolist())) == expected
    assert [quantize_multiplier(r) for r in reals] == expected
    for real, (m, n) in zip(reals, expected):
        assert 0 <= m < 2**31 and 0 <= n <= 62
        if n < 62 and real > 0:
            assert m >= 2**30
            assert abs(Fraction(m, 2**n) - Fraction(real)) <= Fraction(real) / 2**31


def test_quantize_multiplier_carry_saturation_and_float32():
    assert quantize_multiplier(1 - 2.0**-53) == (2**30, 30)
    assert quantize_multiplier(2.0**-40) == (2**22, 62)
    assert quantize_multiplier(2.0**-70) == (0, 62)
    assert quantize_multiplier(0.0) == (0, 0)
    scales = torch.tensor([0.013, 0.5, 3.0], dtype=torch.float32)
    multiplier, shift = quantize_multiplier(scales)
    assert list(zip(multiplier.tolist(), shift.tolist())) == [
        naive_quantize_multiplier(float(s)) for s in scales
    ]


@pytest.mark.parametrize("real", [-1.0, float("nan"), float("inf"), 2.0**31, 2.0**31 - 0.5])
def test_quantize_multiplier_rejects(real):
    with pytest.raises(ValueError):
        quantize_multiplier(real)
    with pytest.raises(ValueError):
        quantize_multiplier(torch.tensor([0.5, real], dtype=torch.float64))


# --- integer average pool -------------------------------------------------------------------


@PROFILE
@given(st.lists(ACC, min_size=1, max_size=32), st.integers(min_value=0, max_value=20))
def test_avg_pool_divide_power_of_two_is_round_half_up(totals, log_count):
    count = 2**log_count
    out = integer_avg_pool_divide(torch.tensor(totals), count)
    assert out.tolist() == [(t + count // 2) // count for t in totals]


@PROFILE
@given(
    st.lists(st.integers(min_value=-(2**30) + 1, max_value=2**30 - 1), min_size=1, max_size=32),
    st.integers(min_value=0, max_value=500).map(lambda k: 2 * k + 1),
)
def test_avg_pool_divide_odd_count_is_round_half_up(totals, count):
    out = integer_avg_pool_divide(torch.tensor(totals), count)
    assert out.tolist() == [(2 * t + count) // (2 * count) for t in totals]


def test_avg_pool_divide_even_count_tie_is_the_requantize_rounding():
    # 1/6 rounds down to M = 1431655765 * 2^-33, so the exact tie 3/6 rounds down: documented.
    assert integer_avg_pool_divide(torch.tensor([3, 4, -4, 9]), 6).tolist() == [0, 1, -1, 1]
    with pytest.raises(ValueError):
        integer_avg_pool_divide(torch.tensor([1]), 0)


# --- weights ----------------------------------------------------------------------------------


def naive_quantize_weight(weight: torch.Tensor, bits: int) -> tuple[list, list]:
    """Per-element loop with numpy float32 scalars (IEEE single division, rint = half-even)."""
    codes, scales = [], []
    levels = 2 ** (bits - 1) - 1 if bits else 0
    for channel in weight.reshape(weight.shape[0], -1).tolist():
        if bits == 0:
            codes.append([0] * len(channel))
            scales.append(0.0)
            continue
        max_abs = max(abs(np.float32(w)) for w in channel)
        max_abs = np.float32(1.0) if max_abs == 0 else max_abs
        scale = np.float32(max_abs / np.float32(levels))
        row = [int(np.clip(np.rint(np.float32(w) / scale), -levels, levels)) for w in channel]
        codes.append(row)
        scales.append(float(scale))
    return codes, scales


weights = st.tuples(
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=0, max_value=2**31 - 1),
    st.sampled_from([1e-3, 1.0, 300.0]),
).map(lambda a: weight_tensor(*a))


def weight_tensor(channels: int, fan_in: int, seed: int, magnitude: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(channels, fan_in, generator=generator) * magnitude
    weight[0, 0] = 0.0  # an all-zero first channel when fan_in == 1
    return weight


@PROFILE
@given(weights, st.sampled_from([0, 2, 3, 4, 5, 6, 7, 8]))
def test_quantize_weight_matches_naive_loop(weight, bits):
    codes, scale = quantize_weight(weight, bits)
    naive_codes, naive_scales = naive_quantize_weight(weight, bits)
    assert codes.dtype == torch.int32 and codes.shape == weight.shape
    assert codes.tolist() == naive_codes
    assert scale.tolist() == naive_scales
    assert torch.equal(weight_scale(weight, bits), scale)
    assert torch.equal(fake_quantize_weight(weight, bits), dequantize_weight(codes, scale))


@PROFILE
@given(weights, WEIGHT_BITS)
def test_weight_grid_is_fixed_point_and_error_bounded(weight, bits):
    codes, scale = quantize_weight(weight, bits)
    levels = weight_levels(bits)
    assert int(codes.abs().max()) <= levels
    grid = fake_quantize_weight(weight, bits)
    codes_again, scale_again = quantize_weight(grid, bits)
    assert torch.equal(codes_again, codes)
    assert torch.equal(fake_quantize_weight(grid, bits), grid)
    assert torch.equal(scale_again, scale)
    # narrow range covers [-max|W|, max|W|]: the error is at most half a step
    error = (weight - grid).abs()
    assert bool((error <= scale[:, None] / 2).all())


def test_weight_conv_shape_zero_bits_and_invalid_bits():
    weight = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    codes, scale = quantize_weight(weight, 4)
    naive_codes, naive_scales = naive_quantize_weight(weight, 4)
    assert codes.reshape(3, -1).tolist() == naive_codes and scale.tolist() == naive_scales
    codes, scale = quantize_weight(weight, 0)
    assert not codes.any() and not scale.any()
    assert torch.equal(fake_quantize_weight(weight, 0), torch.zeros_like(weight))
    for bits in (1, 9, -1, True, 2.0):
        with pytest.raises(ValueError):
            quantize_weight(weight, bits)
    with pytest.raises(ValueError):
        quantize_weight(torch.tensor(1.0), 8)


@PROFILE
@given(weights, st.data(), st.sampled_from(["minmax", "mse"]))
def test_per_channel_bits_equal_per_bits_calls(weight, data, weight_range):
    channels = weight.shape[0]
    bits = torch.tensor(
        data.draw(st.lists(st.sampled_from([0, 2, 4, 8, 3]), min_size=channels, max_size=channels))
    )
    codes, scale = quantize_weight_per_channel(weight, bits, weight_range)
    for channel, bit in enumerate(bits.tolist()):
        uniform_codes, uniform_scale = quantize_weight(weight, bit, weight_range)
        assert torch.equal(codes[channel], uniform_codes[channel])
        assert scale[channel].item() == uniform_scale[channel].item()
        if bit == 0:
            assert not codes[channel].any() and scale[channel].item() == 0.0


def naive_mse_range(channel: list[float], bits: int) -> float:
    """The ``"mse"`` rule with numpy float32 scalars: the widest fraction of max |w| whose
    grid has the least squared error (summed in float64)."""
    levels = np.float32(2 ** (bits - 1) - 1)
    max_abs = max(abs(np.float32(w)) for w in channel)
    max_abs = np.float32(1.0) if max_abs == 0 else max_abs
    best, best_error = None, None
    for k in range(16):
        candidate = np.float32(np.float32(1.0 - k / 20) * max_abs)
        scale = np.float32(candidate / levels)
        error = 0.0
        for w in channel:
            code = np.clip(np.rint(np.float32(w) / scale), -levels, levels)
            error += float(np.float32(np.float32(code * scale) - np.float32(w))) ** 2
        if best_error is None or error < best_error:
            best, best_error = candidate, error
    return float(best)


@PROFILE
@given(weights, WEIGHT_BITS)
def test_mse_range_is_the_best_fraction_by_a_naive_search(weight, bits):
    codes, scale = quantize_weight(weight, bits, "mse")
    levels = weight_levels(bits)
    rows = weight.reshape(weight.shape[0], -1).tolist()
    expected = [naive_mse_range(row, bits) / np.float32(levels) for row in rows]
    assert scale.tolist() == [float(np.float32(e)) for e in expected]
    assert int(codes.abs().max()) <= levels
    # never worse than min-max, whose range is one of the candidates
    minmax = fake_quantize_weight(weight, bits)
    mse = fake_quantize_weight(weight, bits, "mse")
    for row in range(weight.shape[0]):
        assert (mse[row] - weight[row]).double().square().sum() <= (
            (minmax[row] - weight[row]).double().square().sum()
        )


def test_mse_range_keeps_two_bit_channels_informative() -> None:
    # Gaussian channels of 144 weights (a 16-channel 3x3 conv): min-max puts the 2-bit threshold
    # at half the largest magnitude, zeroing most weights; the MSE range keeps most of the energy.
    weight = torch.randn(64, 16, 3, 3, generator=torch.Generator().manual_seed(0))
    energy = weight.square().sum()
    minmax = (fake_quantize_weight(weight, 2) - weight).square().sum() / energy
    mse = (fake_quantize_weight(weight, 2, "mse") - weight).square().sum() / energy
    assert minmax > 0.5 and mse < 0.25
    assert (fake_quantize_weight(weight, 2) == 0).float().mean() > 0.75
    assert (fake_quantize_weight(weight, 2, "mse") == 0).float().mean() < 0.5
    # 8 bits: clipping gains nothing measurable, the range stays within 10 % of the maximum
    ratio = weight_scale(weight, 8, "mse") / weight_scale(weight, 8)
    assert bool(((ratio > 0.9) & (ratio <= 1.0)).all())


def test_weight_range_rule_is_checked() -> None:
    with pytest.raises(ValueError, match="weight_range"):
        quantize_weight(torch.ones(2, 3), 4, "max")
    with pytest.raises(ValueError, match="weight_range"):
        quantize_weight_per_channel(torch.ones(2, 3), torch.tensor([2, 4]), "MSE")
    from zerobit.config import SUPPORTED_WEIGHT_RANGES
    from zerobit.quant import WEIGHT_RANGES

    assert SUPPORTED_WEIGHT_RANGES == WEIGHT_RANGES


@pytest.mark.parametrize(
    "bits",
    [torch.tensor([1, 2]), torch.tensor([2]), torch.tensor([2.0, 4.0]), torch.tensor([9, 2])],
)
def test_per_channel_bits_rejects(bits):
    with pytest.raises(ValueError):
        quantize_weight_per_channel(torch.ones(2, 3), bits)


# --- activations ------------------------------------------------------------------------------


def test_act_range_and_scale():
    assert [act_range(b, False) for b in (2, 4, 8)] == [(0, 3), (0, 15), (0, 255)]
    assert [act_range(b, True) for b in (2, 4, 8)] == [(-2, 1), (-8, 7), (-128, 127)]
    clip = torch.tensor(6.0)
    assert act_scale(clip, 8, False).item() == np.float32(6.0) / np.float32(255.0)
    assert act_scale(clip, 8, True).item() == np.float32(6.0) / np.float32(127.0)
    for bits in (0, 1, 9):
        with pytest.raises(ValueError):
            act_range(bits, False)


def naive_quantize_act(values: list[float], scale: float, bits: int, signed: bool) -> list[int]:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return [int(np.clip(np.rint(np.float32(v) / np.float32(scale)), lo, hi)) for v in values]


activations = st.lists(
    st.floats(min_value=-50.0, max_value=50.0, width=32), min_size=1, max_size=64
)
clips = st.floats(min_value=2.0**-10, max_value=20.0, width=32)


@PROFILE
@given(activations, clips, ACT_BITS, st.booleans())
def test_quantize_act_matches_naive_loop(values, clip, bits, signed):
    x = torch.tensor(values, dtype=torch.float32)
    scale = act_scale(torch.tensor(clip), bits, signed)
    codes = quantize_act(x, scale, bits, signed)
    assert codes.dtype == torch.int32
    assert codes.tolist() == naive_quantize_act(values, scale.item(), bits, signed)
    assert torch.equal(quantize_act(x, scale.item(), bits, signed), codes)
    fake = fake_quantize_act(x, scale, bits, signed)
    assert torch.equal(fake, codes.float() * scale)
    lo, hi = act_range(bits, signed)
    inside = (x >= lo * scale) & (x <= hi * scale)
    assert bool(((x - fake).abs()[inside] <= scale / 2).all())


@PROFILE
@given(clips, ACT_BITS, st.booleans())
def test_act_grid_values_are_fixed_points(clip, bits, signed):
    lo, hi = act_range(bits, signed)
    scale = act_scale(torch.tensor(clip), bits, signed)
    grid = torch.arange(lo, hi + 1, dtype=torch.float32) * scale
    assert torch.equal(fake_quantize_act(grid, scale, bits, signed), grid)
    assert quantize_act(grid, scale, bits, signed).tolist() == list(range(lo, hi + 1))


# --- bias -------------------------------------------------------------------------------------


def test_quantize_bias_matches_naive_loop():
    bias = torch.tensor([0.37, -1.5, 2.5e9, -3e9, 0.0, 7.0, 1.25], dtype=torch.float32)
    weight_scales = torch.tensor([0.01, 0.5, 1.0, 1.0, 0.3, 0.0, 0.5], dtype=torch.float32)
    input_scale = torch.tensor(0.5, dtype=torch.float32)
    codes = quantize_bias(bias, input_scale, weight_scales)
    expected = []
    for b, s_w in zip(bias.tolist(), weight_scales.tolist()):
        scale = float(np.float32(0.5) * np.float32(s_w))
        expected.append(0 if scale == 0 else min(max(round(b / scale), INT32_MIN), INT32_MAX))
    assert codes.dtype == torch.int32
    assert codes.tolist() == expected
    assert codes.tolist()[1] == -6  # -1.5 / 0.25 = -6 exactly; 1.25 / 0.25 = 5
    assert codes.tolist()[2:4] == [INT32_MAX, INT32_MIN]


@pytest.mark.parametrize("weight_range", ["minmax", "mse"])
def test_candidate_weight_scales_equal_weight_scale_bit_for_bit(weight_range) -> None:
    from zerobit.quant import candidate_weight_scales, weight_scale

    weight = torch.randn(12, 5, 3, 3)
    weight[4] = 0.0  # an all-zero channel takes the fallback maximum
    bits = (0, 2, 3, 4, 8)
    scales = candidate_weight_scales(weight, bits, weight_range)
    assert scales.shape == (len(bits), 12)
    for row, b in zip(scales, bits):
        assert torch.equal(row, weight_scale(weight, b, weight_range))
    expected = [float(np.float32(1.0) / np.float32(weight_levels(b))) for b in bits[1:]]
    assert scales[1:, 4].tolist() == expected

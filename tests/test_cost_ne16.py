# SPDX-License-Identifier: Apache-2.0
# Tests of the NE16 latency model: spec §4.4 vectors, a loop-level oracle, 1/N gradient slopes.
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zerobit.cost import LayerSpec, get_cost, ne16, ne16_latency
from zerobit.cost.ne16 import ceil_div, floor_div, mod, ne16_kernel_passes, ne16_mode_latency


def layer(kind, cin, kernel, output, cout, bits=8, input_bits=(8,), groups=1) -> LayerSpec:
    probs = (1,) * len(input_bits) if len(input_bits) == 1 else (0.5,) * 2
    return LayerSpec(
        "layer", kind, cin, kernel, output, (bits,), (cout,), input_bits, probs, groups=groups
    )


def loop_oracle(output, kernel, out_channels, in_channels, bits, depthwise):
    """Walk every pass, spatial tile, output block and input block, adding stage latencies.

    Written from the stage list of spec §4.4 with the constants worked out by hand: Load 19
    (1x1) or 31 (3x3/depthwise), StreamOut 13, NormQuant(k) = 9 + k, UpdateIdx 2.
    """
    kh, kw = kernel
    passes = [("3x3", 1)] * ((kh // 3) * (kw // 3))
    passes += [("1x1", 1)] * ((kh % 3) * kw + (kw % 3) * kh - (kh % 3) * (kw % 3))
    cycles = 0
    for mode, _ in passes:
        block = 16 if depthwise else 32
        for _row in range(0, output[0], 3):
            for _col in range(0, output[1], 3):
                for first in range(0, out_channels, block):
                    k = min(block, out_channels - first)
                    if depthwise:
                        cycles += 31 + (6 + k) + (6 + k * bits) + 2
                    else:
                        load, matvec = (19, 6 + k) if mode == "1x1" else (31, 6 + k * bits)
                        for _ in range(0, in_channels, 16):
                            cycles += load + 6 + matvec + 2
                    cycles += (9 + k) + 13
    return cycles


@pytest.mark.parametrize(
    ("kind", "cin", "kernel", "output", "cout", "expected"),
    [
        ("conv", 3, (3, 3), (32, 32), 16, 25_531),  # ResNet-8 stem
        ("conv", 16, (3, 3), (32, 32), 16, 25_531),
        ("conv", 16, (3, 3), (16, 16), 32, 12_780),  # stride 2
        ("conv", 32, (3, 3), (16, 16), 32, 23_616),
        ("conv", 16, (1, 1), (16, 16), 32, 4_284),
        ("conv", 32, (3, 3), (8, 8), 64, 11_808),  # stride 2
        ("conv", 64, (3, 3), (8, 8), 64, 22_644),
        ("conv", 32, (1, 1), (8, 8), 64, 3_312),
        ("linear", 64, (), (), 10, 204),
    ],
)
def test_resnet8_per_layer_vectors(kind, cin, kernel, output, cout, expected):
    result = ne16(layer(kind, cin, kernel, output, cout))
    assert isinstance(result, int)
    assert result == expected


def test_stage_constants_by_hand():
    # 3x3 conv, one 3x3 tile, 32 outputs from 16 inputs at 8 bits:
    # Load 31 + 6 + MatVec (6 + 32*8) + 2 + NormQuant (9 + 32) + StreamOut 13.
    assert ne16_latency((3, 3), (3, 3), 32, 16, 8) == 31 + 6 + 262 + 2 + 41 + 13 == 355
    # 1x1 mode is not bit-serial: 19 + 6 + (6 + 32) + 2 + 41 + 13.
    assert ne16_latency((3, 3), (1, 1), 32, 16, 2) == 119
    # Depthwise, 16-channel block: 31 + (6 + 16) + (6 + 16*8) + 2 + (9 + 16) + 13.
    assert ne16_latency((3, 3), (3, 3), 16, 16, 8, depthwise=True) == 227


@pytest.mark.parametrize(
    ("kernel", "passes"),
    [((3, 3), (1, 0)), ((1, 1), (0, 1)), ((10, 4), (3, 13)), ((5, 5), (1, 16)), ((1, 7), (0, 7))],
)
def test_kernel_passes(kernel, passes):
    assert ne16_kernel_passes(kernel) == passes


@settings(max_examples=100, derandomize=True, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12))
def test_kernel_passes_cover_every_tap(kh, kw):
    passes_3x3, passes_1x1 = ne16_kernel_passes((kh, kw))
    assert 9 * passes_3x3 + passes_1x1 == kh * kw


@settings(max_examples=120, derandomize=True, deadline=None)
@given(
    output=st.tuples(st.integers(1, 10), st.integers(1, 10)),
    kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    out_channels=st.integers(1, 80),
    in_channels=st.integers(1, 80),
    bits=st.integers(1, 8),
    depthwise=st.booleans(),
)
def test_closed_form_equals_loop_oracle(output, kernel, out_channels, in_channels, bits, depthwise):
    expected = loop_oracle(output, kernel, out_channels, in_channels, bits, depthwise)
    result = ne16_latency(output, kernel, out_channels, in_channels, bits, depthwise)
    assert result == expected
    soft = ne16_latency(
        output,
        kernel,
        torch.tensor(float(out_channels), dtype=torch.float64),
        torch.tensor(float(in_channels), dtype=torch.float64),
        bits,
        depthwise,
    )
    assert soft.item() == expected


def test_dscnn_layers_by_hand():
    # Stem 10x4 -> 3 passes in 3x3 mode + 13 in 1x1 mode; 25x5 output = 9*2 tiles; 64 = 2 blocks.
    assert ne16(layer("conv", 1, (10, 4), (25, 5), 64)) == 18 * 2 * (3 * 355 + 13 * 119)
    assert ne16(layer("depthwise", 64, (3, 3), (25, 5), 64)) == 18 * 4 * 227 == 16_344
    pointwise = 18 * 2 * (4 * (19 + 6 + 38 + 2) + 41 + 13)
    assert ne16(layer("conv", 64, (1, 1), (25, 5), 64)) == pointwise == 11_304
    assert ne16(layer("linear", 64, (), (), 12)) == 4 * (19 + 6 + 18 + 2) + 21 + 13 == 214


def test_conv1d_is_a_row_conv():
    spec = layer("conv", 16, (3,), (10,), 32)
    # (1, 3) kernel: 3 passes in 1x1 mode over a (1, 10) output = 4 tiles.
    assert ne16(spec) == ne16_latency((1, 10), (1, 3), 32, 16, 8) == 3 * 4 * 119


def test_depthwise_larger_kernel_runs_every_pass_in_depthwise_mode():
    # 5x5 = one 3x3 pass + 16 1x1 passes, each a 16-channel depthwise iteration.
    assert ne16(layer("depthwise", 16, (5, 5), (3, 3), 16)) == 17 * 227


def test_mixed_precision_runs_one_sublayer_per_bit_width():
    spec = LayerSpec("mix", "conv", 16, (3, 3), (3, 3), (0, 2, 8), (5, 20, 40), (8,), (1,))
    # 2 bits, K_o = 20: 31 + 6 + (6 + 40) + 2 + (9 + 20) + 13 = 127.
    # 8 bits, K_o = 40: one block of 32 (355) plus 8: 31 + 6 + (6 + 64) + 2 + (9 + 8) + 13 = 139.
    assert ne16(spec) == 127 + 355 + 139 == 621
    assert ne16(LayerSpec("off", "conv", 16, (3, 3), (3, 3), (0,), (4,), (8,), (1,))) == 0


def test_soft_variant_prices_a_sliver_of_a_bit_width_by_its_fraction():
    # 40 channels at 8 bits and a sliver eps of expected channels at 2 bits (as a layer has
    # during the search at a low temperature). ne16 charges the 2-bit sub-layer a whole
    # iteration for any eps > 0; ne16_soft charges eps times it, the first-order expectation,
    # which vanishes with eps; both are ne16 at whole counts.
    def spec(eps: float, grad: bool = False) -> LayerSpec:
        counts = (torch.tensor(0.0), torch.tensor(eps, requires_grad=grad), torch.tensor(40.0))
        return LayerSpec("sliver", "conv", 16, (3, 3), (3, 3), (0, 2, 8), counts, (8,), (1,))

    soft = get_cost("ne16_soft")
    whole = ne16(LayerSpec("whole", "conv", 16, (3, 3), (3, 3), (0, 2, 8), (0, 0, 40), (8,), (1,)))
    assert whole == 355 + 139  # one block of 32 and a tail of 8, at 8 bits (above)

    def iteration(eps: float) -> float:  # at 2 bits, one tile; NormQuant = 9 + cd(4 eps, 4)
        return 31 + 6 + (6 + 2 * eps) + 2 + (9 + math.floor((4 * eps - 1) / 4) + 1) + 13

    for eps in (0.3, 0.01, 1e-4):
        assert float(ne16(spec(eps))) == pytest.approx(whole + iteration(eps))
        assert float(soft(spec(eps))) == pytest.approx(whole + eps * iteration(eps))
    assert float(soft(spec(1.0))) == float(ne16(spec(1.0))) == whole + iteration(1.0) == whole + 70
    sliver = spec(0.3, grad=True)
    (grad,) = torch.autograd.grad(soft(sliver), [sliver.channels[1]])
    assert float(grad) > 0  # fewer expected 2-bit channels, fewer cycles


# ---------------------------------------------------------------- gradients


def test_straight_through_helpers_are_exact_with_slope_one_over_n():
    x = torch.tensor(47.5, dtype=torch.float64, requires_grad=True)
    for helper, expected in ((floor_div, 1.0), (mod, 15.5), (ceil_div, 2.0)):
        x.grad = None
        result = helper(x, 32)
        assert result.item() == expected
        result.backward()
        assert x.grad.item() == 1 / 32
    assert (floor_div(47, 32), mod(47, 32), ceil_div(47, 32), ceil_div(64, 32)) == (1, 15, 2, 2)


def test_gradient_wrt_output_channels_has_slope_one_over_block():
    out_channels = torch.tensor(48.0, dtype=torch.float64, requires_grad=True)
    spec = LayerSpec("c", "conv", 16, (3, 3), (3, 3), (8,), (out_channels,), (8,), (1,))
    result = ne16(spec)
    assert result.item() == 355 + 211
    result.backward()
    # n_full = floor(K_o/32) and r = K_o mod 32 both have slope 1/32; Iteration(r) has slope
    # 8 (MatVec, 8 bits) + 1 (NormQuant) w.r.t. r.
    assert out_channels.grad.item() == pytest.approx((355 + 9) / 32)


def test_gradient_at_full_blocks_drops_the_empty_tail():
    out_channels = torch.tensor(64.0, dtype=torch.float64, requires_grad=True)
    spec = LayerSpec("dw", "depthwise", 64, (3, 3), (6, 6), (8,), (out_channels,), (8,), (1,))
    result = ne16(spec)
    assert result.item() == 4 * 4 * 227
    result.backward()
    # r = 0: only the full-block term remains, with slope 1/16 (depthwise block).
    assert out_channels.grad.item() == pytest.approx(4 * 227 / 16)


def test_gradient_wrt_input_channels_has_slope_one_over_sixteen():
    in_channels = torch.tensor(16.0, dtype=torch.float64, requires_grad=True)
    spec = LayerSpec("c", "conv", in_channels, (3, 3), (3, 3), (8,), (48,), (8,), (1,))
    result = ne16(spec)
    result.backward()
    # n_in = cd(K_i, 16) multiplies the per-input-block work of both iterations.
    per_block_full = 31 + 6 + (6 + 32 * 8) + 2
    per_block_tail = 31 + 6 + (6 + 16 * 8) + 2
    assert in_channels.grad.item() == pytest.approx((per_block_full + per_block_tail) / 16)


def test_gradient_reaches_every_channel_count():
    counts = (
        torch.tensor(3.0, requires_grad=True),
        torch.tensor(20.0, requires_grad=True),
        torch.tensor(40.0, requires_grad=True),
    )
    spec = LayerSpec("mix", "conv", 16, (3, 3), (3, 3), (0, 2, 8), counts, (8,), (1,))
    result = ne16(spec)
    assert result.item() == 621
    grads = torch.autograd.grad(result, counts, allow_unused=True, materialize_grads=True)
    assert grads[0].item() == 0  # pruned channels are not a sub-layer
    # K_o = 20 at 2 bits: (Iteration(32) at 2 bits = 31+6+70+2+41+13 = 163) / 32 + (2 + 1) / 32.
    assert grads[1].item() == pytest.approx((163 + 3) / 32)
    assert grads[2].item() == pytest.approx((355 + 9) / 32)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (layer("conv", 16, (3, 3), (8, 8), 16, input_bits=(4,)), "8-bit input"),
        (layer("conv", 16, (3, 3), (8, 8), 16, input_bits=(4, 8)), "8-bit input"),
        (layer("conv", 16, (3, 3), (8, 8), 16, bits=16), "at most 8 bits"),
        (layer("conv", 16, (3, 3), (8, 8), 16, groups=2), "grouped"),
        (layer("conv", 16, (3, 3, 3), (8, 8, 8), 16), "3-d"),
    ],
)
def test_ne16_errors(spec, message):
    with pytest.raises(ValueError, match=f"'layer'.*{message}"):
        ne16(spec)


def test_ne16_latency_argument_errors():
    with pytest.raises(ValueError, match="1 to 8 bits"):
        ne16_latency((3, 3), (3, 3), 16, 16, 0)
    with pytest.raises(ValueError, match="kernel_size"):
        ne16_latency((3, 3), (0, 3), 16, 16, 8)
    with pytest.raises(ValueError, match="mode"):
        ne16_mode_latency((3, 3), 16, 16, 8, "5x5")

# SPDX-License-Identifier: Apache-2.0
# Tests of zerobit.quant.ste: fused Functions against naive per-candidate references.
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zerobit.quant.ste
from zerobit.quant import (
    act_range,
    act_scale,
    fake_quant_act,
    fake_quantize_act,
    fake_quantize_weight,
    mixed_act_quant,
    mixed_weight_quant,
    quantize_act,
    quantize_bias,
    quantize_bias_ste,
    quantize_weight,
    round_ste,
)

PROFILE = settings(derandomize=True, max_examples=30, deadline=None)

# Gradients are sums, accumulated in another order than the reference's: exact to float64
# rounding in float64, and to float32 reduction error in float32.
TOLERANCE = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
    torch.float32: {"rtol": 1e-4, "atol": 1e-4},
}


def random_probs(count: int, *shape: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(count, *shape, generator=generator, dtype=dtype), dim=0)


# --- weights ----------------------------------------------------------------------------------


def reference_weight(weight, probs, bits):
    """Forward in the documented order; gradients from autograd on per-candidate terms."""
    mixed = torch.zeros_like(weight)
    for index, bit in enumerate(bits):
        codes, scale = quantize_weight(weight.detach(), bit)
        mix = probs[index] * scale  # (C,), carries the gradient to probs
        mixed = mixed + codes.to(weight.dtype) * mix.reshape(-1, *[1] * (weight.dim() - 1))
    # Straight-through identity for W through every candidate, 0 bits included.
    return mixed + sum(
        probs[i].reshape(-1, *[1] * (weight.dim() - 1)) for i in range(len(bits))
    ) * (weight - weight.detach())


WEIGHT_SHAPES = [(5, 3), (4, 2, 3, 3), (3, 1, 5), (1, 7)]


@PROFILE
@given(
    st.sampled_from(WEIGHT_SHAPES),
    st.sampled_from([(0, 2, 4, 8), (2, 4, 8), (0, 8), (3,), (0,)]),
    st.integers(min_value=0, max_value=10_000),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_mixed_weight_quant_matches_reference(shape, bits, seed, dtype):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(*shape, generator=generator, dtype=dtype)
    weight[-1] = 0.0  # an all-zero channel
    probs = random_probs(len(bits), shape[0], seed=seed, dtype=dtype)
    grad = torch.randn(*shape, generator=generator, dtype=dtype)

    latent = weight.clone().requires_grad_()
    theta = probs.clone().requires_grad_()
    out = mixed_weight_quant(latent, theta, bits)
    out.backward(grad)

    ref_latent = weight.clone().requires_grad_()
    ref_theta = probs.clone().requires_grad_()
    ref = reference_weight(ref_latent, ref_theta, bits)
    ref.backward(grad)

    assert out.dtype == dtype and out.shape == weight.shape
    assert torch.equal(out, ref.detach())
    torch.testing.assert_close(latent.grad, ref_latent.grad, **TOLERANCE[dtype])
    assert torch.equal(latent.grad, grad)  # identity, whatever probs
    torch.testing.assert_close(theta.grad, ref_theta.grad, **TOLERANCE[dtype])
    if 0 in bits:
        assert not theta.grad[bits.index(0)].any()


def test_mixed_weight_one_hot_equals_fake_quantize_and_zero_bits_prune():
    weight = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(3))
    bits = (0, 2, 4, 8)
    choice = torch.tensor([0, 1, 2, 3, 3, 0])
    probs = torch.nn.functional.one_hot(choice, len(bits)).T.float()
    out = mixed_weight_quant(weight, probs, bits)
    for channel, index in enumerate(choice.tolist()):
        expected = fake_quantize_weight(weight, bits[index])[channel]
        assert torch.equal(out[channel], expected)
    assert not out[0].any() and not out[5].any()


def test_mixed_weight_quant_rejects():
    weight = torch.randn(3, 2)
    with pytest.raises(ValueError):
        mixed_weight_quant(weight, torch.ones(2, 3), (1, 4))
    with pytest.raises(ValueError):
        mixed_weight_quant(weight, torch.ones(2, 2), (2, 4))
    with pytest.raises(ValueError):
        mixed_weight_quant(weight, torch.ones(0, 3), ())


# --- activations ------------------------------------------------------------------------------


def reference_act_forward(x, clips, probs, bits, signed):
    """The documented forward: sum over q of (probs[q] * s_q) * codes_q, in candidate order."""
    out = torch.zeros_like(x)
    for q, bit in enumerate(bits):
        scale = act_scale(clips[q], bit, signed)
        out = out + (probs[q] * scale) * quantize_act(x, scale, bit, signed).to(x.dtype)
    return out


def reference_act_autograd(x, clips, probs, bits, signed):
    """Per-candidate LSQ fake-quant built from torch ops with straight-through tricks."""
    out = 0
    for q, bit in enumerate(bits):
        lo, hi = act_range(bit, signed)
        scale = clips[q] / hi
        scaled = x / scale
        rounded = scaled + (torch.round(scaled) - scaled).detach()
        inside = ((scaled > lo) & (scaled < hi)).detach()
        codes = torch.where(inside, rounded, torch.clamp(torch.round(scaled), lo, hi).detach())
        out = out + probs[q] * (scale * codes)
    return out


def act_case(seed, shape, bits, signed, dtype, one_hot=None):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=generator, dtype=dtype) * 4
    x.view(-1)[:3] = 0.0  # exact zeros sit on the unsigned lower bound
    clips = (torch.rand(len(bits), generator=generator, dtype=dtype) * 5 + 0.5).to(dtype)
    x.view(-1)[3] = clips[0]  # exactly on the upper bound of candidate 0
    if one_hot is None:
        probs = random_probs(len(bits), seed=seed, dtype=dtype)
    else:
        probs = torch.zeros(len(bits), dtype=dtype)
        probs[one_hot] = 1.0
    grad = torch.randn(*shape, generator=generator, dtype=dtype)
    return x, clips, probs, grad


def run_both(x, clips, probs, bits, signed, grad, requires=(True, True, True)):
    leaves = [t.clone().requires_grad_(r) for t, r in zip((x, clips, probs), requires)]
    out = mixed_act_quant(*leaves, bits, signed)
    out.backward(grad)
    ref_leaves = [t.clone().requires_grad_(r) for t, r in zip((x, clips, probs), requires)]
    ref = reference_act_autograd(*ref_leaves, bits, signed)
    ref.backward(grad)
    return out, leaves, ref, ref_leaves


@PROFILE
@given(
    st.integers(min_value=0, max_value=10_000),
    st.sampled_from([(2, 4, 8), (8,), (3, 5), (2, 2)]),
    st.booleans(),
    st.sampled_from([torch.float32, torch.float64]),
    st.sampled_from([(2, 3, 4, 4), (17,), (4, 9)]),
)
def test_mixed_act_quant_matches_reference(seed, bits, signed, dtype, shape):
    x, clips, probs, grad = act_case(seed, shape, bits, signed, dtype)
    out, leaves, ref, ref_leaves = run_both(x, clips, probs, bits, signed, grad)
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.equal(out, reference_act_forward(x, clips, probs, bits, signed))
    torch.testing.assert_close(out, ref.detach(), **TOLERANCE[dtype])
    for leaf, ref_leaf in zip(leaves, ref_leaves):
        assert leaf.grad.dtype == leaf.dtype
        torch.testing.assert_close(leaf.grad, ref_leaf.grad, **TOLERANCE[dtype])


@pytest.mark.parametrize(
    "requires", [(True, False, False), (False, True, False), (False, False, True)]
)
def test_mixed_act_quant_partial_gradients(requires):
    bits = (2, 4, 8)
    x, clips, probs, grad = act_case(7, (3, 5, 6), bits, True, torch.float64)
    _, leaves, _, ref_leaves = run_both(x, clips, probs, bits, True, grad, requires)
    for leaf, ref_leaf, needed in zip(leaves, ref_leaves, requires):
        if needed:
            torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=1e-10, atol=1e-10)
        else:
            assert leaf.grad is None


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("hot", [0, 2])
def test_one_hot_fast_path_equals_general_path(hot, signed):
    bits = (2, 4, 8)
    x, clips, probs, grad = act_case(11, (2, 4, 5, 5), bits, signed, torch.float32, one_hot=hot)
    out, leaves, ref, ref_leaves = run_both(x, clips, probs, bits, signed, grad)
    scale = act_scale(clips[hot], bits[hot], signed)
    single = fake_quantize_act(x, scale, bits[hot], signed)
    assert torch.equal(out, single)
    assert torch.equal(out, reference_act_forward(x, clips, probs, bits, signed))
    lo, hi = act_range(bits[hot], signed)
    scaled = x / scale
    assert torch.equal(leaves[0].grad, grad * ((scaled > lo) & (scaled < hi)))  # exact
    for leaf, ref_leaf in zip(leaves, ref_leaves):
        torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=1e-4, atol=1e-4)
    assert leaves[2].grad[1 - hot // 2].abs().item() > 0  # unselected candidates still learn
    assert leaves[1].grad[1].item() == 0.0  # a zero-probability clip gets no gradient

    # fake_quant_act is the single-candidate path with the same gradient rules
    x_leaf = x.clone().requires_grad_()
    clip_leaf = clips[hot].clone().requires_grad_()
    single_out = fake_quant_act(x_leaf, clip_leaf, bits[hot], signed)
    single_out.backward(grad)
    assert torch.equal(single_out, single)
    assert torch.equal(x_leaf.grad, leaves[0].grad)
    torch.testing.assert_close(clip_leaf.grad, leaves[1].grad[hot], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("probs_hot", [None, 1])
def test_sliced_passes_equal_whole_tensor_passes(monkeypatch, probs_hot):
    bits = (2, 4, 8)
    x, clips, probs, grad = act_case(13, (3, 7, 11), bits, True, torch.float64, one_hot=probs_hot)
    whole, whole_leaves, _, _ = run_both(x, clips, probs, bits, True, grad)
    monkeypatch.setattr(zerobit.quant.ste, "_SLICE_BYTES", 8 * 40)  # 40 elements, ragged tail
    sliced, sliced_leaves, _, ref_leaves = run_both(x, clips, probs, bits, True, grad)
    assert torch.equal(sliced, whole)
    assert torch.equal(sliced_leaves[0].grad, whole_leaves[0].grad)
    for leaf, whole_leaf, ref_leaf in zip(sliced_leaves, whole_leaves, ref_leaves):
        torch.testing.assert_close(leaf.grad, whole_leaf.grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=1e-10, atol=1e-10)


def test_all_zero_probs_give_zero_output_and_input_gradient():
    bits = (2, 8)
    x, clips, _, grad = act_case(3, (4, 6), bits, False, torch.float64)
    probs = torch.zeros(2, dtype=torch.float64)
    out, leaves, ref, ref_leaves = run_both(x, clips, probs, bits, False, grad)
    assert not out.any() and not leaves[0].grad.any() and not leaves[1].grad.any()
    torch.testing.assert_close(leaves[2].grad, ref_leaves[2].grad, rtol=1e-10, atol=1e-10)


def test_mixed_act_quant_saves_only_the_input():
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    x, clips, probs, grad = act_case(5, (2, 3, 8, 8), (2, 4, 8), False, torch.float32)
    x.requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = mixed_act_quant(x, clips.requires_grad_(), probs.requires_grad_(), (2, 4, 8), False)
    out.backward(grad)
    assert len(saved) == 1 and saved[0] is x


def test_mixed_act_quant_rejects():
    x = torch.randn(4)
    with pytest.raises(ValueError):
        mixed_act_quant(x, torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]), (2, 4), False)
    with pytest.raises(ValueError):
        mixed_act_quant(x, torch.tensor([1.0]), torch.tensor([0.5, 0.5]), (2, 4), False)
    with pytest.raises(ValueError):
        mixed_act_quant(x, torch.tensor([1.0]), torch.tensor([1.0]), (1,), False)
    with pytest.raises(ValueError):
        mixed_act_quant(x.long(), torch.tensor([1.0]), torch.tensor([1.0]), (4,), False)
    with pytest.raises(ValueError):
        fake_quant_act(x, torch.tensor([1.0, 2.0]), 4, False)


# --- round and bias ---------------------------------------------------------------------------


def test_round_ste():
    x = torch.tensor([-2.5, -1.5, -0.5, 0.4, 0.5, 1.5, 2.6], requires_grad=True)
    out = round_ste(x)
    assert out.tolist() == [-2.0, -2.0, -0.0, 0.0, 0.0, 2.0, 3.0]
    grad = torch.arange(7.0)
    out.backward(grad)
    assert torch.equal(x.grad, grad)


def test_quantize_bias_ste_forward_and_gradients():
    bias = torch.tensor([0.37, -1.5, 2.5e9, 0.8, 7.0], requires_grad=True)
    input_scale = torch.tensor(0.5)
    weight_scale = torch.tensor([0.01, 0.5, 1.0, 0.3, 0.0])
    scale = (input_scale * weight_scale).requires_grad_()
    keep = torch.tensor([0.9, 1.0, 0.5, 0.25, 0.0], requires_grad=True)
    out = quantize_bias_ste(bias, scale, keep)
    codes = quantize_bias(bias, input_scale, weight_scale)
    value = (codes.double() * scale.detach().double()).float()
    assert torch.equal(out, keep.detach() * value)
    assert value[4].item() == 0.0 and codes[2].item() == 2**31 - 1
    grad = torch.tensor([1.0, -2.0, 3.0, 0.5, 4.0])
    out.backward(grad)
    assert torch.equal(bias.grad, grad * keep.detach())
    assert torch.equal(keep.grad, grad * value)
    assert scale.grad is None

    hard = quantize_bias_ste(bias.detach(), scale.detach())
    assert torch.equal(hard, value)

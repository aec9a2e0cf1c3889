# SPDX-License-Identifier: Apache-2.0
# Tests of zerobit.quant.ste: fused Functions against naive per-candidate references.
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zerobit.quant.ste
from zerobit.quant import (
    _native,
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
    quantize_weight_per_channel,
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


def reference_weight(weight, probs, bits, weight_range="minmax"):
    """Forward in the documented order; gradients from autograd on per-candidate terms."""
    mixed = torch.zeros_like(weight)
    for index, bit in enumerate(bits):
        codes, scale = quantize_weight(weight.detach(), bit, weight_range)
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
    st.sampled_from(["minmax", "mse"]),
)
def test_mixed_weight_quant_matches_reference(shape, bits, seed, dtype, weight_range):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(*shape, generator=generator, dtype=dtype)
    weight[-1] = 0.0  # an all-zero channel
    probs = random_probs(len(bits), shape[0], seed=seed, dtype=dtype)
    grad = torch.randn(*shape, generator=generator, dtype=dtype)

    latent = weight.clone().requires_grad_()
    theta = probs.clone().requires_grad_()
    out = mixed_weight_quant(latent, theta, bits, weight_range)
    out.backward(grad)

    ref_latent = weight.clone().requires_grad_()
    ref_theta = probs.clone().requires_grad_()
    ref = reference_weight(ref_latent, ref_theta, bits, weight_range)
    ref.backward(grad)

    assert out.dtype == dtype and out.shape == weight.shape
    assert torch.equal(out, ref.detach())
    torch.testing.assert_close(latent.grad, ref_latent.grad, **TOLERANCE[dtype])
    assert torch.equal(latent.grad, grad)  # identity, whatever probs
    torch.testing.assert_close(theta.grad, ref_theta.grad, **TOLERANCE[dtype])
    if 0 in bits:
        assert not theta.grad[bits.index(0)].any()


@pytest.mark.parametrize("weight_range", ["minmax", "mse"])
def test_mixed_weight_one_hot_equals_fake_quantize_and_zero_bits_prune(weight_range):
    weight = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(3))
    bits = (0, 2, 4, 8)
    choice = torch.tensor([0, 1, 2, 3, 3, 0])
    probs = torch.nn.functional.one_hot(choice, len(bits)).T.float()
    out = mixed_weight_quant(weight, probs, bits, weight_range)
    for channel, index in enumerate(choice.tolist()):
        expected = fake_quantize_weight(weight, bits[index], weight_range)[channel]
        assert torch.equal(out[channel], expected)
        # The frozen model's quantizer: one width per channel, ranges computed per channel.
        codes, scale = quantize_weight_per_channel(weight, bits_tensor(bits, choice), weight_range)
        assert torch.equal(out[channel], codes[channel].float() * scale[channel])
    assert not out[0].any() and not out[5].any()


def bits_tensor(bits, choice):
    return torch.tensor([bits[i] for i in choice.tolist()])


def test_mixed_weight_quant_rejects():
    weight = torch.randn(3, 2)
    with pytest.raises(ValueError):
        mixed_weight_quant(weight, torch.ones(2, 3), (1, 4))
    with pytest.raises(ValueError):
        mixed_weight_quant(weight, torch.ones(2, 2), (2, 4))
    with pytest.raises(ValueError):
        mixed_weight_quant(weight, torch.ones(0, 3), ())
    with pytest.raises(ValueError, match="weight_range"):
        mixed_weight_quant(weight, torch.ones(2, 3) / 2, (2, 4), "percentile")
    with pytest.raises(ValueError, match="ranges"):
        mixed_weight_quant(weight, torch.ones(2, 3) / 2, (2, 4), ranges=torch.ones(3))


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
    monkeypatch.setenv("ZEROBIT_NATIVE", "0")  # slices are the pure-torch path's
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


# --- native kernels against the pure-torch path -----------------------------------------------


def compiler_present() -> bool:
    return sys.platform.startswith("linux") and shutil.which(os.environ.get("CXX") or "c++")


@pytest.fixture
def native(monkeypatch):
    monkeypatch.delenv("ZEROBIT_NATIVE", raising=False)
    if not _native.available():
        pytest.skip("native kernels unavailable (a RuntimeWarning said why)")


def test_native_kernels_are_built_where_a_compiler_exists(monkeypatch):
    monkeypatch.delenv("ZEROBIT_NATIVE", raising=False)
    if not compiler_present():
        pytest.skip("no C++ compiler: the pure-torch path is the only one")
    assert _native.available()
    assert _native.supports(torch.zeros(3)) and _native.supports(torch.zeros(3).double())
    assert not _native.supports(torch.zeros(3, dtype=torch.bfloat16))
    monkeypatch.setenv("ZEROBIT_NATIVE", "0")
    assert not _native.available() and not _native.supports(torch.zeros(3))


def hard_case(seed, shape, bits, signed, dtype, probs_kind):
    """Random x with exact ties, exact bounds, values beyond the clips, zeros and -0.0."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=generator, dtype=dtype) * 4
    clips = (torch.rand(len(bits), generator=generator, dtype=dtype) * 5 + 0.5).to(dtype)
    low, high = act_range(bits[0], signed)
    clips[0] = high / 8  # candidate 0 has scale 1/8: (k + 1/2) / 8 are exact ties
    flat = x.view(-1)
    count = flat.numel()
    special = torch.cat(
        [
            (torch.arange(low - 3, high + 3, dtype=dtype) + 0.5) / 8,  # ties, in and out
            torch.tensor([low / 8, high / 8, -0.0, 0.0, -1e-3, 1e3, -1e3], dtype=dtype),
        ]
    )
    positions = torch.randperm(count, generator=generator)[: min(count, 3 * special.numel())]
    flat[positions] = special.repeat(3)[: positions.numel()]
    if probs_kind == "soft":
        probs = random_probs(len(bits), seed=seed, dtype=dtype)
    elif probs_kind == "zero":  # one candidate has probability 0
        probs = random_probs(len(bits), seed=seed, dtype=dtype)
        probs[-1] = 0.0
    else:
        probs = torch.zeros(len(bits), dtype=dtype)
        probs[probs_kind] = 1.0
    grad = torch.randn(*shape, generator=generator, dtype=dtype)
    return x, clips, probs, grad


def run_path(monkeypatch, use_native, x, clips, probs, bits, signed, grad, requires=(1, 1, 1)):
    monkeypatch.setenv("ZEROBIT_NATIVE", "1" if use_native else "0")
    leaves = [t.clone().requires_grad_(bool(r)) for t, r in zip((x, clips, probs), requires)]
    out = mixed_act_quant(*leaves, bits, signed)
    out.backward(grad)
    return out.detach(), [leaf.grad for leaf in leaves]


def bits_of(tensor):
    return tensor.view(torch.int32 if tensor.dtype == torch.float32 else torch.int64)


def assert_same_sums(native_grad, torch_grad, dtype):
    # Sums over the tensor in another order: the pure-torch path adds float32 products in float32
    # (BLAS dot) per 1 MiB slice, the native path adds them in float64 per 16Ki-element chunk.
    if torch_grad is None:
        assert native_grad is None
        return
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    magnitude = max(1.0, float(torch_grad.abs().max()))
    torch.testing.assert_close(native_grad, torch_grad, rtol=tolerance, atol=tolerance * magnitude)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(
    ("shape", "bits", "probs_kind"),
    [
        ((1,), (2, 4, 8), "soft"),
        ((17,), (8,), 0),
        ((3, 5, 7), (3, 5), "soft"),
        ((2, 16, 28, 28), (2, 4, 8), "soft"),  # 25088 elements: two chunks, a ragged one
        ((2, 16, 28, 28), (2, 4, 8), "zero"),
        ((5, 7001), (2, 4, 8), 1),  # one-hot
        ((5, 7001), (2, 4, 8), 2),
    ],
)
def test_native_equals_pure_torch(native, monkeypatch, dtype, signed, shape, bits, probs_kind):
    case = hard_case(3, shape, bits, signed, dtype, probs_kind)
    native_out, native_grads = run_path(monkeypatch, True, *case[:3], bits, signed, case[3])
    torch_out, torch_grads = run_path(monkeypatch, False, *case[:3], bits, signed, case[3])
    assert torch.equal(bits_of(native_out), bits_of(torch_out))  # bit for bit, -0.0 included
    assert torch.equal(bits_of(native_grads[0]), bits_of(torch_grads[0]))
    for native_grad, torch_grad in zip(native_grads[1:], torch_grads[1:]):
        assert_same_sums(native_grad, torch_grad, dtype)
    if probs_kind == "zero":
        assert native_grads[1][-1].item() == 0.0


@pytest.mark.parametrize("requires", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)])
def test_native_partial_gradients(native, monkeypatch, requires):
    bits = (2, 4, 8)
    case = hard_case(5, (3, 40, 41), bits, True, torch.float32, "soft")
    native_out, native_grads = run_path(monkeypatch, True, *case[:3], bits, True, case[3], requires)
    torch_out, torch_grads = run_path(monkeypatch, False, *case[:3], bits, True, case[3], requires)
    assert torch.equal(bits_of(native_out), bits_of(torch_out))
    if requires[0]:
        assert torch.equal(bits_of(native_grads[0]), bits_of(torch_grads[0]))
    for native_grad, torch_grad in zip(native_grads, torch_grads):
        assert (native_grad is None) == (torch_grad is None)
    for native_grad, torch_grad in zip(native_grads[1:], torch_grads[1:]):
        assert_same_sums(native_grad, torch_grad, torch.float32)


def test_native_all_zero_probs(native, monkeypatch):
    bits = (2, 8)
    x, clips, _, grad = hard_case(7, (4, 9000), bits, False, torch.float32, "soft")
    probs = torch.zeros(2)
    native_out, native_grads = run_path(monkeypatch, True, x, clips, probs, bits, False, grad)
    torch_out, torch_grads = run_path(monkeypatch, False, x, clips, probs, bits, False, grad)
    assert not native_out.any() and not native_grads[0].any() and not native_grads[1].any()
    assert_same_sums(native_grads[2], torch_grads[2], torch.float32)


def test_native_takes_strided_inputs_and_expanded_gradients(native, monkeypatch):
    bits = (2, 4, 8)
    x, clips, probs, _ = hard_case(9, (6, 30, 40), bits, False, torch.float32, "soft")
    results = []
    for use_native in (True, False):
        monkeypatch.setenv("ZEROBIT_NATIVE", "1" if use_native else "0")
        leaf = x.clone().requires_grad_()
        strided = leaf.transpose(0, 2)  # not contiguous
        clip_leaf, probs_leaf = clips.clone().requires_grad_(), probs.clone().requires_grad_()
        out = mixed_act_quant(strided, clip_leaf, probs_leaf, bits, False)
        out.sum().backward()  # an expanded (stride 0) gradient
        results.append((out.detach(), leaf.grad, clip_leaf.grad, probs_leaf.grad))
    (native_out, *native_grads), (torch_out, *torch_grads) = results
    assert torch.equal(bits_of(native_out), bits_of(torch_out))
    assert torch.equal(bits_of(native_grads[0]), bits_of(torch_grads[0]))
    for native_grad, torch_grad in zip(native_grads[1:], torch_grads[1:]):
        assert_same_sums(native_grad, torch_grad, torch.float32)


def test_native_sums_do_not_depend_on_the_thread_count(native, monkeypatch):
    bits = (2, 4, 8)
    case = hard_case(11, (4, 16, 30, 30), bits, True, torch.float32, "soft")
    threads = torch.get_num_threads()
    try:
        runs = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            runs.append(run_path(monkeypatch, True, *case[:3], bits, True, case[3]))
    finally:
        torch.set_num_threads(threads)
    for out, grads in runs[1:]:
        assert torch.equal(bits_of(out), bits_of(runs[0][0]))
        for grad, first in zip(grads, runs[0][1]):
            assert torch.equal(bits_of(grad), bits_of(first))


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    def fail():
        raise RuntimeError("no compiler in this test")

    monkeypatch.delenv("ZEROBIT_NATIVE", raising=False)
    monkeypatch.setattr(_native, "_build", fail)
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setattr(_native, "_library", None)
    bits = (2, 4, 8)
    x, clips, probs, _ = act_case(1, (3, 8), bits, False, torch.float32)
    with pytest.warns(RuntimeWarning, match="no compiler in this test") as record:
        outs = [mixed_act_quant(x, clips, probs, bits, False) for _ in range(3)]
    assert len([w for w in record if "native CPU kernels" in str(w.message)]) == 1
    assert not _native.available()
    for out in outs:
        assert torch.equal(out, reference_act_forward(x, clips, probs, bits, False))


def test_native_disabled_never_builds(monkeypatch, recwarn):
    def fail():
        raise AssertionError("must not build")

    monkeypatch.setenv("ZEROBIT_NATIVE", "0")
    monkeypatch.setattr(_native, "_build", fail)
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setattr(_native, "_library", None)
    x, clips, probs, _ = act_case(1, (3, 8), (2, 4), True, torch.float32)
    out = mixed_act_quant(x, clips, probs, (2, 4), True)
    assert torch.equal(out, reference_act_forward(x, clips, probs, (2, 4), True))
    assert not _native._tried and not recwarn.list


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [(0, 2, 4, 8), (2, 4, 8), (0,), (3,)])
@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3, 3), (64, 64, 3, 3), (10, 64)])
@pytest.mark.parametrize("weight_range", ["minmax", "mse"])
def test_native_weight_equals_pure_torch(native, monkeypatch, dtype, bits, shape, weight_range):
    generator = torch.Generator().manual_seed(len(bits) * 100 + shape[-1])
    weight = torch.randn(*shape, generator=generator, dtype=dtype)
    weight[-1] = 0.0  # an all-zero channel
    first = weight[0].view(-1)
    # max 127: 8-bit scale 1, ties at k + 1/2 for every width whose n_p divides 127
    ties = torch.tensor([127.0, 63.5, -63.5, 0.5, -0.5, 1.5, 2.5, -2.5, -127.0], dtype=dtype)
    first[: min(first.numel(), ties.numel())] = ties[: first.numel()]
    probs = random_probs(len(bits), shape[0], seed=shape[0], dtype=dtype)
    probs[:, 0] = 0.0
    probs[-1, 0] = 1.0  # a one-hot column
    probs = probs.t().contiguous().t()  # column-major: the kernel gets a copy
    grad = torch.randn(*shape, generator=generator, dtype=dtype)
    results = []
    for use_native in (True, False):
        monkeypatch.setenv("ZEROBIT_NATIVE", "1" if use_native else "0")
        latent, theta = weight.clone().requires_grad_(), probs.clone().requires_grad_()
        out = mixed_weight_quant(latent, theta, bits, weight_range)
        out.backward(grad)
        results.append((out.detach(), latent.grad, theta.grad))
    (native_out, native_latent, native_theta), (torch_out, torch_latent, torch_theta) = results
    assert torch.equal(bits_of(native_out), bits_of(torch_out))
    assert torch.equal(native_latent, grad) and torch.equal(torch_latent, grad)
    # per-channel sums: float64 in the native path, the weight dtype in the pure-torch one
    assert_same_sums(native_theta, torch_theta, dtype)
    if 0 in bits:
        assert not native_theta[bits.index(0)].any()


GENERIC_BUILD_SCRIPT = """
import os, torch
from zerobit.quant import _native, mixed_act_quant, mixed_weight_quant
assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
assert _native._instruction_set() == ("generic", []) and _native.available()
generator = torch.Generator().manual_seed(0)
for dtype in (torch.float32, torch.float64):
    x = (torch.randn(3, 16, 30, 31, generator=generator, dtype=dtype) * 4).requires_grad_()
    clips = torch.tensor([0.375, 2.0, 5.0], dtype=dtype)
    probs = torch.softmax(torch.randn(3, generator=generator, dtype=dtype), 0)
    weight = torch.randn(8, 4, 3, 3, generator=generator, dtype=dtype)
    theta = torch.softmax(torch.randn(4, 8, generator=generator, dtype=dtype), 0)
    grad = torch.randn(x.shape, generator=generator, dtype=dtype)
    results = []
    for flag in ("1", "0"):
        os.environ["ZEROBIT_NATIVE"] = flag
        leaves = [t.detach().clone().requires_grad_() for t in (x, clips, probs)]
        out = mixed_act_quant(*leaves, (2, 4, 8), False)
        out.backward(grad)
        mixed = mixed_weight_quant(weight, theta, (0, 2, 4, 8))
        results.append((out, leaves[0].grad, mixed))
    integer = torch.int32 if dtype == torch.float32 else torch.int64
    for native, pure in zip(*results):
        assert torch.equal(native.detach().view(integer), pure.detach().view(integer))
print("OK")
"""


def test_generic_build_matches_torch_default_kernels(tmp_path):
    # Without AVX2, torch's kernels do not fuse add(..., alpha=): neither does the generic build.
    if not compiler_present():
        pytest.skip("no C++ compiler")
    env = {k: v for k, v in os.environ.items() if k != "ZEROBIT_NATIVE"}
    env.update(TORCH_EXTENSIONS_DIR=str(tmp_path), ATEN_CPU_CAPABILITY="default")
    result = subprocess.run(
        [sys.executable, "-c", GENERIC_BUILD_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr


def test_concurrent_first_builds_share_one_library(tmp_path):
    if not compiler_present():
        pytest.skip("no C++ compiler")
    env = {k: v for k, v in os.environ.items() if k != "ZEROBIT_NATIVE"}
    env["TORCH_EXTENSIONS_DIR"] = str(tmp_path)
    script = "from zerobit.quant import _native; print(_native.available(), _native._build())"
    processes = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", script],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    lines = {stdout.strip() for stdout, _ in outputs}
    assert len(lines) == 1 and lines.pop().startswith("True ")
    built = {path.name for path in (tmp_path / "zerobit_native").iterdir()}
    assert "build.lock" in built and len(built) == 2  # one library and no leftovers


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

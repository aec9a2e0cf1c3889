# SPDX-License-Identifier: Apache-2.0
# The frozen model's cached, float64-requantizing eval forward against its int64 reference path.
from __future__ import annotations

import copy
import io

import pytest
import torch
from test_export_ir import random_frozen
from torch import nn

import zerobit as zb
from zerobit.search.frozen import FrozenLayer

SEEDS = (0, 1, 2, 3)


pytestmark = pytest.mark.usefixtures("one_thread")


def reference(frozen: zb.FrozenModel, x: torch.Tensor) -> torch.Tensor:
    """The uncached int64 simulation (the implementation before the eval cache)."""
    layers = frozen.layers().values()
    for layer in layers:
        layer.force_reference = True
    try:
        with torch.no_grad():
            return frozen(x)
    finally:
        for layer in layers:
            layer.force_reference = False


def count_fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every eval forward that the fast path hands to the reference path."""
    calls: list[str] = []
    original = FrozenLayer._reference_integer_forward

    def spy(self: FrozenLayer, x: torch.Tensor) -> torch.Tensor:
        if not self.force_reference:
            calls.append(type(self).__name__)
        return original(self, x)

    monkeypatch.setattr(FrozenLayer, "_reference_integer_forward", spy)
    return calls


@pytest.mark.parametrize("name", ["resnet8", "dscnn", "mobilenetv1"])
def test_fast_eval_equals_the_reference_bit_for_bit(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallbacks = count_fallbacks(monkeypatch)
    for seed in SEEDS:
        frozen, x = random_frozen(name, seed)
        x = torch.cat([x, torch.rand(13, *x.shape[1:]), torch.zeros(1, *x.shape[1:])])
        with torch.no_grad():
            fast = frozen(x)
            again = frozen(x)  # served from the cache
        assert torch.equal(fast, reference(frozen, x))
        assert torch.equal(again, fast)
        for layer in frozen.layers().values():
            assert layer._plan is not None and layer._plan.dtype == torch.float32
    assert fallbacks == []  # the fast path really ran


def test_fast_eval_is_exact_for_large_accumulators_and_float64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frozen, x = random_frozen("mobilenetv1", 7)
    with torch.no_grad():  # saturating inputs and all-positive weights: the largest sums
        for layer in frozen.layers().values():
            layer.weight.abs_()
    x = torch.full_like(x, 10.0)
    expected = reference(frozen, x)
    with torch.no_grad():
        assert torch.equal(frozen(x), expected)
        for layer in frozen.layers().values():
            layer.force_float64 = True
        assert torch.equal(frozen(x), expected)
    assert all(layer._plan.dtype == torch.float64 for layer in frozen.layers().values())


def test_loose_static_bounds_check_the_batch_and_fall_back_past_float64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frozen, x = random_frozen("resnet8", 1)
    fallbacks = count_fallbacks(monkeypatch)
    with torch.no_grad():
        frozen(x)
        for layer in frozen.layers().values():  # as if the static bound were too loose
            if layer.output_quantizer is not None:
                layer._plan.exact_float64 = False
        assert torch.equal(frozen(x), reference(frozen, x))
    assert fallbacks == []  # the batch's own range allowed float64 everywhere
    stem = frozen.layers()["stem"]
    p = stem.integer_layer()
    with torch.no_grad():  # bias codes near 2^22: acc * M > 2^51, float64 would round
        stem.bias.copy_(4e6 * p.input_scale * p.weight_scale)
        assert torch.equal(frozen(x), reference(frozen, x))
    assert stem._plan is not None and not stem._plan.exact_float64
    assert fallbacks == ["FrozenLayer"]


def test_an_optimizer_step_invalidates_the_cache() -> None:
    frozen, x = random_frozen("resnet8", 2)
    optimizer = torch.optim.Adam(frozen.parameters(), lr=0.02)
    for switch_modes in (True, False):
        with torch.no_grad():
            before = frozen.eval()(x)
        frozen.train()
        optimizer.zero_grad()
        frozen(x).square().sum().backward()
        if switch_modes:  # step in train mode, then eval() as a fine-tuning epoch does
            optimizer.step()
            frozen.eval()
        else:  # eval() first, step in eval mode: only the version counters tell
            frozen.eval()
            with torch.no_grad():
                assert torch.equal(frozen(x), before)
            optimizer.step()
        with torch.no_grad():
            after = frozen(x)
        assert not torch.equal(after, before)
        assert torch.equal(after, reference(frozen, x))


def test_load_state_dict_and_replaced_tensors_invalidate_the_cache() -> None:
    first, x = random_frozen("dscnn", 0)
    second = copy.deepcopy(first)  # the same architecture, other weights and clips
    with torch.no_grad():
        first_out = first(x)
        for parameter in second.parameters():
            parameter.mul_(1 + 0.2 * torch.rand_like(parameter))
        second_out = second(x)
    assert not torch.equal(first_out, second_out)
    first.load_state_dict(second.state_dict())  # in eval mode, with warm caches
    with torch.no_grad():
        assert torch.equal(first(x), second_out)
        assert torch.equal(second_out, reference(second, x))
        layer = list(first.layers().values())[-1]  # the classifier
        layer.weight = nn.Parameter(-layer.weight)
        assert torch.equal(first(x), reference(first, x))
        assert not torch.equal(first(x), second_out)


def test_data_changes_need_eval_and_copies_drop_the_cache() -> None:
    frozen, x = random_frozen("resnet8", 3)
    with torch.no_grad():
        before = frozen(x)
        clone = copy.deepcopy(frozen)
        assert all(layer._plan is None for layer in clone.layers().values())
        assert torch.equal(clone(x), before)
        for layer in frozen.layers().values():
            layer.weight.data.mul_(-1)  # .data bypasses the version counters
        frozen.eval()
        assert torch.equal(frozen(x), reference(frozen, x))
        assert not torch.equal(frozen(x), before)


def test_loading_another_architecture_loads_its_activation_bits() -> None:
    first, x = random_frozen("dscnn", 0)
    second, _ = random_frozen("dscnn", 1)
    assert first.act_bits != second.act_bits  # the two seeds draw other activation bits
    with torch.no_grad():
        expected = second(x)
    buffer = io.BytesIO()  # as the run checkpoints are saved and read
    torch.save(second.state_dict(), buffer)
    buffer.seek(0)
    first.load_state_dict(torch.load(buffer, weights_only=True))
    assert first.act_bits == second.act_bits
    assert first.layer_specs() == second.layer_specs()  # the costs follow the loaded bits
    with torch.no_grad():
        assert torch.equal(first(x), expected)
        assert torch.equal(expected, reference(first, x))


def test_a_state_without_activation_bits_keeps_the_models_own() -> None:
    frozen, x = random_frozen("resnet8", 2)
    bits = frozen.act_bits
    with torch.no_grad():
        expected = frozen(x)
        for parameter in frozen.parameters():
            parameter.mul_(2.0)
    old = {k: v for k, v in copy.deepcopy(frozen).state_dict().items() if "_extra_state" not in k}
    frozen.load_state_dict(old)  # as saved before the bits were in the state: strict, no error
    assert frozen.act_bits == bits
    with torch.no_grad():
        assert not torch.equal(frozen(x), expected)  # the state was loaded, bits kept
        assert torch.equal(frozen(x), reference(frozen, x))
    state = frozen.state_dict()
    key = next(k for k in state if k.endswith("_extra_state"))
    state[key] = {"bits": 0, "signed": False}
    with pytest.raises(ValueError, match="is not bits and signed"):
        frozen.load_state_dict(state)

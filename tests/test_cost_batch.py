# SPDX-License-Identifier: Apache-2.0
# The batched twins of the cost models agree with summing the per-layer functions.
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zerobit as zb
from zerobit.cost import MPIC_THROUGHPUT, CostTable, LayerSpec, get_cost
from zerobit.cost.batch import LayerBatch, batched_cost
from zerobit.models import DSCNN, ResNet8

GEOMETRIES = {
    "conv": [
        ((3, 3), (5, 7)),
        ((1, 1), (4, 4)),
        ((10, 4), (25, 5)),
        ((5,), (11,)),
        ((7, 7), (2, 3)),
    ],
    "depthwise": [((3, 3), (5, 7)), ((5,), (9,)), ((5, 5), (4, 4))],
    "linear": [((), ())],
}


@st.composite
def layer(draw, index: int, act_choices: tuple[tuple[int, ...], ...]) -> LayerSpec:
    kind = draw(st.sampled_from(sorted(GEOMETRIES)))
    kernel, output = draw(st.sampled_from(GEOMETRIES[kind]))
    weight_bits = draw(st.sampled_from([(0, 2, 4, 8), (2, 4, 8), (8,), (0, 8), (4, 8)]))
    channels = tuple(torch.tensor(draw(st.floats(0, 70)), requires_grad=True) for _ in weight_bits)
    input_bits = draw(st.sampled_from(act_choices))
    raw = [draw(st.floats(0.01, 1)) for _ in input_bits]
    probs = tuple(torch.tensor(p / sum(raw), requires_grad=True) for p in raw)
    in_channels = torch.tensor(draw(st.floats(1, 90)), requires_grad=True)
    return LayerSpec(
        f"layer{index}", kind, in_channels, kernel, output, weight_bits, channels, input_bits, probs
    )


def _leaves(specs: list[LayerSpec]) -> list[torch.Tensor]:
    return [t for s in specs for t in (s.in_channels, *s.channels, *s.input_probs)]


def _check_twin(function, specs: list[LayerSpec]) -> None:  # type: ignore[no-untyped-def]
    leaves = _leaves(specs)
    expected = sum(function(spec) for spec in specs)
    batched = batched_cost(function)
    assert batched is not None
    value = batched(LayerBatch.from_specs(specs))
    assert value.dim() == 0
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    grads_expected = torch.autograd.grad(expected, leaves, allow_unused=True)
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    for got, want in zip(grads, grads_expected):
        got = torch.zeros(()) if got is None else got
        want = torch.zeros(()) if want is None else want
        assert float(got) == pytest.approx(float(want), rel=1e-4, abs=1e-3)


@settings(max_examples=40, derandomize=True, deadline=None)
@given(data=st.data(), count=st.integers(1, 6))
def test_batched_twins_equal_the_per_layer_sum(data, count):
    specs = [data.draw(layer(i, ((8,), (2, 4, 8), (4, 8)))) for i in range(count)]
    for name in ("size", "macs", "bitops", "mpic"):
        _check_twin(get_cost(name), specs)
    _check_twin(CostTable({(a, p): a * p / 7 + 1 for a in (2, 4, 8) for p in (2, 4, 8)}), specs)


@settings(max_examples=40, derandomize=True, deadline=None)
@given(data=st.data(), count=st.integers(1, 6))
def test_batched_ne16_equals_the_per_layer_sum(data, count):
    specs = [data.draw(layer(i, ((8,),))) for i in range(count)]
    _check_twin(get_cost("ne16"), specs)
    _check_twin(get_cost("ne16_soft"), specs)


def test_batched_ne16_is_exact_on_integer_counts():
    # Integer counts through the staircase: the batched forward must hit the same step.
    specs = [
        LayerSpec("a", "conv", 37, (3, 3), (10, 10), (0, 4, 8), (3, 33, 17), (8,), (1,)),
        LayerSpec("b", "depthwise", 64, (3, 3), (7, 7), (0, 2, 8), (5, 16, 43), (8,), (1,)),
        LayerSpec("c", "linear", 100, (), (), (8,), (10,), (8,), (1,)),
    ]
    expected = sum(get_cost("ne16")(spec) for spec in specs)
    assert isinstance(expected, int)
    assert float(batched_cost(get_cost("ne16"))(LayerBatch.from_specs(specs))) == expected
    # ne16_soft differs only on fractional counts: equal here, as ints, floats and tensors.
    soft = get_cost("ne16_soft")
    assert sum(soft(spec) for spec in specs) == expected
    floats = [
        LayerSpec(
            s.name,
            s.kind,
            float(s.in_channels),
            s.kernel_size,
            s.output_size,
            s.weight_bits,
            tuple(torch.tensor(float(c)) for c in s.channels),
            s.input_bits,
            s.input_probs,
        )
        for s in specs
    ]
    assert float(sum(soft(spec) for spec in floats)) == expected
    assert float(batched_cost(soft)(LayerBatch.from_specs(floats))) == expected


def test_batched_table_names_the_layer_missing_an_entry():
    specs = [
        LayerSpec("ok", "linear", 8, (), (), (8,), (2,), (8,), (1,)),
        LayerSpec("short", "linear", 8, (), (), (4, 8), (1, 1), (8,), (1,)),
    ]
    with pytest.raises(ValueError, match="'short'.*\\(8, 4\\)"):
        CostTable({(8, 8): 1.0}).batched(LayerBatch.from_specs(specs))


def test_layer_batch_rejects_bad_shapes():
    specs = [LayerSpec("x", "linear", 8, (), (), (0, 8), (1, 1), (8,), (1,))]
    batch = LayerBatch.from_specs(specs)
    with pytest.raises(ValueError, match="channels must be"):
        LayerBatch(**{**batch.__dict__, "channels": torch.zeros(1, 3)})
    with pytest.raises(ValueError, match="at least one layer"):
        LayerBatch.from_specs([])


def test_plain_callables_have_no_twin():
    assert batched_cost(lambda spec: 0) is None
    assert batched_cost(get_cost("size")) is not None
    assert batched_cost(CostTable(dict(MPIC_THROUGHPUT))) is not None


@pytest.mark.parametrize(
    "factory,shape", [(lambda: ResNet8((1, 16, 16)), (1, 16, 16)), (DSCNN, (1, 49, 10))]
)
@pytest.mark.parametrize("cost", ["size", "bitops", "mpic", "ne16", "macs"])
def test_search_cost_uses_the_twin_and_equals_the_spec_path(factory, shape, cost):
    torch.manual_seed(0)
    act = (8,) if cost == "ne16" else (2, 4, 8)
    x = torch.rand(2, *shape)
    smodel = zb.convert(factory(), x, zb.SearchSpace((0, 2, 4, 8), act), cost=cost).train()
    for selector in smodel.selectors:
        selector.set_logits_(2 * torch.randn_like(selector.logits))
    smodel(x)  # draws this step's Gumbel sample
    value = smodel.costs()[cost]
    detach = cost == "size"
    reference = sum(get_cost(cost)(s) for s in smodel.layer_specs(detach_inputs=detach))
    assert float(value.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)
    params = [s.parameter for s in smodel.selectors if s.parameter.requires_grad]
    got = torch.autograd.grad(value, params)
    want = torch.autograd.grad(reference, params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6 * float(w.abs().max()))
    # eval: the discrete architecture, equal to the frozen model's exact cost
    frozen = smodel.eval().freeze()
    assert float(smodel.costs()[cost]) == pytest.approx(zb.cost.evaluate(frozen, cost), rel=1e-6)

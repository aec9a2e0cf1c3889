# SPDX-License-Identifier: Apache-2.0
# Tests of zerobit.cost: LayerSpec, size/macs/bitops/mpic/table, the registry, model-level vectors.
from __future__ import annotations

import doctest
import importlib
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from zerobit.cost import (
    MPIC_THROUGHPUT,
    CostTable,
    LayerSpec,
    bitops,
    get_cost,
    macs,
    mpic,
    mpic_supported_bits,
    ne16,
    register_cost,
    registered_costs,
    resolve_cost,
    size,
    table,
)
from zerobit.cost import registry as cost_registry

# Benchmark layers (spec §5.3): name, kind, in, out, kernel, stride, padding, input HW, output HW.
RESNET8 = [
    ("stem", "conv", 3, 16, (3, 3), 1, 1, (32, 32), (32, 32)),
    ("stack1.conv1", "conv", 16, 16, (3, 3), 1, 1, (32, 32), (32, 32)),
    ("stack1.conv2", "conv", 16, 16, (3, 3), 1, 1, (32, 32), (32, 32)),
    ("stack2.conv1", "conv", 16, 32, (3, 3), 2, 1, (32, 32), (16, 16)),
    ("stack2.conv2", "conv", 32, 32, (3, 3), 1, 1, (16, 16), (16, 16)),
    ("stack2.shortcut", "conv", 16, 32, (1, 1), 2, 0, (32, 32), (16, 16)),
    ("stack3.conv1", "conv", 32, 64, (3, 3), 2, 1, (16, 16), (8, 8)),
    ("stack3.conv2", "conv", 64, 64, (3, 3), 1, 1, (8, 8), (8, 8)),
    ("stack3.shortcut", "conv", 32, 64, (1, 1), 2, 0, (16, 16), (8, 8)),
    ("fc", "linear", 64, 10, (), 1, 0, (), ()),
]
DSCNN = [
    ("stem", "conv", 1, 64, (10, 4), 2, (5, 1), (49, 10), (25, 5)),
    *[
        row
        for block in range(4)
        for row in (
            (f"dw{block}", "depthwise", 64, 64, (3, 3), 1, 1, (25, 5), (25, 5)),
            (f"pw{block}", "conv", 64, 64, (1, 1), 1, 0, (25, 5), (25, 5)),
        )
    ],
    ("fc", "linear", 64, 12, (), 1, 0, (), ()),
]
MODELS = {"resnet8": RESNET8, "dscnn": DSCNN}


def uniform_specs(rows, weight_bits: int, act_bits: int = 8) -> list[LayerSpec]:
    """Every layer of a model at one weight and one input bit-width."""
    return [
        LayerSpec(name, kind, cin, kernel, out_hw, (weight_bits,), (cout,), (act_bits,), (1,))
        for name, kind, cin, cout, kernel, _, _, _, out_hw in rows
    ]


def total(cost, specs):
    return sum(cost(spec) for spec in specs)


# ---------------------------------------------------------------- model-level test vectors


@pytest.mark.parametrize(
    ("model", "weights", "mac_count"),
    [("resnet8", 77_360, 12_501_632), ("dscnn", 22_016, 2_656_768)],
)
def test_weights_and_macs_match_spec_vectors(model, weights, mac_count):
    specs = uniform_specs(MODELS[model], 8)
    assert total(size, specs) == 8 * weights
    assert total(size, uniform_specs(MODELS[model], 1)) == weights
    assert total(macs, specs) == mac_count
    assert isinstance(total(size, specs), int) and isinstance(total(macs, specs), int)


@pytest.mark.parametrize("model", ["resnet8", "dscnn"])
def test_weights_and_macs_match_real_torch_layers(model):
    # Independent oracle: count weights and MACs on real torch layers run on a real input.
    weights = mac_count = 0
    for name, kind, cin, cout, kernel, stride, padding, in_hw, out_hw in MODELS[model]:
        if kind == "linear":
            layer: nn.Module = nn.Linear(cin, cout, bias=False)
            output = layer(torch.zeros(1, cin))
        else:
            groups = cin if kind == "depthwise" else 1
            layer = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
            output = layer(torch.zeros(1, cin, *in_hw))
            assert tuple(output.shape[2:]) == out_hw, name
        weights += layer.weight.numel()
        mac_count += output.numel() * layer.weight[0].numel()
    specs = uniform_specs(MODELS[model], 1)
    assert total(size, specs) == weights
    assert total(macs, specs) == mac_count


@pytest.mark.parametrize(
    ("model", "cycles"),
    [
        ("resnet8", {8: 5_953_158, 4: 5_435_492, 2: 5_000_653}),
        ("dscnn", {8: 1_265_128, 4: 1_155_117, 2: 1_062_707}),
    ],
)
def test_mpic_matches_spec_vectors_rounded_to_nearest(model, cycles):
    for bits, expected in cycles.items():
        cycles_float = total(mpic, uniform_specs(MODELS[model], bits))
        # The published vectors are the float sum rounded to the nearest int (floor fails for
        # e.g. ResNet-8 w2a8 = 5,000,652.8).
        assert round(cycles_float) == expected
        mac_count = total(macs, uniform_specs(MODELS[model], bits))
        assert cycles_float == pytest.approx(mac_count / MPIC_THROUGHPUT[(8, bits)], rel=1e-12)


@pytest.mark.parametrize(
    ("model", "cycles"),
    [
        ("resnet8", {8: 155_241, 4: 104_361, 2: 78_921}),
        ("dscnn", {8: 204_838, 4: 172_582, 2: 156_454}),
    ],
)
def test_ne16_matches_spec_vectors(model, cycles):
    for bits, expected in cycles.items():
        result = total(ne16, uniform_specs(MODELS[model], bits))
        assert isinstance(result, int)
        assert result == expected


def test_bitops_of_uniform_model_is_bits_times_macs():
    specs = uniform_specs(RESNET8, 4, act_bits=8)
    assert total(bitops, specs) == 12_501_632 * 4 * 8


# ---------------------------------------------------------------- hand-computed small layers


def mixed_pointwise(**overrides) -> LayerSpec:
    """1x1 conv, 6 -> 5 channels at 4x4: one channel pruned, two at 2 bits, two at 8 bits."""
    fields = {
        "name": "pw",
        "kind": "conv",
        "in_channels": 6,
        "kernel_size": (1, 1),
        "output_size": (4, 4),
        "weight_bits": (0, 2, 8),
        "channels": (1, 2, 2),
        "input_bits": (2, 8),
        "input_probs": (0.25, 0.75),
    }
    fields.update(overrides)
    return LayerSpec(**fields)


def test_mixed_pointwise_by_hand():
    spec = mixed_pointwise()
    # One kept channel reads 6 inputs at 16 positions: 96 MACs.
    assert spec.macs_per_output_channel == 96
    assert spec.kept_channels == 4
    assert size(spec) == 2 * 2 * 6 + 8 * 2 * 6 == 120
    assert macs(spec) == 4 * 96 == 384
    # (0.25*2 + 0.75*8) * (2*2*96 + 8*2*96)
    assert bitops(spec) == 6.5 * 1920 == 12_480
    expected_mpic = 0.25 * (192 / 6.5 + 192 / 2.2) + 0.75 * (192 / 2.5 + 192 / 2.1)
    assert mpic(spec) == pytest.approx(expected_mpic, rel=1e-12)
    assert mpic(spec) == pytest.approx(155.37422577422578, rel=1e-12)


def test_int_spec_gives_exact_ints():
    spec = mixed_pointwise(input_bits=(8,), input_probs=(1,))
    for cost in (size, macs, bitops, ne16):
        assert isinstance(cost(spec), int), cost.__name__
    assert bitops(spec) == 8 * (2 * 2 * 96 + 8 * 2 * 96)


def test_grouped_conv_fan_in_matches_torch():
    spec = LayerSpec("g", "conv", 8, (3, 3), (5, 5), (4,), (6,), (8,), (1,), groups=2)
    layer = nn.Conv2d(8, 6, 3, groups=2, bias=False)
    output = layer(torch.zeros(1, 8, 7, 7))
    assert spec.fan_in == 4
    assert size(spec) == 4 * layer.weight.numel()
    assert macs(spec) == output.numel() * layer.weight[0].numel() == 6 * 4 * 9 * 25


def test_depthwise_reads_one_input_channel_per_output_channel():
    spec = LayerSpec("dw", "depthwise", 10, (3, 3), (6, 6), (0, 4), (3, 7), (8,), (1,))
    layer = nn.Conv2d(7, 7, 3, groups=7, bias=False)
    output = layer(torch.zeros(1, 7, 8, 8))
    assert spec.fan_in == 1
    assert size(spec) == 4 * layer.weight.numel() == 4 * 7 * 9
    assert macs(spec) == output.numel() * layer.weight[0].numel() == 7 * 9 * 36


def test_conv1d_and_linear_specs():
    conv1d = LayerSpec("c1", "conv", 4, (5,), (20,), (8,), (3,), (8,), (1,))
    assert size(conv1d) == 8 * 3 * 4 * 5
    assert macs(conv1d) == nn.Conv1d(4, 3, 5)(torch.zeros(1, 4, 24)).numel() * 4 * 5
    linear = LayerSpec("fc", "linear", 64, (), (), (2, 8), (3, 7), (8,), (1,))
    assert size(linear) == 64 * (2 * 3 + 8 * 7)
    assert macs(linear) == 64 * 10


def test_all_pruned_layer_costs_zero():
    spec = mixed_pointwise(channels=(5, 0, 0))
    for cost in (size, macs, bitops, mpic):
        assert cost(spec) == 0


# ---------------------------------------------------------------- tensors and autograd


def tensor(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64, requires_grad=True)


def gradients(output, inputs) -> list[float]:
    # Inputs the cost does not use (0-bit channels) get a gradient of 0.
    grads = torch.autograd.grad(output, inputs, allow_unused=True, materialize_grads=True)
    return [grad.item() for grad in grads]


def test_size_gradient_is_bits_times_fan_in_times_kernel():
    counts = (tensor(1.5), tensor(2.0), tensor(3.25), tensor(0.25))
    cin = tensor(6.0)
    spec = LayerSpec("c", "conv", cin, (3, 3), (4, 4), (0, 2, 4, 8), counts, (8,), (1.0,))
    result = size(spec)
    assert isinstance(result, torch.Tensor) and result.dim() == 0
    assert result.item() == pytest.approx(9 * 6 * (2 * 2.0 + 4 * 3.25 + 8 * 0.25))
    *count_grads, cin_grad = gradients(result, (*counts, cin))
    assert count_grads == [bits * 6 * 9 for bits in (0, 2, 4, 8)]
    assert cin_grad == pytest.approx(9 * (2 * 2.0 + 4 * 3.25 + 8 * 0.25))


def test_macs_and_bitops_gradients():
    counts = (tensor(1.0), tensor(2.0), tensor(2.0))
    probs = (tensor(0.25), tensor(0.75))
    spec = mixed_pointwise(channels=counts, input_probs=probs)
    assert gradients(macs(spec), counts) == [0.0, 96.0, 96.0]
    spec = mixed_pointwise(input_probs=probs)
    bitops(spec).backward()
    weighted = 2 * 2 * 96 + 8 * 2 * 96
    assert probs[0].grad.item() == pytest.approx(2 * weighted)
    assert probs[1].grad.item() == pytest.approx(8 * weighted)


def test_mpic_gradient_wrt_activation_probabilities():
    probs = (tensor(0.25), tensor(0.75))
    result = mpic(mixed_pointwise(input_probs=probs))
    result.backward()
    # d/dθ_a = Σ_{p>0} N_p · 96 / T[a][p] with N_2 = N_8 = 2.
    assert probs[0].grad.item() == pytest.approx(192 / 6.5 + 192 / 2.2)
    assert probs[1].grad.item() == pytest.approx(192 / 2.5 + 192 / 2.1)


def test_zero_cost_keeps_the_graph():
    count = tensor(5.0)
    spec = mixed_pointwise(weight_bits=(0,), channels=(count,))
    result = macs(spec) + size(spec)
    assert isinstance(result, torch.Tensor) and result.item() == 0
    result.backward()
    assert count.grad is not None and count.grad.item() == 0


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    kind=st.sampled_from(["conv", "depthwise", "linear"]),
    cin=st.integers(1, 70),
    dims=st.sampled_from([((3, 3), (5, 7)), ((1, 1), (4, 4)), ((10, 4), (25, 5)), ((5,), (11,))]),
    counts=st.lists(st.integers(0, 70), min_size=4, max_size=4),
    act_index=st.integers(0, 2),
)
def test_tensor_spec_equals_int_spec(kind, cin, dims, counts, act_index):
    kernel, output = ((), ()) if kind == "linear" else dims
    probs = tuple(int(index == act_index) for index in range(3))
    fields = dict(
        name="layer",
        kind=kind,
        in_channels=cin,
        kernel_size=kernel,
        output_size=output,
        weight_bits=(0, 2, 4, 8),
        channels=tuple(counts),
        input_bits=(2, 4, 8),
        input_probs=probs,
    )
    exact = LayerSpec(**fields)
    fields.update(
        in_channels=tensor(float(cin)),
        channels=tuple(tensor(float(count)) for count in counts),
        input_probs=tuple(tensor(float(prob)) for prob in probs),
    )
    soft = LayerSpec(**fields)
    for cost in (size, macs, bitops, mpic):
        assert cost(soft).item() == pytest.approx(cost(exact), rel=1e-12, abs=1e-12)
    assert isinstance(size(exact), int) and isinstance(bitops(exact), int)


# ---------------------------------------------------------------- tables and the registry


def test_cost_table_with_inverse_throughput_equals_mpic():
    inverse = CostTable({key: 1 / value for key, value in MPIC_THROUGHPUT.items()}, name="inv")
    spec = mixed_pointwise()
    assert inverse(spec) == pytest.approx(mpic(spec), rel=1e-12)
    assert table(spec, inverse.cycles_per_mac) == inverse(spec)
    assert inverse.name == "inv"
    assert "inv" in repr(inverse)


def test_cost_table_by_hand_and_missing_entries():
    energy = CostTable({(2, 2): 1.0, (2, 8): 3.0, (8, 2): 0.5, (8, 8): 2.0})
    spec = mixed_pointwise()
    assert energy(spec) == 0.25 * (192 * 1.0 + 192 * 3.0) + 0.75 * (192 * 0.5 + 192 * 2.0)
    partial = CostTable({(2, 2): 1.0, (8, 8): 2.0})
    with pytest.raises(ValueError, match=r"'pw'.*\(2, 8\).*\(8, 2\)"):
        partial(spec)


@pytest.mark.parametrize(
    "entries",
    [{(8, 8): -1.0}, {(8, 8): math.inf}, {(8,): 1.0}, {(8, -2): 1.0}, {(8, 8): "1"}],
)
def test_cost_table_rejects_bad_entries(entries):
    with pytest.raises(ValueError, match="CostTable"):
        CostTable(entries)


def test_cost_table_copies_its_mapping():
    entries = {(8, 8): 1.0}
    cost_table = CostTable(entries)
    entries[(8, 8)] = 5.0
    assert cost_table.cycles_per_mac[(8, 8)] == 1.0


def test_table_doctest_runs():
    # The package re-exports the function `table`, which shadows the submodule attribute.
    result = doctest.testmod(importlib.import_module("zerobit.cost.table"))
    assert result.attempted > 0 and result.failed == 0


def test_registry_names_and_errors():
    assert set(registered_costs()) >= {"size", "macs", "bitops", "mpic", "ne16"}
    assert get_cost("size") is size and get_cost("ne16") is ne16
    with pytest.raises(ValueError, match="unknown cost 'latency'.*bitops.*size"):
        get_cost("latency")
    with pytest.raises(ValueError, match="already registered"):
        register_cost("size")(size)
    with pytest.raises(ValueError, match="non-empty"):
        register_cost("")


def test_register_cost_adds_a_name(monkeypatch):
    monkeypatch.setattr(cost_registry, "_REGISTRY", dict(cost_registry._REGISTRY))

    @register_cost("channels")
    def channels(spec):
        return spec.kept_channels

    assert get_cost("channels") is channels
    assert resolve_cost("channels")(mixed_pointwise()) == 4


def test_resolve_cost_accepts_names_tables_and_callables():
    cost_table = CostTable({(8, 8): 1.0})
    assert resolve_cost("mpic") is mpic
    assert resolve_cost(cost_table) is cost_table

    def kept(spec):
        return spec.kept_channels

    assert resolve_cost(kept) is kept
    with pytest.raises(ValueError, match="mpic.*ne16"):
        resolve_cost(3)
    with pytest.raises(ValueError, match="known costs"):
        resolve_cost("energy")


# ---------------------------------------------------------------- validation


def test_mpic_supported_bits_and_errors():
    assert mpic_supported_bits() == ((2, 4, 8), (0, 2, 4, 8))
    with pytest.raises(ValueError, match=r"'pw'.*\(0, 2, 4, 8\)"):
        mpic(mixed_pointwise(weight_bits=(0, 3, 8)))
    with pytest.raises(ValueError, match=r"'pw'.*\(2, 4, 8\)"):
        mpic(mixed_pointwise(input_bits=(2, 16)))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"channels": (1, 2)}, "equal length"),
        ({"input_probs": (1.0,)}, "equal length"),
        ({"weight_bits": (), "channels": ()}, "non-empty"),
        ({"kind": "conv3x3"}, "kind must be one of"),
        ({"weight_bits": (0, -2, 8)}, "ints >= 0"),
        ({"weight_bits": (0, 2, 2)}, "duplicates"),
        ({"input_bits": (0, 8)}, "ints >= 1"),
        ({"kernel_size": (1, 1, 1)}, "as many output dims"),
        ({"kernel_size": (3, 0)}, "positive ints"),
        ({"kind": "linear"}, "kernel_size=\\(\\)"),
        ({"kind": "depthwise", "groups": 6}, "groups only applies"),
        ({"groups": 4}, "not divisible"),
        ({"channels": (1, -2, 2)}, ">= 0"),
        ({"in_channels": -1}, ">= 0"),
        ({"input_probs": (0.5, 0.6)}, "sum to 1"),
        ({"input_probs": (1.5, -0.5)}, r"\[0, 1\]"),
        ({"channels": (1, torch.ones(2), 2)}, "0-dim"),
    ],
)
def test_layer_spec_validation(overrides, message):
    with pytest.raises(ValueError, match=f"'pw'.*{message}|{message}"):
        mixed_pointwise(**overrides)


def test_layer_spec_coerces_sequences_to_tuples():
    spec = LayerSpec("c", "conv", 4, [3, np.int64(3)], torch.Size([5, 5]), [0, 8], [1, 3], [8], [1])
    assert spec == LayerSpec("c", "conv", 4, (3, 3), (5, 5), (0, 8), (1, 3), (8,), (1,))
    assert type(spec.output_size) is tuple and type(spec.kernel_size[1]) is int
    assert size(spec) == 8 * 3 * 4 * 9
    with pytest.raises(ValueError, match="kernel_size must be a tuple"):
        LayerSpec("c", "conv", 4, "33", (5, 5), (8,), (3,), (8,), (1,))

# SPDX-License-Identifier: Apache-2.0
# The exported graph's layout, read before any export, equals prune(to_ir(frozen)) edge for edge.
from __future__ import annotations

import math
import warnings

import pytest
import torch
from test_export_ir import SPACE, TwoInputs, TwoOutputs, random_frozen
from torch import nn

import zerobit as zb
from zerobit.export import (
    Add,
    AvgPool,
    Concat,
    Flatten,
    InputQuant,
    IntegerGraph,
    Layer,
    MaxPool,
    Relu,
    prune,
    to_ir,
)

KINDS = {
    InputQuant: "input_quant",
    Layer: "layer",
    Add: "add",
    Relu: "relu",
    MaxPool: "max_pool",
    AvgPool: "avg_pool",
    Flatten: "flatten",
    Concat: "concat",
}
CASES = [(m, s) for m in ("resnet8", "dscnn", "mobilenetv1") for s in (0, 1)] + [
    (m, 0) for m in ("concat", "flatten", "pool2d", "pool1d")
]


def assert_same_graph(spec: zb.cost.GraphSpec, graph: IntegerGraph) -> None:
    assert [t.name for t in spec.tensors] == [*graph.inputs, *(op.output for op in graph.ops)]
    for tensor in spec.tensors:
        info = graph.tensors[tensor.name]
        assert (tensor.rank, tensor.elements, tensor.is_float) == (
            len(info.shape),
            math.prod(info.shape),
            info.is_float,
        ), tensor.name
    expected = [
        (KINDS[type(op)], op.name, op.inputs, op.output, len(getattr(op, "kernel", ())))
        for op in graph.ops
    ]
    assert [(o.kind, o.name, o.inputs, o.output, o.window_dims) for o in spec.ops] == expected
    assert (spec.inputs, spec.outputs) == (graph.inputs, graph.outputs)


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_layout_is_the_pruned_integer_graph(name: str, seed: int) -> None:
    frozen, _ = random_frozen(name, seed)
    assert_same_graph(frozen.graph_spec(), prune(to_ir(frozen)))
    assert_same_graph(frozen.graph_spec(unpruned=True), to_ir(frozen))


def test_layout_of_two_inputs_and_two_outputs() -> None:
    x, y = torch.rand(4, 1, 6, 6), torch.randn(4, 2, 6, 6)
    smodel = zb.convert(TwoInputs(), (x, y), SPACE)
    with torch.no_grad():
        for p in smodel.arch_parameters():
            p.copy_(torch.randn_like(p) * 2)
    frozen = smodel.eval().freeze()
    pruned = prune(to_ir(frozen))
    assert_same_graph(frozen.graph_spec(), pruned)
    assert [t.name for t in frozen.graph_spec().tensors] == list(pruned.tensors)
    # the search model reads the same layout; in eval mode its counts are the discrete ones
    search_spec = smodel.eval().graph_spec()
    assert [float(t.elements) for t in search_spec.tensors] == [
        t.elements for t in frozen.graph_spec().tensors
    ]
    space = zb.SearchSpace(weight_bits=(2, 4, 8), act_bits=(2, 4, 8))
    frozen = zb.convert(TwoOutputs(), torch.rand(2, 1, 5, 5), space).eval().freeze()
    assert_same_graph(frozen.graph_spec(), prune(to_ir(frozen)))


class _WithSigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3 * 5 * 5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.sigmoid(self.conv(x)).flatten(1))


def test_a_model_with_float_ops_has_no_flash_or_ram() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        smodel = zb.convert(_WithSigmoid(), torch.rand(2, 1, 7, 7), SPACE, allow_float=True)
    frozen = smodel.eval().freeze()
    assert zb.cost.evaluate(frozen, "size") == (3 * 9 + 2 * 75) * 8
    for cost in ("flash", "ram"):
        with pytest.raises(ValueError, match="kept in float"):
            zb.cost.evaluate(frozen, cost)

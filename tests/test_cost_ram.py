# SPDX-License-Identifier: Apache-2.0
# The ram cost: exactly the C export's activation arena, and differentiable during the search.
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ConcatNet
from test_export_ir import SPACE, random_frozen

import zerobit as zb
from zerobit.cost import GraphSpec, OpSpec, TensorSpec, plan_arena, ram
from zerobit.export.c import export_c

CASES = [(m, s) for m in ("resnet8", "dscnn", "mobilenetv1") for s in (0, 1, 2)] + [
    (m, 0) for m in ("concat", "flatten", "pool2d", "pool1d")
]


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_ram_is_the_c_arena(name: str, seed: int, tmp_path: Path) -> None:
    frozen, _ = random_frozen(name, seed)
    assert zb.cost.evaluate(frozen, "ram") == export_c(frozen, tmp_path).arena_bytes


def _graph(sizes: dict[str, object]) -> GraphSpec:
    """input -> quant a -> layer b -> relu c -> layer d -> add(c, d) e -> layer f -> flatten g
    -> float logits h."""
    tensors = [TensorSpec("x", 3, 16, True)]
    tensors += [TensorSpec(n, 3, sizes[n]) for n in "abcde"]  # type: ignore[arg-type]
    tensors += [TensorSpec("f", 3, sizes["f"]), TensorSpec("g", 1, sizes["f"])]  # type: ignore[arg-type]
    tensors += [TensorSpec("h", 1, 4, True)]
    ops = [
        OpSpec("input_quant", "q", ("x",), "a"),
        OpSpec("layer", "l1", ("a",), "b"),
        OpSpec("relu", "r", ("b",), "c"),
        OpSpec("layer", "l2", ("c",), "d"),
        OpSpec("add", "s", ("c", "d"), "e"),
        OpSpec("layer", "l3", ("e",), "f"),
        OpSpec("flatten", "v", ("f",), "g"),
        OpSpec("layer", "l4", ("g",), "h"),
    ]
    return GraphSpec(tuple(tensors), tuple(ops), ("x",), ("h",))


def test_plan_by_hand() -> None:
    sizes = {"a": 16, "b": 32, "c": 32, "d": 32, "e": 32, "f": 8}
    plan = plan_arena(_graph(sizes))
    # the relu and the add work in place over b; the flatten shares f; float x and h are outside
    assert [(b.name, b.first, b.last, b.size) for b in plan.buffers] == [
        ("a", 0, 1, 16),
        ("b", 1, 5, 32),
        ("d", 3, 4, 32),
        ("f", 5, 7, 8),
    ]
    # largest first: b at 0, then d (alive with b) above it; a and f only meet b
    assert plan.offsets == {"b": 0, "d": 32, "a": 32, "f": 32}
    assert plan.size == 64 == ram.graph_term(_graph(sizes))  # type: ignore[attr-defined]


def test_search_gradient_reaches_the_buffers_at_the_peak() -> None:
    values = (16.0, 32.0, 32.0, 32.0, 32.0, 8.0)
    sizes = {n: torch.tensor(v, requires_grad=True) for n, v in zip("abcdef", values)}
    plan = plan_arena(_graph(sizes))
    assert float(plan.size.detach()) == 64  # type: ignore[union-attr]
    plan.size.backward()  # type: ignore[union-attr]
    grads = {n: 0.0 if t.grad is None else float(t.grad) for n, t in sizes.items()}
    # the arena is the end of d, stacked on b; c and e live in b's buffer, a and f lie lower
    assert grads == {"a": 0.0, "b": 1.0, "c": 0.0, "d": 1.0, "e": 0.0, "f": 0.0}


def test_ram_during_the_search_and_its_reference(tmp_path: Path) -> None:
    smodel = zb.convert(ConcatNet(), torch.rand(4, 1, 8, 8), SPACE, cost="ram")
    frozen = smodel.eval().freeze()
    # the normalizer is the arena of the unpruned model (the initial architecture keeps all)
    assert all(bits > 0 for layer in frozen.layers().values() for bits in layer.bits.tolist())
    assert smodel.cost_references["ram"] == export_c(frozen, tmp_path).arena_bytes
    torch.manual_seed(2)
    with torch.no_grad():
        for p in smodel.arch_parameters():
            p.copy_(torch.randn_like(p) * 2)
    smodel.train()
    smodel(torch.rand(2, 1, 8, 8))
    expected = smodel.graph_cost(ram)
    expected.backward()
    grads = [s.parameter.grad for s in smodel.selectors]
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    smodel.eval()
    frozen = smodel.freeze()
    assert float(smodel.graph_cost(ram)) == zb.cost.evaluate(frozen, "ram")
    assert zb.cost.evaluate(frozen, "ram") == export_c(frozen, tmp_path / "b").arena_bytes


def test_whole_model_costs_need_a_graph() -> None:
    frozen, _ = random_frozen("flatten", 0)

    class OnlyLayers:
        def layer_specs(self) -> list[zb.cost.LayerSpec]:
            return frozen.layer_specs()

    assert zb.cost.evaluate(OnlyLayers(), "size") == zb.cost.evaluate(frozen, "size")
    with pytest.raises(ValueError, match="has no graph_spec"):
        zb.cost.evaluate(OnlyLayers(), "ram")


def test_graph_spec_is_validated() -> None:
    with pytest.raises(ValueError, match="unknown tensors"):
        GraphSpec((TensorSpec("x", 3, 16, True),), (OpSpec("relu", "r", ("x",), "y"),), ("x",), ())
    with pytest.raises(ValueError, match="kind must be one of"):
        OpSpec("softmax", "s", ("x",), "y")
    with pytest.raises(ValueError, match="unique"):
        GraphSpec((TensorSpec("x", 3, 16), TensorSpec("x", 3, 16)), (), (), ())

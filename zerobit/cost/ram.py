# SPDX-License-Identifier: Apache-2.0
# The ram cost: the activation arena of the C runtime's buffer plan, exact on a discrete model.
"""The ``ram`` cost: peak activation memory of the exported C model.

It is the size of the activation arena that :func:`zerobit.export.c.export_c` plans
(``ZB_MODEL_ARENA_SIZE``, ``CExport.arena_bytes``), computed from the model's
:class:`~zerobit.cost.graph.GraphSpec` by the same rules:

* every integer tensor is one byte per value; float32 model inputs and logits live outside the
  arena (the caller's input and output arrays);
* a ``flatten`` shares its input's buffer, and a ``relu`` or ``add`` writes over an input whose
  buffer nothing reads afterwards;
* a buffer lives from the op that writes it to its last reader (a model output to the end);
  buffers are placed largest first (ties: the earlier one first), each at the lowest offset
  clear of every placed buffer whose lifetime overlaps (TensorFlow Lite Micro's greedy
  planner); the arena is the highest end, at least 1 byte.

The weight scratch (one output channel's unpacked weights, ``ZB_MODEL_SCRATCH_SIZE``) is not
counted. The cost is a whole-model term: the per-layer part is 0.

During the search the buffer sizes are expected values (expected kept channels x spatial size)
and the plan is computed on them: the placement uses their values, and the arena is the sum of
the sizes of the buffers stacked under the highest end, so its gradient reaches the buffers of
the peak (a subgradient, like that of a max). It is the arena of the expected sizes, a lower
bound of the expected arena; on a discrete architecture it is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from zerobit.cost.batch import LayerBatch
from zerobit.cost.graph import GraphSpec, graph_term
from zerobit.cost.registry import register_cost
from zerobit.cost.spec import LayerSpec, Number, zero_like

__all__ = ["ArenaPlan", "Buffer", "arena_buffers", "plan_arena", "ram", "ram_graph_bytes"]

ALIASING_KINDS = frozenset({"flatten", "relu", "add"})
"""Ops that may write into (a flatten: always shares) an input's buffer."""


@dataclass(frozen=True)
class Buffer:
    """One arena buffer: a tensor and the tensors that share its bytes.

    Attributes:
        name: The tensor that owns the buffer (the first written).
        first: Index of the op that writes it.
        last: Index of its last reader (``len(ops)`` for a model output).
        size: Bytes, a number or a 0-dim tensor.
    """

    name: str
    first: int
    last: int
    size: Number


@dataclass(frozen=True)
class ArenaPlan:
    """Where every buffer lies in the arena.

    Attributes:
        buffers: The buffers, in the order of the ops that write them.
        offsets: Byte offset of each buffer by name (the value, a float during the search).
        size: Arena bytes, at least 1; differentiable w.r.t. the buffer sizes.
    """

    buffers: tuple[Buffer, ...]
    offsets: dict[str, float]
    size: Number


def arena_buffers(graph: GraphSpec) -> list[Buffer]:
    """Group the integer tensors of ``graph`` into buffers with their lifetimes.

    Args:
        graph: The exported graph.

    Returns:
        The buffers in the order of the ops that write them.
    """
    ops = graph.ops
    reader: dict[str, int] = {}  # tensor -> index of its last reader
    for index, op in enumerate(ops):
        for name in op.inputs:
            reader[name] = index
    for name in graph.outputs:
        reader[name] = len(ops)
    root: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for index, op in enumerate(ops):
        candidates = op.inputs if op.kind in ALIASING_KINDS else ()
        reusable = [
            name
            for name in candidates
            if name in root
            and (
                op.kind == "flatten"
                or all(reader.get(member, -1) <= index for member in members[root[name]])
            )
        ]
        owner = root[reusable[0]] if reusable else op.output
        root[op.output] = owner
        members.setdefault(owner, []).append(op.output)
    buffers = []
    for index, op in enumerate(ops):
        tensor = graph.tensor(op.output)
        if root[op.output] == op.output and not tensor.is_float:
            last = max(reader.get(member, index) for member in members[op.output])
            buffers.append(Buffer(op.output, index, last, tensor.elements))
    return buffers


def plan_arena(graph: GraphSpec) -> ArenaPlan:
    """Place the buffers of ``graph`` greedily, largest first, at the lowest free offset.

    Args:
        graph: The exported graph; tensor sizes may be 0-dim tensors.

    Returns:
        The plan; its ``size`` is exact (an int) for a discrete graph.
    """
    buffers = arena_buffers(graph)
    value = [_value(b.size) for b in buffers]
    order = sorted(range(len(buffers)), key=lambda k: (-value[k], buffers[k].first))
    start_of: dict[int, float] = {}
    end_of: dict[int, Any] = {}  # buffer -> its end, a sum of sizes (differentiable)
    for k in order:
        busy = sorted(
            (start_of[j], start_of[j] + value[j], j)
            for j in start_of
            if buffers[j].first <= buffers[k].last and buffers[k].first <= buffers[j].last
        )
        start, below = 0.0, None
        for low, high, j in busy:
            if low - start >= value[k]:
                break
            if high > start:
                start, below = high, j
        start_of[k] = start
        end_of[k] = buffers[k].size if below is None else end_of[below] + buffers[k].size
    offsets = {buffers[k].name: start_of[k] for k in order}
    if not buffers:
        return ArenaPlan((), offsets, 1)
    top = max(order, key=lambda k: start_of[k] + value[k])
    size = end_of[top]
    if not hasattr(size, "requires_grad"):
        size = max(size, 1)
    return ArenaPlan(tuple(buffers), offsets, size)


def _value(size: Number) -> float:
    return float(size.detach() if isinstance(size, torch.Tensor) else size)


def ram_graph_bytes(graph: GraphSpec) -> Number:
    """Return the arena bytes of ``graph``'s buffer plan (see :func:`plan_arena`)."""
    return plan_arena(graph).size


def _no_layer_cost(batch: LayerBatch) -> Any:
    return (batch.channels * 0).sum()


@register_cost("ram", batched=_no_layer_cost)
@graph_term(ram_graph_bytes)
def ram(spec: LayerSpec) -> Number:
    """Return 0: RAM is a whole-model cost, its graph term :func:`ram_graph_bytes`.

    Args:
        spec: A layer.

    Returns:
        0 in the number type of ``spec`` (connected to its tensors, so that a sum back-propagates).
    """
    return zero_like(spec)


setattr(ram, "depends_on_bits", False)  # noqa: B010 (read by the budget's greedy fit)

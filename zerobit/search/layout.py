# SPDX-License-Identifier: Apache-2.0
# The exported graph's layout, read from a converted model: what GraphSpecs are built from.
"""Layout of the graph the exporters write, known before any export.

:func:`graph_layout` walks the fx graph of a :class:`~zerobit.search.SearchModel` or
:class:`~zerobit.search.FrozenModel` (the same nodes) with the rules of
:func:`zerobit.export.to_ir`: which nodes become which integer ops, the names of their tensors,
their ranks, spatial sizes and channel counts. The channel count of a tensor is a linear function
of the kept channels of the channel groups, so one layout gives the
:class:`~zerobit.cost.GraphSpec` of every architecture (:meth:`GraphLayout.spec`), discrete or
expected. The tests check it against ``prune(to_ir(frozen))`` op by op and tensor by tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import fx

from zerobit.cost import GraphSpec, Number, OpSpec, TensorSpec
from zerobit.graph.analysis import GraphAnalysis, Kind, classify, plain_inputs
from zerobit.search.modules import ActQuantizer, FrozenActQuantizer, QuantAvgPool

__all__ = ["GraphLayout", "LayoutTensor", "graph_layout"]

ChannelTerms = tuple[tuple[int | None, int], ...]
"""``(group or None, multiplier)`` pairs: channels = sum of multiplier x kept(group) (or x 1)."""

_PLAIN_OPS = {
    Kind.ADD: "add",
    Kind.CAT: "concat",
    Kind.RELU: "relu",
    Kind.FLATTEN: "flatten",
    Kind.MAXPOOL: "max_pool",
}


def replaced_pool(analysis: GraphAnalysis, node: fx.Node) -> str | None:
    """Return the name of the user's average pool that the node ``zb_pools.<i>`` replaced.

    The search model replaces the i-th average pool of ``analysis`` by ``zb_pools.<i>``; any
    other node gives None.
    """
    pools = [p.node for p in analysis.points if p.role == "avgpool"]
    prefix, _, number = str(node.target).rpartition(".")
    if prefix == "zb_pools" and number.isdigit() and int(number) < len(pools):
        return pools[int(number)]
    return None


@dataclass(frozen=True)
class LayoutTensor:
    """One tensor of the exported graph, its channel count left symbolic.

    Attributes:
        name: Edge name (as ``to_ir`` names it).
        shape: Per-sample shape of the unpruned tensor, ``(C, *spatial)`` or ``(features,)``.
        channels: Channel terms of the pruned tensor's ``shape[0]``.
        is_float: float32 (model inputs, logits).
    """

    name: str
    shape: tuple[int, ...]
    channels: ChannelTerms
    is_float: bool

    @property
    def rank(self) -> int:
        """Dims of one sample."""
        return len(self.shape)

    @property
    def spatial(self) -> int:
        """Spatial positions of one sample, ``prod(shape[1:])`` (1 for rank 1)."""
        return math.prod(self.shape[1:])

    def count(self, kept: Sequence[Number]) -> Number:
        """Channels (or features) of the tensor given each group's kept channels."""
        total: Number = 0
        for group, multiplier in self.channels:
            total = total + (multiplier if group is None else multiplier * kept[group])
        return total


@dataclass(frozen=True)
class GraphLayout:
    """The exported graph of a converted model, for any architecture.

    Attributes:
        tensors: Every tensor: the model inputs, then the op outputs in op order.
        ops: Every op, in execution order.
        inputs: Names of the model inputs.
        outputs: Names of the model outputs.
    """

    tensors: tuple[LayoutTensor, ...]
    ops: tuple[OpSpec, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def spec(self, kept: Sequence[Number]) -> GraphSpec:
        """Return the GraphSpec of the architecture that keeps ``kept[g]`` channels of group g.

        Args:
            kept: Kept (or expected kept) output channels per channel group, ints or 0-dim
                tensors.
        """
        tensors = tuple(
            TensorSpec(t.name, t.rank, t.count(kept) * t.spatial, t.is_float) for t in self.tensors
        )
        return GraphSpec(tensors, self.ops, self.inputs, self.outputs)


class _Walker:
    """Walks the fx graph as ``zerobit.export.ir._Builder`` does, keeping structure only."""

    def __init__(self, gm: fx.GraphModule, analysis: GraphAnalysis) -> None:
        self.gm, self.analysis = gm, analysis
        self.modules = dict(gm.named_modules())
        self.node_names = {n.name for n in gm.graph.nodes}
        self.tensors: dict[str, LayoutTensor] = {}
        self.ops: list[OpSpec] = []
        self.inputs: list[str] = []
        self.outputs: tuple[str, ...] = ()
        self.edge: dict[str, str | None] = {}  # fx node -> tensor name (None: not a tensor)

    def source(self, node: fx.Node, arg: Any) -> LayoutTensor:
        name = self.edge.get(arg.name) if isinstance(arg, fx.Node) else None
        if name is None:
            raise ValueError(f"node {node.name!r} takes {arg!r}, which is not a tensor")
        return self.tensors[name]

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.tensors or name in self.node_names:
            name, i = f"{base}_{i}", i + 1
        return name

    def emit(self, node: fx.Node, op: OpSpec, tensor: LayoutTensor) -> None:
        self.tensors[tensor.name] = tensor
        self.ops.append(op)
        self.edge[node.name] = tensor.name

    def visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            shape = _shape(node)
            self.tensors[node.name] = LayoutTensor(node.name, shape, ((None, shape[0]),), True)
            self.inputs.append(node.name)
            self.edge[node.name] = node.name
        elif node.op == "output":
            result = node.args[0]
            items = list(result) if isinstance(result, (tuple, list)) else [result]
            self.outputs = tuple(self.source(node, item).name for item in items)
        elif node.name in self.analysis.layers:
            self.visit_layer(node)
        else:
            module = self.modules.get(str(node.target)) if node.op == "call_module" else None
            if isinstance(module, (ActQuantizer, FrozenActQuantizer)):
                self.visit_quantizer(node)
            elif isinstance(module, QuantAvgPool):
                self.visit_avgpool(node, module)
            else:
                self.visit_plain(node)

    def visit_quantizer(self, node: fx.Node) -> None:
        source = self.source(node, node.args[0])
        if not source.is_float:
            self.edge[node.name] = source.name  # already on this grid
            return
        name = self.fresh(f"{source.name}_quant")
        tensor = LayoutTensor(name, source.shape, source.channels, False)
        self.emit(node, OpSpec("input_quant", name, (source.name,), name), tensor)

    def visit_layer(self, node: fx.Node) -> None:
        info = self.analysis.layers[node.name]
        source = self.source(node, node.args[0])
        channels = ((info.group, 1),)
        tensor = LayoutTensor(node.name, _shape(node), channels, info.output_point is None)
        self.emit(node, OpSpec("layer", info.name, (source.name,), node.name), tensor)

    def visit_avgpool(self, node: fx.Node, pool: QuantAvgPool) -> None:
        source = self.source(node, node.args[0])
        user_pool = replaced_pool(self.analysis, node)
        name = node.name if user_pool is None else self.fresh(user_pool)
        sizes = tuple(
            (size + 2 * p - k) // s + 1
            for size, k, s, p in zip(source.shape[1:], pool.kernel, pool.stride, pool.padding)
        )
        shape = (source.shape[0], *sizes)
        tensor = LayoutTensor(name, shape, source.channels, False)
        self.emit(node, OpSpec("avg_pool", name, (source.name,), name, len(sizes)), tensor)

    def visit_plain(self, node: fx.Node) -> None:
        kind = self.analysis.kinds.get(node.name) or classify(node, self.modules)
        if kind is Kind.META:
            self.edge[node.name] = None
            return
        if kind is Kind.IDENTITY:
            self.edge[node.name] = self.source(node, node.args[0]).name
            return
        sources = [self.source(node, a) for a in plain_inputs(node, kind)]
        first, shape = sources[0], _shape(node)
        if kind is Kind.OPAQUE and shape == (math.prod(first.shape),):
            kind = Kind.FLATTEN  # a view/reshape that only flattens each sample
        op_kind = _PLAIN_OPS.get(kind)  # type: ignore[arg-type]
        if op_kind is None:
            raise ValueError(
                f"node {node.name!r} ({kind}) has no integer op: the model cannot be exported, "
                "so its flash and RAM are undefined"
            )
        channels = first.channels
        is_float = first.is_float and op_kind == "flatten"
        if op_kind == "flatten":
            channels = tuple((g, m * first.spatial) for g, m in first.channels)
        elif op_kind == "concat":
            channels = tuple(term for s in sources for term in s.channels)
        window = len(shape) - 1 if op_kind == "max_pool" else 0
        inputs = tuple(s.name for s in sources)
        tensor = LayoutTensor(node.name, shape, channels, is_float)
        self.emit(node, OpSpec(op_kind, node.name, inputs, node.name, window), tensor)


def _shape(node: fx.Node) -> tuple[int, ...]:
    """Per-sample shape of a traced node's output."""
    return tuple(int(d) for d in node.meta["tensor_meta"].shape[1:])


def graph_layout(gm: fx.GraphModule, analysis: GraphAnalysis) -> GraphLayout:
    """Read the exported graph's layout from a converted (or frozen) model's fx graph.

    Args:
        gm: ``SearchModel.graph_module`` or ``FrozenModel.graph_module``.
        analysis: The model's graph analysis.

    Returns:
        The layout.

    Raises:
        ValueError: If the model has ops kept in float or ops without an integer equivalent
            (such a model has no exported graph).
    """
    if analysis.float_nodes:
        raise ValueError(
            f"ops {analysis.float_nodes} were kept in float (allow_float=True); such a model "
            "has no integer export, so its flash and RAM are undefined"
        )
    walker = _Walker(gm, analysis)
    for node in gm.graph.nodes:
        walker.visit(node)
    order = [*walker.inputs, *(op.output for op in walker.ops)]  # the exported files' order
    tensors = tuple(walker.tensors[name] for name in order)
    return GraphLayout(tensors, tuple(walker.ops), tuple(walker.inputs), walker.outputs)

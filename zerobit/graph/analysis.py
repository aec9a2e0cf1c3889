# SPDX-License-Identifier: Apache-2.0
# Reads a traced graph: node kinds, channel-coupling groups, effective input channels, and the
# activation quantization points with the groups of tensors that must share one scale.
from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn


class Kind(Enum):
    """What a graph node means to the search."""

    INPUT = "input"
    LAYER = "layer"  # searchable conv / linear
    ADD = "add"  # residual add of two tensors
    CAT = "cat"  # concatenation along channels
    RELU = "relu"
    MAXPOOL = "maxpool"
    AVGPOOL = "avgpool"
    FLATTEN = "flatten"
    IDENTITY = "identity"  # dropout, identity, contiguous: no effect in eval
    OPAQUE = "opaque"  # moves data across channels (view, permute...): blocks pruning
    META = "meta"  # non-tensor values (x.size(), shapes)
    FLOAT = "float"  # unsupported op kept in float (with allow_float=True)
    OUTPUT = "output"


# Explicit registries keyed by type or callable; no name-based guessing.
MODULE_KINDS: dict[type, Kind] = {
    nn.Conv1d: Kind.LAYER,
    nn.Conv2d: Kind.LAYER,
    nn.Linear: Kind.LAYER,
    nn.ReLU: Kind.RELU,
    nn.MaxPool1d: Kind.MAXPOOL,
    nn.MaxPool2d: Kind.MAXPOOL,
    nn.AvgPool1d: Kind.AVGPOOL,
    nn.AvgPool2d: Kind.AVGPOOL,
    nn.AdaptiveAvgPool1d: Kind.AVGPOOL,
    nn.AdaptiveAvgPool2d: Kind.AVGPOOL,
    nn.Flatten: Kind.FLATTEN,
    nn.Dropout: Kind.IDENTITY,
    nn.Dropout1d: Kind.IDENTITY,
    nn.Dropout2d: Kind.IDENTITY,
    nn.Identity: Kind.IDENTITY,
}
FUNCTION_KINDS: dict[Callable, Kind] = {
    operator.add: Kind.ADD,
    torch.add: Kind.ADD,
    torch.cat: Kind.CAT,
    torch.concat: Kind.CAT,
    torch.flatten: Kind.FLATTEN,
    torch.relu: Kind.RELU,
    F.relu: Kind.RELU,
    F.max_pool1d: Kind.MAXPOOL,
    F.max_pool2d: Kind.MAXPOOL,
    F.avg_pool1d: Kind.AVGPOOL,
    F.avg_pool2d: Kind.AVGPOOL,
    F.adaptive_avg_pool1d: Kind.AVGPOOL,
    F.adaptive_avg_pool2d: Kind.AVGPOOL,
    F.dropout: Kind.IDENTITY,
    operator.getitem: Kind.META,
    getattr: Kind.META,
}
METHOD_KINDS: dict[str, Kind] = {
    "add": Kind.ADD,
    "relu": Kind.RELU,
    "flatten": Kind.FLATTEN,
    "contiguous": Kind.IDENTITY,
    "size": Kind.META,
    "dim": Kind.META,
    "view": Kind.OPAQUE,
    "reshape": Kind.OPAQUE,
    "permute": Kind.OPAQUE,
    "transpose": Kind.OPAQUE,
}
PASS_THROUGH = (Kind.RELU, Kind.MAXPOOL, Kind.IDENTITY)


@dataclass
class LayerInfo:
    """A searchable conv/linear as found in the graph.

    Attributes:
        node: Name of its fx node.
        name: Qualified module name in the user's model.
        kind: "conv", "depthwise" or "linear".
        group: Index of its channel-coupling group.
        input_point: Index of the activation quantization point feeding it.
        output_point: Index of the point quantizing its output, or None for a float output.
        input_channels: Terms ``(group or None, multiplier)`` summing to its effective input
            channels: ``multiplier * kept(group)``, or ``multiplier`` channels for None.
        kernel_size: Kernel dims (() for linear).
        output_size: Spatial output dims (() for linear).
        out_channels: Number of output channels.
        conv_groups: ``groups`` of a grouped (not depthwise) conv, else 1.
    """

    node: str
    name: str
    kind: str
    group: int
    input_point: int
    output_point: int | None
    input_channels: list[tuple[int | None, int]]
    kernel_size: tuple[int, ...]
    output_size: tuple[int, ...]
    out_channels: int
    conv_groups: int = 1


@dataclass
class ChannelGroup:
    """Layers whose output channels are removed together and share one decision per channel."""

    index: int
    channels: int
    members: list[str] = field(default_factory=list)  # layer node names
    prunable: bool = True
    notices: list[str] = field(default_factory=list)


@dataclass
class ActPoint:
    """Where an activation quantizer runs: after ``node`` (layer, add, input, pool or float op)."""

    index: int
    node: str
    role: str  # "input", "layer", "add", "avgpool", "float"
    signed: bool
    group: int = -1  # index into GraphAnalysis.act_groups


@dataclass
class ActGroup:
    """Quantization points that must share one quantizer (scale and bits)."""

    index: int
    points: list[int]
    signed: bool
    is_input: bool


@dataclass
class GraphAnalysis:
    """Everything the search needs to know about a traced model."""

    kinds: dict[str, Kind]
    layers: dict[str, LayerInfo]  # by node name, in graph order
    groups: list[ChannelGroup]
    points: list[ActPoint]
    act_groups: list[ActGroup]
    float_nodes: list[str]
    notices: list[str]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> int:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)
        return min(ri, rj)


def classify(node: fx.Node, modules: dict[str, nn.Module]) -> Kind | None:
    """Return the node's kind, or None if zerobit does not know the op."""
    if node.op == "placeholder":
        return Kind.INPUT
    if node.op == "output":
        return Kind.OUTPUT
    if node.op == "get_attr":
        return Kind.META
    if "tensor_meta" not in node.meta and node.op in ("call_function", "call_method"):
        return Kind.META  # shapes and other non-tensor values
    if node.op == "call_module":
        return MODULE_KINDS.get(type(modules[str(node.target)]))
    if node.op == "call_function":
        return FUNCTION_KINDS.get(node.target)  # type: ignore[arg-type]
    if node.op == "call_method":
        return METHOD_KINDS.get(str(node.target))
    return None


def plain_inputs(node: fx.Node, kind: Kind | None) -> list[Any]:
    """Return the arguments a non-layer op reads as tensors, in order.

    Every concatenated tensor, both addends, or (any other kind, or an unknown op) its first
    argument.
    """
    if kind is Kind.CAT:
        return list(node.args[0] if isinstance(node.args[0], (tuple, list)) else node.args)
    if kind is Kind.ADD:
        return list(node.args[:2])
    return [node.args[0]]


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    args = list(node.args)
    if node.target in (torch.cat, torch.concat) and args and isinstance(args[0], (list, tuple)):
        args = list(args[0])
    return [a for a in args if isinstance(a, fx.Node) and "tensor_meta" in a.meta]


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"module {node.target!r} ({type(modules[str(node.target)]).__name__})"
    target = getattr(node.target, "__name__", node.target)
    return f"node {node.name!r} ({node.op} {target})"


def analyze(
    gm: fx.GraphModule,
    *,
    allow_float: bool = False,
    input_signed: bool | None = None,
) -> GraphAnalysis:
    """Analyze a traced, BatchNorm-folded graph.

    Args:
        gm: Output of :func:`zerobit.graph.trace.trace` after BatchNorm folding.
        allow_float: Keep unsupported ops in float (their neighbours lose pruning) instead of
            raising.
        input_signed: Force a signed (True) or unsigned (False) input quantizer; None decides
            from the example input the graph was traced with (signed if it had negatives).

    Returns:
        The analysis.

    Raises:
        ValueError: For an op zerobit does not support (unless ``allow_float``), a concat not
            along channels, or a model without searchable layers.
    """
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    kinds: dict[str, Kind] = {}
    notices: list[str] = []
    float_nodes: list[str] = []
    for node in nodes:
        kind = classify(node, modules)
        if kind is Kind.LAYER:
            kind = _check_layer(node, modules, notices)
        if kind is Kind.ADD and len(_tensor_args(node)) != 2:
            kind = None  # adding a constant shifts zero: not an integer residual add
        if kind is Kind.CAT:
            kind = _check_cat(node)
        if kind is Kind.FLATTEN:
            kind = _check_flatten(node)
        if kind is None:
            what = _describe(node, modules)
            if not allow_float:
                raise ValueError(
                    f"{what} is not supported by zerobit's search. Replace it with a supported "
                    "op, or pass allow_float=True to keep it in float (its neighbours are then "
                    "not pruned, and the model cannot be exported to integer formats)"
                )
            notices.append(f"{what} is kept in float")
            float_nodes.append(node.name)
            kind = Kind.FLOAT
        kinds[node.name] = kind

    float_output = _float_output_layers(nodes, kinds)
    groups_uf = _UnionFind()
    points_uf = _UnionFind()
    group_of_layer: dict[str, int] = {}
    unprunable: dict[int, str] = {}  # group id -> why
    points: list[ActPoint] = []
    chan: dict[str, list[tuple[int | None, int]]] = {}
    act: dict[str, int] = {}
    layers: dict[str, LayerInfo] = {}

    def new_point(node: fx.Node, role: str, signed: bool) -> int:
        idx = points_uf.add()
        points.append(ActPoint(idx, node.name, role, signed))
        return idx

    def needs_sign(node: fx.Node) -> bool:
        return not node.users or any(kinds.get(u.name) is not Kind.RELU for u in node.users)

    def block_pruning(terms: list[tuple[int | None, int]], why: str) -> None:
        for g, _ in terms:
            if g is not None:
                unprunable.setdefault(g, why)

    for node in nodes:
        kind = kinds[node.name]
        ins = _tensor_args(node)
        src = ins[0].name if ins else None
        if kind is Kind.INPUT:
            shape = _shape(node)
            chan[node.name] = [(None, shape[1] if len(shape) > 1 else 1)]
            signed = input_signed if input_signed is not None else bool(node.meta.get("zb_signed"))
            act[node.name] = new_point(node, "input", signed)
        elif kind is Kind.LAYER:
            _add_layer(
                node,
                modules,
                src,
                chan,
                act,
                groups_uf,
                group_of_layer,
                unprunable,
                layers,
                float_output,
            )
            info = layers[node.name]
            if node.name not in float_output:
                info.output_point = act[node.name] = new_point(node, "layer", needs_sign(node))
            chan[node.name] = [(info.group, 1)]
        elif kind in PASS_THROUGH:
            chan[node.name], act[node.name] = chan[src], act[src]  # type: ignore[index]
        elif kind is Kind.AVGPOOL:
            chan[node.name] = chan[src]  # type: ignore[index]
            p = new_point(node, "avgpool", False)
            act[node.name] = p
            points_uf.union(p, act[src])  # type: ignore[index]
        elif kind is Kind.FLATTEN:
            shape = _shape(ins[0])
            spatial = 1
            for d in shape[2:]:
                spatial *= d
            chan[node.name] = [(g, m * spatial) for g, m in chan[src]]  # type: ignore[index]
            act[node.name] = act[src]  # type: ignore[index]
        elif kind is Kind.ADD:
            a, b = (chan[i.name] for i in ins)
            if len(a) == 1 and len(b) == 1 and a[0][0] is not None and b[0][0] is not None:
                root = groups_uf.union(a[0][0], b[0][0])
                chan[node.name] = [(root, 1)]
            else:
                why = f"add {node.name!r} sums tensors that are not single prunable groups"
                block_pruning(a + b, why)
                chan[node.name] = [(None, _shape(node)[1])]
            p = new_point(node, "add", needs_sign(node))
            for i in ins:
                points_uf.union(p, act[i.name])
            act[node.name] = p
        elif kind is Kind.CAT:
            chan[node.name] = [t for i in ins for t in chan[i.name]]
            root = act[ins[0].name]
            for i in ins[1:]:
                root = points_uf.union(root, act[i.name])
            act[node.name] = root
        elif kind is Kind.OPAQUE:
            shape = _shape(node)
            block_pruning(chan[src], f"{node.name!r} moves data across channels")  # type: ignore[index]
            chan[node.name] = [(None, shape[1] if len(shape) > 1 else 1)]
            act[node.name] = act[src]  # type: ignore[index]
        elif kind is Kind.FLOAT:
            for i in ins:
                block_pruning(chan[i.name], f"{node.name!r} is kept in float")
            shape = _shape(node)
            chan[node.name] = [(None, shape[1] if len(shape) > 1 else 1)]
            act[node.name] = new_point(node, "float", True)

    if not layers:
        raise ValueError("the model has no Conv1d, Conv2d or Linear layer to search")
    groups = _build_groups(layers, groups_uf, unprunable, float_output, modules, notices)
    act_groups = _build_act_groups(points, points_uf)
    return GraphAnalysis(kinds, layers, groups, points, act_groups, float_nodes, notices)


def _check_layer(node: fx.Node, modules: dict[str, nn.Module], notices: list[str]) -> Kind | None:
    layer = modules[str(node.target)]
    if isinstance(layer, nn.Linear) and len(_shape(node)) != 2:
        return None  # channel bookkeeping assumes (N, features)
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)) and layer.padding_mode != "zeros":
        return None
    return Kind.LAYER


def _check_cat(node: fx.Node) -> Kind | None:
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    rank = len(_shape(node))
    return Kind.CAT if isinstance(dim, int) and dim % rank == 1 else None


def _check_flatten(node: fx.Node) -> Kind:
    start: Any
    end: Any
    if node.op == "call_module":
        module: Any = node.graph.owning_module.get_submodule(str(node.target))  # type: ignore[union-attr]
        start, end = module.start_dim, module.end_dim
    else:
        start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
        end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
    return Kind.FLATTEN if start == 1 and end == -1 else Kind.OPAQUE


def _float_output_layers(nodes: list[fx.Node], kinds: dict[str, Kind]) -> set[str]:
    """Layers whose every use ends at the graph output through flatten/identity-like ops."""

    def only_output(node: fx.Node) -> bool:
        if not node.users:
            return False
        for user in node.users:
            kind = kinds[user.name]
            if kind is Kind.OUTPUT:
                continue
            if kind in (Kind.IDENTITY, Kind.FLATTEN) and only_output(user):
                continue
            return False
        return True

    return {n.name for n in nodes if kinds[n.name] is Kind.LAYER and only_output(n)}


def _add_layer(
    node, modules, src, chan, act, groups_uf, group_of_layer, unprunable, layers, float_output
) -> None:  # type: ignore[no-untyped-def]
    layer: Any = modules[str(node.target)]
    shape = _shape(node)
    in_terms = chan[src]
    kernel: tuple[int, ...]
    out_size: tuple[int, ...]
    if isinstance(layer, nn.Linear):
        kind, kernel, out_size, out_ch = "linear", (), (), layer.out_features
    else:
        out_ch = layer.out_channels
        kernel, out_size = tuple(layer.kernel_size), tuple(shape[2:])
        depthwise = layer.groups == layer.in_channels == layer.out_channels and layer.groups > 1
        kind = "depthwise" if depthwise else "conv"
    gid = groups_uf.add()
    if kind == "depthwise":
        if len(in_terms) == 1 and in_terms[0][0] is not None and in_terms[0][1] == 1:
            gid = groups_uf.union(gid, in_terms[0][0])
        else:
            unprunable.setdefault(
                gid, f"depthwise {node.target!r} reads channels that cannot be pruned"
            )
            for g, _ in in_terms:
                if g is not None:
                    unprunable.setdefault(
                        g, f"depthwise {node.target!r} follows a concat or flatten"
                    )
    elif kind == "conv" and layer.groups > 1:
        why = f"grouped conv {node.target!r} (groups={layer.groups}) needs whole channel groups"
        unprunable.setdefault(gid, why)
        for g, _ in in_terms:
            if g is not None:
                unprunable.setdefault(g, why)
    if node.name in float_output:
        unprunable.setdefault(gid, f"{node.target!r} produces the model output")
    group_of_layer[node.name] = gid
    layers[node.name] = LayerInfo(
        node=node.name,
        name=str(node.target),
        kind=kind,
        group=gid,
        input_point=act[src],
        output_point=None,
        input_channels=list(in_terms),
        kernel_size=kernel,
        output_size=out_size,
        out_channels=out_ch,
        conv_groups=layer.groups if kind == "conv" else 1,
    )


def _build_groups(layers, groups_uf, unprunable, float_output, modules, notices):  # type: ignore[no-untyped-def]
    roots: dict[int, int] = {}
    groups: list[ChannelGroup] = []
    for info in layers.values():
        root = groups_uf.find(info.group)
        if root not in roots:
            roots[root] = len(groups)
            groups.append(ChannelGroup(len(groups), info.out_channels))
        group = groups[roots[root]]
        if group.channels != info.out_channels:
            raise ValueError(
                f"layers {group.members} and {info.name!r} are coupled but have "
                f"{group.channels} and {info.out_channels} output channels"
            )
        group.members.append(info.node)
    for g, why in unprunable.items():
        group = groups[roots[groups_uf.find(g)]]
        if group.prunable:
            group.prunable = False
            group.notices.append(why)
            if "produces the model output" not in why:
                notices.append(
                    f"channels of {[layers[m].name for m in group.members]} are not pruned: {why}"
                )
    for info in layers.values():
        info.group = roots[groups_uf.find(info.group)]
        info.input_channels = [
            (None if g is None else roots[groups_uf.find(g)], m) for g, m in info.input_channels
        ]
    return groups


def _build_act_groups(points: list[ActPoint], uf: _UnionFind) -> list[ActGroup]:
    roots: dict[int, int] = {}
    groups: list[ActGroup] = []
    for p in points:
        root = uf.find(p.index)
        if root not in roots:
            roots[root] = len(groups)
            groups.append(ActGroup(len(groups), [], False, False))
        group = groups[roots[root]]
        group.points.append(p.index)
        group.signed = group.signed or p.signed
        group.is_input = group.is_input or p.role == "input"
        p.group = group.index
    return groups

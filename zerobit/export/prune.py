# SPDX-License-Identifier: Apache-2.0
# Physical pruning: 0-bit channels leave their producers and every consumer; the pruned torch model.
"""Physical pruning of an integer graph, and the pruned PyTorch model built from it.

A 0-bit channel computes code 0 (zero weight codes, zero bias, multiplier 0), and every op
between a producer and its consumers maps 0 to 0 (graph analysis guarantees it for prunable
groups), so removing the channel changes no other value. :func:`prune` removes it from:

* its producer (the weight rows, biases, requantization parameters and bits of the layer);
* every conv/linear that reads it (the weight's input columns);
* residual partners (an add requires both inputs to keep the same channels: coupled groups share
  their decisions);
* concats (each input's kept channels, shifted by the input's offset);
* depthwise convs (the channel goes, and ``groups`` shrinks with it);
* flatten -> linear (the channel's whole ``prod(spatial)`` block of features, channel-major).

The kept channels keep their order everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zerobit.export.ir import (
    Add,
    Concat,
    Flatten,
    IntegerGraph,
    Layer,
    Op,
    TensorInfo,
    to_ir,
)
from zerobit.export.reference import KERNELS, dequantize
from zerobit.quant import requantize
from zerobit.search.frozen import FrozenModel

__all__ = ["PrunedModel", "QuantizedLayer", "prune", "to_torch"]


def _kept_layer(op: Layer, kept_in: list[int], source: TensorInfo) -> Layer:
    kept_out = [c for c, b in enumerate(op.weight_bits.tolist()) if b > 0]
    full_in = kept_in == list(range(source.channels))
    index = torch.tensor(kept_out, dtype=torch.int64)
    weight = op.weight_codes.index_select(0, index)
    groups = op.groups
    if groups == 1:
        weight = weight.index_select(1, torch.tensor(kept_in, dtype=torch.int64))
    elif op.kind == "depthwise":
        if kept_in != kept_out:
            raise ValueError(
                f"depthwise {op.name!r} keeps channels {kept_out} but its input keeps {kept_in}"
            )
        groups = len(kept_out)
    elif not (full_in and len(kept_out) == op.out_channels):
        raise ValueError(f"grouped conv {op.name!r} (groups={groups}) cannot lose channels")

    def pick(values: Tensor | None) -> Tensor | None:
        return None if values is None else values.index_select(0, index)

    return dataclasses.replace(
        op,
        weight_codes=weight,
        weight_bits=op.weight_bits.index_select(0, index),
        weight_scale=op.weight_scale.index_select(0, index),
        bias_codes=op.bias_codes.index_select(0, index),
        multiplier=pick(op.multiplier),
        shift=pick(op.shift),
        dequant_scale=pick(op.dequant_scale),
        groups=groups,
    )


def _kept_channels(op: Op, graph: IntegerGraph, kept: dict[str, list[int]]) -> list[int]:
    """Kept channels (indices into the unpruned output) of ``op``'s output."""
    ins = [kept[i] for i in op.inputs]
    if isinstance(op, Layer):
        return [c for c, b in enumerate(op.weight_bits.tolist()) if b > 0]
    if isinstance(op, Add):
        if ins[0] != ins[1]:
            raise ValueError(f"add {op.name!r} sums tensors that keep different channels")
        return ins[0]
    if isinstance(op, Concat):
        out: list[int] = []
        offset = 0
        for name, channels in zip(op.inputs, ins):
            out += [offset + c for c in channels]
            offset += graph.tensors[name].channels
        return out
    if isinstance(op, Flatten):
        shape = graph.tensors[op.inputs[0]].shape
        block = 1
        for d in shape[1:]:
            block *= d
        return [c * block + j for c in ins[0] for j in range(block)]
    return ins[0]  # elementwise, pools and input quantizers keep channels


def prune(graph: IntegerGraph | FrozenModel) -> IntegerGraph:
    """Remove every 0-bit channel from its producer and from every consumer.

    Idempotent: a pruned graph is returned unchanged (as a copy).

    Args:
        graph: An integer graph (from :func:`~zerobit.export.to_ir`) or a frozen model.

    Returns:
        The validated pruned graph: same ops and edges, fewer channels, every weight bit-width
        non-zero.

    Raises:
        ValueError: If a model output would lose channels, or a coupling the search guarantees
            is broken (an add or depthwise conv whose inputs keep different channels).
    """
    if isinstance(graph, FrozenModel):
        graph = to_ir(graph)
    kept: dict[str, list[int]] = {n: list(range(graph.tensors[n].channels)) for n in graph.inputs}
    ops: list[Op] = []
    tensors = {n: graph.tensors[n] for n in graph.inputs}
    for op in graph.ops:
        channels = _kept_channels(op, graph, kept)
        kept[op.output] = channels
        if isinstance(op, Layer):
            op = _kept_layer(op, kept[op.inputs[0]], graph.tensors[op.inputs[0]])
        ops.append(op)
        info = graph.tensors[op.output]
        tensors[op.output] = dataclasses.replace(info, shape=(len(channels), *info.shape[1:]))
    for name in graph.outputs:
        if len(kept[name]) != graph.tensors[name].channels:
            raise ValueError(f"model output {name!r} would lose pruned channels")
    pruned = IntegerGraph(tensors, ops, graph.inputs, graph.outputs)
    pruned.validate()
    return pruned


class QuantizedLayer(nn.Module):
    """A pruned conv/linear: a plain torch layer holding the dequantized weights and biases.

    ``layer.weight`` is ``weight_codes * weight_scale`` (float32, exact for codes up to 2^24)
    and ``layer.bias`` the dequantized bias, so the module is an ordinary ``nn.Conv1d``,
    ``nn.Conv2d`` or ``nn.Linear`` of the pruned size. The forward is the frozen model's exact
    integer arithmetic: codes are recovered as ``round(weight / weight_scale)`` (exact, as
    ``|code| <= 127``), the accumulation is a float64 conv of integers (exact below 2^53), and
    the bias is added from the int32 ``bias_codes`` buffer, because float32 cannot hold every
    int32 code.

    Args:
        op: The pruned layer op.
        graph: Its graph (for the input and output grids).
    """

    multiplier: Tensor
    shift: Tensor
    bias_codes: Tensor
    weight_scale: Tensor
    dequant_scale: Tensor

    def __init__(self, op: Layer, graph: IntegerGraph) -> None:
        super().__init__()
        source, target = graph.tensors[op.inputs[0]], graph.tensors[op.output]
        assert source.scale is not None  # validated: layers read codes
        self.layer = _torch_layer(op, source.scale)
        self.input_scale = source.scale
        self.output = target
        self.dims = op.dims
        self.conv_args: dict[str, Any] = {}
        if op.dims:
            self.conv_args = dict(
                stride=op.stride, padding=op.padding, dilation=op.dilation, groups=op.groups
            )
        self.register_buffer("weight_scale", op.weight_scale.clone())
        self.register_buffer("bias_codes", op.bias_codes.clone())
        empty = torch.zeros(0, dtype=torch.int64)
        self.register_buffer("multiplier", empty if op.multiplier is None else op.multiplier)
        self.register_buffer("shift", empty if op.shift is None else op.shift)
        self.float_output = op.dequant_scale is not None
        dequant = op.dequant_scale if op.dequant_scale is not None else empty.float()
        self.register_buffer("dequant_scale", dequant.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``code * scale`` inputs, float32 (N, C_in, *spatial) or (N, C_in).

        Returns:
            float32 ``code * scale`` outputs, or the float logits of an output layer.
        """
        shape = (1, -1) + (1,) * self.dims
        weight = self.layer.weight
        codes = torch.round(x / torch.tensor(self.input_scale, dtype=torch.float32))
        scale = self.weight_scale.reshape((-1,) + (1,) * (weight.dim() - 1))
        weight_codes = torch.round(weight / scale)
        with torch.backends.nnpack.flags(enabled=False):
            if self.dims == 0:
                acc = F.linear(codes.double(), weight_codes.double())
            else:
                conv = F.conv1d if self.dims == 1 else F.conv2d
                acc = conv(codes.double(), weight_codes.double(), None, **self.conv_args)
        acc = acc.round().long() + self.bias_codes.long().reshape(shape)
        if self.float_output:
            return acc.float() * self.dequant_scale.reshape(shape)
        out = requantize(acc, self.multiplier, self.shift, dim=1).clamp(*self.output.range)
        return dequantize(out, self.output)


@torch.no_grad()
def _torch_layer(op: Layer, input_scale: float) -> nn.Conv1d | nn.Conv2d | nn.Linear:
    out_channels = op.out_channels
    scale_shape = (-1,) + (1,) * (op.weight_codes.dim() - 1)
    weight = op.weight_codes.to(torch.float32) * op.weight_scale.reshape(scale_shape)
    bias_scale = torch.tensor(input_scale, dtype=torch.float32) * op.weight_scale
    bias = (op.bias_codes.double() * bias_scale.double()).float()
    layer: nn.Conv1d | nn.Conv2d | nn.Linear
    if op.dims == 0:
        layer = nn.Linear(int(op.weight_codes.shape[1]), out_channels)
    else:
        conv = nn.Conv1d if op.dims == 1 else nn.Conv2d
        in_channels = int(op.weight_codes.shape[1]) * op.groups
        layer = conv(
            in_channels,
            out_channels,
            op.kernel_size,  # type: ignore[arg-type]
            stride=op.stride,  # type: ignore[arg-type]
            padding=op.padding,  # type: ignore[arg-type]
            dilation=op.dilation,  # type: ignore[arg-type]
            groups=op.groups,
        )
    layer.weight.copy_(weight)
    layer.bias.copy_(bias)  # type: ignore[union-attr]
    return layer


class PrunedModel(nn.Module):
    """The pruned model in PyTorch: plain conv/linear modules of the pruned sizes.

    Its layers are reachable under ``layers`` by their original qualified names (e.g.
    ``model.layers.get_submodule("stack1.conv1").layer`` is an ``nn.Conv2d``). Tensors between
    ops hold ``code * scale`` in float32, as in the frozen model's eval mode, and the forward
    computes the same values bit for bit (layers: :class:`QuantizedLayer`; other ops: the
    integer kernels of :mod:`zerobit.export.reference` on the codes).

    Args:
        graph: A pruned integer graph (see :func:`prune`).
    """

    def __init__(self, graph: IntegerGraph) -> None:
        super().__init__()
        self.graph = graph
        self.layers = nn.Module()
        for op in graph.layers():
            _add_nested(self.layers, op.name, QuantizedLayer(op, graph))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Compute the outputs from float32 (N, *shape) inputs, one per graph input."""
        graph = self.graph
        values = dict(zip(graph.inputs, (x.to(torch.float32) for x in inputs)))
        for op in graph.ops:
            target = graph.tensors[op.output]
            if isinstance(op, Layer):
                layer = self.layers.get_submodule(op.name)
                values[op.output] = layer(values[op.inputs[0]])
                continue
            codes = [_codes(values[i], graph.tensors[i]) for i in op.inputs]
            out = KERNELS[type(op)](op, codes, graph)
            values[op.output] = dequantize(out, target)
        outputs = tuple(values[o] for o in graph.outputs)
        return outputs[0] if len(outputs) == 1 else outputs


def _codes(values: Tensor, info: TensorInfo) -> Tensor:
    if info.scale is None:
        return values
    return torch.round(values / torch.tensor(info.scale, dtype=torch.float32)).to(torch.int64)


def _add_nested(root: nn.Module, name: str, module: nn.Module) -> None:
    parent = root
    *path, leaf = name.split(".")
    for part in path:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    parent.add_module(leaf, module)


def to_torch(model: IntegerGraph | FrozenModel) -> PrunedModel:
    """Build the pruned PyTorch model of a frozen model or integer graph.

    Args:
        model: A frozen model, or an integer graph (pruned first if needed).

    Returns:
        The pruned model; its outputs equal the frozen model's eval outputs bit for bit.
    """
    return PrunedModel(prune(model))

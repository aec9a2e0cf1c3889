# SPDX-License-Identifier: Apache-2.0
# The integer reference: executes an IntegerGraph with int64 tensors only, bit-exact.
"""Integer reference executor.

Every edge holds int64 codes (float32 only for model inputs and float logits). Convolutions and
linear layers are explicit integer arithmetic: the input is zero-padded and unfolded into its
windows (``Tensor.unfold``, a view) and contracted with the weight codes by an int64
``einsum``/matmul. This is exact because every product and partial sum is an integer of
magnitude at most ``max|code| * sum|weight codes|`` (below ``2^8 * 2^7 * fan_in``, far below
``2^63``), so no summation order or algorithm can round; it is independent of the float64
convolution that :class:`~zerobit.search.FrozenModel` and :class:`~zerobit.export.PrunedModel`
use, which makes the parity tests meaningful. Requantization and average-pool division are
:func:`zerobit.quant.requantize` and :func:`zerobit.quant.integer_avg_pool_divide`, the one
rounding that every backend ports. The only float arithmetic is at the boundaries, and it is
the frozen model's own: input quantization ``clamp(round_half_even(x / scale))`` (one float32
division) and the logits ``float32(acc) * dequant_scale`` (one float32 multiply); quantized
outputs are returned as ``float32(code) * scale``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from zerobit.export.ir import (
    Add,
    AvgPool,
    Concat,
    Flatten,
    InputQuant,
    IntegerGraph,
    Layer,
    MaxPool,
    Op,
    Relu,
    TensorInfo,
)
from zerobit.quant import integer_avg_pool_divide, requantize

__all__ = ["KERNELS", "IntegerReference", "run_reference"]

Kernel = Callable[[Any, list[Tensor], IntegerGraph], Tensor]
KERNELS: dict[type[Op], Kernel] = {}
"""Integer kernel of each op type: ``kernel(op, inputs, graph) -> output``."""

_OpT = TypeVar("_OpT", bound=Op)


def kernel(op_type: type[_OpT]) -> Callable[[Kernel], Kernel]:
    """Register the integer kernel of ``op_type``."""

    def register(function: Kernel) -> Kernel:
        KERNELS[op_type] = function
        return function

    return register


def windows(
    x: Tensor,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    fill: int,
) -> Tensor:
    """Sliding windows of an integer tensor.

    Args:
        x: int64 (N, C, *spatial), 1 or 2 spatial dims.
        kernel: Window per spatial dim.
        stride: Stride per spatial dim.
        padding: Symmetric padding per spatial dim, filled with ``fill``.
        dilation: Dilation per spatial dim.
        fill: Value of the padding.

    Returns:
        int64 (N, C, *out, *kernel), a view of the padded input where possible.
    """
    pads: list[int] = []
    for p in reversed(padding):
        pads += [p, p]
    if any(pads):
        x = F.pad(x, pads, value=fill)
    for d, (k, s, r) in enumerate(zip(kernel, stride, dilation)):
        x = x.unfold(2 + d, r * (k - 1) + 1, s)
        if r > 1:
            x = x[..., ::r]
    return x


def _accumulate(op: Layer, codes: Tensor) -> Tensor:
    """Exact int64 ``sum(codes * weight)``: (N, C_out, *out) or (N, C_out)."""
    weight = op.weight_codes.to(torch.int64)
    if op.dims == 0:
        return codes @ weight.T
    n, groups = codes.shape[0], op.groups
    view = windows(codes, op.kernel_size, op.stride, op.padding, op.dilation, 0)
    out_size = tuple(view.shape[2 : 2 + op.dims])
    positions, volume = math.prod(out_size), math.prod(op.kernel_size)
    per_group = codes.shape[1] // groups
    # (N, C_in, *out, *k) -> (N, groups, positions, C_in/groups * k)
    view = view.reshape(n, groups, per_group, positions, volume).permute(0, 1, 3, 2, 4)
    view = view.reshape(n, groups, positions, per_group * volume)
    weight = weight.reshape(groups, op.out_channels // groups, per_group * volume)
    acc = torch.einsum("ngpk,gok->ngop", view, weight)
    return acc.reshape(n, op.out_channels, *out_size)


def _channel_view(values: Tensor, dims: int) -> Tensor:
    return values.reshape((1, -1) + (1,) * dims)


@kernel(InputQuant)
def _input_quant(op: InputQuant, inputs: list[Tensor], graph: IntegerGraph) -> Tensor:
    info = graph.tensors[op.output]
    assert info.scale is not None  # validated: a quantized edge
    scale = torch.tensor(info.scale, dtype=torch.float32)
    return torch.round(inputs[0].to(torch.float32) / scale).clamp(*info.range).to(torch.int64)


@kernel(Layer)
def _layer(op: Layer, inputs: list[Tensor], graph: IntegerGraph) -> Tensor:
    acc = _accumulate(op, inputs[0])
    acc = acc + _channel_view(op.bias_codes.to(torch.int64), op.dims)
    if op.dequant_scale is not None:
        return acc.to(torch.float32) * _channel_view(op.dequant_scale, op.dims)
    assert op.multiplier is not None and op.shift is not None  # validated
    out = requantize(acc, op.multiplier, op.shift, dim=1)
    return out.clamp(*graph.tensors[op.output].range)


@kernel(Add)
def _add(op: Add, inputs: list[Tensor], graph: IntegerGraph) -> Tensor:
    return (inputs[0] + inputs[1]).clamp(*graph.tensors[op.output].range)


@kernel(Relu)
def _relu(op: Relu, inputs: list[Tensor], graph: IntegerGraph) -> Tensor:
    return inputs[0].clamp(min=0)


@kernel(MaxPool)
def _max_pool(op: MaxPool, inputs: list[Tensor], graph: IntegerGraph) -> Tensor:
    lowest = int(torch.iinfo(torch.int64).min)
    view = windows(inputs[0], op.kernel, op.stride, op.padding, op.dilation, lowest)
    return view.flatten(-len(op.kernel)).amax(dim=-1)


@kernel(AvgPool)
def _avg_pool(op: AvgPool, inputs: list[Tensor], graph: IntegerGraph) -> Tensor:
    ones = (1,) * len(op.kernel)
    view = windows(inputs[0], op.kernel, op.stride, op.padding, ones, 0)
    return integer_avg_pool_divide(view.flatten(-len(op.kernel)).sum(dim=-1), op.count)


@kernel(Flatten)
def _flatten(op: Flatten, inputs: list[Tensor], graph: IntegerGraph) -> Tensor:
    return inputs[0].flatten(1)


@kernel(Concat)
def _concat(op: Concat, inputs: list[Tensor], graph: IntegerGraph) -> Tensor:
    return torch.cat(inputs, dim=1)


def dequantize(values: Tensor, info: TensorInfo) -> Tensor:
    """Return an edge's values as float32: ``float32(code) * scale``, or the float values."""
    if info.scale is None:
        return values
    return values.to(torch.float32) * torch.tensor(info.scale, dtype=torch.float32)


class IntegerReference:
    """Executes an :class:`~zerobit.export.IntegerGraph` with integer ops only.

    Args:
        graph: The graph (pruned or not); it is validated.

    Example:
        >>> import torch, zerobit as zb
        >>> from zerobit.export import IntegerReference, to_ir
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
        >>> frozen = zb.convert(net, torch.rand(2, 1, 8, 8)).eval().freeze().eval()
        >>> x = torch.rand(3, 1, 8, 8)
        >>> torch.equal(IntegerReference(to_ir(frozen))(x), frozen(x))
        True
    """

    def __init__(self, graph: IntegerGraph) -> None:
        graph.validate()
        self.graph = graph

    def run(self, *inputs: Tensor) -> dict[str, Tensor]:
        """Compute every edge.

        Args:
            *inputs: float (N, *shape) per model input; converted to float32.

        Returns:
            ``{edge name: values}``: int64 (N, *shape) codes for quantized edges, float32 for
            float edges (inputs and logits).

        Raises:
            ValueError: If the inputs do not match the graph's inputs.
        """
        graph = self.graph
        if len(inputs) != len(graph.inputs):
            raise ValueError(f"the graph takes {len(graph.inputs)} input(s), got {len(inputs)}")
        values: dict[str, Tensor] = {}
        for name, x in zip(graph.inputs, inputs):
            shape = graph.tensors[name].shape
            if tuple(x.shape[1:]) != shape or not x.dtype.is_floating_point:
                raise ValueError(
                    f"input {name!r} must be float (N, {', '.join(map(str, shape))}), "
                    f"got {x.dtype} {tuple(x.shape)}"
                )
            values[name] = x.detach().to(torch.float32)
        with torch.no_grad():
            for op in graph.ops:
                values[op.output] = KERNELS[type(op)](op, [values[i] for i in op.inputs], graph)
        return values

    def __call__(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Compute the model outputs as float32 (logits, or ``code * scale``).

        Args:
            *inputs: float (N, *shape) per model input.

        Returns:
            One float32 tensor, or a tuple for a model with several outputs.
        """
        values = self.run(*inputs)
        outputs = tuple(dequantize(values[o], self.graph.tensors[o]) for o in self.graph.outputs)
        return outputs[0] if len(outputs) == 1 else outputs


def run_reference(graph: IntegerGraph, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
    """Run the integer reference once; see :class:`IntegerReference`.

    Args:
        graph: The integer graph.
        *inputs: float (N, *shape) per model input.

    Returns:
        float32 outputs (one tensor, or a tuple for several outputs).
    """
    return IntegerReference(graph)(*inputs)

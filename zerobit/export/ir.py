# SPDX-License-Identifier: Apache-2.0
# The integer IR: a frozen model's fx graph as a topologically ordered list of typed integer ops.
"""Integer intermediate representation shared by every exporter.

An :class:`IntegerGraph` is what a :class:`~zerobit.search.FrozenModel` computes in eval mode,
written as integer ops on named tensors:

* :class:`TensorInfo` describes each tensor (an *edge*): its per-sample shape (no batch
  dimension; ``(C, *spatial)`` or ``(features,)``), and either a quantization (``scale``, a
  float32 value held in a Python float, ``bits`` and ``signed``: the tensor holds integer codes in
  ``act_range(bits, signed)`` that stand for ``code * scale``), or ``scale=None`` for a float32
  tensor (model inputs and the float logits of the output layer).
* Ops (:class:`InputQuant`, :class:`Layer`, :class:`Add`, :class:`Relu`, :class:`MaxPool`,
  :class:`AvgPool`, :class:`Flatten`, :class:`Concat`) name their input and output edges; the
  op list is in topological order and every edge is produced once.

The graph may still hold 0-bit (pruned) channels, as :func:`to_ir` returns it; see
:func:`zerobit.export.prune` for the physically pruned graph. Integer semantics are those of
:mod:`zerobit.export.reference`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx, nn

from zerobit.graph.analysis import Kind, classify, plain_inputs
from zerobit.quant import (
    WEIGHT_BITS,
    act_range,
    check_act_bits,
    weight_levels,
)
from zerobit.search.frozen import FrozenLayer, FrozenModel
from zerobit.search.layout import replaced_pool
from zerobit.search.modules import FrozenActQuantizer, QuantAvgPool

__all__ = [
    "Add",
    "AvgPool",
    "Concat",
    "Flatten",
    "InputQuant",
    "IntegerGraph",
    "Layer",
    "MaxPool",
    "Op",
    "Relu",
    "TensorInfo",
    "to_ir",
]

LAYER_KINDS = ("conv", "depthwise", "linear")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor (edge) of the graph.

    Attributes:
        name: Unique edge name (the fx node that produces it).
        shape: Per-sample shape, without the batch dimension: ``(C, *spatial)`` or
            ``(features,)``.
        scale: Quantization step, a float32 value (held exactly in a Python float); None for a
            float32 tensor.
        bits: Code bit-width (2..8); None for a float tensor.
        signed: Codes in the signed range ``[-2^(bits-1), 2^(bits-1) - 1]`` if true, else in
            ``[0, 2^bits - 1]``.
    """

    name: str
    shape: tuple[int, ...]
    scale: float | None = None
    bits: int | None = None
    signed: bool = False

    @property
    def is_float(self) -> bool:
        """Whether the tensor holds float32 values rather than integer codes."""
        return self.scale is None

    @property
    def channels(self) -> int:
        """Number of channels (or features): ``shape[0]``."""
        return self.shape[0]

    @property
    def range(self) -> tuple[int, int]:
        """Inclusive code range ``(lo, hi)``.

        Raises:
            ValueError: For a float tensor.
        """
        if self.bits is None:
            raise ValueError(f"tensor {self.name!r} is float and has no code range")
        return act_range(self.bits, self.signed)

    def quantization(self) -> tuple[float | None, int | None, bool]:
        """Return ``(scale, bits, signed)``; two tensors share codes iff these are equal."""
        return self.scale, self.bits, self.signed if self.scale is not None else False


@dataclass(eq=False)
class Op:
    """Base of every op: a unique name, input edge names and one output edge name.

    A layer is named after its module (qualified name), the other ops after their fx node.
    """

    name: str
    inputs: tuple[str, ...]
    output: str


@dataclass(eq=False)
class InputQuant(Op):
    """Quantize a float32 model input onto its output edge's grid.

    ``codes = clamp(round_half_even(x / scale), lo, hi)``, the division in float32.
    """


@dataclass(eq=False)
class Layer(Op):
    """A conv (1-d or 2-d, including depthwise and grouped) or linear layer on integer codes.

    ``acc = sum(codes_in * weight_codes) + bias_codes`` in exact integers; then either
    ``clamp(requantize(acc, multiplier, shift), lo, hi)`` onto the output edge's grid, or, for a
    float output (the logits), ``float32(acc) * dequant_scale`` per channel.

    Attributes:
        kind: ``"conv"``, ``"depthwise"`` or ``"linear"``.
        weight_codes: int32 ``(C_out, C_in / groups, *kernel)`` for a conv, ``(C_out, C_in)`` for
            a linear; narrow-range codes, 0 in 0-bit channels.
        weight_bits: int64 ``(C_out,)`` bit-width per output channel, 0 = pruned.
        weight_scale: float32 ``(C_out,)`` weight step per channel (0 where pruned); only for
            dequantization (pruned torch model), the integer path never reads it.
        bias_codes: int32 ``(C_out,)`` on the scale ``input_scale * weight_scale``.
        multiplier: int64 ``(C_out,)`` in ``[0, 2^31)``; None for a float output.
        shift: int64 ``(C_out,)`` in ``[0, 62]``; None for a float output.
        dequant_scale: float32 ``(C_out,)`` = ``float32(input_scale * weight_scale)`` for a
            float output, else None.
        stride: Conv stride per spatial dim (``()`` for linear).
        padding: Symmetric zero padding per spatial dim (``()`` for linear).
        dilation: Conv dilation per spatial dim (``()`` for linear).
        groups: Conv groups (1 for linear).
    """

    kind: str
    weight_codes: Tensor
    weight_bits: Tensor
    weight_scale: Tensor
    bias_codes: Tensor
    multiplier: Tensor | None
    shift: Tensor | None
    dequant_scale: Tensor | None
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    @property
    def dims(self) -> int:
        """Spatial dims of the conv: 0 (linear), 1 or 2."""
        return self.weight_codes.dim() - 2

    @property
    def out_channels(self) -> int:
        """Number of output channels (rows of ``weight_codes``)."""
        return int(self.weight_codes.shape[0])

    @property
    def kernel_size(self) -> tuple[int, ...]:
        """Kernel dims (``()`` for linear)."""
        return tuple(int(k) for k in self.weight_codes.shape[2:])

    @property
    def weights_per_channel(self) -> int:
        """Weights of one output channel: ``C_in / groups * prod(kernel)``."""
        return math.prod(int(d) for d in self.weight_codes.shape[1:])

    @property
    def float_output(self) -> bool:
        """Whether the layer outputs float32 logits instead of codes."""
        return self.dequant_scale is not None


@dataclass(eq=False)
class Add(Op):
    """Residual add of two edges on one grid: ``clamp(a + b, lo, hi)`` (no rescaling)."""


@dataclass(eq=False)
class Relu(Op):
    """``max(codes, 0)`` (zero point 0, so ReLU on codes is ReLU on values)."""


@dataclass(eq=False)
class MaxPool(Op):
    """Max pool over codes; padding never wins (it stands for -inf).

    Attributes:
        kernel: Window per spatial dim.
        stride: Stride per spatial dim.
        padding: Symmetric padding per spatial dim.
        dilation: Dilation per spatial dim.
    """

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]


@dataclass(eq=False)
class AvgPool(Op):
    """Integer average pool: window sums divided by ``integer_avg_pool_divide``.

    Zero padding is counted in the divisor ``count = prod(kernel)``
    (:func:`zerobit.quant.integer_avg_pool_divide`).

    Attributes:
        kernel: Window per spatial dim.
        stride: Stride per spatial dim.
        padding: Symmetric zero padding per spatial dim.
    """

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]

    @property
    def count(self) -> int:
        """Divisor of the window sums: ``prod(kernel)``."""
        return math.prod(self.kernel)


@dataclass(eq=False)
class Flatten(Op):
    """Flatten ``(C, *spatial)`` to ``(C * prod(spatial),)``, channel-major."""


@dataclass(eq=False)
class Concat(Op):
    """Concatenate edges on one grid along the channels, in input order."""


@dataclass(eq=False)
class IntegerGraph:
    """A model as integer ops on named tensors.

    Attributes:
        tensors: Every edge by name.
        ops: The ops in topological order.
        inputs: Names of the float32 model inputs (``forward`` argument order).
        outputs: Names of the model outputs; quantized ones are returned as ``code * scale``.
    """

    tensors: dict[str, TensorInfo]
    ops: list[Op]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def layers(self) -> list[Layer]:
        """Return the conv/linear ops in graph order."""
        return [op for op in self.ops if isinstance(op, Layer)]

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def validate(self) -> None:
        """Check that the graph is well formed and every op is consistent with its edges.

        Raises:
            ValueError: Naming the first inconsistency found.
        """
        _validate(self)


# ----------------------------------------------------------------------------- shape rules
def window_output(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output length of a sliding window (conv or pool, floor mode).

    Raises:
        ValueError: If the window does not fit the padded input.
    """
    span = dilation * (kernel - 1) + 1
    if size + 2 * padding < span:
        raise ValueError(f"window {span} does not fit input {size} with padding {padding}")
    return (size + 2 * padding - span) // stride + 1


def _check_window_args(op: Op, *params: tuple[int, ...], dims: int) -> None:
    for values in params:
        if len(values) != dims:
            raise ValueError(f"op {op.name!r}: window parameters must have {dims} entries")
    kernel, stride, padding = params[0], params[1], params[2]
    dilation = params[3] if len(params) > 3 else (1,) * dims
    if any(k < 1 for k in kernel) or any(s < 1 for s in stride) or any(d < 1 for d in dilation):
        raise ValueError(f"op {op.name!r}: kernel, stride and dilation must be >= 1")
    if any(p < 0 for p in padding):
        raise ValueError(f"op {op.name!r}: padding must be >= 0")
    # a pool window must never lie entirely in the padding (PyTorch's rule too)
    if not isinstance(op, Layer) and any(
        2 * p > d * (k - 1) + 1 for p, k, d in zip(padding, kernel, dilation)
    ):
        raise ValueError(f"op {op.name!r}: pool padding must lie in [0, window / 2]")


def _window_shape(
    op: Op, shape: tuple[int, ...], kernel: tuple[int, ...], params: tuple[tuple[int, ...], ...]
) -> tuple[int, ...]:
    stride, padding = params[0], params[1]
    dilation = params[2] if len(params) > 2 else (1,) * len(kernel)
    if len(shape) != len(kernel) + 1:
        raise ValueError(f"op {op.name!r}: input rank {len(shape)} does not fit {len(kernel)}-d")
    out = [
        window_output(size, k, s, p, d)
        for size, k, s, p, d in zip(shape[1:], kernel, stride, padding, dilation)
    ]
    return tuple(out)


def _layer_shape(op: Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    if op.kind == "linear":
        if op.dims != 0 or len(shape) != 1 or shape[0] != op.weight_codes.shape[1]:
            raise ValueError(
                f"layer {op.name!r}: a linear layer needs (features,) = "
                f"({op.weight_codes.shape[1]},) inputs, got {shape}"
            )
        return (op.out_channels,)
    dims = op.dims
    if dims not in (1, 2):
        raise ValueError(f"layer {op.name!r}: a conv must be 1-d or 2-d")
    _check_window_args(op, op.kernel_size, op.stride, op.padding, op.dilation, dims=dims)
    groups = op.groups
    if groups < 1 or op.out_channels % groups or shape[0] != op.weight_codes.shape[1] * groups:
        raise ValueError(
            f"layer {op.name!r}: weight {tuple(op.weight_codes.shape)} with groups={groups} "
            f"does not fit {shape[0]} input channels"
        )
    if op.kind == "depthwise" and not (groups == shape[0] == op.out_channels):
        raise ValueError(f"layer {op.name!r}: a depthwise conv needs groups = C_in = C_out")
    spatial = _window_shape(op, shape, op.kernel_size, (op.stride, op.padding, op.dilation))
    return (op.out_channels, *spatial)


def infer_shape(op: Op, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Per-sample output shape of ``op`` for per-sample input shapes ``shapes``.

    Raises:
        ValueError: If the inputs do not fit the op.
    """
    arity = {InputQuant: 1, Layer: 1, Add: 2, Relu: 1, MaxPool: 1, AvgPool: 1, Flatten: 1}
    expected = arity.get(type(op))
    if (expected is not None and len(shapes) != expected) or not shapes:
        raise ValueError(f"op {op.name!r} takes {expected or 'some'} input(s), got {len(shapes)}")
    first = shapes[0]
    if not first:
        raise ValueError(f"op {op.name!r}: inputs need at least a channel dimension")
    if isinstance(op, Layer):
        return _layer_shape(op, first)
    if isinstance(op, (MaxPool, AvgPool)):
        dims = len(op.kernel)
        if dims not in (1, 2):
            raise ValueError(f"op {op.name!r}: pools must be 1-d or 2-d")
        params = (op.stride, op.padding, op.dilation if isinstance(op, MaxPool) else (1,) * dims)
        _check_window_args(op, op.kernel, *params, dims=dims)
        return (first[0], *_window_shape(op, first, op.kernel, params))
    if isinstance(op, Flatten):
        return (math.prod(first),)
    if isinstance(op, Add) and shapes[1] != first:
        raise ValueError(f"add {op.name!r} sums shapes {first} and {shapes[1]}")
    if isinstance(op, Concat):
        if any(len(s) != len(first) or s[1:] != first[1:] for s in shapes):
            raise ValueError(f"concat {op.name!r} joins mismatched shapes {shapes}")
        return (sum(s[0] for s in shapes), *first[1:])
    if isinstance(op, (InputQuant, Add, Relu)):
        return first
    raise ValueError(f"unknown op type {type(op).__name__}")


# ------------------------------------------------------------------------------ validation
def _check_tensor(info: TensorInfo) -> None:
    where = f"tensor {info.name!r}"
    if not info.name or not info.shape or any(d < 1 for d in info.shape):
        raise ValueError(f"{where}: needs a name and a shape of positive dims, got {info.shape}")
    if info.scale is None:
        if info.bits is not None:
            raise ValueError(f"{where}: a float tensor has no bits")
        return
    if not (math.isfinite(info.scale) and info.scale > 0):
        raise ValueError(f"{where}: scale must be finite and > 0, got {info.scale!r}")
    if float(torch.tensor(info.scale, dtype=torch.float32)) != info.scale:
        raise ValueError(f"{where}: scale {info.scale!r} is not a float32 value")
    if info.bits is None:
        raise ValueError(f"{where}: a quantized tensor needs bits")
    check_act_bits(info.bits)


def _check_vector(op: Op, name: str, value: Tensor | None, dtype: torch.dtype, n: int) -> Tensor:
    if value is None or value.dtype != dtype or tuple(value.shape) != (n,):
        got = None if value is None else (value.dtype, tuple(value.shape))
        raise ValueError(f"layer {op.name!r}: {name} must be {dtype} ({n},), got {got}")
    return value


def _check_layer(op: Layer, source: TensorInfo, target: TensorInfo) -> None:
    where = f"layer {op.name!r}"
    if op.kind not in LAYER_KINDS:
        raise ValueError(f"{where}: kind must be one of {LAYER_KINDS}, got {op.kind!r}")
    codes = op.weight_codes
    if codes.dtype != torch.int32 or codes.dim() < 2:
        raise ValueError(f"{where}: weight_codes must be int32 with at least 2 dims")
    n = op.out_channels
    bits = _check_vector(op, "weight_bits", op.weight_bits, torch.int64, n)
    _check_vector(op, "weight_scale", op.weight_scale, torch.float32, n)
    _check_vector(op, "bias_codes", op.bias_codes, torch.int32, n)
    for value in torch.unique(bits).tolist():
        if value not in WEIGHT_BITS:
            raise ValueError(f"{where}: weight bits must be in {WEIGHT_BITS}, got {value}")
    levels = torch.tensor([weight_levels(int(b)) for b in bits.tolist()], dtype=torch.int32)
    magnitude = codes.abs().reshape(n, -1).amax(dim=1) if codes.numel() else levels * 0
    if bool((magnitude > levels).any()):
        raise ValueError(f"{where}: weight codes exceed the narrow range of their bits")
    if source.is_float:
        raise ValueError(f"{where}: its input {source.name!r} is not quantized")
    if op.float_output != target.is_float:
        raise ValueError(f"{where}: dequant_scale must be given iff the output is float")
    if op.float_output:
        _check_vector(op, "dequant_scale", op.dequant_scale, torch.float32, n)
        if op.multiplier is not None or op.shift is not None:
            raise ValueError(f"{where}: a float output has no multiplier or shift")
        return
    multiplier = _check_vector(op, "multiplier", op.multiplier, torch.int64, n)
    shift = _check_vector(op, "shift", op.shift, torch.int64, n)
    if n and not (int(multiplier.min()) >= 0 and int(multiplier.max()) < 2**31):
        raise ValueError(f"{where}: multipliers must lie in [0, 2^31)")
    if n and not (int(shift.min()) >= 0 and int(shift.max()) <= 62):
        raise ValueError(f"{where}: shifts must lie in [0, 62]")


def _check_quantization(op: Op, sources: list[TensorInfo], target: TensorInfo) -> None:
    if isinstance(op, InputQuant):
        if not sources[0].is_float or target.is_float:
            raise ValueError(f"input quantizer {op.name!r} maps a float input to codes")
        return
    if isinstance(op, Layer):
        _check_layer(op, sources[0], target)
        return
    if isinstance(op, Flatten) and sources[0].is_float and target.is_float:
        return  # flattening float logits
    grid = target.quantization()
    if target.is_float or any(s.quantization() != grid for s in sources):
        raise ValueError(
            f"op {op.name!r}: inputs and output must share one quantization grid, got "
            f"{[s.quantization() for s in sources]} -> {grid}"
        )


def _validate(graph: IntegerGraph) -> None:
    for key, info in graph.tensors.items():
        if key != info.name:
            raise ValueError(f"tensor registered as {key!r} is named {info.name!r}")
        _check_tensor(info)
    defined: set[str] = set()
    for name in graph.inputs:
        given = graph.tensors.get(name)
        if given is None or not given.is_float or name in defined:
            raise ValueError(f"input {name!r} must be a distinct float tensor of the graph")
        defined.add(name)
    names: set[str] = set()
    for op in graph.ops:
        if op.name in names or not op.name:
            raise ValueError(f"op names must be unique and non-empty, got {op.name!r} twice")
        names.add(op.name)
        missing = [i for i in op.inputs if i not in defined]
        if missing or op.output in defined or op.output not in graph.tensors:
            raise ValueError(
                f"op {op.name!r}: inputs {missing} are not yet computed or its output "
                f"{op.output!r} is computed twice or unknown"
            )
        sources = [graph.tensors[i] for i in op.inputs]
        target = graph.tensors[op.output]
        shape = infer_shape(op, [s.shape for s in sources])
        if shape != target.shape:
            raise ValueError(
                f"op {op.name!r} computes shape {shape}, its output says {target.shape}"
            )
        _check_quantization(op, sources, target)
        defined.add(op.output)
    unused = set(graph.tensors) - defined
    if unused:
        raise ValueError(f"tensors {sorted(unused)} are never computed")
    if not graph.outputs or any(o not in defined for o in graph.outputs):
        raise ValueError(f"outputs {graph.outputs} must name computed tensors")


# ------------------------------------------------------------------------------ extraction
def _tuple(value: Any, dims: int) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value),) * dims


def _conv_params(layer: FrozenLayer) -> tuple[tuple[int, ...], ...]:
    dims = layer.dims
    if dims == 0:
        return (), (), ()
    args = layer.conv_args
    stride = _tuple(args["stride"], dims)
    dilation = _tuple(args["dilation"], dims)
    padding_arg = args["padding"]
    if padding_arg == "valid":
        padding = (0,) * dims
    elif padding_arg == "same":
        kernel = tuple(layer.weight.shape[2:])
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        if any(t % 2 for t in totals):
            raise ValueError(
                f"a conv with padding='same' and kernel {kernel} pads asymmetrically, which "
                "the integer export does not support; use explicit symmetric padding"
            )
        padding = tuple(t // 2 for t in totals)
    else:
        padding = _tuple(padding_arg, dims)
    return stride, padding, dilation


def _pool_params(node: fx.Node, module: nn.Module | None, dims: int) -> tuple[Any, ...]:
    if module is not None:
        m: Any = module
        kernel, stride, padding = m.kernel_size, m.stride, m.padding
        dilation, ceil, indices = m.dilation, m.ceil_mode, m.return_indices
    else:
        args = list(node.args) + [None] * 6
        kwargs = node.kwargs
        kernel = kwargs.get("kernel_size", args[1])
        stride = kwargs.get("stride", args[2]) or kernel
        padding = kwargs.get("padding", args[3] if args[3] is not None else 0)
        dilation = kwargs.get("dilation", args[4] if args[4] is not None else 1)
        ceil = bool(kwargs.get("ceil_mode", args[5] or False))
        indices = bool(kwargs.get("return_indices", args[6] or False))
    if ceil or indices:
        raise ValueError(
            f"max pool {node.name!r} uses ceil_mode or return_indices, which the integer "
            "export does not support"
        )
    return _tuple(kernel, dims), _tuple(stride, dims), _tuple(padding, dims), _tuple(dilation, dims)


class _Builder:
    """Walks a frozen model's fx graph and emits IR ops (one method per node kind)."""

    def __init__(self, model: FrozenModel) -> None:
        self.model = model
        self.gm = model.graph_module
        self.modules = dict(self.gm.named_modules())
        self.tensors: dict[str, TensorInfo] = {}
        self.ops: list[Op] = []
        self.inputs: list[str] = []
        self.outputs: tuple[str, ...] = ()
        self.edge: dict[str, str | None] = {}  # fx node name -> edge name (None: not a tensor)

    # -- helpers
    def source(self, node: fx.Node, arg: Any) -> TensorInfo:
        if not isinstance(arg, fx.Node) or self.edge.get(arg.name) is None:
            raise ValueError(f"node {node.name!r} takes {arg!r}, which is not a tensor")
        return self.tensors[self.edge[arg.name]]  # type: ignore[index]

    def fresh(self, base: str) -> str:
        name, i = base, 1
        taken = set(self.tensors) | {n.name for n in self.gm.graph.nodes}
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        return name

    def emit(self, op: Op, node: fx.Node, info: TensorInfo) -> None:
        self.tensors[info.name] = info
        self.ops.append(op)
        self.edge[node.name] = info.name

    def grid(self, q: FrozenActQuantizer) -> tuple[float, int, bool]:
        return float(q.scale().detach()), q.bits, q.signed

    def output_quantizer(self, node: fx.Node) -> FrozenActQuantizer:
        for user in node.users:
            module = self.modules.get(str(user.target)) if user.op == "call_module" else None
            if isinstance(module, FrozenActQuantizer):
                return module
        raise ValueError(f"node {node.name!r} has no activation quantizer after it")

    def same_grid(
        self,
        node: fx.Node,
        op: Op,
        sources: list[TensorInfo],
        shape: tuple[int, ...],
        name: str | None = None,
    ) -> None:
        first = sources[0]
        info = TensorInfo(name or node.name, shape, first.scale, first.bits, first.signed)
        self.emit(op, node, info)

    # -- node kinds
    def visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            shape = tuple(int(d) for d in node.meta["tensor_meta"].shape[1:])
            self.tensors[node.name] = TensorInfo(node.name, shape)
            self.inputs.append(node.name)
            self.edge[node.name] = node.name
            return
        if node.op == "output":
            self.visit_output(node)
            return
        module = self.modules.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, FrozenActQuantizer):
            self.visit_quantizer(node, module)
        elif isinstance(module, FrozenLayer):
            self.visit_layer(node, module)
        elif isinstance(module, QuantAvgPool):
            self.visit_avgpool(node, module)
        else:
            self.visit_plain(node, module)

    def visit_output(self, node: fx.Node) -> None:
        result = node.args[0]
        items = list(result) if isinstance(result, (tuple, list)) else [result]
        self.outputs = tuple(self.source(node, item).name for item in items)

    def visit_quantizer(self, node: fx.Node, quantizer: FrozenActQuantizer) -> None:
        source = self.source(node, node.args[0])
        scale, bits, signed = self.grid(quantizer)
        if source.is_float:
            name = self.fresh(f"{source.name}_quant")
            info = TensorInfo(name, source.shape, scale, bits, signed)
            self.emit(InputQuant(name, (source.name,), name), node, info)
        elif source.quantization() == (scale, bits, signed):
            self.edge[node.name] = source.name  # already on this grid and clamped
        else:
            raise ValueError(
                f"quantizer {node.target!r} moves {source.name!r} to another grid; the integer "
                "export requantizes only in layers"
            )

    def visit_layer(self, node: fx.Node, layer: FrozenLayer) -> None:
        source = self.source(node, node.args[0])
        p = layer.integer_layer()
        if source.scale != float(p.input_scale):
            raise ValueError(f"layer {node.target!r} reads a tensor on another grid")
        stride, padding, dilation = _conv_params(layer)
        float_output = p.output_scale is None
        info = self.model.analysis.layers[node.name]
        op = Layer(
            name=str(node.target),
            inputs=(source.name,),
            output=node.name,
            kind=info.kind,
            weight_codes=p.weight_codes.to(torch.int32).clone(),
            weight_bits=layer.bits.to(torch.int64).clone(),
            weight_scale=p.weight_scale.to(torch.float32).clone(),
            bias_codes=p.bias_codes.to(torch.int32).clone(),
            multiplier=None if p.multiplier is None else p.multiplier.to(torch.int64).clone(),
            shift=None if p.shift is None else p.shift.to(torch.int64).clone(),
            # the frozen model's own expression: one float32 multiply
            dequant_scale=(p.input_scale * p.weight_scale).float() if float_output else None,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=int(layer.conv_args.get("groups", 1)),  # type: ignore[call-overload]
        )
        shape = infer_shape(op, [source.shape])
        if float_output:
            out = TensorInfo(node.name, shape)
        else:
            out_q = layer.output_quantizer
            assert out_q is not None  # output_scale is set
            out = TensorInfo(node.name, shape, *self.grid(out_q))
        self.emit(op, node, out)

    def visit_avgpool(self, node: fx.Node, pool: QuantAvgPool) -> None:
        source = self.source(node, node.args[0])
        if source.quantization() != self.grid(pool.quantizer):  # type: ignore[arg-type]
            raise ValueError(f"average pool {node.target!r} changes the quantization grid")
        dims = len(pool.kernel)
        name = self.pool_name(node)
        op = AvgPool(
            name,
            (source.name,),
            name,
            _tuple(pool.kernel, dims),
            _tuple(pool.stride, dims),
            _tuple(pool.padding, dims),
        )
        self.same_grid(node, op, [source], infer_shape(op, [source.shape]), name)

    def pool_name(self, node: fx.Node) -> str:
        """Name of the user's average pool that ``zb_pools.<i>`` replaced (the i-th pool)."""
        user_pool = replaced_pool(self.model.analysis, node)
        return node.name if user_pool is None else self.fresh(user_pool)

    def visit_plain(self, node: fx.Node, module: nn.Module | None) -> None:
        kind = self.model.analysis.kinds.get(node.name) or classify(node, self.modules)
        name = node.name  # unique, even when one module (a ReLU) is called twice
        if kind is Kind.META:
            self.edge[node.name] = None
            return
        if kind is Kind.IDENTITY:
            self.edge[node.name] = self.source(node, node.args[0]).name
            return
        sources = [self.source(node, a) for a in plain_inputs(node, kind)]
        inputs = tuple(s.name for s in sources)
        op: Op
        if kind is Kind.ADD:
            op = Add(name, inputs, node.name)
            scale, bits, signed = self.grid(self.output_quantizer(node))
            shape = infer_shape(op, [s.shape for s in sources])
            self.emit(op, node, TensorInfo(node.name, shape, scale, bits, signed))
            return
        if kind is Kind.CAT:
            op = Concat(name, inputs, node.name)
        elif kind is Kind.RELU:
            op = Relu(name, inputs, node.name)
        elif kind is Kind.FLATTEN or (kind is Kind.OPAQUE and self.flattens(node, sources[0])):
            op = Flatten(name, inputs, node.name)
        elif kind is Kind.MAXPOOL:
            dims = len(sources[0].shape) - 1
            op = MaxPool(name, inputs, node.name, *_pool_params(node, module, dims))
        else:
            what = f"module {node.target!r}" if module is not None else f"node {node.name!r}"
            raise ValueError(f"{what} ({kind}) cannot be exported to integer ops")
        self.same_grid(node, op, sources, infer_shape(op, [s.shape for s in sources]))

    def flattens(self, node: fx.Node, source: TensorInfo) -> bool:
        """Whether a view/reshape only flattens each sample (as ``x.view(x.size(0), -1)``)."""
        meta = node.meta.get("tensor_meta")
        return meta is not None and tuple(meta.shape[1:]) == (math.prod(source.shape),)


def to_ir(model: FrozenModel) -> IntegerGraph:
    """Extract the integer graph of a frozen model.

    The graph computes exactly what ``model.eval()`` computes (see
    :mod:`zerobit.export.reference`); 0-bit channels are still present (see
    :func:`zerobit.export.prune`).

    Args:
        model: A frozen model (its mode does not matter; the integer parameters are read).

    Returns:
        The validated integer graph.

    Raises:
        ValueError: If layers or ops were left in float (``allow_float=True``), naming them, or
            an op has no integer equivalent.
    """
    if model.analysis.float_nodes:
        raise ValueError(
            f"ops {model.analysis.float_nodes} were kept in float (allow_float=True); a model "
            "with float ops cannot be exported to integer formats"
        )
    builder = _Builder(model)
    with torch.no_grad():
        for node in model.graph_module.graph.nodes:
            builder.visit(node)
    graph = IntegerGraph(builder.tensors, builder.ops, tuple(builder.inputs), builder.outputs)
    graph.validate()
    return graph

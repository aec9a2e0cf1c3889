# SPDX-License-Identifier: Apache-2.0
# ONNX export: the (pruned) integer graph as an ONNX model that onnxruntime runs bit-exactly.
"""ONNX export of an :class:`~zerobit.export.IntegerGraph`, built with ``onnx.helper``.

The model is written op by op from the integer IR (never by tracing torch) and computes the
integer reference's arithmetic exactly:

* Containers. Every quantized edge holds its integer codes in **float64** (``double``) tensors,
  shape ``(N, *shape)`` with a dynamic batch ``N``. Requantization runs in **int64**.
* Convolutions and linear layers are a zero ``Pad``, a ``Gather`` of the windows with a
  precomputed int64 index table (im2col, one implementation for 1-d and 2-d, any stride,
  dilation and groups) and a float64 ``MatMul``. Every product and partial sum is an integer of
  magnitude below ``2^8 * 2^7 * fan_in + 2^31 < 2^53``, so float64 holds it exactly and no
  summation order can round. onnxruntime's CPU ``Conv`` exists only in float32 (exact only below
  ``2^24``, which the accumulators may exceed), and its ``ConvInteger``/``MatMulInteger`` u8s8
  kernels may saturate 16-bit intermediates on AVX2 machines, so neither is used.
* Biases are int32 codes added to the float64 accumulator (exact), then the sum is cast to
  int64 and requantized per channel as :func:`zerobit.quant.requantize`:
  ``v = acc * M + 2^(n-1)`` (int64 ``Mul``/``Add``, no overflow since ``|acc * M| < 2^62``), then
  ``floor(v / 2^n) = (v - Mod(v, 2^n)) / 2^n``: integer ``Mod`` (``fmod=0``) takes the sign of
  the divisor, so the subtraction makes ``v`` an exact multiple of ``2^n`` and the truncating
  integer ``Div`` is exact for negative ``v`` too. A ``Clip`` in int64 follows.
* Average pools gather their windows (zero padding, counted in the divisor), ``ReduceSum`` them
  and divide with the same requantization and ``quantize_multiplier(1 / count)`` as
  :func:`zerobit.quant.integer_avg_pool_divide`. Max pools are ``MaxPool`` on float64 codes (its
  padding never wins). ReLU, add-with-``Clip``, ``Concat`` and ``Flatten`` act on codes.
* Floats only at the boundaries, as the frozen model: the input is ``Clip(Round(x / scale))``
  (one float32 ``Div``; ONNX ``Round`` rounds half to even), logits are
  ``float32(acc) * dequant_scale`` and quantized outputs ``float32(code) * scale``.

The file is for checking and interoperability, not the size-faithful artifact: weights are
stored as float64 initializers, not at their bit-widths (see :mod:`zerobit.export.packed`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

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
from zerobit.export.prune import prune
from zerobit.quant import quantize_multiplier
from zerobit.search.frozen import FrozenModel

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "build_onnx", "export_onnx", "load_onnx"]

DEFAULT_OPSET = 17
"""Default ONNX opset of :func:`export_onnx`."""
MIN_OPSET = 13
"""Oldest opset supported (``ReduceSum`` with axes as an input)."""


def window_indices(
    shape: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Flat im2col index table of a sliding window over a padded input.

    Args:
        shape: Unpadded spatial shape (1 or 2 dims).
        kernel: Window per spatial dim.
        stride: Stride per spatial dim.
        padding: Symmetric padding per spatial dim.
        dilation: Dilation per spatial dim.

    Returns:
        ``(indices, out)``: int64 ``(prod(out), prod(kernel))`` indices into the row-major
        flattened padded input (positions row-major, kernel offsets row-major), and the output
        spatial shape.
    """
    padded = [s + 2 * p for s, p in zip(shape, padding)]
    out = tuple(
        (size - d * (k - 1) - 1) // st + 1
        for size, k, st, d in zip(padded, kernel, stride, dilation)
    )
    strides = [math.prod(padded[i + 1 :]) for i in range(len(padded))]
    starts = [
        sum(pos * st * w for pos, st, w in zip(position, stride, strides))
        for position in itertools.product(*(range(o) for o in out))
    ]
    offsets = [
        sum(off * d * w for off, d, w in zip(offset, dilation, strides))
        for offset in itertools.product(*(range(k) for k in kernel))
    ]
    indices = np.asarray(starts, dtype=np.int64)[:, None] + np.asarray(offsets, dtype=np.int64)
    return indices, out


class _Writer:
    """Emits the ONNX nodes and initializers of one graph (one method per op type)."""

    def __init__(self, graph: IntegerGraph) -> None:
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: set[str] = set(graph.tensors)

    # -- helpers
    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op_type: str, inputs: list[str], base: str, **attributes: Any) -> str:
        output = self.fresh(base)
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attributes))
        return output

    def channel_const(self, base: str, values: np.ndarray, dims: int) -> str:
        """Per-channel constant broadcast over ``(N, C, *spatial)``."""
        return self.const(base, values.reshape((-1,) + (1,) * dims))

    def requantize(self, op: Op, acc: str, multiplier: np.ndarray, shift: np.ndarray) -> str:
        """int64 ``floor((acc * M + 2^(n-1)) / 2^n)``, broadcast like the constants."""
        shift = shift.astype(np.int64)
        half = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 0).astype(np.int64)
        divisor = np.left_shift(np.int64(1), shift).astype(np.int64)
        name = op.output
        multiplier_name = self.const(f"{name}/M", multiplier.astype(np.int64))
        value = self.node("Mul", [acc, multiplier_name], f"{name}/scaled")
        value = self.node("Add", [value, self.const(f"{name}/half", half)], f"{name}/rounded")
        divisor_name = self.const(f"{name}/divisor", divisor)
        remainder = self.node("Mod", [value, divisor_name], f"{name}/remainder", fmod=0)
        value = self.node("Sub", [value, remainder], f"{name}/multiple")
        return self.node("Div", [value, divisor_name], f"{name}/quotient")

    def clip(self, base: str, value: str, info: TensorInfo, dtype: type) -> str:
        lo, hi = info.range
        low = self.const(f"{base}/lo", np.array(lo, dtype=dtype))
        high = self.const(f"{base}/hi", np.array(hi, dtype=dtype))
        return self.node("Clip", [value, low, high], base)

    def windows(self, op: Op, x: str, kernel: tuple[int, ...], params: tuple) -> tuple[str, tuple]:
        """Gather ``(N, C, *spatial)`` codes into ``(N, C, P, K)`` windows (zero padding)."""
        stride, padding, dilation = params
        source = self.graph.tensors[op.inputs[0]]
        channels, spatial = source.shape[0], source.shape[1:]
        if any(padding):
            pads = [0, 0, *padding, 0, 0, *padding]
            x = self.node(
                "Pad", [x, self.const(f"{op.output}/pads", np.array(pads))], f"{op.output}/pad"
            )
        indices, out = window_indices(spatial, kernel, stride, padding, dilation)
        padded = math.prod(s + 2 * p for s, p in zip(spatial, padding))
        flat_shape = self.const(f"{op.output}/flat", np.array([0, channels, padded]))
        x = self.node("Reshape", [x, flat_shape], f"{op.output}/flat")
        indices_name = self.const(f"{op.output}/im2col", indices)
        return self.node("Gather", [x, indices_name], f"{op.output}/windows", axis=2), out

    # -- op kinds
    def input_quant(self, op: InputQuant) -> None:
        info = self.graph.tensors[op.output]
        scale = self.const(f"{op.output}/scale", np.array(info.scale, dtype=np.float32))
        value = self.node("Div", [op.inputs[0], scale], f"{op.output}/divided")
        value = self.node("Round", [value], f"{op.output}/round")
        value = self.clip(f"{op.output}/clip", value, info, np.float32)
        self.cast(value, op.output, TensorProto.DOUBLE)

    def cast(self, value: str, output: str, to: int) -> None:
        self.nodes.append(helper.make_node("Cast", [value], [output], name=output, to=to))

    def layer(self, op: Layer) -> None:
        weight = op.weight_codes.numpy().astype(np.float64)
        x = op.inputs[0]
        if op.kind == "linear":
            acc = self.node(
                "MatMul", [x, self.const(f"{op.output}/weight", weight.T)], f"{op.output}/mm"
            )
        else:
            acc = self.conv(op, x, weight)
        bias = self.channel_const(
            f"{op.output}/bias", op.bias_codes.numpy().astype(np.float64), op.dims
        )
        acc = self.node("Add", [acc, bias], f"{op.output}/acc")
        if op.dequant_scale is not None:
            logits = self.node("Cast", [acc], f"{op.output}/acc_f32", to=TensorProto.FLOAT)
            scale = self.channel_const(f"{op.output}/dequant", op.dequant_scale.numpy(), op.dims)
            self.nodes.append(helper.make_node("Mul", [logits, scale], [op.output], name=op.output))
            return
        assert op.multiplier is not None and op.shift is not None  # validated
        acc = self.node("Cast", [acc], f"{op.output}/acc_i64", to=TensorProto.INT64)
        shape = (-1,) + (1,) * op.dims
        value = self.requantize(
            op, acc, op.multiplier.numpy().reshape(shape), op.shift.numpy().reshape(shape)
        )
        value = self.clip(f"{op.output}/clip", value, self.graph.tensors[op.output], np.int64)
        self.cast(value, op.output, TensorProto.DOUBLE)

    def conv(self, op: Layer, x: str, weight: np.ndarray) -> str:
        """Convolve by im2col and a batched float64 MatMul; returns (N, C_out, *out)."""
        groups, out_channels = op.groups, op.out_channels
        per_group = weight.shape[1]
        volume = math.prod(op.kernel_size)
        view, out = self.windows(op, x, op.kernel_size, (op.stride, op.padding, op.dilation))
        positions = math.prod(out)
        # (N, C_in, P, K) -> (N, groups, P, C_in / groups * K)
        view = self.node(
            "Reshape",
            [
                view,
                self.const(
                    f"{op.output}/grouped", np.array([0, groups, per_group, positions, volume])
                ),
            ],
            f"{op.output}/grouped",
        )
        view = self.node("Transpose", [view], f"{op.output}/columns", perm=[0, 1, 3, 2, 4])
        view = self.node(
            "Reshape",
            [
                view,
                self.const(
                    f"{op.output}/rows", np.array([0, groups, positions, per_group * volume])
                ),
            ],
            f"{op.output}/rows",
        )
        # weight (C_out, C_in / groups, *k) -> (groups, C_in / groups * K, C_out / groups)
        matrix = weight.reshape(groups, out_channels // groups, per_group * volume)
        weight_name = self.const(f"{op.output}/weight", matrix.transpose(0, 2, 1))
        acc = self.node("MatMul", [view, weight_name], f"{op.output}/mm")
        acc = self.node("Transpose", [acc], f"{op.output}/mm_t", perm=[0, 1, 3, 2])
        shape = self.const(f"{op.output}/out", np.array([0, out_channels, *out]))
        return self.node("Reshape", [acc, shape], f"{op.output}/conv")

    def add(self, op: Add) -> None:
        value = self.node("Add", list(op.inputs), f"{op.output}/sum")
        lo, hi = self.graph.tensors[op.output].range
        low = self.const(f"{op.output}/lo", np.array(lo, dtype=np.float64))
        high = self.const(f"{op.output}/hi", np.array(hi, dtype=np.float64))
        self.nodes.append(helper.make_node("Clip", [value, low, high], [op.output], name=op.output))

    def max_pool(self, op: MaxPool) -> None:
        self.nodes.append(
            helper.make_node(
                "MaxPool",
                list(op.inputs),
                [op.output],
                name=op.output,
                kernel_shape=list(op.kernel),
                strides=list(op.stride),
                pads=[*op.padding, *op.padding],
                dilations=list(op.dilation),
            )
        )

    def avg_pool(self, op: AvgPool) -> None:
        ones = (1,) * len(op.kernel)
        view, out = self.windows(op, op.inputs[0], op.kernel, (op.stride, op.padding, ones))
        axes = self.const(f"{op.output}/axes", np.array([-1]))
        total = self.node("ReduceSum", [view, axes], f"{op.output}/total", keepdims=0)
        total = self.node("Cast", [total], f"{op.output}/total_i64", to=TensorProto.INT64)
        multiplier, shift = quantize_multiplier(1.0 / op.count)
        value = self.requantize(op, total, np.array(multiplier), np.array(shift))
        channels = self.graph.tensors[op.output].shape[0]
        shape = self.const(f"{op.output}/shape", np.array([0, channels, *out]))
        value = self.node("Reshape", [value, shape], f"{op.output}/pooled")
        self.cast(value, op.output, TensorProto.DOUBLE)

    def same_name(self, op: Op, op_type: str, **attributes: Any) -> None:
        """Emit the ONNX op of the same meaning on codes (ReLU, Flatten, Concat)."""
        self.nodes.append(
            helper.make_node(op_type, list(op.inputs), [op.output], name=op.output, **attributes)
        )

    def write(self, op: Op) -> None:
        """Emit the nodes of one IR op (dispatch on its exact type)."""
        writers: dict[type[Op], Callable[[Any], None]] = {
            InputQuant: self.input_quant,
            Layer: self.layer,
            Add: self.add,
            MaxPool: self.max_pool,
            AvgPool: self.avg_pool,
            Relu: lambda op: self.same_name(op, "Relu"),
            Flatten: lambda op: self.same_name(op, "Flatten", axis=1),
            Concat: lambda op: self.same_name(op, "Concat", axis=1),
        }
        writer = writers.get(type(op))
        if writer is None:
            raise ValueError(f"op {op.name!r} of type {type(op).__name__} has no ONNX export")
        writer(op)

    def output(self, name: str) -> str:
        """Model output ``name`` as float32; quantized edges are dequantized first."""
        info = self.graph.tensors[name]
        if info.scale is None:
            return name
        codes = self.node("Cast", [name], f"{name}/f32", to=TensorProto.FLOAT)
        scale = self.const(f"{name}/scale", np.array(info.scale, dtype=np.float32))
        return self.node("Mul", [codes, scale], f"{name}/dequantized")


def _value_info(name: str, info: TensorInfo) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *info.shape])


def build_onnx(graph: IntegerGraph, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Build the ONNX model of an integer graph (not written to disk).

    Args:
        graph: The integer graph, pruned or not; it is validated.
        opset: ONNX opset of the default domain, at least :data:`MIN_OPSET`.

    Returns:
        A checked model. Inputs are named as ``graph.inputs``: float32 ``(batch, *shape)``.
        Outputs are float32 ``(batch, *shape)``: logits keep their edge names, quantized outputs
        (``code * scale``) are named ``<edge>/dequantized``.

    Raises:
        ValueError: If ``opset`` is out of range or the graph does not validate.
    """
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(
            f"opset must lie in [{MIN_OPSET}, {onnx.defs.onnx_opset_version()}], got {opset}"
        )
    graph.validate()
    writer = _Writer(graph)
    for op in graph.ops:
        writer.write(op)
    outputs = [writer.output(name) for name in graph.outputs]
    onnx_graph = helper.make_graph(
        writer.nodes,
        "zerobit",
        [_value_info(name, graph.tensors[name]) for name in graph.inputs],
        [_value_info(o, graph.tensors[name]) for o, name in zip(outputs, graph.outputs)],
        writer.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="zerobit")
    # the oldest IR version that carries the opset, so that older runtimes can read the file
    model.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(
    model: FrozenModel | IntegerGraph, path: str | Path, opset: int = DEFAULT_OPSET
) -> onnx.ModelProto:
    """Write a frozen model (physically pruned) or an integer graph as an ONNX file.

    onnxruntime's outputs equal :func:`zerobit.export.run_reference` and ``frozen.eval()`` bit
    for bit. The file is for checking and interoperability: weights are float64 codes, not the
    size-faithful packed format (:func:`zerobit.export.write_packed`).

    Args:
        model: A frozen model (exported as ``prune(to_ir(model))``) or an integer graph
            (exported as given).
        path: Destination ``.onnx`` file.
        opset: ONNX opset, see :func:`build_onnx`.

    Returns:
        The model written.

    Raises:
        ValueError: As :func:`zerobit.export.prune` and :func:`build_onnx`.

    Example:
        >>> import tempfile, torch, numpy as np, onnxruntime, zerobit as zb
        >>> from zerobit.export.onnx import export_onnx
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
        >>> frozen = zb.convert(net, torch.rand(2, 1, 8, 8)).eval().freeze().eval()
        >>> x = torch.rand(3, 1, 8, 8)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     _ = export_onnx(frozen, f"{folder}/net.onnx")
        ...     session = onnxruntime.InferenceSession(f"{folder}/net.onnx")
        ...     (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        >>> np.array_equal(logits, frozen(x).detach().numpy())
        True
    """
    graph = prune(model) if isinstance(model, FrozenModel) else model
    proto = build_onnx(graph, opset)
    onnx.save_model(proto, str(path))
    return proto


def load_onnx(path: str | Path) -> Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]:
    """Load an exported ONNX file as a callable on torch tensors (onnxruntime, CPU).

    Args:
        path: A file written by :func:`export_onnx`.

    Returns:
        ``run(*inputs)``: float (N, *shape) tensors in ``forward`` order -> float32 outputs
        (one tensor, or a tuple for several outputs).

    Raises:
        ImportError: If onnxruntime is not installed (the ``onnx`` extra).
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(inputs) != len(names):
            raise ValueError(f"the model takes {len(names)} input(s), got {len(inputs)}")
        feeds = {n: x.detach().to(torch.float32).cpu().numpy() for n, x in zip(names, inputs)}
        outputs = tuple(torch.from_numpy(o) for o in session.run(None, feeds))
        return outputs[0] if len(outputs) == 1 else outputs

    return run

# SPDX-License-Identifier: Apache-2.0
# The packed binary format: a pruned integer graph with sub-byte weights, versioned and checksummed.
"""Packed binary format of a pruned integer graph (version 1).

The file holds exactly what the integer reference computes with: the pruned
:class:`~zerobit.export.IntegerGraph`, its weights packed at their own bit-widths. Every
multi-byte field is little-endian; there is no padding or alignment anywhere (records follow each
other byte by byte), so the file size is the sum of the record sizes below
(:func:`flash_bytes`).

File::

    header      36 bytes
    inputs      u16 x input_count    tensor indices of the model inputs (forward order)
    outputs     u16 x output_count   tensor indices of the model outputs
    tensors     tensor_count tensor records (an op refers to a tensor by its index)
    ops         op_count op records, in topological order
    crc32       u32 zlib.crc32 of every byte before it (header included)

Header::

    0   4s   magic        b"ZBPK"
    4   u16  version      1
    6   u16  flags        0 (reserved)
    8   u32  file_size    total bytes, crc32 included
    12  u32  tensor_count
    16  u32  op_count
    20  u16  input_count
    22  u16  output_count
    24  u64  weight_bits  total packed weight bits (= the ``size`` cost)
    32  u32  weight_bytes total bytes of the packed weight runs (sum of ceil(run_bits / 8))

Tensor record (``8 + len(name) + 4 * rank`` bytes)::

    u8 name_length, name (UTF-8)
    u8 bits          2..8, or 0 for a float32 tensor
    u8 signed        0 / 1 (0 for float)
    f32 scale        quantization step (0 for float)
    u8 rank, u32 x rank shape   per-sample shape (C, *spatial) or (features,)

Op record (``9 + len(name) + 2 * n_inputs`` bytes, plus its body)::

    u8 op_type       1 input_quant, 2 layer, 3 add, 4 relu, 5 max_pool, 6 avg_pool, 7 flatten,
                     8 concat
    u32 record_size  bytes of the whole record, op_type included
    u8 name_length, name (UTF-8)
    u8 n_inputs, u16 x n_inputs input tensor indices
    u16 output tensor index
    body:
      max_pool  u8 dims, u16 x dims kernel, stride, padding, dilation
      avg_pool  u8 dims, u16 x dims kernel, stride, padding (divisor: prod(kernel))
      layer     see below
      others    nothing

Layer body, C output channels, ``K = in_channels_per_group * prod(kernel)`` weights per
channel::

    u8 kind                    0 conv, 1 depthwise, 2 linear
    u8 dims                    0 (linear), 1 or 2
    u8 float_output            1: logits = float32(acc) * dequant_scale
    u32 C, u32 in_channels_per_group, u32 groups
    u16 x dims kernel, stride, padding, dilation
    i32 x C  bias codes (scale input_scale * weight_scale)
    f32 x C  weight scales (dequantization only)
    float_output: f32 x C dequant scales
    otherwise:    u32 x C requantization multipliers, u8 x C shifts
    u8 run_count
    runs, by ascending bit-width b (each (layer, bit-width) run contiguous and byte-aligned):
      u8 b, u16 n, u16 x n channel indices (ascending; original channel order is kept, the
      runs partition 0..C-1)
      ceil(n * K * b / 8) bytes: the n channels' codes, channel after channel, each channel's
      (in_channels_per_group, *kernel) codes row-major, as b-bit two's complement packed
      LSB-first (code i occupies bits i*b .. i*b+b-1 of the run, bit j of a byte is
      (byte >> j) & 1); the unused high bits of the last byte are 0.

A reader rejects, with :class:`PackedFormatError`, a wrong magic or version, a file shorter or
longer than ``file_size``, a checksum mismatch, and any record that is malformed or inconsistent
(the loaded graph is validated like any other).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
from zerobit.export.prune import prune
from zerobit.search.frozen import FrozenModel

__all__ = [
    "MAGIC",
    "VERSION",
    "PackedFormatError",
    "PackedRun",
    "decode_packed",
    "encode_packed",
    "flash_bytes",
    "pack_codes",
    "packed_runs",
    "read_packed",
    "unpack_codes",
    "write_packed",
]

MAGIC = b"ZBPK"
VERSION = 1
_HEADER = struct.Struct("<4sHHIIIHHQI")
HEADER_BYTES = _HEADER.size  # 36
CRC_BYTES = 4
_OP_TYPES: dict[type[Op], int] = {
    InputQuant: 1,
    Layer: 2,
    Add: 3,
    Relu: 4,
    MaxPool: 5,
    AvgPool: 6,
    Flatten: 7,
    Concat: 8,
}
_OP_CLASSES = {code: cls for cls, code in _OP_TYPES.items()}
_KINDS = ("conv", "depthwise", "linear")
_U16 = 0xFFFF


class PackedFormatError(ValueError):
    """A packed file is corrupt, truncated, of another version, or not a zerobit file."""


@dataclass(frozen=True)
class PackedRun:
    """Where one (layer, bit-width) run of packed weights lies in a file.

    Attributes:
        layer: Layer (op) name.
        bits: Bit-width of the run.
        channels: Output channels of the pruned layer in the run (ascending).
        offset: Byte offset of the packed codes in the file.
        weight_bits: Number of code bits, ``len(channels) * K * bits``.
        weight_bytes: Bytes of the run, ``ceil(weight_bits / 8)``.
    """

    layer: str
    bits: int
    channels: tuple[int, ...]
    offset: int
    weight_bits: int
    weight_bytes: int


# --------------------------------------------------------------------------- bit packing
def pack_codes(codes: Tensor, bits: int) -> bytes:
    """Pack integer codes as ``bits``-bit two's complement, LSB-first.

    Args:
        codes: Integer, any shape (flattened row-major); each in ``[-2^(bits-1), 2^(bits-1))``.
        bits: 2..8.

    Returns:
        ``ceil(codes.numel() * bits / 8)`` bytes; code i occupies bits ``i*bits ..`` counted
        from bit 0 of byte 0; unused high bits of the last byte are 0.

    Raises:
        ValueError: If ``bits`` is out of range or a code does not fit.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must lie in 2..8, got {bits}")
    values = codes.detach().reshape(-1).to(torch.int64).numpy()
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if values.size and (values.min() < low or values.max() > high):
        raise ValueError(f"codes do not fit {bits}-bit two's complement")
    unsigned = values & ((1 << bits) - 1)
    planes = (unsigned[:, None] >> np.arange(bits)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def unpack_codes(data: bytes, count: int, bits: int) -> Tensor:
    """Inverse of :func:`pack_codes`.

    Args:
        data: Exactly ``ceil(count * bits / 8)`` bytes.
        count: Number of codes.
        bits: 2..8.

    Returns:
        int32 (count,).

    Raises:
        ValueError: If the length is wrong or the padding bits are not 0.
    """
    if not 2 <= bits <= 8 or len(data) != (count * bits + 7) // 8:
        raise ValueError(f"{count} codes of {bits} bits need {(count * bits + 7) // 8} bytes")
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if flat[count * bits :].any():
        raise ValueError("the padding bits after the last code are not 0")
    planes = flat[: count * bits].reshape(count, bits).astype(np.int64)
    values = (planes << np.arange(bits)).sum(axis=1)
    values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
    return torch.from_numpy(values.astype(np.int32))


# ------------------------------------------------------------------------------ writing
class _Writer:
    def __init__(self) -> None:
        self.data = bytearray()

    def put(self, fmt: str, *values: Any) -> None:
        self.data += struct.pack("<" + fmt, *values)

    def array(self, values: Tensor, dtype: str) -> None:
        self.data += np.ascontiguousarray(values.numpy().astype(dtype)).tobytes()

    def name(self, name: str) -> None:
        raw = name.encode()
        if not 1 <= len(raw) <= 255:
            raise ValueError(f"name {name!r} must be 1..255 bytes of UTF-8")
        self.put("B", len(raw))
        self.data += raw

    def u16s(self, values: list[int], what: str) -> None:
        if any(not 0 <= v <= _U16 for v in values):
            raise ValueError(f"{what} {values} do not fit u16")
        self.put(f"{len(values)}H", *values)


def _runs(op: Layer) -> list[tuple[int, list[int]]]:
    bits = op.weight_bits.tolist()
    return [(b, [c for c, x in enumerate(bits) if x == b]) for b in sorted(set(bits))]


def _write_layer(out: _Writer, op: Layer) -> tuple[int, int]:
    dims = op.dims
    out.put("BBB", _KINDS.index(op.kind), dims, int(op.float_output))
    out.put("III", op.out_channels, int(op.weight_codes.shape[1]), op.groups)
    for values in (op.kernel_size, op.stride, op.padding, op.dilation):
        out.u16s(list(values), f"layer {op.name!r} window parameters")
    out.array(op.bias_codes, "<i4")
    out.array(op.weight_scale, "<f4")
    if op.dequant_scale is not None:
        out.array(op.dequant_scale, "<f4")
    else:
        assert op.multiplier is not None and op.shift is not None  # validated
        out.array(op.multiplier, "<u4")
        out.array(op.shift, "<u1")
    runs = _runs(op)
    out.put("B", len(runs))
    total_bits = total_bytes = 0
    rows = op.weight_codes.reshape(op.out_channels, -1)
    for bits, channels in runs:
        out.put("B", bits)
        out.u16s([len(channels)], f"layer {op.name!r} channel count")
        out.u16s(channels, f"layer {op.name!r} channel indices")
        packed = pack_codes(rows[channels], bits)
        out.data += packed
        total_bits += len(channels) * op.weights_per_channel * bits
        total_bytes += len(packed)
    return total_bits, total_bytes


def _write_op(out: _Writer, op: Op, index: dict[str, int]) -> tuple[int, int]:
    start = len(out.data)
    out.put("BI", _OP_TYPES[type(op)], 0)
    out.name(op.name)
    out.put("B", len(op.inputs))
    out.u16s([index[i] for i in op.inputs] + [index[op.output]], "tensor indices")
    weights = (0, 0)
    if isinstance(op, MaxPool):
        out.put("B", len(op.kernel))
        for values in (op.kernel, op.stride, op.padding, op.dilation):
            out.u16s(list(values), f"max pool {op.name!r} parameters")
    elif isinstance(op, AvgPool):
        out.put("B", len(op.kernel))
        for values in (op.kernel, op.stride, op.padding):
            out.u16s(list(values), f"average pool {op.name!r} parameters")
    elif isinstance(op, Layer):
        weights = _write_layer(out, op)
    struct.pack_into("<I", out.data, start + 1, len(out.data) - start)
    return weights


def encode_packed(model: IntegerGraph | FrozenModel) -> bytes:
    """Serialize the pruned graph of ``model`` in the packed format (see the module docs).

    Args:
        model: A frozen model or an integer graph (pruned first if needed).

    Returns:
        The file's bytes.

    Raises:
        ValueError: If a name, count or dimension does not fit its field.
    """
    graph = prune(model)
    names = list(graph.tensors)
    index = {name: i for i, name in enumerate(names)}
    if len(names) > _U16 + 1:
        raise ValueError(f"{len(names)} tensors do not fit u16 indices")
    body = _Writer()
    body.u16s([index[n] for n in graph.inputs], "input indices")
    body.u16s([index[n] for n in graph.outputs], "output indices")
    for name in names:
        info = graph.tensors[name]
        body.name(name)
        body.put("BBf", info.bits or 0, int(info.signed and not info.is_float), info.scale or 0.0)
        body.put(f"B{len(info.shape)}I", len(info.shape), *info.shape)
    weight_bits = weight_bytes = 0
    for op in graph.ops:
        bits, count = _write_op(body, op, index)
        weight_bits, weight_bytes = weight_bits + bits, weight_bytes + count
    size = HEADER_BYTES + len(body.data) + CRC_BYTES
    header = _HEADER.pack(
        MAGIC,
        VERSION,
        0,
        size,
        len(names),
        len(graph.ops),
        len(graph.inputs),
        len(graph.outputs),
        weight_bits,
        weight_bytes,
    )
    data = header + bytes(body.data)
    return data + struct.pack("<I", zlib.crc32(data))


def write_packed(model: IntegerGraph | FrozenModel, path: str | os.PathLike[str]) -> int:
    """Write the packed file of ``model`` (see the module docs).

    Args:
        model: A frozen model or an integer graph (pruned first if needed).
        path: Destination file.

    Returns:
        The number of bytes written (equals :func:`flash_bytes`).
    """
    data = encode_packed(model)
    Path(path).write_bytes(data)
    return len(data)


# ----------------------------------------------------------------------------- flash size
def _op_bytes(op: Op) -> int:
    size = 9 + len(op.name.encode()) + 2 * len(op.inputs)
    if isinstance(op, MaxPool):
        return size + 1 + 8 * len(op.kernel)
    if isinstance(op, AvgPool):
        return size + 1 + 6 * len(op.kernel)
    if not isinstance(op, Layer):
        return size
    channels = op.out_channels
    size += 3 + 12 + 8 * op.dims + 8 * channels + (4 if op.float_output else 5) * channels + 1
    for bits, members in _runs(op):
        size += 3 + 2 * len(members) + math.ceil(len(members) * op.weights_per_channel * bits / 8)
    return size


def flash_bytes(model: IntegerGraph | FrozenModel) -> int:
    """Exact size in bytes of the packed file of ``model``, computed without serializing.

    Packed weights, int32 biases, requantization parameters, scales, shapes, names and headers:
    what a device stores to run the model.

    Args:
        model: A frozen model or an integer graph (pruned first if needed).

    Returns:
        The file size, equal to ``len(encode_packed(model))``.
    """
    graph = prune(model)
    size = HEADER_BYTES + 2 * (len(graph.inputs) + len(graph.outputs)) + CRC_BYTES
    for name, info in graph.tensors.items():
        size += 8 + len(name.encode()) + 4 * len(info.shape)
    return size + sum(_op_bytes(op) for op in graph.ops)


# ------------------------------------------------------------------------------ reading
class _Reader:
    def __init__(self, data: bytes, start: int, end: int) -> None:
        self.data, self.pos, self.end = data, start, end

    def take(self, count: int, what: str) -> bytes:
        if count < 0 or self.pos + count > self.end:
            raise PackedFormatError(
                f"{what} at byte {self.pos} needs {count} bytes, runs past byte {self.end}"
            )
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def get(self, fmt: str, what: str) -> tuple[Any, ...]:
        layout = struct.Struct("<" + fmt)
        return layout.unpack(self.take(layout.size, what))

    def one(self, fmt: str, what: str) -> Any:
        return self.get(fmt, what)[0]

    def array(self, count: int, dtype: str, what: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(count * size, what), dtype=dtype)

    def name(self, what: str) -> str:
        length = self.one("B", f"{what} name length")
        try:
            return self.take(length, f"{what} name").decode()
        except UnicodeDecodeError as error:
            raise PackedFormatError(f"{what} name at byte {self.pos} is not UTF-8") from error


def _read_tensor(reader: _Reader, number: int) -> TensorInfo:
    what = f"tensor {number}"
    name = reader.name(what)
    bits, signed, scale = reader.get("BBf", f"{what} quantization")
    rank = reader.one("B", f"{what} rank")
    if not 1 <= rank <= 8 or signed not in (0, 1):
        raise PackedFormatError(f"{what} ({name!r}): rank {rank} or signed flag {signed} invalid")
    shape = tuple(int(d) for d in reader.get(f"{rank}I", f"{what} shape"))
    if bits == 0:
        if scale != 0.0 or signed:
            raise PackedFormatError(f"{what} ({name!r}): a float tensor has scale 0, unsigned")
        return TensorInfo(name, shape)
    return TensorInfo(name, shape, float(scale), int(bits), bool(signed))


def _read_layer(
    reader: _Reader, name: str, inputs: tuple[str, ...], output: str, runs: list[PackedRun]
) -> Layer:
    where = f"layer {name!r}"
    kind, dims, float_output = reader.get("BBB", f"{where} kind")
    channels, per_group, groups = reader.get("III", f"{where} sizes")
    if kind >= len(_KINDS) or dims > 2 or float_output > 1 or (dims == 0) != (kind == 2):
        raise PackedFormatError(f"{where}: kind {kind}, dims {dims} or flags are invalid")
    kernel, stride, padding, dilation = (
        tuple(int(v) for v in reader.get(f"{dims}H", f"{where} window")) for _ in range(4)
    )
    if not channels or not per_group or not all(kernel):
        raise PackedFormatError(f"{where}: empty weight ({channels}, {per_group}, {kernel})")
    bias = reader.array(channels, "<i4", f"{where} biases")
    weight_scale = reader.array(channels, "<f4", f"{where} weight scales")
    dequant: Tensor | None = None
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    if float_output:
        dequant = torch.from_numpy(reader.array(channels, "<f4", f"{where} dequant scales").copy())
    else:
        multiplier = reader.array(channels, "<u4", f"{where} multipliers").astype(np.int64)
        shift = reader.array(channels, "<u1", f"{where} shifts").astype(np.int64)
    per_channel = per_group * math.prod(kernel)
    if channels * per_channel * 2 > 8 * (reader.end - reader.pos):  # bound before allocating
        raise PackedFormatError(f"{where}: {channels} x {per_channel} weights exceed the record")
    rows = torch.zeros(channels, per_channel, dtype=torch.int32)
    bits_of = torch.zeros(channels, dtype=torch.int64)
    previous = 1
    for _ in range(reader.one("B", f"{where} run count")):
        bits, count = reader.get("BH", f"{where} run header")
        members = [int(c) for c in reader.array(count, "<u2", f"{where} channel indices")]
        if not previous < bits <= 8 or not count or members != sorted(set(members)):
            raise PackedFormatError(f"{where}: run of {bits} bits is malformed or out of order")
        if members[-1] >= channels or bool((bits_of[members] != 0).any()):
            raise PackedFormatError(f"{where}: run channels exceed {channels} or repeat")
        previous, offset = bits, reader.pos
        size = (count * per_channel * bits + 7) // 8
        chunk = reader.take(size, f"{where} {bits}-bit run")
        try:
            codes = unpack_codes(chunk, count * per_channel, bits)
        except ValueError as error:
            raise PackedFormatError(f"{where}: {bits}-bit run: {error}") from error
        rows[members] = codes.reshape(count, per_channel)
        bits_of[members] = bits
        runs.append(PackedRun(name, bits, tuple(members), offset, count * per_channel * bits, size))
    if bool((bits_of == 0).any()):
        raise PackedFormatError(f"{where}: the runs do not cover all {channels} channels")
    return Layer(
        name=name,
        inputs=inputs,
        output=output,
        kind=_KINDS[kind],
        weight_codes=rows.reshape(channels, per_group, *kernel),
        weight_bits=bits_of,
        weight_scale=torch.from_numpy(weight_scale.astype(np.float32)),
        bias_codes=torch.from_numpy(bias.astype(np.int32)),
        multiplier=None if multiplier is None else torch.from_numpy(multiplier),
        shift=None if shift is None else torch.from_numpy(shift),
        dequant_scale=dequant,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=int(groups),
    )


def _read_op(reader: _Reader, names: list[str], runs: list[PackedRun]) -> Op:
    start = reader.pos
    code, size = reader.get("BI", "op header")
    cls = _OP_CLASSES.get(code)
    if cls is None or size < 9 or start + size > reader.end:
        raise PackedFormatError(f"op at byte {start}: type {code} or size {size} is invalid")
    record = _Reader(reader.data, reader.pos, start + size)
    name = record.name(f"op at byte {start}")
    count = record.one("B", f"op {name!r} input count")
    indices = record.get(f"{count + 1}H", f"op {name!r} tensor indices")
    if max(indices) >= len(names):
        raise PackedFormatError(f"op {name!r} refers to tensor {max(indices)} of {len(names)}")
    inputs, output = tuple(names[i] for i in indices[:-1]), names[indices[-1]]
    op: Op
    if cls is Layer:
        op = _read_layer(record, name, inputs, output, runs)
    elif cls in (MaxPool, AvgPool):
        dims = record.one("B", f"op {name!r} dims")
        params = [
            tuple(int(v) for v in record.get(f"{dims}H", f"op {name!r} window"))
            for _ in range(4 if cls is MaxPool else 3)
        ]
        op = cls(name, inputs, output, *params)
    else:
        op = cls(name, inputs, output)
    if record.pos != record.end:
        raise PackedFormatError(f"op {name!r}: record size {size} does not match its contents")
    reader.pos = record.end
    return op


def _check_header(data: bytes) -> tuple[int, ...]:
    if len(data) < 4 and MAGIC.startswith(data):
        raise PackedFormatError(f"truncated: {len(data)} bytes, no magic")
    if data[:4] != MAGIC:
        raise PackedFormatError(
            f"not a zerobit packed file: magic {bytes(data[:4])!r}, expected {MAGIC!r}"
        )
    if len(data) < 6:
        raise PackedFormatError(f"truncated: {len(data)} bytes, no version field")
    version = struct.unpack_from("<H", data, 4)[0]
    if version != VERSION:
        raise PackedFormatError(f"unsupported version {version}; this reader reads {VERSION}")
    if len(data) < HEADER_BYTES + CRC_BYTES:
        raise PackedFormatError(f"truncated: {len(data)} bytes, the header needs {HEADER_BYTES}")
    fields = _HEADER.unpack_from(data)
    size = fields[3]
    if fields[2] != 0:
        raise PackedFormatError(f"unknown flags {fields[2]:#x}")
    if len(data) < size:
        raise PackedFormatError(f"truncated: the header says {size} bytes, got {len(data)}")
    if len(data) > size:
        raise PackedFormatError(f"{len(data) - size} trailing bytes after the declared end")
    stored = struct.unpack_from("<I", data, size - CRC_BYTES)[0]
    computed = zlib.crc32(data[: size - CRC_BYTES])
    if stored != computed:
        raise PackedFormatError(
            f"checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        )
    return fields


def _decode(data: bytes, runs: list[PackedRun]) -> IntegerGraph:
    fields = _check_header(data)
    size, tensor_count, op_count, input_count, output_count, weight_bits, weight_bytes = fields[3:]
    reader = _Reader(data, HEADER_BYTES, size - CRC_BYTES)
    input_ids = reader.get(f"{input_count}H", "input indices")
    output_ids = reader.get(f"{output_count}H", "output indices")
    if tensor_count > reader.end:  # each record has at least 8 bytes: bound before looping
        raise PackedFormatError(f"tensor count {tensor_count} exceeds the file")
    names: list[str] = []
    tensors: dict[str, TensorInfo] = {}
    for number in range(tensor_count):
        info = _read_tensor(reader, number)
        if info.name in tensors:
            raise PackedFormatError(f"tensor name {info.name!r} appears twice")
        tensors[info.name] = info
        names.append(info.name)
    if max((*input_ids, *output_ids), default=0) >= max(len(names), 1):
        raise PackedFormatError("an input or output index exceeds the tensor count")
    if op_count > reader.end:
        raise PackedFormatError(f"op count {op_count} exceeds the file")
    ops = [_read_op(reader, names, runs) for _ in range(op_count)]
    if reader.pos != reader.end:
        raise PackedFormatError(f"{reader.end - reader.pos} unread bytes before the checksum")
    if weight_bits != sum(r.weight_bits for r in runs) or weight_bytes != sum(
        r.weight_bytes for r in runs
    ):
        raise PackedFormatError("the header's weight totals do not match the runs")
    graph = IntegerGraph(
        tensors, ops, tuple(names[i] for i in input_ids), tuple(names[i] for i in output_ids)
    )
    try:
        graph.validate()
    except ValueError as error:
        raise PackedFormatError(f"inconsistent graph: {error}") from error
    return graph


def decode_packed(data: bytes) -> IntegerGraph:
    """Load a pruned integer graph from the bytes of a packed file.

    Args:
        data: The file's bytes.

    Returns:
        The validated graph.

    Raises:
        PackedFormatError: For a wrong magic or version, truncated or trailing data, a checksum
            mismatch, or malformed or inconsistent records; the message says what is wrong.
    """
    return _decode(bytes(data), [])


def read_packed(path: str | os.PathLike[str]) -> IntegerGraph:
    """Load a packed file; see :func:`decode_packed`.

    Raises:
        PackedFormatError: If the file is not a valid packed file of this version.
    """
    return decode_packed(Path(path).read_bytes())


def packed_runs(data: bytes) -> list[PackedRun]:
    """List the (layer, bit-width) weight runs of a packed file, with their byte offsets.

    Raises:
        PackedFormatError: If the file is invalid.
    """
    runs: list[PackedRun] = []
    _decode(bytes(data), runs)
    return runs

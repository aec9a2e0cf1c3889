# SPDX-License-Identifier: Apache-2.0
# C code generation: a pruned integer graph as straight-line calls into the C99 runtime.
"""C export of a pruned integer graph.

:func:`export_c` writes a self-contained C99 project: ``model.h`` / ``model.c`` (the packed
weights as ``const uint8_t`` arrays, the per-channel bias / requantization / dequantization
arrays, and ``zb_model_run``, one runtime call per op), the runtime ``zerobit_rt.h`` /
``zerobit_rt.c``, a ``main.c`` that runs a file of float32 samples, and a ``Makefile``.

The generated code computes exactly what :func:`zerobit.export.run_reference` computes:
activations are codes of one byte each (``uint8_t``, a signed code as its two's complement
byte) in one caller-provided arena (offsets planned here: buffers are reused once their last
reader has run, ``Flatten`` aliases its input, ``Relu`` and ``Add`` work in place when they
can); weights stay packed at their own bit-widths (the packed format's runs) and are unpacked
one output channel at a time into a caller-provided ``int8_t`` scratch buffer; accumulation is
int32 (checked here to be exact for every channel), bias and requantization are int64.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

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
from zerobit.export.packed import pack_codes
from zerobit.export.prune import prune
from zerobit.quant import quantize_multiplier
from zerobit.search.frozen import FrozenModel

__all__ = ["RUNTIME_FILES", "CExport", "export_c"]

RUNTIME_FILES = ("zerobit_rt.h", "zerobit_rt.c")
"""Runtime sources copied next to the generated model."""

_ACC_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class CExport:
    """What :func:`export_c` wrote.

    Attributes:
        files: Every written file, ``out_dir / name``.
        arena_bytes: Bytes of the activation arena (``ZB_MODEL_ARENA_SIZE``).
        scratch_bytes: Bytes of the weight scratch buffer (``ZB_MODEL_SCRATCH_SIZE``).
        weight_bytes: Bytes of the packed weight arrays.
    """

    files: tuple[Path, ...]
    arena_bytes: int
    scratch_bytes: int
    weight_bytes: int


def _float(value: float) -> str:
    """Exact C literal of a float32 value (hexadecimal, so no decimal rounding)."""
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"cannot export the non-finite constant {value!r}")
    return f"{value.hex()}f"


def _array(ctype: str, name: str, values: list[int] | list[str], per_line: int = 12) -> str:
    items = [str(v) for v in values]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{len(items)}] = {{\n    {body}\n}};\n"


def _grid(info: TensorInfo) -> tuple[int, int, int]:
    """``(C, H, W)`` of a per-sample shape: 1-d ``(C, L)`` is ``(C, 1, L)``."""
    shape = info.shape
    if len(shape) == 1:
        return shape[0], 1, 1
    if len(shape) == 2:
        return shape[0], 1, shape[1]
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    raise ValueError(f"tensor {info.name!r}: the C runtime supports 0-, 1- and 2-d data")


def _window(values: tuple[int, ...], fill: int) -> tuple[int, int]:
    """``(h, w)`` of a window parameter: 1-d ``(w,)`` is ``(fill, w)``, linear ``()`` is fills."""
    if len(values) == 2:
        return values[0], values[1]
    if len(values) == 1:
        return fill, values[0]
    return fill, fill


def _numel(info: TensorInfo) -> int:
    count = 1
    for d in info.shape:
        count *= d
    return count


class _Planner:
    """Arena offsets of the quantized edges, bytes shared only by disjoint lifetimes.

    A lifetime runs from the op that writes a buffer to its last reader.

    A ``Flatten`` shares its input's buffer; an elementwise ``Relu`` or ``Add`` writes in place
    over an input that nothing reads afterwards.
    """

    def __init__(self, graph: IntegerGraph) -> None:
        self.graph = graph
        ops = graph.ops
        reader: dict[str, int] = {}  # edge -> index of its last reader (len(ops): an output)
        for i, op in enumerate(ops):
            for name in op.inputs:
                reader[name] = i
        for name in graph.outputs:
            reader[name] = len(ops)
        self.root: dict[str, str] = {}
        members: dict[str, list[str]] = {}
        for i, op in enumerate(ops):
            candidates = op.inputs if isinstance(op, (Flatten, Relu, Add)) else ()
            reusable = [
                name
                for name in candidates
                if name in self.root
                and (
                    isinstance(op, Flatten)
                    or all(reader.get(e, -1) <= i for e in members[self.root[name]])
                )
            ]
            root = self.root[reusable[0]] if reusable else op.output
            self.root[op.output] = root
            members.setdefault(root, []).append(op.output)
        # offline greedy by size (TFLite Micro's planner): largest buffer first, each at the
        # lowest offset clear of every placed buffer whose lifetime [written, last read] overlaps
        span: dict[str, tuple[int, int, int]] = {}  # root -> (written, last read, size)
        for i, op in enumerate(ops):
            info = graph.tensors[op.output]
            if self.root[op.output] == op.output and not info.is_float:
                last = max(reader.get(e, i) for e in members[op.output])
                span[op.output] = (i, last, _numel(info))
        self.offset: dict[str, int] = {}
        self.size = 0
        for root in sorted(span, key=lambda r: (-span[r][2], span[r][0])):
            first, last, size = span[root]
            taken = sorted(
                (self.offset[other], self.offset[other] + span[other][2])
                for other in self.offset
                if span[other][0] <= last and first <= span[other][1]
            )
            self.offset[root] = self.first_fit(taken, size)
            self.size = max(self.size, self.offset[root] + size)

    @staticmethod
    def first_fit(intervals: list[tuple[int, int]], size: int) -> int:
        """Lowest start of ``size`` free elements among sorted busy ``[low, high)`` intervals."""
        start = 0
        for low, high in intervals:
            if low - start >= size:
                return start
            start = max(start, high)
        return start

    def buffer(self, name: str) -> str:
        """C expression of an edge's codes."""
        info = self.graph.tensors[name]
        if info.is_float:
            raise ValueError(f"tensor {name!r} is float; only model inputs and logits may be")
        return f"arena + {self.offset[self.root[name]]}"


class _Generator:
    """Emits the declarations and the calls of ``model.c``, one method per op type."""

    def __init__(self, graph: IntegerGraph) -> None:
        self.graph = graph
        self.plan = _Planner(graph)
        self.declarations: list[str] = []
        self.calls: list[str] = []
        self.scratch = 1
        self.weight_bytes = 0
        self.inputs = {name: i for i, name in enumerate(graph.inputs)}
        self.outputs = {name: i for i, name in enumerate(graph.outputs)}
        self.emitters: dict[type[Op], Callable[[Any, str], None]] = {
            InputQuant: self.input_quant,
            Layer: self.layer,
            Add: self.add,
            Relu: self.relu,
            MaxPool: self.pool,
            AvgPool: self.pool,
            Flatten: self.flatten,
            Concat: self.concat,
        }

    def run(self) -> None:
        for index, op in enumerate(self.graph.ops):
            ident = f"op{index}"
            self.calls.append(f"    /* {_identifier(op.name)}: {type(op).__name__} */")
            emit = self.emitters.get(type(op))
            if emit is None:
                raise ValueError(f"op {op.name!r} ({type(op).__name__}) has no C kernel")
            emit(op, ident)
        for name, index in self.outputs.items():
            info = self.graph.tensors[name]
            if not info.is_float:
                self.calls.append(
                    f"    zb_dequantize({self.plan.buffer(name)}, outputs[{index}], "
                    f"{_numel(info)}, {_float(info.scale or 0.0)}, {int(info.signed)});"
                )

    def source(self, op: Op) -> str:
        return self.plan.buffer(op.inputs[0])

    def input_quant(self, op: Op, ident: str) -> None:
        info = self.graph.tensors[op.output]
        lo, hi = info.range
        if op.inputs[0] not in self.inputs:
            raise ValueError(f"input quantizer {op.name!r} must read a model input")
        self.calls.append(
            f"    zb_quantize_input(inputs[{self.inputs[op.inputs[0]]}], "
            f"{self.plan.buffer(op.output)}, {_numel(info)}, {_float(info.scale or 0.0)}, "
            f"{lo}, {hi});"
        )

    def layer(self, op: Layer, ident: str) -> None:
        source = self.graph.tensors[op.inputs[0]]
        target = self.graph.tensors[op.output]
        rows = op.weight_codes.reshape(op.out_channels, -1).to(torch.int64)
        _check_accumulator(op, source, rows)
        if op.out_channels > 0xFFFF:
            raise ValueError(f"layer {op.name!r}: {op.out_channels} channels overflow uint16")
        runs: list[str] = []
        bits_of = op.weight_bits.tolist()
        for bits in sorted(set(bits_of)):
            channels = [c for c, b in enumerate(bits_of) if b == bits]
            data = pack_codes(rows[channels], bits) if bits else b"\0"
            self.weight_bytes += len(data) if bits else 0
            self.declarations.append(
                _array("uint8_t", f"{ident}_w{bits}", [f"0x{b:02x}" for b in data])
            )
            self.declarations.append(_array("uint16_t", f"{ident}_c{bits}", channels))
            runs.append(f"{{{bits}, {len(channels)}, {ident}_c{bits}, {ident}_w{bits}}}")
        self.declarations.append(f"static const zb_run {ident}_runs[] = {{{', '.join(runs)}}};\n")
        self.declarations.append(_array("int32_t", f"{ident}_bias", op.bias_codes.tolist()))
        if op.dequant_scale is not None:
            if op.output not in self.outputs or any(op.output in o.inputs for o in self.graph.ops):
                raise ValueError(f"layer {op.name!r}: float logits must be a model output only")
            scales = [_float(v) for v in op.dequant_scale.tolist()]
            self.declarations.append(_array("float", f"{ident}_dequant", scales, 4))
            requant, lo, hi = f"0, 0, {ident}_dequant", 0, 0
            y, y_float = "0", f"outputs[{self.outputs[op.output]}]"
        else:
            assert op.multiplier is not None and op.shift is not None  # validated
            self.declarations.append(_array("int32_t", f"{ident}_mult", op.multiplier.tolist()))
            self.declarations.append(_array("uint8_t", f"{ident}_shift", op.shift.tolist()))
            requant, (lo, hi) = f"{ident}_mult, {ident}_shift, 0", target.range
            y, y_float = self.plan.buffer(op.output), "0"
        in_c, in_h, in_w = _grid(source)
        out_c, out_h, out_w = _grid(target)
        window = [_window(v, f) for v, f in ((op.kernel_size, 1), (op.stride, 1), (op.padding, 0))]
        window.append(_window(op.dilation, 1))
        fields = [in_c, in_h, in_w, out_c, out_h, out_w, *(v for hw in window for v in hw)]
        fields += [op.groups, int(source.signed), len(runs)]
        self.declarations.append(
            f"static const zb_layer {ident} = {{{', '.join(map(str, fields))}, {ident}_runs, "
            f"{ident}_bias, {requant}, {lo}, {hi}}};\n"
        )
        self.scratch = max(self.scratch, op.weights_per_channel)
        self.calls.append(
            f"    zb_layer_run(&{ident}, {self.source(op)}, {y}, {y_float}, scratch);"
        )

    def add(self, op: Op, ident: str) -> None:
        info = self.graph.tensors[op.output]
        lo, hi = info.range
        a, b = (self.plan.buffer(n) for n in op.inputs)
        y = self.plan.buffer(op.output)
        self.calls.append(f"    zb_add({a}, {b}, {y}, {_numel(info)}, {lo}, {hi});")

    def relu(self, op: Op, ident: str) -> None:
        info = self.graph.tensors[op.output]
        y = self.plan.buffer(op.output)
        self.calls.append(
            f"    zb_relu({self.source(op)}, {y}, {_numel(info)}, {int(info.signed)});"
        )

    def flatten(self, op: Op, ident: str) -> None:
        self.calls.append("    /* NCHW-contiguous: the flattened edge shares its input's buffer */")

    def concat(self, op: Op, ident: str) -> None:
        y, start = self.plan.buffer(op.output), 0
        for name in op.inputs:
            count = _numel(self.graph.tensors[name])
            self.calls.append(f"    zb_copy({self.plan.buffer(name)}, {y} + {start}, {count});")
            start += count

    def pool(self, op: MaxPool | AvgPool, ident: str) -> None:
        channels, in_h, in_w = _grid(self.graph.tensors[op.inputs[0]])
        _, out_h, out_w = _grid(self.graph.tensors[op.output])
        dilation = op.dilation if isinstance(op, MaxPool) else (1,) * len(op.kernel)
        window = [_window(v, f) for v, f in ((op.kernel, 1), (op.stride, 1), (op.padding, 0))]
        window.append(_window(dilation, 1))
        multiplier, shift = (0, 0) if isinstance(op, MaxPool) else quantize_multiplier(1 / op.count)
        fields = [channels, in_h, in_w, out_h, out_w, *(v for hw in window for v in hw)]
        fields += [multiplier, shift, int(self.graph.tensors[op.inputs[0]].signed)]
        self.declarations.append(
            f"static const zb_pool {ident} = {{{', '.join(map(str, fields))}}};\n"
        )
        kernel = "zb_max_pool" if isinstance(op, MaxPool) else "zb_avg_pool"
        self.calls.append(
            f"    {kernel}(&{ident}, {self.source(op)}, {self.plan.buffer(op.output)});"
        )


def _check_accumulator(op: Layer, source: TensorInfo, rows: torch.Tensor) -> None:
    """Refuse a layer whose worst-case sum could overflow the runtime's int32 accumulator."""
    lo, hi = source.range
    worst = max(abs(lo), abs(hi)) * int(rows.abs().sum(dim=1).max()) if rows.numel() else 0
    if worst > _ACC_LIMIT:
        raise ValueError(f"layer {op.name!r}: a worst-case accumulator of {worst} overflows int32")


_HEADER = """\
/* SPDX-License-Identifier: Apache-2.0
 * Generated by zerobit.export.export_c: do not edit. */
#ifndef ZB_MODEL_H
#define ZB_MODEL_H

#include <stdint.h>

#include "zerobit_rt.h"

#define ZB_MODEL_INPUT_COUNT {input_count}
#define ZB_MODEL_OUTPUT_COUNT {output_count}
/* float32 values per sample of all inputs / outputs together (in order) */
#define ZB_MODEL_INPUT_TOTAL {input_total}
#define ZB_MODEL_OUTPUT_TOTAL {output_total}
/* bytes of the activation arena and of the weight scratch */
#define ZB_MODEL_ARENA_SIZE {arena}
#define ZB_MODEL_SCRATCH_SIZE {scratch}

extern const int32_t zb_model_input_sizes[ZB_MODEL_INPUT_COUNT];
extern const int32_t zb_model_output_sizes[ZB_MODEL_OUTPUT_COUNT];

/* Run one sample. inputs[i]: float32 of zb_model_input_sizes[i] values, (C, *spatial) row-major;
 * outputs[i]: float32 of zb_model_output_sizes[i] values (logits, or code * scale);
 * arena: ZB_MODEL_ARENA_SIZE zb_act (bytes); scratch: ZB_MODEL_SCRATCH_SIZE int8_t. */
void zb_model_run(const float *const inputs[], float *const outputs[], zb_act *arena,
                  int8_t *scratch);

#endif /* ZB_MODEL_H */
"""

_MAIN = """\
/* SPDX-License-Identifier: Apache-2.0
 * Generated by zerobit.export.export_c: runs a file of samples.
 * Usage: model INPUT OUTPUT. INPUT: N samples of ZB_MODEL_INPUT_TOTAL float32 (every input of a
 * sample in order), OUTPUT: N samples of ZB_MODEL_OUTPUT_TOTAL float32; native byte order
 * (little-endian on the hosts zerobit targets). */
#include <stdio.h>

#include "model.h"

static zb_act arena[ZB_MODEL_ARENA_SIZE];
static int8_t scratch[ZB_MODEL_SCRATCH_SIZE];
static float input[ZB_MODEL_INPUT_TOTAL];
static float output[ZB_MODEL_OUTPUT_TOTAL];

int main(int argc, char **argv)
{
    const float *inputs[ZB_MODEL_INPUT_COUNT];
    float *outputs[ZB_MODEL_OUTPUT_COUNT];
    FILE *in, *out;
    size_t got;
    int i, at, status = 0;
    if (argc != 3) {
        fprintf(stderr, "usage: %s INPUT OUTPUT\\n", argv[0]);
        return 2;
    }
    for (i = 0, at = 0; i < ZB_MODEL_INPUT_COUNT; at += zb_model_input_sizes[i++]) {
        inputs[i] = input + at;
    }
    for (i = 0, at = 0; i < ZB_MODEL_OUTPUT_COUNT; at += zb_model_output_sizes[i++]) {
        outputs[i] = output + at;
    }
    in = fopen(argv[1], "rb");
    out = fopen(argv[2], "wb");
    if (in == NULL || out == NULL) {
        fprintf(stderr, "cannot open %s or %s\\n", argv[1], argv[2]);
        return 1;
    }
    while ((got = fread(input, sizeof(float), ZB_MODEL_INPUT_TOTAL, in)) == ZB_MODEL_INPUT_TOTAL) {
        zb_model_run(inputs, outputs, arena, scratch);
        if (fwrite(output, sizeof(float), ZB_MODEL_OUTPUT_TOTAL, out) != ZB_MODEL_OUTPUT_TOTAL) {
            status = 1;
            break;
        }
    }
    if (got != 0 && got != ZB_MODEL_INPUT_TOTAL) {
        fprintf(stderr, "%s ends in a partial sample\\n", argv[1]);
        status = 1;
    }
    fclose(in);
    if (fclose(out) != 0) {
        status = 1;
    }
    return status;
}
"""

_MAKEFILE = """\
# Generated by zerobit.export.export_c.
CC ?= cc
CFLAGS ?= -std=c99 -O2 -Wall -Wextra
SOURCES = main.c model.c zerobit_rt.c

model: $(SOURCES) model.h zerobit_rt.h
\t$(CC) $(CFLAGS) -o $@ $(SOURCES) -lm

clean:
\trm -f model
"""


def _model_source(graph: IntegerGraph, generator: _Generator) -> str:
    sizes_in = ", ".join(str(_numel(graph.tensors[n])) for n in graph.inputs)
    sizes_out = ", ".join(str(_numel(graph.tensors[n])) for n in graph.outputs)
    parts = [
        "/* SPDX-License-Identifier: Apache-2.0\n"
        " * Generated by zerobit.export.export_c: do not edit. */\n"
        '#include "model.h"\n',
        f"const int32_t zb_model_input_sizes[ZB_MODEL_INPUT_COUNT] = {{{sizes_in}}};\n"
        f"const int32_t zb_model_output_sizes[ZB_MODEL_OUTPUT_COUNT] = {{{sizes_out}}};\n",
        *generator.declarations,
        "void zb_model_run(const float *const inputs[], float *const outputs[], zb_act *arena,\n"
        "                  int8_t *scratch)\n{\n" + "\n".join(generator.calls) + "\n}\n",
    ]
    return "\n".join(parts)


def export_c(model: IntegerGraph | FrozenModel, out_dir: str | os.PathLike[str]) -> CExport:
    """Write the C project of ``model``'s pruned integer graph into ``out_dir``.

    Files: ``model.h``, ``model.c``, ``zerobit_rt.h``, ``zerobit_rt.c``, ``main.c`` and a
    ``Makefile`` (``make`` builds ``model``, or ``cc -std=c99 -O2 -o model main.c model.c
    zerobit_rt.c -lm``). ``./model in.bin out.bin`` maps N samples of float32 inputs to N samples
    of float32 outputs, equal bit for bit to :func:`zerobit.export.run_reference`.

    Args:
        model: A frozen model or an integer graph (pruned first if needed).
        out_dir: Destination directory, created if missing; existing files are overwritten.

    Returns:
        The written files and the buffer sizes the caller must provide.

    Raises:
        ValueError: If the graph has data of more than 2 spatial dims, float edges other than
            model inputs and output logits, or a layer whose int32 accumulator could overflow.
    """
    graph = prune(model)
    generator = _Generator(graph)
    generator.run()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = _HEADER.format(
        input_count=len(graph.inputs),
        output_count=len(graph.outputs),
        input_total=sum(_numel(graph.tensors[n]) for n in graph.inputs),
        output_total=sum(_numel(graph.tensors[n]) for n in graph.outputs),
        arena=max(generator.plan.size, 1),
        scratch=generator.scratch,
    )
    written = {
        "model.h": header,
        "model.c": _model_source(graph, generator),
        "main.c": _MAIN,
        "Makefile": _MAKEFILE,
    }
    files = []
    for name, text in written.items():
        (out / name).write_text(text)
        files.append(out / name)
    runtime = resources.files("zerobit.export.c") / "runtime"
    for name in RUNTIME_FILES:
        with resources.as_file(runtime / name) as path:
            shutil.copyfile(path, out / name)
        files.append(out / name)
    return CExport(
        tuple(files), max(generator.plan.size, 1), generator.scratch, generator.weight_bytes
    )


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)

# SPDX-License-Identifier: Apache-2.0
# The flash cost: the bytes of the packed file (format v1) of the pruned integer model, exactly.
"""The ``flash`` cost: what a device stores to run the model, code excluded.

It is the size in bytes of the packed file that :func:`zerobit.export.write_packed` writes
(format version 1, documented in :mod:`zerobit.export.packed`): packed weights, int32 biases,
requantization (or dequantization) parameters, scales, shapes, names and headers. On a discrete
model it is exact: ``evaluate(frozen, "flash") == flash_bytes(frozen) == len(file)``.

* Per layer (:func:`flash`, a function of the :class:`~zerobit.cost.LayerSpec`): the layer's op
  record, ``27 + len(name) + 8 * dims + (12 or 13) * C + sum over its non-empty runs of
  (3 + 2 * n_b + ceil(n_b * K * b / 8))``, with ``C`` kept channels, ``n_b`` channels at ``b``
  bits and ``K = fan_in * prod(kernel)`` weights per channel (13 bytes per channel for
  requantized outputs: int32 bias, f32 weight scale, u32 multiplier, u8 shift; 12 for float
  logits, whose f32 dequantization scale replaces multiplier and shift).
* Per model (:func:`flash_graph_bytes`, the graph term, a function of the
  :class:`~zerobit.cost.graph.GraphSpec`): file header, input/output lists, checksum, tensor
  records and the records of the ops that are not layers. It does not depend on the
  architecture.

During the search the channel counts are expectations (0-dim tensors) and two steps of the
layout are relaxed: ``ceil(n_b * K * b / 8)`` is ``n_b * K * b / 8`` with a straight-through
ceil (the forward value is the ceil of the expectation, the gradient that of the linear term),
and a run's 3-byte header, present iff ``n_b > 0``, costs ``3 * min(n_b, 1)``: exact for whole
counts, linear in between (a bit-width that no channel is likely to take costs little).
"""

from __future__ import annotations

import math

import torch

from zerobit.cost.graph import GraphSpec, graph_term
from zerobit.cost.registry import register_cost
from zerobit.cost.spec import LayerSpec, Number, zero_like

__all__ = ["flash", "flash_graph_bytes"]

# Record sizes of packed format version 1 (zerobit/export/packed.py; the tests check them
# against the written files).
FILE_HEADER_BYTES = 36
CHECKSUM_BYTES = 4
INDEX_BYTES = 2  # u16 tensor index (inputs and outputs lists, op inputs)
OP_HEADER_BYTES = 9  # u8 op type, u32 record size, u8 name length, u8 input count, u16 output
TENSOR_RECORD_BYTES = 8  # u8 name length, u8 bits, u8 signed, f32 scale, u8 rank
DIM_BYTES = 4  # u32 per shape dim
LAYER_FIXED_BYTES = 16  # u8 kind, dims, float_output; u32 C, in_per_group, groups; u8 run count
WINDOW_BYTES = 8  # u16 kernel, stride, padding, dilation per spatial dim of a layer
RUN_HEADER_BYTES = 3  # u8 bits, u16 channel count
CHANNEL_INDEX_BYTES = 2  # u16 per channel of a run
REQUANT_CHANNEL_BYTES = 13  # i32 bias, f32 weight scale, u32 multiplier, u8 shift
FLOAT_CHANNEL_BYTES = 12  # i32 bias, f32 weight scale, f32 dequantization scale
POOL_WINDOW_BYTES = {"max_pool": 8, "avg_pool": 6}  # u16 per dim: 4 (3) window parameters


def _ceil_bytes(bits: Number) -> Number:
    """``ceil(bits / 8)``: exact on ints, a straight-through ceil on tensors."""
    if isinstance(bits, torch.Tensor):
        linear = bits / 8
        return linear + (torch.ceil(linear) - linear).detach()
    if isinstance(bits, int):
        return (bits + 7) // 8
    return math.ceil(bits / 8)


def _present(count: Number) -> Number:
    """``[count > 0]``: exact on numbers, ``min(count, 1)`` on tensors."""
    if isinstance(count, torch.Tensor):
        return count.clamp(max=1)
    return 1 if count > 0 else 0


def flash_graph_bytes(graph: GraphSpec) -> int:
    """Return the bytes of the packed file outside the layer records.

    File header, the inputs and outputs lists, the checksum, one record per tensor and one per
    op that is not a layer. None of it depends on the architecture (pruning changes shapes, not
    ranks or names).

    Args:
        graph: The model's exported graph.

    Returns:
        Bytes.
    """
    size = FILE_HEADER_BYTES + CHECKSUM_BYTES
    size += INDEX_BYTES * (len(graph.inputs) + len(graph.outputs))
    for tensor in graph.tensors:
        size += TENSOR_RECORD_BYTES + len(tensor.name.encode()) + DIM_BYTES * tensor.rank
    for op in graph.ops:
        if op.kind == "layer":
            continue  # counted by flash(spec)
        size += OP_HEADER_BYTES + len(op.name.encode()) + INDEX_BYTES * len(op.inputs)
        if op.kind in POOL_WINDOW_BYTES:
            size += 1 + POOL_WINDOW_BYTES[op.kind] * op.window_dims
    return size


@register_cost("flash")
@graph_term(flash_graph_bytes)
def flash(spec: LayerSpec) -> Number:
    """Return the bytes of the layer's record in the packed file (see the module docs).

    Args:
        spec: The layer; ``float_output`` selects 12 instead of 13 bytes per channel.

    Returns:
        Bytes: an int for a discrete spec, a 0-dim tensor (relaxed, see the module docs) during
        the search.
    """
    dims = len(spec.kernel_size)
    fixed = OP_HEADER_BYTES + INDEX_BYTES + len(spec.name.encode()) + LAYER_FIXED_BYTES
    per_channel = FLOAT_CHANNEL_BYTES if spec.float_output else REQUANT_CHANNEL_BYTES
    total = zero_like(spec) + fixed + WINDOW_BYTES * dims + per_channel * spec.kept_channels
    weights_per_channel = spec.fan_in * spec.kernel_volume
    for bits, count in zip(spec.weight_bits, spec.channels):
        if bits > 0:
            run = RUN_HEADER_BYTES * _present(count) + CHANNEL_INDEX_BYTES * count
            total = total + run + _ceil_bytes(count * weights_per_channel * bits)
    return total

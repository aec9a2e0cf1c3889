# SPDX-License-Identifier: Apache-2.0
# Packed format: exact round trip, weight bits = size cost, flash bytes = file size, corrupt files.
from __future__ import annotations

import dataclasses
import doctest
import functools
import importlib
import math
import re
import struct
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_export_ir import MODELS, random_frozen

import zerobit as zb
from zerobit.export import (
    IntegerGraph,
    PackedFormatError,
    decode_packed,
    encode_packed,
    flash_bytes,
    pack_codes,
    packed_runs,
    prune,
    read_packed,
    run_reference,
    to_ir,
    unpack_codes,
    write_packed,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "export.md"


pytestmark = pytest.mark.usefixtures("one_thread")


def same_graph(a: IntegerGraph, b: IntegerGraph) -> bool:
    """Field-by-field equality, tensors compared with their dtypes."""
    if a.tensors != b.tensors or (a.inputs, a.outputs) != (b.inputs, b.outputs):
        return False
    if len(a.ops) != len(b.ops):
        return False
    for x, y in zip(a.ops, b.ops):
        if type(x) is not type(y):
            return False
        for field in dataclasses.fields(x):
            u, v = getattr(x, field.name), getattr(y, field.name)
            if isinstance(u, torch.Tensor) or isinstance(v, torch.Tensor):
                if u is None or v is None or u.dtype != v.dtype or not torch.equal(u, v):
                    return False
            elif u != v:
                return False
    return True


def naive_unpack(data: bytes, count: int, bits: int) -> list[int]:
    """Read ``count`` two's complement ``bits``-bit codes, LSB-first, one bit at a time."""
    codes = []
    for i in range(count):
        value = 0
        for j in range(bits):
            position = i * bits + j
            value |= ((data[position // 8] >> (position % 8)) & 1) << j
        codes.append(value - (1 << bits) if value >= 1 << (bits - 1) else value)
    return codes


def naive_pack(codes: list[int], bits: int) -> bytes:
    out = bytearray((len(codes) * bits + 7) // 8)
    for i, code in enumerate(codes):
        for j in range(bits):
            if (code >> j) & 1:  # Python's >> on negatives is two's complement
                position = i * bits + j
                out[position // 8] |= 1 << (position % 8)
    return bytes(out)


# -------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("name", list(MODELS))
def test_round_trip_through_a_file_is_exact(name: str, tmp_path: Path) -> None:
    for seed in (0, 1, 2):
        frozen, x = random_frozen(name, seed)
        path = tmp_path / f"{name}-{seed}.zbp"
        written = write_packed(frozen, path)
        assert written == path.stat().st_size == flash_bytes(frozen)
        graph = read_packed(path)
        assert torch.equal(run_reference(graph, x), frozen(x))
        assert same_graph(graph, prune(frozen))
        assert encode_packed(graph) == path.read_bytes()


def test_flash_bytes_of_a_graph_equals_that_of_the_model() -> None:
    frozen, _ = random_frozen("resnet8", 4)
    graph = to_ir(frozen)
    assert flash_bytes(graph) == flash_bytes(frozen) == len(encode_packed(graph))


@pytest.mark.parametrize("name", ["resnet8", "dscnn", "mobilenetv1", "concat", "pool1d"])
def test_packed_weight_bits_equal_the_size_cost_and_runs_are_byte_aligned(name: str) -> None:
    frozen, _ = random_frozen(name, 5)
    data = encode_packed(frozen)
    header_bits, header_bytes = struct.unpack_from("<QI", data, 24)
    size = zb.cost.evaluate(frozen, "size")
    runs = packed_runs(data)
    assert header_bits == sum(r.weight_bits for r in runs) == size
    # independent count: kept channels per bit-width from the architecture, weights per channel
    # from the pruned model's tensors
    arch = frozen.architecture()
    graph = prune(frozen)
    expected_bytes = 0
    for op in graph.layers():
        bits = [b for b in arch[op.name]["weight_bits"] if b > 0]
        for b in sorted(set(bits)):
            expected_bytes += math.ceil(bits.count(b) * op.weights_per_channel * b / 8)
    assert header_bytes == sum(r.weight_bytes for r in runs) == expected_bytes
    # every run is a contiguous byte range holding exactly its channels' codes, in order
    layers = {op.name: op for op in graph.layers()}
    ranges = sorted((r.offset, r.offset + r.weight_bytes) for r in runs)
    assert all(end <= start for (_, end), (start, _) in zip(ranges, ranges[1:]))
    for run in runs:
        op = layers[run.layer]
        chunk = data[run.offset : run.offset + run.weight_bytes]
        codes = naive_unpack(chunk, len(run.channels) * op.weights_per_channel, run.bits)
        expected = op.weight_codes.reshape(op.out_channels, -1)[list(run.channels)]
        assert codes == expected.flatten().tolist()
        assert run.weight_bytes == math.ceil(run.weight_bits / 8)
        assert all(op.weight_bits[c] == run.bits for c in run.channels)


@given(st.integers(2, 8), st.data())
def test_pack_codes_matches_a_naive_bit_writer(bits: int, data: st.DataObject) -> None:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    codes = data.draw(st.lists(st.integers(low, high), max_size=40))
    packed = pack_codes(torch.tensor(codes, dtype=torch.int32), bits)
    assert packed == naive_pack(codes, bits)
    assert unpack_codes(packed, len(codes), bits).tolist() == codes


def test_pack_codes_rejects_codes_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="do not fit 2-bit"):
        pack_codes(torch.tensor([2]), 2)
    with pytest.raises(ValueError, match="padding bits"):
        unpack_codes(b"\xff", 2, 3)


# --------------------------------------------------------------------------- corrupt files
@functools.cache
def small_file() -> bytes:
    frozen, _ = random_frozen("flatten", 0)
    return encode_packed(frozen)


def with_crc(body: bytes) -> bytes:
    """Recompute the checksum so that a corruption reaches the record parser."""
    return body[:-4] + struct.pack("<I", zlib.crc32(body[:-4]))


def test_small_file_is_small_and_valid() -> None:
    assert 300 < len(small_file()) < 2000
    decode_packed(small_file())


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4))
def test_byte_flips_are_always_detected(flips: list[tuple[int, int]]) -> None:
    data = bytearray(small_file())
    touched = set()
    for position, mask in flips:
        data[position % len(data)] ^= mask
        touched.add(position % len(data))
    if bytes(data) == small_file():
        return  # the flips cancelled out
    with pytest.raises(PackedFormatError):
        decode_packed(bytes(data))


@given(st.integers(0, 10**6))
def test_truncated_files_are_rejected(length: int) -> None:
    data = small_file()
    with pytest.raises(PackedFormatError, match="truncated|magic"):
        decode_packed(data[: length % len(data)])


@given(st.lists(st.tuples(st.integers(36, 10**6), st.integers(1, 255)), min_size=1, max_size=3))
def test_corrupt_records_with_a_valid_checksum_never_crash_the_loader(
    flips: list[tuple[int, int]],
) -> None:
    data = bytearray(small_file())
    for position, mask in flips:
        data[36 + position % (len(data) - 40)] ^= mask
    try:
        graph = decode_packed(with_crc(bytes(data)))
    except PackedFormatError:
        return
    graph.validate()  # what loads is a consistent graph


def test_wrong_magic_version_size_and_checksum_are_named() -> None:
    data = small_file()
    with pytest.raises(PackedFormatError, match="not a zerobit packed file"):
        decode_packed(b"PK\x03\x04" + data[4:])
    version_2 = data[:4] + struct.pack("<H", 2) + data[6:]
    with pytest.raises(PackedFormatError, match="unsupported version 2; this reader reads 1"):
        decode_packed(with_crc(version_2))
    with pytest.raises(PackedFormatError, match="3 trailing bytes"):
        decode_packed(data + b"\0\0\0")
    broken = bytearray(data)
    broken[-1] ^= 1
    with pytest.raises(PackedFormatError, match="checksum mismatch"):
        decode_packed(bytes(broken))
    with pytest.raises(ValueError):  # PackedFormatError is a ValueError
        decode_packed(b"")


def test_read_packed_rejects_a_corrupt_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "model.zbp"
    path.write_bytes(small_file()[:-1])
    with pytest.raises(PackedFormatError, match="truncated"):
        read_packed(path)


# --------------------------------------------------------------------------------- examples
def test_docs_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), {"__name__": "docs"})


@pytest.mark.parametrize("module", ["reference"])
def test_module_doctests_run(module: str) -> None:
    failures, tried = doctest.testmod(importlib.import_module(f"zerobit.export.{module}"))
    assert tried > 0 and failures == 0

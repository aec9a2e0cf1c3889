# SPDX-License-Identifier: Apache-2.0
# The flash cost: exactly the bytes of the written packed file, and its relaxation in the search.
from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch
from conftest import ConcatNet
from test_export_ir import SPACE, random_frozen

import zerobit as zb
from zerobit.cost import LayerSpec, flash
from zerobit.export import flash_bytes, write_packed

CASES = [(m, s) for m in ("resnet8", "dscnn", "mobilenetv1") for s in (0, 1, 2)] + [
    (m, 0) for m in ("concat", "flatten", "pool2d", "pool1d")
]


def op_record_bytes(data: bytes) -> dict[str, int]:
    """Size of every op record of a packed file, by op name, read from the file's own fields."""
    tensor_count, op_count, input_count, output_count = struct.unpack_from("<IIHH", data, 12)
    position = 36 + 2 * (input_count + output_count)
    for _ in range(tensor_count):
        position += 1 + data[position] + 6  # name, bits, signed, scale
        position += 1 + 4 * data[position]  # rank, shape
    sizes = {}
    for _ in range(op_count):
        size = struct.unpack_from("<I", data, position + 1)[0]
        length = data[position + 5]
        sizes[data[position + 6 : position + 6 + length].decode()] = size
        position += size
    assert position == len(data) - 4  # then the checksum
    return sizes


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_flash_is_the_written_file(name: str, seed: int, tmp_path: Path) -> None:
    frozen, _ = random_frozen(name, seed)
    path = tmp_path / "model.zbp"
    write_packed(frozen, path)
    data = path.read_bytes()
    assert zb.cost.evaluate(frozen, "flash") == len(data) == flash_bytes(frozen)
    records = op_record_bytes(data)
    per_layer = zb.cost.evaluate(frozen, "flash", per_layer=True)
    layers = list(frozen.layers())
    assert [per_layer[layer] for layer in layers] == [records[layer] for layer in layers]
    assert per_layer["<graph>"] == len(data) - sum(records[layer] for layer in layers)


def _spec(counts: tuple[torch.Tensor, ...], in_channels: torch.Tensor, **kw: bool) -> LayerSpec:
    return LayerSpec(
        "conv1", "conv", in_channels, (3, 3), (4, 4), (0, 2, 8), counts, (8,), (1.0,), **kw
    )


def test_relaxation_is_exact_on_whole_counts_with_the_linear_gradient() -> None:
    counts = tuple(torch.tensor(v, requires_grad=True) for v in (1.0, 2.0, 0.0))
    in_channels = torch.tensor(3.0, requires_grad=True)
    value = flash(_spec(counts, in_channels))
    # 9+2+5 op header, 16 fixed, 8*2 window; 13 per kept channel; the 2-bit run: 3 + 2*2 +
    # ceil(2 * 27 * 2 / 8); no 8-bit run
    assert float(value.detach()) == 32 + 16 + 13 * 2 + 3 + 4 + 14 == 95
    assert flash(_spec((1, 2, 0), 3)) == 95  # the discrete spec gives the same int
    value.backward()
    grads = [0.0 if c.grad is None else float(c.grad) for c in counts]
    # 2-bit: 13 + 2 + 27 * 2 / 8 (the header is saturated); 8-bit: 13 + 3 + 2 + 27
    assert grads == [0.0, 13 + 2 + 6.75, 13 + 3 + 2 + 27]
    assert float(in_channels.grad) == 2 * 9 * 2 / 8  # type: ignore[arg-type]
    fractional = flash(_spec((torch.tensor(0.0), torch.tensor(1.5), torch.tensor(0.5)), 3))
    # headers 3 * min(n, 1); weight bytes: ceil(10.125) + ceil(13.5); channel indices 2 * 2
    assert float(fractional.detach()) == 48 + 13 * 2 + 3 + 1.5 + 11 + 14 + 4
    logits = flash(_spec((1, 2, 0), 3, float_output=True))
    assert logits == 95 - 2  # 12 bytes per channel: a dequantization scale replaces M and n
    with pytest.raises(ValueError, match="float_output must be a bool"):
        _spec((1, 2, 0), 3, float_output=1)  # type: ignore[arg-type]


def test_flash_as_a_search_cost() -> None:
    net = ConcatNet()
    smodel = zb.convert(net, torch.rand(4, 1, 8, 8), SPACE, cost="flash")
    arch = smodel.architecture()
    for entry in arch.values():
        if "weight_bits" in entry:
            entry["weight_bits"] = [8] * len(entry["weight_bits"])
    smodel.load_architecture_(arch)
    # the normalizer is the whole file of the unpruned all-8-bit model, headers included
    assert smodel.cost_references["flash"] == flash_bytes(smodel.eval().freeze())
    torch.manual_seed(1)
    with torch.no_grad():
        for p in smodel.arch_parameters():
            p.copy_(torch.randn_like(p))
    smodel.train()
    smodel(torch.rand(2, 1, 8, 8))
    smodel.cost().backward()
    selectors = [s.parameter.grad for s in smodel.selectors if s.parameter.requires_grad]
    assert selectors and all(g is not None and g.abs().sum() > 0 for g in selectors)
    smodel.eval()
    layers = sum(flash(spec) for spec in smodel.layer_specs())
    assert layers + smodel.graph_cost(flash) == flash_bytes(smodel.freeze())

# SPDX-License-Identifier: Apache-2.0
# ONNX export: onnxruntime equals the integer reference and the frozen model bit for bit.
from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest
import torch
from test_export_ir import SPACE, TwoOutputs, random_frozen

import zerobit as zb
from zerobit.export import IntegerGraph, IntegerReference, Op, prune, run_reference, to_ir
from zerobit.export.reference import _accumulate
from zerobit.models import ResNet8
from zerobit.quant import requantize

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
zonnx = pytest.importorskip("zerobit.export.onnx")


pytestmark = pytest.mark.usefixtures("one_thread")


def session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    source = model if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(
        str(source) if isinstance(source, Path) else source,
        options,
        providers=["CPUExecutionProvider"],
    )


def run_onnx(model: onnx.ModelProto | Path, *inputs: torch.Tensor) -> list[torch.Tensor]:
    s = session(model)
    feeds = {i.name: x.numpy() for i, x in zip(s.get_inputs(), inputs)}
    return [torch.from_numpy(out) for out in s.run(None, feeds)]


# ------------------------------------------------------------------------------------ parity
CASES = {
    "resnet8": 4,
    "dscnn": 4,
    "concat": 4,
    "pool2d": 3,
    "pool1d": 3,
    "flatten": 2,
    "mobilenetv1": 1,
}


@pytest.mark.parametrize("name", list(CASES))
def test_onnxruntime_equals_reference_and_frozen_model_bit_for_bit(
    name: str, tmp_path: Path
) -> None:
    for seed in range(CASES[name]):
        frozen, x = random_frozen(name, seed)
        expected = frozen(x)
        path = tmp_path / f"{name}_{seed}.onnx"
        zonnx.export_onnx(frozen, path)
        (got,) = run_onnx(path, x)
        graph = prune(frozen)
        assert got.dtype == torch.float32
        assert torch.equal(got, run_reference(graph, x))
        assert torch.equal(got, expected)
        if seed == 0:  # the unpruned graph too, and other batch sizes (dynamic batch)
            model = zonnx.build_onnx(to_ir(frozen))
            assert torch.equal(run_onnx(model, x)[0], expected)
            assert torch.equal(run_onnx(path, x[:1])[0], expected[:1])


def test_onnx_is_exact_for_accumulators_beyond_float32() -> None:
    model = ResNet8((1, 16, 16))
    smodel = zb.convert(model, torch.rand(4, 1, 16, 16), zb.SearchSpace((8,), (8,)))
    frozen = smodel.eval().freeze().eval()
    with torch.no_grad():  # equal positive weights (all codes 127) and saturated inputs
        for layer in frozen.layers().values():
            layer.weight.fill_(0.01)
    x = torch.full((2, 1, 16, 16), 10.0)
    graph = prune(frozen)
    values = IntegerReference(graph).run(x)
    biggest = max(int(_accumulate(op, values[op.inputs[0]]).abs().max()) for op in graph.layers())
    assert biggest > 2**24  # a float32 Conv would round here
    (got,) = run_onnx(zonnx.build_onnx(graph), x)
    assert torch.equal(got, frozen(x))


def test_quantized_outputs_are_dequantized_and_named() -> None:
    smodel = zb.convert(TwoOutputs(), torch.rand(2, 1, 5, 5), SPACE)
    frozen = smodel.eval().freeze().eval()
    x = torch.rand(3, 1, 5, 5) * 2
    graph = to_ir(frozen)
    model = zonnx.build_onnx(graph)
    names = [o.name for o in model.graph.output]
    assert names == [graph.outputs[0], f"{graph.outputs[1]}/dequantized"]
    for got, expected in zip(run_onnx(model, x), frozen(x)):
        assert torch.equal(got, expected)


# ---------------------------------------------------------------------------- requantization
def test_requantize_nodes_equal_zerobit_requantize_with_negative_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    shift = torch.arange(63, dtype=torch.int64).repeat(3)  # every n, three multipliers each
    multiplier = torch.cat(
        [
            torch.ones(63, dtype=torch.int64),  # exact ties at odd multiples of 2^(n-1)
            torch.full((63,), 2**31 - 1, dtype=torch.int64),
            torch.randint(0, 2**31, (63,), generator=generator),
        ]
    )
    channels = shift.numel()
    acc = torch.randint(-(2**31), 2**31 + 1, (64, channels), generator=generator)
    ties = (2 * torch.randint(-4, 4, (8, channels), generator=generator) + 1) * (
        torch.where(shift > 0, 2 ** (shift.clamp(max=31) - 1).clamp(min=0), 0)
    )
    extremes = torch.tensor([-(2**31), 2**31, -1, 0, 1], dtype=torch.int64)
    acc = torch.cat([acc, ties.clamp(-(2**31), 2**31), extremes[:, None].expand(5, channels)])
    expected = requantize(acc, multiplier, shift, dim=1)

    writer = zonnx._Writer(IntegerGraph({}, [], (), ()))
    out = writer.requantize(Op("r", ("acc",), "r"), "acc", multiplier.numpy(), shift.numpy())
    graph = onnx.helper.make_graph(
        writer.nodes,
        "requantize",
        [onnx.helper.make_tensor_value_info("acc", onnx.TensorProto.INT64, ["n", channels])],
        [onnx.helper.make_tensor_value_info(out, onnx.TensorProto.INT64, ["n", channels])],
        writer.initializers,
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    (got,) = session(model).run(None, {"acc": acc.numpy()})
    assert (acc < 0).any() and (expected < 0).any()
    assert np.array_equal(got, expected.numpy())


def test_window_indices_match_unfold() -> None:
    x = torch.arange(2 * 7 * 9).reshape(1, 2, 7, 9)
    indices, out = zonnx.window_indices((7, 9), (3, 2), (2, 1), (1, 0), (2, 3))
    padded = torch.nn.functional.pad(x, [0, 0, 1, 1], value=-1)
    view = padded.unfold(2, 5, 2)[..., ::2].unfold(3, 4, 1)[..., ::3]
    assert out == tuple(view.shape[2:4])
    gathered = padded.flatten(2)[:, :, torch.from_numpy(indices)]
    assert torch.equal(gathered, view.flatten(2, 3).flatten(-2))


# ------------------------------------------------------------------------------------ misc
def test_opset_range_and_file_round_trip(tmp_path: Path) -> None:
    frozen, x = random_frozen("concat", 0)
    with pytest.raises(ValueError, match="opset must lie in"):
        zonnx.build_onnx(prune(frozen), opset=12)
    path = tmp_path / "concat.onnx"
    written = zonnx.export_onnx(frozen, path, opset=13)
    loaded = onnx.load(str(path))
    assert loaded.SerializeToString() == written.SerializeToString()
    assert loaded.opset_import[0].version == 13
    assert loaded.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    op_types = {node.op_type for node in loaded.graph.node}
    assert not op_types & {"Conv", "ConvInteger", "MatMulInteger", "QuantizeLinear"}
    assert torch.equal(run_onnx(path, x)[0], frozen(x))


def test_export_api_writes_checks_and_loads_onnx(tmp_path: Path) -> None:
    frozen, x = random_frozen("dscnn", 1)
    path = zb.export(frozen, x, "onnx", tmp_path)
    assert path == tmp_path / "model.onnx"
    assert torch.equal(zb.load_artifact(path)(x), frozen(x))
    with pytest.raises(ValueError, match="takes 1 input"):
        zonnx.load_onnx(path)(x, x)


def test_module_doctests_run() -> None:
    failures, tried = doctest.testmod(zonnx)
    assert tried > 0 and failures == 0

# SPDX-License-Identifier: Apache-2.0
# Integer IR, physical pruning, pruned torch model, integer reference: exact parity with freeze().
from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import ConcatNet, FlattenNet, randomize_bn_
from torch import nn

import zerobit as zb
from zerobit.export import (
    AvgPool,
    Concat,
    Flatten,
    IntegerGraph,
    IntegerReference,
    Layer,
    MaxPool,
    prune,
    run_reference,
    to_ir,
    to_torch,
)
from zerobit.models import DSCNN, MobileNetV1, ResNet8

SPACE = zb.SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(2, 4, 8))
SEEDS = (0, 1, 2, 3)


class PoolNet2d(nn.Module):
    """Functional max pool with padding, dilated grouped conv, average pool, view-flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=2, dilation=2, groups=2, bias=False)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(x.view(x.size(0), -1))


class PoolNet1d(nn.Module):
    """Conv1d, max pool, 1-d depthwise conv, strided conv, padded average pool, flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 6, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(6)
        self.pool1 = nn.MaxPool1d(2)
        self.depthwise = nn.Conv1d(6, 6, 3, padding=1, groups=6)
        self.conv3 = nn.Conv1d(6, 8, 3, stride=2)
        self.pool2 = nn.AvgPool1d(3, stride=1, padding=1)
        self.fc = nn.Linear(8 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.bn1(self.conv1(x))))
        x = torch.relu(self.conv3(torch.relu(self.depthwise(x))))
        return self.fc(torch.flatten(self.pool2(x), 1))


MODELS = {
    "resnet8": (lambda: ResNet8((1, 16, 16)), (1, 16, 16)),
    "dscnn": (DSCNN, (1, 49, 10)),
    "mobilenetv1": (lambda: MobileNetV1((3, 32, 32), 2), (3, 32, 32)),
    "concat": (ConcatNet, (1, 8, 8)),
    "flatten": (FlattenNet, (1, 5, 5)),
    "pool2d": (PoolNet2d, (2, 12, 12)),
    "pool1d": (PoolNet1d, (2, 20)),
}
SIGNED_INPUT = {"pool1d"}
_CACHE: dict[str, tuple[zb.SearchModel, list[torch.Tensor]]] = {}


pytestmark = pytest.mark.usefixtures("one_thread")


def random_frozen(name: str, seed: int) -> tuple[zb.FrozenModel, torch.Tensor]:
    """A random architecture (weight bits, activation bits, clips) of model ``name``, in eval
    mode, with a batch of 3 inputs that also exceed the activation clips."""
    factory, shape = MODELS[name]
    signed = name in SIGNED_INPUT
    if name not in _CACHE:
        torch.manual_seed(0)
        example = torch.randn(4, *shape) if signed else torch.rand(4, *shape)
        with warnings.catch_warnings():  # pool2d: "not pruned" notices of its grouped conv
            warnings.simplefilter("ignore", UserWarning)
            smodel = zb.convert(randomize_bn_(factory()), example, SPACE)
        _CACHE[name] = smodel, [q.clips.detach().clone() for q in smodel.quantizers]
    smodel, clips = _CACHE[name]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in smodel.arch_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 2)
        for q, clip in zip(smodel.quantizers, clips):
            q.clips.copy_(clip * (0.5 + torch.rand(clip.shape, generator=generator)))
    frozen = smodel.eval().freeze().eval()
    if signed:
        x = torch.randn(3, *shape, generator=generator) * 2
    else:
        x = torch.rand(3, *shape, generator=generator) * 2.5 - 0.5
    return frozen, x


def pruned_channels(graph: IntegerGraph) -> int:
    return sum(int((op.weight_bits == 0).sum()) for op in graph.layers())


# ------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("name", list(MODELS))
def test_reference_and_pruned_model_equal_the_frozen_model_bit_for_bit(name: str) -> None:
    removed = 0
    for seed in SEEDS:
        frozen, x = random_frozen(name, seed)
        expected = frozen(x)
        graph = to_ir(frozen)
        pruned = prune(graph)
        removed += pruned_channels(graph)
        assert torch.equal(run_reference(graph, x), expected)
        assert torch.equal(run_reference(pruned, x), expected)
        assert torch.equal(to_torch(pruned)(x), expected)
    if name != "pool2d":  # its grouped conv and view make every group unprunable
        assert removed > 0  # the random architectures really prune


def test_reference_is_exact_for_large_accumulators() -> None:
    frozen, x = random_frozen("mobilenetv1", 7)
    with torch.no_grad():  # saturating inputs and all-positive weights: the largest sums
        for layer in frozen.layers().values():
            layer.weight.abs_()
    x = torch.full_like(x, 10.0)
    graph = to_ir(frozen)
    biggest = max(
        op.weight_codes.abs().flatten(1).sum(1).max().item() * 255 for op in graph.layers()
    )
    assert biggest > 2**16
    assert torch.equal(run_reference(graph, x), frozen(x))


def test_reference_exposes_every_edge_as_integer_codes() -> None:
    frozen, x = random_frozen("resnet8", 0)
    graph = prune(frozen)
    values = IntegerReference(graph).run(x)
    for name, info in graph.tensors.items():
        value = values[name]
        assert tuple(value.shape[1:]) == info.shape
        if info.is_float:
            assert value.dtype == torch.float32
        else:
            lo, hi = info.range
            assert value.dtype == torch.int64
            assert lo <= int(value.min()) and int(value.max()) <= hi


# ------------------------------------------------------------------------------ graph shape
def test_ir_of_resnet8_lists_typed_ops_with_quantized_edges() -> None:
    frozen, _ = random_frozen("resnet8", 0)
    graph = to_ir(frozen)
    kinds = [type(op).__name__ for op in graph.ops]
    assert kinds.count("Layer") == 10 and kinds.count("Add") == 3
    assert kinds[0] == "InputQuant" and kinds.count("AvgPool") == 1
    assert graph.inputs == ("x",) and graph.outputs == ("classifier",)
    assert graph.tensors["x"].is_float and graph.tensors["classifier"].is_float
    assert graph.tensors["classifier"].shape == (10,)
    for op in graph.layers():
        layer = frozen.layers()[op.name]
        assert torch.equal(op.weight_bits, layer.bits)
        info = graph.tensors[op.output]
        if not info.is_float:
            assert layer.output_quantizer is not None
            assert info.scale == float(layer.output_quantizer.scale().detach())
            assert info.bits == layer.output_quantizer.bits
    for op in graph.ops:  # a residual add needs no rescaling: one grid in and out
        if type(op).__name__ == "Add":
            grids = {graph.tensors[n].quantization() for n in (*op.inputs, op.output)}
            assert len(grids) == 1


def test_ir_refuses_models_with_float_ops_naming_them() -> None:
    class WithSigmoid(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3)
            self.gate = nn.Sigmoid()
            self.conv2 = nn.Conv2d(4, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv2(self.gate(self.conv1(x)))

    with pytest.warns(UserWarning):
        smodel = zb.convert(WithSigmoid(), torch.rand(2, 1, 7, 7), SPACE, allow_float=True)
    with pytest.raises(ValueError, match=r"\['gate'\] were kept in float"):
        to_ir(smodel.eval().freeze())


def test_validate_names_inconsistencies() -> None:
    frozen, _ = random_frozen("flatten", 0)
    graph = to_ir(frozen)
    conv = graph.layers()[0]
    wrong_shape = dataclasses.replace(
        graph.tensors[conv.output], shape=(5, *graph.tensors[conv.output].shape[1:])
    )
    with pytest.raises(ValueError, match="computes shape"):
        IntegerGraph(
            {**graph.tensors, conv.output: wrong_shape}, graph.ops, graph.inputs, graph.outputs
        ).validate()
    with pytest.raises(ValueError, match="not yet computed"):
        IntegerGraph(graph.tensors, graph.ops[1:], graph.inputs, graph.outputs).validate()
    too_big = dataclasses.replace(conv, weight_codes=conv.weight_codes * 100)
    ops = [too_big if op is conv else op for op in graph.ops]
    with pytest.raises(ValueError, match="narrow range"):
        IntegerGraph(graph.tensors, ops, graph.inputs, graph.outputs).validate()


# ---------------------------------------------------------------------------------- pruning
def expected_weight_count(frozen: zb.FrozenModel) -> int:
    """Sum over layers of kept-out x kept-in (per group) x kernel, from the architecture."""
    arch = frozen.architecture()
    layers = frozen.analysis.layers.values()
    kept = {i.group: sum(b > 0 for b in arch[i.name]["weight_bits"]) for i in layers}
    total = 0
    for info in layers:
        kept_in = sum(m if g is None else m * kept[g] for g, m in info.input_channels)
        fan_in = 1 if info.kind == "depthwise" else kept_in // info.conv_groups
        total += kept[info.group] * fan_in * math.prod(info.kernel_size)
    return total


@pytest.mark.parametrize("name", ["resnet8", "dscnn", "concat", "flatten", "pool1d", "pool2d"])
def test_pruned_torch_model_really_loses_parameters(name: str) -> None:
    frozen, _ = random_frozen(name, 1)
    model = to_torch(frozen)
    plain = (nn.Conv1d, nn.Conv2d, nn.Linear)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, plain))
    assert weights == expected_weight_count(frozen)
    original = sum(layer.weight.numel() for layer in frozen.layers().values())
    assert weights < original or name == "pool2d"
    for op in model.graph.layers():  # the layers keep the user's names and hold plain modules
        layer = model.layers.get_submodule(op.name).layer
        assert isinstance(layer, plain) and layer.weight.shape == op.weight_codes.shape


def test_pruning_slices_concat_offsets_in_order() -> None:
    frozen, _ = random_frozen("concat", 2)
    graph, pruned = to_ir(frozen), prune(frozen)
    bits = {op.name: op.weight_bits for op in graph.layers()}
    left = (bits["left"] > 0).nonzero().flatten()
    right = (bits["right"] > 0).nonzero().flatten()
    assert len(left) < 4 or len(right) < 5
    columns = torch.cat([left, 4 + right])
    mix = next(op for op in graph.layers() if op.name == "mix")
    rows = (mix.weight_bits > 0).nonzero().flatten()
    new_mix = next(op for op in pruned.layers() if op.name == "mix")
    assert torch.equal(new_mix.weight_codes, mix.weight_codes[rows][:, columns])
    cat = next(op for op in pruned.ops if isinstance(op, Concat))
    assert pruned.tensors[cat.output].channels == len(columns)


def test_pruning_removes_whole_blocks_after_a_flatten() -> None:
    frozen, _ = random_frozen("flatten", 3)
    graph, pruned = to_ir(frozen), prune(frozen)
    conv, fc1 = graph.layers()[:2]
    kept = (conv.weight_bits > 0).nonzero().flatten().tolist()
    assert len(kept) < 4
    columns = [c * 9 + j for c in kept for j in range(9)]
    rows = (fc1.weight_bits > 0).nonzero().flatten()
    assert torch.equal(pruned.layers()[1].weight_codes, fc1.weight_codes[rows][:, columns])
    flatten = next(op for op in pruned.ops if isinstance(op, Flatten))
    assert pruned.tensors[flatten.output].shape == (9 * len(kept),)


def test_pruning_shrinks_depthwise_groups_and_residual_partners_alike() -> None:
    frozen, _ = random_frozen("dscnn", 0)
    graph, pruned = to_ir(frozen), prune(frozen)
    for before, after in zip(graph.layers(), pruned.layers()):
        kept = int((before.weight_bits > 0).sum())
        assert after.out_channels == kept and bool((after.weight_bits > 0).all())
        if before.kind == "depthwise":
            assert after.groups == kept == pruned.tensors[after.inputs[0]].channels
    frozen, _ = random_frozen("resnet8", 0)
    pruned = prune(frozen)
    layers = {op.name: op for op in pruned.layers()}
    for stack in ("stack2", "stack3"):
        conv2, shortcut = layers[f"{stack}.conv2"], layers[f"{stack}.shortcut"]
        assert torch.equal(conv2.weight_bits, shortcut.weight_bits)


def test_prune_is_idempotent_and_keeps_pools() -> None:
    frozen, x = random_frozen("pool1d", 0)
    once = prune(frozen)
    twice = prune(once)
    assert [type(op) for op in once.ops] == [type(op) for op in twice.ops]
    assert once.tensors == twice.tensors
    for a, b in zip(once.layers(), twice.layers()):
        assert torch.equal(a.weight_codes, b.weight_codes)
    assert any(isinstance(op, MaxPool) for op in once.ops)
    assert any(isinstance(op, AvgPool) for op in once.ops)
    assert any(op.kind == "depthwise" and op.dims == 1 for op in once.layers())
    assert torch.equal(run_reference(twice, x), frozen(x))


def test_layer_properties() -> None:
    frozen, _ = random_frozen("pool2d", 0)
    conv2 = next(op for op in prune(frozen).layers() if op.name == "conv2")
    assert isinstance(conv2, Layer)
    assert conv2.groups == 2 and conv2.dilation == (2, 2) and conv2.padding == (2, 2)
    assert conv2.weights_per_channel == 3 * 3 * 3 and conv2.kernel_size == (3, 3)


class TwoInputs(nn.Module):
    """Two inputs (one signed), one ReLU called three times, a concat, a 1x1 conv with padding."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.mix = nn.Conv2d(7, 5, 1, padding=1)  # padding beyond half the kernel
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(20, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = torch.cat([self.relu(self.a(x)), self.relu(self.b(y))], 1)
        return self.fc(torch.flatten(self.pool(self.relu(self.mix(z))), 1))


def test_two_inputs_and_a_module_called_three_times() -> None:
    x, y = torch.rand(4, 1, 6, 6), torch.randn(4, 2, 6, 6)
    smodel = zb.convert(TwoInputs(), (x, y), SPACE)
    for seed in SEEDS:
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in smodel.arch_parameters():
                p.copy_(torch.randn_like(p) * 2)
        frozen = smodel.eval().freeze().eval()
        graph = prune(frozen)
        assert len(graph.inputs) == 2 and graph.tensors[graph.inputs[1]].is_float
        quantized = [
            graph.tensors[op.output] for op in graph.ops if type(op).__name__ == "InputQuant"
        ]
        assert [info.signed for info in quantized] == [False, True]
        assert [op.name for op in graph.ops if type(op).__name__ == "Relu"] == [
            "relu",
            "relu_1",
            "relu_2",
        ]
        inputs = (torch.rand(2, 1, 6, 6) * 2, torch.randn(2, 2, 6, 6) * 2)
        assert torch.equal(run_reference(graph, *inputs), frozen(*inputs))
        assert torch.equal(to_torch(graph)(*inputs), frozen(*inputs))


class TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 3 * 3, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.conv(x))
        return self.fc(torch.flatten(h, 1)), h


def test_an_output_that_would_lose_pruned_channels_is_refused() -> None:
    smodel = zb.convert(TwoOutputs(), torch.rand(2, 1, 5, 5), SPACE)
    arch = smodel.architecture()
    arch["conv"]["weight_bits"] = [8, 0, 4, 2]
    smodel.load_architecture_(arch)
    frozen = smodel.eval().freeze().eval()
    x = torch.rand(3, 1, 5, 5)
    graph = to_ir(frozen)
    for got, expected in zip(run_reference(graph, x), frozen(x)):  # type: ignore[arg-type]
        assert torch.equal(got, expected)
    with pytest.raises(ValueError, match="model output 'relu' would lose pruned channels"):
        prune(graph)

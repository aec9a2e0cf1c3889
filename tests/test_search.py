# SPDX-License-Identifier: Apache-2.0
# The search engine: conversion, coupling, sampling, gradients, costs against real tensors, freeze.
from __future__ import annotations

import math

import pytest
import torch
from conftest import ConcatNet, FlattenNet, randomize_bn_
from torch import nn

import zerobit as zb
from zerobit.cost import MPIC_THROUGHPUT
from zerobit.models import DSCNN, MobileNetV1, ResNet8
from zerobit.train.run import RunConfig

SPACE = zb.SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(2, 4, 8))


def converted(
    model: nn.Module, shape: tuple[int, ...], space: zb.SearchSpace = SPACE, **kw
) -> zb.SearchModel:
    randomize_bn_(model)
    return zb.convert(model, torch.rand(4, *shape), space, **kw)


def randomize_logits_(smodel: zb.SearchModel, scale: float = 2.0) -> None:
    with torch.no_grad():
        for p in smodel.arch_parameters():
            p.copy_(torch.randn_like(p) * scale)


def group_names(smodel: zb.SearchModel) -> list[set[str]]:
    layers = smodel.analysis.layers
    return [{layers[m].name for m in g.members} for g in smodel.analysis.groups]


# ------------------------------------------------------------------------------------ coupling
def test_resnet8_groups_follow_residual_adds() -> None:
    groups = group_names(converted(ResNet8((3, 32, 32)), (3, 32, 32)))
    assert {"stem", "stack1.conv2"} in groups
    assert {"stack2.conv2", "stack2.shortcut"} in groups
    assert {"stack3.conv2", "stack3.shortcut"} in groups
    for alone in ("stack1.conv1", "stack2.conv1", "stack3.conv1", "classifier"):
        assert {alone} in groups
    assert len(groups) == 7


def test_dscnn_depthwise_joins_its_producer() -> None:
    groups = group_names(converted(DSCNN(), (1, 49, 10)))
    model = DSCNN()
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    depthwise = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 4
    for dw in depthwise:
        producer = names[names.index(dw) - 1]
        assert {producer, dw} in groups


def test_concat_inputs_keep_independent_decisions() -> None:
    smodel = converted(ConcatNet(), (1, 8, 8))
    groups = group_names(smodel)
    assert {"left"} in groups and {"right"} in groups
    mix = next(i for i in smodel.analysis.layers.values() if i.name == "mix")
    assert sorted(g for g, _ in mix.input_channels) == sorted(
        [
            next(i.group for i in smodel.analysis.layers.values() if i.name == n)
            for n in ("left", "right")
        ]
    )


@pytest.mark.parametrize("factory,shape", [(ResNet8, (3, 32, 32)), (DSCNN, (1, 49, 10))])
def test_coupled_layers_always_take_the_same_decision(factory, shape) -> None:
    smodel = converted(factory(), shape)
    for _ in range(5):
        randomize_logits_(smodel)
        arch = smodel.architecture()
        for group in group_names(smodel):
            decisions = {tuple(arch[name]["weight_bits"]) for name in group}
            assert len(decisions) == 1


def test_output_layer_is_not_pruned_and_stays_float() -> None:
    smodel = converted(ResNet8((1, 28, 28)), (1, 28, 28))
    info = next(i for i in smodel.analysis.layers.values() if i.name == "classifier")
    assert info.output_point is None
    assert 0 not in smodel.group_bits[info.group]
    assert smodel.architecture()["classifier"]["act_bits"] is None


# --------------------------------------------------------------------------------- conversion
def test_batchnorm_is_folded_and_conversion_preserves_the_float_function() -> None:
    model = randomize_bn_(ResNet8((1, 28, 28))).eval()
    x = torch.rand(8, 1, 28, 28)
    smodel = zb.convert(model, x, zb.SearchSpace(weight_bits=(8,), act_bits=(8,)))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in smodel.modules())
    # 8-bit weights and activations calibrated on x: the search model is close to the float one.
    ref = model(x)
    out = smodel.eval()(x)
    ref, out = ref.detach(), out.detach()
    assert torch.allclose(out, ref, atol=0.05 * float(ref.abs().max()))


def test_weight_compensation_divides_by_the_initial_keep_probability() -> None:
    model = randomize_bn_(ResNet8((1, 28, 28))).eval()
    x = torch.rand(8, 1, 28, 28)
    space = zb.SearchSpace(weight_bits=(0, 4, 8), act_bits=(8,))
    kept = zb.convert(model, x, space, compensate_weights=False)
    compensated = zb.convert(model, x, space)
    # The paper's initial logits p / max(P) give 0 bits the probability 1 / (1 + e^0.5 + e^1).
    keep = 1 - 1 / (1 + math.exp(0.5) + math.exp(1.0))
    for name, layer in kept.layers().items():
        other = compensated.layers()[name]
        factor = 1.0 if name == "classifier" else keep  # the output layer cannot be pruned
        assert torch.allclose(other.weight * factor, layer.weight, rtol=1e-6), name
        assert torch.allclose(other.bias * factor, layer.bias, rtol=1e-6, atol=1e-7), name
    assert any(not torch.equal(a.weight, b.weight) for a, b in
               zip(kept.layers().values(), compensated.layers().values()))  # fmt: skip


def test_annealed_compensation_keeps_unmoved_channels_at_the_warm_up_scale() -> None:
    model = randomize_bn_(ResNet8((1, 28, 28))).eval()
    x = torch.rand(8, 1, 28, 28)
    space = zb.SearchSpace(weight_bits=(0, 4, 8), act_bits=(8,))
    sampling = zb.Sampling(initial_temperature=1.0, final_temperature=0.05)
    kept = zb.convert(model, x, space, sampling=sampling, compensate_weights="off")
    initial = zb.convert(model, x, space, sampling=sampling)
    annealed = zb.convert(model, x, space, sampling=sampling, compensate_weights="annealed")

    def keep(temperature: float) -> float:  # 1 - p(0 bits) under the logits (0, 1/2, 1) / T
        return 1 - 1 / (1 + math.exp(0.5 / temperature) + math.exp(1.0 / temperature))

    for progress in (0.0, 0.3, 0.7, 1.0):
        annealed.set_progress(progress)
        initial.set_progress(progress)
        temperature = 0.05**progress
        for name, layer in kept.layers().items():
            factor = 1.0 if name == "classifier" else keep(temperature)
            other = annealed.layers()[name]
            assert torch.allclose(other.weight * factor, layer.weight, rtol=1e-5), name
            assert torch.allclose(other.bias * factor, layer.bias, rtol=1e-5, atol=1e-7), name
            # the paper's compensation stays at the initial temperature's
            fixed = initial.layers()[name].weight * (1.0 if name == "classifier" else keep(1.0))
            assert torch.allclose(fixed, layer.weight, rtol=1e-5), name
    # a channel whose logits sit at their initial values computes at the warm-up scale
    annealed.set_progress(0.5)
    annealed.train()
    annealed(x)
    for name, layer in annealed.layers().items():
        zero = layer.selector.zero_index
        if zero is not None:
            probs = layer.selector.probs
            assert torch.allclose((1 - probs[zero]) * layer.weight[:, 0, 0, 0],
                                  kept.layers()[name].weight[:, 0, 0, 0], rtol=1e-5)  # fmt: skip


def test_annealed_compensation_resumes_from_a_checkpoint_and_spares_pinned_groups() -> None:
    model = randomize_bn_(ResNet8((1, 16, 16))).eval()
    x = torch.rand(4, 1, 16, 16)
    space = zb.SearchSpace(weight_bits=(0, 4, 8), act_bits=(8,))
    first = zb.convert(model, x, space, compensate_weights="annealed")
    first.set_progress(0.4)
    second = zb.convert(model, x, space, compensate_weights="annealed")
    second.load_state_dict(first.state_dict())
    first.set_progress(0.9)
    second.set_progress(0.9)
    for name, layer in first.layers().items():
        assert torch.equal(layer.weight, second.layers()[name].weight), name
    # the sequential flow's second stage: pruning fixed, nothing left to compensate
    pinned = zb.convert(model, x, space, compensate_weights="annealed")
    before = {n: layer.weight.clone() for n, layer in pinned.layers().items()}
    for selector in pinned.selectors:
        selector.pinned_pruning = torch.ones(selector.channels, dtype=torch.bool)
    pinned.set_progress(0.9)
    assert all(torch.equal(before[n], layer.weight) for n, layer in pinned.layers().items())


def test_tracking_compensation_divides_by_the_expected_kept_fraction() -> None:
    model = randomize_bn_(DSCNN((1, 49, 10), num_classes=12)).eval()
    x = torch.randn(4, 1, 49, 10)
    space = zb.SearchSpace(weight_bits=(0, 4, 8), act_bits=(8,))
    kept = zb.convert(model, x, space, compensate_weights="off")
    tracking = zb.convert(model, x, space, compensate_weights="tracking")
    initial = 1 - 1 / (1 + math.exp(0.5) + math.exp(1.0))  # keep probability at T = 1
    torch.manual_seed(0)
    with torch.no_grad():  # half the groups lean to keeping every channel, half to pruning
        for g, selector in enumerate(tracking.selectors):
            if selector.zero_index is not None:
                selector.parameter[0].fill_(-3.0 if g % 2 else 2.0)
                selector.parameter[0, : selector.channels // 3] = 0.0
    tracking.set_progress(0.5)
    tracking.train()
    for _ in range(2):  # the second step finds the divisors already in place
        tracking(x)
    temperature = float(tracking.temperature)
    expected = {}
    for g, selector in enumerate(tracking.selectors):
        if selector.zero_index is None:
            expected[g] = 1.0
            continue
        column = selector.parameter.detach().double() / temperature
        fraction = float(1 - torch.softmax(column, dim=0)[0].mean())
        expected[g] = max(initial, fraction)
    assert any(v == initial for v in expected.values()) and any(
        initial < v < 1 for v in expected.values()
    )
    for info in tracking.analysis.layers.values():
        layer = tracking.layers()[info.name]
        reference = kept.layers()[info.name]
        assert torch.allclose(layer.weight * expected[info.group], reference.weight, rtol=1e-5)
        assert torch.allclose(
            layer.bias * expected[info.group], reference.bias, rtol=1e-5, atol=1e-7
        )
    # evaluation does not move them, and the divisors are saved with the model
    before = [layer.weight.clone() for layer in tracking.layers().values()]
    tracking.eval()(x)
    assert all(torch.equal(a, b.weight) for a, b in zip(before, tracking.layers().values()))
    restored = zb.convert(model, x, space, compensate_weights="tracking")
    restored.load_state_dict(tracking.state_dict())
    restored.train()(x)
    assert all(torch.equal(a, b.weight) for a, b in zip(before, restored.layers().values()))


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_unknown_weight_compensation_is_refused(value: object) -> None:
    model = ResNet8((1, 16, 16)).eval()
    with pytest.raises(ValueError, match="weight compensation must be one of"):
        zb.convert(model, torch.rand(2, 1, 16, 16), compensate_weights=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight compensation must be one of"):
        RunConfig(weight_compensation=value)  # type: ignore[arg-type]


def test_integer_temperatures_anneal_along_the_schedule() -> None:
    # Temperatures written as ints (5, as a JSON config gives them) must not truncate.
    sampling = zb.Sampling(initial_temperature=5, final_temperature=1)
    smodel = converted(ResNet8((1, 16, 16)), (1, 16, 16), sampling=sampling)
    for progress in (0.0, 0.5, 0.99):
        smodel.set_progress(progress)
        assert float(smodel.temperature) == pytest.approx(5 * 0.2**progress, rel=1e-6)
    smodel.train()
    smodel(torch.rand(2, 1, 16, 16))
    assert all(torch.isfinite(s.probs).all() for s in smodel.selectors)


def test_sample_is_shared_by_the_forward_and_the_cost_with_gumbel_noise() -> None:
    smodel = converted(ResNet8((1, 16, 16)), (1, 16, 16), sampling=zb.Sampling(gumbel=True))
    smodel.train()
    smodel(torch.rand(2, 1, 16, 16))
    forward_probs = [s.probs.detach().clone() for s in smodel.selectors]
    specs = smodel.layer_specs()
    for info, spec in zip(smodel.analysis.layers.values(), specs):
        expected = forward_probs[info.group].sum(dim=1)
        assert torch.allclose(torch.stack(list(spec.channels)), expected, atol=1e-6)
    smodel(torch.rand(2, 1, 16, 16))  # a new step draws a new sample
    assert any(not torch.equal(a, s.probs) for a, s in zip(forward_probs, smodel.selectors))


def test_keep_alive_keeps_one_channel_per_group() -> None:
    smodel = converted(ResNet8((1, 16, 16)), (1, 16, 16))
    with torch.no_grad():
        for s in smodel.selectors:
            if 0 in s.bits:
                s.logits.fill_(-5.0)
                s.logits[s.bits.index(0)] = 5.0
                s.logits[s.bits.index(4), 3] = 4.9  # the channel closest to being kept
    arch = smodel.architecture()
    for group, bits in zip(group_names(smodel), smodel.group_bits):
        if 0 in bits:
            chosen = arch[next(iter(group))]["weight_bits"]
            assert chosen == [0, 0, 0, 4] + [0] * (len(chosen) - 4)
    frozen = smodel.freeze()
    assert torch.isfinite(frozen.eval()(torch.rand(2, 1, 16, 16))).all()


# ---------------------------------------------------------------------------------- gradients
def test_gradients_reach_every_architecture_parameter_and_weight() -> None:
    smodel = converted(ResNet8((1, 16, 16)), (1, 16, 16)).train()
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 10, (8,))
    loss = nn.functional.cross_entropy(smodel(x), y) + smodel.cost()
    loss.backward()
    for p in smodel.arch_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    for group in smodel.weight_parameter_groups():
        for p in group["params"]:
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_pruned_channel_outputs_zero_and_shrinks_consumer_inputs() -> None:
    smodel = converted(ResNet8((1, 16, 16)), (1, 16, 16)).eval()
    arch = smodel.architecture()
    arch["stack1.conv1"]["weight_bits"][:5] = [0] * 5
    smodel.load_architecture_(arch)
    captured: dict[str, torch.Tensor] = {}
    layer = smodel.layers()["stack1.conv1"]
    layer.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    smodel(torch.rand(4, 1, 16, 16))
    assert torch.count_nonzero(captured["out"][:, :5]) == 0
    spec = {s.name: s for s in smodel.layer_specs()}["stack1.conv2"]
    assert spec.in_channels == 16 - 5


# ---------------------------------------------------------------------- costs vs real tensors
def _independent_counts(frozen: zb.FrozenModel, x: torch.Tensor) -> dict[str, dict]:
    """Per layer: kept output channels and their bits, kept input channels, kernel, output size,
    input bits -- all read from the frozen model's tensors while it runs, not from its specs."""
    frozen.eval()
    with torch.no_grad():  # non-negative inputs, weights and large biases: kept channels saturate
        for layer in frozen.layers().values():
            layer.weight.abs_()
            layer.bias.fill_(100.0)
    records: dict[str, dict] = {}
    handles = []
    for name, layer in frozen.layers().items():

        def hook(module, inputs, output, name=name):
            x_in = inputs[0]
            nonzero = (
                (x_in != 0).flatten(2).any(-1).any(0) if x_in.dim() > 2 else (x_in != 0).any(0)
            )
            bits = [b for b in module.bits.tolist() if b > 0]
            records[name] = dict(
                bits=bits,
                kept_in=int(nonzero.sum()),
                kernel=math.prod(module.weight.shape[2:]),
                out_size=math.prod(output.shape[2:]),
                depthwise=module.kind == "depthwise",
                in_bits=module.input_quantizer.bits,
            )

        handles.append(layer.register_forward_hook(hook))
    frozen(x)
    for h in handles:
        h.remove()
    return records


def _oracle(records: dict[str, dict], name: str) -> float:
    total = 0.0
    for r in records.values():
        fan_in = 1 if r["depthwise"] else r["kept_in"]
        for b in r["bits"]:
            macs = fan_in * r["kernel"] * r["out_size"]
            total += {
                "size": b * fan_in * r["kernel"],
                "macs": macs,
                "bitops": macs * b * r["in_bits"],
                "mpic": macs / MPIC_THROUGHPUT[(r["in_bits"], b)],
            }[name]
    return total


@pytest.mark.parametrize(
    "factory,shape",
    [
        (lambda: ResNet8((3, 32, 32)), (3, 32, 32)),
        (DSCNN, (1, 49, 10)),
        (ConcatNet, (1, 8, 8)),
        (FlattenNet, (1, 5, 5)),
    ],
)
def test_costs_of_random_architectures_equal_counts_from_real_tensors(factory, shape) -> None:
    smodel = converted(factory(), shape)
    for trial in range(3):
        randomize_logits_(smodel, scale=1.5)
        frozen = smodel.eval().freeze()
        records = _independent_counts(frozen, torch.rand(2, *shape))
        for name in ("size", "macs", "bitops", "mpic"):
            expected = _oracle(records, name)
            assert zb.cost.evaluate(frozen, name) == pytest.approx(expected, rel=1e-9), (
                trial,
                name,
            )
            smodel_cost = smodel.eval().costs()[name] if name == "size" else None
            if smodel_cost is not None:
                assert float(smodel_cost) == pytest.approx(expected, rel=1e-6)


def test_resnet8_all_8bit_costs_equal_the_spec_test_vectors() -> None:
    smodel = converted(ResNet8((3, 32, 32)), (3, 32, 32), zb.SearchSpace((0, 2, 4, 8), (8,)))
    arch = smodel.architecture()
    for entry in arch.values():
        if "weight_bits" in entry:
            entry["weight_bits"] = [8] * len(entry["weight_bits"])
    smodel.load_architecture_(arch)
    frozen = smodel.freeze()
    assert zb.cost.evaluate(frozen, "size") == 618_880
    assert zb.cost.evaluate(frozen, "macs") == 12_501_632
    assert round(zb.cost.evaluate(frozen, "mpic")) == 5_953_158
    assert zb.cost.evaluate(frozen, "ne16") == 155_241
    assert smodel.cost_references["size"] == 618_880


def test_normalized_cost_is_one_for_the_all_8bit_architecture() -> None:
    smodel = converted(ResNet8((1, 16, 16)), (1, 16, 16), cost=["size", "mpic"])
    arch = smodel.architecture()
    for entry in arch.values():
        if "weight_bits" in entry:
            entry["weight_bits"] = [8] * len(entry["weight_bits"])
        if entry.get("act_bits") is not None:
            entry["act_bits"] = 8
    smodel.load_architecture_(arch)
    assert float(smodel.eval().cost()) == pytest.approx(2.0)


@pytest.mark.parametrize("detach", [None, False])
def test_size_cost_prices_a_pruned_channel_in_its_consumer_only_when_attached(detach) -> None:
    chain = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(80, 3)
    )
    smodel = converted(chain, (1, 8, 8), detach_input_channels=detach).train()
    randomize_logits_(smodel)
    infos = {i.name: i for i in smodel.analysis.layers.values()}
    first, second = (smodel.selectors[infos[n].group] for n in ("0", "2"))
    smodel.costs()["size"].backward()
    # The same cost from the probabilities: 9 weights per input channel of each conv, the
    # second conv's input channels the expected kept channels of the first.
    temperature = float(smodel.temperature)
    logits = first.parameter.detach().clone().requires_grad_(True)
    probs = torch.softmax(logits / temperature, dim=0)
    second_probs = torch.softmax(second.parameter.detach() / temperature, dim=0)
    bits = torch.tensor(first.bits, dtype=probs.dtype)[:, None]
    kept = (1 - probs[first.zero_index]).sum()
    if detach is None:  # the paper's size cost: the consumer's input channels are detached
        kept = kept.detach()
    second_bits = (second_probs * torch.tensor(second.bits, dtype=probs.dtype)[:, None]).sum()
    (9 * (probs * bits).sum() + 9 * kept * second_bits).backward()
    assert logits.grad is not None
    torch.testing.assert_close(first.parameter.grad, logits.grad)


# ------------------------------------------------------------------------ plain QAT and freeze
def test_single_choice_space_is_plain_quantization_aware_training() -> None:
    space = zb.SearchSpace(weight_bits=(8,), act_bits=(8,))
    smodel = converted(ResNet8((1, 16, 16)), (1, 16, 16), space).train()
    assert list(smodel.arch_parameters()) == []
    x = torch.rand(4, 1, 16, 16)
    searched = smodel(x)
    assert all(torch.equal(s.probs, torch.ones_like(s.probs)) for s in smodel.selectors)
    assert float(smodel.cost()) == pytest.approx(1.0)
    assert not smodel.cost().requires_grad
    frozen = smodel.freeze().train()
    inputs: dict[str, list[torch.Tensor]] = {}
    for model in (smodel, frozen):
        for name, layer in model.layers().items():
            layer.register_forward_hook(
                lambda m, i, o, name=name: inputs.setdefault(name, []).append(i[0])
            )
    smodel(x), frozen(x)
    for name, (a, b) in inputs.items():
        if name != "classifier":  # the average pool rounds ties up in the integer model
            assert torch.equal(a, b), name
    assert torch.allclose(searched, frozen(x), atol=0.05)


def test_mse_weight_range_is_what_the_frozen_and_exported_models_compute() -> None:
    from zerobit.export import run_reference, to_ir
    from zerobit.quant import mixed_weight_quant, quantize_weight_per_channel

    space = zb.SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(2, 4, 8), weight_range="mse")
    smodel = converted(ResNet8((1, 16, 16)), (1, 16, 16), space)
    randomize_logits_(smodel)
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        smodel.eval()(x)  # one-hot (argmax) probabilities
    frozen = smodel.freeze().eval()
    clipped = 0
    for name, layer in frozen.layers().items():
        searched = smodel.layers()[name]
        selector = searched.selector
        # the weights the argmax search layer computes with are the frozen layer's integers
        weight = mixed_weight_quant(searched.weight, selector.probs, selector.bits, "mse")
        params = layer.integer_layer()
        scale = params.weight_scale.reshape(-1, *[1] * (weight.dim() - 1))
        assert torch.equal(weight, params.weight_codes.float() * scale), name
        codes, scale = quantize_weight_per_channel(layer.weight, layer.bits, "mse")
        assert torch.equal(params.weight_codes, codes) and torch.equal(params.weight_scale, scale)
        minmax = quantize_weight_per_channel(layer.weight, layer.bits)[1]
        clipped += int((scale < minmax).sum())
    assert clipped > 0  # the rule reached the frozen model: some ranges are clipped
    assert torch.equal(run_reference(to_ir(frozen), x), frozen(x))


def test_freeze_equals_freeze_from_architecture() -> None:
    model = randomize_bn_(ResNet8((1, 16, 16)))
    x = torch.rand(4, 1, 16, 16)
    smodel = zb.convert(model, x, SPACE)
    randomize_logits_(smodel)
    arch = smodel.architecture()
    first = smodel.eval().freeze().eval()
    second = zb.freeze(model, arch, SPACE, x).eval()
    probe = torch.rand(6, 1, 16, 16)
    assert torch.equal(first(probe), second(probe))
    assert second.architecture() == arch


def test_frozen_eval_outputs_lie_on_the_integer_grid() -> None:
    smodel = converted(ResNet8((1, 16, 16)), (1, 16, 16))
    randomize_logits_(smodel)
    frozen = smodel.eval().freeze().eval()
    outputs: dict[str, torch.Tensor] = {}
    for name, layer in frozen.layers().items():
        layer.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
    frozen(torch.rand(4, 1, 16, 16))
    for name, layer in frozen.layers().items():
        q = layer.output_quantizer
        if q is None:
            continue
        codes = (outputs[name] / q.scale()).round()
        assert torch.equal(codes * q.scale(), outputs[name]), name
        lo, hi = zb.quant.act_range(q.bits, q.signed)
        assert codes.min() >= lo and codes.max() <= hi


def test_float32_accumulation_shortcut_equals_float64() -> None:
    smodel = converted(DSCNN(), (1, 49, 10))
    randomize_logits_(smodel)
    frozen = smodel.eval().freeze().eval()
    x = torch.rand(16, 1, 49, 10)
    fast = frozen(x)
    for layer in frozen.layers().values():
        layer.force_float64 = True
    assert torch.equal(fast, frozen(x))


def test_frozen_training_forward_sees_the_integer_models_activations() -> None:
    smodel = converted(ResNet8((1, 16, 16)), (1, 16, 16))
    randomize_logits_(smodel)
    frozen = smodel.eval().freeze()
    inputs: dict[str, list[torch.Tensor]] = {}
    for name, layer in frozen.layers().items():
        layer.register_forward_hook(
            lambda m, i, o, name=name: inputs.setdefault(name, []).append(i[0])
        )
    x = torch.rand(8, 1, 16, 16)
    with torch.no_grad():
        frozen.eval()(x)
        frozen.train()(x)
    for name, (exact, fake) in inputs.items():
        # fake quantization rounds in float where the integer model requantizes: rare ties differ
        assert (exact == fake).float().mean() > 0.99, name


def test_mobilenet_converts_and_freezes() -> None:
    smodel = converted(MobileNetV1((3, 32, 32), 2), (3, 32, 32))
    randomize_logits_(smodel)
    frozen = smodel.eval().freeze().eval()
    assert frozen(torch.rand(2, 3, 32, 32)).shape == (2, 2)


# --------------------------------------------------------------------------------- bad input
class _ControlFlow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.conv(x)
        return x


class _WithLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.lstm = nn.LSTM(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(self.fc(x))[0]


class _WithSigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.gate = nn.Sigmoid()
        self.conv2 = nn.Conv2d(4, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.gate(self.conv1(x)))


def test_untraceable_control_flow_is_reported() -> None:
    with pytest.raises(ValueError, match="cannot trace _ControlFlow"):
        zb.convert(_ControlFlow(), torch.rand(1, 1, 5, 5))


def test_unsupported_layer_is_named() -> None:
    with pytest.raises(ValueError, match=r"module 'lstm' \(LSTM\) is not supported"):
        zb.convert(_WithLSTM(), torch.rand(3, 4))


def test_allow_float_keeps_unsupported_ops_and_blocks_pruning_around_them() -> None:
    with pytest.warns(UserWarning, match="kept in float"):
        smodel = zb.convert(_WithSigmoid(), torch.rand(2, 1, 7, 7), SPACE, allow_float=True)
    conv1 = next(i for i in smodel.analysis.layers.values() if i.name == "conv1")
    assert 0 not in smodel.group_bits[conv1.group]
    assert smodel.eval().freeze().eval()(torch.rand(1, 1, 7, 7)).shape == (1, 2, 3, 3)


def test_wrong_example_input_shape_is_reported() -> None:
    with pytest.raises(ValueError, match=r"example input of shape \(1, 3, 16, 16\) does not fit"):
        zb.convert(ResNet8((1, 16, 16)), torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(weight_bits=()), "weight_bits is empty"),
        (dict(weight_bits=(2, 2, 8)), "repeats"),
        (dict(weight_bits=(-2, 8)), "negative"),
        (dict(act_bits=(1, 8)), "not supported"),
        (dict(weight_bits=(0,)), "prune every channel"),
        (dict(overrides={"x": {"bits": 3}}), "unknown keys"),
        (dict(weight_range="percentile"), "weight_range must be one of"),
    ],
)
def test_bad_spaces_are_rejected(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        zb.SearchSpace(**kwargs)


def test_space_round_trips_its_weight_range_and_old_dicts_take_the_paper_rule() -> None:
    space = zb.SearchSpace((0, 2, 8), (8,), weight_range="mse")
    assert zb.SearchSpace.from_dict(space.to_dict()) == space
    old = {k: v for k, v in space.to_dict().items() if k != "weight_range"}
    assert zb.SearchSpace.from_dict(old).weight_range == "minmax"


def test_space_incompatible_with_cost_lists_allowed_bits() -> None:
    with pytest.raises(ValueError, match=r"mpic cost defines weights in \(0, 2, 4, 8\)"):
        zb.convert(
            ResNet8((1, 16, 16)), torch.rand(1, 1, 16, 16), zb.SearchSpace((0, 3, 8)), cost="mpic"
        )
    with pytest.raises(ValueError, match="ne16 cost needs 8-bit activations"):
        zb.convert(ResNet8((1, 16, 16)), torch.rand(1, 1, 16, 16), SPACE, cost="ne16")


def test_override_of_unknown_layer_is_rejected() -> None:
    with pytest.raises(ValueError, match="overrides name unknown layers"):
        zb.convert(
            ResNet8((1, 16, 16)),
            torch.rand(1, 1, 16, 16),
            zb.SearchSpace(overrides={"stm": {"prunable": False}}),
        )


def test_overrides_pin_bits_of_the_whole_coupling_group() -> None:
    space = zb.SearchSpace(
        overrides={"stem": dict(weight_bits=(8,)), "stack2.conv1": dict(prunable=False)}
    )
    smodel = converted(ResNet8((1, 16, 16)), (1, 16, 16), space)
    randomize_logits_(smodel)
    arch = smodel.architecture()
    assert set(arch["stem"]["weight_bits"]) == {8} and set(arch["stack1.conv2"]["weight_bits"]) == {
        8
    }
    assert 0 not in arch["stack2.conv1"]["weight_bits"]


def test_architecture_that_does_not_fit_is_rejected() -> None:
    model, x = ResNet8((1, 16, 16)), torch.rand(1, 1, 16, 16)
    arch = zb.convert(model, x, SPACE).architecture()
    arch["stack1.conv1"]["weight_bits"] = [3] * 16
    with pytest.raises(ValueError, match="must list 16 values"):
        zb.freeze(model, arch, SPACE, x)

# SPDX-License-Identifier: Apache-2.0
# Budget mode: target parsing, the smallest reachable cost, the greedy fit and a run that meets it.
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import zerobit as zb
from zerobit.export.c import export_c
from zerobit.models import ResNet8
from zerobit.train.budget import (
    StrengthController,
    discrete_cost,
    fit_budget_,
    minimum_cost,
    parse_target,
)
from zerobit.train.loop import PhaseConfig
from zerobit.train.run import DEFAULT_BUDGET_DAMPING, Run, RunConfig


@pytest.mark.parametrize(
    "text,cost,value",
    [
        ("size=20kB", "size", 20_000 * 8),
        ("size=18KiB", "size", 18 * 1024 * 8),
        ("size = 4096", "size", 4096 * 8),
        ("size=1.5MB", "size", 1_500_000 * 8),
        ("mpic=2e6", "mpic", 2e6),
        ("ne16=150000", "ne16", 150_000),
        ("flash=32kB", "flash", 32_000),
        ("flash=32KiB", "flash", 32 * 1024),
        ("ram=4096", "ram", 4096),
        ("ram=8 kB", "ram", 8000),
    ],
)
def test_targets_parse_to_the_cost_models_units(text: str, cost: str, value: float) -> None:
    target = parse_target(text)
    assert (target.cost, target.value) == (cost, pytest.approx(value))


@pytest.mark.parametrize(
    "text,message",
    [
        ("size=20kb!", "must look like"),
        ("speed=3", "unknown"),
        ("size=20GB", "unit"),
        ("size=20b", "write B"),
        ("mpic=2M", "plain number"),
        ("size=0", "positive"),
        ("ram=8kb!", "must look like"),
        ("flash=2b", "write B"),
        ("ram=2GB", "unit"),
    ],
)
def test_bad_targets_are_explained(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_target(text)


def _smodel() -> zb.SearchModel:
    return zb.convert(
        ResNet8((1, 16, 16)), torch.rand(8, 1, 16, 16), zb.SearchSpace((0, 2, 4, 8), (2, 4, 8))
    )


def test_minimum_cost_is_one_channel_per_group_at_the_lowest_bits() -> None:
    smodel = _smodel()
    arch = smodel.architecture()
    for name, entry in arch.items():
        if "weight_bits" in entry:
            n = len(entry["weight_bits"])
            prunable = (
                0
                in smodel.group_bits[
                    next(i.group for i in smodel.analysis.layers.values() if i.name == name)
                ]
            )
            entry["weight_bits"] = ([2] + [0] * (n - 1)) if prunable else [2] * n
        if entry.get("act_bits") is not None and not name.startswith("input:"):
            entry["act_bits"] = 2
    smodel.load_architecture_(arch)
    frozen = smodel.eval().freeze()
    for cost in ("size", "macs", "mpic", "flash", "ram"):
        assert minimum_cost(smodel, cost) == pytest.approx(zb.cost.evaluate(frozen, cost))


def test_expected_cost_of_any_cost_model_equals_the_frozen_models_in_eval() -> None:
    smodel = _smodel()  # converted with the size cost only
    with torch.no_grad():
        for p in smodel.arch_parameters():
            p.add_(torch.randn_like(p))
    smodel.eval()
    frozen = smodel.freeze()
    for cost in ("size", "macs", "mpic", "flash", "ram"):
        assert smodel.expected_cost(cost) == pytest.approx(zb.cost.evaluate(frozen, cost))
    smodel.train()  # soft: the search's own expected cost, between the discrete extremes
    soft = float(smodel.costs(raw=True)["size"].detach())
    assert smodel.expected_cost("size") == pytest.approx(soft)


def test_expected_signal_steers_the_strength_by_the_expected_cost() -> None:
    smodel = _smodel()
    smodel.train()
    expected = smodel.expected_cost("size")
    argmax = discrete_cost(smodel, "size")
    assert argmax > 1.2 * expected  # the initial logits favour 8 bits: argmax = all-8-bit
    target = parse_target(f"size={(expected * argmax) ** 0.5 / 8:.0f}B")  # between the two
    moves = {}
    for signal in ("argmax", "expected"):
        controller = StrengthController(target, 1.0, rate=0.1, signal=signal)
        controller.update(smodel)
        moves[signal] = controller.log_strength
    assert moves["argmax"] == pytest.approx(0.1 * math.log(argmax / target.value))
    assert moves["expected"] == pytest.approx(0.1 * math.log(expected / target.value))
    assert moves["argmax"] > 0 > moves["expected"]  # over budget by one, under by the other
    with pytest.raises(ValueError, match="budget signal"):
        StrengthController(target, 1.0, signal="mean")


def _shift_towards_pruning_(smodel: zb.SearchModel, amount: float) -> None:
    """Move every selector's logits towards 0 bits (its expected cost falls)."""
    with torch.no_grad():
        for s in smodel.selectors:
            logits = s.logits.detach().clone()
            if s.zero_index is not None:
                logits[s.zero_index] += amount
                s.set_logits_(logits)


def test_damping_compares_the_budget_with_the_falling_cost_extrapolated_ahead() -> None:
    smodel = _smodel()
    smodel.train()
    target = parse_target(f"size={discrete_cost(smodel, 'size') / 8 / 4:.0f}B")
    damped = StrengthController(target, 1.0, rate=0.1, damping=5.0, window=3)
    plain = StrengthController(target, 1.0, rate=0.1)
    shifts = [0.0, 0.5, 0.5, 1.0, 0.0, -2.0, 0.0]  # falls, stalls, then rises
    expected_costs: list[float] = []
    for shift in shifts:
        _shift_towards_pruning_(smodel, shift)
        expected_costs.append(smodel.expected_cost("size"))
        argmax = discrete_cost(smodel, "size")
        before, before_plain = damped.log_strength, plain.log_strength
        damped.update(smodel)
        plain.update(smodel)
        # Independently: the slope of the log expected cost over the last 3 steps, only if < 0.
        logs = [math.log(c) for c in expected_costs[-3:]]
        slope = (logs[-1] - logs[0]) / (len(logs) - 1) if len(logs) > 1 else 0.0
        error = math.log(argmax / target.value) + 5.0 * min(slope, 0.0)
        assert damped.log_strength - before == pytest.approx(0.1 * error)
        assert plain.log_strength - before_plain == pytest.approx(
            0.1 * math.log(argmax / target.value)
        )
    assert expected_costs[3] < expected_costs[2] < expected_costs[1] < expected_costs[0]
    assert expected_costs[5] > expected_costs[4]  # the rise at the end added nothing (above)
    assert damped.log_strength < plain.log_strength  # the fall held the strength back


def test_damped_controller_resumes_its_trend_and_reads_older_checkpoints() -> None:
    smodel = _smodel()
    smodel.train()
    target = parse_target(f"size={discrete_cost(smodel, 'size') / 8 / 4:.0f}B")
    first = StrengthController(target, 1.0, damping=10.0)
    for _ in range(3):
        _shift_towards_pruning_(smodel, 0.4)
        first.update(smodel)
    state = first.state_dict()
    resumed = StrengthController(target, 1.0, damping=10.0)
    resumed.load_state_dict(state)
    _shift_towards_pruning_(smodel, 0.4)
    assert resumed.update(smodel) == first.update(smodel)
    assert resumed.trend == first.trend and len(first.trend) == 4
    older = StrengthController(target, 1.0, damping=10.0)
    older.load_state_dict({"log_strength": state["log_strength"]})  # written before damping
    assert older.trend == [] and older.log_strength == float(state["log_strength"])
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="damping"):
            StrengthController(target, 1.0, damping=bad)
        with pytest.raises(ValueError, match="budget_damping"):
            RunConfig(budget_damping=bad)
    for bad in (0.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="budget_rate"):
            RunConfig(budget_rate=bad)
    with pytest.raises(ValueError, match="window"):
        StrengthController(target, 1.0, damping=1.0, window=1)


def test_default_damping_is_20_steps_and_off_for_ne16_targets() -> None:
    assert RunConfig().budget_damping is None
    for target in (None, "size=4kB", "flash=32KiB", "bitops=1e6", "mpic=2e6"):
        assert RunConfig(target=target).controller_damping() == DEFAULT_BUDGET_DAMPING == 20.0
    assert RunConfig(target="ne16=1e5", act_bits=(8,)).controller_damping() == 0.0
    # A value the user gives is taken as given, for NE16 too.
    assert RunConfig(target="ne16=1e5", budget_damping=5).controller_damping() == 5.0
    assert RunConfig(target="size=4kB", budget_damping=0).controller_damping() == 0.0
    # A configuration written before the key ran undamped, and still reads so.
    stored = RunConfig(target="size=4kB").to_dict()
    del stored["budget_damping"]
    assert RunConfig.from_dict(stored).controller_damping() == 0.0


def test_damping_keeps_a_small_budget_from_collapsing(tmp_path: Path) -> None:
    # A short search (123 steps) under a small budget: undamped, the strength overshoots and
    # the search ends at a fraction of the budget with a near-chance model; damped, it ends
    # over the budget, the greedy step trims it, and the model works.
    results = {}
    for damping in (0.0, 20.0):
        config = RunConfig(
            dataset="digits",
            model="mlp",
            act_bits=(8,),
            target="size=600B",
            budget_damping=damping,
            warmup=PhaseConfig(3, batch_size=32),
            search=PhaseConfig(3, batch_size=32),
            finetune=PhaseConfig(1, batch_size=32),
        )
        results[damping] = Run(config, tmp_path / f"damping-{damping:g}").run()
    undamped, damped = results[0.0], results[20.0]
    assert undamped["budget"]["cost_after_search"] < 0.25 * undamped["budget"]["value"]
    assert damped["budget"]["met"] and damped["costs"]["size_bytes"] <= 600
    assert damped["costs"]["size_bytes"] > 2 * undamped["costs"]["size_bytes"]
    assert damped["val_accuracy"] > undamped["val_accuracy"] + 0.3


def test_greedy_fit_meets_the_budget_with_lower_bits_only() -> None:
    smodel = _smodel()
    with torch.no_grad():
        for p in smodel.arch_parameters():
            p.add_(torch.randn_like(p))
    before = smodel.architecture()
    target = parse_target(f"size={0.6 * discrete_cost(smodel, 'size') / 8:.0f}B")
    moves = fit_budget_(smodel, target)
    assert moves > 0
    assert discrete_cost(smodel, "size") <= target.value
    assert zb.cost.evaluate(smodel.eval().freeze(), "size") == discrete_cost(smodel, "size")
    after = smodel.architecture()
    for name in before:
        if "weight_bits" in before[name]:
            assert all(
                a <= b for a, b in zip(after[name]["weight_bits"], before[name]["weight_bits"])
            )


def test_greedy_fit_meets_a_ram_budget_by_pruning_only(tmp_path: Path) -> None:
    smodel = _smodel()
    with torch.no_grad():
        for p in smodel.arch_parameters():
            p.add_(torch.randn_like(p))
    before = smodel.architecture()
    target = parse_target(f"ram={0.7 * discrete_cost(smodel, 'ram'):.0f}B")
    assert fit_budget_(smodel, target) > 0
    frozen = smodel.eval().freeze()
    ram = export_c(frozen, tmp_path).arena_bytes
    assert ram == discrete_cost(smodel, "ram") <= target.value
    after = smodel.architecture()
    for name in before:  # activations take a byte per code whatever their bits: only pruning
        assert after[name]["act_bits"] == before[name]["act_bits"]
        if "weight_bits" in before[name]:
            pairs = zip(after[name]["weight_bits"], before[name]["weight_bits"])
            assert all(a in (b, 0) for a, b in pairs)


def test_run_meets_a_flash_budget(tmp_path: Path) -> None:
    config = RunConfig(
        dataset="digits",
        subset=128,
        model="mlp",
        act_bits=(8,),
        cost="flash",
        strength=3.0,
        target="flash=24kB",
        warmup=PhaseConfig(1, batch_size=64),
        search=PhaseConfig(2, batch_size=64),
        finetune=PhaseConfig(0, batch_size=64),
    )
    run = Run(config, tmp_path / "run")
    result = run.run()
    written = zb.export(run.load_frozen(), None, "packed", tmp_path / "export")
    assert result["budget"]["met"] and result["budget"]["cost_final"] <= 24_000
    assert result["costs"]["flash_bytes"] == result["budget"]["cost_final"]
    assert written.stat().st_size == result["costs"]["flash_bytes"]
    assert result["costs_all_8bit"]["flash_bytes"] > 24_000


@pytest.mark.parametrize(
    "signal,damping,rate", [("argmax", 0.0, 0.05), ("expected", 0.0, 0.05), ("argmax", None, 0.1)]
)
def test_run_meets_its_budget_and_refuses_an_impossible_one(
    tmp_path: Path, signal: str, damping: float | None, rate: float
) -> None:
    base = dict(
        dataset="digits",
        subset=128,
        model="resnet8",
        act_bits=(8,),
        warmup=PhaseConfig(1, batch_size=64),
        search=PhaseConfig(2, batch_size=64),
        finetune=PhaseConfig(0, batch_size=64),
    )
    config = RunConfig(
        **base, target="size=4kB", budget_signal=signal, budget_damping=damping, budget_rate=rate
    )
    run = Run(config, tmp_path / "fits")
    result = run.run()
    assert run._extra["controller"].signal == signal
    assert run._extra["controller"].damping == (20.0 if damping is None else damping)
    assert run._extra["controller"].rate == rate
    assert result["budget"]["met"] and result["costs"]["size_bytes"] <= 4000
    assert result["budget"]["cost_final"] == result["costs"]["size_bits"]
    # Each search epoch logs the argmax architecture's cost in the target's unit: after the last,
    # that is the cost the greedy step started from.
    lines = [json.loads(line) for line in (tmp_path / "fits" / "metrics.jsonl").open()]
    last = [line for line in lines if line["phase"] == "search"][-1]
    assert last["argmax_cost"] == result["budget"]["cost_after_search"]
    assert "strength" in last
    with pytest.raises(ValueError, match=r"below the smallest model this space allows \(\d+ bytes"):
        Run(RunConfig(**base, target="size=10B"), tmp_path / "too-small").run()

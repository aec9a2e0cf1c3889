# SPDX-License-Identifier: Apache-2.0
# Sweeps: the budget ladder, one shared warm-up, points that land where asked, a report.
from __future__ import annotations

import json
from pathlib import Path

import pytest

from zerobit.train.loop import PhaseConfig
from zerobit.train.run import RunConfig
from zerobit.train.sweep import budget_ladder, sweep

TINY = RunConfig(
    dataset="digits",
    subset=128,
    model="resnet8",
    act_bits=(8,),
    warmup=PhaseConfig(1, batch_size=64),
    search=PhaseConfig(1, batch_size=64),
    finetune=PhaseConfig(0, batch_size=64),
)


def test_budget_ladder_is_geometric_between_its_ends() -> None:
    ladder = budget_ladder(1000.0, 10.0, 4)
    assert ladder[0] == pytest.approx(900.0) and ladder[-1] == pytest.approx(15.0)
    ratios = [b / a for a, b in zip(ladder, ladder[1:])]
    assert ratios == pytest.approx([ratios[0]] * 3)
    assert budget_ladder(100.0, 90.0, 3) == [pytest.approx(90.0)]
    with pytest.raises(ValueError):
        budget_ladder(1.0, 0.1, 0)


def test_sweep_shares_one_warm_up_and_spans_the_front(tmp_path: Path) -> None:
    base = TINY
    summary = sweep(base, tmp_path, points=2)
    results = summary["results"]
    sizes = [r["costs"]["size_bits"] for r in results]
    targets = [r["budget"]["value"] for r in results]
    assert targets[0] > targets[1]
    assert all(s <= t for s, t in zip(sizes, targets))
    assert sizes[0] > sizes[1]
    for name in ("budget-0", "budget-1"):
        phases = [
            json.loads(line)["phase"]
            for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        ]
        assert "warmup" not in phases  # the shared warm-up was reused, not rerun
    warm = [
        json.loads(line)
        for line in (tmp_path / "warmup" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["phase"] for r in warm] == ["warmup"]
    assert (tmp_path / "report" / "pareto.png").exists()


def test_baselines_run_through_the_same_pipeline(tmp_path: Path) -> None:
    from zerobit.train.baselines import baseline, method_config

    base = TINY
    summary = baseline(base, tmp_path, ("w8a8", "w2a8", "pruning", "layerwise"), points=1)
    by_method = {r["method"]: r for r in summary["results"]}
    assert set(by_method) == {"w8a8", "w2a8", "pruning", "layerwise"}
    w8 = by_method["w8a8"]
    assert w8["costs"]["size_bits"] == w8["costs_all_8bit"]["size_bits"]
    assert by_method["w2a8"]["costs"]["size_bits"] * 4 == w8["costs"]["size_bits"]
    bits = {
        b for e in by_method["pruning"]["architecture"].values() for b in e.get("weight_bits", [])
    }
    assert bits <= {0, 8}
    for name, entry in by_method["layerwise"]["architecture"].items():
        if "weight_bits" in entry:
            assert len(set(entry["weight_bits"])) == 1, name  # one bit-width per layer
    for r in summary["results"]:  # same epochs for every method
        assert r["config"]["search"] == base.to_dict()["search"]
    with pytest.raises(ValueError, match="unknown method"):
        method_config(base, "magic")


def test_sequential_flow_keeps_stage_one_pruning_and_reports_both_stages(tmp_path: Path) -> None:
    from zerobit.train.baselines import sequential

    base = TINY
    (final,) = sequential(base, tmp_path, budgets=[30_000.0])  # bits; all-8-bit: ~617k
    stage1 = json.loads((tmp_path / "sequential-budget-0" / "stage1" / "result.json").read_text())
    assert final["method"] == "sequential" and stage1["method"] == "pruning"
    assert final["budget"]["value"] == pytest.approx(30_000, abs=8)  # target in whole bytes
    assert stage1["budget"]["value"] == pytest.approx(60_000, abs=8)
    for name, entry in stage1["architecture"].items():
        if "weight_bits" not in entry:
            continue
        for before, after in zip(entry["weight_bits"], final["architecture"][name]["weight_bits"]):
            assert (before == 0) == (after == 0), name  # pruning decided by stage 1 only
    assert final["costs"]["size_bits"] <= final["budget"]["value"]
    timings = final["timings"]
    assert timings["stage1_search_s"] > 0 and timings["warmup_s"] > 0
    parts = ("stage1_search_s", "stage1_finetune_s", "search_s", "finetune_s")
    assert timings["total_train_s"] == pytest.approx(sum(timings.get(k, 0.0) for k in parts))


def test_a_sweep_and_its_baselines_start_from_one_earlier_warm_up(tmp_path: Path) -> None:
    import torch

    from zerobit.train.baselines import baseline

    first = sweep(TINY, tmp_path / "first", points=1)["results"][0]
    origin = str((tmp_path / "first" / "warmup").resolve())
    assert first["warmup_from"] is None
    # Another space from the same warm-up (a sweep folder given as the source).
    narrow = RunConfig(**{**TINY.to_dict(), "weight_bits": (0, 4, 8)})
    (second,) = sweep(narrow, tmp_path / "second", points=1, warmup_from=tmp_path / "first")[
        "results"
    ]
    assert second["warmup_from"] == origin
    assert not (tmp_path / "second" / "warmup" / "metrics.jsonl").exists()  # nothing trained
    shared = torch.load(
        tmp_path / "first" / "warmup" / "checkpoints" / "warmup.pt", weights_only=True
    )
    used = torch.load(
        tmp_path / "second" / "budget-0" / "checkpoints" / "warmup.pt", weights_only=True
    )
    for key, value in shared["best_model"].items():
        assert torch.equal(value, used["best_model"][key]), key
    # Baselines for comparison, from a point's run directory of the second sweep.
    (w8,) = baseline(
        narrow, tmp_path / "base", ("w8a8",), warmup_from=tmp_path / "second" / "budget-0"
    )["results"]
    assert w8["warmup_from"] == origin
    assert not (tmp_path / "base" / "warmup" / "metrics.jsonl").exists()
    # A folder that already holds another base's warm-up is refused, not overwritten.
    with pytest.raises(ValueError, match="different configuration"):
        baseline(TINY, tmp_path / "base", ("w8a8",), warmup_from=tmp_path / "first")

# SPDX-License-Identifier: Apache-2.0
# Baselines through the same pipeline and epochs: fixed precision, pruning only, layer-wise and
# channel-wise mixed precision without pruning.
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from zerobit.report import write_report
from zerobit.search import SearchModel
from zerobit.train.budget import parse_target
from zerobit.train.run import Run, RunConfig
from zerobit.train.sweep import REPORT_COST, run_points, shared_warmup

#: Methods whose architecture is searched (swept over budgets); the others are single runs.
SEARCHED = ("joint", "pruning", "channelwise", "layerwise")
DESCRIPTIONS = {
    "joint": "channel-wise bits with 0 = pruned, searched jointly (this library's method)",
    "wXaY": "fixed precision: X-bit weights, Y-bit activations, quantization-aware training",
    "pruning": "pruning only: weights in (0, 8), 8-bit activations (PIT-like)",
    "channelwise": "channel-wise mixed precision without pruning (IGSC 2022)",
    "layerwise": "layer-wise mixed precision without pruning (EdMIPS-like)",
    "sequential": "pruning, then channel-wise mixed precision on the kept channels",
}


#: result.json timings that make up the sequential flow's ``total_train_s``.
TRAIN_TIMINGS = ("stage1_search_s", "stage1_finetune_s", "search_s", "finetune_s")


def method_config(base: RunConfig, method: str) -> RunConfig:
    """Return ``base`` turned into ``method`` (same data, model, epochs and seed).

    Args:
        base: The joint search's configuration.
        method: "joint", "wXaY" (e.g. "w4a8"), "pruning", "channelwise" or "layerwise".

    Raises:
        ValueError: For an unknown method, or a space without the bits a method needs.
    """
    fixed = re.fullmatch(r"w(\d)a(\d)", method)
    if fixed:
        w, a = int(fixed.group(1)), int(fixed.group(2))
        return replace(
            base,
            weight_bits=(w,),
            act_bits=(a,),
            strength=0.0,
            target=None,
            weight_granularity="channel",
            method=method,
        )
    nonzero = tuple(b for b in base.weight_bits if b > 0)
    if method == "joint":
        return replace(base, method="joint")
    if method == "pruning":
        return replace(
            base, weight_bits=(0, 8), act_bits=(8,), weight_granularity="channel", method=method
        )
    if method in ("channelwise", "layerwise"):
        if len(nonzero) < 2:
            raise ValueError(f"{method} needs at least two non-zero weight bit-widths")
        granularity = "channel" if method == "channelwise" else "layer"
        return replace(base, weight_bits=nonzero, weight_granularity=granularity, method=method)
    raise ValueError(
        f"unknown method {method!r}; use joint, wXaY (e.g. w4a8), {', '.join(SEARCHED[1:])}"
    )


def baseline(
    base: RunConfig,
    out: str | Path,
    methods: tuple[str, ...] = ("w8a8", "w4a8", "w2a8", "pruning", "layerwise", "sequential"),
    points: int = 3,
    resume: bool = False,
    warmup_from: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run each method into ``out/<method>-...`` sharing one warm-up, then report them together.

    Searched methods run a budget ladder of ``points`` points on ``base.cost``; fixed-precision
    methods run once. ``warmup_from`` takes the shared warm-up from another run or sweep
    (e.g. the sweep these baselines are compared with).
    """
    out = Path(out)
    configs = [method_config(base, m) for m in methods if m != "sequential"]
    if warmup_from is not None:  # before any method, the sequential flow's included
        shared_warmup(base, out, warmup_from)
    summary = run_points(base, out, configs, points, resume) if configs else {"results": []}
    results = list(summary["results"])
    if "sequential" in methods:
        results += sequential(base, out, points, resume)
    run_dirs = sorted(p.parent for p in out.glob("*/result.json") if p.parent.name != "warmup")
    report = write_report(run_dirs, out / "report", cost=REPORT_COST[base.cost])
    report["results"] = results
    return report


def pin_pruning_(smodel: SearchModel, architecture: dict[str, Any]) -> None:
    """Fix every channel's pruning decision to the one in ``architecture``.

    Channels pruned there stay at 0 bits; kept channels may take any non-zero bit-width but never
    0. The logits of fixed choices are set far apart and a gradient hook keeps them there.
    """
    analysis = smodel.analysis
    for info in analysis.layers.values():
        selector = smodel.selectors[info.group]
        zero = selector.zero_index
        if zero is None or info.name not in architecture:
            continue
        pruned = torch.tensor([b == 0 for b in architecture[info.name]["weight_bits"]])
        with torch.no_grad():
            logits = selector.logits.detach().clone()
            logits[zero] = torch.where(pruned, 20.0, -20.0)
            logits[:, pruned] = torch.where(
                torch.arange(len(selector.bits)) == zero, 20.0, -20.0
            ).unsqueeze(1)
            selector.set_logits_(logits)
        mask = torch.ones_like(selector.parameter)
        mask[zero] = 0.0
        mask[:, pruned] = 0.0
        if selector.pinned_pruning is None:  # one hook, even if pinned twice
            selector.parameter.register_hook(lambda grad, mask=mask: grad * mask)
        selector.pinned_pruning = torch.ones(len(pruned), dtype=torch.bool)


def _stage_one_seed(stage_one: Path) -> Callable[[SearchModel], None]:
    """Load the pruning stage's fine-tuned weights and clips, and pin its pruning decisions."""
    result = json.loads((stage_one / "result.json").read_text())
    state = torch.load(stage_one / "checkpoints" / "finetune.pt", weights_only=True)["best_model"]

    def seed(smodel: SearchModel) -> None:
        with torch.no_grad():
            for name, layer in smodel.layers().items():
                layer.weight.copy_(state[f"graph_module.{name}.weight"])
                layer.bias.copy_(state[f"graph_module.{name}.bias"])
            for i, quantizer in enumerate(smodel.quantizers):
                quantizer.clips.fill_(float(state[f"graph_module.zb_quantizers.{i}.clip"]))
        pin_pruning_(smodel, result["architecture"])

    return seed


def sequential(
    base: RunConfig,
    out: str | Path,
    points: int = 3,
    resume: bool = False,
    budgets: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """Pruning, then channel-wise mixed precision on the kept channels (the PIT + MixPrec flow).

    Per point of the budget ladder: stage 1 searches weights in (0, 8) to twice the point's
    budget and fine-tunes; stage 2 starts from stage 1's fine-tuned weights with its pruned
    channels fixed, searches the non-zero bit-widths to the point's budget, and fine-tunes. Both
    stages use the base configuration's epochs, so the flow trains twice as long as the joint
    search; its result.json reports the wall-clock of both stages (``total_train_s``: both
    searches and fine-tunes, not the shared warm-up).

    ``budgets`` (in the unit of ``base.cost``, bits for size) replaces the automatic ladder of
    ``points`` budgets.
    """
    from zerobit.train.sweep import _ladder_points, _target_text

    out = Path(out)
    warm = Run(base, out / "warmup")
    warm.prepare(resume=True)
    warm.warm_up()
    shared = out / "warmup" / "checkpoints" / "warmup.pt"
    joint_space = method_config(base, "joint")
    results = []
    if budgets is None:
        ladder = _ladder_points(warm, joint_space, points, "sequential-")
    else:
        ladder = [
            (f"sequential-budget-{i}", replace(joint_space, target=_target_text(base.cost, b)))
            for i, b in enumerate(budgets)
        ]
    for name, point in ladder:
        budget = parse_target(point.target or "")
        stage_configs = [
            (
                out / name / "stage1",
                replace(
                    method_config(base, "pruning"), target=_target_text(base.cost, 2 * budget.value)
                ),
            ),
            (out / name, replace(base, target=point.target, method="sequential")),
        ]
        stage_results = []
        for index, (run_dir, config) in enumerate(stage_configs):
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            if not (run_dir / "checkpoints" / "warmup.pt").exists():
                shutil.copyfile(shared, run_dir / "checkpoints" / "warmup.pt")
            if resume and (run_dir / "result.json").exists():
                stage_results.append(json.loads((run_dir / "result.json").read_text()))
                continue
            prepare = _stage_one_seed(stage_configs[0][0]) if index == 1 else None
            stage_results.append(Run(config, run_dir, prepare_search=prepare).run(resume=True))
        final = stage_results[1]
        first = stage_results[0]["timings"]
        final["timings"]["stage1_search_s"] = first.get("search_s", 0.0)
        final["timings"]["stage1_finetune_s"] = first.get("finetune_s", 0.0)
        # Search and fine-tuning of both stages; the warm-up is shared with every other run.
        final["timings"]["total_train_s"] = sum(final["timings"].get(k, 0.0) for k in TRAIN_TIMINGS)
        (out / name / "result.json").write_text(json.dumps(final, indent=2))
        results.append(final)
    return results

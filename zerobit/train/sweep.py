# SPDX-License-Identifier: Apache-2.0
# Sweeps: several runs that share one warm-up, spread over the accuracy/cost front.
from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from zerobit.report import write_report
from zerobit.train.budget import minimum_cost
from zerobit.train.run import Run, RunConfig, reuse_warmup

#: Fraction of the all-8-bit cost at which the automatic ladder starts.
LADDER_TOP = 0.9
#: Multiple of the smallest reachable cost at which the automatic ladder ends.
LADDER_BOTTOM = 1.5
#: result.json cost key plotted for each search cost.
REPORT_COST = {
    "size": "size_bytes",
    "bitops": "bitops",
    "macs": "macs",
    "mpic": "mpic_cycles",
    "ne16": "ne16_cycles",
    "ne16_soft": "ne16_cycles",
    "flash": "flash_bytes",
    "ram": "ram_bytes",
}


def budget_ladder(reference: float, smallest: float, points: int) -> list[float]:
    """Return a geometric ladder of budgets spanning the front.

    The ladder runs from ``LADDER_TOP * reference`` (near all-8-bit) down to
    ``LADDER_BOTTOM * smallest`` (near the smallest model the space allows).

    Args:
        reference: Cost of the unpruned all-8-bit model.
        smallest: Smallest cost the space allows.
        points: Number of budgets (>= 1).

    Returns:
        Budgets in decreasing order, in the cost model's unit.
    """
    if points < 1:
        raise ValueError("a sweep needs at least one point")
    top, bottom = LADDER_TOP * reference, max(LADDER_BOTTOM * smallest, 1e-9)
    if bottom >= top:  # the space is too narrow for a ladder: one point near all-8-bit
        return [top]
    if points == 1:
        return [math.sqrt(top * bottom)]
    ratio = (bottom / top) ** (1 / (points - 1))
    return [top * ratio**i for i in range(points)]


def _target_text(cost: str, value: float) -> str:
    if cost == "size":
        return f"size={value / 8:.0f}B"
    return f"{cost}={value:.6g}"


def _ladder_points(
    warm: Run, config: RunConfig, points: int, prefix: str
) -> list[tuple[str, RunConfig]]:
    smodel = Run(config, warm.out)._convert(warm.warm_up())
    reference = smodel.cost_references[config.cost]
    ladder = budget_ladder(reference, minimum_cost(smodel, config.cost), points)
    return [
        (f"{prefix}budget-{i}", replace(config, target=_target_text(config.cost, value)))
        for i, value in enumerate(ladder)
    ]


def run_points(
    base: RunConfig,
    out: Path,
    configs: Sequence[RunConfig],
    points: int | None,
    resume: bool = False,
    strengths: Sequence[float] | None = None,
    warmup_from: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run ``configs`` into ``out`` after one shared warm-up of ``base``, then report.

    A configuration whose space has a choice (more than one bit-width somewhere) becomes a
    budget ladder of ``points`` runs (or one run per strength in ``strengths``); a fixed one
    (e.g. w8a8) is a single run. ``warmup_from`` takes the shared warm-up from another run
    or sweep (see :func:`plan_points`).
    """
    named = plan_points(base, out, configs, points, strengths, warmup_from)
    results = [run_point(out, name, config, resume) for name, config in named]
    summary = write_report(
        [out / name for name, _ in named], out / "report", cost=REPORT_COST[base.cost]
    )
    summary["results"] = results
    return summary


def shared_warmup(base: RunConfig, out: Path, warmup_from: str | os.PathLike[str] | None) -> Run:
    """Return the run of ``out/warmup``, prepared, seeded from ``warmup_from`` if given.

    A folder holding another base's warm-up is refused; with ``warmup_from`` a folder without a
    warm-up yet gets that run's or sweep's finished one (:func:`reuse_warmup`).
    """
    warm = Run(base, out / "warmup")
    warm.prepare(resume=True)
    if warmup_from is not None and not (warm.checkpoints / "warmup.pt").exists():
        copied = reuse_warmup(warmup_from, warm.out, base)
        print(f"float warm-up: reused from {warmup_from} ({copied})")
    return warm


def plan_points(
    base: RunConfig,
    out: Path,
    configs: Sequence[RunConfig],
    points: int | None,
    strengths: Sequence[float] | None = None,
    warmup_from: str | os.PathLike[str] | None = None,
) -> list[tuple[str, RunConfig]]:
    """Build (or reuse) the shared warm-up ``out/warmup`` and return the named runs to make.

    The points are those of :func:`run_points`, in a fixed order: run ``i`` is point ``i``.
    With ``warmup_from`` (a run directory, sweep or baselines folder trained on the same data,
    model, seed and warm-up phase) a folder without a warm-up yet starts from that one's
    instead of training its own (:func:`zerobit.train.run.reuse_warmup`).
    """
    warm = shared_warmup(base, out, warmup_from)
    warm.warm_up()
    named: list[tuple[str, RunConfig]] = []
    for config in configs:
        prefix = "" if len(configs) == 1 else f"{config.method}-"
        searched = len(config.weight_bits) > 1 or len(config.act_bits) > 1
        if not searched:
            named.append((config.method, config))
        elif strengths:
            named += [
                (f"{prefix}strength-{s:g}", replace(config, strength=float(s), target=None))
                for s in strengths
            ]
        else:
            named += _ladder_points(warm, config, points or 5, prefix)
    return named


def run_point(out: Path, name: str, config: RunConfig, resume: bool = False) -> dict[str, Any]:
    """Run one point of a sweep into ``out/name``, starting from the shared warm-up.

    With ``resume`` a finished point is read back and an interrupted one continues from its
    last checkpoint.
    """
    run_dir = out / name
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    if not (run_dir / "checkpoints" / "warmup.pt").exists():
        shared = out / "warmup" / "checkpoints" / "warmup.pt"
        tmp = run_dir / "checkpoints" / "warmup.pt.tmp"
        shutil.copyfile(shared, tmp)  # copied whole or not at all: a killed copy is redone
        tmp.replace(run_dir / "checkpoints" / "warmup.pt")
    if resume and (run_dir / "result.json").exists():
        return dict(json.loads((run_dir / "result.json").read_text()))
    print(f"{name}: strength {config.strength:g}, target {config.target}")
    return Run(config, run_dir).run(resume=True)


def sweep(
    base: RunConfig,
    out: str | Path,
    points: int | None = 5,
    strengths: Sequence[float] | None = None,
    resume: bool = False,
    warmup_from: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run a sweep into ``out``: a shared warm-up, one run per point, and a report.

    Without ``strengths`` the points are budgets on ``base.cost`` from :func:`budget_ladder`
    (budget mode makes each point land where asked, whatever the model or epoch budget);
    with ``strengths`` the points are plain runs at those strengths. ``warmup_from`` starts
    the sweep from another run's or sweep's float warm-up (e.g. to compare two search spaces
    from one warm-up).

    Returns:
        The report summary of :func:`zerobit.report.write_report` plus the run results.
    """
    return run_points(base, Path(out), [base], points, resume, strengths, warmup_from)

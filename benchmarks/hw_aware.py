# SPDX-License-Identifier: Apache-2.0
# Does a hardware cost model pay off on its hardware? Searches driven by size, MPIC and NE16,
# every final model priced by all three.
"""Hardware-aware search benchmark.

ResNet-8 on a Fashion-MNIST subset, weights (0, 2, 4, 8) per channel, 8-bit activations (so that
the NE16 model, which only has 8-bit activations, can price every model). Per seed one float
warm-up; then, for each driving cost (size, MPIC cycles, NE16 cycles), searches at a ladder of
budgets given as fractions of that cost for the all-8-bit model (see FRACTIONS), each
fine-tuned. Every final model is priced by all three costs (result.json), and the fronts are
compared at iso-accuracy, per seed: for MPIC cycles and NE16 cycles, how much cheaper the front
driven by that hardware's own model is than the size-driven front. Interrupted runs resume; each
seed lives in ``OUT/seed-N`` (two processes can run different seeds). Run:

    python benchmarks/hw_aware.py --seeds 0,1,2 --out benchmarks/results/hw_aware
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from _pareto import _run, copy_runs

from zerobit.report import load_runs, plot_pareto
from zerobit.report.pareto import interpolate_front, non_dominated
from zerobit.train.loop import PhaseConfig
from zerobit.train.run import Run, RunConfig

DRIVERS = {"size": "size_bytes", "mpic": "mpic_cycles", "ne16": "ne16_cycles"}
#: Budgets as fractions of each cost's all-8-bit value; run folders are numbered in this order.
#: NE16's smallest model is 21 % of its all-8-bit cycles (per-tile overheads remain), so its
#: ladder sits higher. The last rungs of MPIC (0.8) and NE16 (0.95, 0.9) were added after a
#: first seed-0 run: the MPIC- and NE16-driven searches end far under their budgets, and without
#: them their fronts overlapped the size-driven front at one or two accuracies only.
FRACTIONS = {
    "size": (0.6, 0.4, 0.25, 0.15),
    "mpic": (0.6, 0.4, 0.25, 0.15, 0.8),
    "ne16": (0.8, 0.6, 0.4, 0.25, 0.95, 0.9),
}
METRIC = "val_accuracy"


def run_all(
    base: RunConfig,
    out: Path,
    reuse: Path | None = None,
    drivers: Sequence[str] = tuple(DRIVERS),
    ne16_cost: str = "ne16",
) -> None:
    """Warm up once (or take the warm-up of the seed folder ``reuse``), then run every (driving
    cost, budget) point of ``drivers``; with ``reuse``, the finished runs of the other drivers
    are copied from it (without checkpoints). The NE16-driven searches use ``ne16_cost``."""
    if reuse is not None:
        others = {p.name for p in _expected(reuse) if p.name.split("-budget-")[0] not in drivers}
        copy_runs(reuse, out, others)
    warm = Run(base, out / "warmup")
    warm.prepare(resume=True)
    warm.warm_up()
    shared = out / "warmup" / "checkpoints" / "warmup.pt"
    for driver in drivers:
        cost = ne16_cost if driver == "ne16" else driver
        config = replace(base, cost=cost, method=f"{driver}-driven")
        smodel = Run(config, out / "warmup")._convert(warm.warm_up())
        reference = smodel.cost_references[cost]
        for i, fraction in enumerate(FRACTIONS[driver]):
            budget = fraction * reference
            target = f"size={budget / 8:.0f}B" if cost == "size" else f"{driver}={budget:.6g}"
            _run(replace(config, target=target), out / f"{driver}-budget-{i}", shared)


def _expected(seed_dir: Path) -> list[Path]:
    return [seed_dir / f"{c}-budget-{i}" for c in DRIVERS for i in range(len(FRACTIONS[c]))]


def analyze_seed(seed_dir: Path, plots: Path | None = None) -> dict[str, Any]:
    """One seed's points and reductions; with ``plots``, one plot per evaluation cost there."""
    runs = [r for r in load_runs(p for p in _expected(seed_dir) if (p / "result.json").exists())]
    by_driver: dict[str, list[Any]] = {}
    for run in runs:
        by_driver.setdefault(run.method.removesuffix("-driven"), []).append(run)
    summary: dict[str, Any] = {
        "partial": any(not (p / "result.json").exists() for p in _expected(seed_dir)),
        "points": {
            driver: [
                {
                    "name": r.name,
                    METRIC: r.metric(METRIC),
                    **{k: r.costs.get(k) for k in DRIVERS.values()},
                }
                for r in sorted(rs, key=lambda r: r.name)
            ]
            for driver, rs in by_driver.items()
        },
        "reductions": {},
    }
    for driver in ("mpic", "ne16"):
        key = DRIVERS[driver]
        own = [(r.costs[key], r.metric(METRIC)) for r in by_driver.get(driver, [])]
        size = [(r.costs[key], r.metric(METRIC)) for r in by_driver.get("size", [])]
        if not own or not size:
            continue
        # At the accuracy of every point on the size-driven front that the own front reaches.
        reductions = []
        for i in non_dominated(size):
            cost, accuracy = size[i]
            own_cost = interpolate_front(own, accuracy)
            if own_cost is not None:
                reductions.append(1.0 - own_cost / cost)
        summary["reductions"][key] = reductions
        if plots is not None:
            plot_pareto(
                runs,
                plots / f"pareto_{driver}.png",
                cost=key,
                metric=METRIC,
                title=f"{METRIC} vs {key}, by driving cost",
            )
    if plots is not None and runs:
        plot_pareto(runs, plots / "pareto_size.png", cost="size_bytes", metric=METRIC)
    return summary


def analyze(out: Path, seeds: Sequence[int]) -> dict[str, Any]:
    """Compare the fronts per seed and over seeds; write summary.json, summary.md, and the plots
    of the first seed."""
    per_seed = {
        seed: analyze_seed(out / f"seed-{seed}", plots=out if i == 0 else None)
        for i, seed in enumerate(seeds)
    }
    reductions: dict[str, Any] = {}
    for key in ("mpic_cycles", "ne16_cycles"):
        seed_means = [
            statistics.mean(s["reductions"][key]) if s["reductions"].get(key) else None
            for s in per_seed.values()
        ]
        means = [m for m in seed_means if m is not None]
        every = [r for s in per_seed.values() for r in s["reductions"].get(key, [])]
        reductions[key] = {
            "seed_means": seed_means,
            "mean_of_seed_means": statistics.mean(means) if means else None,
            "std_of_seed_means": statistics.stdev(means) if len(means) > 1 else None,
            "max": max(every) if every else None,
            "min": min(every) if every else None,
            "points_compared": len(every),
        }
    summary = {
        "partial": any(s["partial"] for s in per_seed.values()),
        "seeds": list(seeds),
        "fractions": FRACTIONS,
        "reductions": reductions,
        "per_seed": {str(seed): s for seed, s in per_seed.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(markdown(summary))
    return summary


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown tables (what docs/benchmarks.md shows)."""
    lines = [
        "| cost | own-cost front vs size-driven front: mean of seed means | std | per seed "
        "| range over points | points |",
        "|---|---:|---:|---|---|---:|",
    ]
    for key, value in summary["reductions"].items():
        per_seed = ", ".join(_percent(m) for m in value["seed_means"])
        std = value["std_of_seed_means"]
        lines.append(
            f"| {key} | {_percent(value['mean_of_seed_means'])} | "
            f"{'n/a' if std is None else f'{100 * std:.1f} pt'} | {per_seed} | "
            f"{_percent(value['min'])} to {_percent(value['max'])} | {value['points_compared']} |"
        )
    lines += [
        "",
        "| seed | driven by | run | val accuracy | size (B) | MPIC cycles | NE16 cycles |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for seed, s in summary["per_seed"].items():
        for driver, points in s["points"].items():
            for p in points:
                lines.append(
                    f"| {seed} | {driver} | {p['name']} | {100 * p[METRIC]:.2f} % | "
                    f"{p['size_bytes']:,.0f} | {p['mpic_cycles']:,.0f} | {p['ne16_cycles']:,.0f} |"
                )
    if summary["partial"]:
        lines.append("\nPartial: some runs are missing.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--subset", type=int, default=4000)
    parser.add_argument("--epochs", default="20,4,2", help="warm-up, search, fine-tune epochs")
    parser.add_argument(
        "--warmup-patience",
        type=int,
        default=3,
        help="end the warm-up after this many epochs without a better validation accuracy",
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument(
        "--budget-damping",
        type=float,
        default=0.0,
        help="steps ahead every search's budget controller extrapolates a falling cost (see "
        "`zerobit search --help`; 0: off, as the benchmark ran)",
    )
    parser.add_argument(
        "--budget-rate",
        type=float,
        default=0.05,
        help="every search's budget controller gain per step (see `zerobit search --help`; "
        "0.05, as the benchmark ran)",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="a finished run of this benchmark whose warm-ups (seed-N/warmup) are taken instead "
        "of warming up again",
    )
    parser.add_argument(
        "--drivers",
        default=",".join(DRIVERS),
        help="comma-separated driving costs to run (with --reuse the others' runs are copied)",
    )
    parser.add_argument(
        "--ne16-cost",
        choices=("ne16", "ne16_soft"),
        default="ne16",
        help="the cost the NE16-driven searches minimize (ne16_soft: a partial channel block "
        "priced by its fraction while counts are fractional; equal to ne16 on every final model)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--analyze-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/hw_aware"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warmup, search, finetune = (int(e) for e in args.epochs.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    drivers = [d for d in args.drivers.split(",") if d]
    if set(drivers) - set(DRIVERS):
        parser.error(f"--drivers must name some of {', '.join(DRIVERS)}, got {args.drivers!r}")
    base = RunConfig(
        dataset="fashion-mnist",
        model="resnet8",
        subset=args.subset,
        act_bits=(8,),
        seed=seeds[0],
        warmup=PhaseConfig(warmup, patience=args.warmup_patience or None),
        search=PhaseConfig(search),
        finetune=PhaseConfig(finetune),
        budget_damping=args.budget_damping,
        budget_rate=args.budget_rate,
    )
    if not args.analyze_only:
        for seed in seeds:
            reuse = None if args.reuse is None else args.reuse / f"seed-{seed}"
            run_all(
                replace(base, seed=seed), args.out / f"seed-{seed}", reuse, drivers, args.ne16_cost
            )
    summary = analyze(args.out, sorted(seeds))
    for key, value in summary["reductions"].items():
        print(f"{key}: own-cost front vs size-driven front: {value}")
    print(f"partial: {summary['partial']}")


if __name__ == "__main__":
    main()

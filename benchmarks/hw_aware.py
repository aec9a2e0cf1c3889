# SPDX-License-Identifier: Apache-2.0
# Does a hardware cost model pay off on its hardware? Searches driven by size, MPIC and NE16,
# every final model priced by all three.
"""Hardware-aware search benchmark.

ResNet-8 on a Fashion-MNIST subset, weights (0, 2, 4, 8) per channel, 8-bit activations (so that
the NE16 model, which only has 8-bit activations, can price every model). One shared float
warm-up; then, for each driving cost (size, MPIC cycles, NE16 cycles), searches at a ladder of
budgets given as fractions of that cost for the all-8-bit model (see FRACTIONS), each
fine-tuned. Every final
model is priced by all three costs (result.json), and the fronts are compared at iso-accuracy:
for MPIC cycles and NE16 cycles, how much cheaper the front driven by that hardware's own model is
than the size-driven front. Interrupted runs resume. Run:

    python benchmarks/hw_aware.py --out benchmarks/results/hw_aware
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from _pareto import _run

from zerobit.report import load_runs, plot_pareto
from zerobit.report.pareto import interpolate_front, non_dominated
from zerobit.train.loop import PhaseConfig
from zerobit.train.run import Run, RunConfig

DRIVERS = {"size": "size_bytes", "mpic": "mpic_cycles", "ne16": "ne16_cycles"}
#: Budgets as fractions of each cost's all-8-bit value. NE16's smallest model is 21 % of its
#: all-8-bit cycles (per-tile overheads remain), so its ladder sits higher.
FRACTIONS = {
    "size": (0.6, 0.4, 0.25, 0.15),
    "mpic": (0.6, 0.4, 0.25, 0.15),
    "ne16": (0.8, 0.6, 0.4, 0.25),
}
METRIC = "val_accuracy"


def run_all(base: RunConfig, out: Path) -> None:
    """Warm up once, then run every (driving cost, budget) point."""
    warm = Run(base, out / "warmup")
    warm.prepare(resume=True)
    warm.warm_up()
    shared = out / "warmup" / "checkpoints" / "warmup.pt"
    for cost in DRIVERS:
        config = replace(base, cost=cost, method=f"{cost}-driven")
        smodel = Run(config, out / "warmup")._convert(warm.warm_up())
        reference = smodel.cost_references[cost]
        for i, fraction in enumerate(FRACTIONS[cost]):
            budget = fraction * reference
            target = f"size={budget / 8:.0f}B" if cost == "size" else f"{cost}={budget:.6g}"
            _run(replace(config, target=target), out / f"{cost}-budget-{i}", shared)


def _costs(run: Any) -> dict[str, float | None]:
    return {key: run.costs.get(key) for key in DRIVERS.values()}


def analyze(out: Path) -> dict[str, Any]:
    """Compare the fronts; write summary.json and one plot per evaluation cost."""
    runs = [r for r in load_runs(sorted(p.parent for p in out.glob("*/result.json"))) if r.method]
    by_driver: dict[str, list[Any]] = {}
    for run in runs:
        by_driver.setdefault(run.method.removesuffix("-driven"), []).append(run)
    expected = [f"{c}-budget-{i}" for c in DRIVERS for i in range(len(FRACTIONS[c]))]
    summary: dict[str, Any] = {
        "partial": any(not (out / name / "result.json").exists() for name in expected),
        "fractions": FRACTIONS,
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
        summary["reductions"][key] = {
            "mean": statistics.mean(reductions) if reductions else None,
            "max": max(reductions) if reductions else None,
            "points_compared": len(reductions),
        }
        plot_pareto(
            runs,
            out / f"pareto_{driver}.png",
            cost=key,
            metric=METRIC,
            title=f"{METRIC} vs {key}, by driving cost",
        )
    plot_pareto(runs, out / "pareto_size.png", cost="size_bytes", metric=METRIC)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(markdown(summary))
    return summary


def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown tables (what docs/benchmarks.md shows)."""
    lines = [
        "| driven by | run | val accuracy | size (B) | MPIC cycles | NE16 cycles |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for driver, points in summary["points"].items():
        for p in points:
            lines.append(
                f"| {driver} | {p['name']} | {100 * p[METRIC]:.2f} % | {p['size_bytes']:,.0f} | "
                f"{p['mpic_cycles']:,.0f} | {p['ne16_cycles']:,.0f} |"
            )
    lines += [
        "",
        "| cost | reduction of the own-cost front vs the size-driven front (mean, max) | points |",
        "|---|---|---:|",
    ]
    for key, value in summary["reductions"].items():
        mean = "n/a" if value["mean"] is None else f"{100 * value['mean']:.1f} %"
        top = "n/a" if value["max"] is None else f"{100 * value['max']:.1f} %"
        lines.append(f"| {key} | {mean}, {top} | {value['points_compared']} |")
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--analyze-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/hw_aware"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warmup, search, finetune = (int(e) for e in args.epochs.split(","))
    base = RunConfig(
        dataset="fashion-mnist",
        model="resnet8",
        subset=args.subset,
        act_bits=(8,),
        seed=args.seed,
        warmup=PhaseConfig(warmup, patience=args.warmup_patience or None),
        search=PhaseConfig(search),
        finetune=PhaseConfig(finetune),
    )
    if not args.analyze_only:
        run_all(base, args.out)
    summary = analyze(args.out)
    for key, value in summary["reductions"].items():
        print(f"{key}: own-cost front vs size-driven front: {value}")
    print(f"partial: {summary['partial']}")


if __name__ == "__main__":
    main()

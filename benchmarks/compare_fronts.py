# SPDX-License-Identifier: Apache-2.0
# Method by method, how much a variant of a Pareto benchmark moves each method's front.
"""Compare two runs of a Pareto benchmark method by method.

For every method and seed present in both folders (a benchmark and a variant of it, for example
the paper's min-max weight ranges against the MSE ranges): the size reduction of the variant's
front against the base front at iso-validation-accuracy (mean over the base front's points that
the variant's front reaches; positive: the variant is smaller at equal accuracy; also over only
the base points within the variant front's size range), and for
single-point methods (w8a8, w4a8, w2a8) the accuracy difference. With ``--rungs``, also each
joint budget's run side by side (size, validation accuracy, the share of its budget the final
model uses and the searched model used before the greedy step, mean over the seeds both folders
have, and the searches that ended over budget; JSON key ``joint_rungs``); ``--rung-glob``
picks other budgeted runs (``"mpic-budget-*"`` in the hardware-aware benchmark, where the share
is in the driving cost's unit). Writes JSON and prints Markdown tables. Run:

    python benchmarks/compare_fronts.py benchmarks/results/pareto_fashion_mnist \
        benchmarks/results/pareto_fashion_mnist_mse --out benchmarks/results/mse_vs_minmax_fm.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from _pareto import COST, FIXED, METRIC, _front, _reduction

from zerobit.report import load_runs


def _points(seed_dir: Path, cost: str = COST) -> dict[str, list[tuple[float, float]]]:
    points: dict[str, list[tuple[float, float]]] = {}
    for run in load_runs(sorted(p.parent for p in seed_dir.glob("*/result.json"))):
        if run.name == "warmup" or run.path.name == "stage1":
            continue
        points.setdefault(run.method, []).append((run.costs[cost], run.metric(METRIC)))
    return points


def compare(base: Path, variant: Path, cost: str = COST) -> dict[str, Any]:
    """Per method: per-seed comparisons of ``variant``'s front against ``base``'s, in ``cost``
    (a key of result.json's ``costs``)."""
    methods: dict[str, dict[str, Any]] = {}
    for seed_dir in sorted(variant.glob("seed-*")):
        if not (base / seed_dir.name).is_dir():
            continue
        ours, theirs = _points(seed_dir, cost), _points(base / seed_dir.name, cost)
        for method in sorted(set(ours) & set(theirs)):
            entry = methods.setdefault(method, {"seeds": {}})
            if method in FIXED:
                (_, accuracy), (_, reference) = ours[method][0], theirs[method][0]
                entry["seeds"][seed_dir.name] = {"accuracy_gain": accuracy - reference}
                continue
            front, reference_front = _front(ours[method]), _front(theirs[method])
            reductions = [
                r for c, a in reference_front if (r := _reduction(front, c, a)) is not None
            ]
            # Only the base points within the variant front's size range: a variant whose
            # smallest budget ends nearer that budget has no point as small as one that ended
            # far under it, and is otherwise charged its smallest point's size there.
            low, high = min(c for c, _ in front), max(c for c, _ in front)
            shared = [
                r
                for c, a in reference_front
                if low <= c <= high and (r := _reduction(front, c, a)) is not None
            ]
            entry["seeds"][seed_dir.name] = {
                "reduction": statistics.mean(reductions) if reductions else None,
                "points_compared": len(reductions),
                "points": len(reference_front),
                "reduction_shared": statistics.mean(shared) if shared else None,
                "points_shared": len(shared),
            }
    for entry in methods.values():
        for key in ("accuracy_gain", "reduction", "reduction_shared"):
            values = [s[key] for s in entry["seeds"].values() if s.get(key) is not None]
            if values:
                entry[f"mean_{key}"] = statistics.mean(values)
    return methods


def _budget_use(run_dir: Path) -> list[float]:
    """The final model's cost over its budget, the searched model's (before the greedy step) and
    the greedy step's moves (``result.json``'s ``budget``)."""
    budget = json.loads((run_dir / "result.json").read_text())["budget"]
    return [
        float(budget["cost_final"] / budget["value"]),
        float(budget["cost_after_search"] / budget["value"]),
        float(budget["greedy_moves"]),
    ]


def joint_rungs(base: Path, variant: Path, pattern: str = "joint-budget-*") -> dict[str, Any]:
    """Per budgeted run (folders matching ``pattern``): each folder's size, accuracy, share of the
    budget used, share at the end of the search and greedy moves, by seed."""
    rungs: dict[str, Any] = {}
    for seed_dir in sorted(variant.glob("seed-*")):
        for run_dir in sorted(seed_dir.glob(pattern)):
            other = base / seed_dir.name / run_dir.name
            if not (run_dir / "result.json").exists() or not (other / "result.json").exists():
                continue
            (ours,), (theirs,) = load_runs([run_dir]), load_runs([other])
            entry = rungs.setdefault(run_dir.name, {"seeds": {}})
            entry["seeds"][seed_dir.name] = {
                "base": [theirs.costs[COST], theirs.metric(METRIC), *_budget_use(other)],
                "variant": [ours.costs[COST], ours.metric(METRIC), *_budget_use(run_dir)],
            }
    for entry in rungs.values():
        for side in ("base", "variant"):
            pairs = [s[side] for s in entry["seeds"].values()]
            entry[f"mean_{side}"] = [statistics.mean(v) for v in zip(*pairs)]
    return dict(sorted(rungs.items(), key=lambda item: -item[1]["mean_base"][0]))


def rungs_markdown(rungs: dict[str, Any]) -> str:
    """The rungs side by side; then, over every seed run, how many searches ended over their
    budget (before the greedy step) and the greedy moves it took."""
    lines = [
        "| run | seeds | base: size, val accuracy, budget used (after search) "
        "| variant: the same |",
        "|---|---:|---:|---:|",
    ]
    for name, entry in rungs.items():
        cells = []
        for side in ("base", "variant"):
            size, accuracy, used, searched, _ = entry[f"mean_{side}"]
            cells.append(
                f"{size / 1000:.1f} kB, {100 * accuracy:.2f} %, {100 * used:.0f} % "
                f"({100 * searched:.0f} %)"
            )
        lines.append(f"| {name} | {len(entry['seeds'])} | {cells[0]} | {cells[1]} |")
    runs = [seed for entry in rungs.values() for seed in entry["seeds"].values()]
    for side in ("base", "variant"):
        over = sum(run[side][3] > 1 for run in runs)
        moves = sum(run[side][4] for run in runs)
        lines.append(
            f"\n{side}: {over} of {len(runs)} searches ended over budget, "
            f"{moves:.0f} greedy moves in all."
        )
    return "\n".join(lines)


def markdown(methods: dict[str, Any]) -> str:
    lines = [
        "| method | variant against base | per seed | within the variant's size range |",
        "|---|---:|---|---:|",
    ]

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f} %"

    for method, entry in methods.items():
        seeds = entry["seeds"].values()
        if "mean_accuracy_gain" in entry:
            mean = f"{100 * entry['mean_accuracy_gain']:+.1f} pt accuracy"
            per = ", ".join(f"{100 * s['accuracy_gain']:+.1f}" for s in seeds)
            shared = ""
        else:
            value = entry.get("mean_reduction")
            mean = "n/a" if value is None else f"{100 * value:.1f} % smaller"
            per = ", ".join(percent(s["reduction"]) for s in seeds)
            shared = (
                f"{percent(entry.get('mean_reduction_shared'))} smaller ("
                + ", ".join(percent(s.get("reduction_shared")) for s in seeds)
                + ")"
            )
        lines.append(f"| {method} | {mean} | {per} | {shared} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("base", type=Path, help="benchmark folder (seed-N/ subfolders)")
    parser.add_argument("variant", type=Path, help="the variant's folder")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    parser.add_argument(
        "--rungs", action="store_true", help="also compare each joint budget's run (mean of seeds)"
    )
    parser.add_argument(
        "--rung-glob",
        default="joint-budget-*",
        help="with --rungs: the run folders compared (default: joint-budget-*)",
    )
    parser.add_argument(
        "--cost",
        default=COST,
        help=f"the cost the fronts are compared in, a key of result.json's costs (default: {COST}; "
        "mpic_cycles or ne16_cycles for the hardware-aware benchmark)",
    )
    args = parser.parse_args()
    methods = compare(args.base, args.variant, args.cost)
    rungs = joint_rungs(args.base, args.variant, args.rung_glob) if args.rungs else None
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        data = methods if rungs is None else {**methods, "joint_rungs": rungs}
        args.out.write_text(json.dumps(data, indent=2))
    print(markdown(methods))
    if rungs is not None:
        print()
        print(rungs_markdown(rungs))


if __name__ == "__main__":
    main()

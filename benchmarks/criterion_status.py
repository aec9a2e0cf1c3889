# SPDX-License-Identifier: Apache-2.0
# Where the benchmark issue's success criterion stands, over every finished Pareto benchmark folder.
"""Count, per benchmark folder and seed, the joint front points that a baseline point dominates.

The success criterion of the Pareto benchmarks is that no baseline point dominates a point of
the joint front (no costlier and no less accurate, strictly better in one). For each folder
(the main benchmarks and their variants) and each seed, this prints the joint front's size,
how many of its points are dominated, by which methods, and how many would be dominated if the
sequential flow (which trains twice as long) were left out. The same count on the seeds' mean:
every run (a method's rung, one folder per seed) averaged in size and accuracy over the seeds,
the joint front taken over those means; a point that fails there fails on average, not by one
seed's noise. A second table compares, where a folder has them, the joint searches fine-tuned
for the sequential flow's total epochs (joint-long) with the sequential flow: equal training
instead of equal epochs per phase; its last column reads the criterion with each baseline at
equal training: met on a seed when no baseline but the sequential flow dominates a joint front
point and no sequential point dominates a joint-long point. Reads each folder's
``summary.json`` (rebuild with the benchmark's ``--analyze-only``) and its runs'
``result.json``; writes JSON and prints Markdown tables. Run:

    python benchmarks/criterion_status.py --out benchmarks/results/criterion_status.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from _pareto import COST, METRIC, _dominated, _front

from zerobit.report import load_runs

RESULTS = Path(__file__).parent / "results"
#: Methods that are neither the joint front nor a baseline (compared separately).
NOT_BASELINES = ("joint", "joint-long")


def seed_status(seed: dict[str, Any]) -> dict[str, Any]:
    """The criterion for one seed of a summary: dominated joint front points and by whom."""
    front = [tuple(p) for p in seed["joint_front"]]
    baselines = {m: [tuple(p) for p in ps] for m, ps in seed["points"].items()}
    for method in NOT_BASELINES:
        baselines.pop(method, None)
    by: Counter[str] = Counter()
    dominated = []
    without_sequential = 0
    for point in front:
        over = [(m, q) for m, ps in baselines.items() for q in ps if _dominated([point], [q])]
        methods = {m for m, _ in over}
        by.update(methods)
        without_sequential += bool(methods - {"sequential"})
        if over:  # the widest accuracy lead among the dominating points, and its size saving
            method, (cost, accuracy) = max(over, key=lambda mq: mq[1][1])
            dominated.append(
                {
                    "size": point[0],
                    "accuracy": point[1],
                    "by": method,
                    "accuracy_lead_pt": 100 * (accuracy - point[1]),
                    "size_saving": 1 - cost / point[0],
                }
            )
    return {
        "front_points": len(front),
        "dominated": len(dominated),
        "dominated_points": dominated,
        "dominated_without_sequential": without_sequential,
        "dominating_methods": dict(sorted(by.items())),
        "reduction_vs_best_baseline": seed.get("reduction_vs_best_baseline", {}).get("mean"),
    }


def mean_points(seed_dirs: list[Path]) -> dict[str, list[tuple[float, float]]]:
    """Per method, the (size, accuracy) of each of its runs averaged over ``seed_dirs``; a run
    is its folder name (``joint-budget-3``, ``w4a8``), and only runs every seed has count."""
    per_run: dict[str, list[tuple[float, float]]] = {}
    methods: dict[str, str] = {}
    for seed_dir in seed_dirs:
        for run in load_runs(sorted(p.parent for p in seed_dir.glob("*/result.json"))):
            per_run.setdefault(run.path.name, []).append((run.costs[COST], run.metric(METRIC)))
            methods[run.path.name] = run.method
    points: dict[str, list[tuple[float, float]]] = {}
    for name, values in sorted(per_run.items()):
        if name == "warmup" or len(values) < len(seed_dirs):
            continue
        mean = (statistics.mean(c for c, _ in values), statistics.mean(a for _, a in values))
        points.setdefault(methods[name], []).append(mean)
    return points


def status(folder: Path) -> dict[str, Any]:
    """Per seed of ``folder``'s summary, and on the seeds' mean: see :func:`seed_status`."""
    summary = json.loads((folder / "summary.json").read_text())
    seeds = sorted(summary["seeds"])
    mean = None
    if len(seeds) > 1:
        points = mean_points([folder / f"seed-{s}" for s in seeds])
        mean = seed_status({"points": points, "joint_front": _front(points.get("joint", []))})
    equal = {name: summary["seeds"][name].get("equal_training") for name in seeds}
    return {
        "partial": summary["partial"],
        "seeds": {name: seed_status(summary["seeds"][name]) for name in seeds},
        "seed_mean": mean,
        "equal_training": {n: e for n, e in equal.items() if e is not None} or None,
    }


def markdown(statuses: dict[str, dict[str, Any]]) -> str:
    """One row per folder: dominated front points per seed, the widest margin, the criterion."""
    lines = [
        "| benchmark | seeds | dominated joint front points, per seed | without the sequential "
        "flow | widest accuracy lead of a dominating point (pt) | seeds meeting the criterion | "
        "on the seeds' mean: dominated points (widest lead) |",
        "|---|---:|---|---|---|---:|---|",
    ]
    for name, entry in statuses.items():
        seeds = entry["seeds"].values()
        per_seed = ", ".join(f"{s['dominated']} of {s['front_points']}" for s in seeds)
        without = ", ".join(str(s["dominated_without_sequential"]) for s in seeds)
        leads = ", ".join(
            f"{max(d['accuracy_lead_pt'] for d in s['dominated_points']):.2f}"
            if s["dominated_points"]
            else "-"
            for s in seeds
        )
        met = sum(s["dominated"] == 0 for s in seeds)
        partial = " (partial)" if entry["partial"] else ""
        mean = entry["seed_mean"]
        on_mean = "-"
        if mean is not None:
            on_mean = f"{mean['dominated']} of {mean['front_points']}"
            if mean["dominated_points"]:
                lead = max(d["accuracy_lead_pt"] for d in mean["dominated_points"])
                on_mean += f" ({lead:.2f})"
        lines.append(
            f"| {name}{partial} | {len(entry['seeds'])} | {per_seed} | {without} | {leads} | "
            f"{met} of {len(entry['seeds'])} | {on_mean} |"
        )
    return "\n".join(lines) + "\n"


def equal_training_markdown(statuses: dict[str, dict[str, Any]]) -> str:
    """One row per folder with joint-long runs: its size reduction against the sequential front
    at iso-accuracy per seed, and its points a sequential point dominates."""
    lines = [
        "| benchmark | seeds | joint-long against the sequential front, per seed | mean | "
        "joint-long points dominated by a sequential point | seeds meeting the criterion at "
        "equal training |",
        "|---|---:|---|---:|---|---:|",
    ]
    for name, entry in statuses.items():
        equal = entry["equal_training"]
        if not equal:
            continue
        values = [e["reduction_vs_sequential"] for e in equal.values()]
        per_seed = ", ".join("-" if v is None else f"{100 * v:.1f} %" for v in values)
        present = [v for v in values if v is not None]
        mean = f"{100 * statistics.mean(present):.1f} %" if present else "-"
        dominated = ", ".join(
            f"{len(e['dominated_by_sequential'])} of {len(e['joint_long_front'])}"
            for e in equal.values()
        )
        met = sum(
            not e["dominated_by_sequential"]
            and entry["seeds"][seed]["dominated_without_sequential"] == 0
            for seed, e in equal.items()
        )
        lines.append(
            f"| {name} | {len(equal)} | {per_seed} | {mean} | {dominated} | {met} of {len(equal)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "folders",
        nargs="*",
        type=Path,
        help="benchmark folders (default: every pareto_* folder under benchmarks/results)",
    )
    parser.add_argument("--out", type=Path, help="write the statuses as JSON here")
    args = parser.parse_args()
    folders = args.folders or sorted(
        p.parent for p in RESULTS.glob("pareto_*/summary.json") if p.parent.is_dir()
    )
    statuses = {folder.name: status(folder) for folder in folders}
    if args.out is not None:
        args.out.write_text(json.dumps(statuses, indent=2) + "\n")
    print(markdown(statuses))
    print(equal_training_markdown(statuses), end="")


if __name__ == "__main__":
    main()

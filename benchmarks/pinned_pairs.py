# SPDX-License-Identifier: Apache-2.0
# Is a baseline's lead over a joint front point its choice of bit-widths or its longer training?
"""Retrain both sides of every dominated joint front point on the joint search's schedule.

Where a baseline point dominates a point of the joint front, the two runs differ in what they
chose (each channel's bit-width, 0 for pruned) and in how their weights were trained: the
sequential flow trains twice as long as the joint search (two searches, two fine-tunings). This
script separates the two. For each dominated joint front point of a finished Pareto benchmark
folder, it takes the joint run and the baseline run that leads it by the most accuracy, fixes
each one's bit-widths in a fresh model from the same float warm-up, and trains both on the joint
search's schedule (its search epochs, now training the fixed assignment with no cost, then its
fine-tuning): the `pinned` trial of `search_trials.py`. If the baseline's assignment, so trained,
is no more accurate than the joint one's, its lead came from its training, not from its choice.

Needs the folder's warm-up checkpoints (run the benchmark first: checkpoints are not committed).
Resumes finished runs. Writes ``seed-S/pairs.json`` per seed, then ``pairs.json`` and
``summary.md`` over every seed under ``--out`` (one process per seed may share ``--out``). Run:

    python benchmarks/pinned_pairs.py --results benchmarks/results/pareto_fashion_mnist_cosine \\
        --seeds 1 --out benchmarks/results/pinned_pairs/fm_cosine
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from _pareto import COST, JOINT, METRIC, _dominated, _front
from search_trials import pin_architecture, trial_config

from zerobit.report import load_runs
from zerobit.train.run import Run


def dominated_pairs(seed_dir: Path) -> list[dict[str, Any]]:
    """Each joint front point some baseline point dominates, with the run leading it most."""
    runs = [
        r
        for r in load_runs(sorted(p.parent for p in seed_dir.glob("*/result.json")))
        if r.name != "warmup" and r.path.name != "stage1"
    ]
    joint = [r for r in runs if r.method == "joint"]
    baselines = [r for r in runs if r.method not in JOINT]
    front = set(_front([(r.costs[COST], r.metric(METRIC)) for r in joint]))
    pairs = []
    for run in sorted(joint, key=lambda r: r.costs[COST]):
        point = (run.costs[COST], run.metric(METRIC))
        if point not in front:
            continue
        over = [b for b in baselines if _dominated([point], [(b.costs[COST], b.metric(METRIC))])]
        if over:
            lead = max(over, key=lambda b: b.metric(METRIC))
            pairs.append({"joint": run.path, "baseline": lead.path, "method": lead.method})
    return pairs


def pinned_run(results: Path, seed: int, pin: Path, out: Path) -> dict[str, Any]:
    """Train ``pin``'s bit-widths from the seed's warm-up on the joint search's schedule."""
    config = trial_config(results, seed, 0, "pinned")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    warmup = out / "checkpoints" / "warmup.pt"
    if not warmup.exists():
        shutil.copyfile(results / f"seed-{seed}" / "warmup" / "checkpoints" / "warmup.pt", warmup)
    architecture = json.loads((pin / "result.json").read_text())["architecture"]
    prepare = pin_architecture(architecture)
    result: dict[str, Any] = Run(config, out, prepare_search=prepare).run(resume=True)
    return result


def _point(result: dict[str, Any]) -> dict[str, float]:
    return {"size_bytes": result["costs"]["size_bytes"], "val_accuracy": result["val_accuracy"]}


def run_pairs(results: Path, seed: int, out: Path) -> list[dict[str, Any]]:
    """Pin and retrain both runs of every dominated pair of ``seed``; see the module doc."""
    rows: list[dict[str, Any]] = []
    for pair in dominated_pairs(results / f"seed-{seed}"):
        row: dict[str, Any] = {"seed": seed, "baseline_method": pair["method"]}
        for side in ("joint", "baseline"):
            run_dir = pair[side]
            original = json.loads((run_dir / "result.json").read_text())
            pinned = pinned_run(results, seed, run_dir, out / f"seed-{seed}" / run_dir.name)
            row[side] = {"run": run_dir.name, **_point(original), "pinned": _point(pinned)}
        rows.append(row)
    (out / f"seed-{seed}" / "pairs.json").write_text(json.dumps(rows, indent=2))
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Both runs of each pair, as searched and as retrained on the joint schedule."""
    lines = [
        "| seed | joint run | size | val acc. | retrained | baseline run | size | val acc. "
        "| retrained | lead as run | lead retrained |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        j, b = row["joint"], row["baseline"]
        lead = 100 * (b["val_accuracy"] - j["val_accuracy"])
        retrained = 100 * (b["pinned"]["val_accuracy"] - j["pinned"]["val_accuracy"])
        lines.append(
            f"| {row['seed']} | {j['run']} | {j['size_bytes'] / 1000:.1f} kB "
            f"| {100 * j['val_accuracy']:.2f} % | {100 * j['pinned']['val_accuracy']:.2f} % "
            f"| {b['run']} | {b['size_bytes'] / 1000:.1f} kB | {100 * b['val_accuracy']:.2f} % "
            f"| {100 * b['pinned']['val_accuracy']:.2f} % | {lead:+.2f} | {retrained:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--results", type=Path, required=True, help="a Pareto benchmark folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--list", action="store_true", help="print the dominated pairs and stop (nothing is run)"
    )
    args = parser.parse_args()
    if args.list:
        for seed in args.seeds:
            for pair in dominated_pairs(args.results / f"seed-{seed}"):
                print(seed, pair["joint"].name, pair["baseline"].name)
        return
    torch.set_num_threads(args.threads)
    for seed in args.seeds:
        (args.out / f"seed-{seed}").mkdir(parents=True, exist_ok=True)
        run_pairs(args.results, seed, args.out)
    # Every finished seed's rows, this process's and other processes' alike.
    rows = [
        row
        for path in sorted(args.out.glob("seed-*/pairs.json"))
        for row in json.loads(path.read_text())
    ]
    (args.out / "pairs.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows)
    (args.out / "summary.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()

# SPDX-License-Identifier: Apache-2.0
# Wall-clock of the joint search against the sequential flow at one budget, the two alternated
# in one process so that both see the same machine.
"""Training time: the joint search against the sequential flow.

For one Pareto benchmark's protocol (its ``protocol.json``: model, data, epochs) and one size
budget, runs the joint search and the sequential flow (pruning, fine-tune, mixed precision,
fine-tune) from the same float warm-up, alternating them ``--repeats`` times in this process,
each from scratch in a fresh folder. Reports the wall-clock of each (conversion, search,
fine-tuning and the per-epoch validation; the shared warm-up excluded) and the median ratio of
sequential to joint over the repeats. The warm-up is read from the benchmark's seed folder when
its checkpoint is there, else trained once into ``--out``. Run:

    python benchmarks/training_time.py --out benchmarks/results/training_time
    python benchmarks/training_time.py --results benchmarks/results/pareto_kws \\
        --out benchmarks/results/training_time_kws
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from zerobit.train.baselines import TRAIN_TIMINGS, method_config, sequential
from zerobit.train.run import Run, RunConfig


def _warmup(results: Path, seed: int, base: RunConfig, out: Path) -> tuple[Path, float]:
    """The warm-up checkpoint of ``seed`` and the all-8-bit model's size in bits."""
    checkpoint = results / f"seed-{seed}" / "warmup" / "checkpoints" / "warmup.pt"
    folder = out / "warmup"
    if checkpoint.exists():
        (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        if not (folder / "checkpoints" / "warmup.pt").exists():
            shutil.copyfile(checkpoint, folder / "checkpoints" / "warmup.pt")
    warm = Run(base, folder)
    warm.prepare(resume=True)
    smodel = warm._convert(warm.warm_up())
    return folder / "checkpoints" / "warmup.pt", float(smodel.cost_references["size"])


def _seed_folder(folder: Path, warmup: Path, *names: str) -> None:
    for name in names:
        (folder / name / "checkpoints").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(warmup, folder / name / "checkpoints" / "warmup.pt")


def run_joint(base: RunConfig, warmup: Path, budget_bits: float) -> dict[str, Any]:
    """One joint search at ``budget_bits`` from scratch; returns its timings and result."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _seed_folder(folder, warmup, "joint")
        config = replace(method_config(base, "joint"), target=f"size={budget_bits / 8:.0f}B")
        start = time.perf_counter()
        result = Run(config, folder / "joint").run(resume=True)
        wall = time.perf_counter() - start
    return _record("joint", wall, result)


def run_sequential(base: RunConfig, warmup: Path, budget_bits: float) -> dict[str, Any]:
    """The sequential flow at ``budget_bits`` from scratch (both stages)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _seed_folder(folder, warmup, "warmup")
        start = time.perf_counter()
        (result,) = sequential(base, folder, resume=True, budgets=[budget_bits])
        wall = time.perf_counter() - start
    return _record("sequential", wall, result)


def _record(method: str, wall: float, result: dict[str, Any]) -> dict[str, Any]:
    timings = result["timings"]
    return {
        "method": method,
        "wall_s": wall,
        "train_s": sum(timings.get(key, 0.0) for key in TRAIN_TIMINGS),
        "phases_s": {key: timings[key] for key in TRAIN_TIMINGS if key in timings},
        "size_bytes": result["costs"]["size_bits"] / 8,
        "val_accuracy": result["val_accuracy"],
    }


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Median wall-clock per method and the median of the per-repeat ratios."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_method.setdefault(record["method"], []).append(record)
    joint, seq = by_method["joint"], by_method["sequential"]
    ratios = [s["wall_s"] / j["wall_s"] for j, s in zip(joint, seq)]
    return {
        "median_wall_s": {
            m: statistics.median(r["wall_s"] for r in rs) for m, rs in by_method.items()
        },
        "median_train_s": {
            m: statistics.median(r["train_s"] for r in rs) for m, rs in by_method.items()
        },
        "ratio_sequential_to_joint": {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
            "values": ratios,
        },
    }


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.8))
    labels = {
        "stage1_search_s": "pruning search",
        "stage1_finetune_s": "pruning fine-tune",
        "search_s": "search",
        "finetune_s": "fine-tune",
    }
    methods = ("joint", "sequential")
    records = summary["records"]
    left = [0.0, 0.0]
    for key in TRAIN_TIMINGS:
        widths = [
            statistics.median(r["phases_s"].get(key, 0.0) for r in records if r["method"] == m)
            for m in methods
        ]
        if any(widths):
            ax.barh(methods, widths, left=left, label=labels[key])
            left = [a + b for a, b in zip(left, widths)]
    other = [
        statistics.median(r["wall_s"] - r["train_s"] for r in records if r["method"] == m)
        for m in methods
    ]
    ax.barh(methods, other, left=left, color="0.7", label="data, conversion, evaluation")
    ax.set_xlabel("median wall-clock (s), shared warm-up excluded")
    ratio = summary["ratio_sequential_to_joint"]["median"]
    ax.set_title(f"sequential / joint = {ratio:.2f}x")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("benchmarks/results/pareto_fashion_mnist"),
        help="the Pareto benchmark whose protocol (and warm-up, if present) is used",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--budget", type=float, default=0.15, help="size budget, fraction of all-8-bit"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training_time"))
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from the JSON")
    args = parser.parse_args()
    out: Path = args.out
    if args.plot_only:
        plot(json.loads((out / "training_time.json").read_text()), out / "training_time.png")
        return
    if args.repeats < 1 or not 0 < args.budget <= 1:
        parser.error("--repeats must be >= 1 and --budget in (0, 1]")
    torch.set_num_threads(args.threads)
    protocol = json.loads((args.results / "protocol.json").read_text())
    base = RunConfig.from_dict({**protocol["base"], "seed": args.seed})
    out.mkdir(parents=True, exist_ok=True)
    warmup, reference = _warmup(args.results, args.seed, base, out)
    budget_bits = args.budget * reference
    records = []
    for repeat in range(args.repeats):
        # Alternate which goes first, so a drift of the machine's speed hits both alike.
        order = (run_joint, run_sequential) if repeat % 2 == 0 else (run_sequential, run_joint)
        for function in order:
            record = function(base, warmup, budget_bits)
            record["repeat"] = repeat
            records.append(record)
            print(
                f"repeat {repeat} {record['method']:10s} {record['wall_s']:7.1f} s  "
                f"{record['size_bytes']:9,.0f} B  val {100 * record['val_accuracy']:.2f} %",
                flush=True,
            )
    summary = {
        "protocol": {
            "results": str(args.results),
            "seed": args.seed,
            "budget_fraction_of_w8": args.budget,
            "budget_bytes": budget_bits / 8,
            "repeats": args.repeats,
            "threads": args.threads,
            "epochs": {p: protocol["base"][p]["epochs"] for p in ("search", "finetune")},
        },
        **summarize(records),
        "records": records,
    }
    (out / "training_time.json").write_text(json.dumps(summary, indent=2))
    plot(summary, out / "training_time.png")
    ratio = summary["ratio_sequential_to_joint"]
    print(
        f"sequential / joint wall-clock: median {ratio['median']:.2f}x "
        f"(min {ratio['min']:.2f}, max {ratio['max']:.2f})"
    )


if __name__ == "__main__":
    main()

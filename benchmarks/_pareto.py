# SPDX-License-Identifier: Apache-2.0
# Shared by the Pareto benchmarks: run the joint search and every baseline for several seeds
# through the pipeline, then compare the fronts at iso-accuracy.
"""Pareto comparison of the joint search against the baselines.

One folder per seed holds one shared float warm-up and every run: the joint search at a ladder
of size budgets, fixed precision w8a8/w4a8/w2a8, pruning only, layer-wise mixed precision and the
sequential flow (pruning, then mixed precision). Every phase has the same epochs for every
method. Each run resumes where it stopped; ``analyze`` reads whatever runs have finished and
marks the summary partial when some are missing.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from zerobit.config import COMPENSATIONS
from zerobit.report import load_runs, non_dominated, plot_pareto
from zerobit.report.pareto import interpolate_front
from zerobit.train.baselines import method_config, sequential
from zerobit.train.run import Run, RunConfig

FIXED = ("w8a8", "w4a8", "w2a8")
COST = "size_bytes"
METRIC = "val_accuracy"
#: Accuracy tolerance (absolute) of the relaxed iso-accuracy comparisons.
TOLERANCE = 0.005
#: Size budgets of each searched method, as fractions of the all-8-bit model's weight bits:
#: each method's ladder spans the part of its reachable range where accuracy is still useful
#: (layer-wise mixed precision cannot go below all-2-bit, 25 %; the sequential flow's first
#: stage prunes to twice its budget). The joint searches end 15 to 50 % under their budgets, so
#: their ladder has a sixth rung at 80 % (appended: run folders are named by rung index), without
#: which the joint front can stop short of w8a8's accuracy.
BUDGETS = {
    "joint": (0.5, 0.33, 0.22, 0.15, 0.1, 0.8),
    "pruning": (0.6, 0.4, 0.27),
    "layerwise": (0.7, 0.45, 0.3),
    "sequential": (0.45, 0.27, 0.15),
    "joint-long": (0.5, 0.33, 0.22, 0.15, 0.1),
}
#: The joint search given the sequential flow's total training (its fine-tuning runs the
#: epochs of the second search and both fine-tunes): the paper's claim is about equal budgets
#: of training, which the same-epochs-per-phase rule does not give the sequential flow.
#: Neither a baseline nor part of the joint front: it is compared with the sequential flow.
JOINT = ("joint", "joint-long")


#: Every method a seed runs, in order.
METHODS = (*FIXED, *BUDGETS)


def expected_runs(methods: Sequence[str] = METHODS) -> list[str]:
    """Names of the run folders one seed produces for ``methods``."""
    names = [m for m in FIXED if m in methods]
    for method, fractions in BUDGETS.items():
        if method in methods:
            names += [f"{method}-budget-{i}" for i in range(len(fractions))]
    return names


def _run(config: RunConfig, run_dir: Path, shared_warmup: Path) -> None:
    if (run_dir / "result.json").exists():
        return
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    if not (run_dir / "checkpoints" / "warmup.pt").exists():
        shutil.copyfile(shared_warmup, run_dir / "checkpoints" / "warmup.pt")
    print(f"{run_dir.name}: target {config.target}", flush=True)
    Run(config, run_dir).run(resume=True)


def _reuse_search(joint_dir: Path, run_dir: Path) -> None:
    """Start a joint-long run from the finished joint run's search (the same search: only the
    fine-tuning differs), so the search is not run twice; resuming it is exact. Without the
    joint run's checkpoint (checkpoints are not committed) the joint-long run searches again,
    step for step the same search with the same warm-up and thread count."""
    source = joint_dir / "checkpoints" / "search.pt"
    done = (joint_dir / "result.json").exists() and source.exists()
    if not done or (run_dir / "checkpoints" / "search.pt").exists():
        return
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, run_dir / "checkpoints" / "search.pt.tmp")
    lines = (joint_dir / "metrics.jsonl").read_text().splitlines()
    search = [line for line in lines if json.loads(line)["phase"] == "search"]
    (run_dir / "metrics.jsonl").write_text("".join(f"{line}\n" for line in search))
    (run_dir / "checkpoints" / "search.pt.tmp").replace(run_dir / "checkpoints" / "search.pt")


def reused_methods(methods: Sequence[str]) -> list[str]:
    """The baselines a variant running ``methods`` copies (never joint-long: it continues the
    joint runs' searches, which the variant replaces)."""
    return [m for m in METHODS if m not in methods and m not in JOINT]


def reuse_runs(source: Path, out: Path, methods: Sequence[str]) -> None:
    """Copy into the seed folder ``out`` the warm-up checkpoint of ``source`` (the same seed of
    another benchmark with the same warm-up) and the finished runs of every method not in
    ``methods``, without their checkpoints: a variant that changes one method reruns that one
    only and is compared with the other methods' runs as they ran there."""
    copy_runs(source, out, set(expected_runs(reused_methods(methods))))


def copy_runs(source: Path, out: Path, names: set[str]) -> None:
    """Copy the seed folder ``source``'s warm-up checkpoint into ``out`` and its run folders
    named in ``names`` without their checkpoints, skipping what ``out`` already has."""
    warmup = source / "warmup" / "checkpoints" / "warmup.pt"
    target = out / "warmup" / "checkpoints" / "warmup.pt"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(warmup, target)
    for run_dir in sorted(source.iterdir()):
        if run_dir.name in names and not (out / run_dir.name).exists():
            shutil.copytree(run_dir, out / run_dir.name, ignore=shutil.ignore_patterns("*.pt"))


def run_seed(
    base: RunConfig, out: Path, methods: Sequence[str] = METHODS, reuse: Path | None = None
) -> None:
    """Run ``methods`` for one seed into ``out`` (resuming finished and interrupted runs).

    Several processes may share a seed with disjoint ``methods``: the first builds the warm-up
    under a file lock, the others wait for it and read it. ``reuse``: a seed folder of another
    benchmark whose warm-up and other methods' runs are copied (see :func:`reuse_runs`).
    """
    from filelock import FileLock

    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out / "warmup.lock")):
        if reuse is not None:
            reuse_runs(reuse, out, methods)
        warm = Run(base, out / "warmup")
        warm.prepare(resume=True)
        smodel = warm._convert(warm.warm_up())
    reference = smodel.cost_references["size"]  # bits of the all-8-bit model
    shared = out / "warmup" / "checkpoints" / "warmup.pt"
    for method in FIXED:
        if method in methods:
            _run(method_config(base, method), out / method, shared)
    for method, fractions in BUDGETS.items():
        if method == "sequential" or method not in methods:
            continue
        config = method_config(base, method.removesuffix("-long"))
        if method == "joint-long":
            epochs = base.search.epochs + 2 * base.finetune.epochs
            config = replace(config, method=method, finetune=replace(base.finetune, epochs=epochs))
        for i, fraction in enumerate(fractions):
            target = f"size={fraction * reference / 8:.0f}B"
            run_dir = out / f"{method}-budget-{i}"
            if method == "joint-long":
                _reuse_search(out / f"joint-budget-{i}", run_dir)
            _run(replace(config, target=target), run_dir, shared)
    if "sequential" not in methods:
        return
    budgets = [fraction * reference for fraction in BUDGETS["sequential"]]
    sequential(base, out, resume=True, budgets=budgets)


def _front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [points[i] for i in non_dominated(points)] if points else []


def _reduction(joint: Sequence[tuple[float, float]], cost: float, accuracy: float) -> float | None:
    """1 - joint cost / ``cost`` at ``accuracy`` (None if the joint front never reaches it)."""
    joint_cost = interpolate_front(joint, accuracy)
    return None if joint_cost is None else 1.0 - joint_cost / cost


def _dominated(
    front: Sequence[tuple[float, float]], others: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Points of ``front`` that some point of ``others`` dominates (no costlier, no less
    accurate, strictly better in one)."""
    return [
        j
        for j in front
        if any(b[0] <= j[0] and b[1] >= j[1] and (b[0] < j[0] or b[1] > j[1]) for b in others)
    ]


def _seed_summary(seed_dir: Path) -> dict[str, Any]:
    runs = load_runs(sorted(p.parent for p in seed_dir.glob("*/result.json")))
    points: dict[str, list[tuple[float, float]]] = {}
    timings: dict[str, list[float]] = {}
    for run in runs:
        if run.name == "warmup" or run.path.name == "stage1":
            continue
        points.setdefault(run.method, []).append((run.costs[COST], run.metric(METRIC)))
        # Search and fine-tuning time (both stages of the sequential flow), not the shared
        # warm-up; wall-clock, so only comparable between runs on an equally loaded machine.
        train_s = sum(
            run.timings.get(key, 0.0)
            for key in ("search_s", "finetune_s", "stage1_search_s", "stage1_finetune_s")
        )
        timings.setdefault(run.method, []).append(train_s)
    joint = _front(points.get("joint", []))
    baseline_points = [p for m, ps in points.items() if m not in JOINT for p in ps]
    best = _front(baseline_points)
    summary: dict[str, Any] = {
        "points": {m: sorted(ps) for m, ps in points.items()},
        "joint_front": joint,
        "baseline_front": best,
        "mean_train_s": {m: statistics.mean(ts) for m, ts in timings.items()},
    }
    if not joint:
        return summary
    for name in ("w8a8", "w2a8"):
        if name in points:
            cost, accuracy = points[name][0]
            summary[f"reduction_vs_{name}"] = _reduction(joint, cost, accuracy)
            # The same within TOLERANCE of its accuracy: short fine-tuning leaves the joint front
            # a few tenths of a point under w8a8 at its top, within the seeds' spread.
            summary[f"reduction_vs_{name}_within_tolerance"] = _reduction(
                joint, cost, accuracy - TOLERANCE
            )
    # Against the best baseline front: at the accuracy of each of its points that the joint
    # front reaches.
    reductions = [r for c, a in best if (r := _reduction(joint, c, a)) is not None]
    summary["reduction_vs_best_baseline"] = {
        "mean": statistics.mean(reductions) if reductions else None,
        "max": max(reductions) if reductions else None,
        "points_compared": len(reductions),
    }
    # A joint front point is dominated if some baseline point is no costlier and no less
    # accurate, and strictly better in one.
    summary["joint_points_dominated_by_a_baseline"] = _dominated(joint, best)
    long = _front(points.get("joint-long", []))
    sequential_front = _front(points.get("sequential", []))
    if long and sequential_front:  # equal total training: against the sequential flow only
        compared = [r for c, a in sequential_front if (r := _reduction(long, c, a)) is not None]
        summary["equal_training"] = {
            "joint_long_front": long,
            "reduction_vs_sequential": statistics.mean(compared) if compared else None,
            "points_compared": len(compared),
            "dominated_by_sequential": _dominated(long, sequential_front),
        }
    everything = [(c, a, m) for m, ps in points.items() if m != "joint-long" for c, a in ps]
    summary["non_dominated"] = [
        {"method": everything[i][2], "size_bytes": everything[i][0], METRIC: everything[i][1]}
        for i in non_dominated([(c, a) for c, a, _ in everything])
    ]
    return summary


def _mean_spread(values: Sequence[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {
        "mean": statistics.mean(present) if present else None,
        "std": statistics.stdev(present) if len(present) > 1 else None,
        "values": list(values),
    }


def analyze(out: Path, seeds: Sequence[int], methods: Sequence[str] = METHODS) -> dict[str, Any]:
    """Summarize every finished run; write ``summary.json`` and ``pareto.png`` into ``out``.

    The summary is partial when a run of ``methods`` is missing for one of ``seeds``.
    """
    per_seed = {}
    missing = []
    for seed in seeds:
        seed_dir = out / f"seed-{seed}"
        for name in expected_runs(methods):
            if not (seed_dir / name / "result.json").exists():
                missing.append(f"seed-{seed}/{name}")
        if any(seed_dir.glob("*/result.json")):
            per_seed[seed] = _seed_summary(seed_dir)
    summary: dict[str, Any] = {
        "partial": bool(missing),
        "missing_runs": missing,
        "cost": COST,
        "metric": METRIC,
        "seeds": per_seed,
    }
    for name in ("w8a8", "w2a8"):
        for key in (f"reduction_vs_{name}", f"reduction_vs_{name}_within_tolerance"):
            summary[key] = _mean_spread([s.get(key) for s in per_seed.values()])
    summary["tolerance"] = TOLERANCE
    summary["reduction_vs_best_baseline"] = _mean_spread(
        [s.get("reduction_vs_best_baseline", {}).get("mean") for s in per_seed.values()]
    )
    summary["joint_dominated_by_no_baseline"] = (
        all(not s.get("joint_points_dominated_by_a_baseline", [None]) for s in per_seed.values())
        if per_seed
        else None
    )
    equal = [s["equal_training"] for s in per_seed.values() if "equal_training" in s]
    summary["equal_training"] = {
        "reduction_vs_sequential": _mean_spread([e["reduction_vs_sequential"] for e in equal]),
        "dominated_by_sequential": sum(len(e["dominated_by_sequential"]) for e in equal),
        "front_points": sum(len(e["joint_long_front"]) for e in equal),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(markdown(summary))
    if per_seed:
        first = out / f"seed-{min(per_seed)}"
        runs = [
            r
            for r in load_runs(sorted(p.parent for p in first.glob("*/result.json")))
            if r.path.name not in ("warmup", "stage1")
        ]
        plot_pareto(runs, out / "pareto.png", cost=COST, metric=METRIC, log_x=True)
    return summary


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown tables (what docs/benchmarks.md shows)."""
    rows = [
        ("vs w8a8, at its accuracy", "reduction_vs_w8a8"),
        (f"vs w8a8, within {100 * TOLERANCE:.1f} pt of it", "reduction_vs_w8a8_within_tolerance"),
        ("vs w2a8, at its accuracy", "reduction_vs_w2a8"),
        ("vs the best baseline front (mean over its points)", "reduction_vs_best_baseline"),
    ]
    lines = [
        "| size reduction of the joint front | mean | std | per seed |",
        "|---|---:|---:|---|",
    ]
    for label, key in rows:
        entry = summary[key]
        values = ", ".join(_percent(v) for v in entry["values"])
        std = "n/a" if entry["std"] is None else f"{100 * entry['std']:.1f} pt"
        lines.append(f"| {label} | {_percent(entry['mean'])} | {std} | {values} |")
    lines += ["", "| seed | method | size (B) | val accuracy |", "|---|---|---:|---:|"]
    for seed, per in summary["seeds"].items():
        front = {(c, a) for c, a in per["joint_front"]}
        for method, points in sorted(per["points"].items()):
            for cost, accuracy in points:
                mark = " (front)" if method == "joint" and (cost, accuracy) in front else ""
                lines.append(f"| {seed} | {method}{mark} | {cost:,.0f} | {100 * accuracy:.2f} % |")
    verdict = summary["joint_dominated_by_no_baseline"]
    lines += ["", f"Joint front dominated by no baseline point: {verdict}."]
    equal = summary["equal_training"]
    if equal["front_points"]:
        entry = equal["reduction_vs_sequential"]
        values = ", ".join(_percent(v) for v in entry["values"])
        lines.append(
            "At the sequential flow's total training (joint-long): size reduction against the "
            f"sequential front {_percent(entry['mean'])} (per seed: {values}); "
            f"{equal['dominated_by_sequential']} of {equal['front_points']} front points "
            "dominated by a sequential point."
        )
    if summary["partial"]:
        lines.append(f"Partial: {len(summary['missing_runs'])} runs missing.")
    return "\n".join(lines) + "\n"


def _write_protocol(out: Path, base: RunConfig, seeds: Sequence[int]) -> None:
    """Record the protocol in ``out/protocol.json``, with every seed run into ``out`` so far
    (processes that run one seed each add theirs)."""
    path = out / "protocol.json"
    known = json.loads(path.read_text())["seeds"] if path.exists() else []
    protocol = {
        "base": asdict(base),
        "seeds": sorted({*known, *seeds}),
        "budgets_fraction_of_w8": BUDGETS,
    }
    path.write_text(json.dumps(protocol, indent=2, default=str))


def main(
    base: RunConfig,
    out: Path,
    seeds: Sequence[int],
    analyze_only: bool = False,
    methods: Sequence[str] = METHODS,
    reuse: Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) every seed, then analyze; prints the headline numbers."""
    out.mkdir(parents=True, exist_ok=True)
    if not analyze_only:
        _write_protocol(out, base, seeds)
        for seed in seeds:
            start = time.perf_counter()
            source = None if reuse is None else reuse / f"seed-{seed}"
            run_seed(replace(base, seed=seed), out / f"seed-{seed}", methods, source)
            print(f"seed {seed}: {time.perf_counter() - start:.0f} s")
            analyze(out, seeds)  # partial results after each seed
    if reuse is not None:
        methods = [*methods, *reused_methods(methods)]
    summary = analyze(out, seeds, methods if analyze_only or reuse is not None else METHODS)
    for key in (
        "reduction_vs_w8a8",
        "reduction_vs_w8a8_within_tolerance",
        "reduction_vs_w2a8",
        "reduction_vs_best_baseline",
    ):
        print(f"{key}: {summary[key]['mean']} (std {summary[key]['std']})")
    print(f"joint front dominated by no baseline: {summary['joint_dominated_by_no_baseline']}")
    print(f"partial: {summary['partial']}")
    return summary


def cli(
    doc: str,
    dataset: str,
    model: str,
    subset: int | None,
    epochs: str,
    out: str,
    warmup_patience: int,
) -> None:
    """Command line of a Pareto benchmark script (its docstring is ``doc``)."""
    import argparse

    import torch

    from zerobit.train.loop import LR_SCHEDULES, PhaseConfig

    parser = argparse.ArgumentParser(description=doc.split("\n")[1])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--subset", type=int, default=subset, help="training samples (0: all)")
    parser.add_argument("--epochs", default=epochs, help="warm-up, search, fine-tune epochs")
    parser.add_argument(
        "--warmup-patience",
        type=int,
        default=warmup_patience,
        help="end the warm-up after this many epochs without a better validation accuracy",
    )
    parser.add_argument(
        "--finetune-patience",
        type=int,
        default=0,
        help="end each fine-tuning after this many epochs without a better validation accuracy "
        "(0: run every fine-tuning epoch)",
    )
    parser.add_argument(
        "--finetune-lr-schedule",
        choices=LR_SCHEDULES,
        default="constant",
        help="learning rate of every fine-tuning (the sequential flow's two included): constant, "
        "or cosine decay to 0 over its epochs",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated subset of the methods (e.g. to split a seed over two processes; "
        "with --analyze-only: the methods whose missing runs make the summary partial)",
    )
    parser.add_argument(
        "--detach-input-channels",
        choices=("auto", "no"),
        default="auto",
        help="no: every search prices a pruned channel in its consumers too (see `zerobit search "
        "--help`); auto: the paper's size cost",
    )
    parser.add_argument(
        "--budget-signal",
        choices=("argmax", "expected"),
        default="argmax",
        help="what steers every budgeted search's strength (see `zerobit search --help`)",
    )
    parser.add_argument(
        "--budget-damping",
        type=float,
        default=0.0,
        help="steps ahead every budgeted search's controller extrapolates a falling cost "
        "(see `zerobit search --help`; 0: off, as the benchmarks ran)",
    )
    parser.add_argument(
        "--weight-range",
        choices=("minmax", "mse"),
        default="minmax",
        help="how every run's weight quantization ranges are chosen (see `zerobit search "
        "--help`); minmax: the paper's",
    )
    parser.add_argument(
        "--no-weight-compensation",
        action="store_true",
        help="searches keep the warm-up's weights as trained at conversion instead of dividing "
        "them by the initial keep probability (the paper's weight compensation); the same as "
        "--weight-compensation off",
    )
    parser.add_argument(
        "--weight-compensation",
        choices=COMPENSATIONS,
        default="initial",
        help="how searches make up for the probability of pruning a channel (see `zerobit "
        "search --help`); initial: the paper's",
    )
    parser.add_argument(
        "--weight-bits",
        default="0,2,4,8",
        help="comma-separated weight bit-widths of every searched method's space (0: pruned); "
        "fixed-precision methods need theirs in it",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="a finished benchmark folder with the same warm-up: its warm-ups and the runs of "
        "every method not in --methods are copied instead of run",
    )
    parser.add_argument(
        "--distill",
        type=float,
        default=0.0,
        help="weight of distillation from the float warm-up in every method's search (or "
        "quantization-aware training) and fine-tuning (0: off)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--analyze-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(out))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warmup, search, finetune = (int(e) for e in args.epochs.split(","))
    try:
        weight_bits = tuple(sorted(int(b) for b in args.weight_bits.split(",")))
    except ValueError:
        parser.error(f"--weight-bits must be comma-separated integers, got {args.weight_bits!r}")
    base = RunConfig(
        dataset=dataset,
        model=model,
        subset=args.subset or None,
        weight_bits=weight_bits,
        act_bits=(8,),
        cost="size",
        warmup=PhaseConfig(warmup, patience=args.warmup_patience or None),
        search=PhaseConfig(search),
        finetune=PhaseConfig(
            finetune,
            patience=args.finetune_patience or None,
            lr_schedule=args.finetune_lr_schedule,
        ),
        detach_input_channels=None if args.detach_input_channels == "auto" else False,
        budget_signal=args.budget_signal,
        budget_damping=args.budget_damping,
        weight_range=args.weight_range,
        distill=args.distill,
        weight_compensation="off" if args.no_weight_compensation else args.weight_compensation,
    )
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    main(base, args.out, seeds, args.analyze_only, methods, args.reuse)

# SPDX-License-Identifier: Apache-2.0
# Whether the baseline leads that break the success criterion are larger than evaluation noise.
"""Test every dominated joint front point's accuracy gap for significance, and on the test set.

A joint front point counts as dominated when a baseline point is no larger and at least as
accurate on the validation set. Validation sets are small (1,200 clips for keyword spotting,
6,000 images for Fashion-MNIST), and each fine-tuning keeps its best validation epoch, so a
lead of a few samples may be noise. For each dominated point and the baseline run that leads
it by the most, this reports:

- the lead on the validation set, and on the test set (3,000 clips, 10,000 images), which no
  phase of any method selects on, so a real lead should show there too;
- where both runs' checkpoints are in this checkout, an exact one-sided McNemar test on each
  set: both final models are rebuilt from their checkpoints, each sample is scored right or
  wrong for both, and the p-value is the chance of at least the baseline's count of samples it
  alone gets right among the samples exactly one model gets right, were both models equally
  accurate. The rebuilt models' accuracies are checked equal to their result.json first;
- for keyword spotting, the same on fresh clips: the synthetic set's generator, asked for four
  times the sessions, speaks new clips with the same held-out test voices (about 9,250 of them
  after dropping those equal to a standard test clip), a larger sample than either split.

Significance speaks only to the accuracy gap: a baseline point that is smaller and equally
accurate within noise still dominates. Checkpoints are not committed; a run copied between
folders (``--reuse``) is found through any run with the same configuration and results that
kept its checkpoints. Run:

    python benchmarks/significance.py --out benchmarks/results/significance.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from _pareto import COST, JOINT, METRIC, _front
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from zerobit.data.kws import load_kws
from zerobit.report import load_runs
from zerobit.report.runs import RunResult
from zerobit.train.run import Run, RunConfig

RESULTS = Path(__file__).parent / "results"
#: Significance level of the one-sided tests.
ALPHA = 0.05
#: Folder-name prefixes of the two Pareto benchmarks (a variant's folder starts with its own).
BENCHMARKS = ("pareto_fashion_mnist", "pareto_kws")


def mcnemar_greater(baseline_only: int, joint_only: int) -> float:
    """One-sided exact McNemar p-value that the baseline is the more accurate model.

    Of the ``n = baseline_only + joint_only`` samples exactly one model classifies right, the
    chance of the baseline being the one on at least ``baseline_only`` of them if each were a
    fair coin flip.
    """
    n = baseline_only + joint_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(baseline_only, n + 1))
    return tail / 2**n


def _key(path: Path) -> str:
    data = json.loads((path / "result.json").read_text())
    same = (data["config"], data["val_accuracy"], data["test_accuracy"], data["costs"]["size_bits"])
    return json.dumps(same, sort_keys=True)


def run_id(path: Path) -> str:
    """A short name for a run's configuration and results: equal for a run and its copies
    (variants copy baselines from one another), so repeated pairs can be counted once."""
    return hashlib.sha256(_key(path).encode()).hexdigest()[:16]


def checkpoint_index(results: Path) -> dict[str, Path]:
    """Run directories that kept every checkpoint, by configuration and results."""
    index: dict[str, Path] = {}
    for ckpt in sorted(results.glob("**/checkpoints/finetune.pt")):
        run_dir = ckpt.parent.parent
        complete = all((ckpt.parent / f"{p}.pt").exists() for p in ("warmup", "search"))
        if complete and (run_dir / "result.json").exists():
            index.setdefault(_key(run_dir), run_dir)
    return index


def fresh_kws(size: int) -> TensorDataset:
    """Keyword-spotting clips from the test voices that the standard test split lacks.

    The set generated with ``size`` training sessions per class has ``size // 4`` test sessions
    per class from the same held-out voices; the clips equal to one of the standard test
    split's are dropped, the rest were never seen by any run.
    """
    (_, _), (test_x, _) = load_kws()
    (_, _), (x, y) = load_kws(size=size)
    seen = {hashlib.sha256(clip.numpy().tobytes()).digest() for clip in test_x}
    keep = torch.tensor([hashlib.sha256(c.numpy().tobytes()).digest() not in seen for c in x])
    return TensorDataset(x[keep], y[keep])


class Scorer:
    """Per-sample correctness of finished runs' final models, rebuilt from checkpoints.

    ``extra`` adds a split ``"fresh"`` for the runs of a dataset it names."""

    def __init__(
        self, index: dict[str, Path], extra: dict[str, TensorDataset] | None = None
    ) -> None:
        self.index = index
        self.extra = extra or {}
        self._data: dict[str, Any] = {}
        self._scores: dict[Path, dict[str, torch.Tensor]] = {}

    def scores(self, run: RunResult) -> dict[str, torch.Tensor] | None:
        """Per-sample correctness ``{"val": ..., "test": ...}`` of ``run`` (None: not kept)."""
        source = self.index.get(_key(run.path))
        if source is None:
            return None
        if source not in self._scores:
            self._scores[source] = self._score(source)
        return self._scores[source]

    def _score(self, run_dir: Path) -> dict[str, torch.Tensor]:
        config = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        data_key = json.dumps(
            [config.dataset, config.data_dir, config.subset, config.seed, config.val_fraction]
        )
        run = Run(config, run_dir, data=self._data.get(data_key))
        self._data[data_key] = run.data
        model = run.load_frozen()
        stored = json.loads((run_dir / "result.json").read_text())
        out = {}
        splits = [("val", run.data.val), ("test", run.data.test)]
        if config.dataset in self.extra:
            splits.append(("fresh", self.extra[config.dataset]))
        with torch.no_grad():
            for split, dataset in splits:
                right = [
                    model(x).argmax(dim=1) == y for x, y in DataLoader(dataset, batch_size=512)
                ]
                out[split] = torch.cat(right)
                if split == "fresh":
                    continue
                count, total = int(out[split].sum()), len(out[split])
                expected = round(stored[f"{split}_accuracy"] * total)  # stored in float32 steps
                if count != expected:
                    raise ValueError(
                        f"{run_dir}: the rebuilt model gets {count} of {total} {split} samples "
                        f"right, result.json says {expected}"
                    )
        return out


def _pair(joint: RunResult, baseline: RunResult, scorer: Scorer) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "joint_run": joint.path.name,
        "joint_id": run_id(joint.path),
        "joint_size": joint.costs[COST],
        "baseline_run": baseline.path.name,
        "baseline_id": run_id(baseline.path),
        "baseline_method": baseline.method,
        "baseline_size": baseline.costs[COST],
        "val_lead_pt": 100 * (baseline.metric(METRIC) - joint.metric(METRIC)),
        "test_lead_pt": 100 * (baseline.metric("test_accuracy") - joint.metric("test_accuracy")),
    }
    mine, theirs = scorer.scores(joint), scorer.scores(baseline)
    if mine is not None and theirs is not None:
        for split in [s for s in ("val", "test", "fresh") if s in mine and s in theirs]:
            if split == "fresh":
                n = len(mine[split])
                entry["fresh_lead_pt"] = (
                    100 * (int(theirs[split].sum()) - int(mine[split].sum())) / n
                )
            only_baseline = int((theirs[split] & ~mine[split]).sum())
            only_joint = int((mine[split] & ~theirs[split]).sum())
            entry[f"{split}_discordant"] = [only_baseline, only_joint]
            entry[f"{split}_p"] = mcnemar_greater(only_baseline, only_joint)
    return entry


def seed_pairs(seed_dir: Path, scorer: Scorer) -> list[dict[str, Any]]:
    """For each dominated joint front point of one seed, its widest-leading dominator."""
    runs = [
        r
        for r in load_runs(sorted(p.parent for p in seed_dir.glob("*/result.json")))
        if r.name != "warmup" and r.path.name != "stage1"
    ]
    joint = [r for r in runs if r.method == "joint"]
    front = set(_front([(r.costs[COST], r.metric(METRIC)) for r in joint]))
    baselines = [r for r in runs if r.method not in JOINT]
    pairs = []
    for point in sorted(
        (r for r in joint if (r.costs[COST], r.metric(METRIC)) in front),
        key=lambda r: r.costs[COST],
    ):
        size, accuracy = point.costs[COST], point.metric(METRIC)
        over = [
            b
            for b in baselines
            if b.costs[COST] <= size
            and b.metric(METRIC) >= accuracy
            and (b.costs[COST] < size or b.metric(METRIC) > accuracy)
        ]
        if over:
            pairs.append(_pair(point, max(over, key=lambda b: b.metric(METRIC)), scorer))
    return pairs


def folder_status(folder: Path, scorer: Scorer) -> dict[str, Any]:
    """Pairs per seed, and per seed whether any dominating lead is significant on each set."""
    seeds = {}
    for seed_dir in sorted(folder.glob("seed-*")):
        pairs = seed_pairs(seed_dir, scorer)
        tested = [p for p in pairs if "val_p" in p]
        seeds[seed_dir.name] = {
            "pairs": pairs,
            "tested": len(tested) == len(pairs),
            "significant_val": sum(p["val_p"] < ALPHA for p in tested),
            "significant_both": sum(p["val_p"] < ALPHA and p["test_p"] < ALPHA for p in tested),
            "test_lead_positive": sum(p["test_lead_pt"] > 0 for p in pairs),
        }
    return seeds


def score_runs(run_dirs: list[Path], fresh_size: int) -> dict[str, dict[str, Any]]:
    """Accuracy of each run's rebuilt final model on validation, test and (keyword spotting)
    fresh clips, with its size and weight bit counts. A run copied without its checkpoints is
    rebuilt from a copy under benchmarks/results that kept them."""
    index = checkpoint_index(RESULTS)
    index.update({_key(d): d for d in run_dirs if (d / "checkpoints" / "finetune.pt").exists()})
    scorer = Scorer(index, {"kws": fresh_kws(fresh_size)} if fresh_size else {})
    out = {}
    for run_dir in tqdm(run_dirs, desc="runs"):
        run = load_runs([run_dir])[0]
        scores = scorer.scores(run)
        if scores is None:
            raise ValueError(f"{run_dir} lacks a checkpoint")
        bits: dict[int, int] = {}
        for entry in run.architecture.values():
            for b in entry.get("weight_bits", ()):
                bits[b] = bits.get(b, 0) + 1
        out[str(run_dir)] = {
            "method": run.method,
            "weight_bits": list(run.config["weight_bits"]),
            "size_bytes": run.costs[COST],
            "channels_by_bits": dict(sorted(bits.items())),
            **{f"{k}_accuracy": v.double().mean().item() for k, v in scores.items()},
            **({"fresh_samples": len(scores["fresh"])} if "fresh" in scores else {}),
        }
    return out


def _seed_and_label(path: str) -> tuple[str, str]:
    """``(seed, run label)`` of a run directory: the seed from a ``seed-N`` folder or name part,
    the label its name without that part (so runs of several seeds share it)."""
    name = Path(path).name
    found = re.search(r"seed-(\d+)", path)
    return (found.group(1) if found else "-", re.sub(r"-?seed-\d+", "", name))


def _labels(paths: list[str]) -> dict[str, tuple[str, str]]:
    """``(seed, label)`` per run path; runs of one name from several benchmark folders (such
    as the joint-budget-5 of two variants) are labelled ``folder/name``."""
    found = {path: _seed_and_label(path) for path in paths}
    folders: dict[tuple[str, str], set[str]] = {}
    for path, key in found.items():
        folders.setdefault(key, set()).add(str(Path(path).parent.parent))
    return {
        path: (seed, f"{Path(path).parent.parent.name}/{label}")
        if len(folders[(seed, label)]) > 1
        else (seed, label)
        for path, (seed, label) in found.items()
    }


def score_markdown(scores: dict[str, dict[str, Any]]) -> str:
    """Two tables: every run, and each label's mean over its seeds."""
    lines = [
        "| seed | run | space | size | channels by weight bits | val | test | fresh clips |",
        "|---:|---|---|---:|---|---:|---:|---:|",
    ]
    splits = ("val", "test", "fresh")
    means: dict[str, list[list[float]]] = {}
    labels = _labels(list(scores))
    for path, s in scores.items():
        seed, label = labels[path]
        counts = ", ".join(f"{n} at {b}" for b, n in s["channels_by_bits"].items())
        values = [s.get(f"{k}_accuracy") for k in splits]
        cells = " | ".join("-" if v is None else f"{100 * v:.2f} %" for v in values)
        lines.append(
            f"| {seed} | {label} | {tuple(s['weight_bits'])} | {s['size_bytes'] / 1000:.1f} kB "
            f"| {counts} | {cells} |"
        )
        means.setdefault(label, []).append([math.nan if v is None else v for v in values])
    lines += [
        "",
        "| run | seeds | mean val | mean test | mean fresh clips |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, rows in means.items():
        cells = " | ".join(f"{100 * sum(col) / len(col):.2f} %" for col in zip(*rows))
        lines.append(f"| {label} | {len(rows)} | {cells} |")
    return "\n".join(lines)


def _cells(seeds: dict[str, Any], value: Any) -> str:
    return ", ".join(value(s) for s in seeds.values())


def markdown(statuses: dict[str, dict[str, Any]]) -> str:
    """Two tables: per folder (per-seed counts, comma-separated), and per benchmark."""
    lines = [
        "| folder | dominated | lead also on test | significant on val | on val and test "
        "| widest val lead |",
        "|---|---|---|---|---|---|",
    ]
    for folder, seeds in statuses.items():
        pairs = [p for s in seeds.values() for p in s["pairs"]]
        widest = max(pairs, key=lambda p: p["val_lead_pt"], default=None)
        shown = "-"
        if widest is not None:
            shown = f"{widest['val_lead_pt']:+.2f} pt ({widest['baseline_method']}"
            shown += f", p={widest['val_p']:.3f})" if "val_p" in widest else ")"
        lines.append(
            f"| {folder} | {_cells(seeds, lambda s: str(len(s['pairs'])))} "
            f"| {_cells(seeds, lambda s: str(s['test_lead_positive']))} "
            f"| {_cells(seeds, lambda s: str(s['significant_val']) if s['tested'] else 'n/a')} "
            f"| {_cells(seeds, lambda s: str(s['significant_both']) if s['tested'] else 'n/a')} "
            f"| {shown} |"
        )
    lines += [
        "",
        "| benchmark | seed runs | dominated | lead also on test | seed runs tested | pairs tested "
        "| significant on val | on val and test | by | tested seed runs with none significant "
        "(val; val and test) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, row in totals(statuses).items():
        by = ", ".join(f"{m} {n}" for m, n in row["significant_by"].items()) or "-"
        lines.append(
            f"| {name} | {row['seed_runs']} | {row['pairs']} | {row['test_lead_positive']} "
            f"| {row['seed_runs_tested']} | {row['pairs_tested']} | {row['significant_val']} "
            f"| {row['significant_both']} | {by} | {row['clean_val']}; {row['clean_both']} |"
        )
    lines += [
        "",
        "Each pair counted once (variants copy runs from one another), per dominating method:",
        "",
        "| benchmark | method | pairs | lead also on test | tested | significant on val "
        "| on val and test | distinct baseline runs | tested on fresh clips | lead there "
        "| significant there | joint significantly ahead there |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in totals(statuses).items():
        for method, c in row["distinct_by"].items():
            lines.append(
                f"| {name} | {method} | {c['pairs']} | {c['test_lead_positive']} | {c['tested']} "
                f"| {c['significant_val']} | {c['significant_both']} | {c['baseline_runs']} "
                f"| {c['fresh_tested']} | {c['fresh_lead_positive']} | {c['significant_fresh']} "
                f"| {c['joint_significant_fresh']} |"
            )
    return "\n".join(lines)


def totals(statuses: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per benchmark (folders named after it), the counts of :func:`markdown`'s second table.

    ``significant_by`` counts the significant leads (on val) per dominating method;
    ``distinct_by`` counts, per dominating method, each pair once however many variants share
    it: distinct pairs, how many lead on test too, how many were tested, significant on
    validation and on both sets, and the distinct baseline runs among them."""
    out = {}
    for name in BENCHMARKS:
        seeds = [s for f, v in statuses.items() if f.startswith(name) for s in v.values()]
        tested = [s for s in seeds if s["tested"]]
        pairs = [p for s in seeds for p in s["pairs"]]
        significant = [p for s in tested for p in s["pairs"] if p["val_p"] < ALPHA]
        by: dict[str, int] = {}
        for p in significant:
            by[p["baseline_method"]] = by.get(p["baseline_method"], 0) + 1
        out[name] = {
            "seed_runs": len(seeds),
            "pairs": len(pairs),
            "test_lead_positive": sum(p["test_lead_pt"] > 0 for p in pairs),
            "seed_runs_tested": len(tested),
            "pairs_tested": sum(len(s["pairs"]) for s in tested),
            "significant_val": len(significant),
            "significant_both": sum(s["significant_both"] for s in tested),
            "significant_by": dict(sorted(by.items())),
            "clean_val": sum(s["significant_val"] == 0 for s in tested),
            "clean_both": sum(s["significant_both"] == 0 for s in tested),
            "distinct_by": _distinct(pairs),
        }
    return out


def _distinct(pairs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    unique = {(p["joint_id"], p["baseline_id"]): p for p in pairs}.values()
    out = {}
    for method in sorted({p["baseline_method"] for p in unique}):
        mine = [p for p in unique if p["baseline_method"] == method]
        tested = [p for p in mine if "val_p" in p]
        out[method] = {
            "pairs": len(mine),
            "test_lead_positive": sum(p["test_lead_pt"] > 0 for p in mine),
            "tested": len(tested),
            "significant_val": sum(p["val_p"] < ALPHA for p in tested),
            "significant_both": sum(p["val_p"] < ALPHA and p["test_p"] < ALPHA for p in tested),
            "baseline_runs": len({p["baseline_id"] for p in mine}),
            "fresh_tested": sum("fresh_p" in p for p in mine),
            "fresh_lead_positive": sum(p.get("fresh_lead_pt", 0) > 0 for p in mine),
            "significant_fresh": sum(p.get("fresh_p", 1) < ALPHA for p in mine),
            # The other way round: the joint model significantly more accurate on fresh clips.
            "joint_significant_fresh": sum(
                mcnemar_greater(*reversed(p["fresh_discordant"])) < ALPHA
                for p in mine
                if "fresh_discordant" in p
            ),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "significance.json")
    parser.add_argument(
        "--folders",
        nargs="*",
        default=None,
        help="benchmark folders under benchmarks/results (default: every pareto_* folder)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--kws-fresh-size",
        type=int,
        default=4000,
        help="also score keyword-spotting runs on the clips from the test voices that the set "
        "with this many training sessions per class adds to the standard test split (0: off)",
    )
    parser.add_argument(
        "--score",
        type=Path,
        nargs="*",
        default=None,
        help="instead: print (and write to --out) the validation, test and fresh-clip accuracy "
        "of these finished run directories (they need their checkpoints); with --markdown-only "
        "and no directories, print the tables of such an --out file",
    )
    parser.add_argument(
        "--markdown-only",
        action="store_true",
        help="print the tables of an existing --out file without scoring anything",
    )
    args = parser.parse_args()
    if args.markdown_only:
        if args.score is not None:
            print(score_markdown(json.loads(args.out.read_text())))
            return
        statuses = json.loads(args.out.read_text())
        statuses.pop("totals", None)
        print(markdown(statuses))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.score is not None:
        if not args.score:
            parser.error("--score needs run directories (or --markdown-only)")
        scores = score_runs(args.score, args.kws_fresh_size)
        args.out.write_text(json.dumps(scores, indent=2))
        print(score_markdown(scores))
        return
    folders = (
        [RESULTS / f for f in args.folders]
        if args.folders
        else sorted(p.parent for p in RESULTS.glob("pareto_*/summary.json"))
    )
    missing = [f.name for f in folders if not (f / "summary.json").exists()]
    if missing:
        parser.error(
            f"no benchmark summary in {', '.join(missing)} under {RESULTS} (--folders takes "
            "space-separated folder names; rebuild a summary with the benchmark's --analyze-only)"
        )
    extra = {"kws": fresh_kws(args.kws_fresh_size)} if args.kws_fresh_size else {}
    scorer = Scorer(checkpoint_index(RESULTS), extra)
    statuses = {}
    for folder in tqdm(folders, desc="folders"):
        statuses[folder.name] = folder_status(folder, scorer)
        args.out.write_text(json.dumps(statuses, indent=2))  # partial results survive a kill
    args.out.write_text(json.dumps({**statuses, "totals": totals(statuses)}, indent=2))
    print(markdown(statuses))


if __name__ == "__main__":
    main()

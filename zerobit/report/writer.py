# SPDX-License-Identifier: Apache-2.0
# write_report: the report folder (report.md, runs.csv, pareto.png, arch_<name>.png) of some runs.
from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import Any

from zerobit.report.pareto import iso_accuracy_reduction, pareto_front, run_points
from zerobit.report.plots import METRIC_LABELS, cost_label, plot_architecture, plot_pareto
from zerobit.report.runs import INPUT_PREFIX, RunResult, load_runs
from zerobit.report.tables import FRONT_MARK, format_number, format_table, write_csv

REPORT_FILE = "report.md"
CSV_FILE = "runs.csv"
PARETO_FILE = "pareto.png"


def architecture_file(name: str) -> str:
    """Return the file name of a run's architecture map: ``arch_<name>.png``, made path-safe.

    Example:
        >>> architecture_file("joint s=1.0/seed 2")
        'arch_joint_s_1.0_seed_2.png'
    """
    return f"arch_{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}.png"


def write_report(
    run_dirs: Iterable[str | PathLike[str]],
    out_dir: str | PathLike[str],
    cost: str = "size_bytes",
    metric: str = "val_accuracy",
) -> dict[str, Any]:
    """Compare runs: write ``report.md``, ``runs.csv``, ``pareto.png`` and architecture maps.

    ``report.md`` holds the table of `format_table` and links (relative, so the folder can be
    moved) to ``pareto.png`` and to ``arch_<name>.png`` (`architecture_file`) of each run on
    the front of lowest ``cost`` and highest ``metric``. A front run with no layer to draw
    gets no map.

    Args:
        run_dirs: Run directories (or their ``result.json`` files).
        out_dir: The report folder, created if needed; existing files of the same names are
            replaced.
        cost: The cost axis, a key of every run's ``costs``.
        metric: ``"val_accuracy"`` or ``"test_accuracy"``.

    Returns:
        ``{"runs": [names], "front": [names by increasing cost], "report": Path,
        "csv": Path, "pareto_plot": Path, "architecture_plots": {name: Path}}``.

    Raises:
        ValueError: If there are no runs, a result is missing or malformed, a run lacks the
            cost or metric, or two runs share a name (their maps would collide).
    """
    return _write(load_runs(run_dirs), Path(out_dir), cost, metric)


def compare_folders(
    folders: Sequence[str | PathLike[str]],
    out_dir: str | PathLike[str],
    cost: str = "size_bytes",
    metric: str = "val_accuracy",
) -> dict[str, Any]:
    """Report several folders of runs side by side, each folder's front against the first's.

    A folder is a sweep or baselines folder (its run directories ``*/result.json``; the shared
    ``warmup`` is left out) or a single run directory. Every run is named and grouped by its
    folder (``<folder>/<run>``, method ``<folder>: <method>``), so two sweeps over different
    spaces, costs or settings (e.g. started from one warm-up with ``--warmup-from``) get one
    front each in ``pareto.png``. ``report.md`` adds a section comparing each folder's front
    (over all its runs) with the first folder's: at the accuracy of every point of the first
    front that both reach, ``1 - cost / first cost`` interpolated on each front (positive:
    smaller), and the points of each front the other's points dominate.

    Returns:
        :func:`write_report`'s summary plus ``"comparison"``: per folder after the first,
        ``{"reduction_mean", "reduction_min", "reduction_max", "points_compared",
        "dominated_by_first", "dominating_first"}``.

    Raises:
        ValueError: As :func:`write_report`, for fewer than two folders, a folder without
            finished runs, or two folders of the same name.
    """
    if len(folders) < 2:
        raise ValueError("compare at least two folders")
    groups: dict[str, list[RunResult]] = {}
    for folder in map(Path, folders):
        if (folder / "result.json").exists():
            dirs = [folder]
        else:
            dirs = sorted(p.parent for p in folder.glob("*/result.json"))
            dirs = [d for d in dirs if d.name != "warmup"]
        if not dirs:
            raise ValueError(f"{folder} holds no finished run (no result.json in it or below)")
        label = folder.resolve().name
        if label in groups:
            raise ValueError(f"two folders are named {label!r}; their runs would be confused")
        groups[label] = [
            replace(r, name=f"{label}/{r.name}", method=f"{label}: {r.method}")
            for r in load_runs(dirs)
        ]
    (first, reference), *others = groups.items()
    ref_points = run_points(pareto_front(reference, cost, metric), cost, metric)
    comparison = {}
    for label, runs in others:
        points = run_points(pareto_front(runs, cost, metric), cost, metric)
        reductions = [
            r
            for _, y in ref_points
            if (r := iso_accuracy_reduction(points, ref_points, y)) is not None
        ]
        comparison[label] = {
            "reduction_mean": statistics.mean(reductions) if reductions else None,
            "reduction_min": min(reductions) if reductions else None,
            "reduction_max": max(reductions) if reductions else None,
            "points_compared": len(reductions),
            "dominated_by_first": _dominated_count(points, ref_points),
            "dominating_first": _dominated_count(ref_points, points),
            "front_points": len(points),
        }
    runs = [run for group in groups.values() for run in group]
    summary = _write(
        runs, Path(out_dir), cost, metric, _comparison_markdown(first, comparison, cost, metric)
    )
    summary["comparison"] = comparison
    return summary


def _dominated_count(points: list[tuple[float, float]], others: list[tuple[float, float]]) -> int:
    """How many of ``points`` some point of ``others`` dominates."""
    return sum(any(c <= x and a >= y and (c < x or a > y) for c, a in others) for x, y in points)


def _comparison_markdown(
    first: str, comparison: dict[str, dict[str, Any]], cost: str, metric: str
) -> list[str]:
    lines = [
        "## Fronts compared",
        "",
        f"Each folder's front against `{first}`'s, at the {METRIC_LABELS[metric]} of each point of "
        f"`{first}`'s front that both reach ({cost} interpolated on each front; positive: "
        "smaller).",
        "",
        f"| folder | {cost} reduction, mean | min | max | points compared "
        f"| its front points dominated by `{first}`'s | `{first}`'s dominated by its |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, c in comparison.items():
        cells = [
            "-" if c[k] is None else f"{100 * c[k]:.1f} %"
            for k in ("reduction_mean", "reduction_min", "reduction_max")
        ]
        lines.append(
            f"| {label} | {' | '.join(cells)} | {c['points_compared']} "
            f"| {c['dominated_by_first']} of {c['front_points']} | {c['dominating_first']} |"
        )
    return lines + [""]


def _write(
    runs: list[RunResult],
    out: Path,
    cost: str,
    metric: str,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    if not runs:
        raise ValueError("no runs to report")
    _check_unique_names(runs)
    out.mkdir(parents=True, exist_ok=True)
    front = pareto_front(runs, cost, metric)
    table = format_table(runs, cost, metric, front)
    csv_path = write_csv(out / CSV_FILE, runs)
    pareto_path = plot_pareto(runs, out / PARETO_FILE, cost, metric)
    maps: dict[str, Path] = {}
    for run in front:
        if any(not name.startswith(INPUT_PREFIX) for name in run.architecture):
            maps[run.name] = plot_architecture(
                run.architecture,
                out / architecture_file(run.name),
                title=f"{run.name} ({run.method})",
            )
    report_path = out / REPORT_FILE
    report_path.write_text(
        _markdown(runs, front, table, maps, cost, metric, pareto_path.name, extra or []),
        encoding="utf-8",
    )
    return {
        "runs": [run.name for run in runs],
        "front": [run.name for run in front],
        "report": report_path,
        "csv": csv_path,
        "pareto_plot": pareto_path,
        "architecture_plots": maps,
    }


def _check_unique_names(runs: list[RunResult]) -> None:
    seen: dict[str, RunResult] = {}
    for run in runs:
        key = architecture_file(run.name)
        if key in seen:
            raise ValueError(
                f"runs {seen[key].path} ({seen[key].name!r}) and {run.path} ({run.name!r}) "
                f"have the same name once made path-safe; give them distinct 'name's"
            )
        seen[key] = run


def _markdown(
    runs: list[RunResult],
    front: list[RunResult],
    table: str,
    maps: dict[str, Path],
    cost: str,
    metric: str,
    pareto_file: str,
    extra: list[str],
) -> str:
    lines = [
        "# zerobit report",
        "",
        f"{len(runs)} runs. Pareto front of {METRIC_LABELS[metric]} vs {cost_label(cost)}: "
        + ", ".join(run.name for run in front)
        + ".",
        "",
        f"![{metric} vs {cost}]({pareto_file})",
        "",
        *extra,
        "## Runs",
        "",
        table.rstrip("\n"),
        "",
        f"`{FRONT_MARK}`: Pareto-optimal. "
        f"Every cost and timing of every run: [{CSV_FILE}]({CSV_FILE}).",
        "",
        "## Architectures of the Pareto-optimal runs",
    ]
    for run in front:
        if run.name not in maps:
            continue
        test = "-" if run.test_accuracy is None else f"{run.test_accuracy:.4f}"
        lines += [
            "",
            f"### {run.name} ({run.method})",
            "",
            f"{cost} {format_number(run.cost(cost))}, val_accuracy {run.val_accuracy:.4f}, "
            f"test_accuracy {test}.",
            "",
            f"![architecture of {run.name}]({maps[run.name].name})",
        ]
    return "\n".join(lines) + "\n"

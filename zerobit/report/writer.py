# SPDX-License-Identifier: Apache-2.0
# write_report: the report folder (report.md, runs.csv, pareto.png, arch_<name>.png) of some runs.
from __future__ import annotations

import re
from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Any

from zerobit.report.pareto import pareto_front
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
    runs = load_runs(run_dirs)
    if not runs:
        raise ValueError("no runs to report")
    _check_unique_names(runs)
    out = Path(out_dir)
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
        _markdown(runs, front, table, maps, cost, metric, pareto_path.name), encoding="utf-8"
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

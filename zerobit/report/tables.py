# SPDX-License-Identifier: Apache-2.0
# Tables of runs: a Markdown table with the Pareto-optimal runs marked, and a CSV of everything.
from __future__ import annotations

import csv
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from zerobit.report.pareto import pareto_front
from zerobit.report.runs import RunResult

FRONT_MARK = "*"
# Costs in the order the pipeline writes them; any others follow alphabetically.
KNOWN_COSTS = (
    "size_bits",
    "size_bytes",
    "bitops",
    "macs",
    "mpic_cycles",
    "ne16_cycles",
    "flash_bytes",
    "ram_bytes",
)


def format_number(value: float | None, digits: int = 6) -> str:
    """Format a cost for a table: ``digits`` significant digits, ``"-"`` for None.

    Example:
        >>> format_number(15432.0), format_number(1.2e8), format_number(None)
        ('15432', '1.2e+08', '-')
    """
    return "-" if value is None else f"{value:.{digits}g}"


def format_table(
    runs: Sequence[RunResult],
    cost: str = "size_bytes",
    metric: str = "val_accuracy",
    front: Sequence[RunResult] | None = None,
) -> str:
    """Return a Markdown table of the runs by increasing cost, marking the Pareto-optimal ones.

    Columns: ``front`` (`FRONT_MARK` for a run on the front), name, method, the cost, both
    accuracies (4 decimals, ``-`` when absent) and pruned/total output channels. Runs of equal
    cost are ordered by decreasing ``metric``, then by name.

    Args:
        runs: The runs.
        cost: The cost column and sort key.
        metric: ``"val_accuracy"`` or ``"test_accuracy"``: the front's other axis.
        front: The runs to mark; None computes `pareto_front` of ``runs``.

    Returns:
        The table, one line per row, ending with a newline.

    Raises:
        ValueError: If a run lacks the cost or the metric.
    """
    if front is None:
        front = pareto_front(runs, cost, metric)
    ordered = sorted(runs, key=lambda r: (r.cost(cost), -r.metric(metric), r.name))
    header = ["front", "name", "method", cost, "val_accuracy", "test_accuracy", "pruned channels"]
    rows = []
    for run in ordered:
        pruned, total = run.channel_counts()
        rows.append(
            [
                FRONT_MARK if run in front else "",
                run.name,
                run.method,
                format_number(run.cost(cost)),
                f"{run.val_accuracy:.4f}",
                "-" if run.test_accuracy is None else f"{run.test_accuracy:.4f}",
                f"{pruned}/{total}" if total else "-",
            ]
        )
    return _markdown(header, rows, right_aligned=(3, 4, 5, 6))


def _markdown(header: list[str], rows: list[list[str]], right_aligned: Sequence[int]) -> str:
    # Padded columns keep the Markdown readable as plain text in a terminal too.
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    widths = [max(width, 3) for width in widths]

    def line(cells: list[str]) -> str:
        padded = [
            cell.rjust(width) if i in right_aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (width - 1) + ":" if i in right_aligned else "-" * width
        for i, width in enumerate(widths)
    ]
    return "\n".join([line(header), line(rule), *(line(row) for row in rows)]) + "\n"


def csv_columns(runs: Sequence[RunResult]) -> list[str]:
    """Return the CSV header for ``runs``: identity, accuracies, every cost, every timing."""
    costs = {key for run in runs for key in run.costs}
    ordered_costs = [c for c in KNOWN_COSTS if c in costs] + sorted(costs - set(KNOWN_COSTS))
    timings = sorted({key for run in runs for key in run.timings})
    return [
        "name",
        "method",
        "path",
        "val_accuracy",
        "test_accuracy",
        *ordered_costs,
        "pruned_channels",
        "total_channels",
        *timings,
    ]


def write_csv(path: str | PathLike[str], runs: Sequence[RunResult]) -> Path:
    """Write one row per run with every cost and timing any run reports (`csv_columns`).

    Numbers are written with ``repr`` so they read back exactly; a value a run lacks is an
    empty cell.

    Returns:
        The path written.
    """
    columns = csv_columns(runs)
    out = Path(path)
    with out.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for run in runs:
            pruned, total = run.channel_counts()
            values: dict[str, object] = {
                "name": run.name,
                "method": run.method,
                "path": str(run.path),
                "val_accuracy": run.val_accuracy,
                "test_accuracy": run.test_accuracy,
                "pruned_channels": pruned,
                "total_channels": total,
                **run.costs,
                **run.timings,
            }
            writer.writerow([_cell(values.get(column)) for column in columns])
    return out


def _cell(value: object) -> str:
    if value is None:
        return ""
    # repr of a float is the shortest string that reads back to the same float.
    return repr(value) if isinstance(value, float) else str(value)

# SPDX-License-Identifier: Apache-2.0
# Public API of the reports: load runs, Pareto fronts, tables, figures and the report folder.
from zerobit.report.pareto import (
    interpolate_front,
    iso_accuracy_reduction,
    non_dominated,
    pareto_front,
    run_points,
)
from zerobit.report.plots import (
    BIT_COLOURS,
    NO_CHANNEL_COLOUR,
    PRUNED_COLOUR,
    MapLayout,
    bit_colours,
    cost_label,
    plot_architecture,
    plot_pareto,
)
from zerobit.report.runs import RunResult, load_run, load_runs, parse_architecture
from zerobit.report.tables import format_table, write_csv
from zerobit.report.writer import architecture_file, compare_folders, write_report

__all__ = [
    "BIT_COLOURS",
    "NO_CHANNEL_COLOUR",
    "PRUNED_COLOUR",
    "MapLayout",
    "RunResult",
    "architecture_file",
    "compare_folders",
    "bit_colours",
    "cost_label",
    "format_table",
    "interpolate_front",
    "iso_accuracy_reduction",
    "load_run",
    "load_runs",
    "non_dominated",
    "parse_architecture",
    "pareto_front",
    "plot_architecture",
    "plot_pareto",
    "run_points",
    "write_csv",
    "write_report",
]

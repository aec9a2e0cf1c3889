# SPDX-License-Identifier: Apache-2.0
# PNG figures: cost/accuracy scatter with each method's front, and per-channel architecture maps.
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from zerobit.report.pareto import non_dominated, run_points
from zerobit.report.runs import INPUT_PREFIX, RunResult, parse_architecture

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 150
# Fixed colours per bit-width, so that maps of different runs can be compared side by side:
# viridis from light (few bits) to dark (many bits).
BIT_COLOURS: Mapping[int, str] = MappingProxyType(
    {
        1: "#fde725",
        2: "#b5de2b",
        3: "#6ece58",
        4: "#35b779",
        5: "#1f9e89",
        6: "#26828e",
        7: "#31688e",
        8: "#3e4989",
        16: "#482878",
        32: "#440154",
    }
)
# Bit-widths outside BIT_COLOURS take these, in increasing order of bits.
OTHER_BIT_COLOURS = ("#ff7f0e", "#d62728", "#e377c2", "#8c564b", "#bcbd22", "#17becf")
PRUNED_COLOUR = "#d3d3d3"
PRUNED_HATCH_COLOUR = "#808080"
NO_CHANNEL_COLOUR = "#ffffff"
SEPARATED_CHANNELS = 128
GROUP_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
GROUP_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
COST_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "size_bits": "model size [bits]",
        "size_bytes": "model size [bytes]",
        "bitops": "bit operations [BitOPs]",
        "macs": "multiply-accumulates [MACs]",
        "mpic_cycles": "MPIC latency [cycles]",
        "ne16_cycles": "NE16 latency [cycles]",
        "flash_bytes": "flash (packed file) [bytes]",
        "ram_bytes": "activation RAM [bytes]",
    }
)
METRIC_LABELS: Mapping[str, str] = MappingProxyType(
    {"val_accuracy": "validation accuracy", "test_accuracy": "test accuracy"}
)


def cost_label(cost: str) -> str:
    """Return the axis label of a cost, with its unit.

    Example:
        >>> cost_label("size_bytes"), cost_label("gap8_cycles")
        ('model size [bytes]', 'gap8_cycles [cycles]')
    """
    if cost in COST_LABELS:
        return COST_LABELS[cost]
    for suffix, unit in (("_cycles", "cycles"), ("_bytes", "bytes"), ("_bits", "bits")):
        if cost.endswith(suffix):
            return f"{cost} [{unit}]"
    return cost


def _new_figure(width: float, height: float) -> Figure:
    # The object-oriented API with an explicit Agg canvas: no display, no global pyplot state,
    # and the caller's matplotlib backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def plot_pareto(
    runs: Sequence[RunResult],
    path: str | PathLike[str],
    cost: str = "size_bytes",
    metric: str = "val_accuracy",
    group_by: str = "method",
    log_x: bool | None = None,
    title: str | None = None,
) -> Path:
    """Write a PNG scatter of metric vs cost, one colour and marker per group.

    A line joins the Pareto-optimal points of each group; the points on the front of all runs
    are ringed in black and labelled with the run name.

    Args:
        runs: The runs (at least one).
        path: Where to write the PNG.
        cost: The x axis, a key of every run's ``costs``.
        metric: The y axis, ``"val_accuracy"`` or ``"test_accuracy"``.
        group_by: ``"method"`` or ``"name"``: the run attribute that picks colour and marker.
        log_x: Logarithmic cost axis; None chooses it when the costs span 10x or more.
        title: The title; None gives ``"<metric> vs <cost>"``.

    Returns:
        ``path``.

    Raises:
        ValueError: If there are no runs, a run lacks the cost or metric, ``group_by`` is
            unknown, or ``log_x`` is asked for with a cost <= 0.
    """
    if not runs:
        raise ValueError("no runs to plot")
    if group_by not in ("method", "name"):
        raise ValueError(f"group_by must be 'method' or 'name', got {group_by!r}")
    points = run_points(runs, cost, metric)
    costs = [x for x, _ in points]
    if log_x is None:
        log_x = min(costs) > 0 and max(costs) >= 10 * min(costs)
    if log_x and min(costs) <= 0:
        raise ValueError(f"a logarithmic axis needs costs > 0; the lowest {cost} is {min(costs)}")
    groups: dict[str, list[int]] = {}
    for index, run in enumerate(runs):
        groups.setdefault(getattr(run, group_by), []).append(index)

    figure = _new_figure(7.0, 4.8)
    axes = figure.add_subplot()
    for k, (label, indices) in enumerate(sorted(groups.items())):
        colour = GROUP_COLOURS[k % len(GROUP_COLOURS)]
        marker = GROUP_MARKERS[k % len(GROUP_MARKERS)]
        group = [points[i] for i in indices]
        axes.scatter(
            [x for x, _ in group],
            [y for _, y in group],
            color=colour,
            marker=marker,
            s=36,
            label=label,
            zorder=3,
        )
        front = [group[j] for j in non_dominated(group)]
        axes.plot(
            [x for x, _ in front],
            [y for _, y in front],
            color=colour,
            alpha=0.6,
            linewidth=1.2,
            zorder=2,
        )
    best = non_dominated(points)
    axes.scatter(
        [points[i][0] for i in best],
        [points[i][1] for i in best],
        s=130,
        facecolors="none",
        edgecolors="black",
        linewidths=1.0,
        label="Pareto-optimal",
        zorder=4,
    )
    for i in best:
        axes.annotate(
            runs[i].name, points[i], xytext=(5, -10), textcoords="offset points", fontsize=7
        )
    if log_x:
        axes.set_xscale("log")
    axes.set_xlabel(cost_label(cost))
    axes.set_ylabel(METRIC_LABELS[metric])
    axes.set_title(title if title is not None else f"{METRIC_LABELS[metric]} vs {cost_label(cost)}")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    out = Path(path)
    figure.savefig(out, dpi=DPI)
    return out


def bit_colours(bits: Sequence[int]) -> dict[int, str]:
    """Return the colour of each bit-width in ``bits``: `PRUNED_COLOUR` for 0, else `BIT_COLOURS`.

    Widths without a fixed colour take `OTHER_BIT_COLOURS` in increasing order of bits.

    Example:
        >>> bit_colours([8, 0, 4])
        {0: '#d3d3d3', 4: '#35b779', 8: '#3e4989'}
    """
    colours: dict[int, str] = {}
    others = iter(OTHER_BIT_COLOURS * (1 + len(bits) // len(OTHER_BIT_COLOURS)))
    for value in sorted(set(bits)):
        if value == 0:
            colours[value] = PRUNED_COLOUR
        else:
            colours[value] = BIT_COLOURS.get(value) or next(others)
    return colours


@dataclass(frozen=True)
class MapLayout:
    """Geometry of an architecture map, fixed so that a cell's pixels can be located.

    Attributes:
        width: Figure width in inches.
        height: Figure height in inches.
        grid: The cell grid's ``(left, bottom, width, height)`` as fractions of the figure.
    """

    width: float
    height: float
    grid: tuple[float, float, float, float]

    @classmethod
    def of(cls, layer_names: Sequence[str], n_channels: int) -> MapLayout:
        """Return the layout for these row labels and the widest layer's channel count."""
        left = 0.3 + 0.065 * max(len(name) for name in layer_names)
        right, top, bottom = 1.7, 0.75, 0.9
        grid_width = min(max(0.2 * n_channels, 3.0), 14.0)
        grid_height = 0.32 * len(layer_names)
        width = left + grid_width + right
        height = top + grid_height + bottom
        return cls(
            width, height, (left / width, bottom / height, grid_width / width, grid_height / height)
        )

    def cell_centre(self, row: int, column: int, n_rows: int, n_columns: int) -> tuple[int, int]:
        """Return the ``(y from the top, x)`` pixel of a cell's centre in the PNG."""
        left, bottom, grid_width, grid_height = self.grid
        x = (left + grid_width * (column + 0.5) / n_columns) * self.width * DPI
        y = (1 - bottom - grid_height * (1 - (row + 0.5) / n_rows)) * self.height * DPI
        return int(y), int(x)


def plot_architecture(
    architecture: Mapping[str, Mapping[str, Any]],
    path: str | PathLike[str],
    title: str | None = None,
    sort_channels: bool = False,
) -> Path:
    """Write a PNG map of the per-channel bit-widths: one row per layer, one column per channel.

    Each cell takes the colour of its channel's weight bits (`bit_colours`); pruned channels
    (0 bits) are light grey with a grey hatch; rows shorter than the widest layer are padded
    with white (`NO_CHANNEL_COLOUR`, "no channel"). The end of each row gives the bits of the
    activation the layer produces (``float`` for None) and the channels kept. Network inputs
    (``"input:<name>"``) go into the subtitle. The geometry is `MapLayout.of`.

    Args:
        architecture: ``{layer: {"weight_bits": [...], "act_bits": ...}}`` in graph order, as
            ``RunResult.architecture`` or ``SearchModel.architecture()``.
        path: Where to write the PNG.
        title: The title; None gives ``"architecture map"``.
        sort_channels: Order each row by decreasing bits (pruned last) instead of by channel.

    Returns:
        ``path``.

    Raises:
        ValueError: If the architecture is malformed or has no layer with weight bits.
    """
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    parsed = parse_architecture(architecture)
    layers = {name: entry for name, entry in parsed.items() if not name.startswith(INPUT_PREFIX)}
    if not layers:
        raise ValueError("the architecture has no layer with weight_bits to draw")
    rows = [list(entry["weight_bits"]) for entry in layers.values()]
    if sort_channels:
        rows = [sorted(row, reverse=True) for row in rows]
    n_columns = max(len(row) for row in rows)
    colours = bit_colours([b for row in rows for b in row])
    image = [
        [to_rgb(colours[b]) for b in row] + [to_rgb(NO_CHANNEL_COLOUR)] * (n_columns - len(row))
        for row in rows
    ]
    layout = MapLayout.of(list(layers), n_columns)
    figure = _new_figure(layout.width, layout.height)
    axes = figure.add_axes(layout.grid)
    axes.imshow(image, aspect="auto", interpolation="nearest")
    _hatch_pruned(axes, rows)
    _label_rows(axes, layers, rows)
    inputs = ", ".join(
        f"{name[len(INPUT_PREFIX) :]} {_bits_text(entry['act_bits'])}"
        for name, entry in parsed.items()
        if name.startswith(INPUT_PREFIX)
    )
    heading = title if title is not None else "architecture map"
    axes.set_title(heading + (f"\ninputs: {inputs}" if inputs else ""), fontsize=10)
    handles = [
        Patch(facecolor=colour, edgecolor="black", linewidth=0.5, label=f"{bits} b")
        for bits, colour in colours.items()
        if bits
    ]
    if 0 in colours:
        handles.append(
            Patch(
                facecolor=PRUNED_COLOUR,
                edgecolor=PRUNED_HATCH_COLOUR,
                hatch="////",
                label="pruned (0 b)",
            )
        )
    if any(len(row) < n_columns for row in rows):
        handles.append(Patch(facecolor=NO_CHANNEL_COLOUR, edgecolor="black", label="no channel"))
    figure.legend(
        handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False, fontsize=8
    )
    out = Path(path)
    figure.savefig(out, dpi=DPI)
    return out


def _bits_text(bits: int | None) -> str:
    return "float" if bits is None else f"{bits} b"


def _hatch_pruned(axes: Axes, rows: list[list[int]]) -> None:
    from matplotlib.patches import Rectangle

    # One hatched rectangle per run of adjacent pruned channels keeps the hatch continuous.
    for r, row in enumerate(rows):
        column = 0
        while column < len(row):
            if row[column] != 0:
                column += 1
                continue
            start = column
            while column < len(row) and row[column] == 0:
                column += 1
            axes.add_patch(
                Rectangle(
                    (start - 0.5, r - 0.5),
                    column - start,
                    1.0,
                    facecolor="none",
                    edgecolor=PRUNED_HATCH_COLOUR,
                    hatch="////",
                    linewidth=0.0,
                )
            )


def _label_rows(axes: Axes, layers: Mapping[str, Mapping[str, Any]], rows: list[list[int]]) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.set_yticks(range(len(rows)), list(layers), fontsize=8)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.tick_params(axis="x", labelsize=8)
    axes.set_xlabel("output channel", fontsize=9)
    # White rules between rows, and between channels while they are wide enough to count,
    # separate neighbouring cells that share a colour.
    for r in range(len(rows) - 1):
        axes.axhline(r + 0.5, color="white", linewidth=1.0)
    n_columns = max(len(row) for row in rows)
    if n_columns <= SEPARATED_CHANNELS:
        for column in range(n_columns - 1):
            axes.axvline(column + 0.5, color="white", linewidth=0.4)
    for r, (entry, row) in enumerate(zip(layers.values(), rows)):
        kept = sum(b != 0 for b in row)
        axes.text(
            1.02,
            r,
            f"act {_bits_text(entry['act_bits'])}, {kept}/{len(row)} kept",
            transform=axes.get_yaxis_transform(),
            va="center",
            ha="left",
            fontsize=8,
        )

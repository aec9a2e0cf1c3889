# SPDX-License-Identifier: Apache-2.0
# Tests of zerobit.report: loading runs, Pareto fronts, interpolation, tables, figures, the report.
from __future__ import annotations

import ast
import csv
import doctest
import importlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zerobit.report import (
    MapLayout,
    RunResult,
    format_table,
    interpolate_front,
    iso_accuracy_reduction,
    load_run,
    load_runs,
    non_dominated,
    pareto_front,
    plot_architecture,
    plot_pareto,
    run_points,
    write_csv,
    write_report,
)
from zerobit.report.plots import DPI

SMALL_ARCH: dict[str, dict[str, Any]] = {
    "input:x": {"act_bits": 8},
    "conv": {"weight_bits": [8, 0, 4, 8], "act_bits": 4},
    "fc": {"weight_bits": [2, 8], "act_bits": None},
}


def make_run(root: Path, directory: str, **fields: Any) -> Path:
    """Write ``root/directory/result.json`` from defaults overridden by ``fields`` (None drops)."""
    result: dict[str, Any] = {
        "zerobit_version": "0.1.0",
        "name": directory,
        "method": "joint",
        "config": {"strength": 1.0},
        "val_accuracy": 0.8,
        "test_accuracy": 0.79,
        "costs": {"size_bytes": 1000.0, "bitops": 2.0e6},
        "architecture": SMALL_ARCH,
        "timings": {"search_s": 2.0},
    }
    result.update(fields)
    result = {key: value for key, value in result.items() if value is not None}
    path = root / directory
    path.mkdir(parents=True)
    (path / "result.json").write_text(json.dumps(result))
    return path


# --- loading -------------------------------------------------------------------------------


def test_load_runs_reads_every_field(tmp_path: Path) -> None:
    costs = {"size_bytes": 15432.0, "macs": 11, "mpic_cycles": None}
    a = make_run(tmp_path, "a", val_accuracy=0.871, costs=costs)
    b = make_run(tmp_path, "b-dir", name=None, test_accuracy=None, timings=None, config=None)
    run_a, run_b = load_runs([a, b / "result.json"])
    assert run_a == RunResult(
        path=a,
        name="a",
        method="joint",
        val_accuracy=0.871,
        test_accuracy=0.79,
        costs={"size_bytes": 15432.0, "macs": 11.0},
        architecture={
            "input:x": {"act_bits": 8},
            "conv": {"weight_bits": (8, 0, 4, 8), "act_bits": 4},
            "fc": {"weight_bits": (2, 8), "act_bits": None},
        },
        timings={"search_s": 2.0},
        config={"strength": 1.0},
    )
    assert list(run_a.architecture) == ["input:x", "conv", "fc"]
    # A null cost (not priceable by that hardware model) is not reported.
    with pytest.raises(ValueError, match="has no cost 'mpic_cycles'"):
        run_a.cost("mpic_cycles")
    assert (run_b.name, run_b.path, run_b.test_accuracy) == ("b-dir", b, None)
    assert dict(run_b.timings) == {} and dict(run_b.config) == {}
    assert run_a.channel_counts() == (1, 6)
    with pytest.raises(TypeError):
        run_a.costs["size_bytes"] = 0.0  # type: ignore[index]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": None}, r"missing required key\(s\) \['method'\]"),
        ({"val_accuracy": None, "costs": None}, r"\['val_accuracy', 'costs'\]"),
        ({"architecture": None}, r"\['architecture'\]"),
        ({"val_accuracy": "0.8"}, "'val_accuracy' must be a finite number"),
        ({"val_accuracy": True}, "'val_accuracy' must be a finite number"),
        ({"val_accuracy": {"finetune": 0.8}}, "'val_accuracy' must be a finite number"),
        ({"test_accuracy": float("nan")}, "'test_accuracy' must be a finite number"),
        ({"costs": {"size_bytes": -1}}, "'costs.size_bytes' must be >= 0.0"),
        ({"costs": [1, 2]}, "'costs' must be an object"),
        ({"method": ""}, "'method' must be a non-empty string"),
        ({"architecture": {"conv": {"weight_bits": [8, -1], "act_bits": 4}}}, r"\[1\]"),
        ({"architecture": {"conv": {"weight_bits": [8, 2.0], "act_bits": 4}}}, r"\[1\]"),
        ({"architecture": {"conv": {"weight_bits": [], "act_bits": 4}}}, "conv.weight_bits"),
        ({"architecture": {"conv": {"weight_bits": [8]}}}, "'architecture.conv' must be"),
        ({"architecture": {"input:x": {"act_bits": "8"}}}, "input:x.act_bits"),
        ({"timings": {"search_s": "long"}}, "'timings.search_s'"),
    ],
)
def test_load_run_rejects_bad_results_naming_the_file(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    run = make_run(tmp_path, "bad", **fields)
    with pytest.raises(ValueError, match=message) as error:
        load_run(run)
    assert str(error.value).startswith(str(run / "result.json"))


def test_load_run_rejects_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read") as error:
        load_runs([tmp_path / "nowhere"])
    assert str(tmp_path / "nowhere") in str(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot read") as error:
        load_run(tmp_path / "empty")
    assert str(tmp_path / "empty" / "result.json") in str(error.value)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"method": "joint", ')
    with pytest.raises(ValueError, match=f"{corrupt}: not valid JSON"):
        load_run(corrupt)
    corrupt.write_text("[1, 2]")
    with pytest.raises(ValueError, match="top level must be a JSON object, got list"):
        load_run(corrupt)


# --- Pareto fronts -------------------------------------------------------------------------


def brute_force_front(
    points: list[tuple[float, float]], minimize_x: bool, maximize_y: bool
) -> list[int]:
    """O(n^2) oracle: not dominated, and not an exact copy of an earlier point."""

    def at_least_as_good(q: tuple[float, float], p: tuple[float, float]) -> bool:
        x_ok = q[0] <= p[0] if minimize_x else q[0] >= p[0]
        y_ok = q[1] >= p[1] if maximize_y else q[1] <= p[1]
        return x_ok and y_ok

    kept = [
        i
        for i, p in enumerate(points)
        if not any(at_least_as_good(q, p) and q != p for q in points) and p not in points[:i]
    ]
    return sorted(kept, key=lambda i: (points[i][0], i))


def test_non_dominated_by_hand() -> None:
    points = [(3, 0.9), (1, 0.5), (2, 0.4), (3, 0.9), (2, 0.8), (1, 0.5), (4, 0.9)]
    assert non_dominated(points) == [1, 4, 0]
    # Maximizing x too: (4, 0.9) dominates both copies of (3, 0.9) and everything else.
    assert non_dominated(points, minimize_x=False) == [6]
    # Lowest x and lowest y: (1, 0.5) (kept once) and (2, 0.4).
    assert non_dominated(points, maximize_y=False) == [1, 2]
    assert non_dominated([]) == []
    with pytest.raises(ValueError, match="point 1 must be a pair of finite numbers"):
        non_dominated([(1, 0.5), (2, math.nan)])
    with pytest.raises(ValueError, match="point 0"):
        non_dominated([(1, 0.5, 3)])


# Small integer grids make ties on one axis and exact duplicates frequent.
clouds = st.lists(
    st.tuples(st.integers(0, 6).map(float), st.integers(0, 6).map(float)), max_size=30
)


@given(clouds, st.booleans(), st.booleans())
def test_non_dominated_matches_brute_force(
    points: list[tuple[float, float]], minimize_x: bool, maximize_y: bool
) -> None:
    assert non_dominated(points, minimize_x, maximize_y) == brute_force_front(
        points, minimize_x, maximize_y
    )


@given(st.lists(st.tuples(st.floats(0, 1e6), st.floats(0, 1)), min_size=1, max_size=30))
def test_non_dominated_on_real_values_matches_brute_force(
    points: list[tuple[float, float]],
) -> None:
    assert non_dominated(points) == brute_force_front(points, True, True)


def test_pareto_front_of_runs(tmp_path: Path) -> None:
    specs = {"a": (3000, 0.9), "b": (4000, 0.85), "c": (1000, 0.8), "d": (1000, 0.8)}
    runs = load_runs(
        make_run(tmp_path, name, val_accuracy=acc, test_accuracy=1 - acc, costs={"macs": cost})
        for name, (cost, acc) in specs.items()
    )
    assert [r.name for r in pareto_front(runs, cost="macs")] == ["c", "a"]
    # On test accuracy (1 - val) the cheapest run wins alone.
    assert [r.name for r in pareto_front(runs, "macs", "test_accuracy")] == ["c"]
    assert run_points(runs, "macs") == [(3000, 0.9), (4000, 0.85), (1000, 0.8), (1000, 0.8)]
    with pytest.raises(ValueError, match=r"has no cost 'size_bytes'; it reports \['macs'\]"):
        pareto_front(runs)
    with pytest.raises(ValueError, match="unknown metric 'accuracy'"):
        pareto_front(runs, "macs", "accuracy")


# --- interpolation -------------------------------------------------------------------------


def test_interpolate_front_by_hand() -> None:
    # (400, 0.85) and (600, 0.9) are dominated and must be ignored; order does not matter.
    front = [(500, 0.95), (400, 0.85), (100, 0.8), (300, 0.9), (600, 0.9)]
    assert interpolate_front(front, 0.85) == pytest.approx(200.0, abs=1e-9)
    assert interpolate_front(front, 0.925) == pytest.approx(400.0, abs=1e-9)
    assert interpolate_front(front, 0.9) == 300.0
    assert interpolate_front(front, 0.95) == 500.0
    assert interpolate_front(front, 0.8) == 100.0
    assert interpolate_front(front, 0.5) == 100.0
    assert interpolate_front(front, 0.951) is None
    with pytest.raises(ValueError, match="empty front"):
        interpolate_front([], 0.5)
    with pytest.raises(ValueError, match="accuracy must be finite"):
        interpolate_front(front, math.nan)


def test_iso_accuracy_reduction_by_hand() -> None:
    new = [(50, 0.8), (150, 0.9)]
    reference = [(100, 0.8), (300, 0.9), (400, 0.95)]
    # At 0.85: new costs 100, the reference 200.
    assert iso_accuracy_reduction(new, reference, 0.85) == pytest.approx(0.5, abs=1e-12)
    assert iso_accuracy_reduction(reference, new, 0.85) == pytest.approx(-1.0, abs=1e-12)
    assert iso_accuracy_reduction(new, reference, 0.95) is None
    assert iso_accuracy_reduction(reference, new, 0.95) is None
    with pytest.raises(ValueError, match="costs 0"):
        iso_accuracy_reduction(new, [(0, 0.9)], 0.85)


@given(clouds.filter(bool), st.floats(-1, 8))
def test_interpolation_is_monotone_and_exact_at_front_points(
    points: list[tuple[float, float]], y: float
) -> None:
    front = [points[i] for i in non_dominated(points)]
    for front_cost, accuracy in front:
        assert interpolate_front(points, accuracy) == front_cost
    cost = interpolate_front(points, y)
    if y > front[-1][1]:
        assert cost is None
    else:
        assert cost is not None and front[0][0] <= cost <= front[-1][0]
        higher = interpolate_front(points, min(y + 0.5, front[-1][1]))
        assert higher is not None and higher >= cost


# --- tables --------------------------------------------------------------------------------


def tiny_runs(root: Path) -> list[RunResult]:
    arch = {"stem": {"weight_bits": [8, 0, 4, 8], "act_bits": 8}}
    return load_runs(
        [
            make_run(root, "a", costs={"size_bytes": 3000}, val_accuracy=0.9, test_accuracy=0.89),
            make_run(
                root,
                "b",
                method="w8a8",
                costs={"size_bytes": 4000, "mpic_cycles": 5.1e6},
                val_accuracy=0.85,
                test_accuracy=None,
                architecture={"stem": {"weight_bits": [8, 8, 8, 8], "act_bits": 8}},
                timings={"finetune_s": 3.5},
            ),
            make_run(
                root,
                "c",
                costs={"size_bytes": 1000},
                val_accuracy=0.8,
                architecture={"stem": {"weight_bits": [2, 0, 0, 4], "act_bits": 8}},
            ),
            make_run(root, "d", costs={"size_bytes": 3000}, val_accuracy=0.9, architecture=arch),
        ]
    )


def test_format_table_exact(tmp_path: Path) -> None:
    runs = tiny_runs(tmp_path)
    # d ties a on both axes: listed after it (name order), and only a is on the front.
    assert format_table(runs).splitlines() == [
        "| front | name | method | size_bytes | val_accuracy | test_accuracy | pruned channels |",
        "| ----- | ---- | ------ | ---------: | -----------: | ------------: | --------------: |",
        "| *     | c    | joint  |       1000 |       0.8000 |        0.7900 |             2/4 |",
        "| *     | a    | joint  |       3000 |       0.9000 |        0.8900 |             1/6 |",
        "|       | d    | joint  |       3000 |       0.9000 |        0.7900 |             1/4 |",
        "|       | b    | w8a8   |       4000 |       0.8500 |             - |             0/4 |",
    ]
    # An explicit front is marked as given.
    marked = format_table(runs, front=[runs[1]]).splitlines()
    assert [line.startswith("| *") for line in marked[2:]] == [False, False, False, True]


def test_write_csv_round_trips(tmp_path: Path) -> None:
    runs = tiny_runs(tmp_path / "runs")
    path = write_csv(tmp_path / "runs.csv", runs)
    with path.open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == [
        "name",
        "method",
        "path",
        "val_accuracy",
        "test_accuracy",
        "size_bytes",
        "mpic_cycles",
        "pruned_channels",
        "total_channels",
        "finetune_s",
        "search_s",
    ]
    assert rows[2] == ["b", "w8a8", str(runs[1].path), "0.85", "", "4000.0", "5100000.0"] + [
        "0",
        "4",
        "3.5",
        "",
    ]
    for run, row in zip(runs, rows[1:]):
        values = dict(zip(rows[0], row))
        assert float(values["val_accuracy"]) == run.val_accuracy
        assert float(values["size_bytes"]) == run.costs["size_bytes"]
        assert int(values["pruned_channels"]) == run.channel_counts()[0]


# --- figures -------------------------------------------------------------------------------


def rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])


def cell_fraction(
    image: np.ndarray, layout: MapLayout, cell: tuple[int, int], shape: tuple[int, int], colour: str
) -> float:
    """Fraction of the pixels in the middle half of a cell that have ``colour``."""
    y, x = layout.cell_centre(*cell, *shape)
    half_w = int(layout.grid[2] * layout.width * DPI / shape[1] / 4)
    half_h = int(layout.grid[3] * layout.height * DPI / shape[0] / 4)
    window = image[y - half_h : y + half_h + 1, x - half_w : x + half_w + 1, :3]
    return float(np.mean(np.all(np.abs(window - rgb(colour)) < 1.5 / 255, axis=-1)))


def read_png(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


EIGHT, FOUR, TWO, PRUNED, HATCH, WHITE = (
    "#3e4989",
    "#35b779",
    "#b5de2b",
    "#d3d3d3",
    "#808080",
    "#ffffff",
)


def test_architecture_map_colours_each_cell(tmp_path: Path) -> None:
    path = plot_architecture(SMALL_ARCH, tmp_path / "a.png", title="small")
    image = read_png(path)
    layout = MapLayout.of(["conv", "fc"], 4)
    # matplotlib truncates the figure size to whole pixels.
    assert image.shape[:2] == (int(layout.height * DPI), int(layout.width * DPI))
    shape = (2, 4)
    # Row 0 = conv [8, 0, 4, 8]; row 1 = fc [2, 8] padded with two "no channel" cells.
    expected = {
        (0, 0): EIGHT,
        (0, 2): FOUR,
        (0, 3): EIGHT,
        (1, 0): TWO,
        (1, 1): EIGHT,
        (1, 2): WHITE,
        (1, 3): WHITE,
    }
    for cell, colour in expected.items():
        assert cell_fraction(image, layout, cell, shape, colour) == 1.0, cell
    # The pruned cell: mostly light grey, crossed by a visible grey hatch, never white.
    assert cell_fraction(image, layout, (0, 1), shape, PRUNED) > 0.5
    assert cell_fraction(image, layout, (0, 1), shape, HATCH) > 0.02
    assert cell_fraction(image, layout, (0, 1), shape, WHITE) == 0.0


def test_architecture_map_follows_the_architecture(tmp_path: Path) -> None:
    layout, shape = MapLayout.of(["conv", "fc"], 4), (2, 4)
    first = read_png(plot_architecture(SMALL_ARCH, tmp_path / "a.png"))
    unpruned = {**SMALL_ARCH, "conv": {"weight_bits": [8, 8, 4, 8], "act_bits": 4}}
    second = read_png(plot_architecture(unpruned, tmp_path / "b.png"))
    assert first.shape == second.shape and not np.array_equal(first, second)
    assert cell_fraction(second, layout, (0, 1), shape, EIGHT) == 1.0
    assert cell_fraction(second, layout, (0, 1), shape, PRUNED) == 0.0
    # Sorted rows: conv becomes [8, 8, 4, 0], fc [8, 2].
    ordered = read_png(plot_architecture(SMALL_ARCH, tmp_path / "c.png", sort_channels=True))
    assert cell_fraction(ordered, layout, (0, 1), shape, EIGHT) == 1.0
    assert cell_fraction(ordered, layout, (0, 3), shape, PRUNED) > 0.5
    assert cell_fraction(ordered, layout, (1, 1), shape, TWO) == 1.0


def test_architecture_map_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no layer with weight_bits"):
        plot_architecture({"input:x": {"act_bits": 8}}, tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"'architecture.fc.weight_bits\[0\]' must be an int"):
        plot_architecture({"fc": {"weight_bits": [-2], "act_bits": 8}}, tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def colour_pixels(image: np.ndarray, colour: str) -> int:
    return int(np.sum(np.all(np.abs(image[..., :3] - rgb(colour)) < 1.5 / 255, axis=-1)))


def test_plot_pareto_draws_one_colour_per_method(tmp_path: Path) -> None:
    runs = tiny_runs(tmp_path / "runs")
    # Methods sorted: joint takes the first colour, w8a8 the second.
    both = read_png(plot_pareto(runs, tmp_path / "both.png"))
    joint_only = read_png(plot_pareto(runs[::2], tmp_path / "joint.png", log_x=True))
    assert colour_pixels(both, "#1f77b4") > 30 and colour_pixels(both, "#ff7f0e") > 30
    assert colour_pixels(joint_only, "#1f77b4") > 30 and colour_pixels(joint_only, "#ff7f0e") == 0
    with pytest.raises(ValueError, match="group_by must be"):
        plot_pareto(runs, tmp_path / "x.png", group_by="config")
    with pytest.raises(ValueError, match="no runs to plot"):
        plot_pareto([], tmp_path / "x.png")
    zero = load_runs([make_run(tmp_path, "zero", costs={"size_bytes": 0})])
    with pytest.raises(ValueError, match="logarithmic axis needs costs > 0"):
        plot_pareto(zero, tmp_path / "x.png", log_x=True)


# --- the report ----------------------------------------------------------------------------


def test_write_report(tmp_path: Path) -> None:
    runs = tiny_runs(tmp_path / "runs")
    out = tmp_path / "report"
    summary = write_report([run.path for run in runs], out)
    assert summary == {
        "runs": ["a", "b", "c", "d"],
        "front": ["c", "a"],
        "report": out / "report.md",
        "csv": out / "runs.csv",
        "pareto_plot": out / "pareto.png",
        "architecture_plots": {"c": out / "arch_c.png", "a": out / "arch_a.png"},
    }
    assert sorted(p.name for p in out.iterdir()) == [
        "arch_a.png",
        "arch_c.png",
        "pareto.png",
        "report.md",
        "runs.csv",
    ]
    report = (out / "report.md").read_text()
    assert format_table(runs) in report
    for link in ("(pareto.png)", "(runs.csv)", "(arch_c.png)", "(arch_a.png)"):
        assert link in report
    assert report.index("### c (joint)") < report.index("### a (joint)")
    # The map of c (one layer [2, 0, 0, 4]) shows its pruned channels 1 and 2.
    layout, shape = MapLayout.of(["stem"], 4), (1, 4)
    image = read_png(out / "arch_c.png")
    assert cell_fraction(image, layout, (0, 0), shape, TWO) == 1.0
    assert cell_fraction(image, layout, (0, 1), shape, PRUNED) > 0.5
    assert cell_fraction(image, layout, (0, 2), shape, PRUNED) > 0.5
    assert cell_fraction(image, layout, (0, 3), shape, FOUR) == 1.0


def test_write_report_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no runs to report"):
        write_report([], tmp_path / "out")
    first = make_run(tmp_path, "x", name="same run")
    second = make_run(tmp_path, "y", name="same/run")
    with pytest.raises(ValueError, match="same name once made path-safe"):
        write_report([first, second], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_compare_folders_puts_one_front_per_folder_against_the_first(tmp_path: Path) -> None:
    from zerobit.cli import main
    from zerobit.report import compare_folders

    for folder, points in {
        "wide": [(1000.0, 0.80), (2000.0, 0.85), (3000.0, 0.88)],
        "narrow": [(800.0, 0.80), (1500.0, 0.85), (3300.0, 0.88), (3400.0, 0.70)],
    }.items():
        for i, (size, accuracy) in enumerate(points):
            make_run(
                tmp_path / folder,
                f"budget-{i}",
                costs={"size_bytes": size},
                val_accuracy=accuracy,
            )
        # A shared warm-up folder is not a point of the sweep, whatever it holds.
        make_run(tmp_path / folder, "warmup", costs={"size_bytes": 1.0}, val_accuracy=0.99)
    out = tmp_path / "cmp"
    summary = compare_folders([tmp_path / "wide", tmp_path / "narrow"], out)
    assert summary["front"] == ["narrow/budget-0", "narrow/budget-1", "wide/budget-2"]
    # At 0.80, 0.85 and 0.88 (the first front's accuracies): 1 - 800/1000, 1 - 1500/2000 and
    # 1 - 3300/3000; narrow's 3300 B point is dominated by wide's 3000 B one, and wide's two
    # cheaper points by narrow's.
    c = summary["comparison"]["narrow"]
    assert c["reduction_mean"] == pytest.approx((0.2 + 0.25 - 0.1) / 3)
    assert (c["reduction_min"], c["reduction_max"]) == (pytest.approx(-0.1), pytest.approx(0.25))
    assert (c["points_compared"], c["front_points"]) == (3, 3)
    assert (c["dominated_by_first"], c["dominating_first"]) == (1, 2)
    report = (out / "report.md").read_text()
    assert "| narrow | 11.7 % | -10.0 % | 25.0 % | 3 | 1 of 3 | 2 |" in report
    assert "wide: joint" in {row["method"] for row in csv.DictReader((out / "runs.csv").open())}
    assert main(["report", "--compare", str(tmp_path / "wide"), str(tmp_path / "narrow"),
                 "--out", str(tmp_path / "cli")]) == 0  # fmt: skip
    assert (tmp_path / "cli" / "pareto.png").stat().st_size > 0
    with pytest.raises(ValueError, match="at least two folders"):
        compare_folders([tmp_path / "wide"], out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no finished run"):
        compare_folders([tmp_path / "wide", tmp_path / "empty"], out)


def test_matplotlib_is_imported_only_inside_functions() -> None:
    # Statically, since matplotlib is already imported by the other tests of this process.
    package = Path(str(importlib.import_module("zerobit.report").__file__)).parent
    top_level = set()
    for file in sorted(package.glob("*.py")):
        for node in ast.parse(file.read_text()).body:
            if isinstance(node, ast.Import):
                top_level |= {(file.name, alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                top_level.add((file.name, node.module))
    assert len(top_level) > 10
    assert [entry for entry in top_level if entry[1].split(".")[0] == "matplotlib"] == []


@pytest.mark.parametrize("module", ["pareto", "plots", "tables", "writer"])
def test_docstring_examples(module: str) -> None:
    failures, tried = doctest.testmod(importlib.import_module(f"zerobit.report.{module}"))
    assert failures == 0 and tried > 0

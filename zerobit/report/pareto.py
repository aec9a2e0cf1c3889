# SPDX-License-Identifier: Apache-2.0
# Pareto fronts of cost vs accuracy, and the cost a front needs to reach a given accuracy.
from __future__ import annotations

import math
from collections.abc import Sequence

from zerobit.report.runs import RunResult

Point = tuple[float, float]
"""A ``(cost, accuracy)`` pair, or more generally ``(x, y)``."""


def non_dominated(
    points: Sequence[Sequence[float]], minimize_x: bool = True, maximize_y: bool = True
) -> list[int]:
    """Return the indices of the Pareto-optimal points, by increasing x.

    Point ``p`` dominates ``q`` when it is at least as good on both axes and better on one.
    A point is kept when no other point dominates it. Points equal on both axes do not
    dominate each other, so they would all be kept; only the first of them (lowest index) is,
    so that a front never lists the same trade-off twice.

    Args:
        points: ``(x, y)`` pairs, finite.
        minimize_x: Whether a lower x is better (a cost); else a higher one.
        maximize_y: Whether a higher y is better (an accuracy); else a lower one.

    Returns:
        Indices into ``points``, ordered by increasing x (hence by increasing y for a
        cost/accuracy front); empty for no points.

    Raises:
        ValueError: If a point is not a pair of finite numbers.

    Example:
        >>> non_dominated([(3, 0.9), (1, 0.5), (2, 0.4), (3, 0.9), (2, 0.8)])
        [1, 4, 0]
    """
    for index, point in enumerate(points):
        if len(point) != 2 or not all(math.isfinite(v) for v in point):
            raise ValueError(f"point {index} must be a pair of finite numbers, got {point!r}")
    x_sign = 1.0 if minimize_x else -1.0
    y_sign = 1.0 if maximize_y else -1.0
    # Sweep by better x first; among equal x the better y comes first, among exact ties the
    # lower index. A point survives iff it beats the best y of every point swept before it.
    order = sorted(
        range(len(points)),
        key=lambda i: (x_sign * points[i][0], -y_sign * points[i][1], i),
    )
    front: list[int] = []
    best = -math.inf
    for i in order:
        y = y_sign * points[i][1]
        if y > best:
            front.append(i)
            best = y
    return sorted(front, key=lambda i: (points[i][0], i))


def run_points(
    runs: Sequence[RunResult], cost: str = "size_bytes", metric: str = "val_accuracy"
) -> list[Point]:
    """Return the ``(cost, metric)`` pair of every run, in order.

    Raises:
        ValueError: If a run lacks the cost or the metric.
    """
    return [(run.cost(cost), run.metric(metric)) for run in runs]


def pareto_front(
    runs: Sequence[RunResult], cost: str = "size_bytes", metric: str = "val_accuracy"
) -> list[RunResult]:
    """Return the runs on the front of lowest ``cost`` and highest ``metric``, by increasing cost.

    Ties follow `non_dominated`: of several runs with the same cost and metric, the first kept.

    Raises:
        ValueError: If a run lacks the cost or the metric.
    """
    return [runs[i] for i in non_dominated(run_points(runs, cost, metric))]


def interpolate_front(front_points: Sequence[Sequence[float]], y: float) -> float | None:
    """Return the cost at which a cost/accuracy front first reaches accuracy ``y``.

    Between consecutive front points the cost is interpolated linearly in accuracy. Below
    the accuracy of the cheapest point the cheapest cost is returned (no extrapolation: the
    cheapest point already reaches ``y``). Points that are not on the front are ignored.

    Args:
        front_points: ``(cost, accuracy)`` pairs, in any order.
        y: The accuracy to reach.

    Returns:
        The cost, or None if no point reaches ``y``.

    Raises:
        ValueError: If there are no points, or a point or ``y`` is not finite.

    Example:
        >>> interpolate_front([(100, 0.5), (300, 1.0)], 0.75)
        200.0
    """
    if not front_points:
        raise ValueError("cannot interpolate an empty front")
    if not math.isfinite(y):
        raise ValueError(f"accuracy must be finite, got {y!r}")
    front = [front_points[i] for i in non_dominated(front_points)]
    (cost_0, acc_0) = front[0]
    if y <= acc_0:
        return float(cost_0)
    for (cost_lo, acc_lo), (cost_hi, acc_hi) in zip(front, front[1:]):
        if y <= acc_hi:
            return float(cost_lo + (y - acc_lo) / (acc_hi - acc_lo) * (cost_hi - cost_lo))
    return None


def iso_accuracy_reduction(
    front_a: Sequence[Sequence[float]], front_b: Sequence[Sequence[float]], y: float
) -> float | None:
    """Return ``1 - cost_a(y) / cost_b(y)``: how much cheaper front a is than b at accuracy y.

    Args:
        front_a: ``(cost, accuracy)`` pairs of the new method.
        front_b: ``(cost, accuracy)`` pairs of the reference.
        y: The accuracy at which to compare, see `interpolate_front`.

    Returns:
        The relative reduction (0.25 = 25% smaller; negative when a is costlier), or None if
        either front never reaches ``y``.

    Raises:
        ValueError: As `interpolate_front`, or if the reference cost at ``y`` is 0.

    Example:
        >>> iso_accuracy_reduction([(50, 0.5), (150, 1.0)], [(100, 0.5), (300, 1.0)], 0.75)
        0.5
    """
    cost_a = interpolate_front(front_a, y)
    cost_b = interpolate_front(front_b, y)
    if cost_a is None or cost_b is None:
        return None
    if cost_b == 0:
        raise ValueError(f"the reference front costs 0 at accuracy {y}; no relative reduction")
    return 1.0 - cost_a / cost_b

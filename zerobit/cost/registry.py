# SPDX-License-Identifier: Apache-2.0
# Explicit name -> cost-function registry, filled by the @register_cost decorator.
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

from zerobit.cost.spec import LayerSpec, Number

CostFunction: TypeAlias = Callable[[LayerSpec], Number]
"""A cost model: maps one layer to its cost (a Python number or a 0-dim tensor)."""

_CostT = TypeVar("_CostT", bound=CostFunction)

_REGISTRY: dict[str, CostFunction] = {}


def register_cost(
    name: str, batched: Callable[[Any], Any] | None = None
) -> Callable[[_CostT], _CostT]:
    """Register a cost function under ``name``.

    Args:
        name: The name users pass wherever a cost is accepted, e.g. ``"size"``.
        batched: Optional twin that prices a whole :class:`~zerobit.cost.batch.LayerBatch` at
            once (the sum over its layers, as a 0-dim tensor); the search uses it to avoid one
            small graph per layer. It is attached to the function as ``function.batched`` and
            must agree with summing ``function`` over the layers.

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        ValueError: If ``name`` is empty or already registered.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a cost name must be a non-empty string, got {name!r}")

    def decorator(function: _CostT) -> _CostT:
        if name in _REGISTRY:
            raise ValueError(f"cost {name!r} is already registered")
        if batched is not None:
            setattr(function, "batched", batched)  # noqa: B010 (attribute on a function)
        _REGISTRY[name] = function
        return function

    return decorator


def registered_costs() -> tuple[str, ...]:
    """Return the registered cost names, sorted."""
    return tuple(sorted(_REGISTRY))


def get_cost(name: str) -> CostFunction:
    """Return the cost function registered under ``name``.

    Args:
        name: A registered name.

    Returns:
        The cost function.

    Raises:
        ValueError: If ``name`` is not registered; the message lists the known names.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown cost {name!r}; known costs: {', '.join(registered_costs())}"
        ) from None


def resolve_cost(cost: str | CostFunction) -> CostFunction:
    """Turn whatever a user passed as a cost into a cost function.

    Args:
        cost: A registered name, a :class:`~zerobit.cost.CostTable`, or any callable
            ``f(spec) -> number``.

    Returns:
        A callable ``spec -> cost``.

    Raises:
        ValueError: If ``cost`` is an unknown name or not callable; the message lists the known
            names.
    """
    if isinstance(cost, str):
        return get_cost(cost)
    if callable(cost):
        return cost
    raise ValueError(
        f"a cost must be a registered name ({', '.join(registered_costs())}), a CostTable or a "
        f"callable spec -> cost, got {cost!r}"
    )

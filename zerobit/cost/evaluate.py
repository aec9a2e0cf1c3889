# SPDX-License-Identifier: Apache-2.0
# evaluate(): the exact cost of a discrete model, from the layer specs it reports.
from __future__ import annotations

from typing import Any, Protocol

from zerobit.cost.graph import get_graph_term
from zerobit.cost.registry import CostFunction, resolve_cost
from zerobit.cost.spec import LayerSpec

#: Key of the whole-model part of a cost in ``evaluate(..., per_layer=True)``.
GRAPH_KEY = "<graph>"


class HasLayerSpecs(Protocol):
    """Anything that describes its layers to the cost models (e.g. a FrozenModel)."""

    def layer_specs(self) -> list[LayerSpec]:
        """Describe every conv/linear layer to the cost models."""
        ...


def evaluate(model: HasLayerSpecs, cost: str | CostFunction, per_layer: bool = False) -> Any:
    """Exact cost of a discrete model.

    Args:
        model: A model with a ``layer_specs()`` method, such as a frozen model; a SearchModel
            should be in eval mode so that its specs are the discrete architecture. Costs with
            a whole-model part (``flash``, ``ram``) also need its ``graph_spec()``.
        cost: A registered cost name, a CostTable or a callable ``spec -> cost``.
        per_layer: Return ``{layer name: cost}`` instead of the total; a whole-model part is
            under the key ``"<graph>"`` (the values sum to the total).

    Returns:
        The total cost (a Python number for a frozen model), or the per-layer costs.

    Raises:
        ValueError: If the cost has a whole-model part and the model has no ``graph_spec()``.

    Example:
        >>> import torch, zerobit as zb
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
        >>> frozen = zb.convert(net, torch.rand(2, 1, 8, 8)).eval().freeze()
        >>> zb.cost.evaluate(frozen, "size")  # (4*1*9 + 2*144) weights at 8 bits
        2592
    """
    function = resolve_cost(cost)
    specs = model.layer_specs()
    values = [function(spec) for spec in specs]
    term = get_graph_term(function)
    graph_part = None
    if term is not None:
        describe = getattr(model, "graph_spec", None)
        if describe is None:
            raise ValueError(
                f"cost {cost!r} depends on the whole graph; {type(model).__name__} has no "
                "graph_spec() (use a FrozenModel or SearchModel)"
            )
        graph_part = term(describe())
    if per_layer:
        named = {spec.name: value for spec, value in zip(specs, values)}
        return named if graph_part is None else {**named, GRAPH_KEY: graph_part}
    return sum(values) if graph_part is None else sum(values) + graph_part

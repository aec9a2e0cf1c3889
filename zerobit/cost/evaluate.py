# SPDX-License-Identifier: Apache-2.0
# evaluate(): the exact cost of a discrete model, from the layer specs it reports.
from __future__ import annotations

from typing import Any, Protocol

from zerobit.cost.registry import CostFunction, resolve_cost
from zerobit.cost.spec import LayerSpec


class HasLayerSpecs(Protocol):
    """Anything that describes its layers to the cost models (e.g. a FrozenModel)."""

    def layer_specs(self) -> list[LayerSpec]:
        """Describe every conv/linear layer to the cost models."""
        ...


def evaluate(model: HasLayerSpecs, cost: str | CostFunction, per_layer: bool = False) -> Any:
    """Exact cost of a discrete model.

    Args:
        model: A model with a ``layer_specs()`` method, such as a frozen model; a SearchModel
            should be in eval mode so that its specs are the discrete architecture.
        cost: A registered cost name, a CostTable or a callable ``spec -> cost``.
        per_layer: Return ``{layer name: cost}`` instead of the total.

    Returns:
        The total cost (a Python number for a frozen model), or the per-layer costs.

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
    if per_layer:
        return {spec.name: function(spec) for spec in specs}
    return sum(function(spec) for spec in specs)

# SPDX-License-Identifier: Apache-2.0
# torch.fx tracing with readable errors, shape propagation and BatchNorm folding.
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

_BN_AFTER = {
    nn.Conv1d: nn.BatchNorm1d,
    nn.Conv2d: nn.BatchNorm2d,
    nn.Linear: nn.BatchNorm1d,
}


class _Tracer(fx.Tracer):
    """fx tracer that keeps user-named modules as leaves."""

    def __init__(self, leaf_types: tuple[type, ...]) -> None:
        super().__init__()
        self._leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self._leaf_types and isinstance(m, self._leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    leaf_types: Iterable[type] = (),
) -> fx.GraphModule:
    """Trace a copy of ``model`` with torch.fx and annotate every node with its output shape.

    Args:
        model: The user's model; it is not modified.
        example_inputs: One tensor per ``forward`` argument, with a batch dimension.
        leaf_types: Module types to keep opaque (not traced through), e.g. an LSTM.

    Returns:
        A GraphModule in eval mode whose nodes carry ``meta["tensor_meta"]``.

    Raises:
        ValueError: If the model cannot be traced or the example input does not fit it.
    """
    model = copy.deepcopy(model).eval()
    tracer = _Tracer(tuple(leaf_types))
    try:
        graph = tracer.trace(model)
    except Exception as error:  # fx raises TraceError, TypeError, NotImplementedError...
        raise ValueError(
            f"torch.fx cannot trace {type(model).__name__}: {error}. zerobit needs a model without "
            "data-dependent Python control flow in forward(); move such logic out of the model "
            "or into a submodule listed in leaf_types"
        ) from error
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise ValueError(
            f"the model's forward() takes {len(placeholders)} input(s) "
            f"({', '.join(p.name for p in placeholders)}) but {len(example_inputs)} example "
            "input(s) were given"
        )
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    except Exception as error:
        shapes = ", ".join(str(tuple(x.shape)) for x in example_inputs)
        raise ValueError(
            f"the example input of shape {shapes} does not fit {type(model).__name__}: {error}. "
            "Pass a batch shaped like the data the model is trained on, e.g. (1, C, H, W)"
        ) from error
    return gm


def fold_batchnorm_(gm: fx.GraphModule) -> list[str]:
    """Fold every BatchNorm that directly follows a conv/linear used only by it, in place.

    The BatchNorm's running statistics are folded into the producer's weight and bias
    (W <- W * gamma / sqrt(var + eps), b <- (b - mean) * gamma / sqrt(var + eps) + beta), and the
    BatchNorm node is removed; afterwards no BatchNorm runs on that path.

    Returns:
        Qualified names of the folded BatchNorm modules.

    Raises:
        ValueError: If a BatchNorm to fold does not track running statistics.
    """
    modules = dict(gm.named_modules())
    folded: list[str] = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(
            modules[node.target], nn.modules.batchnorm._BatchNorm
        ):
            continue
        producer = node.args[0]
        if not isinstance(producer, fx.Node) or producer.op != "call_module":
            continue
        layer = modules[producer.target]
        expected = _BN_AFTER.get(type(layer))
        bn = modules[node.target]
        if expected is None or not isinstance(bn, expected) or len(producer.users) != 1:
            continue
        if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
            raise ValueError(
                f"BatchNorm {node.target!r} has no running statistics to fold; "
                "construct it with track_running_stats=True and run the float warm-up first"
            )
        _fold_into(layer, bn)
        node.replace_all_uses_with(producer)
        gm.graph.erase_node(node)
        folded.append(str(node.target))
    gm.graph.lint()
    gm.recompile()
    return folded


@torch.no_grad()
def _fold_into(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold ``bn`` into ``layer``'s weight and bias (creating the bias if needed)."""
    assert bn.running_var is not None and bn.running_mean is not None  # checked by caller
    inv_std = torch.rsqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(inv_std)
    beta = bn.bias if bn.affine else torch.zeros_like(inv_std)
    factor = gamma * inv_std
    weight: torch.Tensor = layer.weight  # type: ignore[assignment]
    shape = (-1,) + (1,) * (weight.dim() - 1)
    weight.mul_(factor.reshape(shape))
    bias: Any = layer.bias
    old_bias = bias if bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (old_bias - bn.running_mean) * factor + beta
    layer.bias = nn.Parameter(new_bias.detach().clone())


def ensure_bias_(layer: nn.Module) -> None:
    """Give a conv/linear a zero bias if it has none (every searchable layer has a bias)."""
    if getattr(layer, "bias", None) is None:
        weight: torch.Tensor = layer.weight  # type: ignore[assignment]
        layer.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype))

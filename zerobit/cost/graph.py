# SPDX-License-Identifier: Apache-2.0
# GraphSpec: the tensors and ops around the layers, for the costs of a whole model (flash, ram).
"""Whole-model cost terms.

A :class:`~zerobit.cost.LayerSpec` describes one conv/linear layer; some costs also depend on the
rest of the exported graph: the packed file's tensor and op records (``flash``), or the
activation buffers that are alive together (``ram``). A :class:`GraphSpec` describes that graph
as the exporters write it (the pruned integer graph of :mod:`zerobit.export`): its tensors, with
their (expected) number of values per sample, and its ops in execution order. Like a LayerSpec,
its counts are Python numbers for a discrete model and 0-dim tensors during the search.

A cost function may carry a *graph term* (:func:`graph_term`): the model's cost is then the sum
of the function over the layers plus the graph term of the model's GraphSpec (:func:`total_cost`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

from zerobit.cost.spec import LayerSpec, Number, _is_number

__all__ = [
    "OP_KINDS",
    "GraphSpec",
    "GraphTerm",
    "OpSpec",
    "TensorSpec",
    "get_graph_term",
    "graph_term",
    "total_cost",
]

OP_KINDS = ("input_quant", "layer", "add", "relu", "max_pool", "avg_pool", "flatten", "concat")
"""Op kinds of a GraphSpec, those of :mod:`zerobit.export.ir`."""


@dataclass(frozen=True)
class TensorSpec:
    """One tensor (edge) of the exported graph.

    Attributes:
        name: Edge name, as the exported files spell it.
        rank: Dims of one sample: 1 for ``(features,)``, 2 for ``(C, L)``, 3 for ``(C, H, W)``.
        elements: Values of one sample after pruning, kept channels x spatial positions: a
            Python number (discrete model) or a 0-dim tensor (expected, during the search).
        is_float: float32 values (model inputs, logits) rather than one-byte integer codes.
    """

    name: str
    rank: int
    elements: Number
    is_float: bool = False

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"tensor {self.name!r}: needs a name and a rank >= 1")
        if not _is_number(self.elements):
            raise ValueError(f"tensor {self.name!r}: elements must be a number or 0-dim tensor")


@dataclass(frozen=True)
class OpSpec:
    """One op of the exported graph.

    Attributes:
        kind: One of :data:`OP_KINDS`.
        name: Op name (a layer's is its module's qualified name, the LayerSpec's ``name``).
        inputs: Names of the tensors it reads.
        output: Name of the tensor it writes.
        window_dims: Spatial dims of a pool's window (``max_pool``, ``avg_pool``), else 0.
    """

    kind: str
    name: str
    inputs: tuple[str, ...]
    output: str
    window_dims: int = 0

    def __post_init__(self) -> None:
        if self.kind not in OP_KINDS:
            raise ValueError(f"op {self.name!r}: kind must be one of {OP_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "inputs", tuple(self.inputs))


@dataclass(frozen=True)
class GraphSpec:
    """The exported graph of a model: tensors, ops in execution order, inputs and outputs.

    Attributes:
        tensors: Every tensor, model inputs first, then op outputs in op order.
        ops: Every op, in execution (topological) order.
        inputs: Names of the model inputs.
        outputs: Names of the model outputs.
    """

    tensors: tuple[TensorSpec, ...]
    ops: tuple[OpSpec, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    by_name: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("tensors", "ops", "inputs", "outputs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        by_name = {t.name: t for t in self.tensors}
        if len(by_name) != len(self.tensors):
            raise ValueError("tensor names must be unique")
        used = [n for op in self.ops for n in (*op.inputs, op.output)]
        unknown = sorted({n for n in (*used, *self.inputs, *self.outputs) if n not in by_name})
        if unknown:
            raise ValueError(f"the graph refers to unknown tensors {unknown}")
        object.__setattr__(self, "by_name", by_name)

    def tensor(self, name: str) -> TensorSpec:
        """Return the tensor called ``name``."""
        return self.by_name[name]


GraphTerm: TypeAlias = Callable[[GraphSpec], Number]
"""The whole-model part of a cost: a function of the model's GraphSpec."""

_FunctionT = TypeVar("_FunctionT", bound=Callable[..., Any])


def graph_term(term: GraphTerm) -> Callable[[_FunctionT], _FunctionT]:
    """Attach ``term`` to a cost function as its whole-model part (``function.graph_term``).

    Args:
        term: ``GraphSpec -> cost``, added once per model to the sum over the layers.

    Returns:
        A decorator that returns the function unchanged, with the term attached.
    """

    def decorator(function: _FunctionT) -> _FunctionT:
        setattr(function, "graph_term", term)  # noqa: B010 (attribute on a function)
        return function

    return decorator


def get_graph_term(function: object) -> GraphTerm | None:
    """Return the whole-model part of a cost function, or None if it only sums its layers."""
    term = getattr(function, "graph_term", None)
    return term if callable(term) else None


def total_cost(
    function: Callable[[LayerSpec], Number],
    layers: Iterable[LayerSpec],
    graph: GraphSpec | None,
) -> Number:
    """Return a model's cost: the sum of ``function`` over its layers, plus its graph term.

    Args:
        function: A cost function (a registered one, a CostTable, a callable).
        layers: The model's layer specs.
        graph: The model's GraphSpec; needed only if ``function`` has a graph term.

    Raises:
        ValueError: If ``function`` has a graph term and ``graph`` is None.
    """
    total: Any = sum(function(spec) for spec in layers)
    term = get_graph_term(function)
    if term is None:
        return total  # type: ignore[no-any-return]
    if graph is None:
        name = getattr(function, "__name__", repr(function))
        raise ValueError(f"cost {name!r} depends on the whole graph; the model gave no GraphSpec")
    return total + term(graph)  # type: ignore[no-any-return]

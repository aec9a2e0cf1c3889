# SPDX-License-Identifier: Apache-2.0
# User-supplied cost model: a table of cycles (or energy, ...) per MAC for each bit-width pair.
from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import torch

from zerobit.cost.batch import LayerBatch
from zerobit.cost.spec import LayerSpec, Number, mixed_precision_sum


def table(spec: LayerSpec, cycles_per_mac: Mapping[tuple[int, int], float]) -> Number:
    """Return the cost from a per-MAC table, Σ_a θ_a · Σ_{p>0} N_p · MACs per channel · c[a,p].

    Args:
        spec: The layer.
        cycles_per_mac: Cost of one MAC keyed by ``(input activation bits, weight bits)``.
            Pairs with 0 weight bits are never looked up: pruned channels cost nothing.

    Returns:
        The cost, a Python number or a 0-dim tensor.

    Raises:
        ValueError: If a pair used by the spec (with weight bits > 0) is missing from the table.
    """
    missing = sorted(
        (act, weight)
        for act in spec.input_bits
        for weight in spec.weight_bits
        if weight > 0 and (act, weight) not in cycles_per_mac
    )
    if missing:
        raise ValueError(
            f"layer {spec.name!r}: the cost table has no entry for (act_bits, weight_bits) "
            f"{missing}; it covers {sorted(cycles_per_mac)}"
        )
    return mixed_precision_sum(
        spec, lambda layer_macs, act, weight: layer_macs * cycles_per_mac[(act, weight)]
    )


class CostTable:
    """A cost model given by a table of cost per MAC, usable wherever a cost name is accepted.

    Args:
        cycles_per_mac: Cost of one MAC keyed by ``(input activation bits, weight bits)``;
            finite and >= 0. Copied, so later changes to the argument have no effect.
        name: A label for reports.

    Raises:
        ValueError: If a key is not a pair of ints >= 0 or a value is negative or not finite.

    Example:
        >>> from zerobit.cost import CostTable, LayerSpec
        >>> energy = CostTable({(8, 8): 1.0, (8, 4): 0.5}, name="energy")
        >>> layer = LayerSpec("fc", "linear", 64, (), (), (0, 4, 8), (2, 4, 4), (8,), (1,))
        >>> energy(layer)  # 4 channels * 64 MACs * 0.5 + 4 * 64 * 1.0
        384.0
    """

    def __init__(self, cycles_per_mac: Mapping[tuple[int, int], float], name: str = "table"):
        entries = dict(cycles_per_mac)
        for key, value in entries.items():
            if not (
                isinstance(key, tuple)
                and len(key) == 2
                and all(isinstance(bits, int) and not isinstance(bits, bool) for bits in key)
                and min(key) >= 0
            ):
                raise ValueError(
                    f"CostTable {name!r}: keys must be (act_bits, weight_bits), got {key!r}"
                )
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(
                    f"CostTable {name!r}: entry {key} must be a finite number >= 0, got {value!r}"
                )
        self._cycles_per_mac: Mapping[tuple[int, int], float] = MappingProxyType(entries)
        self._name = name

    @property
    def name(self) -> str:
        """The table's label."""
        return self._name

    @property
    def cycles_per_mac(self) -> Mapping[tuple[int, int], float]:
        """Read-only view of the table."""
        return self._cycles_per_mac

    def __call__(self, spec: LayerSpec) -> Number:
        """Return the cost of ``spec`` under this table (see :func:`table`)."""
        return table(spec, self._cycles_per_mac)

    def batched(self, batch: LayerBatch) -> torch.Tensor:
        """Return the cost of every layer of ``batch`` at once (the search's fast path)."""
        return batch.per_mac_sum(self._cycles_per_mac)

    def __repr__(self) -> str:
        return f"CostTable({dict(self._cycles_per_mac)!r}, name={self._name!r})"

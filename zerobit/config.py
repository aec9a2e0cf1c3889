# SPDX-License-Identifier: Apache-2.0
# Frozen, validated configuration objects: the search space and the sampling schedule.
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Weight bit-widths zerobit can quantize to (0 means "pruned").
SUPPORTED_WEIGHT_BITS = (0, 2, 3, 4, 5, 6, 7, 8)
#: Activation bit-widths zerobit can quantize to.
SUPPORTED_ACT_BITS = (2, 3, 4, 5, 6, 7, 8)
#: Rules for a channel's weight range (:data:`zerobit.quant.WEIGHT_RANGES`).
SUPPORTED_WEIGHT_RANGES = ("minmax", "mse")

#: Weight compensation modes of :func:`zerobit.convert` (True and False: the first and last).
COMPENSATIONS = ("initial", "annealed", "tracking", "off")


def compensation_mode(value: bool | str) -> str:
    """Return the compensation mode named by ``value`` (True: "initial", False: "off").

    Raises:
        ValueError: For anything else.
    """
    if value is True or value is False:
        return "initial" if value else "off"
    if value not in COMPENSATIONS:
        raise ValueError(
            f"weight compensation must be one of {COMPENSATIONS}, True or False, got {value!r}"
        )
    return str(value)


def _bits_tuple(value: Any, what: str, allowed: tuple[int, ...]) -> tuple[int, ...]:
    """Validate a bit set and return it sorted, as a tuple of ints."""
    if isinstance(value, int):
        value = (value,)
    try:
        bits = tuple(value)
    except TypeError:
        raise ValueError(f"{what} must be a sequence of ints, got {value!r}") from None
    if not bits:
        raise ValueError(f"{what} is empty; give at least one bit-width from {allowed}")
    for b in bits:
        if isinstance(b, bool) or not isinstance(b, int):
            raise ValueError(f"{what} must contain ints, got {b!r}")
        if b < 0:
            raise ValueError(f"{what} contains the negative bit-width {b}")
        if b not in allowed:
            raise ValueError(f"{what} contains {b}, which is not supported; allowed: {allowed}")
    if len(set(bits)) != len(bits):
        raise ValueError(f"{what} repeats a bit-width: {bits}")
    return tuple(sorted(bits))


@dataclass(frozen=True)
class LayerOverride:
    """Per-layer restriction of the search space, keyed by module name in a SearchSpace.

    Attributes:
        weight_bits: Candidate weight bit-widths of this layer (intersected with its group's).
        act_bits: Candidate bit-widths of the activation this layer produces.
        prunable: ``False`` removes the 0-bit option from the layer and its coupling group.
    """

    weight_bits: tuple[int, ...] | None = None
    act_bits: tuple[int, ...] | None = None
    prunable: bool | None = None

    def __post_init__(self) -> None:
        if self.weight_bits is not None:
            bits = _bits_tuple(self.weight_bits, "override weight_bits", SUPPORTED_WEIGHT_BITS)
            if bits == (0,):
                raise ValueError("override weight_bits=(0,) would prune the whole layer")
            object.__setattr__(self, "weight_bits", bits)
        if self.act_bits is not None:
            bits = _bits_tuple(self.act_bits, "override act_bits", SUPPORTED_ACT_BITS)
            object.__setattr__(self, "act_bits", bits)
        if self.prunable is not None and not isinstance(self.prunable, bool):
            raise ValueError(f"override prunable must be a bool, got {self.prunable!r}")


@dataclass(frozen=True)
class SearchSpace:
    """Which bit-widths the search may choose from.

    Attributes:
        weight_bits: Candidate bit-widths of every output channel; 0 means the channel is pruned.
        act_bits: Candidate bit-widths of every quantized activation tensor (one choice per tensor).
        input_bits: Candidate bit-widths of the network input.
        overrides: Module name (qualified, as in ``model.named_modules()``) to a
            :class:`LayerOverride` or a dict of its fields.
        weight_granularity: ``"channel"`` (one bit-width per output channel) or ``"layer"`` (one
            per coupling group, the EdMIPS-style layer-wise search; no 0-bit option).
        weight_range: How each channel's weight range (its quantization scale times ``n_p``) is
            chosen at every bit-width: ``"minmax"`` (its largest magnitude, the paper's) or
            ``"mse"`` (the clipped range with the least squared error; see
            :func:`zerobit.quant.weight_ranges`). Used by the search, the frozen model and so
            the export.

    Example:
        >>> space = SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(8,),
        ...                     overrides={"fc": dict(prunable=False)})
        >>> space.overrides["fc"].prunable
        False
    """

    weight_bits: tuple[int, ...] = (0, 2, 4, 8)
    act_bits: tuple[int, ...] = (2, 4, 8)
    input_bits: tuple[int, ...] = (8,)
    overrides: Mapping[str, LayerOverride] = field(default_factory=dict)
    weight_granularity: str = "channel"
    weight_range: str = "minmax"

    def __post_init__(self) -> None:
        if self.weight_range not in SUPPORTED_WEIGHT_RANGES:
            raise ValueError(
                f"weight_range must be one of {SUPPORTED_WEIGHT_RANGES}, got {self.weight_range!r}"
            )
        weight_bits = _bits_tuple(self.weight_bits, "weight_bits", SUPPORTED_WEIGHT_BITS)
        if weight_bits == (0,):
            raise ValueError("weight_bits=(0,) would prune every channel; add a non-zero bit-width")
        object.__setattr__(self, "weight_bits", weight_bits)
        if self.weight_granularity not in ("channel", "layer"):
            raise ValueError(
                f"weight_granularity must be 'channel' or 'layer', got {self.weight_granularity!r}"
            )
        if self.weight_granularity == "layer" and 0 in weight_bits:
            raise ValueError(
                "a layer-wise search chooses precision only: remove 0 from weight_bits (pruning "
                "whole layers would disconnect the network)"
            )
        object.__setattr__(
            self, "act_bits", _bits_tuple(self.act_bits, "act_bits", SUPPORTED_ACT_BITS)
        )
        object.__setattr__(
            self, "input_bits", _bits_tuple(self.input_bits, "input_bits", SUPPORTED_ACT_BITS)
        )
        if not isinstance(self.overrides, Mapping):
            raise ValueError(
                f"overrides must be a mapping of module name to override, got {self.overrides!r}"
            )
        parsed: dict[str, LayerOverride] = {}
        for name, value in self.overrides.items():
            if isinstance(value, LayerOverride):
                parsed[name] = value
            elif isinstance(value, Mapping):
                unknown = set(value) - {"weight_bits", "act_bits", "prunable"}
                if unknown:
                    raise ValueError(
                        f"override for {name!r} has unknown keys {sorted(unknown)}; "
                        "use weight_bits, act_bits or prunable"
                    )
                parsed[name] = LayerOverride(**value)
            else:
                raise ValueError(
                    f"override for {name!r} must be a dict or LayerOverride, got {value!r}"
                )
        object.__setattr__(self, "overrides", parsed)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable description (inverse of :meth:`from_dict`)."""
        return {
            "weight_bits": list(self.weight_bits),
            "act_bits": list(self.act_bits),
            "input_bits": list(self.input_bits),
            "weight_granularity": self.weight_granularity,
            "weight_range": self.weight_range,
            "overrides": {
                name: {
                    k: (list(v) if isinstance(v, tuple) else v)
                    for k, v in vars(o).items()
                    if v is not None
                }
                for name, o in self.overrides.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Build a space from the output of :meth:`to_dict`."""
        return cls(
            weight_bits=tuple(data["weight_bits"]),
            act_bits=tuple(data["act_bits"]),
            input_bits=tuple(data.get("input_bits", (8,))),
            overrides=dict(data.get("overrides", {})),
            weight_granularity=data.get("weight_granularity", "channel"),
            weight_range=data.get("weight_range", "minmax"),
        )


@dataclass(frozen=True)
class Sampling:
    """How architecture probabilities are drawn from the logits during the search.

    The temperature decays exponentially with training progress ``t`` in [0, 1]:
    ``T(t) = initial_temperature * (final_temperature / initial_temperature) ** t``, so the
    schedule has the same shape whatever the epoch budget. The default final temperature
    ``exp(-4.5)`` equals the paper's after 100 of its epochs (``T_e = exp(-0.045 e)``).

    Attributes:
        initial_temperature: Softmax temperature at progress 0.
        final_temperature: Softmax temperature at progress 1.
        gumbel: Add Gumbel noise to the logits (drawn once per group per step).
        hard: Forward a one-hot sample, backward through the soft probabilities.
    """

    initial_temperature: float = 1.0
    final_temperature: float = math.exp(-4.5)
    gumbel: bool = False
    hard: bool = False

    def __post_init__(self) -> None:
        for name in ("initial_temperature", "final_temperature"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")

    def temperature(self, progress: float) -> float:
        """Return the temperature at training progress ``progress`` (clamped to [0, 1])."""
        t = min(max(float(progress), 0.0), 1.0)
        return self.initial_temperature * (self.final_temperature / self.initial_temperature) ** t

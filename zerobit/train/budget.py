# SPDX-License-Identifier: Apache-2.0
# Budget mode: parse a target such as "size=20kB", steer the strength toward it during the
# search, and make the final architecture fit with a documented greedy step.
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from zerobit.cost import resolve_cost
from zerobit.search import SearchModel
from zerobit.search.sampling import discretize
from zerobit.search.specs import build_layer_specs

#: Byte multipliers of the size units: kB = 1000 bytes, KiB = 1024 bytes.
SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}
#: The strength controller's default gain per step.
DEFAULT_RATE = 0.05
#: Target names -> cost model.
TARGET_COSTS = {
    "size": "size",
    "bitops": "bitops",
    "macs": "macs",
    "mpic": "mpic",
    "ne16": "ne16",
    "flash": "flash",
    "ram": "ram",
}
#: Targets written in bytes (B, kB, KiB, MB, MiB) -> units of the cost model per byte.
BYTE_TARGETS = {"size": 8, "flash": 1, "ram": 1}


@dataclass(frozen=True)
class Target:
    """A budget on one cost model.

    Attributes:
        cost: Cost model name ("size", "bitops", "macs", "mpic", "ne16", "flash", "ram").
        value: The budget in the cost model's own unit (bits for "size", bytes for "flash"
            and "ram", cycles for "mpic").
        text: The budget as the user wrote it.
    """

    cost: str
    value: float
    text: str


def parse_target(text: str) -> Target:
    """Parse ``"size=20kB"``, ``"flash=32KiB"``, ``"ram=4096"`` (bytes) or ``"mpic=2e6"``.

    Raises:
        ValueError: For an unknown cost, unit or a non-positive value.
    """
    match = re.fullmatch(r"\s*(\w+)\s*=\s*([0-9.eE+-]+)\s*([A-Za-z]*)\s*", text)
    if not match:
        raise ValueError(f"target {text!r} must look like size=20kB or mpic=2e6")
    name, number, unit = match.group(1).lower(), match.group(2), match.group(3)
    if name not in TARGET_COSTS:
        raise ValueError(f"target cost {name!r} is unknown; use one of {sorted(TARGET_COSTS)}")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"target {text!r}: {number!r} is not a number") from None
    if name in BYTE_TARGETS:
        if unit == "b":  # a lowercase b alone is ambiguous (bits or bytes): refuse it
            raise ValueError(f"target {text!r}: write B for bytes, or kB / KiB / MB / MiB")
        factor = SIZE_UNITS.get(unit.lower())
        if factor is None:
            raise ValueError(
                f"target {text!r}: unknown size unit {unit!r}; use B, kB, KiB, MB, MiB"
            )
        value = value * factor * BYTE_TARGETS[name]  # size counts bits, flash and ram bytes
    elif unit:
        raise ValueError(f"target {text!r}: {name} takes a plain number (e.g. {name}=2e6)")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"target {text!r} must be positive")
    return Target(TARGET_COSTS[name], value, text)


def _choices(smodel: SearchModel) -> tuple[list[list[int]], list[int]]:
    """Discrete choices as indices: per group one index per channel, per act group one index."""
    weight = [discretize(s.logits.detach(), s.bits).tolist() for s in smodel.selectors]
    act = [int(discretize(q.logits.detach(), q.bits)) for q in smodel.quantizers]
    return weight, act


def _cost_of(smodel: SearchModel, cost: str, weight: list[list[int]], act: list[int]) -> float:
    function = resolve_cost(cost)
    channels = []
    for group, idx in zip(smodel.selectors, weight):
        channels.append([sum(1 for i in idx if i == p) for p in range(len(group.bits))])
    act_bits = [(q.bits[i],) for q, i in zip(smodel.quantizers, act)]
    specs = build_layer_specs(
        smodel.analysis, smodel.group_bits, channels, act_bits, [(1,)] * len(act_bits)
    )
    return float(sum(function(spec) for spec in specs) + smodel.graph_cost(function, channels))


def discrete_cost(smodel: SearchModel, cost: str) -> float:
    """Cost of the current argmax architecture, in the cost model's unit."""
    weight, act = _choices(smodel)
    return _cost_of(smodel, cost, weight, act)


def minimum_cost(smodel: SearchModel, cost: str) -> float:
    """Return the smallest cost the space allows.

    That is one channel per prunable group and every choice at its lowest bit-width (the costs
    zerobit ships grow with every bit-width).
    """
    weight = []
    for s in smodel.selectors:
        channels = s.logits.shape[1]
        lowest = min(i for i, b in enumerate(s.bits) if b > 0)
        if s.zero_index is None:
            weight.append([lowest] * channels)
        else:
            weight.append([lowest] + [s.zero_index] * (channels - 1))
    act = [q.bits.index(min(q.bits)) for q in smodel.quantizers]
    return _cost_of(smodel, cost, weight, act)


#: What the budget controller compares with the budget, after each step.
BUDGET_SIGNALS = ("argmax", "expected")


class StrengthController:
    """Multiplicative controller steering the strength so the final model meets the budget.

    After each step, ``log(strength) += rate * log(cost / target)``: over budget, the strength
    grows; under it, it shrinks (the search then recovers accuracy). The strength is kept within
    [1e-3, 1e3]. The cost compared is, by ``signal``:

    - ``"argmax"``: the discrete cost of the current argmax architecture, the model the search
      would return now. Its choices move in steps and freeze as the temperature falls, so the
      strength overshoots early and, undamped, the search tends to end well under budget (15 to
      55 % under in docs/benchmarks.md): the budget is met without the greedy step, but not all
      of it is used. ``damping`` (below) takes most of that overshoot away.
    - ``"expected"``: the differentiable cost of the current probabilities, which moves
      smoothly. The search ends closer to the budget (82 to 99 % of it in the benchmarks, the
      smallest keyword-spotting budget aside; the greedy step trims any excess), so more of a
      named budget is used; accuracy at equal size is about the same.

    With ``damping`` > 0 the error is taken where the cost is heading: while the expected cost
    falls, ``damping`` times its slope (log cost per step, over the last ``window`` steps) is
    added to the log ratio, i.e. the controller compares the budget with the cost extrapolated
    ``damping`` steps ahead. The architecture answers a stronger cost with a lag (its logits
    move at the architecture learning rate), so without damping the strength keeps growing
    while the cost is already on its way down, the cost falls far under the budget and, the
    temperature having fallen meanwhile, the search cannot win the lost channels back (the
    smallest budgets of docs/benchmarks.md end at 8 to 20 % of the budget, several below 25 %
    accuracy). A rising cost adds nothing: an excess left at the end is trimmed by the greedy
    step of :func:`fit_budget_`.

    Args:
        target: The budget.
        strength: Initial strength.
        rate: Gain per step.
        signal: ``"argmax"`` or ``"expected"``.
        damping: Steps ahead the falling cost is extrapolated (0: off).
        window: Steps over which the slope of the expected cost is taken (at least 2).
    """

    def __init__(
        self,
        target: Target,
        strength: float,
        rate: float = DEFAULT_RATE,
        signal: str = "argmax",
        damping: float = 0.0,
        window: int = 8,
    ) -> None:
        if signal not in BUDGET_SIGNALS:
            raise ValueError(f"budget signal must be one of {BUDGET_SIGNALS}, got {signal!r}")
        if not (damping >= 0 and math.isfinite(damping)):
            raise ValueError(f"budget damping must be a finite number >= 0, got {damping}")
        if window < 2:
            raise ValueError(f"the damping window must be at least 2 steps, got {window}")
        self.target = target
        self.log_strength = math.log(max(strength, 1e-3))
        self.rate = rate
        self.signal = signal
        self.damping = damping
        self.window = window
        self.trend: list[float] = []  # log expected cost of the last `window` steps

    @property
    def strength(self) -> float:
        """Current strength."""
        return math.exp(self.log_strength)

    def signal_cost(self, smodel: SearchModel) -> float:
        """Return the cost compared with the budget, in the cost model's unit."""
        if self.signal == "argmax":
            return discrete_cost(smodel, self.target.cost)
        return smodel.expected_cost(self.target.cost)

    def update(self, smodel: SearchModel) -> float:
        """Update from the model's current cost (see ``signal``); return the new strength."""
        cost = self.signal_cost(smodel)
        error = math.log(max(cost, 1e-12) / self.target.value)
        if self.damping > 0:
            expected = cost if self.signal == "expected" else smodel.expected_cost(self.target.cost)
            error += self.damping * min(self._slope(expected), 0.0)
        self.log_strength += self.rate * error
        self.log_strength = min(max(self.log_strength, math.log(1e-3)), math.log(1e3))
        return self.strength

    def _slope(self, expected: float) -> float:
        """Record the expected cost; return its log's mean change per step over the window."""
        self.trend = [*self.trend[-(self.window - 1) :], math.log(max(expected, 1e-12))]
        if len(self.trend) < 2:
            return 0.0
        return (self.trend[-1] - self.trend[0]) / (len(self.trend) - 1)

    def state_dict(self) -> dict[str, Any]:
        """Return the controller state, as tensors (checkpoints are read with weights_only=True)."""
        return {
            "log_strength": torch.tensor(self.log_strength, dtype=torch.float64),
            "trend": torch.tensor(self.trend, dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (a checkpoint written before damping has no trend)."""
        self.log_strength = float(state["log_strength"])
        self.trend = [float(x) for x in state.get("trend", torch.zeros(0)).tolist()]


Move = tuple[float, str, int, int, int]
"""A one-step move: (logit drop, "w" or "a", group, channel (-1 for "a"), new choice index)."""


def fit_budget_(smodel: SearchModel, target: Target) -> int:
    """Lower bits of the argmax architecture until it meets ``target``; return the moves made.

    Greedy rule: among every possible one-step move -- one channel to the next lower bit-width
    of its group (to 0 only if the group is prunable and keeps another channel), or one tensor
    to its next lower activation bit-width -- take the one whose logit drops least (the choice
    the search was least sure of) among those that lower the cost (if none does, the one whose
    logit drops least), and repeat until the cost fits. For a cost that only pruning changes
    (``ram``: activations take one byte per code whatever their bits) the moves are one channel
    straight to 0. The logits are then set to the new architecture.

    Raises:
        ValueError: If even the smallest architecture of the space exceeds the target.
    """
    weight, act = _choices(smodel)
    cost = _cost_of(smodel, target.cost, weight, act)
    prune_only = not getattr(resolve_cost(target.cost), "depends_on_bits", True)
    moves = 0
    while cost > target.value:
        candidates = _moves(smodel, weight, act, prune_only)
        if not candidates:
            raise ValueError(
                f"no architecture of the space meets {target.text} "
                f"(smallest: {minimum_cost(smodel, target.cost):.6g})"
            )
        chosen: tuple[list[list[int]], list[int], float] | None = None
        for move in candidates:
            new_weight, new_act = _apply(smodel, weight, act, move)
            new_cost = _cost_of(smodel, target.cost, new_weight, new_act)
            if chosen is None or new_cost < cost:  # if no move lowers it: the least sure one
                chosen = (new_weight, new_act, new_cost)
            if new_cost < cost:
                break
        assert chosen is not None  # candidates is not empty
        weight, act, cost = chosen
        moves += 1
    if moves:
        _set_choices_(smodel, weight, act)
    return moves


def _moves(
    smodel: SearchModel, weight: list[list[int]], act: list[int], prune_only: bool
) -> list[Move]:
    """Every one-step move from the choices ``weight``/``act``, the smallest logit drop first."""
    moves: list[Move] = []
    for g, s in enumerate(smodel.selectors):
        logits = s.logits.detach().cpu().numpy()  # float32 (P, C): numpy reads elements fast
        kept = sum(1 for i in weight[g] if s.bits[i] > 0)
        pinned = None if s.pinned_pruning is None else s.pinned_pruning.tolist()
        for c, i in enumerate(weight[g]):
            can_prune = kept > 1 and (pinned is None or not pinned[c])
            if not prune_only:
                lower = _next_lower(s.bits, i, allow_zero=can_prune)
            elif can_prune and s.bits[i] > 0 and not s.per_layer:
                lower = s.zero_index
            else:
                lower = None
            if lower is not None:
                moves.append((float(logits[i, c] - logits[lower, c]), "w", g, c, lower))
    for a, q in enumerate(smodel.quantizers):
        lower = None if prune_only else _next_lower(q.bits, act[a], allow_zero=False)
        if lower is not None:
            drop = float(q.logits.detach()[act[a]] - q.logits.detach()[lower])
            moves.append((drop, "a", a, -1, lower))
    moves.sort(key=lambda move: move[0])  # stable: equal drops keep the order above
    return moves


def _apply(
    smodel: SearchModel, weight: list[list[int]], act: list[int], move: Move
) -> tuple[list[list[int]], list[int]]:
    """Return new choices with ``move`` applied (the inputs are not modified)."""
    _, kind, index, channel, lower = move
    weight, act = [list(row) for row in weight], list(act)
    if kind == "a":
        act[index] = lower
    elif smodel.selectors[index].per_layer:  # a layer-wise search moves the whole layer
        weight[index] = [lower] * len(weight[index])
    else:
        weight[index][channel] = lower
    return weight, act


def _next_lower(bits: tuple[int, ...], index: int, allow_zero: bool) -> int | None:
    """Index of the next lower bit-width than ``bits[index]`` (0 only if allowed), or None."""
    current = bits[index]
    lower = [i for i, b in enumerate(bits) if b < current and (b > 0 or allow_zero)]
    if not lower:
        return None
    return max(lower, key=lambda i: bits[i])


@torch.no_grad()
def _set_choices_(smodel: SearchModel, weight: list[list[int]], act: list[int]) -> None:
    for s, idx in zip(smodel.selectors, weight):
        logits = torch.zeros(s.logits.shape)
        logits[torch.tensor(idx), torch.arange(len(idx))] = 10.0
        s.set_logits_(logits)
    for q, i in zip(smodel.quantizers, act):
        logits = torch.zeros_like(q.logits)
        logits[i] = 10.0
        q.logits.copy_(logits)

# SPDX-License-Identifier: Apache-2.0
# Baselines through the same pipeline and epochs: fixed precision, pruning only, layer-wise and
# channel-wise mixed precision without pruning.
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from zerobit.train.run import RunConfig
from zerobit.train.sweep import run_points

#: Methods whose architecture is searched (swept over budgets); the others are single runs.
SEARCHED = ("joint", "pruning", "channelwise", "layerwise")
DESCRIPTIONS = {
    "joint": "channel-wise bits with 0 = pruned, searched jointly (this library's method)",
    "wXaY": "fixed precision: X-bit weights, Y-bit activations, quantization-aware training",
    "pruning": "pruning only: weights in (0, 8), 8-bit activations (PIT-like)",
    "channelwise": "channel-wise mixed precision without pruning (IGSC 2022)",
    "layerwise": "layer-wise mixed precision without pruning (EdMIPS-like)",
}


def method_config(base: RunConfig, method: str) -> RunConfig:
    """Return ``base`` turned into ``method`` (same data, model, epochs and seed).

    Args:
        base: The joint search's configuration.
        method: "joint", "wXaY" (e.g. "w4a8"), "pruning", "channelwise" or "layerwise".

    Raises:
        ValueError: For an unknown method, or a space without the bits a method needs.
    """
    fixed = re.fullmatch(r"w(\d)a(\d)", method)
    if fixed:
        w, a = int(fixed.group(1)), int(fixed.group(2))
        return replace(
            base,
            weight_bits=(w,),
            act_bits=(a,),
            strength=0.0,
            target=None,
            weight_granularity="channel",
            method=method,
        )
    nonzero = tuple(b for b in base.weight_bits if b > 0)
    if method == "joint":
        return replace(base, method="joint")
    if method == "pruning":
        return replace(
            base, weight_bits=(0, 8), act_bits=(8,), weight_granularity="channel", method=method
        )
    if method in ("channelwise", "layerwise"):
        if len(nonzero) < 2:
            raise ValueError(f"{method} needs at least two non-zero weight bit-widths")
        granularity = "channel" if method == "channelwise" else "layer"
        return replace(base, weight_bits=nonzero, weight_granularity=granularity, method=method)
    raise ValueError(
        f"unknown method {method!r}; use joint, wXaY (e.g. w4a8), {', '.join(SEARCHED[1:])}"
    )


def baseline(
    base: RunConfig,
    out: str | Path,
    methods: tuple[str, ...] = ("w8a8", "w4a8", "w2a8", "pruning", "layerwise"),
    points: int = 3,
    resume: bool = False,
) -> dict[str, Any]:
    """Run each method into ``out/<method>-...`` sharing one warm-up, then report them together.

    Searched methods run a budget ladder of ``points`` points on ``base.cost``; fixed-precision
    methods run once.
    """
    configs = [method_config(base, m) for m in methods]
    return run_points(base, Path(out), configs, points, resume)

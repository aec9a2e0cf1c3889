# SPDX-License-Identifier: Apache-2.0
# From architecture logits to probabilities: softmax with temperature, Gumbel noise, hard
# straight-through samples, and the one argmax + keep-alive rule used by every discrete read-out.
from __future__ import annotations

import torch


def gumbel_noise(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw standard Gumbel noise, float32 of ``shape``."""
    uniform = torch.rand(shape, generator=generator).clamp_(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(uniform))


def discretize(logits: torch.Tensor, bits: tuple[int, ...]) -> torch.Tensor:
    """Choose one candidate per column: argmax, keeping at least one channel alive.

    This is the only rule that turns logits into a discrete choice; evaluation, ``architecture()``,
    ``freeze()`` and hard sampling all use it.

    Args:
        logits: (P,) for a per-tensor choice or (P, C) for per-channel choices, rows ordered as
            ``bits``.
        bits: Candidate bit-widths; a 0 entry means "pruned".

    Returns:
        int64 indices into ``bits``: () for (P,) logits, (C,) for (P, C) logits. If every channel
        chose 0 bits, the channel whose 0-bit logit is lowest relative to its best non-zero logit
        is kept, at that best non-zero bit-width (first index wins ties).
    """
    index = logits.argmax(dim=0)
    if 0 not in bits or logits.dim() == 1:
        return index
    zero = bits.index(0)
    if bool((index != zero).any()):
        return index
    others = [i for i in range(len(bits)) if i != zero]
    best_value, best_pos = logits[others].max(dim=0)
    margin = best_value - logits[zero]
    keep = int(margin.argmax())
    index = index.clone()
    index[keep] = others[int(best_pos[keep])]
    return index


def one_hot(index: torch.Tensor, num: int, like: torch.Tensor) -> torch.Tensor:
    """Return a one-hot float tensor shaped like ``like`` ((P,) or (P, C)) from indices."""
    out = torch.zeros_like(like)
    if index.dim() == 0:
        out[index] = 1.0
    else:
        out.scatter_(0, index.unsqueeze(0), 1.0)
    return out


def sample_probs(
    logits: torch.Tensor,
    bits: tuple[int, ...],
    temperature: float,
    noise: torch.Tensor | None = None,
    hard: bool = False,
) -> torch.Tensor:
    """Differentiable probabilities over candidates (rows) for one training step.

    Args:
        logits: (P,) or (P, C) architecture logits.
        bits: Candidate bit-widths, one per row.
        temperature: Softmax temperature (> 0).
        noise: Gumbel noise shaped like ``logits``, or None for a plain softmax.
        hard: Forward the one-hot of :func:`discretize`, backward through the soft probabilities.

    Returns:
        Probabilities shaped like ``logits``; every column sums to 1.
    """
    scores = logits if noise is None else logits + noise
    soft = torch.softmax(scores / temperature, dim=0)
    if not hard:
        return soft
    hard_probs = one_hot(discretize(scores.detach(), bits), len(bits), soft)
    return hard_probs + (soft - soft.detach())

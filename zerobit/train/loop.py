# SPDX-License-Identifier: Apache-2.0
# Shared training pieces: phase settings, the default metric and its evaluation.
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of correct top-1 predictions."""
    return float((logits.argmax(dim=1) == target).float().mean())


@dataclass(frozen=True)
class PhaseConfig:
    """Epochs and optimizer settings of one phase.

    Attributes:
        epochs: Passes over the training set.
        lr: Adam learning rate of weights, biases and clips.
        arch_lr: Adam learning rate of the architecture logits (search only). Adam makes the
            logits' speed independent of the cost's units and of the model's size.
        batch_size: Mini-batch size.
        weight_decay: L2 weight decay on weights (never on clips or logits).
        patience: Early stopping: end the phase after this many epochs without a better
            validation metric (None: run every epoch). The search phase never stops early: its
            schedules are functions of progress through all its epochs.
    """

    epochs: int = 5
    lr: float = 1e-3
    arch_lr: float = 5e-2
    batch_size: int = 128
    weight_decay: float = 0.0
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0 or self.arch_lr <= 0:
            raise ValueError(f"invalid phase configuration {self}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")


@torch.no_grad()
def evaluate_metric(
    model: nn.Module, data: Dataset, metric: MetricFn = accuracy, batch_size: int = 512
) -> float:
    """Average ``metric`` of ``model`` (in eval mode) over ``data``, weighted by batch size."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in DataLoader(data, batch_size=batch_size):
        total += metric(model(x), y) * len(y)
        count += len(y)
    model.train(was_training)
    return total / max(count, 1)

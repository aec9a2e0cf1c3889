# SPDX-License-Identifier: Apache-2.0
# Shared training pieces: phase settings, the default metric and its evaluation.
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MetricFn = Callable[[torch.Tensor, torch.Tensor], float]

#: Learning-rate schedules of a phase's weight optimizer (see ``PhaseConfig.lr_schedule``).
LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, progress: float) -> float:
    """Multiplier of a phase's learning rate at ``progress`` in [0, 1] through its epochs.

    ``"constant"``: 1. ``"cosine"``: ``(1 + cos(pi * progress)) / 2``, from 1 at the first step
    to 0 after the last (half a cosine period, without restarts).
    """
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Knowledge-distillation term: ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``.

    Averaged over the batch; both arguments are class logits ``(batch, classes)``. The ``T^2``
    factor keeps the gradient's scale independent of the temperature.
    """
    log_p = torch.log_softmax(student / temperature, dim=1)
    log_q = torch.log_softmax(teacher / temperature, dim=1)
    kl = nn.functional.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
    return kl * temperature**2


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
        lr_schedule: ``"constant"`` (this class's default; a RunConfig's fine-tuning phase
            defaults to cosine) or ``"cosine"``: the weights' learning rate
            decays along half a cosine over the phase's ``epochs`` (its maximum, if ``patience``
            ends it earlier), step by step. The architecture logits' rate stays constant.
    """

    epochs: int = 5
    lr: float = 1e-3
    arch_lr: float = 5e-2
    batch_size: int = 128
    weight_decay: float = 0.0
    patience: int | None = None
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0 or self.arch_lr <= 0:
            raise ValueError(f"invalid phase configuration {self}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")


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

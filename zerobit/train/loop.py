# SPDX-License-Identifier: Apache-2.0
# The three phases of the method as plain functions: float warm-up, search, fine-tune.
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from zerobit.search import FrozenModel, SearchModel

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


def _loader(data: Dataset, batch_size: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        data, batch_size=batch_size, shuffle=True, generator=generator, drop_last=False
    )


def warm_up(
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    config: PhaseConfig,
    loss_fn: LossFn | None = None,
    metric: MetricFn = accuracy,
    seed: int = 0,
) -> tuple[nn.Module, float]:
    """Train the float model; return the best model on the validation set and its metric."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    optimizer = torch.optim.Adam(model.parameters(), config.lr, weight_decay=config.weight_decay)
    best, best_metric = copy.deepcopy(model), -float("inf")
    for epoch in range(config.epochs):
        model.train()
        for x, y in tqdm(
            _loader(train, config.batch_size, seed + epoch),
            desc=f"warm-up {epoch + 1}/{config.epochs}",
            leave=False,
        ):
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        value = evaluate_metric(model, val, metric)
        if value > best_metric:
            best, best_metric = copy.deepcopy(model), value
    return best.eval(), best_metric


def search(
    smodel: SearchModel,
    train: Dataset,
    val: Dataset,
    config: PhaseConfig,
    strength: float,
    loss_fn: LossFn | None = None,
    metric: MetricFn = accuracy,
    seed: int = 0,
) -> tuple[SearchModel, float]:
    """Search weights and architecture together: loss + strength * normalized cost.

    The temperature follows training progress (``smodel.set_progress``). The model of the last
    epoch is returned with its validation metric (choosing the best-scoring epoch would favour
    the early, barely compressed architectures).
    """
    loss_fn = loss_fn or nn.functional.cross_entropy
    optimizer = torch.optim.Adam(smodel.weight_parameter_groups(config.weight_decay), config.lr)
    arch_params = list(smodel.arch_parameters())
    arch_optimizer = torch.optim.Adam(arch_params, config.arch_lr) if arch_params else None
    steps_per_epoch = max(1, -(-len(train) // config.batch_size))  # type: ignore[arg-type]
    total = max(1, config.epochs * steps_per_epoch)
    step, value = 0, float("nan")
    for epoch in range(config.epochs):
        smodel.train()
        for x, y in tqdm(
            _loader(train, config.batch_size, seed + epoch),
            desc=f"search {epoch + 1}/{config.epochs}",
            leave=False,
        ):
            smodel.set_progress(step / total)
            optimizer.zero_grad()
            if arch_optimizer is not None:
                arch_optimizer.zero_grad()
            loss = loss_fn(smodel(x), y) + strength * smodel.cost()
            loss.backward()
            optimizer.step()
            if arch_optimizer is not None:
                arch_optimizer.step()
            step += 1
        value = evaluate_metric(smodel, val, metric)
    return smodel.detach_probs_().eval(), value


def fine_tune(
    frozen: FrozenModel,
    train: Dataset,
    val: Dataset,
    config: PhaseConfig,
    loss_fn: LossFn | None = None,
    metric: MetricFn = accuracy,
    seed: int = 0,
) -> tuple[FrozenModel, float]:
    """Fine-tune a frozen model; validation runs the exact integer simulation (eval mode)."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    optimizer = torch.optim.Adam(frozen.parameters(), config.lr)
    best, best_metric = copy.deepcopy(frozen), evaluate_metric(frozen, val, metric)
    for epoch in range(config.epochs):
        frozen.train()
        for x, y in tqdm(
            _loader(train, config.batch_size, seed + epoch),
            desc=f"fine-tune {epoch + 1}/{config.epochs}",
            leave=False,
        ):
            optimizer.zero_grad()
            loss_fn(frozen(x), y).backward()
            optimizer.step()
        value = evaluate_metric(frozen, val, metric)
        if value > best_metric:
            best, best_metric = copy.deepcopy(frozen), value
    return best.eval(), best_metric

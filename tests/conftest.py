# SPDX-License-Identifier: Apache-2.0
# Shared fixtures: deterministic seeds, a seeded hypothesis profile, small helper models.
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hypothesis import settings
from torch import nn

settings.register_profile("zerobit", derandomize=True, max_examples=200, deadline=None)
settings.load_profile("zerobit")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module's tests: its models are tiny, and one thread is faster
    than two on a shared 2-core machine (use with ``pytestmark``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ConcatNet(nn.Module):
    """Two branches concatenated along channels, then a conv and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(6)
        self.left = nn.Conv2d(6, 4, 3, padding=1)
        self.right = nn.Conv2d(6, 5, 1)
        self.right_bn = nn.BatchNorm2d(5)
        self.mix = nn.Conv2d(9, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        a = torch.relu(self.left(x))
        b = torch.relu(self.right_bn(self.right(x)))
        x = torch.relu(self.mix(torch.cat([a, b], dim=1)))
        return self.fc(torch.flatten(self.pool(x), 1))


class FlattenNet(nn.Module):
    """Conv -> flatten of a 3x3 map -> linear -> linear (tests the flatten multiplier)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc1 = nn.Linear(4 * 3 * 3, 7)
        self.fc2 = nn.Linear(7, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


def randomize_bn_(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics, as after a warm-up."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model

# SPDX-License-Identifier: Apache-2.0
# Multi-layer perceptron baseline: flatten, then Linear + BatchNorm1d + ReLU per hidden layer.
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from zerobit.models.blocks import check_num_classes
from zerobit.models.registry import register_model


@register_model("mlp")
class MLP(nn.Module):
    """Fully connected classifier for small images (e.g. Fashion-MNIST or 8x8 digits).

    ``torch.flatten(x, 1)``, then per hidden layer ``fc{i}`` (Linear with bias) + ``bn{i}``
    (BatchNorm1d) + ``relu{i}``, then ``classifier`` (Linear). PyTorch default initialisation.

    Args:
        input_shape: Shape of one sample; its elements are flattened channel-major.
        num_classes: Number of output logits.
        hidden: Width of each hidden layer, in order; may be empty (a linear classifier).

    Raises:
        ValueError: On a malformed ``input_shape``, ``num_classes`` or ``hidden``.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        hidden: Sequence[int] = (256, 128),
    ):
        super().__init__()
        shape = tuple(input_shape)
        if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {shape}")
        check_num_classes(num_classes)
        widths = tuple(hidden)
        if not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f"hidden widths must be positive ints, got {widths!r}")
        self.input_shape = shape
        self.num_classes = num_classes
        self.hidden = widths
        in_features = math.prod(shape)
        for i, out_features in enumerate(widths, start=1):
            self.add_module(f"fc{i}", nn.Linear(in_features, out_features))
            self.add_module(f"bn{i}", nn.BatchNorm1d(out_features))
            self.add_module(f"relu{i}", nn.ReLU())
            in_features = out_features
        self.classifier = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the logits.

        Args:
            x: float (N, *input_shape).

        Returns:
            float (N, num_classes) logits.
        """
        x = torch.flatten(x, 1)
        for i in range(1, len(self.hidden) + 1):
            x = getattr(self, f"relu{i}")(getattr(self, f"bn{i}")(getattr(self, f"fc{i}")(x)))
        return self.classifier(x)

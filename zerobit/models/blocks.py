# SPDX-License-Identifier: Apache-2.0
# Building blocks and argument checks shared by the reference models.
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def check_image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate a ``(channels, height, width)`` input shape.

    Args:
        input_shape: Shape of one sample without the batch dimension.

    Returns:
        The shape as a tuple of three ints.

    Raises:
        ValueError: If the shape does not have three positive integer entries.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(
            f"input_shape must be (channels, height, width) with positive ints, got {shape!r}"
        )
    return shape[0], shape[1], shape[2]


def check_num_classes(num_classes: int) -> None:
    """Raise ``ValueError`` unless ``num_classes`` is a positive int.

    Args:
        num_classes: Number of output logits.

    Raises:
        ValueError: If ``num_classes`` is not a positive int.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 conv + BN + ReLU followed by pointwise 1x1 conv + BN + ReLU.

    Submodules: ``depthwise``, ``depthwise_bn``, ``depthwise_relu``, ``pointwise``,
    ``pointwise_bn``, ``pointwise_relu``. Every ReLU is its own module so graph passes that act per
    call site (activation quantizers) see one module per position.

    Args:
        in_channels: Input channels (also the depthwise conv's channels).
        out_channels: Output channels of the pointwise conv.
        stride: Stride of the depthwise conv.
        bias: Whether both convs carry a bias.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, bias: bool = True):
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=bias
        )
        self.depthwise_bn = nn.BatchNorm2d(in_channels)
        self.depthwise_relu = nn.ReLU()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.pointwise_bn = nn.BatchNorm2d(out_channels)
        self.pointwise_relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: float (N, in_channels, H, W).

        Returns:
            float (N, out_channels, ceil(H / stride), ceil(W / stride)).
        """
        x = self.depthwise_relu(self.depthwise_bn(self.depthwise(x)))
        return self.pointwise_relu(self.pointwise_bn(self.pointwise(x)))

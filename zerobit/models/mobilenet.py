# SPDX-License-Identifier: Apache-2.0
# MobileNetV1 of the MLPerf Tiny visual-wake-words benchmark.
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zerobit.models.blocks import DepthwiseSeparable, check_image_shape, check_num_classes
from zerobit.models.registry import register_model

# (output channels at width 1, depthwise stride) of the 13 depthwise-separable blocks.
MOBILENET_V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
MOBILENET_V1_STEM_CHANNELS = 32


def scaled_channels(channels: int, width: float) -> int:
    """Scale a channel count by the width multiplier as Keras does (truncation, at least 1).

    Args:
        channels: Channel count at width 1.
        width: Width multiplier (alpha).

    Returns:
        ``max(1, int(channels * width))``.
    """
    return max(1, int(channels * width))


@register_model("mobilenetv1")
class MobileNetV1(nn.Module):
    """MobileNetV1 from MLPerf Tiny (visual wake words, 96x96 RGB, width 0.25, 2 classes).

    Stem 3x3 stride-2 conv + BN + ReLU with ``32 * width`` channels; 13
    :class:`~zerobit.models.blocks.DepthwiseSeparable` blocks (see ``MOBILENET_V1_BLOCKS``;
    stride 2 at blocks 2, 4, 6 and 12); global average pool; flatten; linear classifier. Every
    conv has a bias (the Keras reference's default) and is followed by BN. Padding is symmetric
    (1 pixel), whereas Keras' ``"same"`` pads stride-2 convs only at the bottom/right; output sizes
    agree. Conv and linear weights use Kaiming-normal init (the reference's ``he_normal``).

    Qualified module names: ``stem``, ``stem_bn``, ``stem_relu``, ``block{1..13}.{depthwise,
    depthwise_bn, depthwise_relu, pointwise, pointwise_bn, pointwise_relu}``, ``avgpool``,
    ``classifier``.

    Args:
        input_shape: ``(channels, height, width)`` of one sample.
        num_classes: Number of output logits.
        width: Width multiplier applied to every channel count (truncated, at least 1).

    Raises:
        ValueError: On a malformed ``input_shape``, ``num_classes`` or ``width``.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 96, 96),
        num_classes: int = 2,
        width: float = 0.25,
    ):
        super().__init__()
        channels, _, _ = check_image_shape(input_shape)
        check_num_classes(num_classes)
        if not width > 0:
            raise ValueError(f"width must be positive, got {width!r}")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.width = width
        stem_channels = scaled_channels(MOBILENET_V1_STEM_CHANNELS, width)
        self.stem = nn.Conv2d(channels, stem_channels, 3, stride=2, padding=1, bias=True)
        self.stem_bn = nn.BatchNorm2d(stem_channels)
        self.stem_relu = nn.ReLU()
        self.block_names: tuple[str, ...] = tuple(
            f"block{i}" for i in range(1, len(MOBILENET_V1_BLOCKS) + 1)
        )
        in_channels = stem_channels
        for name, (out_channels, stride) in zip(self.block_names, MOBILENET_V1_BLOCKS):
            out_channels = scaled_channels(out_channels, width)
            self.add_module(name, DepthwiseSeparable(in_channels, out_channels, stride, bias=True))
            in_channels = out_channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the logits.

        Args:
            x: float (N, *input_shape).

        Returns:
            float (N, num_classes) logits.
        """
        x = self.stem_relu(self.stem_bn(self.stem(x)))
        for name in self.block_names:
            x = getattr(self, name)(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)

# SPDX-License-Identifier: Apache-2.0
# DS-CNN of the MLPerf Tiny keyword-spotting benchmark (spec §5.3).
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zerobit.models.blocks import DepthwiseSeparable, check_image_shape, check_num_classes
from zerobit.models.registry import register_model

_CHANNELS = 64


@register_model("dscnn")
class DSCNN(nn.Module):
    """DS-CNN from MLPerf Tiny (Speech Commands, 49x10 MFCC), 22,016 conv + linear weights.

    Stem conv 10x4, stride 2, padding (5, 1), 64 channels (bias) + BN + ReLU + Dropout(0.2)
    (25x5 maps at the default shape); four :class:`~zerobit.models.blocks.DepthwiseSeparable`
    blocks of 64 channels (both convs with bias); Dropout(0.4); global average pool (the
    reference's ``AvgPool2d((25, 5))``, adaptive here); flatten; linear classifier. PyTorch default
    initialisation.

    Qualified module names: ``stem``, ``stem_bn``, ``stem_relu``, ``stem_dropout``,
    ``block{1..4}.{depthwise, depthwise_bn, depthwise_relu, pointwise, pointwise_bn,
    pointwise_relu}``, ``head_dropout``, ``avgpool``, ``classifier``.

    Args:
        input_shape: ``(channels, height, width)`` of one sample; width must be at least 2.
        num_classes: Number of output logits.

    Raises:
        ValueError: On a malformed ``input_shape`` or ``num_classes``.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 49, 10), num_classes: int = 12):
        super().__init__()
        channels, _, width = check_image_shape(input_shape)
        check_num_classes(num_classes)
        # Padding (5, 1) fits the 10-tall kernel at any height; the 4-wide kernel needs W >= 2.
        if width < 2:
            raise ValueError(f"DSCNN needs an input width of at least 2, got {tuple(input_shape)}")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.stem = nn.Conv2d(channels, _CHANNELS, (10, 4), stride=2, padding=(5, 1), bias=True)
        self.stem_bn = nn.BatchNorm2d(_CHANNELS)
        self.stem_relu = nn.ReLU()
        self.stem_dropout = nn.Dropout(0.2)
        self.block1 = DepthwiseSeparable(_CHANNELS, _CHANNELS)
        self.block2 = DepthwiseSeparable(_CHANNELS, _CHANNELS)
        self.block3 = DepthwiseSeparable(_CHANNELS, _CHANNELS)
        self.block4 = DepthwiseSeparable(_CHANNELS, _CHANNELS)
        self.head_dropout = nn.Dropout(0.4)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the logits.

        Args:
            x: float (N, *input_shape), e.g. MFCCs (N, 1, 49, 10).

        Returns:
            float (N, num_classes) logits.
        """
        x = self.stem_dropout(self.stem_relu(self.stem_bn(self.stem(x))))
        x = self.block4(self.block3(self.block2(self.block1(x))))
        x = torch.flatten(self.avgpool(self.head_dropout(x)), 1)
        return self.classifier(x)

# SPDX-License-Identifier: Apache-2.0
# ResNet-8 of the MLPerf Tiny image-classification benchmark (spec §5.3).
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zerobit.models.blocks import check_image_shape, check_num_classes
from zerobit.models.registry import register_model


class ResidualStack(nn.Module):
    """One ResNet-8 stack: two 3x3 convs with BN, a residual add, then ReLU.

    Submodules: ``conv1`` (no bias), ``bn1``, ``relu1``, ``conv2`` (bias), ``bn2``, ``shortcut``
    (1x1 conv with bias and no BN, only when ``stride != 1``; ``None`` for the identity shortcut),
    ``relu_out``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of ``conv1`` and of the shortcut conv.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if stride == 1 and in_channels != out_channels:
            raise ValueError("an identity shortcut needs in_channels == out_channels")
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        # The bias before BN is redundant; spec §5.3 keeps it to match the MLPerf Tiny reference.
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=True)
        self.relu_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stack.

        Args:
            x: float (N, in_channels, H, W).

        Returns:
            float (N, out_channels, ceil(H / stride), ceil(W / stride)).
        """
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = out + shortcut
        return self.relu_out(out)


@register_model("resnet8")
class ResNet8(nn.Module):
    """ResNet-8 from MLPerf Tiny (CIFAR-10), 77,360 conv + linear weights at 3x32x32 / 10 classes.

    Stem 3x3 conv (no bias) + BN + ReLU, three :class:`ResidualStack` of 16, 32 and 64 channels
    (strides 1, 2, 2), global average pool (the reference's ``AvgPool2d(8)`` at 32x32; adaptive so
    other resolutions work), flatten, linear classifier. Conv and linear weights use Kaiming-normal
    init (fan-in, ReLU gain), biases zero, BN weight one and bias zero.

    Qualified module names: ``stem``, ``stem_bn``, ``stem_relu``, ``stack{1,2,3}.{conv1, bn1,
    relu1, conv2, bn2, shortcut, relu_out}`` (no ``stack1.shortcut``), ``avgpool``, ``classifier``.

    Args:
        input_shape: ``(channels, height, width)`` of one sample.
        num_classes: Number of output logits.

    Raises:
        ValueError: On a malformed ``input_shape`` or ``num_classes``.
    """

    def __init__(self, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10):
        super().__init__()
        channels, _, _ = check_image_shape(input_shape)
        check_num_classes(num_classes)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.stem = nn.Conv2d(channels, 16, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        self.stem_relu = nn.ReLU()
        self.stack1 = ResidualStack(16, 16, stride=1)
        self.stack2 = ResidualStack(16, 32, stride=2)
        self.stack3 = ResidualStack(32, 64, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)
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
        x = self.stack3(self.stack2(self.stack1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)

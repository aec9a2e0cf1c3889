# SPDX-License-Identifier: Apache-2.0
# Reference models (MLPerf Tiny and baselines) and the name-keyed model registry.
from zerobit.models.blocks import DepthwiseSeparable
from zerobit.models.dscnn import DSCNN
from zerobit.models.mlp import MLP
from zerobit.models.mobilenet import MobileNetV1
from zerobit.models.registry import get_model, model_names, register_model
from zerobit.models.resnet import ResidualStack, ResNet8

__all__ = [
    "DSCNN",
    "MLP",
    "DepthwiseSeparable",
    "MobileNetV1",
    "ResNet8",
    "ResidualStack",
    "get_model",
    "model_names",
    "register_model",
]

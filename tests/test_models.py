# SPDX-License-Identifier: Apache-2.0
# Reference models: shapes, fx traceability, weight counts against hand formulas, registry.
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import fx, nn

from zerobit.models import DSCNN, MLP, MobileNetV1, ResNet8, get_model, model_names


def weight_count(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def conv(c_in: int, c_out: int, k_h: int, k_w: int | None = None) -> int:
    return c_in * c_out * k_h * (k_h if k_w is None else k_w)


def test_resnet8_weight_count_matches_hand_count() -> None:
    expected = (
        conv(3, 16, 3)  # stem
        + 2 * conv(16, 16, 3)  # stack 1
        + conv(16, 32, 3) + conv(32, 32, 3) + conv(16, 32, 1)  # stack 2
        + conv(32, 64, 3) + conv(64, 64, 3) + conv(32, 64, 1)  # stack 3
        + 64 * 10  # classifier
    )  # fmt: skip
    assert expected == 77_360
    assert weight_count(ResNet8()) == 77_360


def test_dscnn_weight_count_matches_hand_count() -> None:
    expected = conv(1, 64, 10, 4) + 4 * (64 * 9 + 64 * 64) + 64 * 12
    assert expected == 22_016
    assert weight_count(DSCNN()) == 22_016


def test_mobilenetv1_weight_count_matches_hand_count() -> None:
    # Channels written out at width 0.25: stem 8, then the 13 block outputs.
    channels = [8, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256]
    expected = conv(3, 8, 3)
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        expected += c_in * 9 + c_in * c_out
    expected += 256 * 2
    assert expected == 208_112
    assert weight_count(MobileNetV1()) == expected


def test_mobilenetv1_width1_matches_published_keras_parameter_count() -> None:
    # keras.applications.MobileNet(alpha=1.0) at 224x224 has 4,253,864 parameters: conv and dense
    # weights, 4 BN values per channel (no conv biases) and the 1000 classifier biases.
    full = MobileNetV1((3, 224, 224), num_classes=1000, width=1.0)
    bn_channels = sum(m.num_features for m in full.modules() if isinstance(m, nn.BatchNorm2d))
    assert weight_count(full) + 4 * bn_channels + 1000 == 4_253_864


def test_mlp_weight_count_and_layers() -> None:
    model = MLP((1, 28, 28), 10, hidden=(256, 128))
    assert weight_count(model) == 784 * 256 + 256 * 128 + 128 * 10
    assert [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm1d)] == ["bn1", "bn2"]
    assert weight_count(MLP((1, 8, 8), 10, hidden=())) == 64 * 10


def test_resnet8_names_and_structure() -> None:
    names = dict(ResNet8().named_modules())
    for name in ("stem", "stem_bn", "stack1.conv1", "stack1.conv2", "stack2.shortcut",
                 "stack3.shortcut", "classifier"):  # fmt: skip
        assert name in names
    assert "stack1.shortcut" not in names
    assert names["stem"].bias is None and names["stack2.conv1"].bias is None
    assert names["stack2.conv2"].bias is not None and names["stack2.shortcut"].bias is not None
    assert names["stack3.shortcut"].stride == (2, 2)


def test_resnet8_kaiming_init_statistics() -> None:
    torch.manual_seed(0)
    weight = ResNet8().stack3.conv2.weight
    fan_in = 64 * 9
    assert weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)


def test_resnet8_forward_matches_manual_computation() -> None:
    torch.manual_seed(0)
    model = ResNet8().eval()
    x = torch.randn(2, 3, 32, 32)
    relu = torch.relu

    def stack(s: Any, h: torch.Tensor) -> torch.Tensor:
        out = s.bn2(s.conv2(relu(s.bn1(s.conv1(h)))))
        return relu(out + (h if s.shortcut is None else s.shortcut(h)))

    h = relu(model.stem_bn(model.stem(x)))
    h = stack(model.stack3, stack(model.stack2, stack(model.stack1, h)))
    assert h.shape == (2, 64, 8, 8)
    expected = model.classifier(torch.nn.functional.avg_pool2d(h, 8).flatten(1))
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [
        ("resnet8", (3, 32, 32), 10),
        ("resnet8", (1, 28, 28), 10),
        ("dscnn", (1, 49, 10), 12),
        ("dscnn", (1, 28, 28), 10),
        ("mobilenetv1", (3, 96, 96), 2),
        ("mobilenetv1", (1, 28, 28), 10),
        ("mlp", (1, 28, 28), 10),
        ("mlp", (1, 8, 8), 10),
    ],
)
def test_forward_shape_and_fx_trace(name: str, shape: tuple[int, ...], classes: int) -> None:
    torch.manual_seed(0)
    model = get_model(name, shape, classes).eval()
    x = torch.rand(3, *shape)
    out = model(x)
    assert out.shape == (3, classes)
    traced = fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), out, rtol=0, atol=0)
    # Every leaf module is called from the graph under its qualified name.
    called = {node.target for node in traced.graph.nodes if node.op == "call_module"}
    with_params = {n for n, m in model.named_modules() if n and not list(m.children())}
    assert with_params <= called | {
        n for n, m in model.named_modules() if isinstance(m, nn.Dropout)
    }


def test_dscnn_stem_output_is_25x5() -> None:
    model = DSCNN()
    assert model.stem(torch.zeros(1, 1, 49, 10)).shape == (1, 64, 25, 5)
    assert model.block1.depthwise.groups == 64


def test_mobilenetv1_spatial_downsampling() -> None:
    model = MobileNetV1().eval()
    h = model.stem_relu(model.stem_bn(model.stem(torch.zeros(1, 3, 96, 96))))
    sizes = []
    for name in model.block_names:
        h = getattr(model, name)(h)
        sizes.append(h.shape[-1])
    assert sizes == [48, 24, 24, 12, 12, 6, 6, 6, 6, 6, 6, 3, 3]
    assert h.shape[1] == 256


def test_registry_names_and_errors() -> None:
    assert set(model_names()) >= {"resnet8", "dscnn", "mobilenetv1", "mlp"}
    with pytest.raises(ValueError, match="unknown model 'vgg'.*resnet8"):
        get_model("vgg", (3, 32, 32), 10)
    wide = dict(get_model("mobilenetv1", (3, 96, 96), 2, width=0.5).named_modules())
    assert weight_count(wide["stem"]) == conv(3, 16, 3)
    narrow = dict(get_model("mlp", (1, 8, 8), 10, hidden=(32,)).named_modules())
    assert weight_count(narrow["fc1"]) == 64 * 32


@pytest.mark.parametrize(
    "build",
    [
        lambda: ResNet8((3, 32), 10),
        lambda: ResNet8((3, 32, 32), 0),
        lambda: DSCNN((1, 49, 1), 12),
        lambda: MobileNetV1((3, 96, 96), 2, width=0.0),
        lambda: MLP((1, 28, 28), 10, hidden=(0,)),
    ],
)
def test_invalid_arguments_raise_value_error(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        build()

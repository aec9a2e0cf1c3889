# SPDX-License-Identifier: Apache-2.0
# Name-keyed registry of the reference models, filled by the @register_model decorator.
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import nn

ModelFactory = Callable[..., nn.Module]
_Factory = TypeVar("_Factory", bound=ModelFactory)

_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[_Factory], _Factory]:
    """Register a model constructor under ``name``.

    The constructor must accept ``input_shape`` and ``num_classes`` keyword arguments.

    Args:
        name: Lower-case registry key, e.g. ``"resnet8"``.

    Returns:
        A decorator that records the constructor and returns it unchanged.

    Raises:
        ValueError: If ``name`` is already registered.
    """

    def decorator(factory: _Factory) -> _Factory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = factory
        return factory

    return decorator


def model_names() -> tuple[str, ...]:
    """Return the registered model names, sorted."""
    return tuple(sorted(_MODELS))


def get_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered reference model.

    Args:
        name: Registry key, one of :func:`model_names` (``"dscnn"``, ``"mlp"``,
            ``"mobilenetv1"``, ``"resnet8"``).
        input_shape: Shape of one input sample without the batch dimension, e.g. ``(3, 32, 32)``.
        num_classes: Number of output logits.
        **kwargs: Model-specific options (e.g. ``width`` for MobileNetV1, ``hidden`` for MLP).

    Returns:
        A freshly initialised model in training mode.

    Raises:
        ValueError: If ``name`` is not registered, or the model rejects its arguments.
    """
    try:
        factory = _MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; available models: {', '.join(model_names())}"
        ) from None
    return factory(input_shape=tuple(input_shape), num_classes=num_classes, **kwargs)

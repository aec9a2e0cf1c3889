# SPDX-License-Identifier: Apache-2.0
# The modules a converted model is made of: channel selectors (per-channel weight-bit logits),
# activation quantizers, searchable conv/linear layers and quantized average pools.
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zerobit.quant import (
    act_scale,
    candidate_weight_ranges,
    candidate_weight_scales,
    check_weight_range,
    fake_quant_act,
    mixed_act_quant,
    mixed_weight_quant,
    quantize_bias_ste,
)


def initial_logits(bits: tuple[int, ...], channels: int | None) -> torch.Tensor:
    """Logits ``p / max(bits)`` (the paper's prior, favouring high precision), (P,) or (P, C)."""
    top = max(bits)
    column = torch.tensor([b / top for b in bits], dtype=torch.float32)
    if channels is None:
        return column
    return column.unsqueeze(1).repeat(1, channels)


def _set_ref(module: nn.Module, name: str, value: object) -> None:
    """Keep a reference to a shared module without registering it as a child (one owner only)."""
    object.__setattr__(module, name, value)


class ChannelSelector(nn.Module):
    """Weight bit-width logits shared by one channel-coupling group.

    Per channel (default) every output channel has its own logits; per layer (``per_layer``,
    the EdMIPS-style layer-wise search) one column is shared by every channel.

    Attributes:
        parameter: The trainable logits, (P, C) or (P, 1) per layer, rows ordered as ``bits``.
        probs: (P, C) probabilities of the current step, set by the owning SearchModel.
    """

    def __init__(self, bits: tuple[int, ...], channels: int, per_layer: bool = False) -> None:
        super().__init__()
        self.bits = tuple(bits)
        self.channels = channels
        self.per_layer = per_layer
        # a single candidate leaves nothing to learn
        self.parameter = nn.Parameter(
            initial_logits(self.bits, 1 if per_layer else channels), requires_grad=len(bits) > 1
        )
        self.probs: torch.Tensor = torch.softmax(self.logits.detach(), dim=0)
        # Channels whose pruning decision is fixed (e.g. by an earlier pruning stage), or None.
        self.pinned_pruning: torch.Tensor | None = None

    @property
    def logits(self) -> torch.Tensor:
        """(P, C) logits: the parameter, broadcast over the channels in per-layer mode."""
        return self.parameter.expand(-1, self.channels)

    @torch.no_grad()
    def set_logits_(self, values: torch.Tensor) -> None:
        """Overwrite the logits from (P, C) values (per layer: the first channel's column)."""
        self.parameter.copy_(values[:, :1] if self.per_layer else values)

    @property
    def zero_index(self) -> int | None:
        """Row of the 0-bit (pruned) option, or None if the group cannot be pruned."""
        return self.bits.index(0) if 0 in self.bits else None

    def extra_repr(self) -> str:
        """Summarize the configuration for ``print(model)``."""
        return f"bits={self.bits}, channels={self.logits.shape[1]}"


class ActQuantizer(nn.Module):
    """Searchable activation quantizer: a mixture over candidate bit-widths, one clip per bit-width.

    Attributes:
        clips: (Q,) learned clip values beta_q (scale = beta_q / max code).
        logits: (Q,) architecture logits over ``bits``.
        probs: (Q,) probabilities of the current step, set by the owning SearchModel.
    """

    def __init__(self, bits: tuple[int, ...], signed: bool, clip: float = 6.0) -> None:
        super().__init__()
        self.bits = tuple(bits)
        self.signed = signed
        self.clips = nn.Parameter(torch.full((len(self.bits),), float(clip)))
        self.logits = nn.Parameter(initial_logits(self.bits, None), requires_grad=len(bits) > 1)
        self.probs: torch.Tensor = torch.softmax(self.logits.detach(), dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x`` (any shape, float32) with this step's mixture of bit-widths."""
        return mixed_act_quant(x, self.clips, self.probs, self.bits, self.signed)

    def effective_scale(self) -> torch.Tensor:
        """Return the expected scale sum_q p_q * beta_q / max_code_q (0-dim), detached."""
        scales = torch.stack(
            [act_scale(self.clips[i], b, self.signed) for i, b in enumerate(self.bits)]
        )
        return (self.probs.detach() * scales.detach()).sum()

    def extra_repr(self) -> str:
        """Summarize the configuration for ``print(model)``."""
        return f"bits={self.bits}, signed={self.signed}"


class SearchableLayer(nn.Module):
    """A Conv1d, Conv2d (including depthwise) or Linear whose output channels choose bit-widths.

    One implementation serves every dimension: ``dims`` is 0 (linear), 1 or 2.
    The layer's selector (shared with its coupling group) and its input quantizer are references
    owned by the SearchModel.
    """

    selector: ChannelSelector
    input_quantizer: ActQuantizer

    def __init__(self, layer: nn.Module, kind: str, weight_range: str = "minmax") -> None:
        super().__init__()
        check_weight_range(weight_range)
        weight: torch.Tensor = layer.weight  # type: ignore[assignment]
        bias: torch.Tensor = layer.bias  # type: ignore[assignment]
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())
        self.kind = kind
        self.weight_range = weight_range
        self.dims = weight.dim() - 2
        self.conv_args: dict[str, object] = {}
        if self.dims > 0:
            self.conv_args = dict(
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                groups=layer.groups,
            )

    def bind(self, selector: ChannelSelector, input_quantizer: ActQuantizer) -> None:
        """Attach the group's selector and the quantizer of this layer's input."""
        _set_ref(self, "selector", selector)
        _set_ref(self, "input_quantizer", input_quantizer)

    def linear_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """Apply the conv/linear with given weight and bias."""
        if self.dims == 0:
            return F.linear(x, weight, bias)
        op = F.conv1d if self.dims == 1 else F.conv2d
        return op(x, weight, bias, **self.conv_args)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer with this step's expected quantized weights and bias.

        Args:
            x: float32 (N, C_in, *spatial) for a conv, (N, C_in) for a linear.
        """
        selector = self.selector
        probs = selector.probs
        bits = selector.bits
        with torch.no_grad():
            ranges = candidate_weight_ranges(self.weight, bits, self.weight_range)  # (P, C)
            scales = candidate_weight_scales(self.weight, bits, ranges=ranges)
            weight_scale_eff = (probs.detach() * scales).sum(0)
            input_scale = self.input_quantizer.effective_scale()
        zero = selector.zero_index
        keep = (1.0 - probs[zero]) if zero is not None else torch.ones_like(self.bias)
        bias = quantize_bias_ste(self.bias, input_scale * weight_scale_eff, keep)
        weight = mixed_weight_quant(self.weight, probs, bits, ranges=ranges)
        return self.linear_op(x, weight, bias)

    def extra_repr(self) -> str:
        """Summarize the configuration for ``print(model)``."""
        return (
            f"kind={self.kind}, weight={tuple(self.weight.shape)}, "
            f"weight_range={self.weight_range!r}"
        )


class QuantAvgPool(nn.Module):
    """Average pool whose result is rounded back onto its input's quantization grid.

    Args:
        kernel: Pooling window (1 or 2 dims).
        stride: Pooling stride.
        padding: Zero padding, counted in the divisor.
    """

    def __init__(
        self, kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding
        count = 1
        for k in kernel:
            count *= k
        self.count = count
        self.quantizer_group = -1  # index of the quantizer among the model's

    quantizer: ActQuantizer | FrozenActQuantizer

    def bind(self, quantizer: ActQuantizer | FrozenActQuantizer) -> None:
        """Attach the quantizer shared by the pool's input and output."""
        _set_ref(self, "quantizer", quantizer)

    def _pool(self, x: torch.Tensor, divisor: int | None) -> torch.Tensor:
        if len(self.kernel) == 1:  # pool 1-d as 2-d so that divisor_override is available
            out = F.avg_pool2d(
                x.unsqueeze(2),
                (1, *self.kernel),
                (1, *self.stride),
                (0, *self.padding),
                count_include_pad=True,
                divisor_override=divisor,
            )
            return out.squeeze(2)
        return F.avg_pool2d(
            x,
            self.kernel,
            self.stride,
            self.padding,
            count_include_pad=True,
            divisor_override=divisor,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pool ``x`` (N, C, *spatial) and put the result back on the grid."""
        quantizer = self.quantizer
        if not isinstance(quantizer, FrozenActQuantizer):
            return quantizer(self._pool(x, None))
        with torch.no_grad():
            exact = quantizer.integer_avg_pool(x, self)
        if not self.training:
            return exact
        average = self._pool(x, None)  # fine-tuning: the integer result, straight-through gradient
        return average + (exact - average).detach()

    def extra_repr(self) -> str:
        """Summarize the configuration for ``print(model)``."""
        return f"kernel={self.kernel}, stride={self.stride}, padding={self.padding}"


class FrozenActQuantizer(nn.Module):
    """Activation quantizer with a fixed bit-width and one learned clip.

    In eval mode its tensors hold dequantized integer codes, code * scale, exactly as the
    integer export computes them.
    """

    def __init__(self, bits: int, signed: bool, clip: torch.Tensor) -> None:
        super().__init__()
        self.bits = int(bits)
        self.signed = signed
        self.clip = nn.Parameter(clip.detach().clone().reshape(()))

    def get_extra_state(self) -> dict[str, Any]:
        """Return the bit-width and signedness (saved in the state dict beside the clip)."""
        return {"bits": self.bits, "signed": self.signed}

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state` output (the state of another architecture included).

        Raises:
            ValueError: If ``state`` is not a bit-width in [1, 32] and a signedness.
        """
        bits, signed = (
            (state.get("bits"), state.get("signed")) if isinstance(state, dict) else (0, 0)
        )
        if not (isinstance(bits, int) and 1 <= bits <= 32 and isinstance(signed, bool)):
            raise ValueError(f"activation quantizer state {state!r} is not bits and signed")
        self.bits, self.signed = bits, signed

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ) -> None:
        key = prefix + "_extra_state"
        if key not in state_dict:  # saved before the bits were in the state: keep this model's
            state_dict[key] = self.get_extra_state()
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )

    def scale(self) -> torch.Tensor:
        """Return the quantization step (0-dim float32)."""
        return act_scale(self.clip, self.bits, self.signed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x``; on grid values (eval mode) this is exact."""
        return fake_quant_act(x, self.clip, self.bits, self.signed)

    def integer_avg_pool(self, x: torch.Tensor, pool: QuantAvgPool) -> torch.Tensor:
        """Average pool on integer codes with the one rounding function of ``zerobit.quant``."""
        from zerobit.quant import integer_avg_pool_divide

        scale = self.scale().detach()
        codes = torch.round(x / scale).double()
        sums = pool._pool(codes, 1).round().long()
        return integer_avg_pool_divide(sums, pool.count).float() * scale

    def extra_repr(self) -> str:
        """Summarize the configuration for ``print(model)``."""
        return f"bits={self.bits}, signed={self.signed}"

# SPDX-License-Identifier: Apache-2.0
# The frozen (fixed-architecture) model: fake-quantized training, and in eval mode an exact
# simulation of the integer arithmetic that the exporters run.
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from zerobit.cost import GraphSpec, LayerSpec, resolve_cost, total_cost
from zerobit.cost.graph import get_graph_term
from zerobit.graph.analysis import GraphAnalysis
from zerobit.quant import (
    act_range,
    quantize_bias,
    quantize_bias_ste,
    quantize_multiplier,
    quantize_weight_per_channel,
    requantize,
    requantize_float64,
    requantize_float64_exact,
)
from zerobit.search.layout import GraphLayout, graph_layout
from zerobit.search.modules import FrozenActQuantizer, SearchableLayer, _set_ref
from zerobit.search.specs import build_layer_specs


@dataclass
class IntegerLayer:
    """Integer parameters of one frozen layer, as every backend consumes them.

    Attributes:
        weight_codes: int32, shape of the weight; 0 in pruned channels.
        weight_scale: float32 (C_out,); 0 in pruned channels.
        bias_codes: int32 (C_out,), in units of input_scale * weight_scale.
        input_scale: float32 0-dim scale of the input codes.
        output_scale: float32 0-dim scale of the output codes, or None for a float output.
        multiplier: int64 (C_out,) requantization multipliers (None for a float output).
        shift: int64 (C_out,) requantization shifts (None for a float output).
        output_range: (lo, hi) clamp of the output codes (None for a float output).
    """

    weight_codes: torch.Tensor
    weight_scale: torch.Tensor
    bias_codes: torch.Tensor
    input_scale: torch.Tensor
    output_scale: torch.Tensor | None
    multiplier: torch.Tensor | None
    shift: torch.Tensor | None
    output_range: tuple[int, int] | None


# Integers that float32 and float64 hold exactly (|x| <= 2^24 and 2^53; kept strict below).
_FLOAT32_EXACT = 2**24
_FLOAT64_EXACT = 2**53


@dataclass
class _EvalPlan:
    """What the fast eval forward computes with, derived once from the layer's parameters.

    Attributes:
        sources: The tensors it was derived from, kept alive so that their ids stay unique.
        state: Ids, versions and data pointers of ``sources``, and the settings it depends on.
        params: The layer's :class:`IntegerLayer`.
        weight: Weight codes in ``dtype``, shaped like the weight.
        bias: Bias codes (C_out,) in ``dtype``, added by the conv/linear itself.
        dtype: Accumulation dtype, float32 where every partial sum (bias included) is exact;
            None where only the reference path is exact.
        acc_bound: Static bound on ``|acc|`` per output channel, int64 (C_out,).
        exact_float64: Whether :func:`requantize_float64` is exact for every accumulator the
            static bound allows (otherwise each forward checks the batch's own range).
        float_scale: ``(input_scale * weight_scale).float()`` in channel shape, for a float
            output.
    """

    sources: tuple[torch.Tensor, ...]
    state: tuple[Any, ...]
    params: IntegerLayer
    weight: torch.Tensor
    bias: torch.Tensor
    dtype: torch.dtype | None
    acc_bound: torch.Tensor
    exact_float64: bool
    float_scale: torch.Tensor | None


class FrozenLayer(nn.Module):
    """A conv/linear with one fixed weight bit-width per output channel (0 = pruned).

    Training mode fake-quantizes with straight-through estimators; eval mode computes with
    integers: int32 bias, integer accumulation, per-channel requantization by
    :func:`zerobit.quant.requantize`, exactly as the export will.

    The eval forward caches its integer parameters (an ``_EvalPlan``) and requantizes with
    :func:`zerobit.quant.requantize_float64` where that is exact; its outputs equal those of
    the uncached int64 simulation (``force_reference = True``) bit for bit. The cache is
    dropped by ``train()``/``eval()`` and rebuilt whenever the weight, bias, bits or a
    quantizer's clip is replaced or changed in place (tensor version counters: optimizer steps,
    ``load_state_dict``, ``copy_``). Changes through ``.data`` bypass version counters: call
    ``eval()`` again after them.
    """

    bits: torch.Tensor
    input_quantizer: FrozenActQuantizer
    output_quantizer: FrozenActQuantizer | None

    def __init__(self, source: SearchableLayer, bits: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(source.weight.detach().clone())
        self.bias = nn.Parameter(source.bias.detach().clone())
        self.kind = source.kind
        self.weight_range = source.weight_range
        self.dims = source.dims
        self.conv_args = dict(source.conv_args)
        self.register_buffer("bits", bits.to(torch.int64).clone())
        self.linear_op = SearchableLayer.linear_op.__get__(self)  # type: ignore[attr-defined]
        self.force_float64 = False  # always accumulate in float64 (tests the float32 shortcut)
        # The uncached int64 simulation in eval mode (tests and benchmarks the fast path).
        self.force_reference = False
        self._plan: _EvalPlan | None = None

    def bind(
        self, input_quantizer: FrozenActQuantizer, output_quantizer: FrozenActQuantizer | None
    ) -> None:
        """Attach the quantizers of this layer's input and output (None: float output)."""
        _set_ref(self, "input_quantizer", input_quantizer)
        _set_ref(self, "output_quantizer", output_quantizer)

    def _channel_shape(self) -> tuple[int, ...]:
        return (1, -1) + (1,) * self.dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantized conv/linear in training, exact integer simulation in eval mode."""
        if self.training:
            return self._fake_quant_forward(x)
        if self.force_reference:
            return self._reference_integer_forward(x)
        return self._integer_forward(x)

    def train(self, mode: bool = True) -> FrozenLayer:
        """Set training mode (``eval()`` calls this too) and drop the eval cache."""
        self._plan = None
        return super().train(mode)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and deepcopy without the eval cache (rebuilt on the next eval forward)."""
        state = dict(super().__getstate__())
        state["_plan"] = None
        return state

    def _fake_quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.bits
        codes, scale = quantize_weight_per_channel(self.weight.detach(), bits, self.weight_range)
        shape = (-1,) + (1,) * (self.weight.dim() - 1)
        quantized = codes.to(self.weight.dtype) * scale.reshape(shape)
        weight = self.weight + (quantized - self.weight).detach()
        input_scale = self.input_quantizer.scale().detach()
        keep = (bits > 0).to(self.bias.dtype)
        bias = quantize_bias_ste(self.bias, input_scale * scale, keep)
        return self.linear_op(x, weight, bias)

    @torch.no_grad()
    def integer_layer(self) -> IntegerLayer:
        """Return the integer parameters this layer computes with in eval mode."""
        bits = self.bits
        weight_codes, weight_scale = quantize_weight_per_channel(
            self.weight, bits, self.weight_range
        )
        input_scale = self.input_quantizer.scale().detach()
        bias_codes = quantize_bias(self.bias, input_scale, weight_scale)
        out_q = self.output_quantizer
        if out_q is None:
            return IntegerLayer(
                weight_codes, weight_scale, bias_codes, input_scale, None, None, None, None
            )
        output_scale = out_q.scale().detach()
        real = input_scale.double() * weight_scale.double() / output_scale.double()
        multiplier, shift = quantize_multiplier(real)
        return IntegerLayer(
            weight_codes,
            weight_scale,
            bias_codes,
            input_scale,
            output_scale,
            multiplier,
            shift,
            act_range(out_q.bits, out_q.signed),
        )

    def _eval_state(self, device: torch.device) -> tuple[tuple[torch.Tensor, ...], tuple[Any, ...]]:
        """Return the eval plan's source tensors and a key that changes when any of them does."""
        in_q, out_q = self.input_quantizer, self.output_quantizer
        sources: tuple[torch.Tensor, ...] = (self.weight, self.bias, self.bits, in_q.clip)
        out_spec = None
        if out_q is not None:
            sources += (out_q.clip,)
            out_spec = (out_q.bits, out_q.signed)
        state = (
            device,
            self.force_float64,
            in_q.bits,
            in_q.signed,
            out_spec,
            tuple(id(t) for t in sources),
            tuple(t._version for t in sources),
            tuple(t.data_ptr() for t in sources),
        )
        return sources, state

    def _eval_plan(self, device: torch.device) -> _EvalPlan:
        """Return the cached plan, rebuilt first if stale."""
        sources, state = self._eval_state(device)
        plan = self._plan
        # The plan holds the old sources, so equal ids mean the same tensor objects.
        if plan is None or plan.state != state:
            plan = self._plan = self._build_plan(sources, state, device)
        return plan

    @torch.no_grad()
    def _build_plan(
        self, sources: tuple[torch.Tensor, ...], state: tuple[Any, ...], device: torch.device
    ) -> _EvalPlan:
        p = self.integer_layer()
        in_q = self.input_quantizer
        lo, hi = act_range(in_q.bits, in_q.signed)
        weight_l1 = p.weight_codes.to(torch.int64).abs().flatten(1).sum(1)
        acc_bound = max(-lo, hi) * weight_l1 + p.bias_codes.to(torch.int64).abs()
        largest = int(acc_bound.max()) if acc_bound.numel() else 0
        # Every partial sum, the bias included, is an integer of magnitude <= acc_bound: exact in
        # float32 on the CPU (see the reference path for NNPACK and TF32), and in float64 below
        # 2^53; beyond that only the reference path is trusted.
        dtype: torch.dtype | None = None
        if largest < _FLOAT32_EXACT and device.type == "cpu" and not self.force_float64:
            dtype = torch.float32
        elif largest < _FLOAT64_EXACT:
            dtype = torch.float64
        float_scale = exact = None
        if p.multiplier is None:
            float_scale = (p.input_scale * p.weight_scale).float().reshape(self._channel_shape())
        else:
            assert p.shift is not None
            exact = requantize_float64_exact(acc_bound, p.multiplier, p.shift)
        return _EvalPlan(
            sources=sources,
            state=state,
            params=p,
            weight=p.weight_codes if dtype is None else p.weight_codes.to(device, dtype),
            bias=p.bias_codes if dtype is None else p.bias_codes.to(device, dtype),
            dtype=dtype,
            acc_bound=acc_bound,
            exact_float64=bool(exact),
            float_scale=float_scale,
        )

    @torch.no_grad()
    def _integer_forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._eval_plan(x.device)
        if plan.dtype is None:
            return self._reference_integer_forward(x)
        p = plan.params
        codes = (x / p.input_scale).round_().to(plan.dtype)
        with torch.backends.nnpack.flags(enabled=False):
            acc = self.linear_op(codes, plan.weight, plan.bias)
        if plan.float_scale is not None:
            # An exact integer rounds to float32 the same way from float64 and from int64.
            return acc.float() * plan.float_scale
        assert p.multiplier is not None and p.shift is not None and p.output_range is not None
        if not plan.exact_float64 and acc.numel():
            # The static bound is loose (every input at its extreme); the batch's own range
            # usually allows the float64 path anyway.
            low, high = torch.aminmax(acc)
            if not requantize_float64_exact(max(-int(low), int(high)), p.multiplier, p.shift):
                return self._reference_integer_forward(x)
        out = requantize_float64(acc, p.multiplier, p.shift, dim=1).clamp_(*p.output_range)
        # acc is ours: reusing its memory for the float32 output saves an allocation.
        return acc.copy_(out).mul_(p.output_scale)

    @torch.no_grad()
    def _reference_integer_forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.integer_layer()
        shape = self._channel_shape()
        codes = torch.round(x / p.input_scale)
        in_q = self.input_quantizer
        lo, hi = act_range(in_q.bits, in_q.signed)
        weight_l1 = p.weight_codes.abs().flatten(1).sum(1).max() if p.weight_codes.numel() else 0
        bound = max(-lo, hi) * int(weight_l1)
        # Every partial sum is an integer below `bound`; float32 holds those exactly below 2^24
        # on the CPU (no NNPACK, whose Winograd transforms round; on CUDA, TF32 would round),
        # float64 below 2^53.
        exact32 = bound < 2**24 and x.device.type == "cpu" and not self.force_float64
        dtype = torch.float32 if exact32 else torch.float64
        with torch.backends.nnpack.flags(enabled=False):
            acc = self.linear_op(codes.to(dtype), p.weight_codes.to(dtype), None)
        acc = acc.round().long() + p.bias_codes.long().reshape(shape)
        if p.output_scale is None:
            scale = (p.input_scale * p.weight_scale).float()
            return acc.float() * scale.reshape(shape)
        assert p.multiplier is not None and p.shift is not None and p.output_range is not None
        out = requantize(acc, p.multiplier.reshape(shape), p.shift.reshape(shape))
        out = out.clamp(*p.output_range)
        return out.float() * p.output_scale


class FrozenModel(nn.Module):
    """A model with a fixed architecture, ready to fine-tune, evaluate and export.

    ``model.eval()`` makes its forward an exact simulation of the integer export; ``model.train()``
    fine-tunes it with fake quantization.
    """

    def __init__(
        self,
        graph_module: fx.GraphModule,
        analysis: GraphAnalysis,
        group_bits: list[tuple[int, ...]],
    ) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.analysis = analysis
        self.group_bits = group_bits
        self._graph_layout: GraphLayout | None = None

    @property
    def act_bits(self) -> list[int]:
        """Bit-width of each activation group, read from its quantizer.

        The quantizers keep their bits in the state dict: loading the state of another
        architecture loads its activation bits too.
        """
        return [q.bits for q in self.graph_module.zb_quantizers]  # type: ignore[union-attr]

    def forward(self, *inputs: torch.Tensor) -> Any:
        """Run the model (integer-exact in eval mode)."""
        return self.graph_module(*inputs)

    def layers(self) -> dict[str, FrozenLayer]:
        """Frozen layers by qualified module name, in graph order."""
        return {
            info.name: self.graph_module.get_submodule(info.name)  # type: ignore[misc]
            for info in self.analysis.layers.values()
        }

    def layer_specs(self) -> list[LayerSpec]:
        """Exact cost-model descriptions of every layer, counted from the layers' bit tensors."""
        layers = self.layers()
        channels: list[list[int]] = []
        for group in self.analysis.groups:
            first = layers[self.analysis.layers[group.members[0]].name]
            bits = first.bits.tolist()  # type: ignore[operator]
            channels.append([sum(1 for b in bits if b == p) for p in self.group_bits[group.index]])
        act_bits = [(b,) for b in self.act_bits]
        act_probs = [(1,) for _ in self.act_bits]
        return build_layer_specs(self.analysis, self.group_bits, channels, act_bits, act_probs)

    def graph_layout(self) -> GraphLayout:
        """Return the exported graph's layout (computed once; see :mod:`zerobit.search.layout`)."""
        if getattr(self, "_graph_layout", None) is None:
            self._graph_layout = graph_layout(self.graph_module, self.analysis)
        assert self._graph_layout is not None
        return self._graph_layout

    def graph_spec(self, unpruned: bool = False) -> GraphSpec:
        """Exact description of the exported graph, for whole-model costs (``flash``, ``ram``).

        Args:
            unpruned: Describe the model with every channel kept (as :meth:`uniform_specs`).

        Raises:
            ValueError: If the model has no integer export (ops kept in float).
        """
        if unpruned:
            kept = [group.channels for group in self.analysis.groups]
        else:
            layers = self.layers()
            kept = [
                int((layers[self.analysis.layers[g.members[0]].name].bits > 0).sum())
                for g in self.analysis.groups
            ]
        return self.graph_layout().spec(kept)

    def uniform_specs(self, bits: int = 8) -> list[LayerSpec]:
        """Describe the same network unpruned, with every weight and activation at ``bits``."""
        channels = [[g.channels] for g in self.analysis.groups]
        act = [(bits,)] * len(self.analysis.act_groups)
        weight = [(bits,)] * len(channels)
        return build_layer_specs(self.analysis, weight, channels, act, [(1,)] * len(act))

    def uniform_cost(self, cost: Any, bits: int = 8) -> Any:
        """Return a cost of the same network unpruned, every weight and activation at ``bits``.

        Args:
            cost: A registered cost name, a CostTable or a callable ``spec -> cost``.
            bits: The uniform bit-width.

        Raises:
            ValueError: If the cost cannot price the network (unsupported bits, or a
                whole-model cost of a model without integer export).
        """
        function = resolve_cost(cost)
        graph = self.graph_spec(unpruned=True) if get_graph_term(function) else None
        return total_cost(function, self.uniform_specs(bits), graph)

    def architecture(self) -> dict[str, dict[str, Any]]:
        """Return the fixed architecture in the format of ``SearchModel.architecture()``."""
        arch: dict[str, dict[str, Any]] = {}
        points = self.analysis.points
        for point in points:
            if point.role == "input":
                arch[f"input:{point.node}"] = {"act_bits": self.act_bits[point.group]}
        for info, layer in zip(self.analysis.layers.values(), self.layers().values()):
            out = (
                None
                if info.output_point is None
                else self.act_bits[points[info.output_point].group]
            )
            arch[info.name] = {"weight_bits": layer.bits.tolist(), "act_bits": out}  # type: ignore[operator]
        return arch

    def integer_layers(self) -> dict[str, IntegerLayer]:
        """Integer parameters of every layer by qualified name (what the exporters write)."""
        return {name: layer.integer_layer() for name, layer in self.layers().items()}

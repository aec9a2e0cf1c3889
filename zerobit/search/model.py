# SPDX-License-Identifier: Apache-2.0
# convert(): from a float PyTorch model to a SearchModel; the SearchModel's step-wise sampling,
# differentiable cost, architecture read-out and freeze(); and freeze() from a stored architecture.
from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import fx, nn

from zerobit.config import Sampling, SearchSpace, compensation_mode
from zerobit.cost import GraphSpec, LayerSpec, Number, mpic_supported_bits, resolve_cost
from zerobit.cost.batch import LayerBatch, batched_cost
from zerobit.cost.graph import get_graph_term
from zerobit.graph.analysis import GraphAnalysis, analyze
from zerobit.graph.trace import ensure_bias_, fold_batchnorm_, trace
from zerobit.search.frozen import FrozenLayer, FrozenModel
from zerobit.search.layout import GraphLayout, graph_layout
from zerobit.search.modules import (
    ActQuantizer,
    ChannelSelector,
    FrozenActQuantizer,
    QuantAvgPool,
    SearchableLayer,
    initial_logits,
)
from zerobit.search.sampling import discretize, gumbel_noise, one_hot, sample_probs
from zerobit.search.specs import LayerBatchBuilder, build_layer_specs, kept_channels

CostArg = str | Callable[[LayerSpec], Any] | Mapping[Any, float] | Sequence[Any]
REFERENCE_BITS = 8


@dataclass
class _CostTerm:
    name: str
    function: Callable[[LayerSpec], Any]
    weight: float
    detach_inputs: bool
    reference: float = 1.0


def _as_inputs(example_input: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    if isinstance(example_input, torch.Tensor):
        return (example_input,)
    inputs = tuple(example_input)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise ValueError("example_input must be a tensor or a sequence of tensors")
    return inputs


def _cost_terms(cost: CostArg, detach_input_channels: bool | None) -> list[_CostTerm]:
    if isinstance(cost, Mapping):
        items = list(cost.items())
    elif isinstance(cost, (list, tuple)):
        items = [(c, 1.0) for c in cost]
    else:
        items = [(cost, 1.0)]
    if not items:
        raise ValueError("cost is empty; name at least one cost model, e.g. cost='size'")
    terms = []
    for key, weight in items:
        function = resolve_cost(key)
        name = (
            key
            if isinstance(key, str)
            else getattr(key, "name", getattr(key, "__name__", "custom"))
        )
        detach = (name == "size") if detach_input_channels is None else detach_input_channels
        terms.append(_CostTerm(str(name), function, float(weight), detach))
    return terms


def _check_space_for_costs(terms: list[_CostTerm], group_bits, act_bits) -> None:  # type: ignore[no-untyped-def]
    all_weight = {b for bits in group_bits for b in bits}
    all_act = {b for bits in act_bits for b in bits}
    for term in terms:
        if term.name == "mpic":
            allowed_a, allowed_w = mpic_supported_bits()
            bad_w, bad_a = all_weight - set(allowed_w), all_act - set(allowed_a)
            if bad_w or bad_a:
                raise ValueError(
                    f"the mpic cost defines weights in {allowed_w} and activations in {allowed_a}; "
                    f"the space also has weight bits {sorted(bad_w)} and activation bits "
                    f"{sorted(bad_a)}"
                )
        if term.name in ("ne16", "ne16_soft") and all_act != {8}:
            raise ValueError(
                "the ne16 cost needs 8-bit activations everywhere: use act_bits=(8,) and "
                f"input_bits=(8,) (the space has activation bits {sorted(all_act)})"
            )


def initial_keep_probability(bits: tuple[int, ...], temperature: float) -> float:
    """Probability of a non-zero bit-width under the initial logits at ``temperature``."""
    logits = initial_logits(bits, None) / temperature
    return float(1.0 - torch.softmax(logits.double(), dim=0)[bits.index(0)])


def convert(
    model: nn.Module,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    space: SearchSpace | None = None,
    cost: CostArg = "size",
    *,
    sampling: Sampling | None = None,
    allow_float: bool = False,
    leaf_types: Iterable[type] = (),
    detach_input_channels: bool | None = None,
    compensate_weights: bool | str = True,
) -> SearchModel:
    """Turn a float model into a searchable one.

    The model is traced with torch.fx, every Conv/Linear -> BatchNorm pair is folded with the
    BatchNorm's running statistics, channel-coupling groups are found, and every Conv1d, Conv2d
    (including depthwise) and Linear becomes a searchable layer whose output channels choose
    their weight bit-width (0 = pruned) while every activation tensor chooses its bit-width.

    Args:
        model: A trained (warmed-up) float model; it is not modified.
        example_input: A batch shaped like the training data (also used to calibrate the
            activation clips, so a few real samples are better than zeros).
        space: Candidate bit-widths and per-layer overrides.
        cost: Cost model(s) driving the search: a registered name ("size", "bitops", "macs",
            "mpic", "ne16"), a :class:`zerobit.cost.CostTable`, a callable ``spec -> cost``, a
            list of those, or a mapping of those to weights.
        sampling: Temperature schedule and sampling mode.
        allow_float: Keep unsupported ops in float with a warning instead of failing. Such a
            model cannot be exported to integer formats.
        leaf_types: Module types that torch.fx should not trace into.
        detach_input_channels: Whether costs see the effective input channels detached. None
            uses the paper's policy: detached for "size", attached for the others.
        compensate_weights: How the weights make up for the probability of the 0-bit option
            (:data:`zerobit.config.COMPENSATIONS`). True or ``"initial"``: divide each layer's
            weights and bias once by the initial probability S of keeping a channel, so the
            first forward passes reproduce the float model (the paper's weight compensation;
            once the choices are sharp a kept channel computes with weights 1/S times the
            warm-up's).
            ``"annealed"``: the same division at the start, then, as the temperature falls,
            by the probability the initial logits give keeping at the current temperature, so
            a channel whose logits have not moved always computes at the warm-up's scale and
            a kept channel ends there. ``"tracking"``: the same division at the start, then,
            before every training step, by the group's expected fraction of kept channels, but
            never by less than at the start: a layer that keeps most of its channels ends at
            the warm-up's scale, one that prunes many keeps the paper's compensation. False or
            ``"off"``: the weights stay as trained (the search starts from a shrunk network).

    Returns:
        The searchable model.

    Raises:
        ValueError: For an untraceable model, an unsupported layer, a bad example input, or a
            space the cost model cannot price.
    """
    space = space or SearchSpace()
    sampling = sampling or Sampling()
    inputs = _as_inputs(example_input)
    gm = trace(model, inputs, leaf_types)
    fold_batchnorm_(gm)
    gm.delete_all_unused_submodules()
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, x in zip(placeholders, inputs):
        node.meta["zb_signed"] = bool((x < 0).any())
    analysis = analyze(gm, allow_float=allow_float)
    for notice in analysis.notices:
        warnings.warn(notice, stacklevel=2)
    group_bits, act_bits = _resolve_bits(analysis, space)
    terms = _cost_terms(cost, detach_input_channels)
    _check_space_for_costs(terms, group_bits, act_bits)
    clips = _calibrate(gm, analysis, inputs)
    return SearchModel(
        gm, analysis, space, sampling, group_bits, act_bits, clips, terms, compensate_weights
    )


def _resolve_bits(
    analysis: GraphAnalysis, space: SearchSpace
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    names = {info.name: info for info in analysis.layers.values()}
    unknown = set(space.overrides) - set(names)
    if unknown:
        raise ValueError(
            f"overrides name unknown layers {sorted(unknown)}; "
            f"searchable layers are {sorted(names)}"
        )
    group_bits: list[tuple[int, ...]] = []
    for group in analysis.groups:
        bits = set(space.weight_bits)
        for member in group.members:
            override = space.overrides.get(analysis.layers[member].name)
            if override is not None and override.weight_bits is not None:
                bits &= set(override.weight_bits)
            if override is not None and override.prunable is False:
                bits.discard(0)
        if not group.prunable:
            bits.discard(0)
        members = [analysis.layers[m].name for m in group.members]
        if not bits - {0}:
            raise ValueError(
                f"coupled layers {members} share their weight bit-widths, but their overrides "
                f"leave no common non-zero bit-width (space {space.weight_bits})"
            )
        group_bits.append(tuple(sorted(bits)))
    act_bits: list[tuple[int, ...]] = []
    for act_group in analysis.act_groups:
        bits_set = set(space.input_bits if act_group.is_input else space.act_bits)
        for idx in act_group.points:
            node = analysis.points[idx].node
            info = analysis.layers.get(node)
            override = space.overrides.get(info.name) if info is not None else None
            if override is not None and override.act_bits is not None:
                bits_set &= set(override.act_bits)
        if not bits_set:
            raise ValueError(
                f"activation overrides leave no bit-width for tensor group {act_group.index}"
            )
        act_bits.append(tuple(sorted(bits_set)))
    return group_bits, act_bits


@torch.no_grad()
def _calibrate(
    gm: fx.GraphModule, analysis: GraphAnalysis, inputs: tuple[torch.Tensor, ...]
) -> list[float]:
    """Return each activation group's initial clip: its peak magnitude on the example input."""
    wanted = {
        analysis.points[i].node: analysis.points[i].group
        for g in analysis.act_groups
        for i in g.points
    }
    peaks = [0.0] * len(analysis.act_groups)

    class _Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            if n.name in wanted and isinstance(out, torch.Tensor):
                group = wanted[n.name]
                peaks[group] = max(peaks[group], float(out.abs().max()))
            return out

    _Recorder(gm).run(*inputs)
    return [p if p > 1e-6 else 1.0 for p in peaks]


class SearchModel(nn.Module):
    """A converted model whose architecture (bits per channel and per tensor) is searched.

    Use it as the model in an ordinary training loop, add ``strength * model.cost()`` to the loss,
    and give :meth:`arch_parameters` to a second optimizer. See :func:`convert`.
    """

    def __init__(
        self,
        gm: fx.GraphModule,
        analysis: GraphAnalysis,
        space: SearchSpace,
        sampling: Sampling,
        group_bits: list[tuple[int, ...]],
        act_bits: list[tuple[int, ...]],
        clips: list[float],
        terms: list[_CostTerm],
        compensate_weights: bool | str = True,
    ) -> None:
        super().__init__()
        self._compensation = compensation_mode(compensate_weights)
        self.analysis = analysis
        self.space = space
        self.sampling = sampling
        self.group_bits = group_bits
        self.act_group_bits = act_bits
        self._terms = terms
        # float32 whatever the type given: an int (temperature 5) would make an int64 buffer that
        # truncates every annealed temperature, down to 0.
        temperature = torch.tensor(float(sampling.initial_temperature), dtype=torch.float32)
        self.register_buffer("temperature", temperature)
        self._noise: dict[str, torch.Tensor] = {}
        self.graph_module = gm
        self._build(clips)
        self._batch_builder = LayerBatchBuilder(analysis, group_bits, act_bits)
        for term in self._terms:
            term.reference = float(self._reference_cost(term))

    # ----------------------------------------------------------------------------- construction
    def _build(self, clips: list[float]) -> None:
        gm, analysis = self.graph_module, self.analysis
        per_layer = self.space.weight_granularity == "layer"
        gm.zb_selectors = nn.ModuleList(
            ChannelSelector(bits, group.channels, per_layer)
            for bits, group in zip(self.group_bits, analysis.groups)
        )
        gm.zb_quantizers = nn.ModuleList(
            ActQuantizer(bits, group.signed, clip)
            for bits, group, clip in zip(self.act_group_bits, analysis.act_groups, clips)
        )
        pools = gm.zb_pools = nn.ModuleList()
        nodes = {n.name: n for n in gm.graph.nodes}
        modules = dict(gm.named_modules())
        selectors: Any = gm.zb_selectors
        quantizers: Any = gm.zb_quantizers
        for info in analysis.layers.values():
            layer = modules[info.name]
            ensure_bias_(layer)
            searchable = SearchableLayer(layer, info.kind, self.space.weight_range)
            gm.add_submodule(info.name, searchable)
            quantizer = quantizers[analysis.points[info.input_point].group]
            searchable.bind(selectors[info.group], quantizer)
        for point in analysis.points:
            node = nodes[point.node]
            target = f"zb_quantizers.{point.group}"
            if point.role == "avgpool":
                pool = _make_pool(node, modules)
                pool.bind(quantizers[point.group])
                pool.quantizer_group = point.group
                pools.append(pool)
                with gm.graph.inserting_after(node):
                    new = gm.graph.call_module(f"zb_pools.{len(pools) - 1}", (node.args[0],))
                node.replace_all_uses_with(new)
                gm.graph.erase_node(node)
                continue
            with gm.graph.inserting_after(node):
                quant = gm.graph.call_module(target, (node,))
            node.replace_all_uses_with(quant, delete_user_cb=lambda user, q=quant: user is not q)
        gm.graph.lint()
        gm.recompile()
        if self._compensation != "off":
            self._compensate_weights()
        if self._compensation == "tracking":
            # The divisor each group's weights are stored under, saved with the model so that
            # a resumed search rescales from where it stopped.
            divisors = [
                initial_keep_probability(s.bits, self.sampling.initial_temperature)
                if s.zero_index is not None
                else 1.0
                for s in self.selectors
            ]
            self.register_buffer("compensation", torch.tensor(divisors, dtype=torch.float64))

    @torch.no_grad()
    def _compensate_weights(self) -> None:
        """Divide weights and biases by the initial keep probability, so W_eff ~ W at start."""
        self._sample(train=True, fresh_noise=False)
        for info in self.analysis.layers.values():
            selector = self.selectors[info.group]
            zero = selector.zero_index
            if zero is None:
                continue
            keep = float(1.0 - selector.probs[zero, 0])
            layer: Any = self.graph_module.get_submodule(info.name)
            layer.weight.div_(keep)
            layer.bias.div_(keep)

    @staticmethod
    def _compensated(selector: ChannelSelector) -> bool:
        """Whether the group's weights follow a moving compensation.

        A group whose pruning is pinned (the sequential flow's second stage) has nothing to
        compensate: its kept channels are kept with probability 1.
        """
        return selector.zero_index is not None and selector.pinned_pruning is None

    @torch.no_grad()
    def _rescale_groups(self, factors: list[float]) -> None:
        """Multiply every layer's weights and bias by its group's factor."""
        for info in self.analysis.layers.values():
            if factors[info.group] != 1.0:
                layer: Any = self.graph_module.get_submodule(info.name)
                layer.weight.mul_(factors[info.group])
                layer.bias.mul_(factors[info.group])

    def _anneal_compensation(self, old: float, new: float) -> None:
        """Move the annealed compensation from temperature ``old`` to ``new``.

        The weights are stored divided by the probability that the initial logits give keeping
        a channel at the current temperature; that probability tends to 1 as the temperature
        falls, so the division fades out with the same schedule as the choices sharpen.
        """
        self._rescale_groups(
            [
                initial_keep_probability(s.bits, old) / initial_keep_probability(s.bits, new)
                if self._compensated(s)
                else 1.0
                for s in self.selectors
            ]
        )

    @torch.no_grad()
    def _track_compensation(self) -> None:
        """Store each group's weights divided by its expected kept fraction, at least the initial.

        The fraction is the mean over the group's channels of the probability of a non-zero
        bit-width at the current logits and temperature. A group that keeps most channels ends
        at the warm-up's scale; one that prunes many keeps the initial compensation.
        """
        temperature = float(self.temperature)  # type: ignore[arg-type]
        initial = self.sampling.initial_temperature
        divisors: torch.Tensor = self.compensation  # type: ignore[assignment]
        factors = [1.0] * len(self.selectors)
        for g, selector in enumerate(self.selectors):
            if not self._compensated(selector):
                continue
            probs = torch.softmax(selector.logits.detach().double() / temperature, dim=0)
            kept = float(1.0 - probs[selector.zero_index].mean())
            new = max(initial_keep_probability(selector.bits, initial), kept)
            factors[g] = float(divisors[g]) / new
            divisors[g] = new
        self._rescale_groups(factors)

    # ------------------------------------------------------------------------------ accessors
    @property
    def selectors(self) -> list[ChannelSelector]:
        """One ChannelSelector per channel-coupling group."""
        return cast(list[ChannelSelector], list(self.graph_module.zb_selectors))  # type: ignore[arg-type]

    @property
    def quantizers(self) -> list[ActQuantizer]:
        """One ActQuantizer per group of activation tensors that share a scale."""
        return cast(list[ActQuantizer], list(self.graph_module.zb_quantizers))  # type: ignore[arg-type]

    def layers(self) -> dict[str, SearchableLayer]:
        """Searchable layers by qualified module name (the names of the original model)."""
        return {
            info.name: self.graph_module.get_submodule(info.name)  # type: ignore[misc]
            for info in self.analysis.layers.values()
        }

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        """Architecture logits (weight bits per channel, activation bits per tensor)."""
        for selector in self.selectors:
            if len(selector.bits) > 1:
                yield selector.parameter
        for quantizer in self.quantizers:
            if len(quantizer.bits) > 1:
                yield quantizer.logits

    def weight_parameter_groups(self, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Optimizer groups: weights and biases (with ``weight_decay``), clips (no decay)."""
        weights = [p for layer in self.layers().values() for p in (layer.weight, layer.bias)]
        clips = [q.clips for q in self.quantizers]
        return [
            {"params": weights, "weight_decay": weight_decay},
            {"params": clips, "weight_decay": 0.0},
        ]

    # ------------------------------------------------------------------------------- sampling
    def set_progress(self, progress: float) -> None:
        """Set training progress in [0, 1]; the temperature follows ``sampling.temperature``.

        With the annealed weight compensation the weights are rescaled to the new temperature.
        """
        old = float(self.temperature)  # type: ignore[arg-type]
        self.temperature.fill_(self.sampling.temperature(progress))  # type: ignore[operator]
        new = float(self.temperature)  # type: ignore[arg-type]
        if self._compensation == "annealed" and new != old and not self.sampling.hard:
            self._anneal_compensation(old, new)

    def _probs(
        self, logits: torch.Tensor, bits: tuple[int, ...], key: str, train: bool
    ) -> torch.Tensor:
        if not train:
            return one_hot(discretize(logits.detach(), bits), len(bits), logits.detach())
        noise = self._noise.get(key) if self.sampling.gumbel else None
        temperature = float(self.temperature)  # type: ignore[arg-type]
        return sample_probs(logits, bits, temperature, noise, self.sampling.hard)

    #: Generator of the Gumbel noise (None: the global RNG). A data-parallel loop seeds it from
    #: (seed, step) before each forward so that every rank draws the same sample.
    noise_generator: torch.Generator | None = None

    def _sample(self, train: bool, fresh_noise: bool) -> None:
        """Compute every selector's and quantizer's probabilities for this step."""
        if train and self.sampling.gumbel and fresh_noise:
            # Drawn on the CPU and moved, so a seed gives the same noise on every device.
            generator = self.noise_generator
            self._noise = {}
            for i, s in enumerate(self.selectors):
                self._noise[f"w{i}"] = gumbel_noise(s.logits.shape, generator).to(s.logits.device)
            for i, q in enumerate(self.quantizers):
                self._noise[f"a{i}"] = gumbel_noise(q.logits.shape, generator).to(q.logits.device)
        for i, s in enumerate(self.selectors):
            s.probs = self._probs(s.logits, s.bits, f"w{i}", train)
        for i, q in enumerate(self.quantizers):
            q.probs = self._probs(q.logits, q.bits, f"a{i}", train)

    def forward(self, *inputs: torch.Tensor) -> Any:
        """Draw this step's sample (once, shared by every layer of a group) and run the model."""
        if self.training and self._compensation == "tracking" and not self.sampling.hard:
            self._track_compensation()
        self._sample(self.training, fresh_noise=True)
        return self.graph_module(*inputs)

    # ---------------------------------------------------------------------------------- costs
    def _step_probs(self, train: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per group: expected channels at each candidate (P,); per act group: probs (Q,).

        In training: the probabilities of this step's sample (the forward's Gumbel noise),
        recomputed from the logits so that every call has its own autograd graph; in eval: the
        discrete architecture.
        """
        channels = [
            self._probs(s.logits, s.bits, f"w{i}", train).sum(dim=1)
            for i, s in enumerate(self.selectors)
        ]
        act = [self._probs(q.logits, q.bits, f"a{i}", train) for i, q in enumerate(self.quantizers)]
        return channels, act

    def layer_specs(
        self, train: bool | None = None, detach_inputs: bool = False
    ) -> list[LayerSpec]:
        """Cost-model specs from the current logits (soft in training, discrete in eval)."""
        train = self.training if train is None else train
        return self._specs(*self._step_probs(train), detach_inputs)

    def _specs(
        self, channels: list[torch.Tensor], act_probs: list[torch.Tensor], detach_inputs: bool
    ) -> list[LayerSpec]:
        return build_layer_specs(
            self.analysis,
            self.group_bits,
            [tuple(c.unbind()) for c in channels],
            self.act_group_bits,
            [tuple(p.unbind()) for p in act_probs],
            detach_inputs,
        )

    def _reference_cost(self, term: _CostTerm) -> Any:
        channels = [[g.channels] for g in self.analysis.groups]
        bits = [(REFERENCE_BITS,)] * len(channels)
        act_bits = [(REFERENCE_BITS,)] * len(self.analysis.act_groups)
        act_probs = [(1,)] * len(act_bits)
        specs = build_layer_specs(self.analysis, bits, channels, act_bits, act_probs)
        reference = sum(term.function(spec) for spec in specs)
        reference = reference + self.graph_cost(term.function, unpruned=True)
        if not reference:
            raise ValueError(
                f"cost {term.name!r} of the all-8-bit model is 0; it cannot be normalized"
            )
        return reference

    def costs(self, raw: bool = True) -> dict[str, torch.Tensor]:
        """Return each cost model's expected cost for the current logits (exact in eval mode).

        Args:
            raw: Units of the cost model; False divides by the all-8-bit model's cost.
        """
        out: dict[str, torch.Tensor] = {}
        channels, act_probs = self._step_probs(self.training)
        batches: dict[bool, LayerBatch] = {}
        for term in self._terms:
            value = self._priced(term.function, channels, act_probs, term.detach_inputs, batches)
            out[term.name] = value if raw else value / term.reference
        return out

    def expected_cost(self, cost: str | Callable[[LayerSpec], Any]) -> float:
        """Return any cost model's expected cost for the current logits, in its own unit.

        Unlike :meth:`costs`, ``cost`` need not be one the search was converted with (a
        budget on ``flash`` while the search is driven by ``size``). Soft probabilities in
        training (this step's sample), the discrete architecture in eval; no autograd graph.
        """
        function = resolve_cost(cost)
        with torch.no_grad():
            channels, act_probs = self._step_probs(self.training)
            return float(self._priced(function, channels, act_probs, False, {}))

    def _priced(
        self,
        function: Callable[[LayerSpec], Any],
        channels: list[torch.Tensor],
        act_probs: list[torch.Tensor],
        detach_inputs: bool,
        batches: dict[bool, LayerBatch],
    ) -> Any:
        """Price the architecture ``channels``/``act_probs`` with ``function``.

        ``batches`` caches the stacked layers per detach policy across calls.
        """
        batched = batched_cost(function)
        if batched is not None:
            if detach_inputs not in batches:
                batches[detach_inputs] = self._batch_builder.build(
                    channels, act_probs, detach_inputs
                )
            value: Any = batched(batches[detach_inputs])
        else:
            specs = self._specs(channels, act_probs, detach_inputs)
            value = sum(function(spec) for spec in specs)
        return value + self.graph_cost(function, channels)

    def cost(self, raw: bool = False) -> torch.Tensor:
        """Return the search's cost, to be added to the loss times a strength.

        The cost is the weighted sum of the cost models, each divided by its value for the
        unpruned all-8-bit model (``raw=True``: in the models' own units). In training the
        probabilities are those of the current step (same Gumbel sample as the forward),
        recomputed from the logits; in eval mode they are the discrete architecture.
        """
        values = self.costs(raw)
        total: Any = sum(term.weight * values[term.name] for term in self._terms)
        return total if isinstance(total, torch.Tensor) else torch.tensor(float(total))

    @property
    def cost_references(self) -> dict[str, float]:
        """Cost of the unpruned all-8-bit model, per cost model (the normalizers of ``cost()``)."""
        return {term.name: term.reference for term in self._terms}

    # ----------------------------------------------------------------------- whole-model costs
    def graph_layout(self) -> GraphLayout:
        """Return the exported graph's layout (computed once; see :mod:`zerobit.search.layout`)."""
        layout = getattr(self, "_graph_layout", None)
        if layout is None:
            layout = self._graph_layout = graph_layout(self.graph_module, self.analysis)
        return layout

    def graph_spec(
        self,
        group_channels: Sequence[Sequence[Number] | torch.Tensor] | None = None,
        *,
        unpruned: bool = False,
    ) -> GraphSpec:
        """Describe the exported graph with (expected) channel counts, for whole-model costs.

        Args:
            group_channels: Per channel group, the (expected) number of channels at each
                candidate of ``group_bits[g]`` (a sequence of numbers or a (P,) tensor, as the
                search's per-step probabilities give them). None: from :meth:`layer_specs`,
                i.e. this step's sample in training, the discrete architecture in eval mode.
            unpruned: Every channel kept (the all-8-bit reference), ignoring the logits.

        Raises:
            ValueError: If the model has no integer export (ops kept in float).
        """
        kept: list[Number]
        if unpruned:
            kept = [group.channels for group in self.analysis.groups]
        elif group_channels is None:
            kept = [0] * len(self.analysis.groups)
            for info, spec in zip(self.analysis.layers.values(), self.layer_specs()):
                kept[info.group] = spec.kept_channels
        else:
            kept = [kept_channels(b, tuple(n)) for b, n in zip(self.group_bits, group_channels)]
        return self.graph_layout().spec(kept)

    def graph_cost(
        self,
        function: Callable[[LayerSpec], Any],
        group_channels: Sequence[Sequence[Number] | torch.Tensor] | None = None,
        *,
        unpruned: bool = False,
    ) -> Any:
        """Return the whole-model part of a cost (``flash``'s headers, all of ``ram``), or 0.

        ``costs()`` adds it to the sum over the layers: a cost's value is
        ``sum(function(spec)) + graph_cost(function, channels)``.

        Args:
            function: A resolved cost function.
            group_channels: As for :meth:`graph_spec`.
            unpruned: As for :meth:`graph_spec`.

        Returns:
            0, a Python number or a 0-dim tensor (differentiable w.r.t. ``group_channels``).
        """
        term = get_graph_term(function)
        if term is None:
            return 0
        return term(self.graph_spec(group_channels, unpruned=unpruned))

    # ------------------------------------------------------------------------- architecture
    def _discrete(self) -> tuple[list[torch.Tensor], list[int]]:
        weight_bits = []
        for s in self.selectors:
            idx = discretize(s.logits.detach(), s.bits)
            weight_bits.append(torch.tensor(s.bits)[idx])
        act = [q.bits[int(discretize(q.logits.detach(), q.bits))] for q in self.quantizers]
        return weight_bits, act

    def architecture(self) -> dict[str, dict[str, Any]]:
        """Return the discrete architecture, JSON-serializable.

        Returns:
            ``{layer name: {"weight_bits": [bits per output channel, 0 = pruned],
            "act_bits": bits of the tensor it produces (None for a float output)}}`` plus
            ``{"input:<name>": {"act_bits": bits}}`` per model input.
        """
        weight_bits, act = self._discrete()
        arch: dict[str, dict[str, Any]] = {}
        for point in self.analysis.points:
            if point.role == "input":
                arch[f"input:{point.node}"] = {"act_bits": act[point.group]}
        for info in self.analysis.layers.values():
            out = (
                None
                if info.output_point is None
                else act[self.analysis.points[info.output_point].group]
            )
            arch[info.name] = {"weight_bits": weight_bits[info.group].tolist(), "act_bits": out}
        return arch

    def load_architecture_(self, arch: Mapping[str, Mapping[str, Any]]) -> None:
        """Set the logits so that the discrete architecture equals ``arch`` (validated)."""
        weight_bits, act = _parse_architecture(self, arch)
        with torch.no_grad():
            for selector, bits in zip(self.selectors, weight_bits):
                index = torch.tensor([selector.bits.index(b) for b in bits])
                selector.set_logits_(10.0 * one_hot(index, len(selector.bits), selector.logits))
            for quantizer, bits_a in zip(self.quantizers, act):
                index_a = torch.tensor(quantizer.bits.index(bits_a))
                quantizer.logits.copy_(
                    10.0 * one_hot(index_a, len(quantizer.bits), quantizer.logits)
                )

    def detach_probs_(self) -> SearchModel:
        """Drop the autograd history of the last step's probabilities (needed to deep-copy)."""
        for s in self.selectors:
            s.probs = s.probs.detach()
        for q in self.quantizers:
            q.probs = q.probs.detach()
        return self

    def freeze(self) -> FrozenModel:
        """Return the discrete model with the current weights, ready to fine-tune and export."""
        weight_bits, act = self._discrete()
        self.detach_probs_()
        gm: Any = copy.deepcopy(self.graph_module)
        frozen_q = []
        for q, bits in zip(gm.zb_quantizers, act):
            frozen_q.append(
                FrozenActQuantizer(bits, q.signed, q.clips.detach()[q.bits.index(bits)])
            )
        gm.zb_quantizers = nn.ModuleList(frozen_q)
        for pool in gm.zb_pools:
            pool.bind(frozen_q[self._pool_group(pool, gm)])
        points = self.analysis.points
        for info in self.analysis.layers.values():
            source = gm.get_submodule(info.name)
            layer = FrozenLayer(source, weight_bits[info.group])
            out_q = None if info.output_point is None else frozen_q[points[info.output_point].group]
            layer.bind(frozen_q[points[info.input_point].group], out_q)
            gm.add_submodule(info.name, layer)
        del gm.zb_selectors
        gm.recompile()
        frozen = FrozenModel(gm, copy.deepcopy(self.analysis), list(self.group_bits))
        return frozen.train(self.training)

    def _pool_group(self, pool: QuantAvgPool, gm: fx.GraphModule) -> int:
        return int(pool.quantizer_group)  # type: ignore[attr-defined]


def _make_pool(node: fx.Node, modules: dict[str, nn.Module]) -> QuantAvgPool:
    """Build a QuantAvgPool equivalent to the average-pool ``node`` at its traced shapes."""
    in_shape = tuple(node.args[0].meta["tensor_meta"].shape)  # type: ignore[union-attr]
    out_shape = tuple(node.meta["tensor_meta"].shape)
    spatial_in, spatial_out = in_shape[2:], out_shape[2:]
    module: Any = modules.get(str(node.target)) if node.op == "call_module" else None
    adaptive = isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)) or (
        node.op == "call_function" and "adaptive" in getattr(node.target, "__name__", "")
    )
    if adaptive:
        if any(i % o for i, o in zip(spatial_in, spatial_out)):
            raise ValueError(
                f"adaptive average pool {node.name!r} maps {spatial_in} to {spatial_out}, which "
                "is not a whole number of windows; use sizes that divide evenly"
            )
        kernel = tuple(i // o for i, o in zip(spatial_in, spatial_out))
        return QuantAvgPool(kernel, kernel, (0,) * len(kernel))
    kernel_a: Any
    stride_a: Any
    padding_a: Any
    if module is not None:
        kernel_a, stride_a, padding_a = module.kernel_size, module.stride, module.padding
        ceil, include = module.ceil_mode, module.count_include_pad
    else:
        args = list(node.args) + [None] * 4
        kernel_a = node.kwargs.get("kernel_size", args[1])
        stride_a = node.kwargs.get("stride", args[2]) or kernel_a
        padding_a = node.kwargs.get("padding", args[3] or 0)
        ceil = bool(node.kwargs.get("ceil_mode", False))
        include = bool(node.kwargs.get("count_include_pad", True))

    def tup(v: Any) -> tuple[int, ...]:
        return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * len(spatial_in)

    kernel, stride, padding = tup(kernel_a), tup(stride_a), tup(padding_a)
    if ceil or (any(padding) and not include):
        raise ValueError(
            f"average pool {node.name!r} uses ceil_mode or excludes padding from the divisor; "
            "zerobit's integer pool needs a fixed divisor (ceil_mode=False, count_include_pad=True)"
        )
    return QuantAvgPool(kernel, stride, padding)


def _parse_architecture(
    model: SearchModel, arch: Mapping[str, Mapping[str, Any]]
) -> tuple[list[list[int]], list[int]]:
    analysis = model.analysis
    if not isinstance(arch, Mapping):
        raise ValueError("architecture must be a mapping of layer name to its choices")
    names = {info.name for info in analysis.layers.values()}
    inputs = {f"input:{p.node}" for p in analysis.points if p.role == "input"}
    unknown = set(arch) - names - inputs
    missing = names - set(arch)
    if unknown or missing:
        raise ValueError(
            f"architecture does not match the model: unknown {sorted(unknown)}, "
            f"missing {sorted(missing)}"
        )
    weight_bits: list[list[int] | None] = [None] * len(analysis.groups)
    act: list[int | None] = [None] * len(analysis.act_groups)

    def set_act(group: int, bits: Any, where: str) -> None:
        allowed = model.act_group_bits[group]
        if bits not in allowed:
            raise ValueError(f"{where}: act_bits {bits!r} is not one of {allowed}")
        if act[group] is not None and act[group] != bits:
            raise ValueError(
                f"{where}: act_bits {bits} differs from {act[group]} of a tensor sharing "
                "its quantizer"
            )
        act[group] = int(bits)

    for info in analysis.layers.values():
        entry = arch[info.name]
        bits = list(entry.get("weight_bits", []))
        allowed = model.group_bits[info.group]
        if len(bits) != info.out_channels or any(b not in allowed for b in bits):
            raise ValueError(
                f"{info.name}: weight_bits must list {info.out_channels} values from {allowed}"
            )
        if all(b == 0 for b in bits):
            raise ValueError(f"{info.name}: every channel is pruned; keep at least one")
        if weight_bits[info.group] is not None and weight_bits[info.group] != bits:
            raise ValueError(f"{info.name}: weight_bits differ from a layer it is coupled with")
        weight_bits[info.group] = bits
        if info.output_point is not None and entry.get("act_bits") is not None:
            set_act(analysis.points[info.output_point].group, entry["act_bits"], info.name)
    for key in inputs & set(arch):
        node = key.split(":", 1)[1]
        point = next(p for p in analysis.points if p.role == "input" and p.node == node)
        set_act(point.group, arch[key].get("act_bits"), key)
    final_act = [a if a is not None else max(model.act_group_bits[i]) for i, a in enumerate(act)]
    return [w for w in weight_bits if w is not None], final_act  # type: ignore[misc]


def freeze(
    model: nn.Module,
    architecture: Mapping[str, Mapping[str, Any]],
    space: SearchSpace,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    **convert_options: Any,
) -> FrozenModel:
    """Build the frozen model of ``architecture`` directly from a float model.

    Args:
        model: The float model (as given to :func:`convert`).
        architecture: Output of ``SearchModel.architecture()``, possibly edited.
        space: The search space the architecture was found in.
        example_input: As for :func:`convert`.
        **convert_options: Further options of :func:`convert`.

    Returns:
        The frozen model.

    Raises:
        ValueError: If the architecture does not fit the model or the space.
    """
    smodel = convert(model, example_input, space, **convert_options)
    smodel.load_architecture_(architecture)
    return smodel.eval().freeze()

# SPDX-License-Identifier: Apache-2.0
# Single-run trials of the joint search's dynamics (budget controller, temperature, search length,
# size-cost detaching), each run against the Pareto benchmark's shared warm-up.
"""Single-run trials of the joint search's dynamics.

Each trial reruns one joint point of a finished Pareto benchmark seed (its warm-up checkpoint and
protocol) with one change, patched in for this process only, and prints the result beside the
benchmark's own run; it needs that seed's folder with its checkpoints (run the benchmark first:
checkpoints are not committed). docs/benchmarks.md quotes these trials. Run, for example:

    python benchmarks/search_trials.py --trial target-ramp --budget-index 3 --out runs/trials
    python benchmarks/search_trials.py --shares \
        benchmarks/results/pareto_fashion_mnist/seed-0/joint-budget-3
    python benchmarks/search_trials.py --seed 0 --prune-without-retraining --norm-ranks \
        benchmarks/results/pareto_fashion_mnist/seed-0/joint-budget-3

Trials (the benchmark's 4-epoch search unless said):
    target-ramp           the budget descends to the target along a cubic schedule over the
                          first half of the search, steered by the argmax cost
    target-ramp-expected  the same, steered by the expected cost of the current step
    arch-lr               architecture learning rate 0.2 instead of 0.05
    fast-release          the strength falls 6x faster while the argmax is under budget
    temperature-hold      the temperature stays at its initial value for the first half
    search8               8 search epochs instead of 4
    no-detach             the size cost sees the effective input channels (pruning priced fully)
    expected              the controller steered by the expected cost of the current step
                          (budget_signal="expected")
    hold-while-falling    the strength does not grow while the argmax cost is lower than 8
                          steps before (anti-windup: conditional integration)
    fixed-strength        no budget: the search runs at the constant strength --strength (the
                          paper's way; --budget-index only picks the run compared with)
    config                the run configuration's fields given by --set (for example
                          --set hard=true --set initial_temperature=5)
    factorized            each channel's logits split into a keep-or-prune logit and logits of
                          the kept bit-widths: p(0) = sigmoid(z), p(b) = sigmoid(-z) softmax(l)_b;
                          the same initial probabilities, the same temperature and argmax (on
                          the log-probabilities)
    fill                  after the search (which ends under its budget), raise the bits the
                          search was closest to choosing while the model still fits: the leftover
                          budget spent greedily (with --set, other fields changed too)
    no-compensation       the weights are not divided by the initial keep probability at
                          conversion (spec B 1.6): the search starts from a shrunk network and
                          ends at the warm-up's scale, where the activation clips were
                          calibrated, instead of starting at it and ending 1/S larger
    pinned                no search: every channel's weight bits fixed to those of the finished
                          run --pin (of any method) from the start, the same warm-up, search
                          epochs (now training the fixed assignment, no cost) and fine-tuning;
                          separates what a run chose from how long its weights trained
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import json
import math
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import zerobit.config as zb_config
import zerobit.search.model as zb_search_model
import zerobit.search.modules as zb_modules
import zerobit.train.budget as zb_budget
import zerobit.train.run as zb_run
from zerobit.train.baselines import method_config
from zerobit.train.budget import StrengthController, Target, discrete_cost
from zerobit.train.run import Run, RunConfig

TRIALS = (
    "target-ramp",
    "target-ramp-expected",
    "arch-lr",
    "fast-release",
    "temperature-hold",
    "search8",
    "no-detach",
    "expected",
    "hold-while-falling",
    "fixed-strength",
    "config",
    "factorized",
    "fill",
    "no-compensation",
    "pinned",
)
#: Longest run folder name; longer --set lists are cut and end in a hash of the whole.
MAX_NAME = 96
#: Trials that replace the budget controller.
CONTROLLER_TRIALS = (
    "target-ramp",
    "target-ramp-expected",
    "fast-release",
    "hold-while-falling",
)
#: Steps over which the hold-while-falling trial looks for a falling argmax cost.
WINDOW = 8
#: Fraction of the search over which the ramped budget descends or the temperature is held.
HALF = 0.5


def _progress(smodel: Any) -> float:
    """Search progress recovered from the temperature (exponential schedule)."""
    s = smodel.sampling
    ratio = s.final_temperature / s.initial_temperature
    return math.log(float(smodel.temperature) / s.initial_temperature) / math.log(ratio)


class _TrialController(StrengthController):
    """The benchmark's controller with a ramped budget or a faster release (one trial's)."""

    trial = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # as StrengthController's
        super().__init__(*args, **kwargs)
        self.start: float | None = None
        self.history: list[float] = []

    def update(self, smodel: Any) -> float:
        if self.trial == "target-ramp-expected":
            cost = smodel.expected_cost(self.target.cost)
        else:
            cost = discrete_cost(smodel, self.target.cost)
        budget = self.target.value
        if self.trial.startswith("target-ramp"):
            self.start = cost if self.start is None else self.start
            if self.start > budget:
                left = max(0.0, 1.0 - _progress(smodel) / HALF)
                budget += (self.start - budget) * left**3
        error = math.log(max(cost, 1e-12) / budget)
        self.history = [*self.history[-(WINDOW - 1) :], cost]
        falling = len(self.history) == WINDOW and cost < self.history[0]
        if self.trial == "hold-while-falling" and error > 0 and falling:
            return self.strength
        rate = 6 * self.rate if self.trial == "fast-release" and error < 0 else self.rate
        self.log_strength = min(
            max(self.log_strength + rate * error, math.log(1e-3)), math.log(1e3)
        )
        return self.strength


_exponential = zb_config.Sampling.temperature


def _held_temperature(self: Any, progress: float) -> float:
    """The benchmark's schedule, started after the first HALF of the search."""
    return _exponential(self, max(0.0, (progress - HALF) / (1 - HALF)))


def _factorized_logits(self: Any) -> torch.Tensor:
    """Log-probabilities from the factorized parameter: row ``zero`` holds z, the others l."""
    zero = self.zero_index
    param = self.parameter.expand(-1, self.channels)
    if zero is None:
        return param
    others = [i for i in range(len(self.bits)) if i != zero]
    z = param[zero : zero + 1]
    kept = torch.nn.functional.logsigmoid(-z) + torch.log_softmax(param[others], dim=0)
    rows = [None] * len(self.bits)
    rows[zero] = torch.nn.functional.logsigmoid(z)
    for j, i in enumerate(others):
        rows[i] = kept[j : j + 1]
    return torch.cat(rows, dim=0)  # type: ignore[arg-type]


@torch.no_grad()
def _factorized_set_logits_(self: Any, values: torch.Tensor) -> None:
    """Store flat logits ``values`` as the factorized parameter with the same probabilities."""
    zero = self.zero_index
    if zero is None:
        self.parameter.copy_(values[:, :1] if self.per_layer else values)
        return
    logp = torch.log_softmax(values, dim=0)
    param = logp.clone()
    p0 = logp[zero].exp().clamp(1e-12, 1 - 1e-7)
    param[zero] = torch.log(p0) - torch.log1p(-p0)
    self.parameter.copy_(param[:, :1] if self.per_layer else param)


_original_selector_init = zb_modules.ChannelSelector.__init__


def _factorized_init(
    self: Any, bits: tuple[int, ...], channels: int, per_layer: bool = False
) -> None:
    _original_selector_init(self, bits, channels, per_layer)
    flat = self.parameter.detach().clone()
    _factorized_set_logits_(self, flat)
    self.probs = torch.softmax(self.logits.detach(), dim=0)


def _fit_then_fill_(smodel: Any, target: Target) -> int:
    """The benchmark's greedy fit, then :func:`fill_budget_`; return the fit's moves."""
    moves = zb_budget.fit_budget_(smodel, target)
    print(f"fill: {fill_budget_(smodel, target)} raises")
    return moves


def fill_budget_(smodel: Any, target: Target) -> int:
    """Raise bits of the argmax architecture while it stays within ``target``; return the raises.

    The converse of the greedy fit: every one-step raise (one channel to the next higher
    bit-width of its group, a pruned channel to the lowest non-zero one unless its pruning is
    pinned, or one tensor to its next higher activation bit-width) is ranked by the logit it
    loses against the current choice, smallest first; each is taken if the model still fits,
    and a raised channel's next raise joins the ranking. A raise that does not fit is dropped:
    the size cost only grows, so it would not fit later either.
    """
    weight, act = zb_budget._choices(smodel)
    cost = zb_budget._cost_of(smodel, target.cost, weight, act)
    if cost > target.value:
        return 0
    heap: list[tuple[float, int, Any]] = []
    order = itertools.count()  # ties keep the order in which the raises were found

    def push(kind: str, index: int, channel: int) -> None:
        move = _raise(smodel, weight, act, kind, index, channel)
        if move is not None:
            heapq.heappush(heap, (move[0], next(order), move))

    for g, s in enumerate(smodel.selectors):
        for c in range(1 if s.per_layer else len(weight[g])):
            push("w", g, c)
    for a in range(len(smodel.quantizers)):
        push("a", a, -1)
    raises = 0
    while heap:
        move = heapq.heappop(heap)[2]
        new_weight, new_act = zb_budget._apply(smodel, weight, act, move)
        if zb_budget._cost_of(smodel, target.cost, new_weight, new_act) > target.value:
            continue
        weight, act = new_weight, new_act
        raises += 1
        push(move[1], move[2], move[3])
    if raises:
        zb_budget._set_choices_(smodel, weight, act)
    return raises


def _raise(
    smodel: Any, weight: list[list[int]], act: list[int], kind: str, index: int, channel: int
) -> tuple[float, str, int, int, int] | None:
    """The one-step raise of a channel ("w") or an activation tensor ("a"), or None.

    Its first element is the logit the raise loses against the current choice.
    """
    if kind == "a":
        bits, current = smodel.quantizers[index].bits, act[index]
        logits = smodel.quantizers[index].logits.detach().unsqueeze(1)
        channel_index = 0
    else:
        selector = smodel.selectors[index]
        bits, current = selector.bits, weight[index][channel]
        pinned = selector.pinned_pruning is not None and bool(selector.pinned_pruning[channel])
        if bits[current] == 0 and pinned:
            return None
        logits, channel_index = selector.logits.detach(), channel
    higher = [i for i, b in enumerate(bits) if b > bits[current]]
    if not higher:
        return None
    up = min(higher, key=lambda i: bits[i])
    loss = float(logits[current, channel_index] - logits[up, channel_index])
    return (loss, kind, index, channel, up)


def pin_architecture(architecture: dict[str, Any]) -> Any:
    """A ``prepare_search`` that fixes every channel's weight bits to ``architecture``'s.

    The conversion's weight compensation (a division by the initial keep probability) is undone
    first, so that the fixed model starts from the warm-up's weights. Searchable activation bits
    are refused: the trial is for size-driven runs, whose activations stay at 8 bits.
    """

    def prepare(smodel: Any) -> None:
        undo_compensation_(smodel)
        if any(len(q.bits) > 1 for q in smodel.quantizers):
            raise ValueError("the pinned trial fixes weight bits only; activation bits searchable")
        for info in smodel.analysis.layers.values():
            selector = smodel.selectors[info.group]
            bits = architecture[info.name]["weight_bits"]
            if len(bits) != selector.logits.shape[1]:
                raise ValueError(f"{info.name}: {len(bits)} channels in --pin, model has others")
            rows = torch.tensor([selector.bits.index(b) for b in bits])
            chosen = torch.nn.functional.one_hot(rows, len(selector.bits)).T.bool()
            with torch.no_grad():
                selector.set_logits_(torch.where(chosen, 20.0, -20.0))
            if selector.parameter.requires_grad:
                selector.parameter.register_hook(torch.zeros_like)

    return prepare


def patch(trial: str) -> None:
    """Install the trial's change in this process."""
    if trial == "factorized":
        selector = zb_modules.ChannelSelector
        selector.__init__ = _factorized_init  # type: ignore[method-assign]
        selector.logits = property(_factorized_logits)  # type: ignore[assignment,method-assign]
        selector.set_logits_ = _factorized_set_logits_  # type: ignore[method-assign]
    if trial == "fill":
        zb_run.fit_budget_ = _fit_then_fill_  # type: ignore[attr-defined]
    if trial == "no-compensation":
        zb_search_model.SearchModel._compensate_weights = lambda self: None  # type: ignore[method-assign]
    if trial in CONTROLLER_TRIALS:
        _TrialController.trial = trial
        zb_run.StrengthController = _TrialController  # type: ignore[misc]
    elif trial == "temperature-hold":
        zb_config.Sampling.temperature = _held_temperature  # type: ignore[method-assign]


def trial_config(
    results: Path,
    seed: int,
    budget_index: int,
    trial: str,
    strength: float = 1.0,
    settings: Sequence[str] = (),
) -> RunConfig:
    """The benchmark's joint run at ``budget_index`` with the trial's configuration changes."""
    protocol = json.loads((results / "protocol.json").read_text())
    base = RunConfig.from_dict({**protocol["base"], "seed": seed})
    fraction = protocol["budgets_fraction_of_w8"]["joint"][budget_index]
    w8 = json.loads((results / f"seed-{seed}" / "w8a8" / "result.json").read_text())
    config = replace(
        method_config(base, "joint"), target=f"size={fraction * w8['costs']['size_bytes']:.0f}B"
    )
    if trial == "arch-lr":
        config = replace(config, search=replace(config.search, arch_lr=0.2))
    elif trial == "search8":
        config = replace(config, search=replace(config.search, epochs=8))
    elif trial == "no-detach":
        config = replace(config, detach_input_channels=False)
    elif trial == "expected":
        config = replace(config, budget_signal="expected")
    elif trial == "fixed-strength":
        config = replace(config, target=None, strength=strength)
    elif trial == "pinned":
        config = replace(config, target=None, strength=0.0)
    if settings:  # the config trial's changes; any other trial's on top of its own
        changes = {}
        for setting in settings:
            key, _, value = setting.partition("=")
            changes[key] = json.loads(value)
        config = RunConfig.from_dict({**config.to_dict(), **changes})
    return config


def shares(run_dir: Path) -> dict[str, Any]:
    """Share of all output channels at each weight bit-width in a finished run."""
    result = json.loads((run_dir / "result.json").read_text())
    counts: Counter[int] = Counter()
    for layer in result["architecture"].values():
        counts.update(layer.get("weight_bits") or [])
    total = sum(counts.values())
    return {
        "run": str(run_dir),
        "size_bytes": result["costs"]["size_bytes"],
        "val_accuracy": result["val_accuracy"],
        "weight_bit_shares": {bits: n / total for bits, n in sorted(counts.items())},
    }


def warmup_search_model(results: Path, seed: int, out: Path) -> tuple[Run, Any]:
    """The seed's float warm-up converted to a search model, its weight compensation undone (so
    that an all-8-bit choice computes the warm-up network, quantized)."""
    config = trial_config(results, seed, 0, "config")
    run_dir = out / f"warmup-seed-{seed}"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    warmup = run_dir / "checkpoints" / "warmup.pt"
    if not warmup.exists():
        shutil.copyfile(results / f"seed-{seed}" / "warmup" / "checkpoints" / "warmup.pt", warmup)
    run = Run(config, run_dir)
    run.prepare(resume=True)
    smodel = run._convert(run.warm_up())
    undo_compensation_(smodel)
    return run, smodel


@torch.no_grad()
def undo_compensation_(smodel: Any) -> None:
    """Multiply weights and biases back by the initial keep probability that the conversion
    divided them by, so that the search model computes the warm-up network again."""
    for selector, layers in _group_layers(smodel).items():
        if selector.zero_index is None:
            continue
        keep = float(1 - torch.softmax(selector.logits, dim=0)[selector.zero_index, 0])
        for layer in layers:
            layer.weight.mul_(keep)
            layer.bias.mul_(keep)


def _group_layers(smodel: Any) -> dict[Any, list[Any]]:
    groups: dict[Any, list[Any]] = {}
    for layer in smodel.layers().values():
        groups.setdefault(layer.selector, []).append(layer)
    return groups


def norm_ranks(smodel: Any, run_dir: Path) -> dict[int, float]:
    """Mean percentile (0: smallest, 1: largest), within its layer, of the warm-up weight norm of
    the channels a finished run gave each weight bit-width."""
    architecture = json.loads((run_dir / "result.json").read_text())["architecture"]
    ranks: dict[int, list[float]] = {}
    for name, layer in smodel.layers().items():
        bits = architecture[name].get("weight_bits")
        if not bits or len(bits) < 2:
            continue
        norm = layer.weight.detach().flatten(1).norm(dim=1)
        rank = norm.argsort().argsort().float() / (len(norm) - 1)
        for b, r in zip(bits, rank.tolist()):
            ranks.setdefault(b, []).append(r)
    return {b: sum(v) / len(v) for b, v in sorted(ranks.items())}


def prune_without_retraining(
    run: Run, smodel: Any, fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4), draws: int = 3
) -> dict[str, Any]:
    """Validation accuracy of the warm-up, all weights 8-bit, with a fraction of every prunable
    group's channels pruned and no retraining: those of the smallest summed weight norm, or
    random ones (``draws`` draws)."""
    groups = _group_layers(smodel)
    generator = torch.Generator().manual_seed(0)
    val = run.data.val

    def accuracy(fraction: float, by_norm: bool) -> float:
        for selector in smodel.selectors:
            channels = selector.channels
            choice = torch.full((channels,), selector.bits.index(max(selector.bits)))
            if selector.zero_index is not None:
                if by_norm:
                    norms = sum(
                        layer.weight.detach().flatten(1).norm(dim=1) ** 2
                        for layer in groups[selector]
                    )
                    order = norms.argsort()
                else:
                    order = torch.randperm(channels, generator=generator)
                choice[order[: int(fraction * channels)]] = selector.zero_index
            logits = torch.zeros(selector.logits.shape)
            logits[choice, torch.arange(channels)] = 10.0
            selector.set_logits_(logits)
        smodel.eval()
        return run._evaluate(smodel, val)

    result: dict[str, Any] = {"none": accuracy(0.0, True)}
    for fraction in fractions:
        result[f"{fraction:g}"] = {
            "smallest_norm": accuracy(fraction, True),
            "random": [accuracy(fraction, False) for _ in range(draws)],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--trial", choices=TRIALS)
    parser.add_argument(
        "--results", type=Path, default=Path("benchmarks/results/pareto_fashion_mnist")
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-index", type=int, default=3, help="rung of the joint ladder")
    parser.add_argument("--strength", type=float, default=1.0, help="for --trial fixed-strength")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="run configuration fields to change (--trial config; on top of any other trial)",
    )
    parser.add_argument("--pin", type=Path, help="for --trial pinned: the run whose bits to fix")
    parser.add_argument("--out", type=Path, default=Path("runs/trials"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shares", type=Path, nargs="*", help="print finished runs' bit shares")
    parser.add_argument(
        "--norm-ranks",
        type=Path,
        nargs="*",
        help="print, per weight bit-width, the mean percentile of the warm-up weight norm of the "
        "channels finished runs (of --results, --seed) chose it for",
    )
    parser.add_argument(
        "--prune-without-retraining",
        action="store_true",
        help="print the warm-up's accuracy with the smallest-norm or random channels pruned",
    )
    args = parser.parse_args()
    if args.shares:
        for run_dir in args.shares:
            print(json.dumps(shares(run_dir)))
        return
    torch.set_num_threads(args.threads)
    if args.norm_ranks or args.prune_without_retraining:
        run, smodel = warmup_search_model(args.results, args.seed, args.out)
        for run_dir in args.norm_ranks or ():
            ranks = norm_ranks(smodel, run_dir)
            print(json.dumps({"run": str(run_dir), "mean_norm_percentile": ranks}))
        if args.prune_without_retraining:
            print(json.dumps(prune_without_retraining(run, smodel)))
        return
    if args.trial is None:
        parser.error("give --trial, --shares, --norm-ranks or --prune-without-retraining")
    config = trial_config(
        args.results, args.seed, args.budget_index, args.trial, args.strength, args.set
    )
    patch(args.trial)
    name = args.trial
    if args.trial == "fixed-strength":
        name += f"-{args.strength:g}"
    prepare = None
    if args.trial == "pinned":
        if args.pin is None:
            parser.error("--trial pinned needs --pin RUN_DIR")
        pinned = json.loads((args.pin / "result.json").read_text())
        prepare = pin_architecture(pinned["architecture"])
        name += f"-{args.pin.name}"
    if args.set:
        name += "-" + "-".join(s.replace("=", "_") for s in args.set)
        if len(name) > MAX_NAME:  # whole phase configurations make names too long for a path
            digest = hashlib.sha1(name.encode()).hexdigest()[:12]
            name = f"{name[: MAX_NAME - 13]}-{digest}"
    out = args.out / f"{name}-seed-{args.seed}-budget-{args.budget_index}"
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    seed_dir = args.results / f"seed-{args.seed}"
    warmup = out / "checkpoints" / "warmup.pt"
    if not warmup.exists():
        shutil.copyfile(seed_dir / "warmup" / "checkpoints" / "warmup.pt", warmup)
    result = Run(config, out, prepare_search=prepare).run(resume=True)
    reference = json.loads(
        (seed_dir / f"joint-budget-{args.budget_index}" / "result.json").read_text()
    )
    for name, r in (("benchmark", reference), (args.trial, result)):
        budget = r["budget"] or {}
        print(
            f"{name:22s} size {r['costs']['size_bytes']:9,.0f} B  "
            f"val {100 * r['val_accuracy']:.2f} %"
            f"  after search {budget.get('cost_after_search')}  greedy moves "
            f"{budget.get('greedy_moves')}"
        )


if __name__ == "__main__":
    main()

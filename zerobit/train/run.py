# SPDX-License-Identifier: Apache-2.0
# One search run as a resumable pipeline: float warm-up, search, freeze, fine-tune, result.json.
from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from zerobit import __version__
from zerobit.config import Sampling, SearchSpace, compensation_mode
from zerobit.cost import evaluate
from zerobit.data import DatasetSplits, load_dataset, load_local_dataset
from zerobit.models import get_model
from zerobit.search import FrozenModel, SearchModel, convert
from zerobit.train import distributed
from zerobit.train.budget import (
    BUDGET_SIGNALS,
    BYTE_TARGETS,
    DEFAULT_RATE,
    StrengthController,
    Target,
    discrete_cost,
    fit_budget_,
    minimum_cost,
    parse_target,
)
from zerobit.train.loop import (
    LossFn,
    MetricFn,
    PhaseConfig,
    accuracy,
    distillation_loss,
    evaluate_metric,
    lr_factor,
)

PHASES = ("warmup", "search", "finetune")
#: The configuration fields that decide what the float warm-up trains (a warm-up is reusable
#: by any run that agrees on them).
WARMUP_FIELDS = ("dataset", "data_dir", "subset", "val_fraction", "model", "seed", "warmup")
#: Dataset names that read the user's own data from ``data_dir``.
LOCAL_DATASETS = ("tensors", "image-folder")
#: Costs reported for every final model: result.json key -> cost model.
REPORTED_COSTS = {
    "size_bits": "size",
    "bitops": "bitops",
    "macs": "macs",
    "mpic_cycles": "mpic",
    "ne16_cycles": "ne16",
    "flash_bytes": "flash",
    "ram_bytes": "ram",
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; stored as ``config.json`` in the run directory.

    Attributes:
        dataset: Registered dataset name.
        data_dir: Folder of the dataset's raw files (None: default location).
        subset: Training samples used (None: all).
        val_fraction: Fraction of the training data held out for validation (selection).
        model: Registered model name.
        weight_bits: Candidate weight bit-widths (0 = pruned).
        act_bits: Candidate activation bit-widths.
        input_bits: Candidate bit-widths of the network input.
        cost: Cost model driving the search.
        strength: Weight of the normalized cost in the search loss.
        strength_ramp: Ramp the strength linearly from 1 % to 100 % over the first half of the
            search (the paper's "incremental strength"), as a function of progress.
        gumbel: Gumbel-softmax sampling.
        hard: Hard (straight-through one-hot) sampling.
        initial_temperature: Softmax temperature at the start of the search.
        final_temperature: Softmax temperature at the end of the search.
        warmup: Float warm-up phase settings.
        search: Search phase settings.
        finetune: Fine-tuning phase settings. By default its learning rate decays along a
            cosine (``lr_schedule="cosine"``): on both Pareto benchmarks that gave the better
            fine-tuned models (docs/benchmarks.md); warm-up and search default to a constant rate.
        seed: Seed of splits, initialization, shuffling and sampling.
        calibration_samples: Training samples used to calibrate activation clips at conversion.
        target: A budget such as ``"size=20kB"`` or ``"mpic=2e6"``: the strength then adapts
            during the search so that the final model meets it (see zerobit.train.budget).
        weight_granularity: ``"channel"`` or ``"layer"`` (see :class:`zerobit.SearchSpace`).
        weight_range: ``"minmax"`` or ``"mse"``: how each channel's weight quantization range
            is chosen (see :class:`zerobit.SearchSpace`).
        method: Label of the method this configuration implements (``"joint"``, or a baseline
            of :mod:`zerobit.train.baselines`), copied to result.json.
        detach_input_channels: Whether the cost sees each layer's effective input channels
            detached (see :func:`zerobit.convert`). None is the paper's policy: detached for
            the size cost, so pruning a channel is priced in its own layer only; False prices
            it in its consumers too.
        distill: Weight ``a`` of knowledge distillation from the float warm-up model in the
            search and fine-tuning losses: ``(1 - a) * loss + a * T^2 * KL(teacher || student)``
            on the softened class probabilities (0: off; 1: the labels are not used after the
            warm-up). Every method of :mod:`zerobit.train.baselines` gets the same teacher.
            Needs a model that outputs class logits.
        distill_temperature: The softmax temperature ``T`` of the distillation term.
        weight_compensation: How the weights make up for the probability of pruning a
            channel (see :func:`zerobit.convert`): ``"initial"`` (the paper's) divides
            the warm-up's weights by the initial probability of keeping a channel,
            ``"annealed"`` does the same at the start and fades the division out as the
            temperature falls, ``"tracking"`` divides by each group's expected fraction of
            kept channels (never less than at the start), ``"off"`` keeps them as trained.
            True and False, as configurations written before the modes say, read as
            ``"initial"`` and ``"off"``.
        budget_signal: With a target, what the strength is steered by: ``"argmax"`` (the
            current argmax architecture's cost; the search tends to end well under the budget)
            or ``"expected"`` (the expected cost of the current probabilities; it ends close to
            the budget). See :class:`zerobit.train.budget.StrengthController`.
        budget_damping: With a target, how many steps ahead the controller extrapolates a
            falling cost (0: off): the strength stops growing once the cost is on its way to
            the budget, so small budgets are not overshot (see
            :class:`zerobit.train.budget.StrengthController`). None (the default): 20 steps,
            0 for NE16 targets, whose searches measured worse damped
            (:meth:`controller_damping`). Configurations written before the key read as 0, as
            they ran.
        budget_rate: With a target, the controller's gain: ``log(strength)`` moves by this
            times ``log(cost / target)`` per step.
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    subset: int | None = None
    val_fraction: float = 0.1
    model: str = "resnet8"
    weight_bits: tuple[int, ...] = (0, 2, 4, 8)
    act_bits: tuple[int, ...] = (2, 4, 8)
    input_bits: tuple[int, ...] = (8,)
    cost: str = "size"
    strength: float = 1.0
    strength_ramp: bool = False
    gumbel: bool = False
    hard: bool = False
    initial_temperature: float = 1.0
    final_temperature: float = math.exp(-4.5)
    warmup: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=5))
    search: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=5))
    finetune: PhaseConfig = field(
        default_factory=lambda: PhaseConfig(epochs=3, lr_schedule="cosine")
    )
    seed: int = 0
    calibration_samples: int = 256
    target: str | None = None
    weight_granularity: str = "channel"
    method: str = "joint"
    detach_input_channels: bool | None = None
    budget_signal: str = "argmax"
    weight_range: str = "minmax"
    distill: float = 0.0
    distill_temperature: float = 4.0
    weight_compensation: str = "initial"
    budget_damping: float | None = None
    budget_rate: float = DEFAULT_RATE

    def __post_init__(self) -> None:
        for name in ("weight_bits", "act_bits", "input_bits"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in PHASES:
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, PhaseConfig(**value))
        if self.strength < 0 or not math.isfinite(self.strength):
            raise ValueError(f"strength must be a finite number >= 0, got {self.strength}")
        if not 0.0 <= self.distill <= 1.0:
            raise ValueError(f"distill must be in [0, 1], got {self.distill}")
        if not (self.distill_temperature > 0 and math.isfinite(self.distill_temperature)):
            raise ValueError(
                f"distill_temperature must be a finite number > 0, got {self.distill_temperature}"
            )
        if self.calibration_samples < 1:
            raise ValueError("calibration_samples must be >= 1")
        # True and False (configurations written before the modes) name the first and last
        object.__setattr__(self, "weight_compensation", compensation_mode(self.weight_compensation))
        self.space()  # validates the bit sets
        self.sampling()
        if self.target is not None:
            parse_target(self.target)
        if self.budget_signal not in BUDGET_SIGNALS:
            raise ValueError(
                f"budget_signal must be one of {BUDGET_SIGNALS}, got {self.budget_signal!r}"
            )
        if not (0 < self.budget_rate <= 1):
            raise ValueError(f"budget_rate must be in (0, 1], got {self.budget_rate}")
        damping = self.budget_damping
        if damping is not None and not (damping >= 0 and math.isfinite(damping)):
            raise ValueError(f"budget_damping must be a finite number >= 0, got {damping}")

    def resolved(self) -> RunConfig:
        """Return this configuration with its defaults that depend on others made explicit.

        Two configurations that resolve equal run the same: a run written with
        ``budget_damping=20`` resumes under a configuration that leaves it to the default.
        """
        return replace(self, budget_damping=self.controller_damping())

    def controller_damping(self) -> float:
        """Return the budget controller's damping in steps.

        ``budget_damping`` when set; else :data:`DEFAULT_BUDGET_DAMPING`, or 0 for a target on
        a cost in :data:`UNDAMPED_TARGETS`.
        """
        if self.budget_damping is not None:
            return float(self.budget_damping)
        if self.target is not None and parse_target(self.target).cost in UNDAMPED_TARGETS:
            return 0.0
        return DEFAULT_BUDGET_DAMPING

    def space(self) -> SearchSpace:
        """Return the search space of this run."""
        return SearchSpace(
            self.weight_bits,
            self.act_bits,
            self.input_bits,
            weight_granularity=self.weight_granularity,
            weight_range=self.weight_range,
        )

    def sampling(self) -> Sampling:
        """Return the sampling schedule of this run."""
        return Sampling(self.initial_temperature, self.final_temperature, self.gumbel, self.hard)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict (inverse of :meth:`from_dict`)."""
        data = asdict(self)
        for name in ("weight_bits", "act_bits", "input_bits"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are an error.

        A key missing from a configuration written before it existed takes the value zerobit
        used then (:data:`LEGACY_VALUES`), or else its default.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown run configuration keys {sorted(unknown)}")
        return cls(**{**LEGACY_VALUES, **data})


#: The budget controller's damping (steps) when a configuration leaves it unset.
DEFAULT_BUDGET_DAMPING = 20.0
#: Target costs whose budgeted searches measured worse damped (NE16: 3 seeds of the
#: hardware-aware benchmark, docs/benchmarks.md "Budget controller damping"): undamped by default.
UNDAMPED_TARGETS = frozenset({"ne16"})

#: What a run configuration written before a key existed implies for it, where that differs
#: from today's default: such runs ran with the paper's min-max weight ranges and an undamped
#: budget controller.
LEGACY_VALUES: dict[str, Any] = {"weight_range": "minmax", "budget_damping": 0.0}


def strength_at(config: RunConfig, progress: float) -> float:
    """Regularization strength at search progress ``progress`` in [0, 1]."""
    if not config.strength_ramp:
        return config.strength
    return config.strength * min(1.0, 0.01 + 0.99 * progress / 0.5)


def _snapshot(model: nn.Module) -> dict[str, Any]:
    """Copy the model's state dict (tensors and extra state such as activation bits)."""
    return copy.deepcopy(model.state_dict())


def _atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` with torch.save so that a crash never leaves a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _epoch_seed(seed: int, phase: str, epoch: int) -> int:
    # Each epoch is reseeded from (seed, phase, epoch), so an interrupted run resumed at an epoch
    # boundary draws the same shuffles, dropout masks and Gumbel noise as an uninterrupted one.
    return (seed * 1_000_003 + PHASES.index(phase) * 10_007 + epoch) % (2**31)


def _step_seed(seed: int, step: int) -> int:
    # The Gumbel noise of search step `step` depends on (seed, step) only: every rank of a
    # distributed run draws the same sample, and a resumed run the same as an uninterrupted one.
    return (seed * 2_000_003 + 7_919 * step + 1) % (2**63)


class _OnDevice(nn.Module):
    """Evaluation adapter: moves CPU batches to the model's device."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model = model
        self.device = device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device))


class Run:
    """A run directory and the pipeline that fills it.

    Args:
        config: The run's configuration.
        out: The run directory (created; an existing one must hold the same configuration).
        loss_fn: Training loss ``(logits, target) -> scalar`` (default: cross-entropy).
        metric: Validation/test metric ``(logits, target) -> float``, higher is better
            (default: top-1 accuracy).
        data: Pre-loaded splits (default: ``load_dataset(config.dataset, ...)``).
        model_fn: Builds the float model (default: ``get_model(config.model, ...)``).
        prepare_search: Called on the freshly converted SearchModel before the search (and
            before a checkpoint is restored), e.g. to seed weights or pin choices.

    Started by torchrun (or in a process group the caller initialized), the run is one
    data-parallel search over every process: the batch sizes of ``config`` are global batches,
    and only rank 0 writes the run directory (see :mod:`zerobit.train.distributed`).
    """

    def __init__(
        self,
        config: RunConfig,
        out: str | os.PathLike[str],
        loss_fn: LossFn | None = None,
        metric: MetricFn = accuracy,
        data: DatasetSplits | None = None,
        model_fn: Callable[[], nn.Module] | None = None,
        prepare_search: Callable[[SearchModel], None] | None = None,
    ) -> None:
        self.config = config
        self._prepare_search = prepare_search
        self.out = Path(out)
        self.loss_fn = loss_fn or nn.functional.cross_entropy
        self.metric = metric
        self._data = data
        self._model_fn = model_fn
        self.checkpoints = self.out / "checkpoints"
        self.timings: dict[str, float] = {}
        self.budget: dict[str, Any] | None = None
        self._extra: dict[str, Any] = {}  # objects with state_dict() saved in checkpoints
        self._teacher: nn.Module | None = None  # the float warm-up model, when distilling
        self.context = distributed.setup()

    # ------------------------------------------------------------------------------ plumbing
    @property
    def data(self) -> DatasetSplits:
        """The dataset splits (loaded on first use)."""
        if self._data is None:
            c = self.config
            if c.dataset in LOCAL_DATASETS:  # the user's own data, at --data-dir
                if c.data_dir is None:
                    raise ValueError(
                        f"dataset {c.dataset!r} reads your data from --data-dir: a .pt file with "
                        "train_x/train_y/test_x/test_y, or a folder with train/<class>/*.png and "
                        "test/<class>/*.png"
                    )
                self._data = load_local_dataset(c.data_dir, c.subset, c.seed, c.val_fraction)
            else:
                self._data = load_dataset(c.dataset, c.data_dir, c.subset, c.seed, c.val_fraction)
        return self._data

    def _new_model(self) -> nn.Module:
        torch.manual_seed(self.config.seed)
        if self._model_fn is not None:
            return self._model_fn()
        info = self.data.info
        return get_model(self.config.model, info.input_shape, info.num_classes)

    def prepare(self, resume: bool) -> None:
        """Create the run directory and its config.json (refusing a different existing run)."""
        config_path = self.out / "config.json"
        if config_path.exists():
            # Through from_dict, so that keys added since the run was made take their defaults.
            stored = RunConfig.from_dict(json.loads(config_path.read_text()))
            if stored.resolved() != self.config.resolved():
                raise ValueError(
                    f"{self.out} holds a run with a different configuration; use another --out "
                    "or resume it with its own configuration"
                )
            if not resume and (self.out / "result.json").exists():
                raise ValueError(f"{self.out} already holds a finished run; use another --out")
        if self.context.is_main:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(json.dumps(self.config.to_dict(), indent=2), config_path)

    def _log(self, record: dict[str, Any]) -> None:
        if self.context.is_main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _reconcile_log(self) -> None:
        """Keep the metrics lines of the epochs that the checkpoints hold, and no others.

        An epoch's line is appended just before its checkpoint is written. A run killed between
        the two leaves one line for an epoch the checkpoint lacks; that epoch runs again on
        resume, so its stale line goes. The reverse order would lose the line for good.
        """
        path = self.out / "metrics.jsonl"
        if not self.context.is_main or not path.exists():
            return
        done = {}
        for phase in PHASES:
            ckpt = self._checkpoint(phase)
            done[phase] = int(ckpt["epoch"]) if ckpt is not None else 0
        lines = path.read_text().splitlines()
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by the kill
                continue
            if record.get("epoch", 0) <= done.get(record.get("phase"), math.inf):
                kept.append(line)
        if kept != lines:
            _atomic_write_text("".join(f"{line}\n" for line in kept), path)

    def _save(self, obj: Any, phase: str) -> None:
        """Write a phase checkpoint (rank 0), then let every rank read it."""
        if self.context.is_main:
            _atomic_save(obj, self.checkpoints / f"{phase}.pt")
        distributed.barrier(self.context)

    def _checkpoint(self, phase: str) -> dict[str, Any] | None:
        path = self.checkpoints / f"{phase}.pt"
        if not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def _loader(self, batch_size: int, phase: str) -> DataLoader:
        # One shuffling rule for any number of processes: the DistributedSampler of one rank of
        # one is a plain shuffle, and the per-rank batches of N ranks make up the same batches.
        seed = _epoch_seed(self.config.seed, phase, 0)
        sampler = distributed.train_sampler(self.data.train, self.context, seed)
        batch = distributed.rank_batch_size(batch_size, self.context)
        return DataLoader(self.data.train, batch_size=batch, sampler=sampler)

    def _evaluate(self, model: nn.Module, data: Any) -> float:
        """Metric of ``model`` on ``data``, computed by rank 0 and broadcast (ranks agree)."""
        value = 0.0
        if self.context.is_main:
            device = self.context.device
            if device.type == "cpu":
                value = evaluate_metric(model, data, self.metric)
            else:
                value = evaluate_metric(
                    _OnDevice(model, device), data, lambda z, y: self.metric(z.cpu(), y)
                )
        return distributed.broadcast_float(value, self.context)

    def validation_batch(self, count: int) -> torch.Tensor:
        """Return the first ``count`` validation inputs, stacked (to check an exported model)."""
        val = self.data.val
        return torch.stack([val[i][0] for i in range(min(count, len(val)))])  # type: ignore[arg-type]

    def _example_input(self) -> torch.Tensor:
        train = self.data.train
        n = min(self.config.calibration_samples, len(train))  # type: ignore[arg-type]
        return torch.stack([train[i][0] for i in range(n)])

    # -------------------------------------------------------------------------------- phases
    def run(
        self, resume: bool = False, warmup_from: str | os.PathLike[str] | None = None
    ) -> dict[str, Any]:
        """Run (or resume) every phase and write ``result.json``; return the result.

        ``warmup_from`` names a run directory, sweep or baselines folder whose finished float
        warm-up this run starts from instead of training its own (see :func:`reuse_warmup`); a
        resumed run that already holds its warm-up keeps it.
        """
        self.prepare(resume)
        if not resume and self.context.is_main:
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
            for phase in PHASES:
                (self.checkpoints / f"{phase}.pt").unlink(missing_ok=True)
        distributed.barrier(self.context)
        if warmup_from is not None:
            missing = not (self.checkpoints / "warmup.pt").exists()
            distributed.barrier(self.context)  # every rank looked before rank 0 writes
            if missing:  # every rank checks the source (and fails alike); rank 0 copies it
                reuse_warmup(warmup_from, self.out, self.config, write=self.context.is_main)
            distributed.barrier(self.context)
        latest = next(
            (ck for p in reversed(PHASES) if (ck := self._checkpoint(p)) is not None), None
        )
        self.timings = dict(json.loads(latest["timings"])) if latest is not None else {}
        self._reconcile_log()
        model = self.warm_up()
        if self.config.distill > 0:
            teacher = copy.deepcopy(model).to(self.context.device).eval()
            self._teacher = teacher.requires_grad_(False)
        smodel = self.search_phase(model)
        frozen = self.finetune_phase(smodel)
        return self.write_result(frozen)

    def _task_loss(self, output: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return the training loss of search and fine-tuning (``loss_fn``, distilled if set)."""
        loss = self.loss_fn(output, y)
        if self._teacher is None:
            return loss
        with torch.no_grad():
            teacher = self._teacher(x)
        c = self.config
        return (1 - c.distill) * loss + c.distill * distillation_loss(
            output, teacher, c.distill_temperature
        )

    def _train_epochs(
        self,
        phase: str,
        model: nn.Module,
        optimizers: list[torch.optim.Optimizer],
        settings: PhaseConfig,
        step_fn: Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor],
        state: dict[str, Any],
        extra_log: Callable[[], dict[str, Any]] = dict,
        select_best: bool = True,
    ) -> None:
        """Shared epoch loop with per-epoch checkpoints; ``state`` carries epoch and best.

        ``settings`` gives the epochs, the batch size, the early stopping (only with
        ``select_best``: the search never stops early) and the learning-rate schedule of
        ``optimizers[0]`` (the weights), set before every step from the rate the optimizer was
        built with (kept in its state, so a resumed phase goes on where it stopped).
        """
        epochs, lr_schedule = settings.epochs, settings.lr_schedule
        patience = settings.patience if select_best else None
        loader = self._loader(settings.batch_size, phase)
        sampler: Any = loader.sampler
        device = self.context.device
        total = max(1, epochs * len(loader))
        for group in optimizers[0].param_groups:
            group.setdefault("initial_lr", group["lr"])
        while state["epoch"] < epochs:
            if patience is not None and state.get("stale", 0) >= patience:
                break  # early stopping: the last `patience` epochs did not improve
            epoch = state["epoch"]
            torch.manual_seed(_epoch_seed(self.config.seed, phase, epoch))
            sampler.set_epoch(epoch)
            start = time.perf_counter()
            model.train()
            losses = []
            bar = tqdm(
                loader,
                desc=f"{phase} {epoch + 1}/{epochs}",
                leave=False,
                disable=not self.context.is_main,
            )
            for i, (x, y) in enumerate(bar):
                factor = lr_factor(lr_schedule, (epoch * len(loader) + i) / total)
                for group in optimizers[0].param_groups:
                    group["lr"] = group["initial_lr"] * factor
                for opt in optimizers:
                    opt.zero_grad()
                x, y = x.to(device), y.to(device)
                loss = step_fn(x, y, epoch * len(loader) + i, total)
                loss.backward()
                for opt in optimizers:
                    opt.step()
                losses.append(float(loss.detach()))
            value = self._evaluate(model, self.data.val)
            elapsed = time.perf_counter() - start
            self.timings[f"{phase}_s"] = self.timings.get(f"{phase}_s", 0.0) + elapsed
            state["epoch"] = epoch + 1
            if not select_best or value > state["best_metric"]:
                state["best_metric"] = value
                state["best_model"] = _snapshot(model)
                state["stale"] = 0
            else:
                state["stale"] = state.get("stale", 0) + 1
            record = {
                "phase": phase,
                "epoch": epoch + 1,
                "train_loss": distributed.mean_over_ranks(
                    sum(losses) / max(len(losses), 1), self.context
                ),
                "val_metric": value,
                "time_s": elapsed,
                **extra_log(),
            }
            self._log(record)  # before the checkpoint: see _reconcile_log
            self._save(
                {
                    "epoch": state["epoch"],
                    "best_metric": state["best_metric"],
                    "best_model": state["best_model"],
                    "stale": state["stale"],
                    "model": model.state_dict(),
                    "optimizers": [opt.state_dict() for opt in optimizers],
                    "timings": json.dumps(self.timings),
                    "extra": {k: v.state_dict() for k, v in self._extra.items()},
                },
                phase,
            )

    def _restore(
        self,
        model: nn.Module,
        optimizers: list[torch.optim.Optimizer],
        ckpt: dict[str, Any] | None,
    ) -> dict[str, Any]:
        if ckpt is None:
            return {"epoch": 0, "best_metric": -math.inf, "best_model": None}
        for key, state in ckpt.get("extra", {}).items():
            if key in self._extra:
                self._extra[key].load_state_dict(state)
        model.load_state_dict(ckpt["model"])
        for opt, opt_state in zip(optimizers, ckpt["optimizers"]):
            opt.load_state_dict(opt_state)
        return {
            "epoch": ckpt["epoch"],
            "best_metric": ckpt["best_metric"],
            "best_model": ckpt["best_model"],
            "stale": ckpt.get("stale", 0),
        }

    def warm_up(self) -> nn.Module:
        """Phase 1: train the float model; return the best epoch on the validation set."""
        c = self.config.warmup
        model = self._new_model().to(self.context.device)
        batchnorms = distributed.synchronize_batchnorm_(model, self.context)
        optimizer = torch.optim.Adam(model.parameters(), c.lr, weight_decay=c.weight_decay)
        state = self._restore(model, [optimizer], self._checkpoint("warmup"))
        net = distributed.data_parallel(model, self.context)

        def step(x: torch.Tensor, y: torch.Tensor, i: int, total: int) -> torch.Tensor:
            return self.loss_fn(net(x), y)

        self._train_epochs(
            "warmup",
            model,
            [optimizer],
            c,
            step,
            state,
        )
        if state["best_model"] is not None:
            model.load_state_dict(state["best_model"])
        distributed.restore_batchnorm_(model, batchnorms)
        return model.cpu().eval()

    def _convert(self, model: nn.Module) -> SearchModel:
        c = self.config
        return convert(
            model,
            self._example_input(),
            c.space(),
            c.cost,
            sampling=c.sampling(),
            detach_input_channels=c.detach_input_channels,
            compensate_weights=c.weight_compensation,
        )

    def search_phase(self, model: nn.Module) -> SearchModel:
        """Phase 2: joint search of weights and architecture; return the last epoch's model."""
        c = self.config
        smodel = self._convert(model)
        if self._prepare_search is not None:
            self._prepare_search(smodel)
        smodel.to(self.context.device)
        optimizer = torch.optim.Adam(
            smodel.weight_parameter_groups(c.search.weight_decay), c.search.lr
        )
        arch_params = list(smodel.arch_parameters())
        optimizers: list[torch.optim.Optimizer] = [optimizer]
        if arch_params:
            optimizers.append(torch.optim.Adam(arch_params, c.search.arch_lr))
        target = parse_target(c.target) if c.target is not None else None
        controller = None
        if target is not None:
            _check_reachable(smodel, target)
            controller = self._extra["controller"] = StrengthController(
                target,
                c.strength,
                rate=c.budget_rate,
                signal=c.budget_signal,
                damping=c.controller_damping(),
            )
        state = self._restore(smodel, optimizers, self._checkpoint("search"))
        net = distributed.data_parallel(smodel, self.context)
        noise = smodel.noise_generator = torch.Generator()

        def controlled_strength() -> float:
            # The controller runs on rank 0; the others take its strength (and its state).
            assert controller is not None
            value = controller.update(smodel) if self.context.is_main else 0.0
            value = distributed.broadcast_float(value, self.context)
            if not self.context.is_main:
                controller.log_strength = math.log(value)
            return value

        def step(x: torch.Tensor, y: torch.Tensor, i: int, total: int) -> torch.Tensor:
            progress = i / total
            smodel.set_progress(progress)
            noise.manual_seed(_step_seed(c.seed, i))
            if controller is not None:
                strength = controlled_strength() * strength_at(c, progress) / c.strength
            else:
                strength = strength_at(c, progress)
            return self._task_loss(net(x), x, y) + strength * smodel.cost()

        def costs() -> dict[str, Any]:
            smodel.eval()
            value = float(smodel.cost().detach())
            record = {"cost": value, "temperature": float(smodel.temperature)}  # type: ignore[arg-type]
            if controller is not None:
                record["strength"] = controller.strength
                # What the budget is checked against: the argmax architecture's cost, in
                # the target's unit (bits for size).
                record["argmax_cost"] = discrete_cost(smodel, controller.target.cost)
            return record

        self._train_epochs(
            "search",
            smodel,
            optimizers,
            c.search,
            step,
            state,
            extra_log=costs,
            select_best=False,
        )
        smodel.noise_generator = None
        smodel.detach_probs_().cpu()
        ckpt = self._checkpoint("search")
        if ckpt is not None and "budget" in ckpt:  # resumed after the greedy step: reuse it
            self.budget = json.loads(ckpt["budget"])
        elif target is not None and controller is not None:
            before = discrete_cost(smodel, target.cost)
            moves = fit_budget_(smodel, target)
            after = discrete_cost(smodel, target.cost)
            self.budget = {
                "target": target.text,
                "cost": target.cost,
                "value": target.value,
                "cost_after_search": before,
                "cost_final": after,
                "met": after <= target.value,
                "greedy_moves": moves,
                "final_strength": controller.strength,
            }
            note = "met by the search" if moves == 0 else f"met after {moves} greedy moves"
            if self.context.is_main:
                print(
                    f"budget {target.text}: {note} "
                    f"({target.cost} {after:.6g} <= {target.value:.6g})"
                )
            if ckpt is not None:  # the checkpoint holds the final architecture from now on
                ckpt["model"] = smodel.state_dict()
                ckpt["budget"] = json.dumps(self.budget)
                self._save(ckpt, "search")
        return smodel.eval()

    def finetune_phase(self, smodel: SearchModel) -> FrozenModel:
        """Phase 3: freeze the architecture and fine-tune; return the best validation epoch."""
        c = self.config.finetune
        frozen = smodel.freeze().to(self.context.device)
        optimizer = torch.optim.Adam(frozen.parameters(), c.lr, weight_decay=c.weight_decay)
        ckpt = self._checkpoint("finetune")
        state = self._restore(frozen, [optimizer], ckpt)
        if ckpt is None:  # the frozen model before fine-tuning competes too
            state["best_metric"] = self._evaluate(frozen, self.data.val)
            state["best_model"] = _snapshot(frozen)
        net = distributed.data_parallel(frozen, self.context)

        def step(x: torch.Tensor, y: torch.Tensor, i: int, total: int) -> torch.Tensor:
            return self._task_loss(net(x), x, y)

        self._train_epochs(
            "finetune",
            frozen,
            [optimizer],
            c,
            step,
            state,
        )
        frozen.load_state_dict(state["best_model"])
        if ckpt is None and c.epochs == 0:  # later stages (sequential flow) read the final weights
            self._save(
                {
                    "epoch": 0,
                    "best_metric": state["best_metric"],
                    "best_model": state["best_model"],
                    "model": frozen.state_dict(),
                    "optimizers": [optimizer.state_dict()],
                    "timings": json.dumps(self.timings),
                    "extra": {},
                },
                "finetune",
            )
        return frozen.cpu().eval()

    def load_frozen(self) -> FrozenModel:
        """Rebuild the final (fine-tuned) model of a finished run from its checkpoints.

        Raises:
            ValueError: If the run has not finished.
        """
        if not (self.out / "result.json").exists():
            raise ValueError(f"{self.out} holds no finished run (no result.json)")
        # A local read: any one rank may call it, so no collective may run.
        context, self.context = self.context, distributed.Distributed()
        try:
            model = self.warm_up()
        finally:
            self.context = context
        smodel = self._convert(model)
        search = self._checkpoint("search")
        finetune = self._checkpoint("finetune")
        if search is None or finetune is None:
            raise ValueError(f"{self.out} lacks its search or fine-tuning checkpoint")
        smodel.load_state_dict(search["model"])
        frozen = smodel.eval().freeze()
        frozen.load_state_dict(finetune["best_model"])
        return frozen.eval()

    # -------------------------------------------------------------------------------- result
    def write_result(self, frozen: FrozenModel) -> dict[str, Any]:
        """Evaluate the final model and write ``result.json`` (rank 0); return the result."""
        result = None
        if self.context.is_main:
            result = self._result(frozen)
            _atomic_write_text(json.dumps(result, indent=2), self.out / "result.json")
        return dict(distributed.broadcast_object(result, self.context))

    def _result(self, frozen: FrozenModel) -> dict[str, Any]:
        info = self.data.info
        costs: dict[str, Any] = {}
        for key, name in REPORTED_COSTS.items():
            try:
                costs[key] = evaluate(frozen, name)
            except ValueError:  # the space has bits this hardware model does not define
                costs[key] = None
        costs["size_bytes"] = costs["size_bits"] / 8
        reference = {}
        for key, name in REPORTED_COSTS.items():
            try:
                reference[key] = frozen.uniform_cost(name, 8)
            except ValueError:  # no integer export (ops kept in float): no flash or RAM
                reference[key] = None
        result = {
            "zerobit_version": __version__,
            "name": self.out.name,
            "method": self.config.method,
            "config": self.config.to_dict(),
            "dataset": {
                "name": info.name,
                "input_shape": list(info.input_shape),
                "num_classes": info.num_classes,
                "preprocessing": info.preprocessing,
                "train_samples": len(self.data.train),  # type: ignore[arg-type]
                "val_samples": len(self.data.val),  # type: ignore[arg-type]
                "test_samples": len(self.data.test),  # type: ignore[arg-type]
            },
            "val_accuracy": evaluate_metric(frozen, self.data.val, self.metric),
            "test_accuracy": evaluate_metric(frozen, self.data.test, self.metric),
            "costs": costs,
            "costs_all_8bit": reference,
            "budget": self.budget,
            "architecture": frozen.architecture(),
            "timings": self.timings,
            "warmup_from": self._warmup_source(),
        }
        return result

    def _warmup_source(self) -> str | None:
        ckpt = self._checkpoint("warmup")
        return None if ckpt is None else ckpt.get("source")


def _warmup_checkpoint(source: Path) -> Path:
    for folder in (source, source / "warmup"):  # a run directory, or a sweep/baselines folder
        if (folder / "config.json").exists() and (folder / "checkpoints" / "warmup.pt").exists():
            return folder
    raise ValueError(
        f"{source} holds no float warm-up: give a run directory (config.json and "
        "checkpoints/warmup.pt) or a sweep or baselines folder (with warmup/)"
    )


def reuse_warmup(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: RunConfig,
    write: bool = True,
) -> Path:
    """Start the run directory ``out`` from the finished float warm-up of ``source``.

    ``source`` is a run directory or a sweep or baselines folder (its shared ``warmup/``). Its
    configuration must agree with ``config`` on every field that shapes the warm-up
    (:data:`WARMUP_FIELDS`: data, model, seed and warm-up phase), and its warm-up must be
    finished; the search space, cost, budget and the later phases may differ, which is what
    makes comparing them from one warm-up possible. The checkpoint is copied whole (written
    under a temporary name, then renamed) with its origin recorded, which the run's
    ``result.json`` reports as ``warmup_from``; its ``timings`` keep the original warm-up's
    seconds. With ``write=False`` the source is only checked.

    Returns:
        The path of the copied checkpoint, ``out/checkpoints/warmup.pt``.

    Raises:
        ValueError: If ``source`` holds no warm-up, one trained differently, or an
            unfinished one.
    """
    folder = _warmup_checkpoint(Path(source))
    stored = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
    differ = [name for name in WARMUP_FIELDS if getattr(stored, name) != getattr(config, name)]
    if differ:
        shown = ", ".join(
            f"{name} {getattr(stored, name)!r} there, {getattr(config, name)!r} here"
            for name in differ
        )
        raise ValueError(f"the warm-up in {folder} was trained differently: {shown}")
    ckpt = torch.load(folder / "checkpoints" / "warmup.pt", map_location="cpu", weights_only=True)
    phase = stored.warmup
    stopped = phase.patience is not None and ckpt.get("stale", 0) >= phase.patience
    if ckpt["epoch"] < phase.epochs and not stopped:
        raise ValueError(
            f"the warm-up in {folder} stopped at epoch {ckpt['epoch']} of {phase.epochs}; "
            "finish it first (resume that run or sweep)"
        )
    ckpt.setdefault("source", str(folder.resolve()))  # a copy of a copy names the original
    target = Path(out) / "checkpoints" / "warmup.pt"
    if write:
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(ckpt, target)
    return target


def _check_reachable(smodel: SearchModel, target: Target) -> None:
    smallest = minimum_cost(smodel, target.cost)
    if target.value < smallest:
        per_byte = BYTE_TARGETS.get(target.cost)
        shown = f"{smallest:.6g}" if per_byte is None else f"{smallest / per_byte:.0f} bytes"
        raise ValueError(
            f"target {target.text} is below the smallest model this space allows ({shown}: "
            "one channel per prunable group, every choice at its lowest bit-width); raise the "
            "target or widen the space"
        )


def run(
    config: RunConfig,
    out: str | os.PathLike[str],
    resume: bool = False,
    warmup_from: str | os.PathLike[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run the whole pipeline into ``out`` and return the result (see :class:`Run`)."""
    return Run(config, out, **options).run(resume=resume, warmup_from=warmup_from)


def with_overrides(config: RunConfig, **changes: Any) -> RunConfig:
    """Return ``config`` with fields replaced (phase fields accept dicts)."""
    return replace(config, **changes)


__all__ = ["Run", "RunConfig", "reuse_warmup", "run", "strength_at", "with_overrides"]

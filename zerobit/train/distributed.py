# SPDX-License-Identifier: Apache-2.0
# Data-parallel search under torchrun: process group, device, DDP, BatchNorm sync, data sampler.
"""One search on several processes with DistributedDataParallel.

``torchrun --nproc_per_node=N -m zerobit search ...`` starts N processes; :func:`setup` (called by
:class:`zerobit.train.run.Run`) joins them into one process group: ``nccl`` with one GPU per
process when CUDA is available, ``gloo`` on the CPU otherwise (``ZEROBIT_BACKEND=gloo|nccl``
overrides). A run with the same seed and the same global batch then follows the single-process
run step for step:

- a ``DistributedSampler`` shuffles the training set with the same per-epoch seed in every
  process and gives rank ``r`` the positions ``r, r + N, ...`` of the permutation, so the N
  per-rank batches of step ``i`` together are the single process's batch ``i`` (exactly so when
  the global batch size divides the training set);
- DDP averages the gradients of every trained parameter, the weights as well as the
  architecture logits and the activation clips, so every rank takes the same optimizer step;
- BatchNorm (float warm-up only: the search folds it) normalizes with the statistics of the
  global batch: :class:`torch.nn.SyncBatchNorm` on GPUs, :class:`GlobalBatchNorm` on the CPU
  (``SyncBatchNorm`` runs only on accelerators); DDP also broadcasts rank 0's buffers;
- the temperature and strength schedules are functions of the global step, the Gumbel noise is
  drawn from a generator seeded by (seed, step), and the budget controller runs on rank 0 and
  broadcasts its strength;
- rank 0 validates and broadcasts the metric, so early stopping and model selection agree, and
  only rank 0 writes files.
"""

from __future__ import annotations

import atexit
import gc
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

#: Environment variable that picks the process-group backend ("gloo" or "nccl").
BACKEND_VARIABLE = "ZEROBIT_BACKEND"
#: Variables torchrun sets in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in a data-parallel job (rank 0 of 1 when alone).

    Attributes:
        rank: This process's rank.
        world_size: Number of processes.
        device: Where this process trains: ``cuda:<local rank>`` under nccl, else the CPU.
        enabled: Whether a process group is in use (collectives are then issued, even alone).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes files."""
        return self.rank == 0


#: Whether :func:`setup` initialized the default process group (not a caller of the Python API).
_owned = False


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (its environment names a rank and a master)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def setup(backend: str | None = None) -> Distributed:
    """Join the data-parallel job of this process, if any.

    Uses the default process group if the caller initialized one; otherwise, under torchrun,
    initializes it (once per process) with ``backend``, ``$ZEROBIT_BACKEND``, or nccl when CUDA is
    available and gloo when not. A plain process is rank 0 of 1 on the CPU.

    Raises:
        ValueError: For an unknown backend, or nccl without a GPU for this process.
    """
    if not dist.is_available():
        return Distributed()
    if not dist.is_initialized():
        if not launched_by_torchrun():
            return Distributed()
        name = backend or os.environ.get(BACKEND_VARIABLE) or _default_backend()
        if name not in BACKENDS:
            raise ValueError(f"unknown process-group backend {name!r}; use one of {BACKENDS}")
        local_rank = int(os.environ["LOCAL_RANK"])
        if name == "nccl":
            if local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"nccl needs one GPU per process: local rank {local_rank}, "
                    f"{torch.cuda.device_count()} GPUs; start fewer processes or use gloo"
                )
            torch.cuda.set_device(local_rank)
        dist.init_process_group(name)
        global _owned
        _owned = True
        atexit.register(_destroy)
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    return Distributed(dist.get_rank(), dist.get_world_size(), device, enabled=True)


def shutdown() -> None:
    """Leave the data-parallel job at the end of a command that succeeded on this rank.

    Waits for every rank, then destroys the process group that :func:`setup` initialized, while the
    interpreter is fully alive: a rank that tears its group down while another still completes a
    collective, or gloo's worker threads destroyed during interpreter finalization, can abort the
    process after the work is done. Collective, so call it on every rank or on none (a rank that
    failed leaves the group to the exit handler instead). A group the caller initialized, and a
    plain process, are left alone.
    """
    global _owned
    if _owned and dist.is_initialized():
        dist.barrier()
        _drain()
        dist.destroy_process_group()
        gc.collect()
        _drain()
    _owned = False


#: Seconds :func:`shutdown` holds no GIL, twice, so that gloo's threads can finish their work.
DRAIN_S = 0.05


def _drain() -> None:
    # A gloo worker thread releases each finished collective's work item (and with it the
    # tensors it held, whose Python objects it must decref under the GIL) just after the
    # collective completes. If the interpreter begins to finalize before that thread has had
    # the GIL, the thread is killed while acquiring it and the process aborts ("terminate called
    # without an active exception", in 4 of 116 two-process test runs; in a core dump:
    # ProcessGroupGloo::AsyncWork::~AsyncWork -> decref -> take_gil -> PyThread_exit_thread).
    # Sleeping releases the GIL at once, so the workers finish while the interpreter is alive.
    time.sleep(DRAIN_S)


def _default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: Distributed) -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint the others read)."""
    if context.enabled:
        dist.barrier()


def broadcast_float(value: float, context: Distributed) -> float:
    """Return rank 0's ``value`` on every rank (float64, so no precision is lost)."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.broadcast(tensor, 0)
    return float(tensor.item())


def broadcast_object(value: Any, context: Distributed) -> Any:
    """Return rank 0's picklable ``value`` on every rank."""
    if not context.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, 0, device=context.device)
    return holder[0]


def mean_over_ranks(value: float, context: Distributed) -> float:
    """Average a per-rank number over the ranks (e.g. the training loss of an epoch)."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


def rank_batch_size(batch_size: int, context: Distributed) -> int:
    """Per-rank batch size for the global ``batch_size``.

    Raises:
        ValueError: If the processes cannot share the global batch equally.
    """
    if batch_size % context.world_size:
        raise ValueError(
            f"the batch size {batch_size} is the global batch of {context.world_size} processes "
            "and must be a multiple of their number"
        )
    return batch_size // context.world_size


def train_sampler(dataset: Dataset, context: Distributed, seed: int) -> DistributedSampler:
    """Shuffling sampler that gives this rank its share of every global batch.

    Call ``set_epoch(epoch)`` before each epoch: the permutation is seeded by ``seed + epoch``,
    the same in every process.
    """
    return DistributedSampler(
        dataset,  # type: ignore[arg-type]
        num_replicas=context.world_size,
        rank=context.rank,
        shuffle=True,
        seed=seed,
    )


def data_parallel(model: nn.Module, context: Distributed) -> nn.Module:
    """Wrap ``model`` (already on ``context.device``) in DDP; return it unchanged when alone.

    DDP broadcasts rank 0's parameters and buffers at construction, averages the gradients of
    every parameter that requires one during ``backward``, and broadcasts rank 0's buffers
    before each forward.
    """
    if not context.enabled:
        return model
    if context.device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[context.device.index])
    return DistributedDataParallel(model)


def synchronize_batchnorm_(model: nn.Module, context: Distributed) -> dict[str, type[nn.Module]]:
    """Make every BatchNorm of ``model`` normalize with global-batch statistics, in place.

    GPUs get :class:`torch.nn.SyncBatchNorm`, the CPU :class:`GlobalBatchNorm`; the state dict
    keys are unchanged, so checkpoints are those of the plain model. Nothing changes when alone.

    Returns:
        The original class of each replaced module by qualified name, for
        :func:`restore_batchnorm_`.
    """
    if not context.enabled:
        return {}
    originals: dict[str, type[nn.Module]] = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, _BatchNorm) or isinstance(module, nn.SyncBatchNorm):
            continue
        if context.device.type == "cpu":
            replacement: nn.Module = GlobalBatchNorm.like(module)
        else:
            replacement = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        originals[name] = type(module)
        _set_submodule(model, name, replacement)
    return originals


def restore_batchnorm_(model: nn.Module, originals: dict[str, type[nn.Module]]) -> None:
    """Put back the BatchNorm classes :func:`synchronize_batchnorm_` replaced, state kept."""
    for name, cls in originals.items():
        module: Any = model.get_submodule(name)
        plain = cls(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        plain.load_state_dict(module.state_dict())
        plain.to(_device_of(module))
        plain.train(module.training)
        _set_submodule(model, name, plain)


def _device_of(module: nn.Module) -> torch.device:
    state = module.state_dict().values()
    tensor = next((v for v in state if isinstance(v, torch.Tensor)), None)
    return torch.device("cpu") if tensor is None else tensor.device


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the output gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = grad.clone()
        dist.all_reduce(out)
        return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of ``tensor`` over every rank of the default process group."""
    return _AllReduceSum.apply(tensor)  # type: ignore[no-any-return]


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the global batch of every rank (CPU).

    In training mode the per-channel mean and (biased) variance are summed over the ranks in
    two passes, differentiably, so the forward and the gradients equal those of one process
    on the whole batch; the running statistics are updated as plain BatchNorm would on that
    batch (unbiased variance). In eval mode, or without a process group, it is plain BatchNorm.
    Its state dict is that of ``nn.BatchNorm1d/2d/3d``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    @classmethod
    def like(cls, module: _BatchNorm) -> GlobalBatchNorm:
        """Return a GlobalBatchNorm with ``module``'s settings and state (same device)."""
        new = cls(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        new.load_state_dict(module.state_dict())
        new.to(_device_of(module))
        return new.train(module.training)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalize ``input`` (N, C, ...) over N and the trailing dimensions, every rank's N."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        count = torch.tensor([input.numel() // input.shape[1]], dtype=input.dtype)
        first = all_reduce_sum(torch.cat([input.sum(dims), count.to(input.device)]))
        total = first[-1]
        mean = first[:-1] / total
        shape = [1, -1] + [1] * (input.dim() - 2)
        centred = input - mean.reshape(shape)
        var = all_reduce_sum((centred * centred).sum(dims)) / total
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
            else:
                factor = self.momentum
            with torch.no_grad():
                unbiased = var.detach() * (total / (total - 1).clamp(min=1))
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(unbiased, factor)
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


__all__ = [
    "BACKEND_VARIABLE",
    "Distributed",
    "GlobalBatchNorm",
    "all_reduce_sum",
    "barrier",
    "broadcast_float",
    "broadcast_object",
    "data_parallel",
    "launched_by_torchrun",
    "mean_over_ranks",
    "rank_batch_size",
    "restore_batchnorm_",
    "setup",
    "shutdown",
    "synchronize_batchnorm_",
    "train_sampler",
]

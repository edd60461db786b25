"""Data-parallel training under ``torchrun``: one process per device, all pairs over the global batch.

``torchrun --nproc_per_node N -m agemetric run ...`` starts N processes; each trains the same
model (`DistributedDataParallel`, gloo on CPU, nccl on CUDA) on its share
of every batch. The paper compares *every* pair of a batch, so the embeddings, ages and genders are
all-gathered before mining: every process sees the global batch, with gradients flowing back only
through its own rows. Each process then computes the same global loss ``L``, and its backward
reaches the backbone only through its own rows, giving one process's part of ``dL/dθ``; DDP's
gradient *mean* over N processes would be ``1/N`` of the sum a single process holding the whole
batch gets. `gather()` therefore multiplies the gradient of the local rows by N on the way back
(parameters after the gather, e.g. a comparator head inside a loss, already get the whole ``dL/dθ``
on every process and are left alone): loss and gradients equal a single-process step on the same
global batch (``tests/test_distributed.py`` checks this with 2 processes).

``batch_size`` stays the *global* batch: the same config gives the same pairs on one process or N.
What differs from one process: BatchNorm statistics are per process on CPU (``SyncBatchNorm``
needs a GPU), and augmentation draws from a per-process random stream.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from agemetric.errors import AgemetricError


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` of ``size`` processes (``size == 1``: not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The process that writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def share(self, index: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """This process's contiguous share of a global batch of indices, and every share's size.

        Contiguous shares gathered in rank order give back the batch in its original order.
        """
        chunks = index.tensor_split(self.size)
        return chunks[self.rank], [c.numel() for c in chunks]


def init_from_env(device: str = "auto") -> World:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``...).

    Without ``WORLD_SIZE`` (or with 1) nothing is initialised: one process. Backend: nccl when
    training runs on CUDA (see `resolve_device()`), gloo otherwise; ``AGEMETRIC_DIST_BACKEND``
    overrides.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        on_gpu = resolve_device(device, World(0, size, local_rank)).type == "cuda"
        if on_gpu:
            torch.cuda.set_device(local_rank)
        default = "nccl" if on_gpu else "gloo"
        dist.init_process_group(backend=os.environ.get("AGEMETRIC_DIST_BACKEND", default))
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one), from torchrun's ``RANK``, without joining
    the process group (`init_from_env()` joins it)."""
    return int(os.environ.get("RANK", "0")) == 0


def resolve_device(name: str, world: World) -> torch.device:
    """``config.training.device`` as a device: ``auto`` is CUDA when available; under torchrun a plain
    ``cuda`` (or ``auto``) becomes this process's GPU, ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and world.active:
        name = f"cuda:{world.local_rank}"
    return torch.device(name)


def require_device(device: torch.device) -> torch.device:
    """``device``, checked to exist on this machine (a one-line error for a GPU that is not there)."""
    if device.type == "cuda":
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= found:
            raise AgemetricError(f"device {device}: this machine has {found} CUDA GPU(s); use device 'cpu' or 'auto'")
    return device


def shutdown(wait: bool = True) -> None:
    """Leave the process group, if one was joined.

    With ``wait`` every process waits for the others first: a process that tears its connections
    down while another still uses them (rank 0 saving the results, say) can abort in gloo's
    threads. Leave on an error with ``wait=False``: the others may never arrive.
    """
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def gather(x: torch.Tensor, sizes: list[int], world: World) -> torch.Tensor:
    """Concatenate every process's rows of ``x`` in rank order; only the local rows keep gradients.

    Args:
        x: ``(sizes[rank], ...)`` this process's rows.
        sizes: the row count of every process (from `World.share()`).
        world: this process.

    Returns:
        ``(sum(sizes), ...)``: the global batch; other processes' rows are constants.
    """
    if not world.active:
        return x
    longest = max(sizes)
    padded = x.detach()
    if x.shape[0] < longest:  # all_gather needs equal shapes
        padded = torch.cat([padded, padded.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded.contiguous())
    parts = [p[:n] for p, n in zip(parts, sizes, strict=True)]
    parts[world.rank] = _ScaleGradient.apply(x, float(world.size))  # local rows keep their history
    return torch.cat(parts)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient times ``factor`` backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def any_rank(flags: list[bool], world: World) -> list[bool]:
    """Each flag, true on every process when it is true on any (e.g. the time budget ran out on one).

    All flags travel in one all-reduce, so a training step that asks several questions pays once.
    """
    if not world.active:
        return list(flags)
    t = torch.tensor([int(f) for f in flags])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def wrap(module: torch.nn.Module, world: World) -> torch.nn.Module:
    """``module`` (a training step, `agemetric.training.TrainStep`), inside DDP when ``world`` is active.

    DDP broadcasts rank 0's parameters and buffers at construction, so every process starts equal.
    """
    if not world.active:
        return module
    device = next(module.parameters()).device
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)

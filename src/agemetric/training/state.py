"""What training carries between steps and across a resume: the epoch under way, the history,
the random streams, and the checkpoint that holds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from agemetric import distributed
from agemetric._io import load_torch
from agemetric.errors import AgemetricError

#: The version of the training checkpoint's layout (``checkpoint.pt`` in a run folder).
TRAINING_STATE_FORMAT = 1


def batches(n: int, batch_size: int, generator: torch.Generator, smallest: int = 2) -> list[torch.Tensor]:
    """A shuffled epoch of index batches; a last batch of fewer than ``smallest`` images is dropped
    (one image has no pairs; in data-parallel training every process needs two)."""
    order = torch.randperm(n, generator=generator)  # (N,)
    chunks = list(order.split(batch_size))
    return [c for c in chunks if c.numel() >= smallest]


@dataclass
class EpochProgress:
    """One epoch under way: its batches, the next step, and what the finished steps added up to."""

    batches: list[torch.Tensor]
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    step_losses: list[float] = field(default_factory=list)
    seen: int = 0
    seconds: float = 0.0  # of training in this epoch before an interruption

    def record(self, parts: dict[str, torch.Tensor], images: int) -> None:
        """Add one finished step's loss parts and image count."""
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value.detach())
        self.step_losses.append(float(parts["loss"].detach()))
        self.seen += images
        self.step += 1

    def row(self, epoch: int, seconds: float) -> dict:
        """The epoch's line of the history."""
        steps = max(len(self.step_losses), 1)
        return {
            "epoch": epoch,
            **{key: value / steps for key, value in self.sums.items()},
            "images": self.seen,
            "seconds": seconds,
            "images_per_second": self.seen / max(seconds, 1e-9),
            "step_losses": self.step_losses,
        }


@dataclass
class TrainState:
    """Where training stands between two steps: what a checkpoint holds besides the tensors."""

    epoch: int = 1  # the epoch to run (or finish) next
    partial: EpochProgress | None = None  # that epoch, when it was interrupted
    history: list[dict] = field(default_factory=list)
    elapsed: float = 0.0  # seconds of training so far


class RandomStreams:
    """The batch order (the same on every process) and the augmentation draws (one process draws
    them from the batch-order stream; N processes each from their own), saved and restored on
    resume."""

    def __init__(self, seed: int, world: distributed.World):
        self.batches = torch.Generator().manual_seed(seed)
        self.augment = torch.Generator().manual_seed(seed + 7919 * world.rank) if world.active else self.batches

    def state(self) -> dict:
        return {
            "batches": self.batches.get_state(),
            "augment": self.augment.get_state(),
            "torch": torch.get_rng_state(),
        }

    def restore(self, state: dict) -> None:
        self.batches.set_state(state["batches"])
        self.augment.set_state(state["augment"])
        torch.set_rng_state(state["torch"])


def load_checkpoint(path: Path) -> dict:
    """Read a training checkpoint written by `train()` (one-line errors for a bad file)."""
    state = load_torch(path, "--resume")
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        raise AgemetricError(f"--resume: {str(path)!r} is not an agemetric training checkpoint")
    return state

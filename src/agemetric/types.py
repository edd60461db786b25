"""The tensors that cross agemetric's interfaces.

Small, typed containers so that a miner's output cannot be handed to a loss that
expects something else, and so that every shape is written down once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


class Embeddings(NamedTuple):
    """What a backbone returns for a batch of B images.

    Attributes:
        age: ``(B, N_a)`` float, the age embedding (not normalised).
        gender: ``(B, N_g)`` float, the gender embedding, or ``None`` when the backbone
            has no gender head.
    """

    age: torch.Tensor
    gender: torch.Tensor | None = None


@dataclass(frozen=True)
class Pairs:
    """Index pairs into a batch: pair ``p`` compares rows ``first[p]`` and ``second[p]``.

    Attributes:
        first: ``(P,)`` int64.
        second: ``(P,)`` int64.
    """

    first: torch.Tensor
    second: torch.Tensor

    def __len__(self) -> int:
        return int(self.first.numel())


@dataclass(frozen=True)
class Triplets:
    """Index triplets into a batch: ``anchor`` is closer in age to ``positive`` than to ``negative``.

    Attributes:
        anchor: ``(T,)`` int64.
        positive: ``(T,)`` int64.
        negative: ``(T,)`` int64.
    """

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor

    def __len__(self) -> int:
        return int(self.anchor.numel())


@dataclass(frozen=True)
class Samples:
    """Single items of a batch, for losses that score each image on its own (regression, DEX).

    Attributes:
        index: ``(S,)`` int64.
    """

    index: torch.Tensor

    def __len__(self) -> int:
        return int(self.index.numel())


Indices = Pairs | Triplets | Samples
"""What a miner hands to a loss."""

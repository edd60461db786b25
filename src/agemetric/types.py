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

    Examples:
        >>> import torch
        >>> from agemetric.backbones import SmallCNN
        >>> out = SmallCNN(embedding_dim=16, gender_dim=4, width=4)(torch.rand(2, 3, 32, 32))
        >>> out.age.shape, out.gender.shape
        (torch.Size([2, 16]), torch.Size([2, 4]))
    """

    age: torch.Tensor
    gender: torch.Tensor | None = None


@dataclass(frozen=True)
class Pairs:
    """Index pairs into a batch: pair ``p`` compares rows ``first[p]`` and ``second[p]``.

    Attributes:
        first: ``(P,)`` int64.
        second: ``(P,)`` int64.

    Examples:
        >>> import torch
        >>> from agemetric.miners import AllPairsMiner
        >>> pairs = AllPairsMiner()(torch.randn(3, 8), torch.tensor([20.0, 22.0, 40.0]))
        >>> len(pairs), pairs.first.tolist(), pairs.second.tolist()
        (3, [0, 0, 1], [1, 2, 2])
    """

    first: torch.Tensor
    second: torch.Tensor

    def __len__(self) -> int:
        return int(self.first.numel())

    def __iter__(self):
        """Not a pytorch-metric-learning ``indices_tuple``: a PML loss given one says how to convert it."""
        raise TypeError(
            "Pairs is not a pytorch-metric-learning indices_tuple (its pairs are not split into positives and "
            "negatives): pass agemetric.pml.to_indices_tuple(pairs, ages, margin) to a PML loss"
        )


@dataclass(frozen=True)
class Triplets:
    """Index triplets into a batch: ``anchor`` is closer in age to ``positive`` than to ``negative``.

    Attributes:
        anchor: ``(T,)`` int64.
        positive: ``(T,)`` int64.
        negative: ``(T,)`` int64.

    Examples:
        >>> import torch
        >>> from agemetric.types import Triplets
        >>> t = Triplets(torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))  # 0 is nearer 1's age
        >>> len(t)
        1
    """

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor

    def __len__(self) -> int:
        return int(self.anchor.numel())

    def __iter__(self):
        """Not a pytorch-metric-learning ``indices_tuple``: a PML loss given one says how to convert it."""
        raise TypeError(
            "Triplets is not a pytorch-metric-learning indices_tuple: pass a PML loss "
            "agemetric.pml.to_indices_tuple(triplets, ages, margin), or (t.anchor, t.positive, t.negative)"
        )


@dataclass(frozen=True)
class Samples:
    """Single items of a batch, for losses that score each image on its own (regression, DEX).

    Attributes:
        index: ``(S,)`` int64.

    Examples:
        >>> import torch
        >>> from agemetric.miners import BatchMiner
        >>> BatchMiner()(torch.randn(4, 101), torch.tensor([3.0, 30.0, 50.0, 70.0])).index.tolist()
        [0, 1, 2, 3]
    """

    index: torch.Tensor

    def __len__(self) -> int:
        return int(self.index.numel())

    def __iter__(self):
        """Not a pytorch-metric-learning ``indices_tuple``: a PML loss given one says what to do."""
        raise TypeError(
            "Samples is not a pytorch-metric-learning indices_tuple (PML's losses compare pairs or triplets; "
            "Samples are for agemetric's per-image losses): call the PML loss without indices, or with a "
            "pair miner's output such as agemetric.pml.AgeToleranceMiner's"
        )


Indices = Pairs | Triplets | Samples
"""What a miner hands to a loss."""


_T = torch.Tensor
IndicesTuple = tuple[_T, _T, _T] | tuple[_T, _T, _T, _T]
"""pytorch-metric-learning's ``indices_tuple``: ``(anchor, positive, negative)`` or ``(a1, p, a2, n)``."""


def from_indices_tuple(indices_tuple: IndicesTuple | list) -> Pairs | Triplets:
    """PML's ``indices_tuple`` (from any PML miner) as agemetric ``Triplets`` or ``Pairs``.

    ``(anchor, positive, negative)`` becomes ``Triplets``; ``(a1, p, a2, n)`` becomes the
    ``Pairs`` ``(a1, p)`` followed by ``(a2, n)``: which of them are similar is then decided by
    the age margin of the loss that takes them, not by PML's label equality.

    Raises:
        ValueError: a tuple of another length, or of tensors that are not 1-d.

    Examples:
        >>> pairs = from_indices_tuple((torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2])))
        >>> pairs.first.tolist(), pairs.second.tolist()
        ([0, 0], [1, 2])
    """
    parts = [torch.as_tensor(t).long() for t in indices_tuple]
    if len(parts) not in (3, 4) or any(t.ndim != 1 for t in parts):
        shapes = [tuple(t.shape) for t in parts]
        raise ValueError(f"a PML indices_tuple is 3 or 4 one-dimensional tensors, got {len(parts)} of shapes {shapes}")
    if len(parts) == 3:
        return Triplets(*parts)
    a1, p, a2, n = parts
    return Pairs(torch.cat([a1, a2]), torch.cat([p, n]))

"""How an epoch draws its training images: each once in a shuffled order, or drawn with replacement
so that rare ages (and groups) are seen more often (the ``balance`` setting)."""

from __future__ import annotations

from collections import Counter

import torch

from agemetric.data.arrays import FaceArrays

#: the width of the age bands ``balance`` evens out, in years
AGE_BAND = 5.0


def batches(
    n: int, batch_size: int, generator: torch.Generator, smallest: int = 2, weights: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """An epoch of index batches: a shuffle of the ``n`` images, or with ``weights`` (``(n,)``, not
    all zero) ``n`` images drawn with replacement in proportion to them. A last batch of fewer than
    ``smallest`` images is dropped (one image has no pairs; in data-parallel training every process
    needs two).

    Examples:
        >>> [b.tolist() for b in batches(5, 2, torch.Generator().manual_seed(0))]  # image 2 left alone
        [[4, 0], [1, 3]]
    """
    if weights is None:
        order = torch.randperm(n, generator=generator)  # (N,)
    else:
        order = torch.multinomial(weights, n, replacement=True, generator=generator)  # (N,)
    chunks = list(order.split(batch_size))
    return [c for c in chunks if c.numel() >= smallest]


def balance_weights(data: FaceArrays, balance: str) -> torch.Tensor | None:
    """Each training image's chance to be drawn under ``balance`` (`agemetric.settings.TrainingSettings`):
    ``None`` for ``"off"``, else one over the square root of the number of images in its cell (its
    5-year age band, and for ``"ages+groups"`` each of its groups where the dataset labels them;
    unknown is a group of its own). The square root evens out without drawing the few images of
    a rare cell over and over.

    Examples:
        >>> data = FaceArrays(torch.zeros(5, 3, 8, 8, dtype=torch.uint8), torch.tensor([20., 21, 22, 23, 60]),
        ...                   torch.full((5,), -1), keys=list("abcde"))
        >>> balance_weights(data, "ages")
        tensor([0.5000, 0.5000, 0.5000, 0.5000, 1.0000])
    """
    if balance == "off":
        return None
    bands = (data.ages // AGE_BAND).long().tolist()
    columns = [bands]
    if balance == "ages+groups" and data.groups:
        columns += list(data.groups.values())
    cells = list(zip(*columns, strict=True))
    counts = Counter(cells)
    return torch.tensor([counts[cell] ** -0.5 for cell in cells])

"""Train/test split protocols."""

from __future__ import annotations

import torch


def random_split(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's protocol: test images drawn at random (one person may sit on both sides).

    Args:
        n: number of images.
        test_fraction: share of images in the test split, in (0, 1).
        seed: the split's seed.

    Returns:
        ``(train (N_train,), test (N_test,))`` sorted int64 indices; both non-empty.

    Example:
        >>> train, test = random_split(10, 0.2, seed=0)
        >>> len(train), len(test), sorted(train.tolist() + test.tolist()) == list(range(10))
        (8, 2, True)
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if n < 2:
        raise ValueError(f"need at least 2 images to split, got {n}")
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))  # (N,)
    return order[n_test:].sort().values, order[:n_test].sort().values

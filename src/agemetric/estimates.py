"""From the nearest gallery faces' ages to an estimate: the (weighted) mean, the neighbours'
spread, the share under a threshold, the conformal interval. numpy only, so a bundle and the
adaptation share it.

Example:
    >>> ages = np.array([[20.0, 30.0], [40.0, 40.0]])  # (M = 2 queries, k = 2 neighbours)
    >>> mean_age(ages), age_spread(ages), share_under(ages, 25)
    (array([25., 40.]), array([5., 0.]), array([0.5, 0. ]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from agemetric._records import AGE_RANGE


@dataclass
class Estimates:
    """Ages with how sure they are, for ``N`` faces: what `AgeEstimator.estimate()` and
    `Bundle.estimate()` return.

    Attributes:
        age: ``(N,)`` float32, the estimates in years.
        spread: ``(N,)`` float32, the standard deviation of the nearest gallery faces' ages.
        low / high: ``(N,)`` float32, the calibrated interval's ends, or ``None`` (a model
            without intervals).
        under: ``(N,)`` float32, the probability of being under the age asked about, or ``None``.

    Examples:
        >>> e = Estimates(np.array([34.0, 61.0]), np.array([4.0, 9.0]))
        >>> e
        Estimates(age=[34.0, 61.0], spread=[4.0, 9.0])
        >>> e.row(1)
        {'age': 61.0, 'spread': 9.0, 'low': None, 'high': None, 'under': None}
    """

    age: np.ndarray
    spread: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    under: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("age", "spread", "low", "high", "under"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(value, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.age)

    def row(self, i: int) -> dict[str, float | None]:
        """Face ``i``'s values as plain floats (``None`` where the model gives none)."""
        names = ("age", "spread", "low", "high", "under")
        return {n: None if getattr(self, n) is None else float(getattr(self, n)[i]) for n in names}

    def __repr__(self) -> str:
        given = {n: getattr(self, n) for n in ("age", "spread", "low", "high", "under")}
        shown = [f"{n}={np.round(v, 2).tolist()}" for n, v in given.items() if v is not None]
        return f"Estimates({', '.join(shown)})"


def _weights(ages: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Weights in the ages' precision (float32 ages: float32 sums, as the torch estimator makes
    them, so that an estimate falls on the same side of an interval group's edge)."""
    return np.ones_like(ages) if weights is None else np.asarray(weights, ages.dtype)


def mean_age(ages: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``(M,)``: each row's mean of ``(M, k)`` neighbour ages, weighted by ``(M, k)`` ``weights``
    (the faces each neighbour stands for) when given."""
    w = _weights(ages, weights)
    return (ages * w).sum(axis=1) / w.sum(axis=1)


def age_spread(ages: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``(M,)``: how much each row's neighbours disagree, the (weighted) standard deviation of
    their ages (0 for ``k = 1``)."""
    w = _weights(ages, weights)
    mean = (ages * w).sum(axis=1, keepdims=True) / w.sum(axis=1, keepdims=True)  # (M, 1)
    return np.sqrt(((ages - mean) ** 2 * w).sum(axis=1) / w.sum(axis=1))


def share_under(ages: np.ndarray, threshold: float, weights: np.ndarray | None = None) -> np.ndarray:
    """``(M,)``: the probability of being younger than ``threshold``, the (weighted) share of
    the neighbours that are."""
    w = _weights(ages, weights)
    return ((ages < threshold) * w).sum(axis=1) / w.sum(axis=1)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) level)``-th smallest of ``n`` scores
    (``inf`` when that rank exceeds ``n``: too few calibration faces for the level).

    Examples:
        >>> conformal_quantile(np.arange(1.0, 20.0), 0.9)  # n = 19: the 18th smallest
        18.0
    """
    rank = math.ceil((len(scores) + 1) * level)
    return math.inf if rank > len(scores) else float(np.sort(np.asarray(scores))[rank - 1])


def interval_scale(spread: np.ndarray, intervals: dict) -> np.ndarray:
    """``(M,)``: what the quantile is multiplied by for each face (the neighbours' spread plus
    the offset, or 1 for constant-width intervals)."""
    return spread + intervals["offset"] if intervals["normalised"] else np.ones_like(spread)


def group_of(estimate: np.ndarray, edges) -> np.ndarray:
    """``(M,)``: the group of each estimate, ``i`` for ``edges[i - 1] < estimate <= edges[i]``."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(estimate, np.float64), side="left")


def interval_quantile(estimate: np.ndarray, intervals: dict) -> np.ndarray:
    """``(M,)``: the calibrated quantile that applies to each estimate (its group's, when the
    intervals have groups of estimates)."""
    if intervals.get("edges"):
        return np.asarray(intervals["quantiles"], dtype=np.float64)[group_of(estimate, intervals["edges"])]
    return np.full(len(estimate), float(intervals["quantile"]))


def interval(estimate: np.ndarray, spread: np.ndarray, intervals: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(low (M,), high (M,))``: the calibrated interval of each estimate, clipped to 0-150
    years. ``intervals``: the fields of `agemetric.intervals.ConformalIntervals`."""
    half = interval_quantile(estimate, intervals) * interval_scale(spread, intervals)
    return np.clip(estimate - half, *AGE_RANGE), np.clip(estimate + half, *AGE_RANGE)

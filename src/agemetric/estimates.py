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

import numpy as np

from agemetric._records import AGE_RANGE


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


def interval(estimate: np.ndarray, spread: np.ndarray, intervals: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(low (M,), high (M,))``: the calibrated interval of each estimate (the quantile of its
    group of estimates, when the intervals have groups), clipped to 0-150 years. ``intervals``:
    the fields of `agemetric.intervals.ConformalIntervals`."""
    quantile = np.full(len(estimate), float(intervals["quantile"]))
    if intervals.get("edges"):  # group i holds the estimates in (edges[i - 1], edges[i]]
        quantile = np.asarray(intervals["quantiles"])[np.searchsorted(intervals["edges"], estimate, side="left")]
    half = quantile * interval_scale(spread, intervals)
    return np.clip(estimate - half, *AGE_RANGE), np.clip(estimate + half, *AGE_RANGE)

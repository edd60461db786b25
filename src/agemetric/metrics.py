"""Age-estimation metrics: MAE, the cumulative score CS(T), and MAE per age bucket."""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: The thresholds of the CS curve reported by default, in years.
CS_THRESHOLDS = tuple(range(11))


def mae(predicted: torch.Tensor, true: torch.Tensor) -> float:
    """Mean absolute error in years.

    Args:
        predicted: ``(N,)`` predicted ages.
        true: ``(N,)`` true ages.

    Examples:
        >>> mae(torch.tensor([10.0, 20.0]), torch.tensor([12.0, 20.0]))
        1.0
    """
    return float((predicted.double() - true.double()).abs().mean())


def cumulative_score(
    predicted: torch.Tensor, true: torch.Tensor, thresholds: Sequence[int] = CS_THRESHOLDS
) -> dict[int, float]:
    """CS(T): the percentage of images whose absolute error is at most T years.

    Args:
        predicted: ``(N,)`` predicted ages.
        true: ``(N,)`` true ages.
        thresholds: the T values.

    Returns:
        ``{T: percent}``.

    Examples:
        >>> cumulative_score(torch.tensor([10.0, 25.0]), torch.tensor([11.0, 20.0]), [0, 1, 5])
        {0: 0.0, 1: 50.0, 5: 100.0}
    """
    errors = (predicted.double() - true.double()).abs()  # (N,)
    return {int(t): 100.0 * float((errors <= t).double().mean()) for t in thresholds}


def mae_by_bucket(predicted: torch.Tensor, true: torch.Tensor, width: int = 10) -> dict[str, dict]:
    """MAE per age bucket of ``width`` years (by true age), with the bucket's size.

    Returns:
        ``{"0-9": {"mae": ..., "n": ...}, ...}`` for the non-empty buckets, in age order.

    Examples:
        >>> mae_by_bucket(torch.tensor([5.0, 15.0, 17.0]), torch.tensor([4.0, 12.0, 18.0]))
        {'0-9': {'mae': 1.0, 'n': 1}, '10-19': {'mae': 2.0, 'n': 2}}
    """
    errors = (predicted.double() - true.double()).abs()  # (N,)
    bucket = torch.div(true.float(), width, rounding_mode="floor").long()  # (N,)
    out = {}
    for b in torch.unique(bucket).tolist():
        mask = bucket == b
        lo = b * width
        out[f"{lo}-{lo + width - 1}"] = {"mae": float(errors[mask].mean()), "n": int(mask.sum())}
    return out


def summarise(predicted: torch.Tensor, true: torch.Tensor, train_ages: torch.Tensor) -> dict:
    """All the numbers a run reports, including the mean predictor on the same test split.

    The mean predictor answers every test image with the training set's mean age; a model
    that does not beat it by a wide margin has learnt nothing.

    Args:
        predicted: ``(N,)`` predicted ages.
        true: ``(N,)`` true ages.
        train_ages: ``(N_train,)`` the training set's ages (for the mean predictor).

    Returns:
        ``{"mae", "cs" (CS(T) for T = 0..10), "mae_by_age", "mean_predictor_mae", "n_test"}``.

    Examples:
        >>> s = summarise(torch.tensor([21.0, 40.0]), torch.tensor([20.0, 44.0]), train_ages=torch.tensor([30.0, 34.0]))
        >>> s["mae"], s["mean_predictor_mae"], s["n_test"], s["cs"][4]
        (2.5, 12.0, 2, 100.0)
    """
    baseline = torch.full_like(true.float(), float(train_ages.float().mean()))
    return {
        "mae": mae(predicted, true),
        "cs": cumulative_score(predicted, true),
        "mae_by_age": mae_by_bucket(predicted, true),
        "mean_predictor_mae": mae(baseline, true),
        "n_test": int(true.numel()),
    }

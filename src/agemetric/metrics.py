"""Age-estimation metrics: MAE, the cumulative score CS(T), and MAE per age bucket; the check
of a ``metrics.json`` read back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from agemetric._text import shortened
from agemetric.errors import AgemetricError

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
    if predicted.shape != true.shape:  # broadcasting would average over every pairing
        raise ValueError(
            f"predicted and true ages must have the same shape, got {tuple(predicted.shape)} and {tuple(true.shape)}"
        )
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


#: What reports read from ``metrics.json`` (`check_metrics()`): ``"number"`` (not a bool),
#: ``"count"`` (a whole number >= 0), ``"text"``, ``{key: spec}`` (a table; ``key?``: the key may
#: be missing), ``("each", spec)`` (a table whose every value is ``spec``), ``("list", spec)``,
#: ``("or null", spec)``; other fields are not looked at.
_CI = ("or null", ("list", "number"))
_CURVE_ROW = {
    "level": "number",
    **{f"{kind}_{value}?": "number" for kind in ("pooled", "constant") for value in ("coverage", "mean_width")},
}
METRICS_FIELDS: dict[str, Any] = {
    "mae": "number",
    "mean_predictor_mae": "number",
    "n_test": "count",
    "cs": ("each", "number"),
    "mae_by_age?": ("each", {"mae": "number", "n": "count"}),
    "dataset?": "text",
    "split?": {"protocol?": "text", "n_train?": "count"},
    "training_images_seen?": "count",
    "gender_accuracy_from_age_embedding?": "number",
    "gender_accuracy_from_gender_embedding?": "number",
    "intervals?": {
        "level": "number",
        "coverage": "number",
        "mean_width": "number",
        "curve?": ("list", _CURVE_ROW),
        "by_age?": ("each", {"n": "count", "coverage": "number", "mean_width": "number"}),
    },
    "age_thresholds?": ("each", {"false_accept": ("or null", "number"), "false_reject": ("or null", "number")}),
    "groups?": (
        "each",
        {
            "groups": ("each", {"n": "count", "mae": "number", "mae_ci": _CI, "cs5": "number", "cs5_ci": _CI}),
            "largest_gap?": ("or null", {"mae": "number", "between": ("list", "text")}),
        },
    ),
}
_EXPECTED = {"number": "a number", "count": "a whole number >= 0", "text": "text", "table": "a table", "list": "a list"}
#: the CS(T) values reports show
_CS_SHOWN = ("1", "3", "5", "10")


def check_metrics(metrics: Any, path: Path) -> dict:
    """``metrics`` (read from ``path``) when the fields reports read (`METRICS_FIELDS`) hold what
    `agemetric run` writes there; else a one-line error naming the file and the field.

    Examples:
        >>> check_metrics({"mae": "lots"}, Path("r/metrics.json"))
        Traceback (most recent call last):
        ...
        agemetric.errors.AgemetricError: r/metrics.json: field 'mae' must be a number, got 'lots'
    """
    if not isinstance(metrics, dict):
        raise AgemetricError(f"{path}: expected the metrics of a run (a JSON object), got {shortened(metrics)}")
    _check_field(metrics, METRICS_FIELDS, "", path)
    for t in metrics["cs"]:
        if not t.isdigit():
            raise AgemetricError(f"{path}: field 'cs' must have error tolerances in years as keys, got {shortened(t)}")
    missing = [t for t in _CS_SHOWN if t not in metrics["cs"]]
    if missing:
        raise AgemetricError(f"{path}: field 'cs' has no CS({missing[0]}) (a run writes CS(T) for T = 0..10)")
    return metrics


def _check_field(value: Any, spec: Any, name: str, path: Path) -> None:
    """Raise a one-line error naming ``path`` and the field ``name`` when ``value`` is not ``spec``
    (see `METRICS_FIELDS`)."""
    kind = spec if isinstance(spec, str) else "table" if isinstance(spec, dict) else spec[0]
    if kind == "or null":
        if value is not None:
            _check_field(value, spec[1], name, path)
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    fits = {
        "number": number,
        "count": number and isinstance(value, int) and value >= 0,
        "text": isinstance(value, str),
        "table": isinstance(value, dict),
        "each": isinstance(value, dict),
        "list": isinstance(value, list),
    }[kind]
    if not fits:
        expected = _EXPECTED["table" if kind == "each" else kind]
        raise AgemetricError(f"{path}: field {name!r} must be {expected}, got {shortened(value)}")
    if kind == "table":
        for key, inner in spec.items():
            field = key.removesuffix("?")
            dotted = f"{name}.{field}" if name else field
            if field in value:
                _check_field(value[field], inner, dotted, path)
            elif not key.endswith("?"):
                raise AgemetricError(f"{path}: field {dotted!r} is missing (expected the metrics of a finished run)")
    elif kind in ("each", "list"):
        items = value.items() if kind == "each" else enumerate(value)
        for key, item in items:
            _check_field(item, spec[1], f"{name}.{key}" if kind == "each" else f"{name}[{key}]", path)

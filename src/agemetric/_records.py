"""Checks of values read from files a user may have been given (``model.pt``, ``bundle.json``):
each wrong type, size or value is an `AgemetricError` naming the field and what was expected.
Torch-free, so bundles use them too."""

from __future__ import annotations

import math

from agemetric._text import shortened
from agemetric.errors import AgemetricError

#: the ages agemetric reads (years): a gallery's ages, the ends an interval is clipped to
AGE_RANGE = (0.0, 150.0)
#: the interval fields `agemetric.intervals.ConformalIntervals` stores
INTERVAL_FIELDS = ("level", "quantile", "offset", "normalised", "n_calibration")


def whole(value: object, name: str, low: int = 0, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        most = "" if high is None else f" and <= {high}"
        raise AgemetricError(f"{name} must be a whole number >= {low}{most}, got {shortened(value)}")
    return value


def number(value: object, name: str, low: float = -math.inf, high: float = math.inf, finite: bool = True) -> float:
    """``value`` as a float if it is a real number (not a bool, not NaN; finite unless
    ``finite=False``) in ``[low, high]``."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = not math.isnan(value) and (math.isfinite(value) or not finite) and low <= value <= high
    if not ok:
        kind = "a finite number" if finite else "a number"
        raise AgemetricError(f"{name} must be {kind} between {low:g} and {high:g}, got {shortened(value)}")
    return value


def interval_fields(values: object, name: str = "intervals") -> dict:
    """The calibrated intervals' stored fields, checked: ``level`` in (0, 1), ``quantile`` >= 0
    (``inf``: too few calibration faces), ``offset`` > 0, ``normalised`` a bool, ``n_calibration``
    >= 0, and the optional groups: ascending ``edges`` with one ``quantiles`` entry more."""
    if not isinstance(values, dict) or not set(INTERVAL_FIELDS) <= set(values):
        raise AgemetricError(
            f"{name} must be a table with {', '.join(sorted(INTERVAL_FIELDS))}, got {shortened(values)}"
        )
    unknown = sorted(set(values) - {*INTERVAL_FIELDS, "edges", "quantiles"})
    if unknown:
        raise AgemetricError(f"{name}: unknown field(s) {shortened(unknown)}")
    level = number(values["level"], f"{name}.level", 0, 1)
    if not 0 < level < 1:
        raise AgemetricError(f"{name}.level must be between 0 and 1 (exclusive), got {level:g}")
    out = {
        "level": level,
        "quantile": number(values["quantile"], f"{name}.quantile", 0, finite=False),
        "offset": number(values["offset"], f"{name}.offset", 0),
        "normalised": values["normalised"],
        "n_calibration": whole(values["n_calibration"], f"{name}.n_calibration"),
    }
    if not isinstance(out["normalised"], bool):
        raise AgemetricError(f"{name}.normalised must be true or false, got {shortened(out['normalised'])}")
    if out["offset"] <= 0:
        raise AgemetricError(f"{name}.offset must be > 0 years, got {out['offset']:g}")
    edges, quantiles = values.get("edges") or (), values.get("quantiles") or ()
    if not isinstance(edges, list | tuple) or not isinstance(quantiles, list | tuple):
        raise AgemetricError(f"{name}.edges and .quantiles must be lists of numbers")
    out["edges"] = tuple(number(v, f"{name}.edges[{i}]") for i, v in enumerate(edges))
    out["quantiles"] = tuple(number(v, f"{name}.quantiles[{i}]", 0, finite=False) for i, v in enumerate(quantiles))
    if list(out["edges"]) != sorted(out["edges"]):
        raise AgemetricError(f"{name}.edges must be in ascending order, got {shortened(list(out['edges']))}")
    if len(out["quantiles"]) != (len(out["edges"]) + 1 if out["edges"] else 0):
        raise AgemetricError(
            f"{name}: {len(out['edges'])} group edges need one quantile more, got {len(out['quantiles'])}"
        )
    return out

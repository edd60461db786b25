"""Error by group: MAE and CS(5) per group of people (gender, race, any labelled column) and per
group and age bucket, each with a 95 % bootstrap interval, and the largest gap between groups.

Bootstrap intervals are scipy's (``scipy.stats.bootstrap``, percentile method, seeded), so that
two runs of the same evaluation give the same intervals.
"""

from __future__ import annotations

import numpy as np
import torch

#: Resamples per bootstrap interval.
RESAMPLES = 1000
#: The gender codes of `agemetric.interfaces.FaceRecord`, as group names.
GENDER_NAMES = {0: "male", 1: "female"}


def bootstrap_mean(values: np.ndarray, seed: int = 0, resamples: int = RESAMPLES) -> list[float] | None:
    """The 95 % percentile-bootstrap interval ``[low, high]`` of the mean of ``values`` (``None``
    for fewer than 2 values).

    Examples:
        >>> low, high = bootstrap_mean(np.arange(100.0))
        >>> low < 49.5 < high
        True
    """
    if len(values) < 2:
        return None
    if np.all(values == values[0]):
        return [float(values[0])] * 2
    from scipy.stats import bootstrap

    found = bootstrap(
        (np.asarray(values, dtype=np.float64),),
        np.mean,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return [float(found.low), float(found.high)]


def _summary(errors: np.ndarray, inside: np.ndarray | None, seed: int) -> dict:
    out = {
        "n": int(len(errors)),
        "mae": float(errors.mean()),
        "mae_ci": bootstrap_mean(errors, seed),
        "cs5": 100.0 * float((errors <= 5).mean()),
        "cs5_ci": bootstrap_mean(100.0 * (errors <= 5), seed),
    }
    if inside is not None:
        out["coverage"] = 100.0 * float(inside.mean())
    return out


def group_errors(
    predicted: torch.Tensor,
    true: torch.Tensor,
    groups: dict[str, list[str | None]],
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    width: int = 10,
    seed: int = 0,
) -> dict:
    """Error per group, for each grouping.

    Args:
        predicted: ``(N,)`` estimates.
        true: ``(N,)`` true ages.
        groups: grouping name -> ``N`` group values (``None``: unknown, left out and counted).
        bounds: ``(low (N,), high (N,))`` of the intervals, for the coverage per group, or ``None``.
        width: the age buckets' width in years.
        seed: the bootstrap's seed.

    Returns:
        ``{name: {"groups": {value: {"n", "mae", "mae_ci", "cs5", "cs5_ci"[, "coverage"],
        "by_age": {bucket: {...}}}}, "largest_gap": {"mae", "between"}, "unknown": count}}``.

    Examples:
        >>> out = group_errors(torch.tensor([20.0, 30.0, 41.0, 50.0]), torch.tensor([22.0, 31.0, 40.0, 50.0]),
        ...                    {"site": ["a", "a", "b", None]})
        >>> out["site"]["groups"]["a"]["mae"], out["site"]["largest_gap"], out["site"]["unknown"]
        (1.5, {'mae': 0.5, 'between': ['a', 'b']}, 1)
    """
    errors = (predicted.double() - true.double()).abs().numpy()  # (N,)
    inside = None if bounds is None else ((true >= bounds[0]) & (true <= bounds[1])).numpy()
    buckets = (true.numpy() // width).astype(int) * width
    out = {}
    for name, values in groups.items():
        per_group = {}
        for value in sorted({v for v in values if v is not None}):
            mask = np.array([v == value for v in values])
            row = _summary(errors[mask], None if inside is None else inside[mask], seed)
            row["by_age"] = {
                f"{b}-{b + width - 1}": _summary(errors[mask & (buckets == b)], None, seed)
                for b in sorted(set(buckets[mask].tolist()))
            }
            per_group[value] = row
        maes = {value: row["mae"] for value, row in per_group.items()}
        gap = None
        if len(maes) > 1:
            worst, best = max(maes, key=maes.get), min(maes, key=maes.get)
            gap = {"mae": maes[worst] - maes[best], "between": sorted([best, worst])}
        out[name] = {"groups": per_group, "largest_gap": gap, "unknown": sum(v is None for v in values)}
    return out


def groups_of(data) -> dict[str, list[str | None]]:
    """The groupings of a `FaceArrays`: ``gender`` (when any is known) and its labelled groups.

    Examples:
        >>> from agemetric.testing import random_face_arrays
        >>> faces = random_face_arrays(3)
        >>> faces.groups = {"site": ["a", None, "b"]}
        >>> sorted(groups_of(faces)), groups_of(faces)["site"]
        (['gender', 'site'], ['a', None, 'b'])
    """
    out = {}
    if bool((data.genders >= 0).any()):
        out["gender"] = [GENDER_NAMES.get(int(g)) for g in data.genders.tolist()]
    return {**out, **(data.groups or {})}

"""How sure an estimate is: conformal prediction intervals from the neighbours' spread, and the
probability of being under an age threshold.

The paper's estimate is the mean age of the ``k`` nearest gallery faces; how much those ages
disagree is a per-face difficulty. Split-conformal calibration (Papadopoulos, Vovk & Gammerman,
"Regression conformal prediction with nearest neighbours", JAIR 2011) turns it into intervals
with a coverage guarantee: on ``n`` calibration faces the model never trained on and the gallery
does not hold, the score of a face is ``|age - estimate| / (spread + offset)``; the interval of a
new face is ``estimate +- q (spread + offset)``, with ``q`` the ``ceil((n + 1) level)``-th smallest
score. For a face exchangeable with the calibration faces it holds the true age with probability
at least ``level`` (and below ``level + 1 / (n + 1)``). The intervals are narrow where the
neighbours agree and wide where they do not.

(The crepes library implements the same normalised conformal regressor; agemetric keeps the
calibrated quantile itself, a number that ``model.pt`` and an exported bundle carry and the
bundle's numpy runtime applies, rather than a pickled object that brings pandas.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import numpy as np
import torch

from agemetric import estimates
from agemetric._records import interval_fields
from agemetric.errors import AgemetricError
from agemetric.estimates import age_spread, group_of, interval, interval_quantile, interval_scale, share_under

#: The fewest calibration faces a group of estimates is calibrated on: with 200, a group's
#: coverage given its calibration faces has a standard deviation of about 2 points at 90 %.
MIN_GROUP = 200


def _array(values: torch.Tensor | None) -> np.ndarray | None:
    return None if values is None else values.detach().cpu().double().numpy()


def knn_age_spread(neighbour_ages: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """How much each query's neighbours disagree: the (weighted) standard deviation of their ages
    (`agemetric.estimates.age_spread()` on tensors).

    Args:
        neighbour_ages: ``(M, k)`` ages of each query's neighbours.
        weights: ``(M, k)`` positive weights (faces a reference stands for), or ``None``.

    Returns:
        ``(M,)`` float32 spreads in years (0 for ``k = 1``).

    Examples:
        >>> knn_age_spread(torch.tensor([[20.0, 30.0], [40.0, 40.0]]))
        tensor([5., 0.])
    """
    return torch.from_numpy(age_spread(_array(neighbour_ages), _array(weights))).float()


def knn_share_under(
    neighbour_ages: torch.Tensor, threshold: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The probability of being younger than ``threshold``: the (weighted) share of the ``k``
    nearest faces that are (`agemetric.estimates.share_under()` on tensors).

    Args:
        neighbour_ages: ``(M, k)`` ages of each query's neighbours.
        threshold: the age in years (``age < threshold`` counts as under).
        weights: ``(M, k)`` positive weights, or ``None``.

    Returns:
        ``(M,)`` float32 probabilities in [0, 1].

    Examples:
        >>> knn_share_under(torch.tensor([[15.0, 17.0, 19.0, 30.0]]), 18)
        tensor([0.5000])
    """
    return torch.from_numpy(share_under(_array(neighbour_ages), threshold, _array(weights))).float()


def conformal_quantile(scores: torch.Tensor, level: float) -> float:
    """The split-conformal quantile of ``scores`` (`agemetric.estimates.conformal_quantile()`).

    Examples:
        >>> conformal_quantile(torch.arange(1.0, 20.0), 0.9)  # n = 19: the 18th smallest
        18.0
        >>> conformal_quantile(torch.tensor([1.0, 2.0]), 0.9)
        inf
    """
    return estimates.conformal_quantile(_array(scores.flatten()), level)


@dataclass(frozen=True)
class ConformalIntervals:
    """Calibrated prediction intervals: ``estimate +- quantile * (spread + offset)`` (normalised)
    or ``estimate +- quantile`` (``normalised=False``: the same width for every face).

    With ``edges`` (Mondrian conformal prediction), faces are put in groups by their estimate
    (group ``i`` holds the estimates in ``(edges[i - 1], edges[i]]``) and each group has its own
    quantile, calibrated on the calibration faces of that group alone: the coverage then holds
    for each group of estimates (children, adults, the old), not only on average over all faces.

    Attributes:
        level: the coverage asked for (0.9: nine faces in ten).
        quantile: the calibrated quantile of the scores (of all calibration faces together).
        offset: years added to the spread, so that neighbours of one age still give an interval.
        normalised: whether the width follows the neighbours' spread.
        n_calibration: how many faces calibrated it.
        edges: the estimates (years) between the groups; ``()``: one group.
        quantiles: each group's quantile (``len(edges) + 1`` of them), or ``()``.

    Examples:
        >>> true = torch.tensor([20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 25.0, 35.0])
        >>> estimate = true + torch.tensor([1.0, -2.0, 3.0, 0.0, 1.0, -1.0, 2.0, 0.5, -0.5, 1.5])
        >>> spread = torch.ones(10)
        >>> ci = ConformalIntervals.calibrate(true, estimate, spread, level=0.8, offset=1.0)
        >>> ci.quantile, ci.n_calibration
        (1.0, 10)
        >>> ci.bounds(torch.tensor([40.0]), torch.tensor([3.0]))  # 40 +- 1.0 * (3 + 1)
        (tensor([36.]), tensor([44.]))

        Two groups of estimates, split at their median (46.5 years), each with its own quantile:

        >>> by_age = ConformalIntervals.calibrate(true, estimate, spread, level=0.8, offset=1.0, groups=2, min_group=5)
        >>> by_age.edges, by_age.quantiles
        ((46.5,), (1.5, 1.0))
    """

    level: float
    quantile: float
    offset: float
    normalised: bool
    n_calibration: int
    edges: tuple[float, ...] = ()
    quantiles: tuple[float, ...] = ()

    @classmethod
    def calibrate(
        cls,
        true: torch.Tensor,
        estimate: torch.Tensor,
        spread: torch.Tensor,
        level: float = 0.9,
        offset: float = 1.0,
        normalised: bool = True,
        groups: int = 1,
        min_group: int = MIN_GROUP,
    ) -> ConformalIntervals:
        """Calibrate on faces neither trained on nor in the gallery.

        Args:
            true: ``(n,)`` their true ages.
            estimate: ``(n,)`` their estimates.
            spread: ``(n,)`` their neighbours' spread (`knn_age_spread()`).
            level: the coverage, in (0, 1).
            offset: years added to the spread (> 0).
            normalised: ``False`` for constant-width intervals.
            groups: calibrate apart in this many groups of similar estimates, each holding about
                as many calibration faces (Mondrian); fewer when a group would hold fewer than
                ``min_group`` faces; 1: one quantile for all.
            min_group: the fewest calibration faces a group may hold.
        """
        if not 0 < level < 1:
            raise AgemetricError(f"interval level must be between 0 and 1, got {level}")
        if offset <= 0:
            raise AgemetricError(f"interval offset must be > 0 years, got {offset}")
        if groups < 1:
            raise AgemetricError(f"interval groups must be >= 1, got {groups}")
        if true.numel() == 0:
            raise AgemetricError("intervals need calibration faces; got none")
        form = {"offset": offset, "normalised": normalised}
        scores = np.abs(_array(true) - _array(estimate)) / interval_scale(_array(spread), form)
        pooled = cls(level, estimates.conformal_quantile(scores, level), offset, normalised, int(true.numel()))
        edges = _group_edges(estimate, min(groups, true.numel() // max(min_group, 1)))
        if not edges:
            return pooled
        group = group_of(_array(estimate), edges)
        quantiles = tuple(estimates.conformal_quantile(scores[group == g], level) for g in range(len(edges) + 1))
        return dataclasses.replace(pooled, edges=edges, quantiles=quantiles)

    def scale(self, spread: torch.Tensor) -> torch.Tensor:
        """``(M,)``: what the quantile is multiplied by for each face."""
        return torch.from_numpy(interval_scale(_array(spread), self.to_dict())).float()

    def quantile_of(self, estimate: torch.Tensor) -> torch.Tensor:
        """``(M,)``: the quantile that applies to each estimate (its group's)."""
        return torch.from_numpy(interval_quantile(_array(estimate), self.to_dict())).float()

    def bounds(self, estimate: torch.Tensor, spread: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low (M,), high (M,))`` of each estimate, clipped to 0-150 years
        (`agemetric.estimates.interval()` on tensors)."""
        low, high = interval(_array(estimate), _array(spread), self.to_dict())
        return torch.from_numpy(low).float(), torch.from_numpy(high).float()

    def to_dict(self) -> dict:
        """Plain values (``model.pt`` and ``bundle.json`` store them)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ConformalIntervals:
        """What `to_dict()` wrote (a file without groups has no ``edges``), checked field by field."""
        return cls(**interval_fields(values))


def _group_edges(estimate: torch.Tensor, groups: int) -> tuple[float, ...]:
    """Edges between ``groups`` groups of about equally many ``estimate`` values (their quantiles;
    repeated values merge groups); ``()`` for one group."""
    if groups < 2:
        return ()
    cuts = torch.quantile(estimate.double(), torch.arange(1, groups, dtype=torch.float64) / groups)
    return tuple(sorted({round(float(c), 4) for c in cuts}))


def interval_report(true: torch.Tensor, low: torch.Tensor, high: torch.Tensor, width: int = 10) -> dict:
    """Test coverage and mean width of intervals, overall and per age bucket of ``width`` years.

    Returns:
        ``{"coverage": percent, "mean_width": years, "by_age": {"0-9": {...}, ...}}``.

    Examples:
        >>> r = interval_report(torch.tensor([5.0, 15.0]), torch.tensor([4.0, 16.0]), torch.tensor([8.0, 20.0]))
        >>> r["coverage"], r["mean_width"], r["by_age"]["10-19"]
        (50.0, 4.0, {'coverage': 0.0, 'mean_width': 4.0, 'n': 1})
    """
    inside = ((true >= low) & (true <= high)).double()  # (N,)
    widths = (high - low).double()  # (N,)
    bucket = torch.div(true.float(), width, rounding_mode="floor").long()
    by_age = {}
    for b in torch.unique(bucket).tolist():
        mask = bucket == b
        by_age[f"{b * width}-{b * width + width - 1}"] = {
            "coverage": 100.0 * float(inside[mask].mean()),
            "mean_width": float(widths[mask].mean()),
            "n": int(mask.sum()),
        }
    return {"coverage": 100.0 * float(inside.mean()), "mean_width": float(widths.mean()), "by_age": by_age}


#: The levels of the coverage curve (`compare_levels()`).
CURVE_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def compare_levels(
    calibration: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    offset: float = 1.0,
    levels: tuple[float, ...] = CURVE_LEVELS,
    groups: int = 1,
) -> list[dict]:
    """Test coverage and mean width at each of ``levels``, of the normalised intervals (in
    ``groups`` groups of estimates), of normalised ones with one quantile for all faces (only
    when ``groups > 1``: keys ``pooled_*``) and of constant-width ones, all calibrated on the same
    faces.

    Args:
        calibration: ``(true, estimate, spread)`` of the calibration faces, ``(n,)`` each.
        test: the same of the test faces, ``(N,)`` each.
        groups: as in `ConformalIntervals.calibrate`.

    Returns:
        ``[{"level", "coverage", "mean_width", "constant_coverage", "constant_mean_width"}, ...]``
        (percent and years).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> spread = torch.rand(400, generator=g) * 5
        >>> true = torch.randn(400, generator=g) * (spread + 1) + 40
        >>> rows = compare_levels((true[:200], torch.full((200,), 40.0), spread[:200]),
        ...                       (true[200:], torch.full((200,), 40.0), spread[200:]), levels=(0.9,))
        >>> rows[0]["mean_width"] < rows[0]["constant_mean_width"]
        True
    """
    rows = []
    for level in levels:
        row: dict = {"level": level}
        kinds = [("", True, groups), ("constant_", False, 1)]
        if groups > 1:
            kinds.insert(1, ("pooled_", True, 1))
        for name, normalised, n_groups in kinds:
            intervals = ConformalIntervals.calibrate(
                *calibration, level=level, offset=offset, normalised=normalised, groups=n_groups
            )
            report = interval_report(test[0], *intervals.bounds(test[1], test[2]))
            row[f"{name}coverage"], row[f"{name}mean_width"] = report["coverage"], report["mean_width"]
        rows.append(row)
    return rows


def threshold_rates(estimate: torch.Tensor, true: torch.Tensor, threshold: float) -> dict:
    """Decisions "under ``threshold``" (``estimate < threshold``) against the truth, as age
    assurance reports them: the false-accept rate (people truly under the threshold estimated at
    or above it), the false-reject rate (people at or above it estimated under it), and, per true
    age in whole years, the share estimated at or above the threshold.

    Returns:
        ``{"threshold", "false_accept", "false_reject", "n_under", "n_over",
        "by_age": {age: {"estimated_over": percent, "n": count}}}`` (rates in percent; ``None``
        where no face is on that side).

    Examples:
        >>> r = threshold_rates(torch.tensor([16.0, 19.0, 17.0, 30.0]), torch.tensor([15.0, 17.0, 20.0, 31.0]), 18)
        >>> r["false_accept"], r["false_reject"], r["by_age"][17]
        (50.0, 50.0, {'estimated_over': 100.0, 'n': 1})
    """
    over = estimate >= threshold  # (N,) decided "not under"
    truly_under = true < threshold

    def percent(mask: torch.Tensor) -> float | None:
        return 100.0 * float(mask.double().mean()) if mask.numel() else None

    ages = torch.floor(true).long()
    by_age = {
        int(a): {"estimated_over": percent(over[ages == a]), "n": int((ages == a).sum())}
        for a in torch.unique(ages).tolist()
    }
    return {
        "threshold": float(threshold),
        "false_accept": percent(over[truly_under]),
        "false_reject": percent(~over[~truly_under]),
        "n_under": int(truly_under.sum()),
        "n_over": int((~truly_under).sum()),
        "by_age": by_age,
    }

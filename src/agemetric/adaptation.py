"""Adapting a model to the user's own photos with a few labelled faces of them.

An estimate is the mean age of the nearest gallery faces, so the user's own faces can join the
gallery: alone (``yours``), beside the training faces with a weight (``both``), or not at all
(``training``), each with its own ``k``. Which of these is best depends on the domain and on how
many faces there are, so it is chosen from the user's faces by leave-one-out (each face estimated
from every other), and the whole choice is scored by nested cross-validation (faces of one fold
estimated by the mix chosen without them). The training gallery is kept unless the nested score
shows a gain with 95 % confidence: adapting never makes a model worse on what it can tell.

The intervals are recalibrated on the user's faces from their leave-one-out estimates, so a face
never calibrates its own interval.

numpy and faiss only: a run (`AgeEstimator.adapt`) and a bundle (`Bundle.adapt`) share it.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> train = GalleryArrays(rng.normal(size=(200, 4)), rng.uniform(20, 60, 200))
    >>> mine = rng.normal(size=(30, 4))  # faces whose embeddings say nothing about their age
    >>> report = choose(train, mine, rng.uniform(20, 60, 30), k_model=20)
    >>> report.adapted, report.chosen.gallery
    (False, 'training')
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from agemetric._records import AGE_RANGE
from agemetric._text import shortened
from agemetric.errors import AgemetricError
from agemetric.estimates import age_spread, conformal_quantile, interval, interval_scale, mean_age

#: fewest labelled faces `choose` takes (a 90 % interval needs at least 9 to calibrate)
MIN_FACES = 10
#: most labelled faces `choose` takes: its leave-one-out compares every face with every other
#: (memory and time grow with the square), and 2,000 faces decide as well as more would
MAX_FACES = 2000
#: the ``k`` values tried, besides the model's own
KS = (1, 3, 5, 10, 20, 50)
#: how many training faces one of the user's counts as in a ``both`` gallery
WEIGHTS = (1.0, 10.0, 100.0)
#: one-sided normal quantile of the confidence that a gain is real (95 %)
Z_95 = 1.6449
#: outer folds of the nested cross-validation (fewer for fewer faces)
FOLDS = 10


@dataclass(frozen=True)
class Mix:
    """One way to make the gallery.

    Attributes:
        gallery: ``"training"`` (the model's own), ``"yours"`` (your faces only) or ``"both"``.
        k: the neighbours averaged.
        weight: in ``both``, how many training faces one of yours counts as.
    """

    gallery: str
    k: int
    weight: float = 1.0

    def __str__(self) -> str:
        if self.gallery == "both":
            return f"training + yours (weight {self.weight:g}), k = {self.k}"
        return f"{'training faces' if self.gallery == 'training' else 'your faces'} only, k = {self.k}"


@dataclass
class GalleryArrays:
    """A gallery as arrays: ``embeddings (N, D)`` float32, ``ages (N,)``, ``genders (N,)`` int64
    (-1 unknown) and ``weights (N,)`` (faces each stands for) or ``None`` (one each)."""

    embeddings: np.ndarray
    ages: np.ndarray
    genders: np.ndarray | None = None
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.embeddings)


@dataclass
class Adaptation:
    """What `choose()` decided and why.

    Attributes:
        chosen: the mix the adapted model uses (the training gallery at the model's ``k`` when
            ``adapted`` is false).
        adapted: whether the gallery changes.
        reason: one sentence for the user.
        n_faces: the labelled faces used.
        mae_before, mae_after: cross-validated MAE on your faces, before (the model as it is) and
            after (the whole choice, scored on faces it never saw); with their standard errors.
        gain, gain_low: MAE before minus after, and its one-sided 95 % lower bound.
        coverage_before, coverage_after: the share of your faces inside their interval before
            (the model's intervals, ``None`` without) and after recalibration (cross-validated).
        level: the intervals' level.
        intervals: the recalibrated intervals' fields (`agemetric.intervals.ConformalIntervals`).
        candidates: each mix tried with its leave-one-out MAE on all your faces.
    """

    chosen: Mix
    adapted: bool
    reason: str
    n_faces: int
    mae_before: float
    mae_before_se: float
    mae_after: float
    mae_after_se: float
    gain: float
    gain_low: float
    coverage_before: float | None
    coverage_after: float | None
    level: float
    intervals: dict | None
    candidates: list[tuple[Mix, float]] = field(default_factory=list)

    def __str__(self) -> str:
        """The decision in a few lines, as ``agemetric adapt`` says it (``print(report)``)."""
        gallery = str(self.chosen) if self.adapted else "training faces (kept)"
        lines = [
            f"{'Adapted' if self.adapted else 'Kept'}: {self.reason}.",
            f"gallery: {gallery}",
            f"MAE on your {self.n_faces} faces, cross-validated: {self.mae_before:.2f} +- {self.mae_before_se:.2f} "
            f"-> {self.mae_after:.2f} +- {self.mae_after_se:.2f}",
        ]
        if self.coverage_after is not None:
            before = "-" if self.coverage_before is None else f"{100 * self.coverage_before:.1f}"
            lines.append(f"{100 * self.level:.0f} % intervals, coverage %: {before} -> {100 * self.coverage_after:.1f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Plain values (``model.pt``, ``bundle.json`` and ``adaptation.json`` store them)."""
        out = asdict(self)
        out["chosen"] = asdict(self.chosen)
        out["candidates"] = [{**asdict(mix), "loo_mae": mae} for mix, mae in self.candidates]
        return out


def candidates(n_faces: int, n_train: int, k_model: int) -> list[Mix]:
    """The mixes tried: the model as it is first (it wins ties), then the training gallery at
    other ``k``, your faces alone, and both together at each weight."""
    ks = sorted({*KS, k_model})
    out = [Mix("training", min(k_model, n_train))]
    out += [Mix("training", k) for k in ks if k <= n_train and k != out[0].k]
    out += [Mix("yours", k) for k in ks if k <= n_faces // 2]  # folds leave at least half the faces
    out += [Mix("both", k, w) for w in WEIGHTS for k in ks if k <= n_train]
    return out


class _Neighbours:
    """Every candidate neighbour of each of your faces: its ``kmax`` nearest training faces, and
    all of your other faces; estimates under a mix with some of your faces held out."""

    def __init__(self, train: GalleryArrays, embeddings: np.ndarray, ages: np.ndarray, kmax: int):
        import faiss

        queries = np.ascontiguousarray(embeddings, dtype=np.float32)  # (n, D)
        kmax = min(kmax, len(train))
        dist, idx = faiss.knn(queries, np.ascontiguousarray(train.embeddings, np.float32), kmax, metric=faiss.METRIC_L1)
        self.train_dist = dist.astype(np.float64)  # (n, kmax), nearest first
        self.train_ages = train.ages[idx].astype(np.float64)  # (n, kmax)
        self.train_weights = np.ones_like(self.train_ages) if train.weights is None else train.weights[idx]
        self.user_dist = faiss.pairwise_distances(queries, queries, metric=faiss.METRIC_L1).astype(np.float64)  # (n, n)
        self.ages = ages.astype(np.float64)  # (n,)

    def estimate(self, mix: Mix, rows: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(estimates, spreads)`` of your faces ``rows`` (``(m,)`` indices) under ``mix``,
        each from the training faces (``training``, ``both``) and from your faces where
        ``allowed`` ``(m, n)`` is true (``yours``, ``both``): ``(m,)`` each."""
        parts_dist, parts_ages, parts_weights = [], [], []
        if mix.gallery in ("training", "both"):
            parts_dist.append(self.train_dist[rows])
            parts_ages.append(self.train_ages[rows])
            parts_weights.append(self.train_weights[rows])
        if mix.gallery in ("yours", "both"):
            parts_dist.append(np.where(allowed, self.user_dist[rows], np.inf))  # (m, n)
            parts_ages.append(np.broadcast_to(self.ages, allowed.shape))
            parts_weights.append(np.full(allowed.shape, mix.weight))
        dist, ages, weights = (np.concatenate(p, axis=1) for p in (parts_dist, parts_ages, parts_weights))
        nearest = np.argsort(dist, axis=1, kind="stable")[:, : mix.k]  # (m, k)
        ages = np.take_along_axis(ages, nearest, axis=1)
        weights = np.take_along_axis(weights, nearest, axis=1) * np.isfinite(np.take_along_axis(dist, nearest, 1))
        return mean_age(ages, weights), age_spread(ages, weights)


@dataclass(frozen=True)
class _IntervalForm:
    """The intervals' level and shape (kept from the model's), whose quantile is recalibrated."""

    level: float
    offset: float
    normalised: bool

    def scale(self, spread: np.ndarray) -> np.ndarray:
        return interval_scale(spread, asdict(self))

    def scores(self, true: np.ndarray, estimate: np.ndarray, spread: np.ndarray) -> np.ndarray:
        return np.abs(true - estimate) / self.scale(spread)

    def fields(self, quantile: float, n: int) -> dict:
        """The recalibrated intervals (`agemetric.intervals.ConformalIntervals`'s fields)."""
        return {**asdict(self), "quantile": quantile, "n_calibration": n}


def _loo(neighbours: _Neighbours, mix: Mix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out estimates of your faces ``rows``, each from the other faces of ``rows`` but
    its copies (the same embedding: the same photo given twice would estimate itself)."""
    allowed = np.zeros((len(rows), len(neighbours.ages)), dtype=bool)
    allowed[:, rows] = True
    allowed &= neighbours.user_dist[rows] > 0  # the face itself and its copies
    return neighbours.estimate(mix, rows, allowed)


def _select(neighbours: _Neighbours, mixes: list[Mix], rows: np.ndarray) -> tuple[Mix, list[float]]:
    """The mix with the lowest leave-one-out MAE on your faces ``rows`` (the first on ties)."""
    true = neighbours.ages[rows]
    maes = [float(np.abs(_loo(neighbours, mix, rows)[0] - true).mean()) for mix in mixes]
    return mixes[int(np.argmin(maes))], maes


def _nested(neighbours: _Neighbours, mixes: list[Mix], form: _IntervalForm, folds: list[np.ndarray]):
    """The whole choice (select by leave-one-out, recalibrate) scored on faces it never saw:
    ``(absolute errors (n,), inside their interval (n,) bool)``."""
    n = len(neighbours.ages)
    errors, inside = np.zeros(n), np.zeros(n, dtype=bool)
    for fold in folds:
        inner = np.setdiff1d(np.arange(n), fold)
        mix, _ = _select(neighbours, mixes, inner)
        estimate, spread = _loo(neighbours, mix, inner)
        quantile = conformal_quantile(form.scores(neighbours.ages[inner], estimate, spread), form.level)
        allowed = np.zeros((len(fold), n), dtype=bool)
        allowed[:, inner] = True
        estimate, spread = neighbours.estimate(mix, fold, allowed)
        errors[fold] = np.abs(estimate - neighbours.ages[fold])
        inside[fold] = errors[fold] <= quantile * form.scale(spread)
    return errors, inside


def choose(
    train: GalleryArrays,
    embeddings: np.ndarray,
    ages: np.ndarray,
    k_model: int,
    intervals: dict | None = None,
    folds: int = FOLDS,
    seed: int = 0,
) -> Adaptation:
    """Choose how to combine your labelled faces with the training gallery.

    Args:
        train: the model's gallery.
        embeddings: ``(n, D)`` your faces' embeddings, ``n >= MIN_FACES``.
        ages: ``(n,)`` their true ages.
        k_model: the model's ``k``.
        intervals: the model's intervals' fields (their level, offset and form are kept), or
            ``None`` (90 % intervals, offset 1 year, normalised by the neighbours' spread).
        folds: outer folds of the nested cross-validation (at most one face each).
        seed: how faces are dealt into folds.

    Returns:
        The decision, its evidence and the recalibrated intervals.
    """
    embeddings, ages, group = _checked(train, embeddings, ages)  # group: copies of a photo share one
    n, everyone = len(ages), np.arange(len(ages))
    ci = intervals or {}
    form = _IntervalForm(ci.get("level", 0.9), ci.get("offset", 1.0), ci.get("normalised", True))
    mixes = candidates(int(group.max()) + 1, len(train), k_model)  # copies: one face to the folds and statistics
    neighbours = _Neighbours(train, embeddings, ages, max(m.k for m in mixes))
    fold_list = _folds(group, folds, seed)

    # the model as it is never sees your faces: its estimates need no hold-out
    before_estimate, before_spread = neighbours.estimate(mixes[0], everyone, np.zeros((n, n), dtype=bool))
    before = np.abs(before_estimate - ages)
    after, inside = _nested(neighbours, mixes, form, fold_list)
    gain = _per_face(before - after, group)  # paired, one value per different face
    gain_mean, gain_se = float(gain.mean()), float(gain.std(ddof=1) / math.sqrt(len(gain)))
    adapted = gain_mean - Z_95 * gain_se > 0
    chosen, maes = _select(neighbours, mixes, everyone)
    if adapted:
        estimate, spread = _loo(neighbours, chosen, everyone)
    else:  # keep the gallery, still recalibrate: score that procedure instead
        chosen, after, estimate, spread = mixes[0], before, before_estimate, before_spread
        _, inside = _nested(neighbours, mixes[:1], form, fold_list)
    quantile = conformal_quantile(form.scores(ages, estimate, spread), form.level)
    coverage_before = None
    if intervals is not None:
        low, high = interval(before_estimate, before_spread, intervals)
        coverage_before = float(((low <= ages) & (ages <= high)).mean())
    return Adaptation(
        chosen=chosen,
        adapted=bool(adapted),
        reason=_reason(n, adapted, gain_mean, gain_se),
        n_faces=n,
        mae_before=float(before.mean()),
        mae_before_se=_standard_error(before, group),
        mae_after=float(after.mean()),
        mae_after_se=_standard_error(after, group),
        gain=gain_mean if adapted else 0.0,
        gain_low=gain_mean - Z_95 * gain_se if adapted else 0.0,
        coverage_before=coverage_before,
        coverage_after=float(inside.mean()),
        level=form.level,
        intervals=form.fields(quantile, n),
        candidates=list(zip(mixes, maes, strict=True)),
    )


def _copies(embeddings: np.ndarray) -> np.ndarray:
    """``(n,)`` a number per different face, in the order they first appear: copies of a photo
    (the same embedding) share one."""
    _, first, inverse = np.unique(embeddings, axis=0, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def _per_face(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """``values`` ``(n,)`` averaged over the copies of each different face: ``(faces,)``."""
    return np.bincount(group, weights=values) / np.bincount(group)


def _standard_error(values: np.ndarray, group: np.ndarray) -> float:
    """The standard error of the mean of ``values`` over the different faces (copies of a photo
    are not independent measurements)."""
    per_face = _per_face(values, group)
    return float(per_face.std(ddof=1) / math.sqrt(len(per_face)))


def _folds(group: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Your faces dealt at random into at most ``folds`` folds, copies of a face in the same one."""
    groups = int(group.max()) + 1
    dealt = np.array_split(np.random.default_rng(seed).permutation(groups), min(folds, groups))
    return [np.flatnonzero(np.isin(group, part)) for part in dealt]


def checked_ages(ages, n: int) -> np.ndarray:
    """Your ``n`` faces' ages as float64 ``(n,)``, each a number of years in `AGE_RANGE`.

    Raises:
        AgemetricError: no ages, not one per face, or one that is not a number of years (named).

    Examples:
        >>> checked_ages([34, "61"], 2)
        array([34., 61.])
        >>> checked_ages([34, -5], 2)
        Traceback (most recent call last):
        ...
        agemetric.errors.AgemetricError: adapt: age -5 of face 1 is not a number of years between 0 and 150
    """
    if ages is None:
        raise AgemetricError(f"adapt: give one age per face ({n} faces, no ages)")
    try:
        values = np.asarray(ages, dtype=np.float64)
    except (TypeError, ValueError):
        values = None
    if values is not None and values.shape != (n,):
        raise AgemetricError(f"adapt: give one age per face ({n} faces, {values.size} ages)")
    low, high = AGE_RANGE
    bad = range(n) if values is None else np.flatnonzero(~((values >= low) & (values <= high)))  # NaN too
    if len(bad):
        i = int(bad[0])
        raise AgemetricError(
            f"adapt: age {shortened(list(ages)[i])} of face {i} is not a number of years between {low:g} and {high:g}"
        )
    return values


def _checked(
    train: GalleryArrays, embeddings: np.ndarray, ages: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Your faces' ``(embeddings float32, ages float64, copies)``, checked against the gallery;
    ``copies`` is `_copies()` of the embeddings."""
    embeddings = np.asarray(embeddings, np.float32)
    ages = checked_ages(ages, len(embeddings))
    n, dim = len(ages), train.embeddings.shape[1]
    if embeddings.shape != (n, dim):
        raise AgemetricError(f"your faces' embeddings must be ({n}, {dim}), got {tuple(embeddings.shape)}")
    if n < MIN_FACES:
        raise AgemetricError(f"adapting needs at least {MIN_FACES} labelled faces of your photos, got {n}")
    if n > MAX_FACES:
        raise AgemetricError(
            f"adapting takes at most {MAX_FACES:,} labelled faces, got {n:,}; choose a random subset "
            f"(agemetric adapt --limit {MAX_FACES}), or train on them"
        )
    group = _copies(embeddings)
    different = int(group.max()) + 1 if n else 0
    if different < MIN_FACES:
        raise AgemetricError(
            f"adapting needs at least {MIN_FACES} different labelled faces of your photos; of your {n}, only "
            f"{different} differ (the others are copies of them)"
        )
    return embeddings, ages, group


def _reason(n: int, adapted: bool, gain: float, se: float) -> str:
    if adapted:
        return (
            f"your {n} faces lower the cross-validated MAE by {gain:.2f} years "
            f"(95 % sure of at least {gain - Z_95 * se:.2f})"
        )
    return (
        f"your {n} faces do not lower the cross-validated MAE with 95 % confidence (change "
        f"{-gain:+.2f} +- {se:.2f} years): the training gallery is kept, the intervals recalibrated"
    )


def adapt(
    train: GalleryArrays, user: GalleryArrays, k_model: int, intervals: dict | None = None, seed: int = 0
) -> tuple[Adaptation, GalleryArrays]:
    """`choose()` how to combine your labelled faces ``user`` with the gallery ``train``, and the
    gallery that choice makes (`adapted_gallery()`): what a run and a bundle both do."""
    report = choose(train, user.embeddings, user.ages, k_model, intervals, seed=seed)
    return report, adapted_gallery(train, user, report.chosen)


def adapted_gallery(train: GalleryArrays, user: GalleryArrays, mix: Mix) -> GalleryArrays:
    """The gallery ``mix`` describes."""
    if mix.gallery == "training":
        return train
    genders = user.genders if user.genders is not None else np.full(len(user), -1, np.int64)
    if mix.gallery == "yours":
        return GalleryArrays(user.embeddings, user.ages, genders, None)
    train_genders = train.genders if train.genders is not None else np.full(len(train), -1, np.int64)
    train_weights = np.ones(len(train), np.float32) if train.weights is None else train.weights
    return GalleryArrays(
        np.concatenate([train.embeddings, user.embeddings]).astype(np.float32),
        np.concatenate([train.ages, user.ages]).astype(np.float32),
        np.concatenate([train_genders, genders]).astype(np.int64),
        np.concatenate([train_weights, np.full(len(user), mix.weight)]).astype(np.float32),
    )

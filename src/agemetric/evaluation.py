"""Scoring a model: metrics on a test set, gender accuracy, snapshots during training, the machine."""

from __future__ import annotations

import copy
import platform
import time
from collections.abc import Callable

import torch

from agemetric.config import RunConfig
from agemetric.data.arrays import FaceArrays
from agemetric.errors import AgemetricError
from agemetric.estimator import AgeEstimator
from agemetric.groups import group_errors, groups_of
from agemetric.intervals import CURVE_LEVELS, compare_levels, interval_report, threshold_rates
from agemetric.metrics import summarise
from agemetric.reporting import SILENT, Reporter
from agemetric.training import recalibrate_batchnorm


def evaluate(
    estimator: AgeEstimator, data: FaceArrays, train_ages: torch.Tensor, reporter: Reporter = SILENT
) -> tuple[dict, torch.Tensor]:
    """Metrics of ``estimator`` on ``data`` (its gallery must be fitted; see `score()`); returns
    (metrics, predictions)."""
    estimator.require_gallery()
    emb = estimator.embed(data.images, progress=reporter.bar("predict", len(data)))
    metrics, predicted, _ = score(estimator, emb, data, train_ages)
    return metrics, predicted


def evaluate_recalibrated(
    estimator: AgeEstimator,
    data: FaceArrays,
    train_ages: torch.Tensor,
    share: float,
    seed: int = 0,
    groups: int = 1,
    reporter: Reporter = SILENT,
) -> tuple[dict, torch.Tensor]:
    """Calibrate the intervals again on faces like ``data``'s: a random ``share`` of them (drawn
    with ``seed``) calibrates, the rest is scored, with the model's intervals (``metrics``, as
    `evaluate()` gives them) and with the new ones (``metrics["recalibrated"]``: their
    ``intervals`` and, where the data has groups, ``groups``). The estimator keeps its intervals.

    Returns:
        ``(metrics, predictions of the scored faces)``; ``metrics["n_recalibration"]`` faces calibrated.
    """
    estimator.require_gallery()
    if estimator.intervals is None:
        raise AgemetricError("this model has no intervals to calibrate again (its run had calibration = 0)")
    if not 0 < share < 1:
        raise AgemetricError(f"the share of faces to calibrate on must be between 0 and 1, got {share}")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_cal = round(share * len(data))
    if n_cal < 1 or n_cal >= len(data):
        raise AgemetricError(f"{len(data)} faces cannot be split {share:.0%} / {1 - share:.0%} to calibrate again")
    cal, rest = data.subset(order[:n_cal]), data.subset(order[n_cal:])
    bar = reporter.bar("predict", len(data))
    cal_emb, emb = estimator.embed(cal.images, progress=bar), estimator.embed(rest.images, progress=bar)
    metrics, predicted, _ = score(estimator, emb, rest, train_ages)
    model_intervals = estimator.intervals
    try:
        estimator.calibrate(cal, model_intervals.level, cal_emb, groups)
        again, _, _ = score(estimator, emb, rest, train_ages, (cal_emb, cal.ages))
    finally:
        estimator.intervals = model_intervals
    metrics["recalibrated"] = {key: again[key] for key in ("intervals", "groups") if key in again}
    metrics["n_recalibration"] = n_cal
    return metrics, predicted


#: The ages at which `score()` reports decisions "under this age" (age assurance).
AGE_THRESHOLDS = (18, 21, 25)


def score(
    estimator: AgeEstimator,
    test_emb: torch.Tensor,
    data: FaceArrays,
    train_ages: torch.Tensor,
    calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[dict, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Metrics of the embedded test faces ``data``: MAE and CS (`summarise`), the decisions at
    `AGE_THRESHOLDS`, the error by group (`agemetric.groups`), and with intervals their coverage
    and width (overall, per age bucket and per group, and at other levels beside constant-width
    intervals when the ``calibration`` faces' embeddings and ages are given).

    Returns:
        ``(metrics, predicted (N,), (low (N,), high (N,)) or None)``.
    """
    retriever, ages = estimator.retriever, data.ages
    predicted = retriever.predict(test_emb)
    metrics = summarise(predicted, ages, train_ages)
    metrics["age_thresholds"] = {str(t): threshold_rates(predicted, ages, t) for t in AGE_THRESHOLDS}
    bounds = None
    if estimator.intervals is not None:
        bounds = _intervals(estimator, test_emb, predicted, ages, calibration, metrics)
    groups = groups_of(data)
    if groups:
        metrics["groups"] = group_errors(predicted, ages, groups, bounds)
    return metrics, predicted, bounds


def _intervals(estimator, test_emb, predicted, ages, calibration, metrics: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The test intervals; their report goes into ``metrics["intervals"]``."""
    retriever = estimator.retriever
    spread = retriever.spread(test_emb)
    bounds = estimator.intervals.bounds(predicted, spread)
    metrics["intervals"] = {**estimator.intervals.to_dict(), **interval_report(ages, *bounds)}
    if calibration is not None:
        emb, cal_ages = calibration
        intervals = estimator.intervals
        levels = tuple(sorted({*CURVE_LEVELS, intervals.level}))
        curve = compare_levels(
            (cal_ages, retriever.predict(emb), retriever.spread(emb)),
            (ages, predicted, spread),
            intervals.offset,
            levels,
            groups=len(intervals.quantiles) or 1,
        )
        metrics["intervals"]["curve"] = curve
    return bounds


def gender_accuracies(
    estimator: AgeEstimator,
    train_data: FaceArrays,
    test_data: FaceArrays,
    train_emb: dict[str, torch.Tensor],
    test_emb: dict[str, torch.Tensor],
) -> dict[str, float]:
    """Gender accuracy (%) of the majority of the k nearest training faces (paper, Table 2).

    In the age embedding always (gender was never a label of its loss); in the gender
    embedding too when given (``"gender"`` in both: the gender head was trained, multi-task).
    ``train_emb``, ``test_emb``: the faces' embeddings by part (`AgeEstimator.embed_parts`).
    """
    known = test_data.genders >= 0  # (N,)
    truth = test_data.genders[known]
    guessed = estimator.retriever.predict_gender(test_emb["age"][known])
    out = {"gender_accuracy_from_age_embedding": 100.0 * float((guessed == truth).float().mean())}
    if "gender" in train_emb:
        from agemetric.default_plugins.l1_knn import L1KNN

        gallery = L1KNN(k=estimator.retriever.k).fit(train_emb["gender"], train_data.ages, train_data.genders)
        guessed = gallery.predict_gender(test_emb["gender"][known])
        out["gender_accuracy_from_gender_embedding"] = 100.0 * float((guessed == truth).float().mean())
    return out


def snapshot_taker(
    train_data: FaceArrays, test_data: FaceArrays, config: RunConfig, times: tuple[float, ...], curve: list[dict]
) -> Callable[[float, AgeEstimator], float | None]:
    """An ``on_step`` for `train()` that evaluates a copy of the model at each of ``times``
    (seconds of training): BatchNorm recalibrated as at the end of training, gallery fitted, test
    split predicted; appends ``{mark, seconds, mae, cs5}`` to ``curve`` and returns the time it
    took. Training continues exactly as without snapshots (the global random state is restored)."""
    pending = sorted(times)

    def on_step(elapsed: float, current: AgeEstimator) -> float | None:
        if not pending or elapsed < pending[0]:
            return None
        began = time.perf_counter()
        mark = pending[0]
        while pending and elapsed >= pending[0]:
            pending.pop(0)
        rng = torch.get_rng_state()  # recalibration runs dropout: training must not see its draws
        snapshot = copy.deepcopy(current)
        if config.training.bn_recalibration:
            recalibrate_batchnorm(
                snapshot,
                train_data,
                config.training.bn_recalibration,
                config.training.batch_size,
                torch.Generator().manual_seed(0),
            )
        snapshot.fit_gallery(train_data)
        summary = summarise(snapshot.predict(test_data.images), test_data.ages, train_data.ages)
        curve.append({"mark": mark, "seconds": round(elapsed, 1), "mae": summary["mae"], "cs5": summary["cs"][5]})
        torch.set_rng_state(rng)
        return time.perf_counter() - began

    return on_step


def machine() -> dict:
    """Where the numbers were measured."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }

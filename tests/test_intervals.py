"""Prediction intervals and age-threshold decisions: the maths against brute force and known noise,
the calibration side of a split, and the intervals through a run, model.pt, a bundle and predict."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from agemetric.bundle import Bundle
from agemetric.cli import app
from agemetric.config import resolve
from agemetric.data.splits import Split, hold_out_calibration, read_split
from agemetric.errors import AgemetricError
from agemetric.estimator import AgeEstimator
from agemetric.evaluation import evaluate_recalibrated
from agemetric.experiment import run
from agemetric.export import export_bundle
from agemetric.interfaces import FaceRecord
from agemetric.intervals import (
    ConformalIntervals,
    compare_levels,
    conformal_quantile,
    interval_report,
    knn_age_spread,
    knn_share_under,
    threshold_rates,
)
from agemetric.runs import RunFolder
from agemetric.testing import random_face_arrays

runner = CliRunner()


# -- the maths -------------------------------------------------------------------------------------


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=60), st.floats(0.05, 0.99))
def test_conformal_quantile_is_the_smallest_score_that_covers_enough(scores, level):
    q = conformal_quantile(torch.tensor(scores), level)
    n = len(scores)
    needed = math.ceil((n + 1) * level)  # scores at or below q must be at least this many
    if needed > n:
        assert q == math.inf
        return
    covered = sum(s <= q for s in torch.tensor(scores).double().tolist())
    assert covered >= needed
    assert q in torch.tensor(scores).double().tolist()
    assert sum(s < q for s in torch.tensor(scores).double().tolist()) < needed  # nothing smaller would do


def test_spread_and_share_under_against_a_loop():
    g = torch.Generator().manual_seed(0)
    ages = torch.randint(1, 80, (7, 5), generator=g).float()
    weights = torch.rand(7, 5, generator=g) + 0.1
    for w in (None, weights):
        spread, under = knn_age_spread(ages, w), knn_share_under(ages, 30, w)
        for i in range(7):
            wi = [1.0] * 5 if w is None else w[i].tolist()
            a = ages[i].tolist()
            mean = sum(x * v for x, v in zip(a, wi, strict=True)) / sum(wi)
            var = sum(v * (x - mean) ** 2 for x, v in zip(a, wi, strict=True)) / sum(wi)
            assert spread[i].item() == pytest.approx(math.sqrt(var), rel=1e-5)
            assert under[i].item() == pytest.approx(sum(v for x, v in zip(a, wi, strict=True) if x < 30) / sum(wi))


def _noisy(seed: int, n: int):
    """Faces with a known noise model: the error of an estimate grows with its neighbours' spread."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.rand(n, generator=g) * 6  # (n,)
    true = torch.rand(n, generator=g) * 70 + 5
    estimate = true + torch.randn(n, generator=g) * (spread + 1)
    return true, estimate, spread


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(0, 10_000), st.sampled_from([0.8, 0.9]))
def test_calibrated_intervals_cover_the_level_within_binomial_error(seed, level):
    n_cal, n_test = 500, 2000
    true, estimate, spread = _noisy(seed, n_cal + n_test)
    cal, test = slice(0, n_cal), slice(n_cal, None)
    for normalised in (True, False):
        intervals = ConformalIntervals.calibrate(true[cal], estimate[cal], spread[cal], level, normalised=normalised)
        low, high = intervals.bounds(estimate[test], spread[test])
        coverage = ((true[test] >= low) & (true[test] <= high)).double().mean().item()
        # coverage given the calibration faces is Beta around the level (sd ~ sqrt(l(1-l)/n_cal)),
        # seen through n_test test faces: 4 standard deviations of both
        sd = math.sqrt(level * (1 - level) / n_cal + level * (1 - level) / n_test)
        assert abs(coverage - level) < 4 * sd, (normalised, coverage)


def test_normalised_intervals_are_narrower_where_noise_follows_the_spread():
    true, estimate, spread = _noisy(1, 3000)
    rows = compare_levels((true[:1000], estimate[:1000], spread[:1000]), (true[1000:], estimate[1000:], spread[1000:]))
    at = {row["level"]: row for row in rows}
    assert at[0.9]["mean_width"] < 0.9 * at[0.9]["constant_mean_width"]
    assert abs(at[0.9]["coverage"] - 90) < 3 and abs(at[0.9]["constant_coverage"] - 90) < 3


def _age_dependent(seed: int, n: int):
    """Faces whose error grows with age and not with the spread: one quantile for all over-covers
    the young and under-covers the old."""
    g = torch.Generator().manual_seed(seed)
    true = torch.rand(n, generator=g) * 80 + 1
    estimate = true + torch.randn(n, generator=g) * (0.5 + true / 8)
    return true, estimate, torch.rand(n, generator=g)  # the spread says nothing here


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.integers(0, 10_000))
def test_grouped_intervals_cover_the_level_in_each_group_of_estimates(seed):
    n_cal, n_test, level = 1200, 6000, 0.9
    true, estimate, spread = _age_dependent(seed, n_cal + n_test)
    cal, test = slice(0, n_cal), slice(n_cal, None)
    grouped = ConformalIntervals.calibrate(true[cal], estimate[cal], spread[cal], level, groups=4)
    pooled = ConformalIntervals.calibrate(true[cal], estimate[cal], spread[cal], level)
    assert len(grouped.edges) == 3 and len(grouped.quantiles) == 4 and grouped.quantile == pooled.quantile
    group = torch.bucketize(estimate[test], torch.tensor(grouped.edges), right=False)
    worst_pooled = 1.0
    for g in range(4):
        mask = group == g
        n_g = int(mask.sum())
        sd = math.sqrt(level * (1 - level) / (n_cal / 4) + level * (1 - level) / n_g)
        for intervals, name in ((grouped, "grouped"), (pooled, "pooled")):
            low, high = intervals.bounds(estimate[test][mask], spread[test][mask])
            coverage = ((true[test][mask] >= low) & (true[test][mask] <= high)).double().mean().item()
            if name == "grouped":
                assert abs(coverage - level) < 4 * sd, (g, coverage)
            else:
                worst_pooled = min(worst_pooled, coverage)
    assert worst_pooled < level - 0.05  # the data is such that one quantile for all does not hold per group


def test_groups_against_a_loop_and_their_limits():
    true, estimate, spread = _age_dependent(3, 1000)
    grouped = ConformalIntervals.calibrate(true, estimate, spread, 0.8, groups=5, min_group=100)
    for g, q in enumerate(grouped.quantiles):  # each group's quantile from its own faces, by a loop
        lo = -math.inf if g == 0 else grouped.edges[g - 1]
        hi = math.inf if g == len(grouped.edges) else grouped.edges[g]
        faces = zip(true.tolist(), estimate.tolist(), spread.tolist(), strict=True)
        scores = sorted(abs(t - e) / (s + 1.0) for t, e, s in faces if lo < e <= hi)
        assert 150 <= len(scores) <= 250
        assert q == pytest.approx(scores[math.ceil((len(scores) + 1) * 0.8) - 1], rel=1e-6)
    # too few faces for the groups asked: as many groups as hold min_group faces, or one
    assert len(ConformalIntervals.calibrate(true, estimate, spread, 0.8, groups=5, min_group=400).quantiles) == 2
    assert ConformalIntervals.calibrate(true, estimate, spread, 0.8, groups=5, min_group=600).edges == ()
    again = ConformalIntervals.from_dict(json.loads(json.dumps(grouped.to_dict())))
    assert again == grouped
    with pytest.raises(AgemetricError, match="one quantile more"):
        ConformalIntervals.from_dict({**grouped.to_dict(), "quantiles": [1.0]})
    with pytest.raises(AgemetricError, match="groups"):
        ConformalIntervals.calibrate(true, estimate, spread, 0.8, groups=0)
    # an estimate exactly on an edge belongs to the lower group, as numpy's searchsorted puts it
    on_edge = torch.tensor(grouped.edges, dtype=torch.float32)
    expected = np.asarray(grouped.quantiles)[np.searchsorted(grouped.edges, on_edge.numpy(), side="left")]
    np.testing.assert_allclose(grouped.quantile_of(on_edge).numpy(), expected)


def test_interval_bounds_are_clipped_and_too_few_faces_give_the_whole_range():
    few = ConformalIntervals.calibrate(torch.tensor([20.0, 30.0]), torch.tensor([21.0, 29.0]), torch.zeros(2), 0.9)
    assert few.quantile == math.inf
    low, high = few.bounds(torch.tensor([40.0]), torch.tensor([2.0]))
    assert (low.item(), high.item()) == (0.0, 150.0)
    with pytest.raises(AgemetricError, match="level"):
        ConformalIntervals.calibrate(torch.ones(3), torch.ones(3), torch.ones(3), 1.0)
    again = ConformalIntervals.from_dict(json.loads(json.dumps(few.to_dict())))
    assert again == few


def test_interval_report_and_threshold_rates_against_a_count():
    g = torch.Generator().manual_seed(2)
    true = torch.randint(10, 40, (300,), generator=g).float()
    estimate = true + torch.randn(300, generator=g) * 4
    low, high = estimate - 3, estimate + 3
    report = interval_report(true, low, high)
    inside = [lo <= t <= hi for t, lo, hi in zip(true.tolist(), low.tolist(), high.tolist(), strict=True)]
    assert report["coverage"] == pytest.approx(100 * sum(inside) / 300)
    assert sum(b["n"] for b in report["by_age"].values()) == 300
    rates = threshold_rates(estimate, true, 18)
    pairs = list(zip(estimate.tolist(), true.tolist(), strict=True))
    under = [(e, t) for e, t in pairs if t < 18]
    over = [(e, t) for e, t in pairs if t >= 18]
    assert rates["false_accept"] == pytest.approx(100 * sum(e >= 18 for e, _ in under) / len(under))
    assert rates["false_reject"] == pytest.approx(100 * sum(e < 18 for e, _ in over) / len(over))
    seventeen = [e for e, t in pairs if int(t) == 17]
    share = 100 * sum(e >= 18 for e in seventeen) / len(seventeen)
    assert rates["by_age"][17] == {"estimated_over": pytest.approx(share), "n": len(seventeen)}
    assert threshold_rates(torch.tensor([30.0]), torch.tensor([40.0]), 18)["false_accept"] is None


# -- the calibration side of a split ------------------------------------------------------------


def test_calibration_keeps_identical_images_and_people_together():
    records = [FaceRecord(str(i), 20.0 + i % 30, subject=str(i // 4)) for i in range(200)]
    fingerprints = [str(i // 2) for i in range(200)]  # pairs of identical images
    split = Split({r.key: "test" if i < 40 else "train" for i, r in enumerate(records)}, {"n_train": 160})
    for by_subject, unit in ((False, 2), (True, 4)):
        held = hold_out_calibration(split, records, fingerprints, 0.25, seed=3, by_subject=by_subject)
        sides = held.side
        assert all(sides[str(i)] == "test" for i in range(40))  # the test side is untouched
        assert held.info["n_calibration"] == sum(s == "calibration" for s in sides.values())
        assert 0.25 * 160 <= held.info["n_calibration"] < 0.25 * 160 + unit
        for start in range(40, 200, unit):  # a pair (or a person) is on one side
            assert len({sides[str(i)] for i in range(start, start + unit)}) == 1


def test_split_file_with_a_calibration_side_is_read_back(tmp_path):
    records = [FaceRecord(str(i), 30.0) for i in range(6)]
    path = tmp_path / "split.csv"
    path.write_text("key,side\n0,train\n1,train\n2,calibration\n3,test\n4,train\n5,test\n")
    split = read_split(path, records)
    assert split.info["n_train"] == 3 and split.info["n_calibration"] == 1 and split.info["n_test"] == 2
    path.write_text("key,side\n0,validation\n")
    with pytest.raises(AgemetricError, match="'key,calibration'"):
        read_split(path, records)


# -- through a run, model.pt, a bundle and predict ----------------------------------------------

SETS = ["dataset_options.n=300", "epochs=2", "image_size=32", "batch_size=32", "k=5", "bf16=off", "figures=true"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("intervals") / "run"
    result = run(resolve("quick", sets=[*SETS, f"out={out}"]))
    return result


def test_a_run_calibrates_and_reports_intervals(trained):
    m = trained.metrics
    n_calibration = m["split"]["n_calibration"]
    assert n_calibration == round(0.1 * 240) and m["split"]["n_train"] == 240 - n_calibration
    intervals = m["intervals"]
    assert intervals["level"] == 0.9 and intervals["n_calibration"] == m["split"]["n_calibration"]
    assert 0 <= intervals["coverage"] <= 100 and intervals["mean_width"] > 0
    assert [row["level"] for row in intervals["curve"]] == [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    assert set(m["age_thresholds"]) == {"18", "21", "25"}
    folder = RunFolder(trained.run_dir)
    rows = list(csv.DictReader(folder.predictions.open()))
    assert len(rows) == m["n_test"] and all(float(r["low"]) <= float(r["predicted"]) <= float(r["high"]) for r in rows)
    inside = sum(float(r["low"]) <= float(r["age"]) <= float(r["high"]) for r in rows)
    assert 100 * inside / len(rows) == pytest.approx(intervals["coverage"], abs=0.5)  # ends rounded to 0.1
    sides = list(csv.DictReader(folder.split.open()))
    assert sum(r["side"] == "calibration" for r in sides) == m["split"]["n_calibration"]
    assert (folder.figures / "intervals.png").is_file() and (folder.figures / "age_threshold.png").is_file()
    report = folder.report.read_text()
    assert "90 % intervals: test coverage" in report and "figures/intervals.png" in report
    assert "## 90 % intervals by true age" in report


def test_a_run_with_enough_calibration_faces_calibrates_by_group(tmp_path):
    sets = [
        "dataset_options.n=1000",
        "epochs=1",
        "image_size=32",
        "batch_size=64",
        "k=5",
        "bf16=off",
        "calibration=0.6",
        f"out={tmp_path / 'r'}",
    ]
    result = run(resolve("quick", sets=sets))
    intervals = result.estimator.intervals
    n_cal = result.metrics["split"]["n_calibration"]
    assert len(intervals.quantiles) == n_cal // 200 >= 2  # as many groups as hold 200 faces, up to 6
    row = next(r for r in result.metrics["intervals"]["curve"] if r["level"] == 0.9)
    assert {"coverage", "pooled_coverage", "constant_coverage"} <= set(row)
    report = RunFolder(result.run_dir).report.read_text()
    assert "one quantile for all faces at the same level" in report
    assert AgeEstimator.load(RunFolder(result.run_dir).model).intervals == intervals


@pytest.mark.parametrize("grouped", [False, True])
def test_intervals_survive_save_load_export_and_predict(trained, tmp_path, grouped):
    folder = RunFolder(trained.run_dir)
    estimator = AgeEstimator.load(folder.model)
    assert estimator.intervals == trained.estimator.intervals and estimator.intervals.n_calibration > 0
    images = random_face_arrays(12, 32, seed=5).images
    if grouped:  # groups of estimates, calibrated on more faces than the small run holds
        faces = random_face_arrays(60, 32, seed=6)
        emb = estimator.embed(faces.images)
        predicted, spread = estimator.retriever.predict(emb), estimator.retriever.spread(emb)
        estimator.intervals = ConformalIntervals.calibrate(faces.ages, predicted, spread, 0.8, groups=3, min_group=20)
        assert len(estimator.intervals.quantiles) >= 2
        shutil.copytree(folder.path, tmp_path / "run")
        folder = RunFolder(tmp_path / "run")
        estimator.save(folder.model)
        assert AgeEstimator.load(folder.model).intervals == estimator.intervals
    e = estimator.estimate(images, under=30)
    np.testing.assert_allclose(e.age, estimator.predict(images).numpy(), rtol=1e-6)
    low, high = estimator.intervals.bounds(torch.from_numpy(e.age), torch.from_numpy(e.spread))
    np.testing.assert_allclose((e.low, e.high), (low.numpy(), high.numpy()), rtol=1e-6)
    assert ((e.under >= 0) & (e.under <= 1)).all()
    export_bundle(folder.path, tmp_path / "bundle", "torchscript")
    from_bundle = Bundle(tmp_path / "bundle").estimate(images.numpy(), under=30)
    for key in ("age", "spread", "low", "high", "under"):
        np.testing.assert_allclose(getattr(from_bundle, key), getattr(e, key), atol=1e-3, err_msg=key)

    photo = tmp_path / "face.png"
    Image.fromarray(images[0].permute(1, 2, 0).numpy()).save(photo)
    for model in (folder.path, tmp_path / "bundle"):
        as_csv = runner.invoke(app, ["predict", str(model), str(photo), "--under", "30"])
        assert as_csv.exit_code == 0, as_csv.output
        row = next(csv.DictReader(io.StringIO(as_csv.stdout)))
        assert float(row["low"]) <= float(row["age"]) <= float(row["high"]) and 0 <= float(row["p_under_30"]) <= 1
        line = json.loads(runner.invoke(app, ["predict", str(model), str(photo), "--json"]).stdout)
        face = line["faces"][0]
        assert face["low"] == pytest.approx(float(row["low"]), abs=0.01) and "p_under" not in face


def test_evaluate_calibrates_again_on_another_dataset(trained, tmp_path):
    out = tmp_path / "m.json"
    options = "--dataset synthetic --set dataset_options.n=100 --set dataset_options.seed=7 --recalibrate 0.3"
    args = ["evaluate", str(trained.run_dir), *options.split(), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    m = json.loads(out.read_text())
    assert m["n_recalibration"] == 30 and m["n_test"] == 70
    again = m["recalibrated"]["intervals"]
    assert again["n_calibration"] == 30 and again["level"] == m["intervals"]["level"] == 0.9
    assert m["intervals"]["n_calibration"] == trained.estimator.intervals.n_calibration  # the run's, as calibrated
    assert "calibrated on 30 of these faces" in result.output
    bad = runner.invoke(app, [*args[:-4], "--recalibrate", "1.5"])
    assert bad.exit_code == 2 and "between 0 and 1" in bad.output and "Traceback" not in bad.output


def test_recalibrated_coverage_against_the_same_draw_by_hand(trained):
    estimator = AgeEstimator.load(RunFolder(trained.run_dir).model)
    model_intervals = estimator.intervals
    data = random_face_arrays(80, 32, seed=8)
    m, _ = evaluate_recalibrated(estimator, data, estimator.retriever.ages, 0.25, seed=4)
    assert estimator.intervals == model_intervals  # evaluating does not change the model
    order = torch.randperm(80, generator=torch.Generator().manual_seed(4)).tolist()
    emb = estimator.embed(data.images)
    age, spread = estimator.retriever.predict(emb), estimator.retriever.spread(emb)
    scores = sorted(
        abs(data.ages[i].item() - age[i].item()) / (spread[i].item() + model_intervals.offset) for i in order[:20]
    )
    q = scores[math.ceil(21 * 0.9) - 1]
    inside = [
        abs(data.ages[i].item() - age[i].item()) <= q * (spread[i].item() + model_intervals.offset) + 1e-4
        for i in order[20:]
    ]
    assert m["recalibrated"]["intervals"]["quantile"] == pytest.approx(q, rel=1e-5)
    assert m["recalibrated"]["intervals"]["coverage"] == pytest.approx(100 * sum(inside) / 60)
    assert m["n_test"] == 60 and m["n_recalibration"] == 20


def test_a_face_shows_the_interval_beside_the_age():
    from agemetric.analysis import FaceResult

    assert str(FaceResult((0, 0, 9, 9), 34.2, 29.4, 40.1)) == "34 (29-40)"
    assert str(FaceResult(None, 34.24)) == "34.2"  # a model without intervals
    missing = FaceResult(None, None, note="no face found: centre framing")
    assert str(missing) == "no face found: centre framing"
    assert missing.to_dict(under=True) == {
        "box": None,
        "age": None,
        "low": None,
        "high": None,
        "p_under": None,
        "note": "no face found: centre framing",
    }


def test_calibration_zero_gives_no_intervals(tmp_path):
    result = run(resolve("quick", sets=[*SETS[:-1], "figures=false", "calibration=0", f"out={tmp_path / 'r'}"]))
    assert "intervals" not in result.metrics and result.estimator.intervals is None
    assert result.metrics["split"]["n_calibration"] == 0
    assert "low" not in next(csv.DictReader(RunFolder(result.run_dir).predictions.open()))
    assert AgeEstimator.load(RunFolder(result.run_dir).model).estimate(random_face_arrays(2, 32).images).low is None

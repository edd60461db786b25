"""Adapting to the user's own photos (`agemetric.adaptation`, ``AgeEstimator.adapt``,
``Bundle.adapt``, ``agemetric adapt``): the choice against a brute-force leave-one-out, never
worse where the new faces say nothing, and adapted models that save, load, export and predict."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from agemetric.adaptation import (
    MIN_FACES,
    GalleryArrays,
    Mix,
    _loo,
    _Neighbours,
    _select,
    adapted_gallery,
    candidates,
    choose,
)
from agemetric.bundle import Bundle
from agemetric.cli import app
from agemetric.errors import AgemetricError
from agemetric.estimator import AgeEstimator
from agemetric.export import export_bundle
from agemetric.interfaces.gallery import Gallery
from agemetric.testing import random_face_arrays

runner = CliRunner()


def _brute_loo(train: GalleryArrays, user_emb, user_ages, mix: Mix) -> np.ndarray:
    """Each of your faces estimated by `Gallery.mean_age` on the gallery ``mix`` makes, without
    that face: one gallery per face, built explicitly."""
    out = []
    for i in range(len(user_ages)):
        others = np.delete(np.arange(len(user_ages)), i)
        parts = []
        if mix.gallery in ("training", "both"):
            weights = np.ones(len(train)) if train.weights is None else train.weights
            parts.append((train.embeddings, train.ages, weights))
        if mix.gallery in ("yours", "both"):
            parts.append((user_emb[others], user_ages[others], np.full(len(others), mix.weight)))
        emb, ages, weights = (np.concatenate(p) for p in zip(*parts, strict=True))
        gallery = Gallery().set(torch.tensor(emb, dtype=torch.float32), torch.tensor(ages), None, torch.tensor(weights))
        out.append(float(gallery.mean_age(torch.tensor(user_emb[i : i + 1], dtype=torch.float32), mix.k)[0]))
    return np.array(out)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(MIN_FACES, 24), weighted=st.booleans())
def test_leave_one_out_matches_a_gallery_built_for_each_face(seed, n, weighted):
    rng = np.random.default_rng(seed)
    train = GalleryArrays(
        rng.normal(size=(60, 3)).astype(np.float32),
        rng.uniform(1, 90, 60).astype(np.float32),
        weights=rng.integers(1, 5, 60).astype(np.float32) if weighted else None,
    )
    emb, ages = rng.normal(size=(n, 3)).astype(np.float32), rng.uniform(1, 90, n)
    mixes = candidates(n, len(train), k_model=7)
    neighbours = _Neighbours(train, emb, ages, max(m.k for m in mixes))
    maes = []
    for mix in mixes:
        fast = _loo(neighbours, mix, np.arange(n))[0]
        slow = _brute_loo(train, emb, ages, mix)
        np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-4, err_msg=str(mix))
        maes.append(np.abs(slow - ages).mean())
    chosen, _ = _select(neighbours, mixes, np.arange(n))
    assert np.abs(_brute_loo(train, emb, ages, chosen) - ages).mean() == pytest.approx(min(maes), abs=1e-4)


def _faces(rng, n: int, shift: float = 0.0):
    """Faces whose age follows their embedding's first value (noise 3 years), ``shift`` years
    younger than the training faces that look like them."""
    emb = rng.normal(size=(n, 4)).astype(np.float32)
    return emb, 45 + 12 * emb[:, 0] + rng.normal(0, 3, n) - shift


def _domain(rng, n: int = 40, shift: float = 15.0):
    """A training gallery and ``n`` faces of a new domain (``shift`` years younger)."""
    train = GalleryArrays(*(a.astype(np.float32) for a in _faces(rng, 400)))
    return (train, *_faces(rng, n, shift))


def _test_mae(gallery: GalleryArrays, k: int, emb: np.ndarray, ages: np.ndarray) -> float:
    weights = None if gallery.weights is None else torch.tensor(gallery.weights)
    g = Gallery().set(torch.tensor(gallery.embeddings), torch.tensor(gallery.ages, dtype=torch.float32), None, weights)
    return float((g.mean_age(torch.tensor(emb), k).double() - torch.tensor(ages)).abs().mean())


def test_faces_that_carry_no_information_never_make_it_worse():
    """Your faces come from the training faces' own domain: nothing to gain. Over 20 draws the
    gallery is kept nearly always, and never changed for the worse on 2,000 fresh faces."""
    adapted = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        train, emb, ages = _domain(rng, shift=0.0)
        report = choose(train, emb, ages, k_model=20)
        adapted += report.adapted
        new = adapted_gallery(train, GalleryArrays(emb, ages.astype(np.float32)), report.chosen)
        fresh_emb, fresh_ages = _faces(rng, 2000)
        before, after = (
            _test_mae(train, 20, fresh_emb, fresh_ages),
            _test_mae(new, report.chosen.k, fresh_emb, fresh_ages),
        )
        assert after <= before + 0.1, (seed, report.chosen, before, after)
        if not report.adapted:
            assert report.chosen == Mix("training", 20) and "kept" in report.reason
    assert adapted <= 2


def test_faces_of_a_shifted_domain_are_used_and_lower_the_error():
    train, emb, ages = _domain(np.random.default_rng(0))
    report = choose(train, emb, ages, k_model=20, intervals=INTERVALS)
    assert report.adapted and report.chosen.gallery in ("yours", "both")
    assert report.mae_after < report.mae_before - 5 and report.gain_low > 0
    assert report.coverage_before < 0.5 and 0.8 <= report.coverage_after <= 1.0
    assert report.intervals["level"] == 0.9 and report.intervals["n_calibration"] == 40
    said = str(report).splitlines()
    assert said[0] == f"Adapted: {report.reason}." and said[1] == f"gallery: {report.chosen}"
    assert said[2].startswith("MAE on your 40 faces, cross-validated: ") and said[3].startswith("90 % intervals")


INTERVALS = {"level": 0.9, "quantile": 1.5, "offset": 1.0, "normalised": True, "n_calibration": 100}


def test_too_few_faces_is_a_one_line_error():
    train, emb, ages = _domain(np.random.default_rng(0), n=MIN_FACES - 1)
    with pytest.raises(AgemetricError, match=f"at least {MIN_FACES} labelled faces"):
        choose(train, emb, ages, k_model=20)


def test_copies_of_a_face_do_not_count_as_evidence():
    """The same photo given several times (the same embedding, the same age) would estimate
    itself exactly under leave-one-out and count as independent evidence; copies are held out
    together and weigh as one face, so with the training gallery the decision is the one the
    different faces alone give (faces that carry no information stay out of the gallery), and
    copies of too few faces are refused."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        train, emb, ages = _domain(rng, n=15, shift=0.0)
        alone = choose(train, emb, ages, k_model=20)
        copied = choose(train, np.repeat(emb, 3, axis=0), np.repeat(ages, 3), k_model=20)
        assert (copied.adapted, copied.chosen) == (alone.adapted, alone.chosen), seed
        assert copied.gain == pytest.approx(alone.gain) and copied.mae_after == pytest.approx(alone.mae_after)
        assert copied.mae_before_se == pytest.approx(alone.mae_before_se)
    train, emb, ages = _domain(np.random.default_rng(0), n=2)
    with pytest.raises(AgemetricError, match="at least 10 different labelled faces .* of your 24, only 2 differ"):
        choose(train, np.repeat(emb, 12, axis=0), np.repeat(ages, 12), k_model=20)


# -- a run and a bundle, adapted --------------------------------------------------------------------


def _clustered_faces(n_per: int = 12):
    """Faces of two kinds (two images, each in ``n_per`` slightly different versions), labelled 8
    and 75: your faces tell their ages; the small run's gallery of random faces cannot."""
    base = random_face_arrays(2, 32, seed=42)
    noise = torch.randint(-4, 5, (2 * n_per, *base.images.shape[1:]), generator=torch.Generator().manual_seed(0))
    images = (base.images.repeat_interleave(n_per, dim=0).int() + noise).clamp(0, 255).to(torch.uint8)
    ages = torch.tensor([8.0] * n_per + [75.0] * n_per)
    return images, ages


def test_an_adapted_run_saves_loads_exports_and_predicts(tmp_path, make_run):
    estimator = make_run(tmp_path / "run")
    images, ages = _clustered_faces()
    report = estimator.adapt(list(images.permute(0, 2, 3, 1).numpy()), ages.tolist())  # photos as arrays
    assert report.adapted and report.chosen.gallery in ("yours", "both")
    torch.testing.assert_close(estimator.predict(images[[0, -1]]), torch.tensor([8.0, 75.0]), atol=0.5, rtol=0)
    estimator.save(tmp_path / "run" / "model.pt")
    loaded = AgeEstimator.load(tmp_path / "run" / "model.pt")
    assert loaded.adaptation == report.to_dict() and loaded.retriever.k == report.chosen.k
    assert loaded.intervals.n_calibration == len(ages)
    torch.testing.assert_close(loaded.predict(images), estimator.predict(images))
    export_bundle(tmp_path / "run", tmp_path / "bundle", "torchscript")
    bundle = Bundle(tmp_path / "bundle")
    assert bundle.adaptation == report.to_dict()
    np.testing.assert_allclose(bundle.predict(images.numpy()), estimator.predict(images).numpy(), atol=1e-3)


def test_a_weighted_gallery_exports_and_the_bundle_weighs_as_the_run(tmp_path, make_run):
    estimator = make_run(tmp_path / "run", retriever_options={"references": "per-age", "per_age": 1})
    assert estimator.retriever.gallery.weights is not None
    export_bundle(tmp_path / "run", tmp_path / "bundle", "torchscript")
    images = random_face_arrays(10, 32, seed=3).images
    expected = estimator.estimate(images, under=40)
    got = Bundle(tmp_path / "bundle").estimate(images.numpy(), under=40)
    for key in ("age", "spread", "under"):
        np.testing.assert_allclose(getattr(got, key), getattr(expected, key), atol=1e-3, err_msg=key)


def test_an_adapted_bundle_is_saved_beside_and_predicts_as_the_adapted_run(tmp_path, make_run):
    make_run(tmp_path / "run")
    export_bundle(tmp_path / "run", tmp_path / "bundle", "torchscript")
    images, ages = _clustered_faces()
    bundle = Bundle(tmp_path / "bundle")
    report = bundle.adapt(images.numpy(), ages.numpy())
    manifest = bundle.save(tmp_path / "adapted")
    assert manifest["adaptation"]["chosen"] == report.to_dict()["chosen"]
    again = Bundle(tmp_path / "adapted")
    np.testing.assert_allclose(again.predict(images.numpy()[[0, -1]]), [8.0, 75.0], atol=0.5)
    original = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert original.get("adaptation") is None  # the bundle adapted from is untouched
    run = AgeEstimator.load(tmp_path / "run" / "model.pt")
    assert run.adapt(images, ages).chosen == report.chosen  # a batch in, as from a bundle


# -- the command --------------------------------------------------------------------------------------


@pytest.fixture
def your_faces(tmp_path):
    """A CSV dataset of 24 of your faces (two kinds, aged 8 and 75) and one photo of each kind."""
    images, ages = _clustered_faces()
    root = tmp_path / "mine"
    root.mkdir()
    rows = ["path,age"]
    for i, (image, age) in enumerate(zip(images, ages, strict=True)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / f"{i}.png")
        rows.append(f"{i}.png,{age:g}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv", (root / "0.png", root / f"{len(ages) - 1}.png")


def _ages(output: str) -> list[float]:
    return [float(row["age"]) for row in csv.DictReader(io.StringIO(output))]


@pytest.mark.parametrize("kind", ["run", "bundle"])
def test_adapt_command_writes_a_model_that_predict_evaluate_and_export_use(tmp_path, make_run, your_faces, kind):
    labels, (young, old) = your_faces
    make_run(tmp_path / "run")
    model = tmp_path / "run"
    if kind == "bundle":
        export_bundle(model, tmp_path / "bundle", "torchscript")
        model = tmp_path / "bundle"
    before = model_files(model)
    result = runner.invoke(app, ["adapt", str(model), "--data-dir", str(labels), "--out", str(tmp_path / "adapted")])
    assert result.exit_code == 0, result.output
    assert "Adapted: your 24 faces lower the cross-validated MAE" in result.output and "coverage" in result.output
    assert model_files(model) == before  # the model adapted from is untouched
    adapted = tmp_path / "adapted"
    result = runner.invoke(app, ["predict", str(adapted), str(young), str(old), "--csv"])
    assert result.exit_code == 0, result.output
    assert _ages(result.stdout) == pytest.approx([8.0, 75.0], abs=0.5)
    if kind == "run":
        report = json.loads((adapted / "adaptation.json").read_text())
        assert report["adapted"] and report["n_faces"] == 24
        result = runner.invoke(app, ["evaluate", str(adapted), "--data-dir", str(labels)])
        assert result.exit_code == 0, result.output
        assert runner.invoke(app, ["export", str(adapted), "--out", str(tmp_path / "b")]).exit_code == 0
        assert json.loads((tmp_path / "b" / "bundle.json").read_text())["adaptation"] == report


def model_files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_adapt_command_errors(tmp_path, make_run, your_faces):
    labels, _ = your_faces
    make_run(tmp_path / "run")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    for args, message in [
        (["--out", str(tmp_path / "taken")], "exists and is not an empty folder"),
        (["--out", str(tmp_path / "a"), "--limit", "5"], "at least 10 labelled faces"),
        (["--out", str(tmp_path / "a"), "--set", "framing=box"], "--set framing: adapt takes only"),
    ]:
        result = runner.invoke(app, ["adapt", str(tmp_path / "run"), "--data-dir", str(labels), *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine" and not (tmp_path / "a").exists()


def test_ages_are_checked_before_any_photo_is_read_from_a_run_and_a_bundle(tmp_path, make_run, monkeypatch):
    estimator = make_run(tmp_path / "run")
    export_bundle(tmp_path / "run", tmp_path / "bundle", "torchscript")
    bundle = Bundle(tmp_path / "bundle")
    images, _ = _clustered_faces()
    photos = list(images.permute(0, 2, 3, 1).numpy())
    cases = [
        (None, "give one age per face (24 faces, no ages)"),
        ([30.0] * 23, "give one age per face (24 faces, 23 ages)"),
        ([30.0] * 23 + [-5], "age -5 of face 23 is not a number of years between 0 and 150"),
        ([500] + [30.0] * 23, "age 500 of face 0 is not a number of years between 0 and 150"),
        (["thirty"] + [30.0] * 23, "age 'thirty' of face 0 is not a number of years"),
    ]
    monkeypatch.setattr(AgeEstimator, "as_batch", lambda *a: pytest.fail("a photo was read before the ages"))
    for ages, message in cases:
        for model in (estimator, bundle):
            with pytest.raises(AgemetricError, match=re.escape(message)):
                model.adapt(photos, ages)


def test_too_many_faces_is_a_one_line_error_before_any_work():
    from agemetric.adaptation import MAX_FACES

    train = GalleryArrays(np.zeros((5, 2), np.float32), np.full(5, 30.0, np.float32))
    with pytest.raises(AgemetricError, match="at most 2,000 labelled faces, got 2,001; .* --limit 2000"):
        choose(train, np.zeros((MAX_FACES + 1, 2), np.float32), np.full(MAX_FACES + 1, 30.0), k_model=3)


def test_adapt_needs_a_nearest_faces_retriever(tmp_path, make_run):
    estimator = make_run(tmp_path / "run", retriever="ridge")
    images, ages = _clustered_faces()
    with pytest.raises(AgemetricError, match="adapt needs a retriever that estimates from the nearest faces"):
        estimator.adapt(images, ages)

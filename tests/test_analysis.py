"""One estimation path: `AgeEstimator.analyze`, `Bundle.analyze` and ``agemetric predict --json``
give the same faces, ages, intervals and probabilities for the same photos."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from agemetric.analysis import FaceResult, FramedPhoto, PhotoResult, estimate_photos
from agemetric.bundle import Bundle
from agemetric.cli import app
from agemetric.errors import AgemetricError
from agemetric.estimator import AgeEstimator
from agemetric.export import export_bundle
from agemetric.photos import FoundFace

runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory, make_run):
    """A run with calibrated intervals, its bundle, and photos: three readable, one not."""
    root = tmp_path_factory.mktemp("analysis")
    make_run(root / "run", interval_level=0.8)
    export_bundle(root / "run", root / "bundle", "torchscript")
    photos = []
    for i, (w, h) in enumerate([(40, 30), (64, 64), (90, 50)]):
        pixels = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        photos.append(root / f"photo{i}.png")
        Image.fromarray(pixels).save(photos[-1])
    (root / "broken.jpg").write_text("not a photo")
    photos.insert(1, root / "broken.jpg")
    return AgeEstimator.load(root / "run" / "model.pt"), Bundle(root / "bundle"), root, photos


def _values(result: PhotoResult) -> list[tuple]:
    return [(f.box, f.age, f.low, f.high, f.p_under, f.note) for f in result.faces]


def test_a_run_a_bundle_and_the_command_line_give_the_same_faces(models):
    estimator, bundle, root, photos = models
    from_run = estimator.analyze([str(p) for p in photos], under=30)
    from_bundle = bundle.analyze([str(p) for p in photos], under=30)
    assert [r.source for r in from_run] == [str(p) for p in photos] == [r.source for r in from_bundle]
    assert from_run[1].error.startswith("cannot read image") and from_run[1].faces == () and from_bundle[1].error
    for ours, theirs in zip(from_run, from_bundle, strict=True):
        assert ours.size == theirs.size and len(ours.faces) == len(theirs.faces)
        for a, b in zip(ours.faces, theirs.faces, strict=True):
            assert a.box == b.box and a.note == b.note
            np.testing.assert_allclose([a.age, a.low, a.high, a.p_under], [b.age, b.low, b.high, b.p_under], atol=1e-3)
    readable = [r for r in from_run if r.error is None]
    assert all(len(r.faces) == 1 and r.faces[0].low <= r.faces[0].age <= r.faces[0].high for r in readable)
    for model, results in ((root / "run", from_run), (root / "bundle", from_bundle)):
        cli = runner.invoke(app, ["predict", str(model), *map(str, photos), "--json", "--under", "30"])
        assert cli.exit_code == 1  # the unreadable photo; the others are printed
        assert [json.loads(line) for line in cli.stdout.splitlines()] == [r.to_dict() for r in results if not r.error]
        assert "broken.jpg: cannot read image" in cli.stderr
    assert readable[0].to_dict()["faces"][0].keys() == {"box", "age", "low", "high", "p_under", "note"}


def test_analyze_takes_photos_in_memory_and_one_photo_alone(models):
    estimator, bundle, _, photos = models
    image = Image.open(photos[0])
    for predictor in (estimator, bundle):
        (alone,) = predictor.analyze(photos[0])
        in_memory = predictor.analyze([image, np.asarray(image)])
        assert [r.source for r in in_memory] == ["image 0", "image 1"]
        assert _values(in_memory[0]) == _values(in_memory[1]) == _values(alone)
        with pytest.raises(AgemetricError, match=r"photos\[1\]: expected a file path, a PIL image"):
            predictor.analyze([image, 42])
        with pytest.raises(AgemetricError, match="under: expected an age in years between 0 and 150, got 200"):
            predictor.analyze(image, under=200)


def test_a_large_photo_in_memory_keeps_its_own_size(models):
    estimator, _, _, _ = models
    wide = np.zeros((60, 5000, 3), np.uint8)  # wider than photos.MAX_SIDE: shrunk for framing
    results = estimator.analyze([Image.fromarray(wide), wide])
    assert [r.size for r in results] == [(5000, 60), (5000, 60)]


def test_a_framed_photo_sent_without_its_pixels_gives_the_same_results(models):
    estimator, _, _, _ = models
    pixels = np.random.default_rng(5).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    shown = Image.new("RGB", (4096, 2048))  # an 8192 x 4096 photo, read at half its side
    framed = FramedPhoto("big.jpg", shown, (8192, 4096), None, (FoundFace(0, pixels, (100, 50, 300, 250), None),))
    sent = pickle.loads(pickle.dumps(framed.without_image()))  # as a framing process sends it
    assert sent.image is None and sent.faces[0].box == (200, 100, 600, 500)  # in the photo's own pixels
    assert len(pickle.dumps(sent)) < 2 * pixels.nbytes
    results = estimate_photos(estimator, [framed, sent], under=30)
    assert results[0].to_dict() == results[1].to_dict() and results[0].faces[0].box == (200, 100, 600, 500)


def test_results_read_well():
    face = FaceResult((10, 20, 50, 70), 34.24, 29.4, 40.1, 0.125)
    result = PhotoResult("group.jpg", (640, 480), (face, FaceResult(None, None, note="no face found")), under=18)
    assert repr(result) == "PhotoResult('group.jpg', 640x480, faces=[34 (29-40), no face found])"
    expected = {"box": [10, 20, 50, 70], "age": 34.24, "low": 29.4, "high": 40.1, "p_under": 0.125, "note": None}
    assert result.to_dict()["faces"][0] == expected
    unread = PhotoResult("x.jpg", None, error="cannot read image")
    assert repr(unread) == "PhotoResult('x.jpg', error='cannot read image')"


def test_a_bundle_embeds_photos_as_the_run_does(models):
    estimator, bundle, _, photos = models
    np.testing.assert_allclose(bundle.embed(str(photos[0]))[0], estimator.embed(str(photos[0])).numpy(), atol=1e-4)
    np.testing.assert_allclose(bundle.predict([str(photos[0])]), estimator.predict(str(photos[0])).numpy(), atol=1e-3)
    pattern = (
        r"Bundle\('.*bundle', runtime='torchscript', image_size=32, k=3, gallery of 60 faces, intervals calibrated\)"
    )
    assert re.fullmatch(pattern, repr(bundle))


def test_the_network_threads_can_be_chosen_when_loading(models):
    import torch

    from agemetric.predictors import load_predictor

    before = torch.get_num_threads()
    try:
        for path in (models[2] / "run", models[2] / "bundle"):
            torch.set_num_threads(before + 1)
            load_predictor(path, threads=1)
            assert torch.get_num_threads() == 1, path
    finally:
        torch.set_num_threads(before)


def test_photos_whose_framing_process_died_are_framed_again_and_only_the_one_that_stops_them_is_reported():
    """When a framing process dies, every photo its pool held fails (``BrokenProcessPool``): they
    are sent again together, and one that fails again is tried alone, so that a photo sent again
    beside the culprit is not blamed for it."""
    from collections import Counter
    from concurrent.futures.process import BrokenProcessPool

    from agemetric.analysis import analyses

    class Pool:
        dead = False

    class Framing:
        """A photo's answer from ``pool``: "crash.jpg" kills the pool, and every photo it holds fails."""

        def __init__(self, pool: Pool, photo: str):
            self.pool, self.photo = pool, photo

        def result(self):
            if self.photo == "crash.jpg":
                self.pool.dead = True
            if self.pool.dead:
                raise BrokenProcessPool("a framing process died")
            return [FramedPhoto(self.photo, None, (10, 10), None)]

    class DyingProcesses:
        def __init__(self):
            self.pool, self.tries = Pool(), Counter()

        def submit(self, photo, index, count):
            self.tries[photo] += 1
            if self.pool.dead:  # as FramingProcesses starts new processes
                self.pool = Pool()
            return Framing(self.pool, photo)

    processes = DyingProcesses()
    photos = ["crash.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]  # chunks of 2: the first two die together
    results = [result for result, _ in analyses(None, photos, chunk=2, processes=processes)]
    assert [r.source for r in results] == photos
    assert [r.error is None for r in results] == [False, True, True, True, True]
    assert "framing process stopped while reading it" in results[0].error
    # b: with the culprit twice, then alone; c, d and e, sent ahead to the pool that died: once more
    assert processes.tries == {"crash.jpg": 3, "b.jpg": 3, "c.jpg": 2, "d.jpg": 2, "e.jpg": 2}


def test_each_photo_is_counted_as_framed_once_before_its_chunk_is_estimated(models):
    """``framed`` is a progress bar's step: once per photo (one that cannot be read included),
    all of a chunk's before its results come out."""
    from agemetric.analysis import analyses

    estimator, _, _, photos = models  # four photos, the second unreadable
    counted = []
    seen_at_each_result = [len(counted) for _ in analyses(estimator, photos, chunk=3, framed=lambda: counted.append(1))]
    assert seen_at_each_result == [3, 3, 3, 4]


def test_a_photo_sent_again_to_the_framing_processes_is_counted_once():
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from agemetric.analysis import analyses

    class OnceDying:
        """Framing processes whose pool dies under the first photo sent: it is sent again."""

        def __init__(self):
            self.sent = 0

        def submit(self, photo, index, count):
            self.sent += 1
            future = Future()
            if self.sent == 1:
                future.set_exception(BrokenProcessPool("a framing process died"))
            else:
                future.set_result([FramedPhoto(photo, None, (10, 10), None)])
            return future

    processes, counted = OnceDying(), []
    photos = ["a.jpg", "b.jpg", "c.jpg"]
    results = [r for r, _ in analyses(None, photos, chunk=2, processes=processes, framed=lambda: counted.append(1))]
    assert [r.error for r in results] == [None, None, None]
    assert processes.sent == 4 and len(counted) == 3

"""Photos in: any image file read upright in RGB, in-memory images checked, predict on photos."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from agemetric import AgeEstimator, AgemetricError, resolve
from agemetric.cli import app
from agemetric.photos import MAX_SIDE, as_image, load_photo, photo_batch
from agemetric.testing import random_face_arrays

runner = CliRunner()


def _pattern(w: int = 60, h: int = 40) -> np.ndarray:
    """An asymmetric RGB picture: a red left half, a blue bottom stripe."""
    a = np.full((h, w, 3), 200, np.uint8)
    a[:, : w // 2, 0], a[:, : w // 2, 1:] = 255, 0
    a[-h // 4 :, :, :2], a[-h // 4 :, :, 2] = 0, 255
    return a


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show the picture rotated 90 degrees clockwise
    Image.fromarray(_pattern()).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    upright = load_photo(tmp_path / "turned.jpg")
    assert upright.size == (40, 60)  # width and height swapped
    expected = np.asarray(Image.fromarray(_pattern()).transpose(Image.Transpose.ROTATE_270))
    assert np.abs(np.asarray(upright).astype(int) - expected).mean() < 8  # JPEG noise only


@pytest.mark.parametrize(
    "mode, value",
    [("L", 128), ("CMYK", (0, 0, 0, 0)), ("P", 3), ("I;16", 65535), ("RGBA", (10, 20, 30, 0)), ("LA", (5, 0))],
)
def test_every_image_mode_becomes_rgb(tmp_path, mode, value):
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    Image.new(mode, (30, 20), value).save(path)
    image = load_photo(path)
    assert image.mode == "RGB" and image.size == (30, 20)
    if mode in ("RGBA", "LA"):  # fully transparent: the white background shows
        assert np.asarray(image).min() == 255
    if mode == "I;16":  # 16-bit white is 8-bit white
        assert np.asarray(image).min() == 255


def test_a_huge_photo_is_decoded_reduced(tmp_path):
    Image.new("RGB", (9000, 6000), (90, 120, 150)).save(tmp_path / "big.jpg", quality=70)
    image = load_photo(tmp_path / "big.jpg")
    assert max(image.size) <= MAX_SIDE and image.size[0] / image.size[1] == pytest.approx(1.5, abs=0.01)


@pytest.mark.parametrize(
    "item, message",
    [
        (np.zeros((20, 20, 3), np.float32), "expected uint8 pixels 0-255, got dtype float32"),
        (torch.rand(20, 20, 3), "expected uint8 pixels 0-255, got dtype float32"),
        (np.zeros((20, 20, 3), np.int64), "expected uint8 pixels 0-255, got dtype int64"),
        (
            np.zeros((3, 20, 20), np.uint8),
            r"got shape \(3, 20, 20\) \(channels first",
        ),
        (np.zeros((20, 20, 2), np.uint8), r"expected an \(H, W, 3\) RGB, \(H, W, 4\) RGBA or \(H, W\) grey array"),
        (np.zeros((0, 20), np.uint8), r"got shape \(0, 20\)"),
        (12, "expected a file path, a PIL image or a uint8"),
    ],
)
def test_in_memory_images_are_checked(item, message):
    with pytest.raises(AgemetricError, match=message):
        as_image(item)


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1), (20, 30, 4)])
def test_grey_and_rgba_arrays_become_rgb_as_the_same_pil_images_do(shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    image = as_image(pixels)
    assert image.mode == "RGB" and image.size == (30, 20)
    expected = as_image(Image.fromarray(pixels.squeeze(-1) if shape[-1] == 1 else pixels))
    assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_a_batch_must_have_the_model_s_size_and_dtype():
    good = np.zeros((2, 3, 32, 32), np.uint8)
    assert photo_batch(good, 32, None) is good
    with pytest.raises(AgemetricError, match=r"must be uint8 \(N, 3, 32, 32\) .* got \(2, 3, 48, 48\)"):
        photo_batch(np.zeros((2, 3, 48, 48), np.uint8), 32, None)
    with pytest.raises(AgemetricError, match="a float tensor is not taken as pixels"):
        photo_batch(torch.zeros(2, 3, 32, 32), 32, None)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder (quick preset, centre framing, 32 px) with a random gallery."""
    est = AgeEstimator.from_config(resolve("quick", sets=["image_size=32", "k=3"]))
    est.fit_gallery(random_face_arrays(30, size=32))
    folder = tmp_path_factory.mktemp("run")
    est.save(folder / "model.pt")
    return folder


def test_estimator_takes_paths_pil_arrays_and_tensors_alike(run_folder, tmp_path):
    est = AgeEstimator.load(run_folder / "model.pt")
    picture = _pattern(50, 42)
    Image.fromarray(picture).save(tmp_path / "p.png")
    as_path = est.predict(str(tmp_path / "p.png"))
    for same in (tmp_path / "p.png", Image.fromarray(picture), picture, torch.from_numpy(picture)):
        torch.testing.assert_close(est.predict(same), as_path)
    assert est.predict([picture, picture[:, ::-1].copy()]).shape == (2,)
    assert est.embed(picture).shape == (1, est.backbone.embedding_dim)


def test_predict_command_pipes_csv_and_json_and_reports_bad_files(run_folder, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(_pattern(), 7 * i, axis=1)).save(photos / f"{i}.png")
    (photos / "notes.txt").write_text("not a photo")  # ignored: not an image name
    (photos / "broken.jpg").write_bytes(b"garbage")
    result = runner.invoke(app, ["predict", str(run_folder), str(photos)])
    assert result.exit_code == 1  # one unreadable file; the others are estimated
    assert "broken.jpg: cannot read image" in result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))  # stdout is not a terminal: CSV, no table
    assert [r["photo"].rsplit("/", 1)[1] for r in rows] == ["0.png", "1.png", "2.png"]
    assert all(r["face"] == "1" and r["left"] == "" and 0 < float(r["age"]) < 90 for r in rows)
    as_json = runner.invoke(app, ["predict", str(run_folder), str(photos / "0.png"), "--json"])
    line = json.loads(as_json.stdout)
    assert line["faces"][0]["box"] is None and line["faces"][0]["age"] == pytest.approx(float(rows[0]["age"]), abs=0.01)
    assert (line["width"], line["height"]) == (60, 40)


def test_predict_command_errors_are_one_line(run_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    photo = tmp_path / "p.png"
    Image.fromarray(_pattern()).save(photo)
    for args, message in (
        ([str(photo), "--json", "--csv"], "--json and --csv: choose one output format"),
        ([str(tmp_path / "empty")], "no photos in"),
    ):
        result = runner.invoke(app, ["predict", str(run_folder), *args])
        assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_training_images_are_read_as_predict_reads_photos(tmp_path):
    """A dataset's images get the same conversions as photos: 16-bit and 0-1 float images keep
    their brightness, and EXIF orientation is applied."""
    import numpy as np
    from PIL import Image

    from agemetric.datasets import CSVFaces

    ramp = np.linspace(0, 1, 48 * 32).reshape(48, 32)
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(ramp.astype(np.float32), mode="F").save(tmp_path / "float.tif")
    turned = Image.fromarray(np.zeros((48, 32, 3), np.uint8))  # 32 wide, 48 high, stored turned
    exif = turned.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to show upright
    turned.save(tmp_path / "turned.jpg", exif=exif)
    (tmp_path / "labels.csv").write_text("path,age\ndeep.png,30\nfloat.tif,31\nturned.jpg,32\n")
    dataset = CSVFaces(tmp_path)
    deep, flt, upright = (dataset.load_image(r) for r in dataset.records())
    assert abs(np.asarray(deep).mean() - 127.5) < 1 and abs(np.asarray(flt).mean() - 127.5) < 1
    assert upright.size == (48, 32)


def test_faces_are_found_on_the_framing_threads_in_photo_order():
    import threading

    from agemetric.photos import find_faces, framing_thread_count, framing_threads

    seen = set()

    def framer(image):  # each photo is one grey level: its face says which photo it came from
        seen.add(threading.current_thread().name)
        return image

    photos = [Image.new("RGB", (8, 8), (i, i, i)) for i in range(40)]
    faces = find_faces(photos, 4, framer)
    assert [f.photo for f in faces] == list(range(40))
    assert [int(f.pixels[0, 0, 0]) for f in faces] == list(range(40))
    assert seen and all(name.startswith("agemetric-framing") for name in seen)
    assert len(seen) <= framing_thread_count()
    # photos framed from a framing thread are framed on it, so no thread waits on a busy pool
    nested = [framing_threads().submit(find_faces, photos[:3], 4, framer) for _ in range(2 * framing_thread_count())]
    assert all(len(job.result(timeout=30)) == 3 for job in nested)


def test_predicting_photos_whose_framing_fell_back_says_so():
    """`predict()` estimates a photo without a face found from its fallback framing (documented);
    a warning names it, since `analyze()` leaves such a face unestimated."""
    import warnings

    from agemetric.interfaces import Face

    class Framer:
        def all_faces(self, image):
            return [self(image)]

        def __call__(self, image):  # a dark photo has no face
            found = image.getpixel((0, 0))[0] > 50
            return Face(image, (0, 0, 8, 8) if found else None, None if found else "no face found: centre framing")

    photos = [Image.new("RGB", (8, 8), (v, v, v)) for v in (200, 10, 200)]
    with pytest.warns(UserWarning, match=r"1 of 3 photo\(s\) fell back, e.g. images\[1\] \(no face found: centre"):
        assert photo_batch(photos, 4, Framer()).shape == (3, 3, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        photo_batch([photos[0]], 4, Framer())  # every face found: nothing to say
    estimator = AgeEstimator.from_config(resolve("quick", sets=["image_size=32", "k=3"]))
    estimator.fit_gallery(random_face_arrays(10, size=32))
    estimator._framer = Framer()
    with pytest.warns(UserWarning, match="fell back") as said:
        estimator.predict(photos)
    assert said[0].filename == __file__  # the user's line, past agemetric's and torch's frames

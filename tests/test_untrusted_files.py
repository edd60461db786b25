"""Files a user is given or points agemetric at, read as a hostile but realistic user would make
them: a bundle is data and never runs code; a user's files are never overwritten; memory stays
bounded by what a photo needs; names are printed safely; tampered files give one-line errors."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from agemetric import plugins
from agemetric.bundle import Bundle
from agemetric.bundle_files import MANIFEST
from agemetric.cli import app
from agemetric.errors import AgemetricError
from agemetric.export import export_bundle
from agemetric.hookspecs import hookimpl
from agemetric.interfaces import Face, Framer
from agemetric.testing import on_terminal

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory, make_run):
    folder = tmp_path_factory.mktemp("untrusted") / "run"
    make_run(folder)
    return folder


@pytest.fixture(scope="module")
def bundle(run):
    out = run.parent / "bundle"
    export_bundle(run, out, "torchscript")
    return out


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "album" / "beach.png"
    path.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(path)
    return path


def one_line_error(result, message: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output, result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output


def tampered(bundle: Path, folder: Path, change) -> Path:
    """A copy of ``bundle`` in ``folder`` whose manifest ``change(manifest)`` edited."""
    shutil.copytree(bundle, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    change(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


# -- the headline command on a terminal ---------------------------------------------------------


@pytest.mark.parametrize("under", [[], ["--under", "18"]])
def test_predict_on_a_terminal_prints_a_table(run, bundle, photo, under):
    for model in (run, bundle):
        code, output = on_terminal(["predict", str(model), photo.name, *under], photo.parent)
        assert code == 0, output
        assert "Traceback" not in output and "beach.png" in output and "whole photo" in output
        assert ("P(under 18)" in output) == bool(under)


# -- a bundle is data ---------------------------------------------------------------------------


def test_a_manifest_naming_code_never_runs_it(bundle, photo, tmp_path):
    marker = tmp_path / "pwned"
    attack = {"class": "os:system", "options": {"command": f"touch {marker}"}}
    evil = tampered(bundle, tmp_path / "evil", lambda m: m.update(framing={"name": "pwn", **attack}))
    one_line_error(runner.invoke(app, ["predict", str(evil), str(photo)]), "unknown framer 'pwn'")
    with pytest.raises(AgemetricError, match="unknown framer 'pwn'"):
        Bundle(evil)
    # a known name with a class beside it: the name is used, the class never imported
    ignored = tampered(bundle, tmp_path / "ignored", lambda m: m.update(framing={"name": "center", **attack}))
    assert runner.invoke(app, ["predict", str(ignored), str(photo), "--csv"]).exit_code == 0
    assert Bundle(ignored).framer is None
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["framing"].pop("box"), "framing 'box' lacks its box"),
        (lambda m: m["framing"].update(box="abcd"), "box must be 4 numbers"),
        (lambda m: m["framing"].update(box=[0.5, 0.1, 0.5, 0.9]), "left < right"),
        (lambda m: m.update(framing={"name": "dlib-align", "options": [1, 2]}), "framing options must be a table"),
        (lambda m: m.update(intervals={**INTERVALS, "quantile": "2.5"}), "intervals.quantile must be a number"),
        (lambda m: m.update(intervals={**INTERVALS, "edges": [30.0], "quantiles": [1.0]}), "need one quantile more"),
        (lambda m: m.update(image_size=10**6), "image_size must be a whole number >= 1 and <= 2048"),
        (lambda m: m["files"].update(gallery="../run/model.pt"), "must name files inside the bundle folder"),
    ],
)
def test_a_tampered_manifest_is_a_one_line_error(bundle, photo, tmp_path, change, message):
    evil = tampered(
        bundle, tmp_path / "evil", lambda m: (m.update(framing={"name": "box", "box": [0, 0, 1, 1]}), change(m))
    )
    one_line_error(runner.invoke(app, ["predict", str(evil), str(photo)]), message)


INTERVALS = {"level": 0.9, "quantile": 2.0, "offset": 1.0, "normalised": True, "n_calibration": 50}


def test_a_deeply_nested_manifest_is_a_one_line_error(bundle, photo, tmp_path):
    evil = tmp_path / "evil"
    shutil.copytree(bundle, evil)
    (evil / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(runner.invoke(app, ["predict", str(evil), str(photo)]), "nested too deeply")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"embeddings": np.zeros((5, 3), np.float32)}, "the embeddings have 3 values each; the manifest says 8"),
        ({"ages": np.array([20, np.nan, 30, 40, 50], np.float32)}, "ages must be finite numbers of years"),
        ({"ages": np.full(5, 1e39)}, "ages must be finite numbers of years"),
        ({"genders": np.full(5, 7)}, "genders must be 0, 1 or -1"),
        ({"embeddings": np.full((5, 8), np.inf, np.float32)}, "embeddings must be finite numbers; 5 are not"),
    ],
)
def test_a_tampered_gallery_is_a_one_line_error(bundle, photo, tmp_path, arrays, message):
    evil = tampered(bundle, tmp_path / "evil", lambda m: None)
    good = {"embeddings": np.zeros((5, 8), np.float32), "ages": np.full(5, 30.0, np.float32), "genders": np.zeros(5)}
    np.savez(evil / "gallery.npz", **{**good, **arrays})
    one_line_error(runner.invoke(app, ["predict", str(evil), str(photo)]), message)
    with pytest.raises(AgemetricError, match="gallery"):
        Bundle(evil)


def test_a_tampered_model_file_is_a_one_line_error(run, photo, tmp_path):
    state = torch.load(run / "model.pt", weights_only=True)
    for change, message in [
        (lambda s: s["spec"].update(image_size=10**6), "image_size must be a whole number >= 1 and <= 2048"),
        (lambda s: s.update(intervals={**INTERVALS, "quantile": "x"}), "intervals.quantile must be a number"),
        (lambda s: s["spec"].update(embedding_dim="8"), "embedding_dim must be a whole number"),
    ]:
        evil = tmp_path / "evil"
        shutil.rmtree(evil, ignore_errors=True)
        evil.mkdir()
        copy = {**state, "spec": dict(state["spec"])}
        change(copy)
        torch.save(copy, evil / "model.pt")
        one_line_error(runner.invoke(app, ["predict", str(evil), str(photo)]), message)


# -- a user's files are never overwritten ---------------------------------------------------------


def test_annotate_refuses_the_photos_own_folder(run, photo):
    before = photo.read_bytes()
    one_line_error(
        runner.invoke(app, ["predict", str(run), str(photo.parent), "--annotate", str(photo.parent)]),
        "holds the photo 'beach.png'; choose another folder",
    )
    assert photo.read_bytes() == before and sorted(p.name for p in photo.parent.iterdir()) == ["beach.png"]


def test_annotate_never_overwrites_and_keeps_photos_with_one_name_apart(run, photo, tmp_path):
    other = tmp_path / "other" / "beach.jpg"
    other.parent.mkdir()
    Image.open(photo).convert("RGB").save(other)
    out = tmp_path / "drawn"
    out.mkdir()
    (out / "beach.jpg").write_bytes(b"the user's own file")
    result = runner.invoke(app, ["predict", str(run), str(photo), str(other), "--annotate", str(out), "--csv"])
    assert result.exit_code == 0, result.output
    assert (out / "beach.jpg").read_bytes() == b"the user's own file"
    assert sorted(p.name for p in out.iterdir()) == ["beach-2.jpg", "beach-3.jpg", "beach.jpg"]
    for name in ("beach-2.jpg", "beach-3.jpg"):
        assert Image.open(out / name).size == (40, 48)


def test_annotate_checks_under_before_making_its_folder(run, photo, tmp_path):
    result = runner.invoke(app, ["predict", str(run), str(photo), "--annotate", str(tmp_path / "new"), "--under", "0"])
    one_line_error(result, "--under: expected an age in years between 0 and 150")
    assert not (tmp_path / "new").exists()


def test_a_full_disk_while_annotating_is_one_line_and_the_other_photos_are_estimated(run, photo, tmp_path, monkeypatch):
    photos = []
    for i in range(3):
        photos.append(photo.parent / f"p{i}.png")
        shutil.copy(photo, photos[-1])

    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", full)
    result = runner.invoke(app, ["predict", str(run), *map(str, photos), "--annotate", str(tmp_path / "out"), "--csv"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith(("Error:", "Warning:"))]
    assert errors == [
        f"Warning: --annotate: cannot write {tmp_path / 'out' / 'p0.jpg'} (No space left on device); no more annotated "
        "copies are written, the remaining photos are still estimated"
    ]
    assert (
        sum(",whole photo," in line or line.startswith(str(photo.parent)) for line in result.output.splitlines()) == 3
    )
    assert list((tmp_path / "out").iterdir()) == []  # no half-written copy


def test_export_into_an_old_bundle_keeps_it_until_the_new_one_is_complete(run, bundle, tmp_path, monkeypatch):
    import agemetric.export

    old = tmp_path / "old-bundle"
    shutil.copytree(bundle, old)
    before = {p.name: p.read_bytes() for p in old.iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if killed half-way through writing the model

    monkeypatch.setattr(agemetric.export, "_save_torchscript", killed)
    result = runner.invoke(app, ["export", str(run), "--out", str(old)])
    assert result.exit_code == 130, result.output
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old-bundle"]  # nothing half-written left beside it
    monkeypatch.undo()
    assert runner.invoke(app, ["export", str(run), "--out", str(old)]).exit_code == 0
    assert Bundle(old).predict(np.zeros((1, 3, 32, 32), np.uint8)).shape == (1,)


# -- names printed safely ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a\rb.png", "a\nError: forged.png", "[red]x.png", "[/bold]y.png", "esc\x1b[2J.png"])
def test_file_names_are_printed_escaped(run, tmp_path, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).parent.mkdir(exist_ok=True)  # "[/bold]y.png": the file "bold]y.png" in the folder "["
    Image.new("RGB", (40, 48)).save(tmp_path / name, "PNG")
    shown = name.replace("\r", "\\r").replace("\n", "\\n").replace("\x1b", "\\x1b")
    result = runner.invoke(app, ["predict", str(run), name, "--csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert len(rows) == 2 and rows[1][0] == shown
    code, output = on_terminal(["predict", str(run), name], tmp_path)
    assert code == 0 and "Traceback" not in output and "\x1b[2J" not in output and "forged" not in output.split("\n")[0]
    (tmp_path / name).write_bytes(b"not an image")
    result = runner.invoke(app, ["predict", str(run), name, "--csv"])
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(errors) == 1 and errors[0].startswith(f"Warning: {shown}: cannot read image")


def test_a_file_name_that_is_not_utf8_is_printed_with_escapes(run, tmp_path):
    name = os.fsdecode(b"\xff-photo.png")
    Image.new("RGB", (40, 48)).save(tmp_path / name, "PNG")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(
        [sys.executable, "-m", "agemetric", "predict", str(run), name, "--csv"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.splitlines()[1].startswith("\\xff-photo.png,1,")


# -- memory bounded by what a photo needs ---------------------------------------------------------------


def under_memory_limit(code: str, extra_gib: float, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` (after its imports, marked ``# -- limit --``) in a fresh Python whose address
    space may grow by only ``extra_gib`` GiB more: a regression fails with MemoryError instead of
    swapping."""
    imports, work = textwrap.dedent(code).split("# -- limit --\n")
    limit = textwrap.dedent(f"""
        import resource
        size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + int({extra_gib} * 2**30), resource.RLIM_INFINITY))
    """)
    return subprocess.run([sys.executable, "-c", imports + limit + work], cwd=cwd, capture_output=True, text=True)


def test_a_huge_16_bit_png_is_read_in_bounded_memory(tmp_path):
    pixels = np.zeros((12000, 12000), np.uint16)
    pixels[::7, ::5] = 60000
    Image.fromarray(pixels).save(tmp_path / "huge.png")  # 144 megapixels in about 300 KB
    del pixels
    result = under_memory_limit(
        """
        from agemetric.photos import read_photo
        # -- limit --
        image, size = read_photo("huge.png")
        print(image.size, size)
        """,
        extra_gib=1.0,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(4096, 4096) (12000, 12000)"


def test_predict_from_python_frames_photos_one_at_a_time(run, tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)).save(
        tmp_path / "12mp.png"
    )
    result = under_memory_limit(
        f"""
        from agemetric.estimator import AgeEstimator
        estimator = AgeEstimator.load({str(run / "model.pt")!r})
        estimator.predict("12mp.png")  # first use: the framer, the thread pools
        # -- limit --
        print(estimator.predict(["12mp.png"] * 80).shape)
        """,
        extra_gib=1.0,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "torch.Size([80])"


def test_a_model_file_asking_for_a_huge_image_is_refused_before_any_memory_is_taken(run, tmp_path):
    state = torch.load(run / "model.pt", weights_only=True)
    state["spec"]["image_size"] = 10**6
    torch.save(state, tmp_path / "model.pt")
    result = under_memory_limit(
        """
        from agemetric.estimator import AgeEstimator
        from agemetric.errors import AgemetricError
        # -- limit --
        try:
            AgeEstimator.load("model.pt")
        except AgemetricError as exc:
            print(exc)
        """,
        extra_gib=1.0,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "image_size must be a whole number >= 1 and <= 2048, got 1000000" in result.stdout


# -- boxes in the photo's own pixels ---------------------------------------------------------------


class MiddleFramer(Framer):
    """Finds "a face" in the middle half of every photo, with its box in pixels."""

    def frame(self, image):
        box = (image.width // 4, image.height // 4, 3 * image.width // 4, 3 * image.height // 4)
        return Face(image.crop(box), box)


@pytest.fixture
def middle_framer():
    register_framers = hookimpl(lambda register: register("middle", MiddleFramer))
    module = type("middle_plugin", (), {"register_framers": staticmethod(register_framers)})
    plugins.load_plugins().register(module, name="middle_plugin")
    plugins.reset()
    yield
    plugins.pm.unregister(module)
    plugins.reset()


def test_boxes_of_a_photo_larger_than_the_decoding_limit_are_in_its_own_pixels(tmp_path, make_run, middle_framer):
    make_run(tmp_path / "run", framing="middle")
    Image.new("RGB", (8000, 6000)).save(tmp_path / "big.png")
    result = runner.invoke(app, ["predict", str(tmp_path / "run"), str(tmp_path / "big.png"), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["width"], record["height"]) == (8000, 6000)
    assert record["faces"][0]["box"] == [2000, 1500, 6000, 4500]


def test_the_documented_tables_name_a_test_for_every_case():
    page = (Path(__file__).parent.parent / "docs" / "reliability.md").read_text()
    section = page.split("## Files you are given, files you have")[1].split("\n## ")[0]
    here, hostile = Path(__file__).read_text(), (Path(__file__).parent / "test_hostile_runs.py").read_text()
    files, runs = section.split("Runs, checkpoints, metrics and plugins")
    for table, default, least in ((files, here, 15), (runs, hostile, 10)):
        rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| case")]
        assert len(rows) >= least
        for row in rows:
            named = re.findall(r"`(?:tests/(\w+\.py)::)?(test_\w+)`", row)
            assert named, f"no test named in: {row}"
            source = default
            for file, test in named:  # a file named before a test holds the tests after it in the row too
                source = (Path(__file__).parent / file).read_text() if file else source
                assert f"def {test}(" in source, test

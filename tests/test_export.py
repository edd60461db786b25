"""``agemetric export`` and predicting from a bundle: same embeddings and ages as the run, no training code."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from agemetric.bundle import Bundle
from agemetric.bundle_files import MANIFEST
from agemetric.cli import app
from agemetric.config import RunConfig
from agemetric.errors import AgemetricError
from agemetric.estimator import AgeEstimator
from agemetric.export import export_bundle
from agemetric.testing import random_face_arrays

runner = CliRunner()
SIZE = 32
FORMATS = ["torchscript", "onnx"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, make_run):
    """A run that frames photos with a box (so the bundle must carry the framing)."""
    folder = tmp_path_factory.mktemp("export") / "run"
    estimator = make_run(folder, framing="box", framing_options={"box": [0.1, 0.0, 0.9, 0.9], "margin": 0.05})
    return folder, estimator


@pytest.fixture(scope="module")
def bundle_dir(run):
    folder, _ = run
    out = folder.parent / "bundle"
    manifest = export_bundle(folder, out, "both")
    assert manifest["files"] == {
        "gallery": "gallery.npz",
        "torchscript": "model.torchscript.pt",
        "onnx": "model.onnx",
    }
    return out


@pytest.fixture
def faces(tmp_path, monkeypatch):
    """Six photo files of different sizes in the (current) folder ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    names = []
    for i in range(6):
        names.append(f"f{i}.png")
        Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 36 + 5 * i, 3), dtype=np.uint8)).save(names[-1])
    return names


def table_ages(output: str) -> dict[str, float]:
    """``{image: age}`` from ``agemetric predict``'s CSV (its output when piped)."""
    rows = list(csv.DictReader(io.StringIO(output)))
    return {row["photo"]: float(row["age"]) for row in rows}


def test_manifest_describes_the_bundle(run, bundle_dir):
    _, estimator = run
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    assert manifest["format"] == 1 and manifest["image_size"] == SIZE and manifest["k"] == 3
    assert manifest["framing"] == {"name": "box", "box": [0.1, 0.0, 0.9, 0.9], "margin": 0.05}
    assert (manifest["embedding_dim"], manifest["gender_dim"], manifest["outputs"]) == (8, 4, ["age", "gender"])
    assert manifest["gallery_size"] == 60 and manifest["source"]["retriever"] == "l1-knn"
    bundle = Bundle(bundle_dir)
    assert bundle.runtime == "torchscript"  # auto prefers TorchScript when torch is there
    np.testing.assert_array_equal(bundle.embeddings, estimator.retriever.gallery.embeddings.numpy())
    np.testing.assert_array_equal(bundle.ages, estimator.retriever.ages.numpy())
    np.testing.assert_array_equal(bundle.genders, estimator.retriever.gallery.genders.numpy())


@pytest.mark.parametrize("runtime", FORMATS)
@pytest.mark.parametrize("batch", [1, 8])
def test_exported_model_gives_the_eager_embeddings(run, bundle_dir, runtime, batch):
    _, estimator = run
    images = random_face_arrays(batch, SIZE, seed=3).images  # (B, 3, S, S) uint8
    age, gender = Bundle(bundle_dir, runtime).embed(images.numpy())
    np.testing.assert_allclose(age, estimator.embed(images).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gender, estimator.embed(images, part="gender").numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("runtime", FORMATS)
def test_bundle_predicts_the_run_s_ages(run, bundle_dir, runtime):
    _, estimator = run
    images = random_face_arrays(40, SIZE, seed=4).images
    expected = estimator.predict(images).numpy()
    assert len(np.unique(expected)) > 5  # the check is not vacuous
    np.testing.assert_allclose(Bundle(bundle_dir, runtime).predict(images.numpy()), expected, atol=1e-4)


@pytest.mark.parametrize("runtime", FORMATS)
def test_bundle_takes_photos_framed_as_the_run_framed_them(run, bundle_dir, faces, runtime):
    _, estimator = run
    from_paths = Bundle(bundle_dir, runtime).predict(faces)  # file names: framed with the run's box
    np.testing.assert_allclose(from_paths, estimator.predict(faces).numpy(), atol=1e-4)
    photo = np.asarray(Image.open(faces[0]).convert("RGB"))
    np.testing.assert_allclose(Bundle(bundle_dir, runtime).predict(photo), from_paths[:1], atol=1e-4)
    with pytest.raises(AgemetricError, match="expected uint8 pixels"):
        Bundle(bundle_dir, runtime).predict(photo.astype(np.float32) / 255)


def test_a_bundle_s_framing_can_be_sent_to_another_process(bundle_dir, faces):
    framer = Bundle(bundle_dir, "torchscript").framer  # the run's box: agemetric serve's framing processes take it
    photo = Image.open(faces[0])
    assert np.array_equal(np.asarray(pickle.loads(pickle.dumps(framer))(photo)), np.asarray(framer(photo)))


@pytest.mark.parametrize("runtime", FORMATS)
def test_predict_command_gives_the_same_ages_from_run_and_bundle(run, bundle_dir, faces, runtime):
    folder, _ = run
    from_run = runner.invoke(app, ["predict", str(folder), *faces])
    from_bundle = runner.invoke(app, ["predict", str(bundle_dir), *faces, "--runtime", runtime])
    assert from_run.exit_code == 0 and from_bundle.exit_code == 0, from_run.output + from_bundle.output
    ages_run, ages_bundle = table_ages(from_run.stdout), table_ages(from_bundle.stdout)
    assert set(ages_run) == set(faces) and len(set(ages_run.values())) > 1
    for name in faces:  # the output rounds to 0.1 years
        assert ages_bundle[name] == pytest.approx(ages_run[name], abs=0.11), name


def test_framing_processes_give_the_ages_and_drawings_of_framing_threads(run, bundle_dir, faces, tmp_path):
    threads = torch.get_num_threads()  # with framing processes the network keeps to half the cores
    try:
        outputs = {}
        for processes in ("0", "2"):
            drawn = tmp_path / f"drawn-{processes}"
            argv = ["predict", str(bundle_dir), *faces, "--csv", "--annotate", str(drawn)]
            result = runner.invoke(app, [*argv, "--framing-processes", processes])
            assert result.exit_code == 0, result.output
            sizes = {p.name: Image.open(p).size for p in drawn.iterdir()}
            outputs[processes] = (table_ages(result.stdout), sizes)
    finally:
        torch.set_num_threads(threads)
    (ages, sizes), (in_processes, sizes_in_processes) = outputs["0"], outputs["2"]
    assert sizes_in_processes == sizes and len(sizes) == len(faces)
    assert set(in_processes) == set(ages) == set(faces)
    for name in faces:  # the output rounds to 0.1 years
        assert in_processes[name] == pytest.approx(ages[name], abs=0.11), name


def _modules_after_predict(code: str) -> dict:
    """Run ``code`` (which predicts) in a fresh interpreter; which modules did it import?"""
    check = (
        "import json, sys\n"
        f"{code}\n"
        "print(json.dumps({m: m in sys.modules for m in "
        "('agemetric.training', 'agemetric.estimator', 'agemetric.plugins', 'agemetric.experiment', 'torch')}))"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("runtime", FORMATS)
def test_bundle_runs_without_the_training_code(bundle_dir, faces, runtime):
    loaded = _modules_after_predict(
        "from agemetric.bundle import Bundle\n"
        "import numpy as np\n"
        f"b = Bundle({str(bundle_dir)!r}, {runtime!r}, threads=1)\n"
        f"ages = b.predict(np.stack([b.read_image(f) for f in {faces!r}]))\n"
        "assert ages.shape == (6,)"
    )
    assert not any(loaded[m] for m in ("agemetric.training", "agemetric.estimator", "agemetric.plugins")), loaded
    assert loaded["torch"] == (runtime == "torchscript")  # ONNX Runtime needs no torch at all


def test_predict_command_on_a_bundle_loads_no_estimator(bundle_dir, faces):
    loaded = _modules_after_predict(
        "from agemetric.cli import main\n"
        f"sys.argv = ['agemetric', 'predict', {str(bundle_dir)!r}, *{faces!r}]\n"
        "try:\n    main()\nexcept SystemExit as stop:\n    assert not stop.code, stop.code"
    )
    # the command line loads the plugins (they may add commands), but never the estimator
    assert not any(loaded[m] for m in ("agemetric.training", "agemetric.estimator", "agemetric.experiment")), loaded


def test_an_onnx_bundle_predicts_photos_given_by_the_hundred_on_the_command_line(bundle_dir, faces):
    """onnxruntime's first import recurses through the command line: from about 32 KB of
    arguments it overflowed an 8 MB stack and the process died of SIGSEGV, printing nothing."""
    photo = os.path.abspath(faces[0])
    photos = [photo] * (48_000 // len(photo) + 1)  # over 48 KB of arguments
    done = subprocess.run(
        [sys.executable, "-m", "agemetric", "predict", str(bundle_dir), "--runtime", "onnx", *photos],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list(csv.DictReader(io.StringIO(done.stdout)))) == len(photos)


def test_mobilenet_v2_exports_to_torchscript(tmp_path):
    """A real torchvision backbone (random weights, 64 px) traces and matches eager; about 10-15 s."""
    size = 64
    estimator = AgeEstimator.from_config(
        RunConfig.from_flat(backbone="mobilenet_v2", weights="none", image_size=size, k=3, bf16="off"), multitask=False
    )
    estimator.fit_gallery(random_face_arrays(10, size))
    estimator.save(tmp_path / "run" / "model.pt")
    estimator.eval()
    start = time.perf_counter()
    manifest = export_bundle(tmp_path / "run", tmp_path / "bundle", "torchscript")
    print(f"mobilenet_v2 {size} px TorchScript export: {time.perf_counter() - start:.1f} s")
    assert manifest["outputs"] == ["age"] and manifest["gender_dim"] == 0
    bundle = Bundle(tmp_path / "bundle")
    for batch in (1, 8):
        images = random_face_arrays(batch, size, seed=5).images
        age, gender = bundle.embed(images.numpy())
        assert gender is None
        np.testing.assert_allclose(age, estimator.embed(images).numpy(), rtol=1e-4, atol=1e-6)


def test_exporting_again_replaces_the_bundle(run, tmp_path):
    folder, _ = run
    export_bundle(folder, tmp_path / "b", "torchscript")
    (tmp_path / "b" / "model.onnx").write_bytes(b"from an earlier export")
    export_bundle(folder, tmp_path / "b", "torchscript")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bundle.json", "gallery.npz", "model.torchscript.pt"]


# -- errors: one line, exit 2, no traceback ---------------------------------------------------


def hide_package(monkeypatch, package: str) -> None:
    """Make ``package`` look uninstalled to ``importlib.util.find_spec``."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else find_spec(name, *a))


def _fails(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output


def test_export_errors(run, tmp_path, monkeypatch):
    folder, _ = run
    out = str(tmp_path / "b")
    _fails(["export", str(tmp_path / "nope"), "--out", out], "no model.pt (expected a run folder")
    _fails(["export", str(folder), "--out", out, "--format", "tflite"], "--format must be one of torchscript, onnx")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    _fails(["export", str(folder), "--out", str(tmp_path / "taken")], "holds 'notes.txt', which is not part of")
    hide_package(monkeypatch, "onnxscript")
    _fails(["export", str(folder), "--out", out, "--format", "both"], "needs onnxscript for the ONNX export")


@pytest.mark.parametrize("retriever", ["ridge", "direct"])
def test_export_refuses_a_retriever_that_is_not_knn(tmp_path, retriever, make_run):
    extra = {"loss": "l1-regression", "miner": "batch", "embedding_dim": 1} if retriever == "direct" else {}
    make_run(tmp_path / "run", retriever=retriever, **extra)
    _fails(
        ["export", str(tmp_path / "run"), "--out", str(tmp_path / "b")],
        f"retriever {retriever!r} does not estimate ages from L1 nearest neighbours",
    )
    assert not (tmp_path / "b" / MANIFEST).exists()


def test_predict_errors(run, bundle_dir, tmp_path, faces, monkeypatch):
    folder, _ = run
    _fails(["predict", str(tmp_path / "empty"), *faces], "neither a run folder (model.pt) nor a bundle")
    _fails(["predict", str(folder), *faces, "--runtime", "onnx"], "--runtime applies to bundles only")
    _fails(["predict", str(bundle_dir), *faces, "--runtime", "tflite"], "--runtime must be one of auto")
    only_ts = tmp_path / "only-ts"
    export_bundle(folder, only_ts, "torchscript")
    _fails(["predict", str(only_ts), *faces, "--runtime", "onnx"], "has no onnx model (it has: torchscript)")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST).write_text("{not json")
    _fails(["predict", str(broken), *faces], "not a readable bundle manifest")
    (broken / MANIFEST).write_text(json.dumps({"format": 99}))
    _fails(["predict", str(broken), *faces], "bundle format 99; this agemetric reads format 1")
    hide_package(monkeypatch, "onnxruntime")
    _fails(["predict", str(bundle_dir), *faces, "--runtime", "onnx"], "needs the onnxruntime package")


class _ValueBranch(torch.nn.Module):
    """Takes another path for bright images: a trace keeps only the path of its example."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        x = images.float()
        return (x * 2 if x.mean() > 200 else x,)


class _ShapeBranch(torch.nn.Module):
    """Branches on a shape only, which every image of a bundle's size shares."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        x = images.float()
        return (x[:, :1] if x.shape[1] == 3 else x,)


@pytest.mark.filterwarnings("ignore:.*torch.jit.*is deprecated:FutureWarning")  # as export_bundle does
def test_a_trace_that_does_not_give_the_models_outputs_on_other_images_is_refused(tmp_path):
    import warnings

    from agemetric.export import _save_torchscript

    bright = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    with pytest.raises(ValueError, match="traced model's age output differs from the model's on other images"):
        _save_torchscript(_ValueBranch(), bright, ["age"], tmp_path / "value.pt")
    assert not (tmp_path / "value.pt").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # a branch that held: no warning shown
        _save_torchscript(_ShapeBranch(), bright, ["age"], tmp_path / "shape.pt")
    assert (tmp_path / "shape.pt").is_file()

"""The run folder keeps what it holds: an unfinished run is not overwritten, two runs never share
a folder, a reused config.toml starts a new one, a checkpoint resumes only under its own settings,
and metrics.json is strict JSON."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from agemetric.config import RunConfig, resolve
from agemetric.errors import AgemetricError
from agemetric.experiment import check_resumable
from agemetric.runs import RunFolder, checkpoint_settings

TINY = (
    "--epochs 1 --image-size 32 --set dataset_options.n=60 --set backbone_options.width=4 --set figures=false".split()
)


def agemetric(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(AGEMETRIC_CACHE=str(cwd / "cache"), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "agemetric", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_an_unfinished_run_folder_is_not_overwritten(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "checkpoint.pt").write_bytes(b"the interrupted run's state")
    done = agemetric(tmp_path, "run", *TINY, "--out", "r")
    assert done.returncode == 2, done.stderr
    assert "holds an unfinished run (checkpoint.pt); continue it with agemetric run --resume r" in done.stderr
    assert "Traceback" not in done.stderr
    assert (folder / "checkpoint.pt").read_bytes() == b"the interrupted run's state"


def test_a_folder_in_use_is_refused_and_free_again_after(tmp_path):
    first = RunFolder.create(tmp_path / "r", "synthetic", "small_cnn")
    with pytest.raises(AgemetricError, match="is in use by another agemetric run"):
        RunFolder.create(tmp_path / "r", "synthetic", "small_cnn")
    first.unlock()
    RunFolder.create(tmp_path / "r", "synthetic", "small_cnn").unlock()


def test_default_folders_of_the_same_second_do_not_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folders = [RunFolder.create(None, "synthetic", "small_cnn") for _ in range(3)]
    assert len({f.path for f in folders}) == 3
    for f in folders:
        f.unlock()


def test_a_reused_config_starts_a_new_folder(tmp_path):
    done = agemetric(tmp_path, "run", *TINY, "--out", "first")
    assert done.returncode == 0, done.stderr
    saved = tomllib.loads((tmp_path / "first" / "config.toml").read_text())
    with (tmp_path / "first" / "predictions.csv").open() as f:
        predicted = {row["key"] for row in csv.DictReader(f)}
    assert {key for key, side in RunFolder(tmp_path / "first").read_sides().items() if side == "test"} == predicted
    assert "out" not in saved["output"]
    again = agemetric(tmp_path, "run", "--config", "first/config.toml", "--set", "margin=6", "--out", "second")
    assert again.returncode == 0, again.stderr
    assert tomllib.loads((tmp_path / "second" / "config.toml").read_text())["model"]["margin"] == 6.0


def test_a_checkpoint_resumes_only_under_its_own_settings(tmp_path):
    config = resolve("quick")
    state = {"extra": {"settings": checkpoint_settings(config)}}
    check_resumable(state, config, tmp_path)  # the same settings: fine
    other = config.replace(margin=6.0, epochs=3)
    with pytest.raises(AgemetricError, match=r"other settings than .*config.toml \(epochs, margin\)"):
        check_resumable(state, other, tmp_path)
    check_resumable({}, other, tmp_path)  # a checkpoint that recorded no settings is trusted


def test_metrics_json_is_strict_json(tmp_path):
    folder = RunFolder(tmp_path)
    folder.write_metrics({"mae": float("inf"), "cs": {"5": float("nan")}, "n": 3, "ok": [1.5, float("-inf")]})
    text = folder.metrics.read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}")) == {
        "mae": None,
        "cs": {"5": None},
        "n": 3,
        "ok": [1.5, None],
    }


@pytest.mark.parametrize("option", [["--margin", "nan"], ["--set", "lr=nan"], ["--set", "weight_decay=inf"]])
def test_float_settings_refuse_nan_and_inf(tmp_path, option):
    done = agemetric(tmp_path, "run", *TINY, *option, "--out", "r")
    assert done.returncode == 2 and "must be a finite number" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_written_before_the_sections_resumes_under_its_settings(tmp_path):
    """Checkpoints of earlier versions keep the flat settings at the top, ``multitask`` as a word."""
    config = resolve("quick")
    flat = {k: v for k, v in config.flat().items() if k not in ("out", "split_file")}
    check_resumable({"settings": {**flat, "multitask": "auto"}}, config, tmp_path)
    with pytest.raises(AgemetricError, match=r"\(margin\)"):
        check_resumable({"settings": {**flat, "multitask": "auto", "margin": 6.0}}, config, tmp_path)
    with pytest.raises(AgemetricError, match=r"\(multitask\)"):
        check_resumable({"settings": {**flat, "multitask": "on"}}, config, tmp_path)


def test_a_new_run_cleans_the_temporary_file_a_killed_save_left(tmp_path):
    (tmp_path / "r").mkdir()
    orphan = tmp_path / "r" / ".checkpoint.pt.abc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    RunFolder.create(tmp_path / "r", "synthetic", "small_cnn").unlock()
    assert not orphan.exists()


def test_saved_models_get_the_mode_of_any_other_file(tmp_path):
    from agemetric._io import atomic_torch_save

    atomic_torch_save({"x": torch.zeros(1)}, tmp_path / "model.pt")
    (tmp_path / "other.txt").write_text("")
    assert (tmp_path / "model.pt").stat().st_mode == (tmp_path / "other.txt").stat().st_mode


def test_an_unsafe_pickle_is_refused_without_advice_to_load_it_anyway(tmp_path):
    from agemetric._io import load_torch

    torch.save({"config": RunConfig()}, tmp_path / "model.pt")  # a Python object: not weights-only loadable
    with pytest.raises(AgemetricError) as info:
        load_torch(tmp_path / "model.pt", "checkpoint")
    assert "never unpickles" in str(info.value) and "weights_only" not in str(info.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"k": "lots"}, "k must be a whole number >= 1, got 'lots'"), ({"files": ["model.pt"]}, "files must map names")],
)
def test_a_malformed_bundle_manifest_is_a_one_line_error(tmp_path, change, message):
    from agemetric.bundle_files import BUNDLE_FORMAT, read_manifest

    manifest = {
        "format": BUNDLE_FORMAT,
        "image_size": 32,
        "k": 5,
        "framing": {"name": "center"},
        "files": {"gallery": "gallery.npz"},
        **change,
    }
    (tmp_path / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(AgemetricError, match=message):
        read_manifest(tmp_path)


def test_resume_refuses_a_training_split_that_changed(tmp_path):
    from agemetric.estimator import AgeEstimator
    from agemetric.testing import random_face_arrays
    from agemetric.training import load_checkpoint, train

    config = resolve("quick", sets=["image_size=32", "backbone_options.width=4", "epochs=1", "bn_recalibration=0"])
    checkpoint = tmp_path / "checkpoint.pt"
    train(AgeEstimator.from_config(config), random_face_arrays(n=16, size=32), config.training, checkpoint=checkpoint)
    fewer = random_face_arrays(n=15, size=32)  # one image became unreadable
    more = config.replace(epochs=2)
    with pytest.raises(AgemetricError, match="now has 15 readable images, the checkpoint was written with 16"):
        train(AgeEstimator.from_config(more), fewer, more.training, resume=load_checkpoint(checkpoint))


def test_a_failed_write_names_the_file(tmp_path):
    folder = RunFolder(tmp_path / "gone")  # its folder does not exist: every write fails
    with pytest.raises(AgemetricError, match=r"cannot write .*gone/metrics.json"):
        folder.write_metrics({"mae": 1.0})


def test_a_finished_run_s_faces_are_read_again_side_by_side(tmp_path):
    import csv

    from agemetric.data.loading import run_faces
    from agemetric.experiment import run

    sets = ["dataset_options.n=80", "epochs=1", "image_size=32", "backbone_options.width=4", "k=3", "figures=false"]
    result = run(resolve("quick", sets=[*sets, "interval_level=0.8", f"out={tmp_path / 'run'}"]))
    with (result.run_dir / "split.csv").open(newline="") as f:
        listed = {}
        for row in csv.DictReader(f):
            listed.setdefault(row["side"], set()).add(row["key"])
    assert set(listed) == {"train", "calibration", "test"}
    faces = run_faces(result.run_dir)
    assert {side: set(f.keys) for side, f in faces.items()} == listed
    only_test = run_faces(result.run_dir, ["test"])
    assert list(only_test) == ["test"] and only_test["test"].keys == faces["test"].keys
    assert torch.equal(only_test["test"].images, faces["test"].images)

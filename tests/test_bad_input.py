"""The bad-input table (docs/reliability.md): every case gives one clear line and the right exit code.

Errors: exit code 2 (usage) with one line on stderr naming the file, row or option and what was
expected, and no traceback (``--debug`` shows it). Bad rows and files inside a dataset are
skipped, counted and reported (``skipped.csv`` lists every one) while the run goes on. Cases run
through the real console entry point in a subprocess, as a user would meet them.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = (
    "--epochs 1 --image-size 32 --batch-size 8 --set backbone=small_cnn --set weights=none "
    "--set backbone_options.width=4 --set figures=false --k 3"
).split()
VECTOR_LOSS_PLUGIN = """
import torch
from agemetric import Loss, hookimpl


class VectorLoss(Loss):
    def compute(self, embeddings, labels, indices):
        return embeddings.sum(1)  # (B,): the wrong shape


@hookimpl
def register_losses(register):
    register("vector-loss", VectorLoss)
"""
CRASHING_LOSS_PLUGIN = """
from agemetric import Loss, hookimpl


def scale(embeddings):
    return embeddings.sum() / 0 if embeddings.shape[1] > 1 else {}["missing"]  # a bug: KeyError


class CrashingLoss(Loss):
    def compute(self, embeddings, labels, indices):
        return scale(embeddings[:, :1])


class LateCrashingLoss(Loss):
    calls = 0

    def compute(self, embeddings, labels, indices):
        LateCrashingLoss.calls += 1
        if LateCrashingLoss.calls > 10:  # in the second epoch (29 faces, batches of 8, an age and a gender loss)
            raise MemoryError("out of memory")
        return embeddings.abs().mean()


@hookimpl
def register_losses(register):
    register("crashing-loss", CrashingLoss)
    register("late-crashing-loss", LateCrashingLoss)
"""


def cli(tmp_path: Path, *args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("AGEMETRIC_LOAD_PLUGINS", "WORLD_SIZE")}
    env.update(COLUMNS="250", AGEMETRIC_CACHE=str(tmp_path / "cache"))
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "agemetric", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def files(root: Path, contents: dict[str, str]) -> None:
    for name, text in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def face(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)


def good_csv(folder: Path, n: int = 24) -> list[list[str]]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [["path", "age"]]
    for i in range(n):
        face(folder / f"{i}.png", i)
        rows.append([f"{i}.png", str(20 + i)])
    return rows


def write_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def plugin_dir(tmp_path: Path) -> Path:
    """Installed plugins on a path: one that fails at import, one whose loss has the wrong shape, one
    whose loss raises (a package: its code is in a module of its own)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "agemetric_vector.py").write_text(VECTOR_LOSS_PLUGIN)
    (site / "agemetric_broken.py").write_text("raise ImportError('missing dependency xyz')\n")
    (site / "agemetric_crashing").mkdir()
    (site / "agemetric_crashing" / "__init__.py").write_text("")
    (site / "agemetric_crashing" / "losses.py").write_text(CRASHING_LOSS_PLUGIN)
    plugins = (
        ("vector", "agemetric_vector"),
        ("broken", "agemetric_broken"),
        ("crashing", "agemetric_crashing.losses"),
    )
    for name, module in plugins:
        dist = site / f"agemetric_{name}-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: agemetric-{name}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[agemetric]\n{name} = {module}\n")
    return site


def bad_model(folder: Path, how: str) -> None:
    """A run folder whose model.pt has NaN gallery ages (``how="nan ages"``) or a model field this
    version does not know (``how="unknown key"``)."""
    import torch

    from agemetric.config import resolve
    from agemetric.estimator import AgeEstimator
    from agemetric.testing import random_face_arrays

    folder.mkdir(parents=True)
    config = resolve("quick", sets=["image_size=32", "backbone_options.width=4", "k=3"])
    estimator = AgeEstimator.from_config(config)
    estimator.fit_gallery(random_face_arrays(12, size=32))
    estimator.save(folder / "model.pt")
    state = torch.load(folder / "model.pt", weights_only=False)
    if how == "nan ages":
        state["retriever"]["ages"][:3] = float("nan")
    else:
        state["spec"]["a_setting_from_the_future"] = 1
    torch.save(state, folder / "model.pt")
    face(folder.parent / "a.png", 0)


# (case id as in docs/reliability.md, setup(tmp) -> CLI args, expected message on stderr)
ERRORS = {
    "missing data folder": (
        lambda t: ["run", "--dataset", "utkface", "--data-dir", "nope"],
        "--data-dir: UTKFace folder 'nope' does not exist",
    ),
    "empty dataset": (
        lambda t: (t / "empty").mkdir() or ["run", "--dataset", "utkface", "--data-dir", "empty"],
        "--data-dir: no UTKFace images in 'empty'",
    ),
    "CSV with missing columns": (
        lambda t: (
            write_csv(t / "l.csv", [["file", "years"], ["a.png", "3"]])
            or ["run", "--dataset", "csv", "--data-dir", "l.csv"]
        ),
        "l.csv: missing column(s) age, path; expected a header 'path,age[,gender]",
    ),
    "CSV whose rows are all bad": (
        lambda t: (
            write_csv(t / "l.csv", [["path", "age"], ["a.png", "x"]])
            or ["run", "--dataset", "csv", "--data-dir", "l.csv"]
        ),
        "1 skipped: row 2 (age 'x' is not a number)",
    ),
    "unknown plugin name": (
        lambda t: ["run", "--loss", "contrastiv"],
        "unknown loss 'contrastiv'; did you mean 'pml-contrastive'? known: ",
    ),
    "out-of-range --set value": (lambda t: ["run", "--set", "k=0"], "k must be >= 1, got 0"),
    "bad plugin option": (
        lambda t: ["run", "--set", "retriever_options.index=hsnw"],
        "index must be 'flat' (exact) or 'hnsw' (approximate), got 'hsnw'",
    ),
    "--set value of the wrong type": (lambda t: ["run", "--set", "epochs=many"], "epochs expects int, got 'many'"),
    "unknown --set key": (lambda t: ["run", "--set", "epoch=3"], "unknown setting 'epoch'; did you mean 'epochs'?"),
    "--set key in the wrong section": (
        lambda t: ["run", "--set", "model.epochs=3"],
        "--set model.epochs: model has no setting 'epochs' (it is in training)",
    ),
    "config file giving a setting twice": (
        lambda t: files(t, {"c.toml": "k = 5\n[model]\nk = 7\n"}) or ["run", "--config", "c.toml"],
        "--config: c.toml: k is given twice (at the top and in its section)",
    ),
    "unwritable output folder": (
        lambda t: (t / "file").write_text("") or ["run", "--out", "file/run"],
        "--out: cannot write to 'file/run'",
    ),
    "output folder that holds a run": (
        lambda t: files(t, {"old/metrics.json": "{}"}) or ["run", "--out", "old"],
        "--out: old already holds a run",
    ),
    "output folder that holds a file a run writes": (
        lambda t: files(t, {"notes/report.md": "my notes"}) or ["run", "--out", "notes"],
        "--out: notes holds 'report.md', which a run would write over; choose a new or empty folder",
    ),
    "share to calibrate again out of range": (
        lambda t: ["evaluate", "nowhere", "--recalibrate", "2"],
        "--recalibrate: expected a share of the images between 0 and 1 (e.g. 0.2), got 2",
    ),
    "annotation folder that is a file": (
        lambda t: (
            files(t, {"a.jpg": "x", "keep.json": "{}"}) or ["predict", "nowhere", "a.jpg", "--annotate", "keep.json"]
        ),
        "--annotate keep.json: is a file; expected a folder for the annotated copies",
    ),
    "missing photo for predict": (
        lambda t: ["predict", "nowhere", "missing.jpg"],
        "PHOTOS: missing.jpg does not exist; expected a photo or a folder of photos",
    ),
    "folder without photos for predict": (
        lambda t: files(t, {"album/2019/a.jpg": "x"}) or ["predict", "nowhere", "album"],
        "no photos in album (looked for .jpg, ",
    ),
    "missing run folder for predict": (
        lambda t: files(t, {"a.jpg": "x"}) or ["predict", "nowhere", "a.jpg"],
        "nowhere: neither a run folder (model.pt) nor a bundle (bundle.json)",
    ),
    "unreadable config file": (lambda t: files(t, {"c.toml": "epochs = ["}) or ["run", "--config", "c.toml"], "c.toml"),
    "warm-up of the whole run": (
        lambda t: ["run", "--set", "warmup=1"],
        "warmup must be a fraction in [0, 1), got 1.0",
    ),
    "NaN or infinite setting": (lambda t: ["run", "--margin", "nan"], "margin must be a finite number, got nan"),
    "age out of range": (
        lambda t: (
            write_csv(t / "l.csv", [["path", "age"], ["a.png", "1e39"]])
            or ["run", "--dataset", "csv", "--data-dir", "l.csv"]
        ),
        "age '1e39' is not a number of years between 0 and 150",
    ),
    "k larger than the gallery": (
        lambda t: (
            write_csv(t / "d" / "l.csv", good_csv(t / "d", 12))
            or ["run", *TINY, "--dataset", "csv", "--data-dir", "d/l.csv", "--k", "1000000"]
        ),
        "--k 1000000: the gallery has only 9 training faces; choose k <= 9",
    ),
    "unfinished run folder": (
        lambda t: files(t, {"r/checkpoint.pt": "state"}) or ["run", "--out", "r"],
        "--out: r holds an unfinished run (checkpoint.pt); continue it with agemetric run --resume r",
    ),
    "NaN ages in a model's gallery": (
        lambda t: bad_model(t / "r", "nan ages") or ["predict", "r", "a.png"],
        "the gallery's ages must be finite numbers; 3 of 12 are not",
    ),
    "model from another version": (
        lambda t: bad_model(t / "r", "unknown key") or ["predict", "r", "a.png"],
        "r/model.pt: cannot rebuild the model (unknown model field(s) a_setting_from_the_future)",
    ),
    "plugin option that is a setting": (
        lambda t: ["run", "--set", "loss_options.margin=3"],
        "loss_options.margin: set it with the setting 'margin', not here",
    ),
    "GPU asked for where there is none": (
        lambda t: ["run", "--set", "device=cuda"],
        "--device cuda: this machine has 0 CUDA GPU(s); use device 'cpu' or 'auto'",
    ),
    "huge image size": (lambda t: ["run", "--image-size", "100000"], "image_size must be <= 2048, got 100000"),
    "config file that is a folder": (
        lambda t: (t / "conf").mkdir() or ["run", "--config", "conf"],
        "--config: conf is a folder; expected a TOML file",
    ),
    "config file that is not UTF-8": (
        lambda t: [(t / "c.toml").write_bytes(b"epochs = 3\n# \xff\xfe\n"), "run"][1:] + ["--config", "c.toml"],
        "--config: c.toml is not UTF-8 text",
    ),
    "config file with a list as preset": (
        lambda t: files(t, {"c.toml": "preset = ['quick']"}) or ["run", "--config", "c.toml"],
        "preset expects a name",
    ),
    "CSV that is not UTF-8 further down": (
        lambda t: (
            [
                write_csv(t / "d" / "l.csv", good_csv(t / "d", 400)),
                (t / "d" / "l.csv").open("ab").write(b"x.png,3\xff\n"),
                "run",
            ][2:]
            + ["--dataset", "csv", "--data-dir", "d/l.csv"]
        ),
        "--data-dir: d/l.csv is not UTF-8 text",
    ),
    "CSV field over the csv limit": (
        lambda t: (
            write_csv(t / "l.csv", [["path", "age"], ["a" * 200_000, "3"]])
            or ["run", "--dataset", "csv", "--data-dir", "l.csv"]
        ),
        "l.csv is not a readable CSV file (field larger than field limit (131072))",
    ),
    "split file that is not UTF-8": (
        lambda t: [(t / "s.csv").write_bytes(b"key,side\n\xff,test\n"), "run"][1:] + ["--split-file", "s.csv"],
        "--split-file: s.csv is not UTF-8 text",
    ),
    "metrics file that is a folder": (
        lambda t: (t / "o").mkdir() or ["evaluate", "nowhere", "--out", "o"],
        "--out: o is a folder; expected a file name for the metrics",
    ),
    "report into a file": (
        lambda t: files(t, {"r/metrics.json": "{}", "f": "x"}) or ["report", "r", "--out", "f"],
        "--out: f is a file; expected a folder for the report",
    ),
    "uninstalling agemetric itself": (
        lambda t: ["uninstall", "-y", "agemetric==0.1.0"],
        "refusing to uninstall agemetric itself",
    ),
    "config file nested too deeply": (
        lambda t: files(t, {"c.toml": "x = " + "[" * 5000 + "]" * 5000}) or ["run", "--config", "c.toml"],
        "--config: c.toml is not valid TOML",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_one_line_with_exit_code_2(case, tmp_path):
    setup, message = ERRORS[case]
    done = cli(tmp_path, *setup(tmp_path))
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert message in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()  # nothing written for a refused command


def test_debug_shows_the_traceback(tmp_path):
    done = cli(tmp_path, "--debug", "run", "--set", "k=0")
    assert done.returncode != 0 and "Traceback" in done.stderr and "k must be >= 1, got 0" in done.stderr


def test_bad_rows_and_files_are_skipped_counted_and_listed(tmp_path):
    rows = good_csv(tmp_path / "faces")
    (tmp_path / "faces" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "faces" / "empty.jpg").write_bytes(b"")
    rows += [
        ["corrupt.jpg", "30"],
        ["empty.jpg", "31"],
        ["0.png", "-4"],
        ["1.png", "nan"],
        ["2.png", "old"],
        ["missing.png", "40"],
    ]
    write_csv(tmp_path / "faces" / "labels.csv", rows)
    done = cli(tmp_path, "run", *TINY, "--dataset", "csv", "--data-dir", "faces/labels.csv", "--out", "r")
    assert done.returncode == 0, done.stderr
    assert "6 skipped: " in done.stdout and "skipped.csv" in done.stdout
    with (tmp_path / "r" / "skipped.csv").open() as f:
        skipped = dict(list(csv.reader(f))[1:])
    assert skipped["corrupt.jpg"].startswith("unreadable image") and skipped["empty.jpg"].startswith("unreadable")
    assert "between 0 and 150" in skipped["row 28"] and "between 0 and 150" in skipped["row 29"]
    assert "is not a number" in skipped["row 30"] and "no image file 'missing.png'" in skipped["row 31"]
    assert len(skipped) == 6


def test_unparseable_file_names_are_skipped_and_reported(tmp_path):
    utk = tmp_path / "utk"
    utk.mkdir()
    for i in range(20):
        face(utk / f"{20 + i}_{i % 2}_0_2017{i:06d}.jpg.chip.jpg", i)
    face(utk / "holiday.jpg", 99)
    done = cli(tmp_path, "run", *TINY, "--dataset", "utkface", "--data-dir", "utk", "--out", "r")
    assert done.returncode == 0, done.stderr
    assert "1 skipped: holiday.jpg (name is not {age}_{gender}_{race}_{datetime}.jpg.chip.jpg)" in done.stdout


def test_plugins_broken_at_import_are_named_and_the_others_work(tmp_path):
    done = cli(tmp_path, "plugins", "--json", pythonpath=plugin_dir(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "vector-loss" in done.stdout  # the working plugin still registers
    assert "'broken'" in done.stderr and "missing dependency xyz" in done.stderr and "Traceback" not in done.stderr


def test_a_plugin_returning_the_wrong_shape_is_named(tmp_path):
    done = cli(
        tmp_path,
        "run",
        *TINY,
        "--loss",
        "vector-loss",
        "--set",
        "dataset_options.n=40",
        "--out",
        "r",
        pythonpath=plugin_dir(tmp_path),
    )
    assert done.returncode == 2, done.stderr
    assert "loss 'vector-loss' (plugin 'vector', VectorLoss): compute() must return a 0-d tensor, got (" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_exception_inside_a_plugin_s_code_names_the_plugin_and_the_line(tmp_path):
    site = plugin_dir(tmp_path)
    args = ["run", *TINY, "--loss", "crashing-loss", "--set", "dataset_options.n=40", "--out", "r"]
    done = cli(tmp_path, *args, pythonpath=site)
    assert done.returncode == 1, done.stderr
    where = site / "agemetric_crashing" / "losses.py"
    assert done.stderr.strip().splitlines()[-1] == (
        f"Error: plugin 'crashing' 0.1 ({where}:6, in scale) raised KeyError: 'missing' "
        "(agemetric --debug shows the traceback)"
    )
    assert "Traceback" not in done.stderr and not (tmp_path / "r").exists()
    debug = cli(tmp_path, "--debug", *args, pythonpath=site)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "KeyError: 'missing'" in debug.stderr


def test_a_run_that_fails_after_a_checkpoint_keeps_it_and_says_how_to_resume(tmp_path):
    args = ["run", *TINY, "--epochs", "3", "--loss", "late-crashing-loss", "--set", "dataset_options.n=40"]
    done = cli(tmp_path, *args, "--out", "r", pythonpath=plugin_dir(tmp_path))
    assert done.returncode == 1, done.stderr
    assert "the run stopped; its last checkpoint is kept: agemetric run --resume r continues it" in done.stdout
    assert "raised MemoryError: out of memory" in done.stderr and (tmp_path / "r" / "checkpoint.pt").is_file()


def test_the_documented_table_lists_every_case():
    table = (ROOT / "docs" / "reliability.md").read_text()
    for case in [
        *ERRORS,
        "corrupt JPEG",
        "zero-byte file",
        "negative / NaN / non-numeric age",
        "unparseable file name",
        "plugin raising at import",
        "plugin returning the wrong shape",
        "plugin code raising an exception",
    ]:
        assert f"| {case} |" in table, case


def test_a_file_name_that_is_not_utf8_is_skipped_and_listed(tmp_path):
    from agemetric.default_plugins.utkface import UTKFace
    from agemetric.runs import RunFolder

    face(tmp_path / "26_1_2_20170116174525125.jpg.chip.jpg", 0)
    with open(os.fsencode(tmp_path) + b"/\xff_photo.jpg", "wb") as f:
        f.write(b"not looked at")
    dataset = UTKFace(tmp_path)
    assert len(dataset.records()) == 1
    ((name, reason),) = dataset.skipped.items
    assert name == "\\xff_photo.jpg" and "name is not" in reason
    RunFolder.write_items(tmp_path / "skipped.csv", dataset.skipped.items, header=("item", "reason"))
    assert "\\xff_photo.jpg" in (tmp_path / "skipped.csv").read_text(encoding="utf-8")

"""Runs, evaluations and reports met by a hostile but realistic user (issue 26): files written over,
sizes that only exhaust memory, tampered checkpoints and metrics, SIGTERM, a plugin that registers
a name twice, a full disk, values of megabytes in a config file. Each ends in what
docs/reliability.md promises: one line ``Error: ...`` naming the file or option (exit code 2), or
the documented exit code, and the user's files intact. Every case runs through the command line.
"""

from __future__ import annotations

import builtins
import csv
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from agemetric.cli import app

runner = CliRunner()
#: A finished run in seconds (the module's `trained` run).
TINY = (
    "--set dataset_options.n=90 --epochs 1 --image-size 32 --batch-size 16 --k 5 --set backbone_options.width=4 "
    "--set figures=false"
).split()
#: Long enough per epoch (about 1 s) to be stopped inside one, as in test_resume.py.
SLOW = (
    "--epochs 5 --image-size 48 --batch-size 32 --seed 3 --set dataset_options.n=500 --set backbone_options.width=8 "
    "--set figures=false --set threads=1"
).split()


def error_line(result, code: int = 2) -> str:
    """The one error line a command ends with on stderr (after checking the exit code and that no
    traceback came; a run stopped while training printed its epochs' lines before it)."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("Error: ")] == lines[-1:], result.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run folder (not to be changed by the tests)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = runner.invoke(app, ["run", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- evaluate --out never writes over a run's files, nor over any file without --force ----------------


@pytest.mark.parametrize("name", ["metrics.json", "model.pt", "config.toml", "split.csv", "skipped.csv"])
@pytest.mark.parametrize("force", [False, True])
def test_evaluate_never_writes_over_the_runs_own_files(trained, name, force):
    before = snapshot(trained)
    out = trained / name
    args = ["evaluate", str(trained), "--dataset", "csv", "--data-dir", "nowhere.csv", "--out", str(out)]
    line = error_line(runner.invoke(app, args + (["--force"] if force else [])))
    # refused before the data is read (nowhere.csv would be the error otherwise)
    assert f"--out: {out} is a file of the run {trained}; evaluate never writes over a run's own files" in line
    assert snapshot(trained) == before


def test_evaluate_asks_for_force_before_writing_over_a_file(trained, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff the user's photo")
    args = ["evaluate", str(trained), "--dataset", "synthetic", "--set", "dataset_options.n=20", "--out", str(photo)]
    line = error_line(runner.invoke(app, args))
    assert f"--out: {photo} exists; give --force to write over it, or choose another name" in line
    assert photo.read_bytes() == b"\xff\xd8\xff the user's photo"
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert json.loads(photo.read_text())["n_test"] == 20


def test_evaluate_lists_every_skipped_row_beside_its_out(trained, csv_dir, tmp_path):
    out = tmp_path / "eval" / "faces.json"
    args = ["evaluate", str(trained), "--dataset", "csv", "--data-dir", str(csv_dir / "labels.csv")]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    listed = tmp_path / "eval" / "faces.skipped.csv"
    assert "5 skipped: " in result.stderr and ", and 2 more" in result.stderr
    assert f"(all of them in {listed})" in result.stderr
    with listed.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["item", "reason"] and len(rows) == 1 + 5 == 1 + json.loads(out.read_text())["skipped"]
    assert {"row 5", "row 6", "row 7", "row 8", "row 9"} == {row[0] for row in rows[1:]}
    result = runner.invoke(app, args)  # no --out: the message says how to get the list
    assert result.exit_code == 0, result.output
    assert "(--out FILE.json lists all of them in FILE.skipped.csv)" in result.stderr


# -- sizes and values from a config file ----------------------------------------------------------------


def test_a_synthetic_dataset_of_a_trillion_faces_is_refused(tmp_path):
    (tmp_path / "c.toml").write_text("[dataset_options]\nn = 1e12\n")
    memory = 8 * 2**30  # under a limit: a regression fails instead of swapping (torch alone maps about 3 GiB)
    done = subprocess.run(
        [sys.executable, "-m", "agemetric", "run", "--config", "c.toml"],
        cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if k != "WORLD_SIZE"}, "AGEMETRIC_CACHE": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (memory, memory)),
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip() == (
        "Error: cannot create dataset 'synthetic' (plugin 'agemetric.datasets') with {'n': 1000000000000.0}: "
        "n must be a whole number between 2 and 1,000,000, got 1000000000000.0"
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "toml",
    [
        'epochs = "{big}"',
        'backbone = "{big}"',
        'device = "{big}"',
        '"{big}" = 1',
        '[loss_options]\nq = "{big}"',
        'data_dir = "{big}"\ndataset = "csv"',
    ],
    ids=["wrong type", "unknown plugin", "bad choice", "unknown key", "plugin option", "path"],
)
def test_a_config_value_of_megabytes_is_cut_in_the_error(tmp_path, monkeypatch, toml):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(toml.replace("{big}", "x" * 5_000_000) + "\n")
    line = error_line(runner.invoke(app, ["run", "--config", "c.toml"]))
    assert "xxx..." in line and len(line) < 1000, line[:2000]


# -- paper k-sweep ----------------------------------------------------------------------------------------


def test_k_sweep_refuses_a_k_beyond_the_gallery(trained, tmp_path):
    n = json.loads((trained / "metrics.json").read_text())["split"]["n_train"]
    out = tmp_path / "sweep"
    line = error_line(runner.invoke(app, ["paper", "k-sweep", str(trained), "--ks", "1,100000", "--out", str(out)]))
    assert f"--ks 100000: the gallery of {trained} has only {n} training faces; choose k <= {n}" in line
    assert not out.exists()


# -- agemetric report on metrics.json of the wrong types --------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mae": "lots"}, "field 'mae' must be a number, got 'lots'"),
        ({"cs": [1, 2]}, "field 'cs' must be a table, got [1, 2]"),
        ({"n_test": -3}, "field 'n_test' must be a whole number >= 0, got -3"),
        (
            {"intervals": {"level": 0.9, "coverage": "high", "mean_width": 3}},
            "field 'intervals.coverage' must be a number, got 'high'",
        ),
        (
            {"groups": {"sex": {"groups": {}, "largest_gap": {"mae": 1, "between": 3}}}},
            "field 'groups.sex.largest_gap.between' must be a list, got 3",
        ),
        ({"mean_predictor_mae": None}, "field 'mean_predictor_mae' must be a number, got None"),
    ],
    ids=["mae", "cs", "n_test", "intervals", "groups", "null"],
)
def test_report_names_the_file_and_the_field_of_a_wrong_metrics_json(trained, tmp_path, change, message):
    run = tmp_path / "r"
    run.mkdir()
    metrics = {**json.loads((trained / "metrics.json").read_text()), **change}
    (run / "metrics.json").write_text(json.dumps(metrics))
    line = error_line(runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "report")]))
    assert f"{run / 'metrics.json'}: {message}" in line
    assert not (tmp_path / "report").exists()


def test_report_on_a_metrics_json_that_is_not_an_object(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.json").write_text("[1, 2]")
    line = error_line(runner.invoke(app, ["report", str(tmp_path / "r"), "--out", str(tmp_path / "report")]))
    assert "metrics.json: expected the metrics of a run (a JSON object), got [1, 2]" in line


# -- SIGTERM, and resuming what it left -------------------------------------------------------------------


@pytest.fixture(scope="module")
def terminated(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A run stopped by SIGTERM inside its second epoch or later (a real signal from outside)."""
    tmp = tmp_path_factory.mktemp("terminated")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(AGEMETRIC_CACHE=str(tmp_path_factory.getbasetemp() / "agemetric-cache"), COLUMNS="200")
    command = [sys.executable, "-m", "agemetric", "run", *SLOW, "--out", "r"]
    process = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (tmp / "r" / "checkpoint.pt").exists():  # renamed into place: never half a file
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    return tmp / "r", subprocess.CompletedProcess(command, process.returncode, out, err)


def test_sigterm_checkpoints_the_step_and_exits_143(terminated):
    run, done = terminated
    assert done.returncode == 143, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: terminated (SIGTERM) in epoch ")
    assert last.endswith("; checkpoint saved, continue with: agemetric run --resume r")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["partial"] is not None and state["epoch"] >= 2  # the interrupted epoch's steps are kept


def resumable(terminated, tmp_path: Path, tamper=None) -> Path:
    """A copy of the terminated run folder, its checkpoint changed by ``tamper(state)``."""
    run = tmp_path / "copy"
    shutil.copytree(terminated[0], run)
    if tamper is not None:
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        tamper(state)
        torch.save(state, run / "checkpoint.pt")
    return run


def test_a_resumed_run_keeps_the_description_of_its_split(terminated, tmp_path):
    run = resumable(terminated, tmp_path)
    described = torch.load(run / "checkpoint.pt", weights_only=True)["extra"]["split"]
    result = runner.invoke(app, ["run", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    split = json.loads((run / "metrics.json").read_text())["split"]
    assert split["protocol"] == "random" and split["seed"] == 3 and split["test_fraction"] == 0.2
    assert split == described  # as the new run wrote it, not "file:split.csv"


def test_sigterm_before_training_is_handled_as_ctrl_c(tmp_path, monkeypatch):
    from agemetric import experiment

    decode = experiment.decode_records

    def terminated_while_decoding(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return decode(*args, **kwargs)

    def unhandled(signum, frame):  # without it, a command that does not handle SIGTERM would end pytest
        raise AssertionError("the command let SIGTERM through")

    monkeypatch.setattr(experiment, "decode_records", terminated_while_decoding)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        result = runner.invoke(app, ["run", *TINY, "--out", str(tmp_path / "r")])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 143, result.output
    assert result.stderr.strip() == "Terminated." and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # as after Ctrl-C: a run stopped before training leaves no folder


def _first(tensors: dict) -> str:
    """The name of the first tensor of ``tensors`` that is a floating-point array."""
    return next(k for k, v in tensors.items() if v.dim() and v.is_floating_point())


def _wider(state: dict) -> None:
    key = _first(state["model"])
    shape = state["model"][key].shape
    state["model"][key] = torch.zeros(shape[0] + 1, *shape[1:])


def _optimiser_state(state: dict) -> None:
    values = next(iter(state["optimizer"]["state"].values()))
    values[_first(values)] = torch.zeros(3, 3, 3, 3, 3)


TAMPERED = {
    "string epoch": (lambda s: s.update(epoch="3"), "epoch must be a whole number >= 1, got '3'"),
    "string history": (lambda s: s.update(history="lots"), "history must be a list of epochs, got 'lots'"),
    "settings that are not a table": (
        lambda s: s["extra"].update(settings="all"),
        "extra.settings must be a table, got 'all'",
    ),
    "wrong weight shape": (_wider, "its weights do not fit this run's model (size mismatch for "),
    "tampered optimiser state": (_optimiser_state, "has shape [3, 3, 3, 3, 3], its parameter ["),
    "tampered optimiser setting": (
        lambda s: s["optimizer"]["param_groups"][0].update(lr="fast"),
        "optimizer.param_groups[0].lr must be like 0.001, got 'fast'",
    ),
    "tampered random state": (
        lambda s: s["rng"].update(batches=torch.zeros(10, dtype=torch.uint8)),
        "rng must be the states of its three random generators",
    ),
    "batches beyond the data": (
        lambda s: s["partial"]["batches"].__setitem__(-1, torch.tensor([10**6])),
        "partial.batches index images beyond the 360 of the training split",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_checkpoint_is_a_one_line_error(terminated, tmp_path, case):
    tamper, message = TAMPERED[case]
    run = resumable(terminated, tmp_path, tamper)
    before = (run / "checkpoint.pt").read_bytes()
    line = error_line(runner.invoke(app, ["run", "--resume", str(run)]))
    assert line.startswith(f"Error: --resume: {run / 'checkpoint.pt'}: ") and message in line, line
    assert (run / "checkpoint.pt").read_bytes() == before and not (run / "metrics.json").exists()


# -- a plugin that registers one name twice ----------------------------------------------------------------


DUPLICATE_PLUGIN = """
from agemetric import hookimpl
from agemetric.losses import RevisedContrastiveLoss


@hookimpl
def register_losses(register):
    register("Hostile_Dup_Loss", RevisedContrastiveLoss)
    register("hostile-dup-loss", RevisedContrastiveLoss)
"""


def test_a_plugin_registering_a_name_twice_keeps_the_first_and_warns(tmp_path):
    site = tmp_path / "site"
    dist = site / "agemetric_dup-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "agemetric_dup.py").write_text(DUPLICATE_PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: agemetric-dup\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[agemetric]\ndup = agemetric_dup\n")
    env = {k: v for k, v in os.environ.items() if k not in ("AGEMETRIC_LOAD_PLUGINS", "WORLD_SIZE")}
    env.update(PYTHONPATH=str(site), COLUMNS="250", AGEMETRIC_CACHE=str(tmp_path / "cache"))

    def agemetric(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "agemetric", *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    warning = (
        "Warning: plugin 'dup': loss name 'hostile-dup-loss' is registered twice by plugin 'dup' "
        "(first as 'Hostile_Dup_Loss'); the second registration is skipped"
    )
    listed = agemetric("plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    assert warning in listed.stderr and "Traceback" not in listed.stderr
    registered = {plugin["name"]: plugin["registered"] for plugin in json.loads(listed.stdout)}
    assert registered["dup"] == {"loss": ["Hostile_Dup_Loss"]}
    done = agemetric("run", *TINY, "--loss", "hostile-dup-loss", "--out", "r")  # the first registration works
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["mae"] > 0


# -- a full disk while saving ----------------------------------------------------------------------------


@pytest.fixture
def full_disk(monkeypatch):
    """``fill(name)``: from now on, writing the file ``name`` (or its temporary file) fails as on a
    full disk, with the kernel's own ENOSPC (``/dev/full``) under the real writers (torch's, Python's)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    real_mkstemp, real_open = tempfile.mkstemp, io.open

    def fill(name: str) -> None:
        def mkstemp(*args, **kwargs):
            fd, path = real_mkstemp(*args, **kwargs)
            if Path(path).name.startswith(f".{name}."):  # atomic_torch_save's temporary file
                full = os.open("/dev/full", os.O_WRONLY)
                os.dup2(full, fd)
                os.close(full)
            return fd, path

        def open_full(file, mode="r", *args, **kwargs):
            if isinstance(file, str | os.PathLike) and Path(file).name == name and "w" in mode:
                file = "/dev/full"
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(io, "open", open_full)  # pathlib's
        monkeypatch.setattr(builtins, "open", open_full)  # matplotlib's

    return fill


@pytest.mark.parametrize(
    "name, message",
    [
        ("checkpoint.pt", "cannot write {run}/checkpoint.pt (No space left on device)"),
        ("model.pt", "cannot write {run}/model.pt (No space left on device)"),
        ("metrics.json", "cannot write {run}/metrics.json: No space left on device"),
        ("cs_curve.png", "cannot write {run}/figures/cs_curve.png: No space left on device"),
    ],
)
def test_a_full_disk_while_saving_says_so_and_names_the_file(tmp_path, full_disk, name, message):
    run = tmp_path / "r"
    full_disk(name)
    figures = ["--set", f"figures={name.endswith('.png')}"]
    line = error_line(runner.invoke(app, ["run", *TINY, *figures, "--out", str(run)]))
    assert line == "Error: " + message.format(run=run)
    assert not list(run.glob(".*.tmp"))  # no temporary file left behind


def test_ctrl_c_before_the_first_checkpoint_leaves_nothing_and_the_folder_can_be_used_again(tmp_path, monkeypatch):
    """Stopped as training starts (no checkpoint yet), the run has nothing to resume: what it wrote
    goes, and the same --out starts a new run."""
    from agemetric import experiment

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "train", stopped)
    result = runner.invoke(app, ["run", *TINY, "--out", str(tmp_path / "r")])
    assert result.exit_code == 130 and "Interrupted." in result.stderr, result.output
    assert not (tmp_path / "r").exists()
    monkeypatch.undo()
    result = runner.invoke(app, ["run", *TINY, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output


def test_a_run_stopped_before_its_model_without_a_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    """A time budget spent in the first epoch saves no checkpoint; stopped while it is evaluated
    (after its history.json), the run still leaves its --out usable."""
    from agemetric import experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "train", lambda *args, **kwargs: [{"epoch": 1, "images": 0}])
    monkeypatch.setattr(experiment, "_evaluate", interrupted)
    result = runner.invoke(app, ["run", *TINY, "--out", str(tmp_path / "r")])
    assert result.exit_code == 130, result.output
    assert not (tmp_path / "r").exists()


def test_a_users_hidden_temporary_files_are_left_alone(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / ".draft.swp.tmp").write_text("mine")
    (folder / ".model.pt.abc123.tmp").write_text("a run's orphan")
    result = runner.invoke(app, ["run", *TINY, "--out", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / ".draft.swp.tmp").read_text() == "mine" and not (folder / ".model.pt.abc123.tmp").exists()


def test_a_run_that_fails_after_it_finished_keeps_its_files(tmp_path, monkeypatch):
    import agemetric.run_report

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(agemetric.run_report, "write_run_figures", broken)
    result = runner.invoke(app, ["run", *TINY, "--out", str(tmp_path / "r"), "--set", "figures=true"])
    assert result.exit_code != 0
    assert {"config.toml", "split.csv", "metrics.json", "model.pt"} <= {p.name for p in (tmp_path / "r").iterdir()}

"""Checkpoints, resume after SIGKILL or Ctrl-C, and determinism: whole `agemetric run` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agemetric.runs import RunFolder, checkpoint_settings

AGEMETRIC = [sys.executable, "-m", "agemetric"]
#: Small enough for seconds, long enough per epoch (about 1 s) to be stopped inside one.
SETTINGS = (
    "--epochs 5 --image-size 48 --batch-size 32 --seed 3 --set dataset_options.n=500 --set backbone_options.width=8 "
    "--set figures=false --set threads=1"
).split()


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(AGEMETRIC_CACHE=str(tmp_path / "cache"), COLUMNS="200")
    return env


def agemetric(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*AGEMETRIC, *args], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*AGEMETRIC, *args], cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_checkpoint(run: Path, process: subprocess.Popen, epoch: int) -> dict:
    """Poll until the run's checkpoint says ``epoch`` is next (the epochs before it finished)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be stopped"
        try:
            state = torch.load(run / "checkpoint.pt", weights_only=True)
            if state["epoch"] >= epoch:
                return state
        except (FileNotFoundError, EOFError, RuntimeError):
            pass  # not written yet (a reader never sees half a file: it is renamed into place)
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def outcome(run: Path) -> tuple[dict, str, dict]:
    metrics = json.loads((run / "metrics.json").read_text())
    weights = torch.load(run / "model.pt", weights_only=True)["backbone"]
    return {k: metrics[k] for k in ("mae", "cs", "mean_predictor_mae")}, (run / "predictions.csv").read_text(), weights


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, tuple]:
    """One uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reference")
    agemetric(tmp, "run", *SETTINGS, "--out", "ref")
    assert not (tmp / "ref" / "checkpoint.pt").exists()  # removed once the run is complete
    return tmp, outcome(tmp / "ref")


def assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]  # MAE, CS, mean predictor: exactly
    assert a[1] == b[1]  # every prediction
    for name, value in a[2].items():
        assert torch.equal(value, b[2][name]), name


def test_same_seed_same_machine_same_result(reference):
    tmp, ref = reference
    agemetric(tmp, "run", *SETTINGS, "--out", "again")
    assert_same(outcome(tmp / "again"), ref)


def test_resume_after_sigkill_loses_at_most_the_current_epoch(reference, tmp_path):
    _, ref = reference
    process = start(tmp_path, "run", *SETTINGS, "--out", "killed")
    state = wait_for_checkpoint(tmp_path / "killed", process, epoch=3)  # epochs 1 and 2 are done
    process.kill()  # SIGKILL: no handler runs, no file is finished
    process.communicate()
    state = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert state["partial"] is None and state["epoch"] >= 3  # the last finished epoch survives
    assert [h["epoch"] for h in state["history"]] == list(range(1, state["epoch"]))
    folder = RunFolder(tmp_path / "killed")
    assert state["extra"]["settings"] == checkpoint_settings(folder.read_config())  # a resume must match them
    done = agemetric(tmp_path, "run", "--resume", "killed")
    assert f"resuming killed at epoch {state['epoch']}" in done.stdout
    assert_same(outcome(tmp_path / "killed"), ref)
    history = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert not (tmp_path / "killed" / "checkpoint.pt").exists()


def test_ctrl_c_checkpoints_mid_epoch_and_resume_is_exact(reference, tmp_path):
    _, ref = reference
    process = start(tmp_path, "run", *SETTINGS, "--out", "stopped")
    wait_for_checkpoint(tmp_path / "stopped", process, epoch=2)
    time.sleep(0.3)  # inside epoch 2
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "checkpoint saved, continue with: agemetric run --resume stopped" in err
    assert "Traceback" not in err
    state = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)
    assert state["partial"] is not None  # stopped inside epoch 2 (how far in depends on the machine's speed)
    agemetric(tmp_path, "run", "--resume", "stopped")
    assert_same(outcome(tmp_path / "stopped"), ref)


def test_resume_errors_are_one_line(reference, tmp_path):
    tmp, _ = reference
    cases = [
        (["run", "--resume", "nowhere"], "--resume: no run folder 'nowhere'"),
        (["run", "--resume", str(tmp / "ref")], "is a finished run (it has metrics.json)"),
        (["run", "--resume", str(tmp / "ref"), "--epochs", "3"], "its own config.toml; drop --epochs"),
    ]
    (tmp_path / "early").mkdir()
    cases.append((["run", "--resume", "early"], "early has no checkpoint.pt"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "bad" / "config.toml").write_text("")
    cases.append((["run", "--resume", "bad"], "--resume: cannot read"))
    for args, message in cases:
        done = agemetric(tmp_path, *args, check=False)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)

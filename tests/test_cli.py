"""The command line, end to end on tiny synthetic data."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from agemetric.cli import app

runner = CliRunner()
TINY = [
    "--set",
    "dataset_options.n=90",
    "--epochs",
    "1",
    "--image-size",
    "32",
    "--batch-size",
    "16",
    "--k",
    "5",
    "--set",
    "backbone_options.width=8",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = runner.invoke(app, ["run", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result


def test_run_writes_a_complete_run_folder(trained_run):
    out, result = trained_run
    for name in ("config.toml", "metrics.json", "predictions.csv", "model.pt", "split.csv", "history.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["cs"]) == {str(t) for t in range(11)}
    assert metrics["n_test"] == 18 and metrics["split"]["protocol"] == "random"
    assert metrics["split"]["n_train"] == 65 and metrics["split"]["n_calibration"] == 7  # 10 % of 72 calibrate
    assert metrics["mae"] > 0 and metrics["mean_predictor_mae"] > 0
    assert "MAE (years)" in result.output and "mean predictor MAE" in result.output
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0] == "key,age,predicted,abs_error,low,high" and len(lines) == 19


def test_evaluate_and_predict_use_the_run(trained_run, tmp_path, monkeypatch):
    out, _ = trained_run
    result = runner.invoke(
        app, ["evaluate", str(out), "--dataset", "synthetic", "--limit", "20", "--out", str(tmp_path / "m.json")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.json").read_text())["n_test"] == 20
    face = tmp_path / "face.png"
    Image.fromarray(np.full((50, 40, 3), 128, np.uint8)).save(face)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["predict", str(out), "face.png", "bad.jpg"])
    assert result.exit_code == 1
    assert "face.png" in result.output and "bad.jpg: cannot read image" in result.output


def test_evaluate_takes_set_for_how_images_are_read(trained_run, tmp_path):
    out, _ = trained_run
    metrics_file = tmp_path / "sub" / "m.json"
    args = ["evaluate", str(out), "--dataset", "synthetic", "--set", "dataset_options.n=30", "--set", "cache=false"]
    result = runner.invoke(app, [*args, "--out", str(metrics_file)])
    assert result.exit_code == 0, result.output
    assert json.loads(metrics_file.read_text())["n_test"] == 30  # the run's n=90, changed by --set
    result = runner.invoke(app, ["evaluate", str(out), "--dataset", "synthetic", "--set", "lr=1"])
    assert result.exit_code == 2
    assert "--set lr: evaluate takes only dataset_options, framing, framing_options, cache" in result.output
    assert "Traceback" not in result.output


def test_unknown_plugin_exits_2_with_the_known_names(tmp_path):
    result = runner.invoke(app, ["run", "--loss", "nope", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "unknown loss 'nope'; known: " in result.output and "revised-contrastive" in result.output
    assert "Traceback" not in result.output


def test_bad_set_value_exits_2(tmp_path):
    result = runner.invoke(app, ["run", "--set", "epochs=lots", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "epochs expects int, got 'lots'" in result.output


def test_a_folder_of_the_users_is_not_written_over(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "report.md").write_text("my notes")
    (folder / "predictions.csv").write_text("a,b")
    result = runner.invoke(app, ["run", *TINY, "--out", str(folder)])
    assert result.exit_code == 2 and "holds 'predictions.csv', which a run would write over" in result.output
    assert sorted(p.name for p in folder.iterdir()) == ["predictions.csv", "report.md"]  # no lock left either
    assert (folder / "report.md").read_text() == "my notes" and (folder / "predictions.csv").read_text() == "a,b"


def test_existing_run_is_not_overwritten(trained_run):
    out, _ = trained_run
    before = (out / "metrics.json").read_bytes()
    result = runner.invoke(app, ["run", *TINY, "--out", str(out)])
    assert result.exit_code == 2 and "already holds a run" in result.output
    assert (out / "metrics.json").read_bytes() == before


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(app, ["run", *TINY, "--out", str(blocker / "run")])
    assert result.exit_code == 2 and "cannot write" in result.output


def test_missing_data_folder(tmp_path):
    result = runner.invoke(
        app, ["run", "--dataset", "utkface", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and "does not exist" in result.output


def test_plugins_command_lists_defaults():
    result = runner.invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0
    infos = json.loads(result.output)
    names = {n for i in infos for ns in i["registered"].values() for n in ns}
    assert {"inception_v3", "revised-contrastive", "all-pairs", "l1-knn", "synthetic"} <= names


def test_split_file_is_reused(trained_run, tmp_path):
    out, _ = trained_run
    again = tmp_path / "again"
    result = runner.invoke(app, ["run", *TINY, "--split-file", str(out / "split.csv"), "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert (again / "split.csv").read_text() == (out / "split.csv").read_text()
    assert json.loads((again / "metrics.json").read_text())["split"]["protocol"] == "file:split.csv"


def test_subject_split_without_subjects_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["run", *TINY, "--split", "subject", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no subject ids" in result.output


@pytest.mark.parametrize(
    "method",
    [
        ["--loss", "l1-regression", "--miner", "batch", "--retriever", "direct", "--set", "embedding_dim=1"],
        ["--loss", "dex", "--miner", "batch", "--retriever", "expectation", "--set", "embedding_dim=101"],
        ["--epochs", "0", "--retriever", "ridge", "--set", "backbone_options.head=none"],
    ],
    ids=["regression", "dex", "linear-probe"],
)
def test_baselines_run_end_to_end(tmp_path, method):
    out = tmp_path / "r"
    result = runner.invoke(app, ["run", *TINY, *method, "--out", str(out)])  # a repeated option: the last wins
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == 18 and metrics["mae"] >= 0


def test_time_budget_stops_training(tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(app, ["run", *TINY, "--epochs", "50", "--set", "time_budget=0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    history = json.loads((out / "history.json").read_text())
    assert len(history) < 50 and "time budget of 0.5 s reached" in result.output


def test_evaluate_on_the_runs_own_images_says_how_many_it_trained_on_and_unseen_leaves_them_out(trained_run, tmp_path):
    out, _ = trained_run
    sides = (out / "split.csv").read_text().splitlines()[1:]
    trained = sum(not line.endswith(",test") for line in sides)  # 65 training and 7 calibration faces
    for unseen in ([], ["--unseen"]):
        metrics_file = tmp_path / f"m{len(unseen)}.json"
        args = ["evaluate", str(out), "--dataset", "synthetic", "--out", str(metrics_file), *unseen]
        result = runner.invoke(app, args)  # the run's dataset with its options (n=90)
        assert result.exit_code == 0, result.output
        metrics = json.loads(metrics_file.read_text())
        if unseen:
            assert metrics["n_test"] == len(sides) - trained and metrics["trained_on"] == 0
            assert "were trained or calibrated on" not in result.stderr
        else:
            assert metrics["n_test"] == len(sides) and metrics["trained_on"] == trained == 72
            assert f"{trained} of the {len(sides)} images were trained or calibrated on by this run" in result.stderr
    args = ["evaluate", str(out), "--dataset", "synthetic", "--set", "dataset_options.n=30", "--unseen"]
    other = runner.invoke(app, [*args, "--out", str(tmp_path / "other.json")])
    assert other.exit_code == 0 and "trained or calibrated on" not in other.stderr  # other faces, same names
    assert "--unseen: these are not the run's own images" in other.stderr
    assert json.loads((tmp_path / "other.json").read_text())["trained_on"] is None

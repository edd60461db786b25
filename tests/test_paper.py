"""The paper's analyses as commands: figures are valid PNGs and reports repeat the runs' own numbers."""

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from agemetric.cli import app

runner = CliRunner()
SMALL = (
    "--set dataset_options.n=200 --set image_size=32 --set batch_size=32 --set k=5 --set backbone_options.width=8"
).split()


def assert_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300
        image.verify()


def invoke(*args):
    result = runner.invoke(app, ["paper", *args])
    assert result.exit_code == 0, result.output
    return result


def test_toy_embedding(tmp_path):
    invoke("toy-embedding", "--epochs", "3", *SMALL, "--set", "dataset_options.n=400", "--out", str(tmp_path))
    assert_png(tmp_path / "toy_embedding.png")
    stats = json.loads((tmp_path / "toy_embedding.json").read_text())
    assert 48 <= stats["n_images"] <= 3 * 48 and stats["n_ages"] <= 48
    report = (tmp_path / "report.md").read_text()
    assert f"| {stats['rank_correlation']:.3f} |" in report and f"| {stats['loo_mae']:.2f} |" in report


def test_multitask_reports_the_runs_numbers(tmp_path):
    result = invoke("multitask", "--epochs", "1", *SMALL, "--out", str(tmp_path))
    assert_png(tmp_path / "multitask_cs.png")
    report = (tmp_path / "report.md").read_text()
    off = json.loads((tmp_path / "multitask-off" / "metrics.json").read_text())
    on = json.loads((tmp_path / "multitask-on" / "metrics.json").read_text())
    assert not off["multitask"] and on["multitask"] and "gender_accuracy_from_gender_embedding" not in off
    assert f"| {off['gender_accuracy_from_age_embedding']:.1f} |" in report
    assert f"| {on['gender_accuracy_from_gender_embedding']:.1f} |" in report
    for side, m in (("off", off), ("on", on)):
        assert f"| multi-task {side} | {m['mae']:.2f} |" in report
    assert "gender head (trained with labels)" in result.output
    # finished runs are reused: a second call trains nothing and writes the same report
    again = invoke("multitask", "--epochs", "1", *SMALL, "--out", str(tmp_path))
    assert "epoch 1/1" not in again.output and (tmp_path / "report.md").read_text() == report


def test_margin_sweep(tmp_path):
    invoke("margin-sweep", "--margins", "1,8", "--epochs", "1", *SMALL, "--out", str(tmp_path))
    assert_png(tmp_path / "margin_sweep.png")
    report = (tmp_path / "report.md").read_text()
    for margin in ("1", "8"):
        m = json.loads((tmp_path / f"margin-{margin}" / "metrics.json").read_text())
        assert f"| {margin} | {m['mae']:.2f} |" in report


def test_k_sweep_agrees_with_the_runs_own_k(tmp_path):
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["run", "--epochs", "1", *SMALL, "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    invoke("k-sweep", str(run_dir), "--ks", "1,5,20")
    assert_png(run_dir / "k-sweep" / "k_sweep.png")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"| 5 | {metrics['mae']:.2f} |" in (run_dir / "k-sweep" / "report.md").read_text()  # the run used k = 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["margin-sweep", "--margins", "two"], "--margins expects numbers"),
        (["margin-sweep", "--margins", "-1"], "--margins expects margins >= 0"),
        (["k-sweep", ".", "--ks", "0"], "--ks expects k >= 1"),
        (["k-sweep", "."], "not a finished run folder (no model.pt)"),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["paper", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output

"""Every run writes its figures and report.md; the report's numbers are metrics.json's."""

import json
import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from agemetric.cli import app
from agemetric.plots import RUN_FIGURES

runner = CliRunner()
TINY = [
    "--set", "dataset_options.n=90", "--epochs", "2", "--image-size", "32", "--batch-size", "16", "--k", "5",
    "--set", "backbone_options.width=8",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = runner.invoke(app, ["run", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def assert_png(path):
    assert path.is_file(), path
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 300
        image.verify()


@pytest.mark.parametrize("name", sorted(RUN_FIGURES))
def test_run_figures_are_valid_pngs(run_dir, name):
    assert_png(run_dir / "figures" / name)


def test_report_numbers_match_metrics(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    report = (run_dir / "report.md").read_text()
    assert f"| MAE (years) | {metrics['mae']:.2f} |" in report
    assert f"| mean predictor MAE (years) | {metrics['mean_predictor_mae']:.2f} |" in report
    for t in (1, 3, 5, 10):
        assert f"| CS({t}) (%) | {metrics['cs'][str(t)]:.1f} |" in report
    assert f"{metrics['n_test']:,} test images" in report and "random split" in report
    for name in RUN_FIGURES:
        assert f"(figures/{name})" in report
    # the synthetic faces have genders and multi-task is on: both accuracies are reported
    for key in ("gender_accuracy_from_age_embedding", "gender_accuracy_from_gender_embedding"):
        assert 0 <= metrics[key] <= 100
        assert re.search(rf"\| gender accuracy, .* \| {metrics[key]:.1f} \|", report)


def test_history_has_the_step_losses_the_curve_plots(run_dir):
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history) == 2 and all(len(e["step_losses"]) == -(-e["images"] // 16) for e in history)


def test_figures_can_be_turned_off(tmp_path):
    out = tmp_path / "nofig"
    assert runner.invoke(app, ["run", *TINY, "--set", "figures=false", "--out", str(out)]).exit_code == 0
    assert (out / "metrics.json").is_file() and not (out / "figures").exists()


def test_report_compares_runs_in_one_figure_and_table(run_dir, tmp_path):
    second = tmp_path / "second"
    assert (
        runner.invoke(app, ["run", *TINY, "--seed", "1", "--set", "figures=false", "--out", str(second)]).exit_code == 0
    )
    assert not (second / "figures").exists()
    result = runner.invoke(app, ["report", str(run_dir), str(second), "--out", str(tmp_path / "cmp"), "--run-figures"])
    assert result.exit_code == 0, result.output
    for name in RUN_FIGURES:  # --run-figures wrote the second run's own figures afterwards
        assert_png(second / "figures" / name)
    assert_png(tmp_path / "cmp" / "comparison.png")
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    for folder in (run_dir, second):
        m = json.loads((folder / "metrics.json").read_text())
        assert (
            f"| {folder.name} | {m['dataset']}" in table
            and f"| {m['mae']:.2f} | {m['mean_predictor_mae']:.2f} |" in table
        )


def test_report_on_a_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a finished run folder (no metrics.json)" in result.output
    assert "Traceback" not in result.output

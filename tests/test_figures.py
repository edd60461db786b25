"""Every run writes its figures and report.md; the report's numbers are metrics.json's."""

import json
import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from agemetric.cli import app
from agemetric.plots import RUN_FIGURES

runner = CliRunner()
TINY = (
    "--set dataset_options.n=90 --epochs 2 --image-size 32 --batch-size 16 --k 5 --set backbone_options.width=8"
).split()


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
    printed = result.output.splitlines()  # the table as tab-separated lines (not a terminal)
    from agemetric.run_report import COMPARISON_COLUMNS

    assert next(line for line in printed if line.startswith("run\t")).split("\t") == [
        c for c in COMPARISON_COLUMNS if c != "data"
    ]
    for folder in (run_dir, second):
        m = json.loads((folder / "metrics.json").read_text())
        assert (
            f"| {folder.name} | {m['dataset']}" in table
            and f"| {m['mae']:.2f} | {m['mean_predictor_mae']:.2f} |" in table
        )
        row = next(line for line in printed if line.startswith(f"{folder.name}\t")).split("\t")
        assert row[1:3] == [f"{m['mae']:.2f}", f"{m['mean_predictor_mae']:.2f}"]  # the markdown's cells


def test_report_on_a_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a finished run folder (no metrics.json)" in result.output
    assert "Traceback" not in result.output


def _strong_blue_pixels(path) -> int:
    """Pixels of matplotlib's tab:blue (31, 119, 180) drawn at an opacity above 2/3 over white
    (blue minus red above 100; at opacity a it is 149 a): markers that can be seen."""
    import numpy as np

    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=int)
    return int(((rgb[..., 2] - rgb[..., 0]) > 100).sum())


def test_predicted_vs_true_markers_can_be_seen(tmp_path):
    from agemetric.plots import predicted_vs_true, scatter_style

    true = [float(a) for a in range(5, 95, 5)]  # 18 test images, as in a tiny run
    predicted = [a + (7.0 if i % 2 else -7.0) for i, a in enumerate(true)]
    path = predicted_vs_true(true, predicted, tmp_path / "pvt.png", "note")
    # each of the 18 markers covers at least ~40 pixels of full colour at 120 dpi
    assert _strong_blue_pixels(path) > 18 * 40
    few, many = scatter_style(18), scatter_style(20_000)
    assert few["s"] >= 30 and few["alpha"] >= 0.8  # a few points: large and nearly opaque
    assert many["s"] >= 8 and many["alpha"] >= 0.25  # a dense cloud: smaller and lighter, never invisible
    assert few["s"] > many["s"] and few["alpha"] > many["alpha"]


def _mae_axes(figure):
    return figure.axes[1]


def test_comparison_has_one_mean_predictor_reference(run_dir):
    from agemetric.plots import comparison_figure

    m = json.loads((run_dir / "metrics.json").read_text())
    runs = {"a": m, "b": {**m, "mae": m["mae"] - 1}, "c": {**m, "mae": m["mae"] - 2}}
    ax = _mae_axes(comparison_figure(runs))
    assert len(ax.patches) == 3  # one bar per run, none for the mean predictor
    handles, labels = ax.get_legend_handles_labels()
    references = [label for label in labels if label.startswith("mean predictor")]
    assert references == [f"mean predictor ({m['mean_predictor_mae']:.2f})"]
    lines = [line for line in ax.get_lines() if line.get_label().startswith("mean predictor")]
    assert len(lines) == 1 and set(lines[0].get_ydata()) == {m["mean_predictor_mae"]}


def test_comparison_of_different_test_sets_marks_each_reference_once_in_the_legend(run_dir):
    from agemetric.plots import comparison_figure

    m = json.loads((run_dir / "metrics.json").read_text())
    ax = _mae_axes(comparison_figure({"a": m, "b": {**m, "mean_predictor_mae": m["mean_predictor_mae"] + 3}}))
    assert len(ax.patches) == 2
    labels = ax.get_legend_handles_labels()[1]
    assert [label for label in labels if "mean predictor" in label] == ["mean predictor of each run's test set"]


def test_training_loss_caption_names_the_training_images_not_the_test_set(run_dir, monkeypatch):
    import agemetric.plots as plots
    from agemetric import run_report

    metrics = json.loads((run_dir / "metrics.json").read_text())
    notes = {}
    real = plots.training_loss

    def spy(history, path, note):
        notes["loss"] = note
        return real(history, path, note)

    monkeypatch.setattr(plots, "training_loss", spy)
    run_report.write_run_figures(run_dir)
    assert "test" not in notes["loss"]
    assert notes["loss"].endswith(f"{metrics['split']['n_train']:,} training images")
    assert f"{metrics['n_test']:,} test images" in plots.caption(metrics)  # the other figures keep theirs

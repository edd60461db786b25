"""Error by group: bootstrap intervals against a reference, per-group figures against a count, group
columns read from CSV, UTKFace's race, and the report of a run over groups."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from agemetric import plugins
from agemetric.cli import app
from agemetric.config import resolve
from agemetric.data.arrays import decode
from agemetric.errors import AgemetricError
from agemetric.experiment import run
from agemetric.groups import bootstrap_mean, group_errors, groups_of

runner = CliRunner()


def test_bootstrap_interval_matches_a_plain_percentile_bootstrap():
    values = np.random.default_rng(1).exponential(5.0, 400)
    low, high = bootstrap_mean(values, seed=0, resamples=4000)
    rng = np.random.default_rng(7)  # a different stream: the two agree up to resampling noise
    means = values[rng.integers(0, len(values), (20000, len(values)))].mean(axis=1)
    ref_low, ref_high = np.percentile(means, [2.5, 97.5])
    sd = values.std() / np.sqrt(len(values))
    assert abs(low - ref_low) < 0.1 * sd and abs(high - ref_high) < 0.1 * sd
    assert abs((high - low) - 2 * 1.96 * sd) < 0.15 * sd  # and the normal approximation
    assert bootstrap_mean(values, seed=0, resamples=4000) == [low, high]  # seeded
    assert bootstrap_mean(np.array([3.0])) is None and bootstrap_mean(np.array([2.0, 2.0])) == [2.0, 2.0]


def test_group_errors_against_a_count():
    g = torch.Generator().manual_seed(0)
    true = torch.randint(5, 70, (240,), generator=g).float()
    predicted = true + torch.randn(240, generator=g) * 5
    labels = [["a", "b", "c", None][i % 4] for i in range(240)]
    low, high = predicted - 4, predicted + 4
    out = group_errors(predicted, true, {"site": labels}, (low, high))["site"]
    assert out["unknown"] == 60 and set(out["groups"]) == {"a", "b", "c"}
    maes = {}
    for value in "abc":
        rows = [i for i in range(240) if labels[i] == value]
        errors = [abs(predicted[i].item() - true[i].item()) for i in rows]
        row = out["groups"][value]
        assert row["n"] == len(rows) and row["mae"] == pytest.approx(sum(errors) / len(rows), rel=1e-6)
        assert row["cs5"] == pytest.approx(100 * sum(e <= 5 for e in errors) / len(rows))
        inside = sum(low[i].item() <= true[i].item() <= high[i].item() for i in rows)
        assert row["coverage"] == pytest.approx(100 * inside / len(rows))
        assert row["mae_ci"][0] <= row["mae"] <= row["mae_ci"][1]
        assert sum(b["n"] for b in row["by_age"].values()) == len(rows)
        maes[value] = row["mae"]
    worst, best = max(maes, key=maes.get), min(maes, key=maes.get)
    assert out["largest_gap"] == {"mae": pytest.approx(maes[worst] - maes[best]), "between": sorted([best, worst])}


def _csv_folder(tmp_path, n=60):
    rows = [["path", "age", "gender", "skin"]]
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append([f"{i}.png", str(20 + i % 40), "mf"[i % 2], ["light", "dark", ""][i % 3]])
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return tmp_path / "labels.csv"


def test_group_columns_are_read_from_csv_with_empty_values_counted(tmp_path):
    labels = _csv_folder(tmp_path)
    dataset = plugins.create("dataset", "csv", root=labels, groups=["Skin"])
    records = dataset.records()
    assert dict(records[0].groups) == {"skin": "light"} and records[2].groups == ()
    arrays = decode(dataset, records, 16)
    assert arrays.groups["skin"][:3] == ["light", "dark", None]
    assert arrays.subset(torch.tensor([1, 2])).groups == {"skin": ["dark", None]}
    assert set(groups_of(arrays)) == {"gender", "skin"} and groups_of(arrays)["gender"][:2] == ["male", "female"]
    with pytest.raises(AgemetricError, match="has no column 'tone'"):
        plugins.create("dataset", "csv", root=labels, groups=["tone"])


def test_utkface_records_carry_their_race(utk_dir):
    records = plugins.create("dataset", "utkface", root=utk_dir).records()
    assert all(dict(r.groups)["race"] in ("white", "black", "asian", "indian", "others") for r in records)


def test_a_run_reports_error_by_group_and_report_compares_it(tmp_path):
    (tmp_path / "d").mkdir()
    labels = _csv_folder(tmp_path / "d", n=120)
    sets = [
        "epochs=1",
        "image_size=32",
        "batch_size=16",
        "k=3",
        "bf16=off",
        "backbone_options.width=4",
        "dataset=csv",
        f"data_dir={labels}",
        "dataset_options.groups=['skin']",
    ]
    result = run(resolve("quick", sets=[*sets, f"out={tmp_path / 'r'}"]))
    groups = result.metrics["groups"]
    assert set(groups) == {"gender", "skin"} and set(groups["skin"]["groups"]) == {"dark", "light"}
    test_keys = [row["key"] for row in csv.DictReader((result.run_dir / "predictions.csv").open())]
    unknown = sum(1 for k in test_keys if int(k.split(".")[0]) % 3 == 2)
    assert groups["skin"]["unknown"] == unknown
    assert "coverage" in groups["skin"]["groups"]["dark"]
    report = (result.run_dir / "report.md").read_text()
    assert "## Error by group" in report and "Largest gap in MAE" in report
    assert (result.run_dir / "figures" / "groups.png").is_file()
    json.dumps(result.metrics, allow_nan=False)  # strict JSON
    compared = runner.invoke(
        app, ["report", str(result.run_dir), "--out", str(tmp_path / "cmp")], env={"COLUMNS": "250"}
    )
    assert compared.exit_code == 0, compared.output
    assert "skin" in (tmp_path / "cmp" / "comparison.md").read_text()

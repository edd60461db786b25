"""``agemetric evaluate``: score a trained run on another dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agemetric.cli._common import bucket_table, console, guarded, make_progress, metrics_table


@guarded
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `agemetric run`.")],
    dataset: Annotated[str, typer.Option(help="Dataset plugin of the images to score.")] = "csv",
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", "--data", help="The dataset's folder (or CSV file).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Score a random subset of this many images.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for --limit's subset.")] = 0,
    output: Annotated[Path | None, typer.Option(help="Also write the metrics to this JSON file.")] = None,
) -> None:
    """Predict every image of a dataset with a trained run's model and gallery; print MAE and CS.

    The mean predictor answers the gallery's mean age.
    """
    from dataclasses import replace

    from agemetric.estimator import AgeEstimator
    from agemetric.experiment import evaluate as evaluate_arrays
    from agemetric.experiment import fallback_summary, load_data

    estimator = AgeEstimator.load(Path(run_dir) / "model.pt")
    config = replace(
        estimator.config,
        dataset=dataset,
        data_dir=None if data_dir is None else str(data_dir),
        limit=limit,
        seed=seed,
        dataset_options={} if dataset != estimator.config.dataset else estimator.config.dataset_options,
    )
    with make_progress() as progress:
        ds, data = load_data(config, progress)
        metrics, _ = evaluate_arrays(estimator, data, estimator.retriever.ages, progress)
    if len(ds.skipped):
        console.print(f"[yellow]{ds.describe()}: {ds.skipped.summary()}[/]")
    noted = data.noted()
    metrics["framing_fallbacks"] = len(noted)
    if noted:
        console.print(f"[yellow]{fallback_summary(config, noted)}[/]")
    console.print(metrics_table(metrics, f"{ds.describe()} - all {len(data)} images"))
    console.print(bucket_table(metrics))
    if output is not None:
        output.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")

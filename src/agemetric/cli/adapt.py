"""``agemetric adapt``: a model made for the user's own photos with a few labelled faces of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agemetric._text import printable
from agemetric.cli._commands import DATASETS
from agemetric.cli._common import RichReporter, console, guarded, make_progress
from agemetric.errors import AgemetricError

if TYPE_CHECKING:
    from agemetric.adaptation import Adaptation
    from agemetric.config import RunConfig


@guarded
def adapt(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL", help="A run folder written by `agemetric run`, or a bundle from `agemetric export`."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            metavar="DIR",
            help="The adapted model: a run folder (from a run) or a bundle (from a bundle), new or empty; "
            "MODEL itself is never changed.",
        ),
    ],
    dataset: Annotated[
        str, typer.Option(metavar="NAME", help=f"Dataset plugin of your labelled faces: {DATASETS}.")
    ] = "csv",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", "--data", metavar="PATH", help="Your faces' folder or CSV file (path,age[,gender])."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(metavar="N", help="Use a random subset of this many faces.")] = None,
    seed: Annotated[
        int, typer.Option(metavar="INTEGER", help="Seed for --limit's subset and the cross-validation folds.")
    ] = 0,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="dataset_options.NAME=VALUE or cache (repeatable); faces are framed as the model frames them.",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Adapt a model to your own photos with a few labelled faces of them (20 or more; 50 is better).

    An estimate is the mean age of the nearest gallery faces, so your faces can join the gallery:
    alone, beside the training faces with a weight, or not at all, each with its own k. The mix is
    chosen by cross-validation on your faces, and kept only when it lowers their cross-validated
    error with 95 % confidence: otherwise the training gallery is kept and the command says so. The
    intervals are recalibrated on your faces either way. The report gives the cross-validated MAE
    and the intervals' coverage before and after.
    """
    from agemetric.bundle_files import is_bundle
    from agemetric.cli.evaluate import overrides

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AgemetricError(
            f"--out {out}: exists and is not an empty folder; choose a new folder for the adapted model"
        )
    changes = overrides(set_ or [], ("dataset_options", "cache"), "adapt", "faces are framed as the model frames them")
    if is_bundle(model):
        report = _adapt_bundle(model, out, dataset, data_dir, limit, seed, changes)
    else:
        report = _adapt_run(model, out, dataset, data_dir, limit, seed, changes)
    if json_out:
        print(json.dumps(report.to_dict()))
        return
    console.print(_table(report))
    console.print(
        f"{'Adapted' if report.adapted else 'Kept'}: {escape(report.reason)}.", soft_wrap=True, highlight=False
    )
    console.print(f"Model: {escape(printable(str(out)))}", soft_wrap=True)


def _faces(config: RunConfig):
    """Your faces, framed as the model frames them; skipped rows named."""
    from agemetric.data.loading import load_data, skipped

    with make_progress() as progress:
        ds, data = load_data(config, RichReporter(progress))
    left_out = skipped(ds, data)
    if len(left_out):
        console.print(f"[yellow]{escape(printable(f'{ds.describe()}: {left_out.summary()}'))}[/]")
    return data


def _adapt_run(model, out, dataset, data_dir, limit, seed, changes) -> Adaptation:
    from agemetric._folders import replacing_folder
    from agemetric.cli.evaluate import data_config
    from agemetric.estimator import AgeEstimator
    from agemetric.runs import RunFolder

    folder = RunFolder(model)
    estimator = AgeEstimator.load(folder.require_model())
    base = folder.read_config()
    report = estimator.adapt(_faces(data_config(base, dataset, data_dir, limit, seed, changes)), seed=seed)
    with replacing_folder(out, "--out") as new:
        adapted = RunFolder(new)
        estimator.save(adapted.model)
        adapted.write_config(base.replace(k=report.chosen.k))
        (new / RunFolder.ADAPTATION).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report


def _adapt_bundle(model, out, dataset, data_dir, limit, seed, changes) -> Adaptation:
    from agemetric.bundle import Bundle
    from agemetric.config import RunConfig

    bundle = Bundle(model)
    framing = bundle.manifest["framing"]  # the box framing keeps its box by value, a framer plugin its options
    if framing["name"] == "box":
        options = {"box": framing["box"], "margin": framing.get("margin", 0.0)}
    else:
        options = dict(framing.get("options", {}))
    config = RunConfig.from_flat(
        dataset=dataset,
        data_dir=None if data_dir is None else str(data_dir),
        limit=limit,
        seed=seed,
        image_size=bundle.image_size,
        framing=framing["name"],
        framing_options=options,
        **changes,
    )
    data = _faces(config)
    report = bundle.adapt(data.images.numpy(), data.ages.numpy(), seed=seed)
    bundle.save(out)
    return report


def _table(report: Adaptation) -> Table:
    table = Table(title=f"Your {report.n_faces} faces, cross-validated", header_style="bold")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row("gallery", "training faces", str(report.chosen) if report.adapted else "training faces (kept)")
    table.add_row(
        "MAE (years)",
        f"{report.mae_before:.2f} +- {report.mae_before_se:.2f}",
        f"{report.mae_after:.2f} +- {report.mae_after_se:.2f}",
    )
    level = f"{100 * report.level:.0f} % intervals: coverage %"
    before = "-" if report.coverage_before is None else f"{100 * report.coverage_before:.1f}"
    table.add_row(level, before, f"{100 * report.coverage_after:.1f}")
    return table

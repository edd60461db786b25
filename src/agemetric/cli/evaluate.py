"""``agemetric evaluate``: score a trained run on another dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agemetric.cli._commands import DATASETS
from agemetric.cli._common import (
    RichReporter,
    bucket_table,
    console,
    guarded,
    make_progress,
    metrics_table,
    print_warning,
)
from agemetric.errors import AgemetricError

if TYPE_CHECKING:
    from agemetric.config import RunConfig
    from agemetric.interfaces import Skipped
    from agemetric.runs import RunFolder

#: What ``--set`` may change at evaluation: how the images are found, read and framed. The model
#: and its gallery are the run's own.
SETTABLE = ("dataset_options", "framing", "framing_options", "cache")


def overrides(
    sets: list[str],
    settable: tuple[str, ...] = SETTABLE,
    command: str = "evaluate",
    why: str = "the model's settings are the run's",
) -> dict:
    """``--set`` items for a command that reads images for a trained model (evaluation by
    default), checked against what it lets the user change (``settable``)."""
    from agemetric.config import parse_set

    values = parse_set(sets)
    other = sorted(set(values) - set(settable))
    if other:
        raise AgemetricError(f"--set {other[0]}: {command} takes only {', '.join(settable)} ({why})")
    return values


def data_config(
    base: RunConfig, dataset: str, data_dir: Path | None, limit: int | None, seed: int, changes: dict
) -> RunConfig:
    """How to read the images of ``dataset``: a model's config ``base`` (its image size and
    framing) with that dataset, and ``changes`` (`overrides()`) on top. The dataset's and the
    framing's options are the model's only when they are the model's dataset and framing."""
    changes = dict(changes)
    data, model = base.data, base.model
    dataset_options = data.dataset_options if dataset == data.dataset else {}
    framing_options = model.framing_options if changes.get("framing", model.framing) == model.framing else {}
    return base.replace(
        dataset=dataset,
        data_dir=None if data_dir is None else str(data_dir),
        limit=limit,
        seed=seed,
        dataset_options={**dataset_options, **changes.pop("dataset_options", {})},
        framing_options={**framing_options, **changes.pop("framing_options", {})},
        **changes,
    )


def skipped_list(out: Path) -> Path:
    """Where the rows an evaluation skipped are listed, beside its ``--out``: ``m.json`` ->
    ``m.skipped.csv``."""
    return out.with_name(f"{out.stem}.skipped.csv")


def check_out(out: Path, folder: RunFolder, force: bool) -> None:
    """Refuse an ``--out`` that is a folder or a run's own file (of the evaluated run, or of any
    run folder; even with ``--force``), and, without ``--force``, an existing file (``--out`` or
    its `skipped_list()`)."""
    from agemetric.runs import RunFolder

    if out.is_dir():
        raise AgemetricError(
            f"--out: {out} is a folder; expected a file name for the metrics (e.g. {out}/metrics.json)"
        )
    for path in (out, skipped_list(out)):
        beside = RunFolder(path.parent)
        owner = folder if folder.owns(path) else beside if beside.finished and beside.owns(path) else None
        if owner is not None:
            raise AgemetricError(
                f"--out: {path} is a file of the run {owner.path}; evaluate never writes over a run's own "
                f"files, choose another name (e.g. {out.with_name('evaluation.json')})"
            )
    for path in (out, skipped_list(out)):
        if not force and (path.exists() or path.is_symlink()):
            role = "" if path == out else " (the list of --out's skipped rows)"
            raise AgemetricError(f"--out: {path} exists{role}; give --force to write over it, or choose another name")


@guarded
def evaluate(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder written by `agemetric run`.")],
    dataset: Annotated[
        str,
        typer.Option(metavar="NAME", help=f"Dataset plugin of the images to score: {DATASETS}."),
    ] = "csv",
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", "--data", metavar="PATH", help="The dataset's folder (or CSV file)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(metavar="N", help="Score a random subset of this many images.")] = None,
    seed: Annotated[int, typer.Option(metavar="INTEGER", help="Seed for --limit's subset.")] = 0,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Change how the images are read (repeatable): dataset_options.NAME=VALUE, framing, "
            "framing_options.NAME=VALUE or cache, e.g. --set framing_options.box=[l,t,r,b].",
        ),
    ] = None,
    recalibrate: Annotated[
        float | None,
        typer.Option(
            metavar="SHARE",
            help="Calibrate the prediction intervals again on this share of the images (a random draw "
            "with --seed) and score the rest with both the run's intervals and the new ones: intervals "
            "calibrated on one dataset need not hold on another. E.g. 0.2.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Also write the metrics to this JSON file, and the rows that could not be used (when "
            "there are some) to FILE's name with .skipped.csv (m.json: m.skipped.csv).",
        ),
    ] = None,
    unseen: Annotated[
        bool,
        typer.Option(
            "--unseen",
            help="Score only the images the run did not train or calibrate on (by its split.csv, before "
            "--limit draws): on the run's own dataset and folder, its test side.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Write --out (and its .skipped.csv) over existing files. The run's own files (its "
            "metrics.json, model.pt, ...) are never written over.",
        ),
    ] = False,
) -> None:
    """Predict every image of a dataset with a trained run's model and gallery; print MAE, CS, the
    intervals' coverage and the largest error gap between groups.

    The mean predictor answers the gallery's mean age.
    """
    from agemetric.data.loading import decode_records, fallback_summary, select_records, skipped
    from agemetric.estimator import AgeEstimator
    from agemetric.evaluation import evaluate as evaluate_arrays
    from agemetric.evaluation import evaluate_recalibrated
    from agemetric.runs import RunFolder

    folder = RunFolder(run_dir)
    if out is not None:  # before the slow part
        check_out(out, folder, force)
    if recalibrate is not None and not 0 < recalibrate < 1:
        raise AgemetricError(
            f"--recalibrate: expected a share of the images between 0 and 1 (e.g. 0.2), got {recalibrate:g}"
        )
    changes = overrides(set_ or [])
    estimator = AgeEstimator.load(folder.require_model())
    if recalibrate is not None and estimator.intervals is None:
        raise AgemetricError(
            f"--recalibrate: {run_dir} has no intervals to calibrate again (its run had calibration = 0)"
        )
    base = folder.read_config()
    config = data_config(base, dataset, data_dir, limit, seed, changes)
    same = _same_images(config, base)
    trained = _trained_keys(folder) if same else set()
    if unseen and not same:
        print_warning(
            "--unseen: these are not the run's own images (another dataset, its options or folder), so none is left out"
        )
    ds, records = select_records(config, leave_out=trained if unseen else ())
    seen = sum(r.key in trained for r in records)
    if seen:
        print_warning(
            f"{seen} of the {len(records)} images were trained or calibrated on by this run (its {folder.SPLIT}): "
            "they make the errors look lower than on new faces; --unseen scores only the others"
        )
    with make_progress() as progress:
        reporter = RichReporter(progress)
        data = decode_records(ds, records, config, reporter)
        if recalibrate is None:
            metrics, _ = evaluate_arrays(estimator, data, estimator.retriever.ages, reporter)
        else:
            metrics, _ = evaluate_recalibrated(
                estimator, data, estimator.retriever.ages, recalibrate, seed, base.evaluation.interval_groups, reporter
            )
    left_out = skipped(ds, data)
    where = _list_skipped(left_out, out)
    noted = data.noted()
    metrics["skipped"], metrics["framing_fallbacks"] = len(left_out), len(noted)
    # of the images read, how many the run trained or calibrated on (None: not the run's images)
    metrics["trained_on"] = seen if same else None
    if out is not None:  # written before anything is printed: a closed pipe (| head) cannot lose it
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise AgemetricError(f"--out: cannot write {str(out)!r}: {exc.strerror or exc}") from None
    if len(left_out):
        print_warning(f"{ds.describe()}: {left_out.summary()}{where}")
    if noted:
        print_warning(fallback_summary(config, noted))
    images = f"{len(data)} images" + (" the run did not train on" if unseen else "")
    scored = f"{metrics['n_test']} of {images}" if recalibrate is not None else f"all {images}"
    console.print(metrics_table(metrics, f"{ds.describe()} - {scored}"))
    console.print(bucket_table(metrics))


def _same_images(config: RunConfig, base: RunConfig) -> bool:
    """Whether ``config`` reads the images of the run's config ``base``: the same dataset with the
    same options from the same folder (a relative folder taken from here), so that a key names the
    same image in both."""

    from agemetric.plugins import canonical

    def images(data) -> tuple:
        folder = None if data.data_dir is None else Path(data.data_dir).expanduser().resolve()
        return canonical(data.dataset), data.dataset_options, folder

    return images(config.data) == images(base.data)


def _trained_keys(folder: RunFolder) -> set[str]:
    """The keys (names in the run's dataset) of the images the run trained or calibrated on."""
    if not folder.split.is_file():
        return set()
    return {key for key, side in folder.read_sides().items() if side != "test"}


def _list_skipped(left_out: Skipped, out: Path | None) -> str:
    """List every skipped row beside ``out`` (`skipped_list()`; an earlier evaluation's list there,
    written over with ``--force``, goes when no row was skipped); says where they are listed."""
    from agemetric.runs import RunFolder

    if out is None:
        more = len(left_out) > 3  # Skipped.summary() names the first three
        return " (--out FILE.json lists all of them in FILE.skipped.csv)" if more else ""
    path = skipped_list(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not len(left_out):
            path.unlink(missing_ok=True)
            return ""
    except OSError as exc:
        raise AgemetricError(f"--out: cannot write {str(path)!r}: {exc.strerror or exc}") from None
    RunFolder.write_items(path, left_out.items, header=("item", "reason"))
    return f" (all of them in {path})"

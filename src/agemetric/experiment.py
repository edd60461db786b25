"""A whole run: data -> split -> train -> gallery -> evaluation -> run folder.

``agemetric run`` is a thin layer over `run()`; other projects can call it directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from agemetric import distributed, plugins
from agemetric.config import RunConfig
from agemetric.data.arrays import FaceArrays
from agemetric.data.loading import (
    decode_records,
    fallback_summary,
    make_framer,
    select_records,
    skipped,
    split_arrays,
    split_records,
)
from agemetric.data.splits import SIDES, Split
from agemetric.errors import AgemetricError
from agemetric.estimator import AgeEstimator
from agemetric.evaluation import gender_accuracies, machine, score, snapshot_taker
from agemetric.reporting import SILENT, Reporter
from agemetric.runs import RunFolder, checkpoint_settings, comparable_settings
from agemetric.spec import ModelSpec, build_parts
from agemetric.training import Interrupted, TrainingDiverged, load_checkpoint, train


@dataclass
class RunResult:
    """What `run()` produced."""

    run_dir: Path
    metrics: dict
    estimator: AgeEstimator
    history: list[dict]


def check_plugins(config: RunConfig) -> None:
    """Fail early, with the plugins' one-line errors: every name ``config`` gives must be installed,
    and the light parts (miners, losses, retriever, framer) must accept their options."""
    for kind, name in (("backbone", config.model.backbone), ("dataset", config.data.dataset)):
        plugins.get_entry(kind, name)
    build_parts(ModelSpec.from_config(config, multitask=config.model.multitask is not False), backbone=False)
    make_framer(config)


def run(
    config: RunConfig,
    reporter: Reporter | None = None,
    resume: str | Path | None = None,
    snapshots: tuple[float, ...] = (),
) -> RunResult | None:
    """Train and evaluate one configuration and write its run folder.

    The run folder receives ``config.toml`` (resolved config, reusable with ``--config``),
    ``split.csv``, ``history.json``, ``model.pt`` (weights + gallery), ``predictions.csv`` and
    ``metrics.json``. While training, ``checkpoint.pt`` holds the state after the last finished
    epoch (or the step where Ctrl-C stopped it); it is removed when the run completes.

    Under ``torchrun`` (`agemetric.distributed`) every process loads the data and trains its
    share of each batch; rank 0 alone writes the run folder, evaluates and returns the result, the
    others return ``None`` once training ends.

    Args:
        config: the run's config.
        reporter: where the progress bars and notes (settings, skipped files) go
            (`agemetric.reporting.Reporter`); ``None``: nowhere.
        resume: an unfinished run folder to continue from its ``checkpoint.pt``, with its own
            split; ``config`` must be that folder's ``config.toml`` (see `resume_config()`).
        snapshots: training times in seconds at which to evaluate the test split during
            training (a learning curve against the clock, ``metrics["snapshots"]``); evaluating
            is left out of the training time and the budget.

    Examples:
        >>> import tempfile, agemetric
        >>> out = tempfile.mkdtemp()
        >>> config = agemetric.resolve("quick", sets=["dataset_options.n=60", "epochs=1", "image_size=32",
        ...                                           "batch_size=16", "k=3", "figures=false", f"out={out}/run"])
        >>> result = agemetric.run(config)
        >>> sorted(p.name for p in result.run_dir.iterdir() if p.suffix in (".pt", ".json", ".csv", ".toml"))
        ['config.toml', 'history.json', 'metrics.json', 'model.pt', 'predictions.csv', 'split.csv']
        >>> result.metrics["split"]["n_test"], result.metrics["mae"] > 0
        (12, True)
    """
    world = distributed.init_from_env(config.training.device)
    reporter = reporter if reporter is not None and world.is_main else SILENT
    check_plugins(config)  # a misspelt name or option fails at once, not after the data is decoded
    config, state = _resumed(config, resume, reporter)
    if config.training.threads:
        torch.set_num_threads(config.training.threads)
    t0 = time.perf_counter()
    dataset, records = select_records(config)  # a missing or empty data folder fails before any file is written
    device = distributed.require_device(distributed.resolve_device(config.training.device, world))
    folder = _open_folder(config, resume) if world.is_main else None  # rank 0 alone writes the run folder
    try:
        reporter.note(describe_run(config, device))
        data, split = _load(dataset, records, config, folder, resume is None, reporter)
        sides = split_arrays(data, split)  # train, calibration, test
        train_data, _, test_data = sides
        multitask = check_against_data(config, train_data)
        torch.manual_seed(config.seed)
        estimator = AgeEstimator.from_config(config, multitask=multitask).to(device)
        reporter.note(_describe_data(dataset, split, sides, config, multitask, world))
        t1 = time.perf_counter()
        curve: list[dict] = []
        on_step = snapshot_taker(train_data, test_data, config, snapshots, curve) if snapshots else None
        checkpoint = None if folder is None else folder.checkpoint
        # in the checkpoint: the split's description for a resumed run's metrics, and the settings
        # a resume must have
        kept = {"split": described_split(split, state), "settings": checkpoint_settings(config)}
        history = train(
            estimator, train_data, config.training, reporter, world, checkpoint, state, on_step, kept, seed=config.seed
        )
        if folder is None:  # not rank 0: rank 0 evaluates and writes the run folder
            return None
        folder.write_history(history)
        t2 = time.perf_counter()
        metrics = _evaluate(folder, estimator, sides, config, reporter)
        metrics.update(
            split={**kept["split"], **{f"n_{name}": len(side) for name, side in zip(SIDES, sides, strict=True)}},
            dataset=dataset.describe(),
            multitask=multitask,
            training_images_seen=sum(h["images"] for h in history),
            seconds={"load": t1 - t0, "train": t2 - t1, "evaluate": time.perf_counter() - t2},
            skipped=len(skipped(dataset, data)),
            framing_fallbacks=len(data.noted()),
            **({"snapshots": curve} if snapshots else {}),
            machine=machine(),
        )
        folder.write_metrics(metrics)
        folder.checkpoint.unlink(missing_ok=True)  # the run is complete: model.pt holds what is needed
        if config.output.figures:  # stopped here, the run stays complete: `agemetric report --run-figures` redraws them
            from agemetric.run_report import write_run_figures

            write_run_figures(folder.path)
        return RunResult(folder.path, metrics, estimator, history)
    except BaseException as exc:
        if folder is not None and resume is None and not (folder.checkpoint.exists() or folder.finished):
            folder.discard()  # nothing to resume or keep (refused, or stopped before a checkpoint): nothing left
        elif folder is not None and folder.checkpoint.exists() and not isinstance(exc, Interrupted | TrainingDiverged):
            reporter.note(
                f"the run stopped; its last checkpoint is kept: agemetric run --resume {folder.path} continues it",
                warning=True,
            )
        raise
    finally:
        if folder is not None:
            folder.unlock()


def _resumed(config: RunConfig, resume: str | Path | None, reporter: Reporter) -> tuple[RunConfig, dict | None]:
    """``config`` and the checkpoint's state to continue the unfinished run folder ``resume`` from,
    on its own split (a new run, ``resume`` ``None``: ``config`` and ``None``)."""
    if resume is None:
        return config, None
    state = load_checkpoint(RunFolder(resume).checkpoint)
    config = config.replace(split_file=str(RunFolder(resume).split))
    check_resumable(state, config, resume)
    reporter.note(f"resuming {resume} at epoch {state['epoch']}" + (" (mid-epoch)" if state["partial"] else ""))
    return config, state


def described_split(split: Split, state: dict | None) -> dict:
    """The split's description for ``metrics.json``: a resumed run (``state``, its checkpoint) reads
    its split back from ``split.csv``, so it takes the description the new run kept in the
    checkpoint (an older checkpoint holds none: the file's)."""
    kept = (state.get("extra") or {}).get("split") if state is not None else None
    return kept or split.info


def _open_folder(config: RunConfig, resume: str | Path | None) -> RunFolder:
    """The run folder, locked: the one to resume, or a new one with its ``config.toml``."""
    if resume is not None:
        return RunFolder(resume).lock()
    folder = RunFolder.create(config.output.out, config.data.dataset, config.model.backbone)
    folder.write_config(config)
    return folder


def _load(
    dataset, records, config: RunConfig, folder: RunFolder | None, new: bool, reporter
) -> tuple[FaceArrays, Split]:
    """Split and decode the records; write ``split.csv`` (a new run) and the lists of images that
    could not be read or were framed whole, and say so."""
    split = split_records(dataset, records, config, reporter)
    records = [r for r in records if r.key in split.side]
    if folder is not None and new:
        folder.write_split(split, [r.key for r in records])
    data = decode_records(dataset, records, config, reporter)
    left_out = skipped(dataset, data)
    if folder is not None and len(left_out):
        folder.write_items(folder.skipped, left_out.items, header=("item", "reason"))
        reporter.note(f"{dataset.describe()}: {left_out.summary()} (all of them in {folder.skipped})", True)
    noted = data.noted()
    if folder is not None and noted:
        folder.write_items(folder.framing, noted, header=("item", "framing"))
        reporter.note(f"{fallback_summary(config, noted)} (all of them in {folder.framing})", True)
    return data, split


def _evaluate(
    folder: RunFolder, estimator: AgeEstimator, sides: tuple[FaceArrays, ...], config: RunConfig, reporter
) -> dict:
    """Fit the gallery, calibrate the intervals (when there are calibration faces), save
    ``model.pt``, predict the test split and write ``predictions.csv``; returns the test metrics
    (and the gender accuracies when the data has genders)."""
    train_data, calibration_data, test_data = sides
    bar = reporter.bar("embed", sum(len(side) for side in sides))
    with_gender = bool((test_data.genders >= 0).any()) and train_data.has_gender
    # the gender head's embeddings come from the same pass as the age embeddings
    parts = ("age", "gender") if with_gender and estimator.gender_loss is not None else ("age",)
    train_emb = estimator.embed_parts(train_data.images, parts, progress=bar)
    estimator.fit_gallery(train_data, embeddings=train_emb["age"])
    calibration = None
    if len(calibration_data):
        calibration = (estimator.embed(calibration_data.images, progress=bar), calibration_data.ages)
        level, groups = config.evaluation.interval_level, config.evaluation.interval_groups
        estimator.calibrate(calibration_data, level, calibration[0], groups)
    estimator.save(folder.model)
    test_emb = estimator.embed_parts(test_data.images, parts, progress=bar)
    metrics, predicted, bounds = score(estimator, test_emb["age"], test_data, train_data.ages, calibration)
    if with_gender:
        metrics.update(gender_accuracies(estimator, train_data, test_data, train_emb, test_emb))
    folder.write_predictions(test_data.keys, test_data.ages, predicted, bounds)
    return metrics


def _describe_data(dataset, split, sides, config, multitask, world) -> str:
    train_data, calibration_data, test_data = sides
    held = f" / {len(calibration_data)} calibration" if len(calibration_data) else ""
    return (
        f"{dataset.describe()}: {len(train_data)} train{held} / {len(test_data)} test images "
        f"({split.info['protocol']} split), {config.model.image_size} px, multi-task {'on' if multitask else 'off'}"
        + (f", {world.size} processes" if world.active else "")
    )


def check_resumable(state: dict, config: RunConfig, resume: str | Path) -> None:
    """Refuse a checkpoint written under other settings than the run folder's ``config.toml``
    (older checkpoints, which do not record them, are trusted)."""
    saved = (state.get("extra") or {}).get("settings")
    if saved is None and state.get("settings") is not None:  # an older checkpoint: at the top, in older types
        saved = comparable_settings(state["settings"])
    now = checkpoint_settings(config)
    if saved is not None and saved != now:
        differ = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
        raise AgemetricError(
            f"resume: {RunFolder(resume).checkpoint} was written with other settings than "
            f"{RunFolder(resume).config} ({', '.join(differ)}); it cannot be continued"
        )


def check_against_data(config: RunConfig, train_data: FaceArrays) -> bool:
    """Check the settings that depend on the training data; returns whether the run trains the
    gender task (``multitask`` unset: when the data has gender labels; on without them
    is an error). ``k`` above the number of training faces is an error: every estimate would be
    the mean age of the whole gallery."""
    if config.model.k > len(train_data):
        raise AgemetricError(
            f"k {config.model.k}: the gallery has only {len(train_data)} training faces; choose k <= {len(train_data)}"
        )
    multitask = train_data.has_gender if config.model.multitask is None else config.model.multitask
    if multitask and not train_data.has_gender:
        raise AgemetricError(f"multitask: on, but dataset {config.data.dataset!r} has no gender labels")
    return multitask


def describe_run(config: RunConfig, device: torch.device) -> str:
    """The line a run starts with: what trains, how, and where."""
    from agemetric.devices import uses_bf16

    model, training = config.model, config.training
    bf16 = uses_bf16(model.bf16, device.type)
    epochs = f"{training.epochs} epoch" + ("s" if training.epochs != 1 else "")
    return (
        f"run: backbone {model.backbone} (weights {training.weights}), loss {model.loss} (margin {model.margin:g}), "
        f"miner {model.miner}, retriever {model.retriever} (k {model.k}); optimiser {training.optimizer} "
        f"(lr {training.lr:g}), batch {training.batch_size}, {epochs}"
        + (f" or {training.time_budget:g} s" if training.time_budget else "")
        + f"; device {device}, bf16 {'on' if bf16 else 'off'}"
    )


def resume_config(run_dir: str | Path) -> RunConfig:
    """The config of an unfinished run folder, checked to be resumable (one-line errors)."""
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise AgemetricError(f"resume: no run folder {str(folder.path)!r}")
    if folder.metrics.exists():
        raise AgemetricError(f"resume: {folder.path} is a finished run (it has {folder.METRICS}); nothing to resume")
    if not folder.checkpoint.is_file():
        raise AgemetricError(
            f"resume: {folder.path} has no {folder.CHECKPOINT} (a run writes one at the end of each epoch "
            "and on Ctrl-C; this one stopped before either)"
        )
    return folder.read_config()

"""``agemetric run``: train and evaluate, write a run folder."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import typer

from agemetric.cli._commands import DATASETS
from agemetric.cli._common import (
    RichReporter,
    bucket_table,
    console,
    duration,
    err_console,
    guarded,
    make_progress,
    metrics_table,
    state,
)
from agemetric.config_checks import CHOICES, DEVICES
from agemetric.presets import PRESETS

_MODEL = "Model"
_DATA = "Data"
_TRAIN = "Training"
_CONF = "Configuration"

OnOffAuto = Literal[CHOICES["bf16"]]
Optimizer = Literal[CHOICES["optimizer"]]
SplitProtocol = Literal[CHOICES["split"]]
Preset = Literal[tuple(PRESETS)]


def _quick(setting: str) -> str | bool:
    """What --help shows as a setting's default: its value in the quick preset, which applies
    when no preset is named (by --preset or in a --config file) (False: none to show)."""
    from agemetric.config import default

    value = PRESETS["quick"].get(setting, default(setting))
    if value is None:
        return "auto" if setting == "multitask" else False  # multitask unset: decided from the data
    return str(value)


@guarded
def run(
    ctx: typer.Context,
    backbone: Annotated[
        str | None,
        typer.Option(
            show_default=_quick("backbone"),
            metavar="NAME",
            help="Backbone plugin, e.g. inception_v3 or small_cnn.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option(
            show_default=_quick("loss"),
            metavar="NAME",
            help="Loss plugin, e.g. revised-contrastive.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    miner: Annotated[
        str | None,
        typer.Option(
            show_default=_quick("miner"), metavar="NAME", help="Miner plugin, e.g. all-pairs.", rich_help_panel=_MODEL
        ),
    ] = None,
    retriever: Annotated[
        str | None,
        typer.Option(
            show_default=_quick("retriever"),
            metavar="NAME",
            help="Retriever plugin, e.g. l1-knn.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            show_default=_quick("weights"),
            metavar="WEIGHTS",
            help="Backbone weights: none, imagenet, a plugin's (e.g. dlib) or a state-dict file.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    margin: Annotated[
        float | None,
        typer.Option(
            show_default=_quick("margin"),
            metavar="YEARS",
            help="Ages closer than this count as the same.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option(
            show_default=_quick("k"),
            metavar="N",
            help="Nearest gallery faces averaged for a prediction.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            show_default=_quick("dataset"),
            metavar="NAME",
            help=f"Dataset plugin: {DATASETS} (synthetic is embedded; the others read --data-dir).",
            rich_help_panel=_DATA,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", "--data", metavar="PATH", help="The dataset's folder (or CSV file).", rich_help_panel=_DATA
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            show_default=_quick("limit"),
            metavar="N",
            help="Use a random subset of this many images.",
            rich_help_panel=_DATA,
        ),
    ] = None,
    split: Annotated[
        SplitProtocol | None,
        typer.Option(
            show_default=_quick("split"),
            help="Split protocol: random (the paper's), subject (no person on both sides) or hash (by file content).",
            rich_help_panel=_DATA,
        ),
    ] = None,
    split_file: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Reuse the split.csv of an earlier run.", rich_help_panel=_DATA)
    ] = None,
    framing: Annotated[
        str | None,
        typer.Option(
            show_default=_quick("framing"),
            metavar="NAME",
            help="Face framing: center (cropped faces), box (mug-shots: the fixed box of the setting "
            "framing_options.box, [left, top, right, bottom]) or a plugin's, e.g. dlib-align (face detection "
            "and alignment, any photo; agemetric-dlib).",
            rich_help_panel=_DATA,
        ),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            show_default=_quick("image_size"),
            metavar="PIXELS",
            help="Input side in pixels (paper: 227).",
            rich_help_panel=_DATA,
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            show_default=_quick("epochs"), metavar="N", help="Passes over the training split.", rich_help_panel=_TRAIN
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            show_default=_quick("batch_size"),
            metavar="N",
            help="Images per batch; all pairs are compared.",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            show_default=_quick("seed"),
            metavar="INTEGER",
            help="Seed for the split, initialisation, batch order, augmentation and dropout.",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    optimizer: Annotated[
        Optimizer | None,
        typer.Option(
            show_default=_quick("optimizer"),
            help="adam (lr 1e-4 suits fine-tuning), adadelta (the paper's) or sgd.",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            show_default=_quick("lr"),
            metavar="RATE",
            help="Learning rate (Adadelta's is a scale factor: 1.0 is its usual value).",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            show_default=_quick("device"),
            metavar="[auto|cpu|cuda|cuda:N]",
            help="Where training runs: auto is CUDA when available, else the CPU.",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    multitask: Annotated[
        OnOffAuto | None,
        typer.Option(
            show_default=_quick("multitask"),
            help="Gender task: auto (on when the data has gender labels), on or off.",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    bf16: Annotated[
        OnOffAuto | None,
        typer.Option(
            show_default=_quick("bf16"),
            help="bfloat16 autocast: auto (on where the CPU or GPU supports it), on or off.",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Run folder (default: a new folder in runs/ named by the time, the dataset and the backbone).",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    preset: Annotated[
        Preset | None,
        typer.Option(
            metavar="NAME",
            help="quick (embedded data, minutes on a CPU; the default), face (real faces and ordinary photos: "
            "dlib's face ResNet-10 on dlib-aligned faces; needs agemetric-dlib), face-pair (the face recipe on "
            "both of dlib's networks: lower error, about 4 times the training time), paper (its exact settings, "
            "Adadelta) or finetune (the paper's method with Adam 1e-4, for ImageNet weights).",
            rich_help_panel=_CONF,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="A TOML file of settings (see config.toml in any run folder).",
            rich_help_panel=_CONF,
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override any setting (repeatable): --set warmup=0.1 --set loss_options.q=50.",
            rich_help_panel=_CONF,
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Continue an unfinished run folder from its checkpoint.pt (written after every epoch and on "
            "Ctrl-C or SIGTERM), with its own config and split; no other option may be given.",
            rich_help_panel=_CONF,
        ),
    ] = None,
) -> None:
    """Train the model on a dataset's training split and evaluate it on the test split.

    With no options: the quick preset (embedded synthetic faces, small CNN; 1 to 2 minutes on a laptop CPU).
    Real faces or ordinary photos: --preset face --dataset csv --data-dir labels.csv (needs agemetric-dlib);
    --preset face-pair for lower error with about 4 times the training time.
    Your faces on an ImageNet backbone: --preset finetune --dataset csv --data-dir labels.csv.
    The paper's exact setting: --preset paper.
    Several processes: torchrun --nproc_per_node 2 -m agemetric run ... (--batch-size is the global batch).
    The run folder's config.toml lists the run's settings (those left unset, such as --limit, are
    left out); the defaults shown below are the quick preset's.
    """
    from agemetric import config as cfg
    from agemetric import distributed
    from agemetric.errors import AgemetricError
    from agemetric.experiment import resume_config
    from agemetric.experiment import run as run_experiment

    if device is not None and not re.fullmatch(DEVICES, device):
        raise AgemetricError(f"--device expects auto, cpu, cuda or cuda:N, got {device!r}")
    # every option named after a setting, as given (None: not given); Paths as the strings they were
    options = {k: str(v) if isinstance(v, Path) else v for k, v in ctx.params.items() if k in cfg.SETTINGS}
    if resume is not None:
        given = [f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None]
        given += [name for name, v in (("--preset", preset), ("--config", config), ("--set", set_)) if v]
        if given:
            raise AgemetricError(f"--resume continues a run with its own config.toml; drop {', '.join(given)}")
        resolved = resume_config(resume)
    else:
        resolved = cfg.resolve(preset, config, options, set_)
    started = time.perf_counter()
    try:  # run() joins the process group under torchrun; rank 0 alone draws progress
        with _sigterm_as_ctrl_c(), make_progress(disable=not distributed.is_main_process()) as progress:
            result = run_experiment(resolved, reporter=RichReporter(progress), resume=resume)
    except BaseException:
        distributed.shutdown(wait=False)
        raise
    distributed.shutdown()
    if result is None:  # not rank 0: rank 0 evaluates and reports
        return
    m = result.metrics
    split = m["split"]
    title = f"{m['dataset']} - {split['protocol']} split, {split['n_train']} train / {split['n_test']} test"
    console.print(metrics_table(m, title))
    console.print(bucket_table(m))
    console.print(closing_line(result.run_dir, m, time.perf_counter() - started), soft_wrap=True)


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside training: cleaned up after as Ctrl-C is (a KeyboardInterrupt)."""


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """While a run runs, SIGTERM acts as Ctrl-C does: within training it stops between two steps
    and checkpoints (`agemetric.training.train()`); elsewhere it interrupts, and the command
    says ``Terminated.`` and exits with 143 (128 + SIGTERM), as Ctrl-C exits with 130."""

    def terminate(signum, frame):
        raise _Terminated

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main else None
    try:
        yield
    except _Terminated:
        if state.debug:
            raise
        err_console.print("[yellow]Terminated.[/]")
        raise typer.Exit(128 + signal.SIGTERM) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def closing_line(run_dir: Path, metrics: dict, seconds: float) -> str:
    """``Done in 1 min 05 s (...). Run folder: runs/x (metrics.json, ..., figures/, report.md)``."""
    from rich.markup import escape

    from agemetric.runs import RunFolder

    folder = RunFolder(run_dir)
    files = [folder.METRICS, folder.PREDICTIONS, folder.MODEL, folder.CONFIG]
    files += [f"{folder.FIGURES}/"] if folder.figures.exists() else []
    files += [folder.REPORT] if folder.report.exists() else []
    parts = metrics.get("seconds", {})
    labels = {"load": "data", "train": "training", "evaluate": "evaluation"}
    phases = ", ".join(f"{label} {duration(parts[key])}" for key, label in labels.items() if key in parts)
    took = f"Done in {duration(seconds)}" + (f" ({phases})" if phases else "")
    return f"{took}. Run folder: [bold]{escape(str(run_dir))}[/] ({', '.join(files)})"

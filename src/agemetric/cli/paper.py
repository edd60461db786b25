"""``agemetric paper ...``: the paper's analyses as commands, with figures and a report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from agemetric.cli._commands import DATASETS, Command, Group
from agemetric.cli._common import RichReporter, console, guarded, make_progress
from agemetric.presets import PRESETS

app = typer.Typer(
    cls=Group,
    help="The paper's analyses (Jeong et al. 2018) on any dataset: figures (PNG) and report.md in --out. "
    "They train with the quick preset on the embedded synthetic faces unless told otherwise.",
    no_args_is_help=True,
)

Preset = Annotated[Literal[tuple(PRESETS)] | None, typer.Option(help="Settings to start from (default here: quick).")]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", metavar="FILE", help="A TOML config file (e.g. a run's config.toml).")
]
Dataset = Annotated[str | None, typer.Option(metavar="NAME", help=f"Dataset plugin: {DATASETS} (default: synthetic).")]
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", "--data", metavar="PATH", help="The dataset's folder (or CSV file)."),
]
Seed = Annotated[
    int | None, typer.Option(metavar="INTEGER", help="Seed of the split, the initialisation and the batches.")
]
Epochs = Annotated[int | None, typer.Option(metavar="N", help="Training epochs of each run.")]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE", help="Override any setting, as for `agemetric run` (repeatable)."),
]
SweepOut = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="Output folder (default: runs/paper-NAME-TIME; finished runs in it are reused)."),
]


def _config(name, preset, config_file, dataset, data_dir, seed, epochs, sets, out, defaults=None):
    from agemetric import config as cfg

    options = {
        "dataset": dataset,
        "data_dir": None if data_dir is None else str(data_dir),
        "seed": seed,
        "epochs": epochs,
    }
    resolved = cfg.resolve(preset or "quick", config_file, options, sets or [], command_defaults=defaults)
    folder = out or Path("runs") / time.strftime(f"paper-{name}-%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    return resolved, folder


def _done(folder: Path) -> None:
    console.print(f"Figures and report: [bold]{folder}[/] (report.md)")


@app.command("toy-embedding", cls=Command)
@guarded
def toy_embedding(
    preset: Preset = None,
    config: ConfigFile = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    seed: Seed = None,
    epochs: Annotated[int | None, typer.Option(metavar="N", help="Training epochs (default 200).")] = None,
    set_: Sets = None,
    out: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Output folder (default: runs/paper-toy-TIME).")
    ] = None,
) -> None:
    """Fig. 10: a 2-D embedding (N_a = 2, batch 48, margin 2) of ages 16-63 with 1-3 images each."""
    from agemetric import paper

    resolved, folder = _config("toy", preset, config, dataset, data_dir, seed, epochs, set_, out, {"epochs": 200})
    with make_progress() as progress:
        stats = paper.toy_embedding(resolved, folder, RichReporter(progress))
    console.print(
        f"{stats['n_images']} images of {stats['n_ages']} ages: |Spearman| of age with the first principal axis "
        f"{stats['rank_correlation']:.3f}, leave-one-out 3-NN MAE {stats['loo_mae']:.2f} years"
    )
    _done(folder)


@app.command("multitask", cls=Command)
@guarded
def multitask(
    preset: Preset = None,
    config: ConfigFile = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    seed: Seed = None,
    epochs: Epochs = None,
    set_: Sets = None,
    out: SweepOut = None,
) -> None:
    """Table 2 and Fig. 11: gender from the age-only embedding, and CS curves with and without the gender task."""
    from agemetric import paper

    resolved, folder = _config("multitask", preset, config, dataset, data_dir, seed, epochs, set_, out, {"epochs": 8})
    with make_progress() as progress:
        runs = paper.multitask(resolved, folder, RichReporter(progress))
    for side, m in runs.items():
        gender = m.get("gender_accuracy_from_age_embedding")
        extra = "" if gender is None else f", gender from the age embedding {gender:.1f} %"
        console.print(f"multi-task {side}: MAE {m['mae']:.2f}{extra}")
    if "gender_accuracy_from_gender_embedding" in runs["on"]:
        console.print(f"gender head (trained with labels): {runs['on']['gender_accuracy_from_gender_embedding']:.1f} %")
    _done(folder)


@app.command("margin-sweep", cls=Command)
@guarded
def margin_sweep(
    margins: Annotated[str, typer.Option(metavar="YEARS,...", help="Margins to train with, in years.")] = "0,2,4,8",
    preset: Preset = None,
    config: ConfigFile = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    seed: Seed = None,
    epochs: Annotated[int | None, typer.Option(metavar="N", help="Training epochs per run (default 5).")] = None,
    set_: Sets = None,
    out: SweepOut = None,
) -> None:
    """MAE against the margin: one run per margin, same seed and settings."""
    from agemetric import paper
    from agemetric.errors import AgemetricError

    try:
        values = [float(m) for m in margins.split(",") if m.strip()]
    except ValueError:
        raise AgemetricError(f"--margins expects numbers separated by commas, got {margins!r}") from None
    if not values or min(values) < 0:
        raise AgemetricError(f"--margins expects margins >= 0, got {margins!r}")
    resolved, folder = _config("margin", preset, config, dataset, data_dir, seed, epochs, set_, out, {"epochs": 5})
    with make_progress() as progress:
        runs = paper.margin_sweep(resolved, folder, values, RichReporter(progress))
    console.print(", ".join(f"margin {m:g}: MAE {r['mae']:.2f}" for m, r in runs.items()))
    _done(folder)


@app.command("k-sweep", cls=Command)
@guarded
def k_sweep(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder written by `agemetric run`.")],
    ks: Annotated[str, typer.Option(metavar="K,...", help="Values of k to score.")] = "1,2,5,10,20,30,50",
    out: Annotated[Path | None, typer.Option(metavar="DIR", help="Output folder (default: RUN_DIR/k-sweep).")] = None,
) -> None:
    """MAE against k (the number of nearest training faces averaged), on a trained run without retraining."""
    from agemetric import paper
    from agemetric.errors import AgemetricError

    try:
        values = sorted({int(k) for k in ks.split(",") if k.strip()})
    except ValueError:
        raise AgemetricError(f"--ks expects whole numbers separated by commas, got {ks!r}") from None
    if not values or values[0] < 1:
        raise AgemetricError(f"--ks expects k >= 1, got {ks!r}")
    folder = out or run_dir / "k-sweep"
    result = paper.k_sweep(run_dir, folder, values)
    console.print(", ".join(f"k={k}: {v:.2f}" for k, v in result.items()))
    _done(folder)

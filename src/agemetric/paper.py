"""The paper's analyses (Jeong et al. 2018) as functions that work on any dataset.

Each writes PNG figures and a ``report.md`` into an output folder (its training runs go into
sub-folders, as ordinary run folders), and returns the numbers it reports:

- `toy_embedding()` — Fig. 10: a 2-D embedding of ages 16-63 with 1-3 images each.
- `multitask()` — Table 2 (gender from the age-only embedding against a gender head
  trained with labels) and Fig. 11 (CS curves with and without the gender task).
- `margin_sweep()` — MAE against the margin.
- `k_sweep()` — MAE against k on one trained run (no retraining).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from matplotlib.figure import Figure

from agemetric.config import RunConfig
from agemetric.data.arrays import FaceArrays
from agemetric.data.loading import decode_records, run_faces, select_records
from agemetric.errors import AgemetricError
from agemetric.estimator import AgeEstimator
from agemetric.experiment import run
from agemetric.metrics import mae
from agemetric.plots import caption, cs_curves, save_figure
from agemetric.reporting import SILENT, Reporter
from agemetric.runs import RunFolder

#: Fig. 10's setting: 2-D embedding, one batch of 48, margin 2, ages 16-63 with 1-3 images each.
TOY = {"embedding_dim": 2, "batch_size": 48, "margin": 2.0, "multitask": False, "augment": False}
TOY_AGES = range(16, 64)


def _write(out: Path, name: str, text: str) -> Path:
    path = out / name
    path.write_text(text, encoding="utf-8")
    return path


def _sub(config: RunConfig, out: Path, name: str, **changes) -> RunConfig:
    return config.replace(out=str(out / name), **changes)


def _finished(config: RunConfig) -> dict | None:
    """The metrics of a finished run folder for exactly this config (so a rerun can resume), else None."""
    folder = RunFolder(config.output.out)
    if not (folder.metrics.is_file() and folder.holds_config(config)):
        return None
    try:
        return folder.read_metrics()
    except (OSError, ValueError):
        return None


def _run(config: RunConfig, reporter: Reporter = SILENT) -> dict:
    """A run's metrics as written to its ``metrics.json`` (training only if not finished already)."""
    finished = _finished(config)
    if finished is not None:
        return finished
    run(config, reporter)
    return RunFolder(config.output.out).read_metrics()


# -- Fig. 10 -----------------------------------------------------------------------------------


def toy_records(records: list, seed: int) -> list:
    """1-3 images (a seeded random count) of each age 16-63 that the dataset has."""
    g = torch.Generator().manual_seed(seed)
    by_age: dict[int, list] = {}
    for record in records:
        by_age.setdefault(int(record.age), []).append(record)
    chosen = []
    for age in TOY_AGES:
        pool = by_age.get(age, [])
        count = int(torch.randint(1, 4, (1,), generator=g))
        order = torch.randperm(len(pool), generator=g).tolist()
        chosen += [pool[i] for i in order[:count]]
    return chosen


def toy_embedding(config: RunConfig, out: Path, reporter: Reporter = SILENT) -> dict:
    """Train a 2-D embedding on the toy set and plot it against age (paper, Fig. 10).

    Returns:
        ``{"n_images", "n_ages", "rank_correlation", "loo_mae"}``: the Spearman correlation between
        age and the embedding's first principal axis, and the leave-one-out 3-NN MAE in the embedding.
    """
    from agemetric.training import train

    config = config.replace(**TOY)
    dataset, records = select_records(config.replace(limit=None))
    records = toy_records(records, config.seed)
    if len(records) < 10:
        raise AgemetricError(f"dataset {config.data.dataset}: only {len(records)} images aged 16-63; need >= 10")
    data = decode_records(dataset, records, config, reporter)
    torch.manual_seed(config.seed)
    estimator = AgeEstimator.from_config(config, multitask=False)
    history = train(estimator, data, config.training, reporter, seed=config.seed)
    emb = estimator.embed(data.images, progress=reporter.bar("embed", len(data)))  # (N, 2)
    ages = data.ages
    stats = {
        "n_images": len(data),
        "n_ages": len(set(ages.long().tolist())),
        "rank_correlation": _spearman(_principal_axis(emb), ages),
        "loo_mae": _loo_knn_mae(emb, ages, k=3),
        "training_images_seen": sum(h["images"] for h in history),
    }
    note = f"{dataset.describe()} · {stats['n_images']} images of {stats['n_ages']} ages (16-63) · margin 2, batch 48"
    fig = Figure(figsize=(12, 5.2), layout="constrained")
    ax3 = fig.add_subplot(1, 2, 1, projection="3d")
    ax3.scatter(emb[:, 0], emb[:, 1], ages, c=ages, cmap="viridis", s=14)
    ax3.set(
        title="Embedding axes against true age",
        xlabel="embedding axis 1",
        ylabel="embedding axis 2",
        zlabel="true age (years)",
    )
    ax2 = fig.add_subplot(1, 2, 2)
    points = ax2.scatter(emb[:, 0], emb[:, 1], c=ages, cmap="viridis", s=18)
    fig.colorbar(points, ax=ax2, label="true age (years)")
    ax2.set(title="2-D embedding coloured by age", xlabel="embedding axis 1", ylabel="embedding axis 2")
    fig.supxlabel(note, fontsize=8, color="0.35")
    out.mkdir(parents=True, exist_ok=True)
    figure = save_figure(fig, out / "toy_embedding.png")
    _write(out, "toy_embedding.json", json.dumps(stats, indent=2) + "\n")
    _write(
        out,
        "report.md",
        "# Toy embedding (paper, Fig. 10)\n\n"
        f"{note}. N_a = 2, {stats['training_images_seen']:,} training images seen.\n\n"
        f"![toy embedding]({figure.name})\n\n"
        "| measure | value |\n|---|---|\n"
        f"| Spearman correlation of age with the first principal axis | {stats['rank_correlation']:.3f} |\n"
        f"| leave-one-out 3-NN MAE in the 2-D embedding (years) | {stats['loo_mae']:.2f} |\n",
    )
    return stats


def _principal_axis(emb: torch.Tensor) -> torch.Tensor:
    centred = emb.double() - emb.double().mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[0]  # (N,)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean rank)."""
    order = x.double().argsort()
    ranks = torch.empty_like(order, dtype=torch.float64)
    ranks[order] = torch.arange(len(x), dtype=torch.float64)
    for value in torch.unique(x):
        tie = x == value
        ranks[tie] = ranks[tie].mean()
    return ranks


def _spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """|Spearman's rho| (the sign of a principal axis is arbitrary).

    Examples:
        >>> round(_spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([30.0, 20.0, 10.0])), 3)
        1.0
    """
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return abs(float((rx * ry).sum() / (rx.norm() * ry.norm()).clamp_min(1e-12)))


def _loo_knn_mae(emb: torch.Tensor, ages: torch.Tensor, k: int) -> float:
    dist = torch.cdist(emb.double(), emb.double(), p=1)  # (N, N)
    dist.fill_diagonal_(float("inf"))
    idx = dist.topk(min(k, len(ages) - 1), largest=False).indices  # (N, k)
    return mae(ages[idx].mean(1), ages)


# -- Table 2 and Fig. 11 -----------------------------------------------------------------------


def multitask(config: RunConfig, out: Path, reporter: Reporter = SILENT) -> dict:
    """Two runs, same seed and budget, without and with the gender task (paper, Table 2 and Fig. 11).

    Returns:
        ``{"off": metrics, "on": metrics}``.
    """
    runs = {
        "off": _run(_sub(config, out, "multitask-off", multitask=False), reporter),
        "on": _run(_sub(config, out, "multitask-on", multitask=True), reporter),
    }
    note = caption(runs["on"])
    figure = cs_curves(
        {f"multi-task {side} (MAE {m['mae']:.2f})": m["cs"] for side, m in runs.items()},
        out / "multitask_cs.png",
        note,
        title="Cumulative score with and without the gender task",
    )
    off, on = runs["off"], runs["on"]
    rows = [
        ("age embedding trained without gender labels (multi-task off)", off.get("gender_accuracy_from_age_embedding")),
        ("age embedding of the multi-task model", on.get("gender_accuracy_from_age_embedding")),
        (
            "gender embedding trained with gender labels (multi-task on)",
            on.get("gender_accuracy_from_gender_embedding"),
        ),
    ]
    k = config.model.k
    lines = [
        "# Multi-task learning (paper, Table 2 and Fig. 11)",
        "",
        f"{note}. Same seed ({config.seed}) and settings; runs in `multitask-off/` and `multitask-on/`.",
        "",
        f"## Gender from the embedding (majority of the {k} nearest training faces)",
        "",
        "| embedding | gender accuracy (%) |",
        "|---|---|",
        *(f"| {name} | {'n/a (no gender labels)' if value is None else f'{value:.1f}'} |" for name, value in rows),
        "",
        "## Age",
        "",
        f"![CS curves]({figure.name})",
        "",
        "| run | MAE | CS(3) % | CS(5) % |",
        "|---|---|---|---|",
        *(
            f"| multi-task {side} | {m['mae']:.2f} | {m['cs']['3']:.1f} | {m['cs']['5']:.1f} |"
            for side, m in runs.items()
        ),
        "",
    ]
    _write(out, "report.md", "\n".join(lines))
    return runs


# -- sweeps ------------------------------------------------------------------------------------


def _line_plot(xs, ys, path: Path, title: str, xlabel: str, note: str, label: str) -> Path:
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(xs, ys, marker="o", label=label)
    ax.set(title=title, xlabel=xlabel, ylabel="MAE (years)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.supxlabel(note, fontsize=8, color="0.35")
    return save_figure(fig, path)


def margin_sweep(config: RunConfig, out: Path, margins: list[float], reporter: Reporter = SILENT) -> dict:
    """One run per margin (same seed and settings); MAE against the margin.

    Returns:
        ``{margin: metrics}``.
    """
    runs = {m: _run(_sub(config, out, f"margin-{m:g}", margin=float(m)), reporter) for m in margins}
    note = caption(next(iter(runs.values())))
    maes = [runs[m]["mae"] for m in margins]
    figure = _line_plot(
        margins,
        maes,
        out / "margin_sweep.png",
        "MAE against the margin",
        "margin (years)",
        note,
        f"k = {config.model.k}, {config.training.epochs} epochs",
    )
    table = "\n".join(f"| {m:g} | {runs[m]['mae']:.2f} | {runs[m]['cs']['5']:.1f} |" for m in margins)
    _write(
        out,
        "report.md",
        f"# Margin sweep\n\n{note}.\n\n![margin sweep]({figure.name})\n\n"
        f"| margin (years) | MAE | CS(5) % |\n|---|---|---|\n{table}\n",
    )
    return runs


def load_test_data(run_dir: Path, estimator: AgeEstimator | None = None) -> tuple[AgeEstimator, FaceArrays, dict]:
    """A run's estimator (with its gallery; ``estimator``: already loaded), its test images (from
    ``split.csv``) and its metrics."""
    folder = RunFolder(run_dir)
    estimator = estimator or AgeEstimator.load(folder.require_model())
    return estimator, run_faces(run_dir, ["test"])["test"], folder.read_metrics()


def k_sweep(run_dir: Path, out: Path, ks: list[int]) -> dict[int, float]:
    """MAE of the mean age of the k nearest, for each k, on one trained run (no retraining).

    Returns:
        ``{k: MAE}``.

    Raises:
        AgemetricError: a k is larger than the gallery (checked before the test images are read).
    """
    estimator = AgeEstimator.load(RunFolder(run_dir).require_model())
    gallery = estimator.retriever
    n = len(gallery.ages)
    if max(ks) > n:
        raise AgemetricError(f"ks {max(ks)}: the gallery of {run_dir} has only {n} training faces; choose k <= {n}")
    estimator, data, metrics = load_test_data(run_dir, estimator)
    _, idx = gallery.search(estimator.embed(data.images), k=max(ks))  # (M, max k), nearest first
    result = {k: mae(gallery.ages[idx[:, :k]].mean(1), data.ages) for k in ks}
    note = caption(metrics)
    out.mkdir(parents=True, exist_ok=True)
    figure = _line_plot(
        ks,
        [result[k] for k in ks],
        out / "k_sweep.png",
        "MAE against k",
        "k (nearest training faces averaged)",
        note,
        f"run {Path(run_dir).name}",
    )
    table = "\n".join(f"| {k} | {result[k]:.2f} |" for k in ks)
    _write(
        out,
        "report.md",
        f"# k sweep\n\n{note}; run `{run_dir}`.\n\n![k sweep]({figure.name})\n\n| k | MAE |\n|---|---|\n{table}\n",
    )
    return result

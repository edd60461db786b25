"""Figures for runs, comparisons and the paper's analyses (matplotlib, headless).

Figures are built on `matplotlib.figure.Figure` directly (no pyplot, no GUI backend),
so they work on servers and in threads. Each figure has a title, axis labels with units and a
caption naming the dataset, the split protocol and the number of images its numbers come from
(the test images; the training images for the training loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from agemetric.runs import writing

DPI = 120
#: The figures every run writes, file name -> what it shows.
RUN_FIGURES = {
    "cs_curve.png": "cumulative score CS(T), T = 0..10 years",
    "mae_by_age.png": "MAE per 10-year age bucket",
    "predicted_vs_true.png": "predicted against true age, with the diagonal",
    "training_loss.png": "training loss per step",
}
#: The figures a run writes when its metrics hold what they show.
OPTIONAL_FIGURES = {
    "intervals.png": "test coverage of the prediction intervals against the level they were calibrated for",
    "age_threshold.png": "share of test faces estimated at or above an age threshold, by true age",
    "groups.png": "MAE per group of people, with 95 % bootstrap intervals",
}


#: Gender accuracies a run may report, key -> label.
GENDER_METRICS = {
    "gender_accuracy_from_age_embedding": "gender accuracy, majority of the k nearest in the age embedding",
    "gender_accuracy_from_gender_embedding": "gender accuracy, majority of the k nearest in the gender embedding",
}


def caption(metrics: dict) -> str:
    """``UTKFace (...) · hash split · 4,698 test images``: where a figure's numbers come from."""
    split = metrics.get("split", {})
    return f"{metrics.get('dataset', '?')} · {split.get('protocol', '?')} split · {metrics['n_test']:,} test images"


def training_caption(metrics: dict) -> str:
    """``UTKFace (...) · hash split · 18,792 training images``: where the training loss comes from."""
    split = metrics.get("split", {})
    n_train = split.get("n_train")
    seen = f" · {n_train:,} training images" if n_train is not None else ""
    return f"{metrics.get('dataset', '?')} · {split.get('protocol', '?')} split{seen}"


def scatter_style(n: int) -> dict:
    """Marker size and opacity for ``n`` points: large and opaque for a few, smaller and lighter
    for many (so that a dense cloud still shows where most points lie); always with a thin edge."""
    n = max(n, 1)
    return {
        "s": float(min(36.0, max(8.0, 6000.0 / n))),
        "alpha": float(min(0.85, max(0.25, 600.0 / n))),
        "edgecolors": "white",
        "linewidths": 0.3,
    }


def _figure(title: str, note: str, size=(6.4, 4.4)) -> tuple[Figure, object]:
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    fig.supxlabel(note, fontsize=8, color="0.35")
    return fig, ax


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG (a full disk is a one-line error naming ``path``)."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    return path


def cs_curves(curves: dict[str, dict], path: Path, note: str, title: str = "Cumulative score") -> Path:
    """CS(T) against T for one or more runs (``label -> {"T": percent}``, as in metrics.json), one line each."""
    fig, ax = _figure(title, note)
    for label, cs in curves.items():
        ts = sorted(int(t) for t in cs)
        ax.plot(ts, [cs[str(t)] for t in ts], marker="o", label=label)
    ax.set_xlabel("error tolerance T (years)")
    ax.set_ylabel("CS(T): test images with |error| <= T (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def mae_by_age(buckets: dict[str, dict], path: Path, note: str) -> Path:
    """Bars of MAE per age bucket, each labelled with its number of test images."""
    fig, ax = _figure("MAE per age group", note)
    names = list(buckets)
    bars = ax.bar(names, [buckets[b]["mae"] for b in names], color="tab:blue")
    ax.bar_label(bars, labels=[f"n={buckets[b]['n']}" for b in names], fontsize=7)
    ax.set_xlabel("true age (years)")
    ax.set_ylabel("MAE (years)")
    ax.tick_params(axis="x", rotation=45)
    return save_figure(fig, path)


def predicted_vs_true(true: Sequence[float], predicted: Sequence[float], path: Path, note: str) -> Path:
    """Scatter of predicted against true age with the y = x diagonal."""
    fig, ax = _figure("Predicted vs true age", note, size=(5.4, 5.2))
    ax.scatter(true, predicted, color="tab:blue", label="test image", zorder=2, **scatter_style(len(true)))
    hi = 1.03 * max([*true, *predicted, 1.0])  # room for the markers at the edge
    ax.plot([0, hi], [0, hi], color="black", linewidth=1, label="perfect (y = x)", zorder=1)
    ax.set_xlabel("true age (years)")
    ax.set_ylabel("predicted age (years)")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_aspect("equal")
    ax.legend(loc="upper left")
    return save_figure(fig, path)


def interval_coverage(intervals: dict, path: Path, note: str) -> Path:
    """Two panels against the nominal level: test coverage (with the diagonal) and mean width, for
    each kind of interval in the run's ``curve``."""
    fig = Figure(figsize=(9.0, 4.2), layout="constrained")
    fig.suptitle("Prediction intervals")
    fig.supxlabel(note, fontsize=8, color="0.35")
    cover, width = fig.subplots(1, 2)
    curve = intervals["curve"]
    levels = [100 * row["level"] for row in curve]
    grouped = "pooled_coverage" in curve[0]
    for prefix, label, colour in (
        ("", "normalised, by group of estimates" if grouped else "normalised by the neighbours' spread", "tab:blue"),
        ("pooled_", "normalised, one quantile for all", "tab:orange"),
        ("constant_", "constant width", "tab:grey"),
    ):
        if f"{prefix}coverage" in curve[0]:
            cover.plot(levels, [row[f"{prefix}coverage"] for row in curve], marker="o", color=colour, label=label)
            width.plot(levels, [row[f"{prefix}mean_width"] for row in curve], marker="o", color=colour, label=label)
    cover.plot([levels[0], levels[-1]], [levels[0], levels[-1]], color="black", linewidth=1, label="nominal (y = x)")
    cover.set_title("coverage", fontsize=10)
    cover.set_ylabel("test faces inside their interval (%)")
    width.set_title("mean width", fontsize=10)
    width.set_ylabel("mean width of the interval (years)")
    for ax in (cover, width):
        ax.set_xlabel("level the intervals were calibrated for (%)")
        ax.grid(alpha=0.3)
    cover.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


def age_threshold(thresholds: dict, path: Path, note: str) -> Path:
    """For each threshold, the share of faces of each true age estimated at or above it: below
    the threshold that share is the false-accept rate, above it one minus the false-reject rate."""
    fig, ax = _figure("Decisions at an age threshold", note)
    for (name, rates), colour in zip(
        thresholds.items(), ("tab:red", "tab:blue", "tab:green", "tab:purple"), strict=False
    ):
        ages = sorted(rates["by_age"], key=float)
        ax.plot(
            [float(a) for a in ages],
            [rates["by_age"][a]["estimated_over"] for a in ages],
            color=colour,
            label=f"{name}: false accept {rates['false_accept'] or 0:.1f} %, "
            f"false reject {rates['false_reject'] or 0:.1f} %",
        )
        ax.axvline(float(name), color=colour, linestyle=":", linewidth=1)
    ax.set_xlabel("true age (years)")
    ax.set_ylabel("faces estimated at or above the threshold (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def group_mae(groupings: dict, path: Path, note: str) -> Path:
    """One panel per grouping: MAE per group with its 95 % bootstrap interval and its count."""
    fig = Figure(figsize=(3.2 * len(groupings) + 1, 4.2), layout="constrained")
    fig.suptitle("MAE per group")
    fig.supxlabel(note, fontsize=8, color="0.35")
    axes = fig.subplots(1, len(groupings), squeeze=False, sharey=True)[0]
    for ax, (name, grouping) in zip(axes, groupings.items(), strict=True):
        names = list(grouping["groups"])
        rows = [grouping["groups"][g] for g in names]
        maes = [r["mae"] for r in rows]
        errors = [
            [m - (r["mae_ci"] or [m, m])[0] for m, r in zip(maes, rows, strict=True)],
            [(r["mae_ci"] or [m, m])[1] - m for m, r in zip(maes, rows, strict=True)],
        ]
        bars = ax.bar(names, maes, yerr=errors, capsize=3, color="tab:blue")
        ax.bar_label(bars, labels=[f"n={r['n']}" for r in rows], fontsize=7, label_type="center", color="white")
        gap = grouping.get("largest_gap")
        ax.set_title(name + (f" (largest gap {gap['mae']:.2f} y)" if gap else ""), fontsize=9)
        ax.tick_params(axis="x", rotation=30)
    axes[0].set_ylabel("MAE (years), 95 % bootstrap interval")
    return save_figure(fig, path)


def training_loss(history: list[dict], path: Path, note: str) -> Path:
    """Per-step loss (light) with a moving average (dark), against images seen; epochs marked."""
    fig, ax = _figure("Training loss", note)
    losses = [x for epoch in history for x in epoch.get("step_losses", [])]
    if losses:
        per_step = sum(e["images"] for e in history) / len(losses)  # images per step
        xs = [(i + 1) * per_step for i in range(len(losses))]
        w = len(losses) // 25  # smooth over about 4 % of the run
        ax.plot(xs, losses, color="tab:orange", alpha=0.3 if w > 1 else 1.0, linewidth=0.8, label="per step")
        if w > 1:
            cum = [0.0]
            for x in losses:
                cum.append(cum[-1] + x)
            smooth = [(cum[i + 1] - cum[max(0, i + 1 - w)]) / min(i + 1, w) for i in range(len(losses))]
            ax.plot(xs, smooth, color="tab:red", label=f"moving average ({w} steps)")
        seen = 0
        for epoch in history[:-1]:
            seen += epoch["images"]
            ax.axvline(seen, color="0.8", linewidth=0.8, zorder=0)
        ax.legend(loc="upper right")
    elif history:  # a run from before per-step losses were recorded: one mean per epoch
        xs = [sum(e["images"] for e in history[: i + 1]) for i in range(len(history))]
        ax.plot(xs, [e["loss"] for e in history], marker="o", color="tab:red", label="mean over each epoch")
        ax.legend(loc="upper right")
    else:
        ax.text(0.5, 0.5, "no training steps (epochs = 0)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("training images seen")
    ax.set_ylabel("loss (age + gender task)")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def comparison(runs: dict[str, dict], path: Path) -> Path:
    """Several runs side by side: CS(T) curves (left) and MAE against the mean predictor (right),
    saved to ``path``."""
    return save_figure(comparison_figure(runs), path)


def comparison_figure(runs: dict[str, dict]) -> Figure:
    """The figure of `comparison()`: one bar per run, and one mean-predictor reference (a line
    across the runs when they share a test set, else one dashed mark over each bar)."""
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    for label, m in runs.items():
        ts = sorted(int(t) for t in m["cs"])
        left.plot(ts, [m["cs"][str(t)] for t in ts], marker="o", label=label)
    left.set(title="Cumulative score", xlabel="error tolerance T (years)", ylabel="CS(T) (%)", ylim=(0, 100))
    left.grid(alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    labels = list(runs)
    xs = list(range(len(labels)))
    bars = right.bar(xs, [runs[r]["mae"] for r in labels], width=0.6, label="run")
    right.bar_label(bars, fmt="%.2f", fontsize=8)
    references = [runs[r]["mean_predictor_mae"] for r in labels]
    if max(references) - min(references) < 0.005:  # one test set: one reference line across the runs
        right.axhline(
            references[0], color="0.35", linestyle="--", linewidth=1.2, label=f"mean predictor ({references[0]:.2f})"
        )
    else:  # different test sets: each run's own reference, drawn over its bar (one legend entry)
        right.hlines(
            references,
            [x - 0.4 for x in xs],
            [x + 0.4 for x in xs],
            color="0.35",
            linestyle="--",
            linewidth=1.2,
            label="mean predictor of each run's test set",
        )
    right.set_xticks(xs, labels, rotation=20, ha="right", fontsize=8)
    right.set(title="MAE (lower is better)", ylabel="MAE (years)")
    right.set_ylim(0, 1.15 * max([*references, *(runs[r]["mae"] for r in labels)]))
    right.legend(fontsize=8, loc="upper right")
    notes = sorted({caption(m) for m in runs.values()})
    fig.supxlabel("\n".join(notes), fontsize=8, color="0.35")
    return fig

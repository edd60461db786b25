"""A finished run in words and pictures: its figures and ``report.md``, and the table that
compares runs (``agemetric report``)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from agemetric import plots
from agemetric.runs import RunFolder, writing


def group_table(groupings: dict) -> list[str]:
    """Markdown lines: per grouping, MAE and CS(5) with their intervals (and coverage) per group."""
    lines = []
    for name, grouping in groupings.items():
        rows = grouping["groups"]
        coverage = any("coverage" in r for r in rows.values())
        unknown = f" (unknown: {grouping['unknown']})" if grouping.get("unknown") else ""
        header = "| group | faces | MAE [95 % CI] | CS(5) % [95 % CI] |" + (" coverage % |" if coverage else "")
        lines += ["", f"**{name}**{unknown}", "", header, "|---|---|---|---|" + ("---|" if coverage else "")]
        for value, r in rows.items():
            cells = [value, f"{r['n']:,}", f"{r['mae']:.2f} {_ci(r['mae_ci'])}"]
            cells.append(f"{r['cs5']:.1f} {_ci(r['cs5_ci'], 1)}")
            lines.append("| " + " | ".join(cells + ([f"{r['coverage']:.1f}"] if coverage else [])) + " |")
        gap = grouping.get("largest_gap")
        if gap:
            lines += ["", f"Largest gap in MAE: {gap['mae']:.2f} years ({' vs '.join(gap['between'])})."]
    return lines


def _ci(ci: list[float] | None, digits: int = 2) -> str:
    return "" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


#: the columns of `comparison_rows()`
COMPARISON_COLUMNS = (
    "run",
    "data",
    "MAE",
    "mean predictor",
    "CS(3) %",
    "CS(5) %",
    "intervals",
    "largest group gap",
    "images seen",
)


def comparison_rows(runs: dict[str, dict]) -> list[list[str]]:
    """One row of `COMPARISON_COLUMNS` cells per run of `comparison()`'s runs: its name, its
    data, MAE, the mean predictor's MAE, CS(3) and CS(5), the intervals' level, coverage and mean
    width, the largest MAE gap of each grouping, and the training images seen."""
    return [
        [
            label,
            plots.caption(m),
            f"{m['mae']:.2f}",
            f"{m['mean_predictor_mae']:.2f}",
            f"{m['cs']['3']:.1f}",
            f"{m['cs']['5']:.1f}",
            interval_summary(m),
            gap_summary(m),
            f"{m.get('training_images_seen', 0):,}",
        ]
        for label, m in runs.items()
    ]


def comparison_table(runs: dict[str, dict]) -> str:
    """The markdown table of `comparison()`'s runs."""
    lines = ["| " + " | ".join(COMPARISON_COLUMNS) + " |", "|" + "---|" * len(COMPARISON_COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in comparison_rows(runs)])


def interval_summary(metrics: dict) -> str:
    """``90 %: 89.8 % / 9.1 y`` (level: test coverage / mean width), or ``-``."""
    i = metrics.get("intervals")
    return "-" if not i else f"{100 * i['level']:.0f} %: {i['coverage']:.1f} % / {i['mean_width']:.1f} y"


def gap_summary(metrics: dict) -> str:
    """``race 1.20 (asian vs black)``: the largest MAE gap of each grouping, or ``-``."""
    gaps = [
        f"{name} {g['largest_gap']['mae']:.2f} ({' vs '.join(g['largest_gap']['between'])})"
        for name, g in metrics.get("groups", {}).items()
        if g.get("largest_gap")
    ]
    return "; ".join(gaps) or "-"


def read_predictions(run_dir: Path) -> tuple[list[float], list[float]]:
    """(true ages, predicted ages) from a run's ``predictions.csv``."""
    with RunFolder(run_dir).predictions.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [float(r["age"]) for r in rows], [float(r["predicted"]) for r in rows]


def write_run_figures(run_dir: Path) -> list[Path]:
    """The figures of `RUN_FIGURES` (and of `OPTIONAL_FIGURES` the metrics allow) and
    ``report.md`` for a finished run folder."""
    folder = RunFolder(run_dir)
    metrics, history = folder.read_metrics(), folder.read_history()
    note = plots.caption(metrics)
    true, predicted = read_predictions(folder.path)
    figures = folder.figures
    paths = [
        plots.cs_curves({f"MAE {metrics['mae']:.2f}": metrics["cs"]}, figures / "cs_curve.png", note),
        plots.mae_by_age(metrics["mae_by_age"], figures / "mae_by_age.png", note),
        plots.predicted_vs_true(true, predicted, figures / "predicted_vs_true.png", note),
        plots.training_loss(history, figures / "training_loss.png", plots.training_caption(metrics)),
    ]
    if "curve" in metrics.get("intervals", {}):
        paths.append(plots.interval_coverage(metrics["intervals"], figures / "intervals.png", note))
    if metrics.get("age_thresholds"):
        paths.append(plots.age_threshold(metrics["age_thresholds"], figures / "age_threshold.png", note))
    if metrics.get("groups"):
        paths.append(plots.group_mae(metrics["groups"], figures / "groups.png", note))
    with writing(folder.report):
        folder.report.write_text(run_report(folder.path.name, metrics, [p.name for p in paths]), encoding="utf-8")
    return paths


def run_report(name: str, metrics: dict, figures: Sequence[str] | None = None) -> str:
    """A short markdown report of one run: the numbers of ``metrics.json`` and its figures
    (`RUN_FIGURES`, and those of ``figures``, file names, that are in `OPTIONAL_FIGURES`)."""
    cs = metrics["cs"]
    lines = [
        f"# Run {name}",
        "",
        plots.caption(metrics),
        "",
        "| metric | value |",
        "|---|---|",
        f"| MAE (years) | {metrics['mae']:.2f} |",
        f"| mean predictor MAE (years) | {metrics['mean_predictor_mae']:.2f} |",
        *(f"| CS({t}) (%) | {cs[str(t)]:.1f} |" for t in (1, 3, 5, 10)),
        f"| training images seen | {metrics.get('training_images_seen', 0):,} |",
    ]
    for key, label in plots.GENDER_METRICS.items():
        if key in metrics:
            lines.append(f"| {label} (%) | {metrics[key]:.1f} |")
    intervals = metrics.get("intervals")
    if intervals:
        lines.append(
            f"| {100 * intervals['level']:.0f} % intervals: test coverage (%) / mean width (years) | "
            f"{intervals['coverage']:.1f} / {intervals['mean_width']:.1f} |"
        )
        same = [row for row in intervals.get("curve", []) if row["level"] == intervals["level"]]
        for prefix, what in (("pooled_", "one quantile for all faces"), ("constant_", "constant-width intervals")):
            row = same[0] if same else {}
            if f"{prefix}coverage" in row:
                lines.append(
                    f"| {what} at the same level: coverage (%) / mean width (years) | "
                    f"{row[f'{prefix}coverage']:.1f} / {row[f'{prefix}mean_width']:.1f} |"
                )
    for name, rates in metrics.get("age_thresholds", {}).items():
        lines.append(
            f"| under {name}: false accept / false reject (%) | {_percent(rates['false_accept'])} / "
            f"{_percent(rates['false_reject'])} |"
        )
    if intervals and intervals.get("by_age"):
        lines += [
            "",
            f"## {100 * intervals['level']:.0f} % intervals by true age",
            "",
            "| age | faces | coverage % | mean width (years) |",
            "|---|---|---|---|",
            *(
                f"| {age} | {b['n']:,} | {b['coverage']:.1f} | {b['mean_width']:.1f} |"
                for age, b in intervals["by_age"].items()
            ),
        ]
    if metrics.get("groups"):
        lines += ["", "## Error by group", *group_table(metrics["groups"])]
    shown = {**plots.RUN_FIGURES, **{f: what for f, what in plots.OPTIONAL_FIGURES.items() if f in (figures or ())}}
    lines += ["", *(f"![{what}](figures/{file})" for file, what in shown.items()), ""]
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"

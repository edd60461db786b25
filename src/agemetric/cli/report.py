"""``agemetric report``: compare finished runs in one figure and one table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agemetric.cli._common import console, guarded
from agemetric.errors import AgemetricError


def load_runs(run_dirs: list[Path]) -> dict[str, dict]:
    """``label -> metrics`` for run folders; labels are the folder names (made unique)."""
    from agemetric.runs import RunFolder

    runs: dict[str, dict] = {}
    for run_dir in run_dirs:
        folder = RunFolder(run_dir)
        if not folder.metrics.is_file():
            raise AgemetricError(f"{run_dir}: not a finished run folder (no {RunFolder.METRICS})")
        metrics = folder.read_metrics()  # checked: a field reports cannot show is a one-line error
        label = run_dir.resolve().name
        while label in runs:
            label = f"{run_dir.resolve().parent.name}/{label}"
        runs[label] = metrics
    return runs


@guarded
def report(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN_DIRS", help="Run folders written by `agemetric run`.")],
    out: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Folder for comparison.png and comparison.md (default: runs/report-TIME)."),
    ] = None,
    run_figures: Annotated[
        bool, typer.Option("--run-figures", help="Also (re)write each run's own figures/ and report.md.")
    ] = False,
) -> None:
    """Compare runs: CS curves and MAE (against each run's mean predictor) in one figure, plus a table."""
    from agemetric.plots import comparison
    from agemetric.run_report import COMPARISON_COLUMNS, comparison_rows, comparison_table, write_run_figures
    from agemetric.runs import writing

    out = out or Path("runs") / time.strftime("report-%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        raise AgemetricError(f"--out: {out} is a file; expected a folder for the report")
    runs = load_runs(run_dirs)
    if run_figures:
        for run_dir in run_dirs:
            write_run_figures(run_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AgemetricError(f"--out: cannot make the folder {str(out)!r}: {exc.strerror or exc}") from None
    figure = comparison(runs, out / "comparison.png")
    table_md = comparison_table(runs)
    with writing(out / "comparison.md"):
        (out / "comparison.md").write_text(
            f"# Comparison\n\n![comparison](comparison.png)\n\n{table_md}\n", encoding="utf-8"
        )
    table = Table(title="runs", header_style="bold")
    shown = [i for i, column in enumerate(COMPARISON_COLUMNS) if column != "data"]  # the caption: in the figure
    for name in (COMPARISON_COLUMNS[i] for i in shown):
        left = name in ("run", "largest group gap")
        table.add_column(name, justify="left" if left else "right", no_wrap=name == "run")  # names whole
    for row in comparison_rows(runs):
        table.add_row(*(row[i] for i in shown))
    console.print(table)
    console.print(f"wrote {figure} and {out / 'comparison.md'}")

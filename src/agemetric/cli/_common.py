"""What the commands share: error handling, the progress bar, result tables."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from agemetric._text import printable
from agemetric.cli._commands import CommandLineError
from agemetric.errors import AgemetricError
from agemetric.reporting import Bar, Reporter

#: The width of output that goes to a pipe or a file: tables are not cut or folded to a terminal's width.
PIPE_WIDTH = 1000


class _Console(Console):
    """A rich console as wide as its terminal, or `PIPE_WIDTH` when its output is not a
    terminal, whatever ``COLUMNS`` says (``agemetric plugins | grep NAME`` finds whole names).
    A width given to the constructor, or set later, is kept."""

    def __init__(self, *args, **kwargs):
        self._fixed_width = kwargs.get("width") is not None
        super().__init__(*args, **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if not self._fixed_width and not self.is_terminal:
            return ConsoleDimensions(PIPE_WIDTH, size.height)
        return size

    def print(self, *objects, **kwargs) -> None:
        """As rich prints, except that a table going to a pipe or a file is written as plain
        tab-separated lines (its title, if any, on a line of its own first), for ``cut``, ``grep``
        and spreadsheets rather than eyes."""
        if self.is_terminal or not any(isinstance(o, Table) for o in objects):
            super().print(*objects, **kwargs)
            return
        for o in objects:  # rich would expand the tabs: the table's lines go to the file as they are
            if isinstance(o, Table):
                self.file.write(_plain_table(o) + "\n")
            else:
                super().print(o, **kwargs)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._fixed_width = True
        Console.size.fset(self, new_size)  # rich's own setter

    @property
    def width(self) -> int:
        return self.size.width

    @width.setter
    def width(self, width: int) -> None:
        self._fixed_width = True
        Console.width.fset(self, width)  # rich's own setter


def _plain_table(table: Table) -> str:
    """``table`` as tab-separated lines of plain text, headers first, one line per row."""

    def plain(cell) -> str:  # one line: a cell's lines joined with "; "
        text = cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain
        return "; ".join(text.splitlines())

    columns = [list(column.cells) for column in table.columns]
    lines = ["\t".join(plain(column.header) for column in table.columns)]
    lines += ["\t".join(plain(cells[row]) for cells in columns) for row in range(table.row_count)]
    if table.title:
        lines.insert(0, plain(table.title))
    return "\n".join(lines)


console = _Console()
err_console = _Console(stderr=True)


@dataclass
class _State:
    debug: bool = False
    plugin_errors_shown: int = 0  # how many of agemetric.plugins.load_errors are on screen already


state = _State()


def print_error(message: str) -> None:
    """One line on stderr, never wrapped (so it can be grepped and read in logs); control
    characters and undecodable bytes in it (from file names) are written as escapes."""
    err_console.print(f"[bold red]Error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)


def print_warning(message: str) -> None:
    """As `print_error()`, for a problem the command goes on after (e.g. a file it skips)."""
    err_console.print(f"[bold yellow]Warning:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)


def warn_plugin_errors() -> None:
    """Name each plugin that failed to load or registered a name twice (and was not named yet),
    one line each, on stderr."""
    from agemetric.plugins import ENV_FILTER, REGISTRY_ERRORS, load_errors

    for name, error in load_errors[state.plugin_errors_shown :]:
        if name == ENV_FILTER:
            what = f"{name} {error}"
        elif any(said in error for said in REGISTRY_ERRORS):  # it loaded; one of its names did not
            what = f"plugin {name!r}: {error}"
        else:
            what = f"plugin {name!r} failed to load: {error}"
        err_console.print(f"[yellow]Warning:[/] {escape(printable(what))}", highlight=False)
    state.plugin_errors_shown = len(load_errors)


#: a setting or argument of the library, as an error message starts with it -> the option that sets it
SETTING_FLAGS = {
    "config_file": "--config",
    "data_dir": "--data-dir",
    "dataset": "--dataset",
    "device": "--device",
    "fmt": "--format",
    "framing_processes": "--framing-processes",
    "k": "--k",
    "ks": "--ks",
    "multitask": "--multitask",
    "out": "--out",
    "preset": "--preset",
    "resume": "--resume",
    "runtime": "--runtime",
    "sets": "--set",
    "split": "--split",
    "split_file": "--split-file",
    "weights": "--weights",
}


def as_flags(message: str) -> str:
    """A library error as the command line says it: a message starting with a setting's name
    (``data_dir: no UTKFace images in 'x'``) starts with its option instead (``--data-dir: ...``).

    Examples:
        >>> as_flags("data_dir is required: the UTKFace folder")
        '--data-dir is required: the UTKFace folder'
        >>> as_flags("dataset_options.n: expected a whole number, got 'many'")
        "dataset_options.n: expected a whole number, got 'many'"
    """
    setting = message.split(" ", 1)[0].removesuffix(":")
    return SETTING_FLAGS[setting] + message[len(setting) :] if setting in SETTING_FLAGS else message


def guarded(fn):
    """Turn `AgemetricError` into a one-line message and its exit code (2 for usage errors), and
    an exception raised inside a third-party plugin's code into a line naming the plugin and the
    place (exit code 1).

    With ``agemetric --debug`` the traceback is shown instead. Ctrl-C exits with 130. Any other
    exception (a bug of agemetric's own) keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AgemetricError as exc:
            if state.debug:
                raise
            print_error(as_flags(str(exc)))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if state.debug:
                raise
            err_console.print("[yellow]Interrupted.[/]")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, CommandLineError):  # a command's own exit, or a usage error
            raise
        except Exception as exc:
            from agemetric.plugins import blame

            where = None if state.debug else blame(exc)
            if where is None:
                raise
            said = (str(exc).strip().splitlines() or [""])[0] or where.source()  # a bare assert: its line
            said = said if len(said) <= 300 else said[:297] + "..."
            print_error(f"{where} raised {type(exc).__name__}: {said} (agemetric --debug shows the traceback)")
            raise typer.Exit(1) from None

    return wrapper


class _Progress(Progress):
    """Shows only the bars still running, and leaves none behind when it stops: a finished step
    (fingerprint, decode, train, embed) makes room for the next, and the line after the bars starts
    on a clean line. Messages printed through ``progress.console`` appear above the bars."""

    def get_renderables(self):
        yield self.make_tasks_table([task for task in self.tasks if not task.finished])


def make_progress(disable: bool = False) -> Progress:
    """Bars with a status (the epoch, the loss and images/s while training) and the time left (the
    columns fit 80 characters; the time spent is in each epoch's line and the closing one), on stderr so
    that stdout stays clean; ``disable`` hides them (processes other than rank 0 under torchrun),
    as does a stderr that is not a terminal (a log file has the one line per epoch instead).

    Print messages through ``progress.console`` while it runs, never through another console: the
    bars would be redrawn over them."""
    return _Progress(
        TextColumn("[bold]{task.description:<11}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=disable or not err_console.is_terminal,
    )


def duration(seconds: float) -> str:
    """``"8.4 s"``, ``"3 min 05 s"``, ``"2 h 04 min"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def notes_console(progress: Progress) -> Console:
    """Where a command prints its notes while ``progress`` runs: above the bars, through the bars'
    own console, when they are shown; on stdout when they are not (output to a pipe or a file)."""
    return progress.console if progress.live.is_started else console


class RichReporter(Reporter):
    """A run's bars on ``progress`` (see `make_progress()`), each bar's lines and the notes above
    them; warnings in yellow."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def bar(self, label: str, total: int, completed: int = 0) -> Bar:
        return _RichBar(self.progress, self.progress.add_task(label, total=total, completed=completed, status=""))

    def note(self, text: str, warning: bool = False) -> None:
        text = escape(printable(text))
        notes_console(self.progress).print(f"[yellow]{text}[/]" if warning else text)


class _RichBar(Bar):
    def __init__(self, progress: Progress, task: TaskID):
        self.progress, self.task = progress, task

    def advance(self, n: int = 1, label: str | None = None, status: str | None = None) -> None:
        fields = {"description": label} if label is not None else {}
        if status is not None:
            fields["status"] = status
        self.progress.update(self.task, advance=n, **fields)

    def line(self, text: str) -> None:
        self.progress.console.print(escape(printable(text)))


def metrics_table(metrics: dict, title: str) -> Table:
    """MAE, the mean predictor, CS(T) and MAE per age bucket in one table."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("MAE (years)", f"{metrics['mae']:.2f}")
    table.add_row("mean predictor MAE", f"{metrics['mean_predictor_mae']:.2f}")
    for t in (0, 1, 3, 5, 10):
        cs = metrics["cs"].get(t, metrics["cs"].get(str(t)))
        table.add_row(f"CS({t}) %", f"{cs:.1f}")
    if "gender_accuracy_from_age_embedding" in metrics:
        table.add_row("gender from age embedding %", f"{metrics['gender_accuracy_from_age_embedding']:.1f}")
    intervals = metrics.get("intervals")
    if intervals:
        level = f"{100 * intervals['level']:.0f} %"
        table.add_row(f"{level} intervals: coverage %", f"{intervals['coverage']:.1f}")
        table.add_row(f"{level} intervals: mean width (years)", f"{intervals['mean_width']:.1f}")
        again = metrics.get("recalibrated", {}).get("intervals")
        if again:
            n = f"{metrics['n_recalibration']:,} of these faces"
            table.add_row(f"{level} intervals calibrated on {n}: coverage %", f"{again['coverage']:.1f}")
            table.add_row(f"{level} intervals calibrated on {n}: mean width (years)", f"{again['mean_width']:.1f}")
    if "18" in metrics.get("age_thresholds", {}):
        rates = metrics["age_thresholds"]["18"]
        for key, label in (("false_accept", "under 18: false accept %"), ("false_reject", "under 18: false reject %")):
            table.add_row(label, "-" if rates[key] is None else f"{rates[key]:.1f}")
    for name, grouping in metrics.get("groups", {}).items():
        gap = grouping.get("largest_gap")
        if gap:
            table.add_row(f"largest MAE gap by {name} (years)", f"{gap['mae']:.2f} ({' vs '.join(gap['between'])})")
    table.add_row("test images", str(metrics["n_test"]))
    return table


def bucket_table(metrics: dict) -> Table:
    table = Table(title="MAE per age bucket", header_style="bold")
    table.add_column("ages")
    table.add_column("images", justify="right")
    table.add_column("MAE", justify="right")
    for bucket, row in metrics["mae_by_age"].items():
        table.add_row(bucket, str(row["n"]), f"{row['mae']:.2f}")
    return table

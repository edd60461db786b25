"""How long work reports on itself: progress bars and notes, without knowing who shows them.

Training, decoding and embedding report through a `Reporter`; the CLI passes one that draws rich
progress bars, other projects pass their own (a logger, a notebook widget) or nothing
(`SILENT`). The core never imports a display library.

Examples:
    >>> class Printer(Reporter):
    ...     def note(self, text, warning=False):
    ...         print(("warning: " if warning else "") + text)
    >>> Printer().note("3 files skipped", warning=True)
    warning: 3 files skipped
    >>> bar = SILENT.bar("embed", total=10)
    >>> bar(4)  # a bar is also a plain callback that advances it
"""

from __future__ import annotations


class Bar:
    """One bar of work: ``total`` units, advanced as they are done. This one shows nothing."""

    def advance(self, n: int = 1, label: str | None = None, status: str | None = None) -> None:
        """``n`` more units done; ``label`` replaces the bar's name (``"embed"``), ``status`` is a
        short text shown beside it (``"epoch 2/30, loss 12.3, 240 img/s"``)."""

    def line(self, text: str) -> None:
        """A line of progress that stays (one per epoch): readable in a log where bars do not
        refresh."""

    def __call__(self, n: int) -> None:
        self.advance(n)


class Reporter:
    """Where a run reports. Subclass and override what you show; the base class shows nothing."""

    def bar(self, label: str, total: int, completed: int = 0) -> Bar:
        """A new bar for ``total`` units of work, ``completed`` of them already done."""
        return Bar()

    def note(self, text: str, warning: bool = False) -> None:
        """A line for the user: a setting, a result, or (``warning``) something that went wrong
        but did not stop the run."""


#: The reporter that shows nothing.
SILENT = Reporter()

"""``agemetric cache``: what the disk cache of decoded images holds, and removing it."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agemetric._text import printable, size_text
from agemetric.cli._common import console, guarded


@guarded
def cache(
    clear: Annotated[bool, typer.Option("--clear", help="Remove every entry (the next runs decode again).")] = False,
) -> None:
    """List the disk cache of decoded images, used most recently first: where each entry's images
    came from, how many, their size and when a run last read them.

    The cache is in $AGEMETRIC_CACHE (default ~/.cache/agemetric) and kept under
    $AGEMETRIC_CACHE_LIMIT (default 20G; 0 stores nothing): a new entry first removes those used
    longest ago. --set cache=false runs without it.
    """
    from agemetric.data import cache as image_cache

    folder = escape(printable(str(image_cache.cache_dir())))
    if clear:
        n, freed = image_cache.clear()
        console.print(f"{folder}: removed {_entries(n)}, {size_text(freed)}", soft_wrap=True, highlight=False)
        return
    limit = image_cache.limit()
    entries = image_cache.entries()
    if entries:
        table = Table(header_style="bold")
        for column, justify in (("images from", "left"), ("images", "right"), ("pixels", "right")):
            table.add_column(column, justify=justify)
        table.add_column("size", justify="right")
        table.add_column("last used")
        for e in entries:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
            pixels = f"{e.size}x{e.size}" if e.size else "-"
            row = (escape(printable(e.source or "-")), f"{e.n:,}", pixels, size_text(e.bytes), when)
            table.add_row(*row)
        console.print(table)
    total = sum(e.bytes for e in entries)
    summary = f"{folder}: {_entries(len(entries))}, {size_text(total)} (limit {size_text(limit)})"
    if total > limit:
        summary += "; over the limit: the next run that stores images removes the entries used longest ago"
    console.print(summary, soft_wrap=True, highlight=False)


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"

"""``agemetric plugins``: what is installed and what it registered."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from agemetric.cli._common import console, guarded, warn_plugin_errors


@guarded
def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List each plugin with its version, the hooks it implements and the names it registered; a
    plugin that failed to load, or whose names clash with another's, with why (in --json, its
    "problems")."""
    from agemetric import plugins as registry

    infos = registry.plugin_info()
    if as_json:
        console.print_json(json.dumps([asdict(i) for i in infos]))
    else:
        table = Table(title="agemetric plugins", header_style="bold")
        for col in ("plugin", "version", "hooks", "registered"):
            table.add_column(col)
        for info in infos:
            names = "\n".join(f"{kind}: {', '.join(n)}" for kind, n in info.registered.items())
            if info.problems:  # said in full in the warnings
                problems = f"[yellow]{len(info.problems)} problem(s): see the warnings[/]"
                names = f"{names}\n{problems}" if names else problems
            table.add_row(info.name, info.version or "-", "\n".join(info.hooks), names or "-")
        console.print(table)
    warn_plugin_errors()

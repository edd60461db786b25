"""mkdocs hooks: the CLI reference is generated from the typer app at every build.

A page holding the marker ``<!-- cli-reference -->`` gets, in its place, the Markdown that
typer's own doc generator (``typer ... utils docs``) writes for ``agemetric.cli.app``: every
command, argument and option with its help and default, as ``agemetric --help`` shows them.
"""

from __future__ import annotations

MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    import typer
    from typer.cli import get_docs_for_click

    from agemetric.cli import app

    command = typer.main.get_command(app)
    reference = get_docs_for_click(obj=command, ctx=typer.Context(command), indent=1, name="agemetric")
    return markdown.replace(MARKER, reference)

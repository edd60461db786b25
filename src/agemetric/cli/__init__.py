"""The ``agemetric`` command line: a typer app with one file per command."""

from __future__ import annotations

import typer

from agemetric.cli import evaluate, plugins_cmd, predict, run
from agemetric.cli._common import state

app = typer.Typer(
    name="agemetric",
    help="Age estimation from face photos by multi-task Siamese deep metric learning "
    "(Jeong et al. 2018). Start with `agemetric run`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    state.debug = debug


app.command("run")(run.run)
app.command("evaluate")(evaluate.evaluate)
app.command("predict")(predict.predict)
app.command("plugins")(plugins_cmd.plugins)


def main() -> None:
    """Console-script entry point: adds plugin commands, then runs the app."""
    from agemetric.cli._common import guarded
    from agemetric.plugins import load_plugins

    guarded(lambda: load_plugins().hook.register_commands(cli=app))()
    app()


__all__ = ["app", "main"]

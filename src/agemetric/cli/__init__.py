"""The ``agemetric`` command line: a typer app with one file per command."""

from __future__ import annotations

import typer

from agemetric.cli import adapt, cache, evaluate, export, install, paper, predict, report, run, serve
from agemetric.cli import plugins as plugins_command
from agemetric.cli._commands import Command, Group
from agemetric.cli._common import state

app = typer.Typer(
    cls=Group,
    name="agemetric",
    help="Age estimation from face photos by multi-task Siamese deep metric learning "
    "(Jeong et al. 2018). Start with `agemetric run`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        import agemetric

        print(f"agemetric {agemetric.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print agemetric's version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    trace_hooks: bool = typer.Option(
        False,
        "--trace-hooks",
        help="Print each plugin load, hook call and component creation to stderr (or set AGEMETRIC_TRACE_HOOKS=1).",
    ),
) -> None:
    from agemetric import plugins

    state.debug = debug
    if trace_hooks:
        plugins.set_tracing(True)


app.command("run", cls=Command)(run.run)
app.command("evaluate", cls=Command)(evaluate.evaluate)
app.command("predict", cls=Command)(predict.predict)
app.command("export", cls=Command)(export.export)
app.command("adapt", cls=Command)(adapt.adapt)
app.command("serve", cls=Command)(serve.serve)
app.command("report", cls=Command)(report.report)
app.add_typer(paper.app, name="paper")
app.command("plugins", cls=Command)(plugins_command.plugins)
app.command("cache", cls=Command)(cache.cache)
app.command("install", cls=Command, context_settings={"ignore_unknown_options": True})(install.install)
app.command("uninstall", cls=Command)(install.uninstall)


def main() -> None:
    """Console-script entry point: adds plugin commands, then runs the app.

    Plugins that failed to load are named on stderr, one line each, before any command runs.
    """
    import sys

    from agemetric import plugins
    from agemetric.cli._common import guarded, warn_plugin_errors

    if "--trace-hooks" in sys.argv[1:]:  # plugins load before typer parses options
        plugins.set_tracing(True)
    guarded(_add_plugin_commands)()
    warn_plugin_errors()
    app()  # typer ends a command whose reader went away (| head) quietly, with exit code 1


def _add_plugin_commands() -> None:
    """Call the plugins' ``register_commands``; each command a plugin adds (also inside a group it
    adds with ``add_typer``) gets agemetric's error handling (one line, naming the plugin for an
    exception in its code) and is recorded as the plugin's in `agemetric.plugins.commands`
    (``agemetric plugins`` lists it). A hook that raises leaves none of its commands behind."""
    from agemetric import plugins

    start: tuple[int, int] | None = None  # where the plugin being called began adding, until it returns

    def take_back() -> None:  # the commands of a hook that raised
        if start is not None:
            del app.registered_commands[start[0] :], app.registered_groups[start[1] :]

    def arguments(plugin: str) -> dict:
        nonlocal start
        take_back()
        start = len(app.registered_commands), len(app.registered_groups)
        return {"cli": app}

    def added(plugin: str) -> str:
        nonlocal start
        commands, groups = app.registered_commands[start[0] :], app.registered_groups[start[1] :]
        start = None
        _guard_commands(commands, groups)
        names = [info.name or typer.main.get_command_name(info.callback.__name__) for info in commands]
        names += [group.name or group.typer_instance.info.name for group in groups]
        if names:
            plugins.commands[plugin] = names
        return ": " + (", ".join(str(name) for name in names) or "-")

    plugins.call_each("register_commands", arguments, added)
    take_back()


def _guard_commands(commands: list, groups: list) -> None:
    """Give each command, and each command of the groups (at any depth), `guarded`'s handling."""
    from agemetric.cli._common import guarded

    for info in commands:
        info.callback = guarded(info.callback)
    for group in groups:
        _guard_commands(group.typer_instance.registered_commands, group.typer_instance.registered_groups)


__all__ = ["app", "main"]

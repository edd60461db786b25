"""The command classes behind every ``agemetric`` command.

They make typer's help read as click users expect it:

- usage lines name the arguments (``agemetric predict [OPTIONS] MODEL PHOTOS...``);
- each option shows a placeholder saying what goes there (``--out DIR``, ``--bf16 [auto|on|off]``,
  nothing after a flag);
- help text is printed as written: square brackets are text, not rich markup;
- ``{datasets}`` in a help text lists the dataset plugins installed now;
- a usage error is one line naming the option and what it expects (``Error: --epochs expects a
  whole number, got 'lots'``), exit code 2.
"""

from __future__ import annotations

import contextlib
import re

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

try:  # typer with click inside it: its usage errors are TyperExceptions
    from typer.exceptions import TyperException as CommandLineError
except ImportError:  # a typer that uses click itself
    from click.exceptions import ClickException as CommandLineError

#: the exit code of a usage error (click's, kept by typer)
USAGE_ERROR = 2

#: In a help text: replaced by the names of the installed dataset plugins.
DATASETS = "{datasets}"


def fill(text: str | None) -> str | None:
    """``text`` with `DATASETS` replaced by the registered dataset names."""
    if not text or DATASETS not in text:
        return text
    from agemetric import plugins

    return text.replace(DATASETS, ", ".join(plugins.list_names("dataset")))


class Argument(TyperArgument):
    """An argument named by its placeholder: ``RUN_DIR``, ``PHOTOS...``, ``[NAME]``."""

    @property
    def display_name_raw(self) -> str:
        name = self.metavar or self.name.upper()
        return name + ("..." if self.nargs != 1 and not name.endswith("...") else "")

    def get_usage_pieces(self, ctx) -> list[str]:
        return [self.display_name_raw if self.required else f"[{self.display_name_raw}]"]

    def display_type_rich(self, ctx) -> str | None:
        return None  # the name is the placeholder already


class Option(TyperOption):
    """An option followed by its placeholder: its metavar, ``[a|b|c]`` for choices, nothing for a flag."""

    def display_type_rich(self, ctx) -> str | None:
        return placeholder(self) or None


def placeholder(option) -> str:
    """What follows an option's name in help: ``DIR``, ``[auto|on|off]``, ``INTEGER``; ``""`` for a flag."""
    if option.metavar is not None:
        return option.metavar
    if getattr(option, "is_flag", False):
        return ""
    descriptor = getattr(option, "type_descriptor", None)
    choices = getattr(descriptor, "choices", None)
    if choices:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in choices) + "]"
    if getattr(descriptor, "is_path", False):
        return "PATH"
    kind = getattr(descriptor, "annotation", None)
    return {int: "INTEGER", float: "FLOAT"}.get(kind, "TEXT")


def polish(param) -> None:
    """Give a typer parameter the behaviour above (in place; idempotent)."""
    if type(param) is TyperArgument:
        if param.metavar is None:
            param.metavar = param.name.upper()
        param.__class__ = Argument
    elif type(param) is TyperOption:
        param.__class__ = Option


def reflowed(text: str) -> str:
    r"""``text`` with each paragraph's lines joined, so that the terminal wraps it (a docstring's
    line breaks are not the reader's); a line starting a list item (``-``, ``*``) stays a line.

    Examples:
        >>> reflowed("One paragraph\nover two lines.\n\n- a list\n- of two")
        'One paragraph over two lines.\n\n- a list\n- of two'
    """
    paragraphs = []
    for paragraph in text.strip().split("\n\n"):
        lines = []
        for line in paragraph.splitlines():
            if lines and not line.lstrip().startswith(("- ", "* ")):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.strip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


@contextlib.contextmanager
def as_written(command, ctx):
    """While help is printed: help texts filled in and escaped, so rich prints them as written."""
    saved = []

    def swap(obj, attr):
        text = getattr(obj, attr, None)
        if text:
            saved.append((obj, attr, text))
            setattr(obj, attr, escape(reflowed(fill(text))))

    swap(command, "help")
    for param in command.get_params(ctx):
        swap(param, "help")
    for sub in getattr(command, "commands", {}).values():
        swap(sub, "help")
        swap(sub, "short_help")
    try:
        yield
    finally:
        for obj, attr, text in reversed(saved):
            setattr(obj, attr, text)


_EXPECTED = (
    ("valid integer", "a whole number"),
    ("valid number", "a number"),
    ("valid boolean", "true or false"),
)


def _given(args: list[str], opts: list[str]) -> str | None:
    """The last value given to one of ``opts`` in ``args`` (``--x V`` or ``--x=V``)."""
    found = None
    for i, arg in enumerate(args):
        for opt in opts:
            if arg == opt and i + 1 < len(args):
                found = args[i + 1]
            elif arg.startswith(opt + "="):
                found = arg[len(opt) + 1 :]
    return found


def one_line(error: CommandLineError, args: list[str]) -> str:
    """A click usage error as one line: what is wrong, where help is."""
    message = re.sub(r"\bValue error, ", "", error.format_message()).strip()
    param = getattr(error, "param", None)
    if (
        isinstance(error, typer.BadParameter)
        and type(error).__name__ != "MissingParameter"
        and getattr(param, "param_type_name", None) == "option"
    ):
        name = max(param.opts, key=len)
        detail = re.sub(r"\bValue error, ", "", error.message).strip()
        value = _given(args, [*param.opts, *param.secondary_opts])
        what = next((w for key, w in _EXPECTED if key in detail), None)
        choices = getattr(getattr(param, "type_descriptor", None), "choices", None)
        if choices and value is not None:
            allowed = ", ".join(str(getattr(c, "value", c)) for c in choices)
            message = f"{name} must be one of {allowed}; got {value!r}"
        elif what is not None and value is not None:
            message = f"{name} expects {what}, got {value!r}"
        else:
            message = f"{name}: {detail}"
    ctx = getattr(error, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return message + where


@contextlib.contextmanager
def _one_line_errors(args):
    from agemetric.cli._common import print_error, state

    args = list(args)  # the parser consumes the list it is given
    try:
        yield
    except CommandLineError as error:
        if error.exit_code != USAGE_ERROR or type(error).__name__ == "NoArgsIsHelpError" or state.debug:
            raise
        print_error(one_line(error, args))
        raise typer.Exit(2) from None


class _Polished:
    """What a command and a group share: polished parameters, help as written, one-line usage errors."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            polish(param)
        return params

    def format_help(self, ctx, formatter):
        with as_written(self, ctx):
            return super().format_help(ctx, formatter)

    def make_context(self, info_name, args, parent=None, **extra):
        with _one_line_errors(args):
            return super().make_context(info_name, args, parent=parent, **extra)


class Command(_Polished, TyperCommand):
    """A typer command with the help and errors described in this module."""


class Group(_Polished, TyperGroup):
    """A typer group with the help and errors described in this module."""

    def resolve_command(self, ctx, args):
        with _one_line_errors(args):
            return super().resolve_command(ctx, args)

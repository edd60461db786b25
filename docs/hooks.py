"""mkdocs hooks: the CLI reference is generated from the typer app at every build.

A page holding the marker ``<!-- cli-reference -->`` gets, in its place, one section per command
of ``agemetric.cli.app``: its usage line, its full help, and its arguments and options in the
groups ``--help`` shows them in (Model, Data, Training, ...), each with its placeholder, help,
default and whether it is required. Text is escaped for Markdown and HTML, so nothing in a help
text (``runs/<time>-<dataset>-<backbone>``, ``[l,t,r,b]``) is lost on the page.
"""

from __future__ import annotations

import html
import inspect
import re

MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference())


def cli_reference() -> str:
    """The Markdown of every command of the ``agemetric`` app, the app itself first."""
    import typer

    from agemetric.cli import app

    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="agemetric")
    return "\n".join(_sections(root, ctx))


def anchor(ctx) -> str:
    return ctx.command_path.replace(" ", "-")


def _sections(command, ctx):
    import typer

    yield from _section(command, ctx)
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            yield from _sections(sub, typer.Context(sub, info_name=name, parent=ctx))


def _section(command, ctx):
    from agemetric.cli._commands import fill

    level = "#" * min(2 + ctx.command_path.count(" "), 4)
    yield f"{level} {ctx.command_path} {{ #{anchor(ctx)} }}\n"
    yield f"```text\n{command.get_usage(ctx)}\n```\n"
    yield _help_markdown(fill(command.help or ""))
    for title, params in _panels(command, ctx):
        yield f"**{title}**\n"
        yield f"| {'Argument' if params[0].param_type_name == 'argument' else 'Option'} | Description |\n|---|---|"
        for param in params:
            yield f"| {_names(param)} | {_param_help(param)} |"
        yield ""
    commands = {n: c for n, c in getattr(command, "commands", {}).items() if not c.hidden}
    if commands:
        yield "**Commands**\n"
        yield "| Command | Description |\n|---|---|"
        for name, sub in commands.items():
            sub_ctx = type(ctx)(sub, info_name=name, parent=ctx)
            summary = _first_paragraph(fill(sub.help or sub.short_help or ""))
            yield f"| [`{name}`](#{anchor(sub_ctx)}) | {_inline(summary)} |"
        yield ""


def _panels(command, ctx) -> list[tuple[str, list]]:
    """The parameters in the groups ``--help`` prints, in its order: the default Arguments group,
    other argument groups, the default Options group, other option groups; ``--help`` left out."""
    arguments: dict[str, list] = {"Arguments": []}
    options: dict[str, list] = {"Options": []}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False) or "--help" in param.opts:
            continue
        is_argument = param.param_type_name == "argument"
        groups = arguments if is_argument else options
        title = getattr(param, "rich_help_panel", None) or ("Arguments" if is_argument else "Options")
        groups.setdefault(title, []).append(param)
    return [(title, params) for title, params in [*arguments.items(), *options.items()] if params]


def _names(param) -> str:
    from agemetric.cli._commands import placeholder

    if param.param_type_name == "argument":
        return f"`{param.display_name_raw}`"
    after = placeholder(param)
    names = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
    return names + (f" `{after}`" if after else "")


def _param_help(param) -> str:
    from agemetric.cli._commands import fill

    text = _inline(" ".join((fill(param.help) or "").split()))
    default = param.default
    if getattr(param, "is_flag", False) or default in (None, (), []) or callable(default):
        default = None
    extra = []
    if isinstance(param.show_default, str):  # a default described in words (or a preset's value)
        extra.append(f"Default: {_inline(param.show_default)}.")
    elif default is not None:
        shown = ", ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        extra.append(f"Default: `{shown}`.")
    if param.required:
        extra.append("Required.")
    return " ".join([text, *extra]).strip()


def _first_paragraph(text: str) -> str:
    return " ".join(inspect.cleandoc(text).split("\n\n")[0].split())


def _help_markdown(text: str) -> str:
    """A command's help as ``--help`` prints it: the first paragraph joined, the others line by line."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    out = [_inline(" ".join(paragraphs[0].split()))] if paragraphs[0].strip() else []
    for paragraph in paragraphs[1:]:
        out.append("  \n".join(_inline(line.strip()) for line in paragraph.splitlines() if line.strip()))
    return "\n\n".join(out) + "\n"


_CODE = re.compile(r"(`[^`]*`)")


def _inline(text: str) -> str:
    """Help text as Markdown that renders as written: code spans kept, everything else escaped
    for HTML (``<time>``) and Markdown (``|``, ``*``, ``_``, ``[``)."""
    parts = []
    for i, part in enumerate(_CODE.split(text)):
        if i % 2:  # a `code span`: Markdown shows its content as is
            parts.append(part)
        else:
            part = html.escape(part, quote=False)
            parts.append(re.sub(r"([\\|*_\[\]])", r"\\\1", part))
    return "".join(parts)


def on_config(config):
    """The version in the header and the footer, from the package itself."""
    from agemetric import __version__

    config.site_name = f"agemetric {__version__}"
    config.copyright = f"agemetric {__version__} · MIT licence"
    return config

"""The CLI reference page (docs/hooks.py): every command with its full help, its option groups as
``--help`` shows them, and no text lost to Markdown or HTML."""

import html
import importlib.util
import inspect
import re
from pathlib import Path

import markdown
import pytest
import typer

from agemetric.cli import app
from agemetric.cli._commands import fill

ROOT = Path(__file__).resolve().parents[1]


def _hooks():
    spec = importlib.util.spec_from_file_location("agemetric_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _hooks()


@pytest.fixture(scope="module")
def page():
    """(Markdown, the text a reader sees) of the generated reference."""
    source = hooks.on_page_markdown(f"# CLI reference\n\n{hooks.MARKER}\n", page=None, config=None, files=None)
    rendered = markdown.markdown(
        source, extensions=["tables", "attr_list", "toc", "admonition", "pymdownx.superfences"]
    )
    inline = re.sub(r"</?(code|a|strong|em)\b[^>]*>", "", rendered)
    return source, rendered, " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inline)).split())


def commands():
    """(command path, click command, context) of the app and every command in it."""
    root = typer.main.get_command(app)
    out = []

    def walk(command, ctx):
        out.append((ctx.command_path, command, ctx))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, typer.Context(sub, info_name=name, parent=ctx))

    walk(root, typer.Context(root, info_name="agemetric"))
    return out


def words(text: str) -> str:
    """``text`` as a reader sees it on the page: one space between words, code spans without backticks."""
    return " ".join(text.replace("`", "").split())


def test_other_pages_are_left_alone():
    assert hooks.on_page_markdown("# Other\n", page=None, config=None, files=None) == "# Other\n"


@pytest.mark.parametrize("path, command, ctx", commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_each_command_has_its_full_help(page, path, command, ctx):
    _, rendered, text = page
    anchor = path.replace(" ", "-")
    assert f'id="{anchor}"' in rendered, f"no section for {path}"
    assert command.get_usage(ctx) in text
    for paragraph in inspect.cleandoc(fill(command.help or "")).split("\n\n"):
        assert words(paragraph) in text, f"{path}: help cut or lost: {paragraph[:60]!r}"
    for param in command.get_params(ctx):
        if "--help" in param.opts:
            continue
        assert words(fill(param.help or "")) in text, f"{path} {param.opts}: help lost"


def test_command_summaries_are_whole_and_linked(page):
    source, _, text = page
    assert (
        "The paper's analyses (Jeong et al. 2018) on any dataset: figures (PNG) and report.md in --out. "
        "They train with the quick preset on the embedded synthetic faces unless told otherwise." in text
    )
    assert "| [`run`](#agemetric-run) |" in source and "| [`k-sweep`](#agemetric-paper-k-sweep) |" in source


def test_option_groups_as_in_help(page):
    source, _, _ = page
    run = source[source.index("{ #agemetric-run }") : source.index("{ #agemetric-evaluate }")]
    titles = re.findall(r"^\*\*(.+)\*\*$", run, flags=re.M)
    assert titles == ["Model", "Data", "Training", "Configuration"]
    groups = dict(zip(titles, re.split(r"^\*\*.+\*\*$", run, flags=re.M)[1:], strict=True))
    assert "`--backbone` `NAME`" in groups["Model"] and "`--k` `N`" in groups["Model"]
    assert "`--data-dir`, `--data` `PATH`" in groups["Data"] and "`--split` `[random|subject|hash]`" in groups["Data"]
    assert "`--lr` `RATE`" in groups["Training"] and "`--bf16` `[auto|on|off]`" in groups["Training"]
    assert "`--set` `KEY=VALUE`" in groups["Configuration"]
    predict = source[source.index("{ #agemetric-predict }") : source.index("{ #agemetric-export }")]
    assert re.findall(r"^\*\*(.+)\*\*$", predict, flags=re.M) == ["Arguments", "Options"]
    assert "| `PHOTOS...` |" in predict and "Required." in predict


def test_no_text_is_eaten(page):
    _, rendered, text = page
    for shown in (
        "(mug-shots: the fixed box of the setting framing_options.box, [left, top, right, bottom])",
        "e.g. --set framing_options.box=[l,t,r,b].",
        "torchrun --nproc_per_node 2 -m agemetric run",
        "AGEMETRIC_TRACE_HOOKS=1",
        "Default: auto.",
    ):
        assert shown in text, shown
    assert "<em>" not in rendered  # no accidental emphasis


def test_angle_brackets_in_help_are_shown_as_written():
    rendered = markdown.markdown(hooks._inline("runs/<time>-<dataset> and *c*"))
    assert "runs/<time>-<dataset> and *c*" in html.unescape(re.sub(r"</?p>", "", rendered))
    assert "<time>" not in rendered  # escaped, not taken for a tag

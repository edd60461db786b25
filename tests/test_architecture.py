"""The layout the architecture page describes: imports run one way (CLI -> orchestration -> parts
-> core), and no module imports another package's private name. Sizes are left to review: a
long file or function is a hint to look at its design, never a limit to fold code under."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SRC = ROOT / "src"

#: layer of each module, by longest matching prefix (0 = core types, 3 = the CLI)
LAYERS = {
    "agemetric.errors": 0,
    "agemetric.types": 0,
    "agemetric._version": 0,
    "agemetric._lazy": 0,
    "agemetric._io": 0,
    "agemetric._imaging": 0,
    "agemetric._text": 0,
    "agemetric._stack": 0,
    "agemetric._records": 0,
    "agemetric._folders": 0,
    "agemetric.estimates": 0,
    "agemetric.adaptation": 0,
    "agemetric.functional": 0,
    "agemetric.metrics": 0,
    "agemetric.hookspecs": 0,
    "agemetric.reporting": 0,
    "agemetric.interfaces": 0,
    "agemetric.data.transforms": 0,
    "agemetric.photos": 0,
    "agemetric.intervals": 0,
    "agemetric.groups": 0,
    "agemetric.analysis": 0,
    "agemetric.framing_processes": 0,
    "agemetric.devices": 0,
    "agemetric.plugins": 1,
    "agemetric.config": 1,
    "agemetric.config_checks": 1,
    "agemetric.settings": 1,
    "agemetric.spec": 1,
    "agemetric.calibrated": 1,
    "agemetric.presets": 1,
    "agemetric.default_plugins": 1,
    "agemetric.data": 1,
    "agemetric.pml": 1,
    "agemetric.losses": 1,
    "agemetric.miners": 1,
    "agemetric.retrievers": 1,
    "agemetric.backbones": 1,
    "agemetric.datasets": 1,
    "agemetric.framers": 1,
    "agemetric.testing": 1,
    "agemetric.distributed": 1,
    "agemetric.estimator": 2,
    "agemetric.model_file": 2,
    "agemetric.training": 2,
    "agemetric.experiment": 2,
    "agemetric.evaluation": 2,
    "agemetric.data.loading": 2,
    "agemetric.runs": 2,
    "agemetric.paper": 2,
    "agemetric.export": 2,
    "agemetric.bundle": 2,
    "agemetric.bundle_files": 2,
    "agemetric.plots": 2,
    "agemetric.predictors": 2,
    "agemetric.run_report": 2,
    "agemetric.service": 2,
    "agemetric.cli": 3,
    "agemetric.__main__": 3,
}
NAMES = ("core", "parts", "orchestration", "CLI")


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _layer(module: str) -> int | None:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    return None if best is None else LAYERS[best]


def _imports(path: Path, modules: dict[str, Path]):
    """``(line, imported module)`` for every agemetric import outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for n in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("agemetric"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield node.lineno, (sub if sub in modules else node.module), alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("agemetric"):
                    yield node.lineno, alias.name, ""


def test_every_module_has_a_layer():
    assert [m for m in _modules() if m != "agemetric" and _layer(m) is None] == []


def test_imports_run_one_way():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        if name == "agemetric":  # the lazy namespace re-exports every layer
            continue
        for line, target, _ in _imports(path, modules):
            if target == "agemetric":
                continue  # `from agemetric import x`: resolved to the submodule when x is one
            if _layer(target) > _layer(name):
                wrong.append(
                    f"{path.relative_to(ROOT)}:{line} ({NAMES[_layer(name)]}) imports {target} "
                    f"({NAMES[_layer(target)]})"
                )
    assert wrong == []


def test_no_module_imports_a_private_name_of_another_package():
    """``a.b._x`` (a module or a name) belongs to the package ``a.b``: only modules inside it use it."""
    modules = _modules()
    wrong = []
    for path in [*SRC.rglob("*.py"), *ROOT.glob("plugins/*/src/**/*.py")]:
        src = next(p for p in path.parents if p.name == "src")
        importer = ".".join(path.relative_to(src).with_suffix("").parts)
        for line, target, name in _imports(path, modules):
            parts = target.split(".") + ([name] if name else [])
            first = next((i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")), None)
            if first is None:
                continue
            owner = ".".join(parts[:first])
            if importer != owner and not importer.startswith(owner + "."):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {'.'.join(parts)}, private to {owner}")
    assert wrong == []


def test_no_module_touches_a_private_name_of_typer_click_or_rich():
    """``typer._click``, ``from rich.console import _x``, ``typer._something``: private to those
    packages, and free to change in any release of theirs."""
    outside = ("typer", "click", "rich")
    wrong = []
    for path in [*SRC.rglob("*.py"), *ROOT.glob("plugins/*/src/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in outside:
                names = [*node.module.split("."), *(alias.name for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [
                    part
                    for alias in node.names
                    if alias.name.split(".")[0] in outside
                    for part in alias.name.split(".")
                ]
            elif isinstance(node, ast.Attribute) and getattr(node.value, "id", None) in outside:
                names = [node.attr]
            else:
                continue
            if any(name.startswith("_") and not name.startswith("__") for name in names):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {'.'.join(names)}")
    assert wrong == []


def test_the_library_s_errors_name_settings_not_command_line_options():
    """Outside ``agemetric.cli``, an error starts with a setting's name (``data_dir: ...``); the
    command line turns it into its option (``--data-dir: ...``), so Python users get Python's names."""
    error = re.compile(r"raise \w*Error\(\s*f?\"--|return \w*Error\(\s*f?\"--|Error\(\s*f?\"--")
    wrong = []
    for path in [*SRC.rglob("*.py"), *ROOT.glob("plugins/*/src/**/*.py")]:
        if "cli" in path.relative_to(ROOT).parts:
            continue
        text = path.read_text()
        wrong += [f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}" for m in error.finditer(text)]
    assert wrong == []


@pytest.mark.parametrize("command", ["--help", "cache"])
def test_the_command_line_starts_without_importing_torch(command, tmp_path):
    """``agemetric --help`` (and so tab completion) and ``agemetric cache`` import neither
    agemetric's default plugins nor torch, nor do the installed plugins of this repository: they
    take a fraction of a second."""
    code = textwrap.dedent(f"""
        import sys
        from agemetric.cli import main
        sys.argv = ["agemetric", "{command}"]
        try:
            main()
        except SystemExit:
            pass
        print(sorted(m for m in ("torch", "agemetric.default_plugins") if m in sys.modules), file=sys.stderr)
    """)
    env = {**os.environ, "AGEMETRIC_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert ("Usage: agemetric" if command == "--help" else f"{tmp_path}: 0 entries") in done.stdout, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"

"""``agemetric install`` / ``uninstall``: pip into the environment agemetric runs in.

Plugins are ordinary Python packages with an ``agemetric`` entry point, so installing one is a
pip install into *this* interpreter's environment (not whatever ``pip`` is first on ``PATH``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Annotated

import typer

from agemetric.cli._common import guarded
from agemetric.errors import AgemetricError


def _pip(args: list[str]) -> None:
    command = [sys.executable, "-m", "pip", *args]
    try:
        code = subprocess.run(command, check=False).returncode
    except OSError as exc:
        raise AgemetricError(f"cannot start pip ({' '.join(command[:3])}): {exc}") from None
    if code != 0:
        error = AgemetricError(f"pip {args[0]} failed with exit code {code} (its output is above)")
        error.exit_code = code  # pip's own code: 1 for a failed install
        raise error


@guarded
def install(
    packages: Annotated[
        list[str], typer.Argument(metavar="PACKAGES", help="Names, folders or URLs, as pip takes them.")
    ],
    editable: Annotated[
        bool, typer.Option("--editable", "-e", help="Install a local folder in editable mode (plugin development).")
    ] = False,
    upgrade: Annotated[bool, typer.Option("--upgrade", "-U", help="Upgrade the packages if installed.")] = False,
    no_deps: Annotated[bool, typer.Option("--no-deps", help="Do not install the packages' dependencies.")] = False,
) -> None:
    """Install plugin packages into the same environment as agemetric (e.g. `agemetric install agemetric-pml`).

    Runs `python -m pip install` with this interpreter; `agemetric plugins` then lists what they registered.
    Other pip options pass through (e.g. `--no-build-isolation`, `--index-url URL`).
    """
    args = ["install"]
    if upgrade:
        args.append("--upgrade")
    if no_deps:
        args.append("--no-deps")
    for item in packages:  # pip options that typer did not know arrive here too, in order
        args += ["-e", item] if editable and not item.startswith("-") else [item]
    _pip(args)


@guarded
def uninstall(
    packages: Annotated[list[str], typer.Argument(metavar="PACKAGES", help="Distribution names to remove.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Uninstall plugin packages from the environment agemetric runs in (`agemetric uninstall -y agemetric-pml`)."""
    if any(_project(p) == "agemetric" for p in packages):
        raise AgemetricError("refusing to uninstall agemetric itself with `agemetric uninstall`; use pip")
    _pip(["uninstall", *(["--yes"] if yes else []), *packages])


def _project(requirement: str) -> str:
    """The normalised project name of a pip argument: ``"Agemetric==0.1.0"`` -> ``"agemetric"``."""
    name = re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()

"""Reading and writing PyTorch files with user-facing errors and without half-written files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from agemetric.errors import AgemetricError


def load_torch(path: str | Path, what: str):
    """``torch.load`` a trusted-format file (tensors and plain containers only) on the CPU.

    Args:
        path: the file.
        what: how to name it in errors, e.g. ``"--weights"`` or ``"checkpoint"``.

    Raises:
        AgemetricError: when the file is missing or unreadable, naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise AgemetricError(f"{what}: no such file {str(path)!r}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AgemetricError(f"{what}: cannot read {str(path)!r} as a PyTorch file ({first_line})") from None


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

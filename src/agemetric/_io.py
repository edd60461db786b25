"""Reading and writing PyTorch files with user-facing errors and without half-written files."""

from __future__ import annotations

import csv
import glob
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from agemetric._folders import umask
from agemetric.errors import AgemetricError


def load_torch(path: str | Path, what: str):
    """``torch.load`` a trusted-format file (tensors and plain containers only) on the CPU.

    Args:
        path: the file.
        what: how to name it in errors, e.g. ``"weights"`` or ``"checkpoint"``.

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
        if "weights only load failed" in first_line.lower():  # never pass on torch's advice to load it unsafely
            first_line = "it holds Python objects besides tensors, which agemetric never unpickles"
        raise AgemetricError(f"{what}: cannot read {str(path)!r} as a PyTorch file ({first_line})") from None


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half file.

    Raises:
        AgemetricError: the file cannot be written (a full disk: ``cannot write PATH (No space
            left on device)``), naming it; the previous file, if any, is kept.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise AgemetricError(f"cannot write {path} ({exc.strerror or exc})") from None
    try:
        # through a Python file, so that a failed write is an OSError with its errno: torch writing
        # to a path itself reports a full disk as a RuntimeError about its zip container
        with open(fd, "wb") as f:
            os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it private (0600): give it the mode of any other file
            torch.save(obj, f)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        Path(tmp).unlink(missing_ok=True)
        first = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc)
        kept = "; the previous file is kept" if path.exists() else ""
        raise AgemetricError(f"cannot write {path} ({first}){kept}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def remove_orphans(folder: Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files an `atomic_torch_save()` of one of ``names`` killed mid-write
    left in ``folder`` (``.NAME.*.tmp``; other hidden files are left alone); returns them."""
    orphans = [p for name in names for p in folder.glob(f".{glob.escape(name)}.*.tmp") if p.is_file()]
    for p in orphans:
        p.unlink(missing_ok=True)
    return orphans


@contextmanager
def readable_text(path: str | Path, what: str) -> Iterator[None]:
    """Turn what reading a text or CSV file can raise into one-line errors naming ``path``:
    bytes that are not UTF-8, a CSV field over the csv module's limit, an unreadable file."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise AgemetricError(
            f"{what}: {path} is not UTF-8 text ({exc.reason} at byte {exc.start} of a block)"
        ) from None
    except csv.Error as exc:
        raise AgemetricError(f"{what}: {path} is not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise AgemetricError(f"{what}: cannot read {str(path)!r}: {exc.strerror or exc}") from None

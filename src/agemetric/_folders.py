"""Writing a folder that takes another's place only once it is complete (bundles). Torch-free."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agemetric.errors import AgemetricError


def umask() -> int:
    """The process's file-creation mask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def replacing_folder(out: Path, what: str) -> Iterator[Path]:
    """A new hidden folder beside ``out`` to write in; when the block ends it takes ``out``'s
    place (an earlier folder there is removed only then). When the block fails, or is
    interrupted, the new folder is removed and ``out`` is as it was. ``what`` names ``out`` in
    errors (``"out"``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{glob.escape(out.name)}.*.partial"):  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        os.chmod(folder, 0o777 & ~umask())  # mkdtemp makes it private: give it the mode of any new folder
        yield folder
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
            os.replace(out, old / out.name)  # into a folder that the next lines (or the next export) remove
            try:
                os.replace(folder, out)
            except OSError:
                os.replace(old / out.name, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(folder, out)
    except OSError as exc:
        raise AgemetricError(f"{what} {out}: cannot write it ({exc.strerror or exc}); {out} is unchanged") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)

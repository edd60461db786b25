"""A disk cache of decoded images: one uint8 file per (dataset, records, size), reused across runs.

Decoding and resizing JPEGs costs more CPU than a small backbone's training step, so
`agemetric.data.arrays.decode()` stores its result here and later runs read it back at disk
speed. The key covers the dataset (type and options), each record's key, each file's content (its
md5, which the split computes anyway), the output size and the framing, so a changed file or
setting never returns stale pixels, even when the new file has the old one's size and
modification time. Files are written to a temporary name and renamed.

Location: ``$AGEMETRIC_CACHE`` or ``~/.cache/agemetric``. The folder is kept under a size limit
(``$AGEMETRIC_CACHE_LIMIT``, default 20G; ``0`` stores nothing): storing a new entry first removes
the entries used longest ago (all that a lowered limit no longer holds), and an entry that would
leave the disk with less than 1 GB free is not stored. ``agemetric cache`` lists the entries and
``agemetric cache --clear`` removes them; deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agemetric._text import size_text
from agemetric.errors import AgemetricError

if TYPE_CHECKING:
    from agemetric.interfaces import FaceDataset, FaceRecord

FORMAT = 3  # 2: framing notes in the metadata; 3: keyed by file content

#: the size limit when ``$AGEMETRIC_CACHE_LIMIT`` is not set
DEFAULT_LIMIT = "20G"
#: what storing an entry always leaves free on the cache's disk
KEEP_FREE = 10**9
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_ENTRY = re.compile(r"[0-9a-f]{32}")
_ORPHAN = re.compile(r"\.[0-9a-f]{32}\.(u8|json)\..*\.tmp")  # a write that was stopped (_atomic_write)
#: seconds after which a temporary file is taken for a stopped write, not one in progress
STALE = 3600


def cache_dir() -> Path:
    """``$AGEMETRIC_CACHE`` or ``~/.cache/agemetric``."""
    return Path(os.environ.get("AGEMETRIC_CACHE") or Path.home() / ".cache" / "agemetric")


def cache_key(dataset: FaceDataset, records: Sequence[FaceRecord], size: int, framing: str = "") -> str:
    """A hex digest identifying the decoded result of ``records`` at ``size``."""
    h = hashlib.sha256()
    # what records() could not list is a result of reading the folder, not an option of the dataset
    options = {k: repr(v) for k, v in sorted(vars(dataset).items()) if k != "skipped" and not k.startswith("_")}
    h.update(json.dumps([FORMAT, type(dataset).__qualname__, options, size, framing]).encode())
    for record in records:  # by content: a file replaced by another of the same size and time is seen
        path = dataset.file(record)
        ident = () if path is None else (dataset.fingerprint(record) if path.is_file() else "missing",)
        h.update(json.dumps([record.key, *ident]).encode())
    return h.hexdigest()[:32]


def load(key: str, n: int, size: int) -> tuple[np.ndarray, np.ndarray, list[str | None], list[str | None]] | None:
    """``(images (N, 3, S, S) uint8, ok (N,) bool, reasons, notes)`` for ``key``, or ``None`` on a miss."""
    base = cache_dir() / key
    try:
        meta = json.loads(base.with_suffix(".json").read_text())
        if meta.get("format") != FORMAT or meta["n"] != n or meta["size"] != size:
            return None
        images = np.fromfile(base.with_suffix(".u8"), dtype=np.uint8)
    except (OSError, ValueError, KeyError):
        return None
    if images.size != n * 3 * size * size:
        return None
    _touch(base)
    notes = meta.get("notes") or [None] * n
    return images.reshape(n, 3, size, size), np.array(meta["ok"], dtype=bool), meta["reasons"], notes


def store(
    key: str,
    images: np.ndarray,
    ok: np.ndarray,
    reasons: list[str | None],
    notes: list[str | None] | None = None,
    source: str = "",
) -> str | None:
    """Write a decoded result atomically, making room under the size limit first (see the module's
    text); ``source`` names the images in `entries()`.

    Returns:
        ``None`` when stored (or when the limit is 0: nothing is stored by choice), else why not,
        in a sentence for the user: the limit or the disk has no room, or the folder cannot be
        written. Not storing only costs the next run a decode.
    """
    folder = cache_dir()
    meta = {
        "format": FORMAT,
        "n": int(images.shape[0]),
        "size": int(images.shape[-1]),
        "ok": ok.tolist(),
        "reasons": reasons,
        "notes": notes if notes and any(notes) else None,
        "source": source,
    }
    meta_bytes = json.dumps(meta).encode()
    try:
        why_not = _make_room(folder, key, images.nbytes + len(meta_bytes))
        if why_not is not None:
            return why_not or None
        base = folder / key
        _atomic_write(base.with_suffix(".u8"), images.tobytes())
        _atomic_write(base.with_suffix(".json"), meta_bytes)
    except OSError as exc:
        return f"{_NOT_KEPT} ({folder}): {exc.strerror or exc}"
    return None


#: how every reason `store()` gives starts
_NOT_KEPT = "decoded images not kept in the cache"


@dataclass(frozen=True)
class Entry:
    """One cached result: ``n`` images of ``size`` pixels decoded from ``source`` (empty when an
    earlier agemetric stored it)."""

    key: str
    source: str
    n: int
    size: int
    bytes: int
    last_used: float  # seconds since the epoch


def entries() -> list[Entry]:
    """The cache's entries, used most recently first (an entry whose metadata cannot be read is
    listed with what its files tell)."""
    found = []
    for data in _entry_files(cache_dir()):
        meta_file = data.with_suffix(".json")
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            meta = {}
        try:
            stats = [data.stat(), *([meta_file.stat()] if meta else [])]
        except OSError:  # removed meanwhile
            continue
        used, size = max(st.st_mtime for st in stats), sum(st.st_size for st in stats)
        n, px = meta.get("n", 0), meta.get("size", 0)
        found.append(Entry(data.stem, meta.get("source") or "", n, px, size, used))
    return sorted(found, key=lambda e: e.last_used, reverse=True)


def clear() -> tuple[int, int]:
    """Remove every entry, and the temporary files of writes stopped more than an hour ago (a
    younger one may be another run's write in progress); ``(entries, bytes)`` removed. Other files
    in the folder are left alone.

    Raises:
        AgemetricError: a file cannot be removed (the message names it).
    """
    try:
        removed = [_remove(e.key) for e in entries()]
        stale = sum(_remove_file(path) for path in _orphans(cache_dir(), STALE))
    except OSError as exc:
        raise AgemetricError(f"cannot remove {exc.filename}: {exc.strerror or exc}") from None
    return len(removed), sum(removed) + stale


def limit() -> int:
    """The size limit in bytes, from ``$AGEMETRIC_CACHE_LIMIT`` (``500M``, ``20G``, ``0``; decimal
    units, as ``agemetric cache`` shows sizes) or `DEFAULT_LIMIT`.

    Raises:
        AgemetricError: the variable is not a size.

    Examples:
        >>> import os; os.environ["AGEMETRIC_CACHE_LIMIT"] = "1.5G"
        >>> limit()
        1500000000
        >>> del os.environ["AGEMETRIC_CACHE_LIMIT"]
    """
    text = os.environ.get("AGEMETRIC_CACHE_LIMIT", "").strip() or DEFAULT_LIMIT
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", text, re.IGNORECASE)
    if not match:
        raise AgemetricError(
            f"AGEMETRIC_CACHE_LIMIT: expected a size such as 500M, 20G or 0 (store nothing), got {text!r}"
        )
    return int(float(match[1]) * _UNITS[match[2].upper()])


def _make_room(folder: Path, key: str, needed: int) -> str | None:
    """Remove the entries used longest ago until the folder, with ``needed`` more bytes if they
    fit, is under the limit (a lowered limit shrinks it at the next store).

    Returns:
        ``None`` when the new entry may be written; otherwise why not (``""`` for a limit of 0):
        it is larger than the limit, or writing it would leave the disk less than `KEEP_FREE`.
    """
    cap = limit()
    fits = needed <= cap
    for path in _orphans(folder, STALE):  # writes stopped long ago hold space no entry counts
        _remove_file(path)
    kept = [e for e in entries() if e.key != key]
    total = sum(e.bytes for e in kept)
    while kept and total + (needed if fits else 0) > cap:
        total -= _remove(kept.pop().key)
    if cap == 0:
        return ""
    if not fits:
        return (
            f"{_NOT_KEPT}: they take {size_text(needed)}, more than the limit of {size_text(cap)} "
            "($AGEMETRIC_CACHE_LIMIT); the next run decodes them again"
        )
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(folder).free - needed < KEEP_FREE:
        free = f"less than {size_text(KEEP_FREE)} free on the disk of {folder}"
        return f"{_NOT_KEPT}: their {size_text(needed)} would leave {free}"
    return None


def _remove(key: str) -> int:
    """Delete an entry's files; the bytes they held."""
    return sum(_remove_file(cache_dir() / f"{key}{suffix}") for suffix in (".u8", ".json"))


def _remove_file(path: Path) -> int:
    """Delete a file (one already gone is no error); the bytes it held."""
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    return size


def _orphans(folder: Path, older_than: float) -> list[Path]:
    """The temporary files of writes stopped (or still going) that were last written more than
    ``older_than`` seconds ago."""
    if not folder.is_dir():
        return []
    now = time.time()
    found = []
    for path in folder.iterdir():
        try:
            if _ORPHAN.fullmatch(path.name) and now - path.stat().st_mtime > older_than:
                found.append(path)
        except FileNotFoundError:
            continue
    return found


def _entry_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.glob("*.u8") if _ENTRY.fullmatch(p.stem)]


def _touch(base: Path) -> None:
    """Mark an entry as just used (its metadata's modification time), for the size limit's order."""
    try:
        os.utime(base.with_suffix(".json"), (time.time(), time.time()))
    except OSError:
        pass


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

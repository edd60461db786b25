"""A disk cache of decoded images: one uint8 file per (dataset, records, size), reused across runs.

Decoding and resizing JPEGs costs more CPU than a small backbone's training step, so
`agemetric.data.arrays.decode()` stores its result here and later runs read it back at disk
speed. The key covers the dataset (type and options), each record's key, each file's content (its
md5, which the split computes anyway), the output size and the framing, so a changed file or
setting never returns stale pixels, even when the new file has the old one's size and
modification time. Files are written to a temporary name and renamed.

Location: ``$AGEMETRIC_CACHE`` or ``~/.cache/agemetric``. Delete the folder to reclaim space.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agemetric.interfaces import FaceDataset, FaceRecord

FORMAT = 3  # 2: framing notes in the metadata; 3: keyed by file content


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
    notes = meta.get("notes") or [None] * n
    return images.reshape(n, 3, size, size), np.array(meta["ok"], dtype=bool), meta["reasons"], notes


def store(
    key: str, images: np.ndarray, ok: np.ndarray, reasons: list[str | None], notes: list[str | None] | None = None
) -> None:
    """Write a decoded result atomically; a failure to write only costs the next run a decode."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        base = folder / key
        _atomic_write(base.with_suffix(".u8"), images.tobytes())
        meta = {
            "format": FORMAT,
            "n": int(images.shape[0]),
            "size": int(images.shape[-1]),
            "ok": ok.tolist(),
            "reasons": reasons,
            "notes": notes if notes and any(notes) else None,
        }
        _atomic_write(base.with_suffix(".json"), json.dumps(meta).encode())
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

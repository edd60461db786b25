"""A bundle's files, read as data and checked: ``bundle.json`` (the manifest) and ``gallery.npz``.

Every field a bundle uses has the expected type and a sane size, so that a file that was tampered
with is a one-line `AgemetricError`; nothing a manifest names is imported or run. Torch-free.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from agemetric._imaging import checked_box
from agemetric._records import AGE_RANGE, interval_fields, whole
from agemetric._text import shortened
from agemetric.config_checks import LIMITS
from agemetric.errors import AgemetricError

BUNDLE_FORMAT = 1
MANIFEST = "bundle.json"
GALLERY = "gallery.npz"
#: model format -> its file name in a bundle
MODEL_FILES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
#: a manifest is a page of JSON; anything far larger is not one
MAX_MANIFEST_BYTES = 1 << 20


def is_bundle(path: str | Path) -> bool:
    """True when ``path`` is a folder with a ``bundle.json``."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict:
    """The checked ``bundle.json`` of the bundle folder ``path``: every field a bundle uses has the
    expected type and a sane size, so that a manifest that was tampered with is a one-line error.

    A manifest is data: it names files inside the bundle folder and a framing by its registered
    name (``center``, ``box``, or a framer plugin such as ``dlib-align``); nothing it says is
    imported or run."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise AgemetricError(f"{path}: not a bundle (no {MANIFEST}; expected a folder written by `agemetric export`)")
    try:
        if file.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"larger than {MAX_MANIFEST_BYTES // 1024} KiB")
        manifest = json.loads(file.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else f"{type(exc).__name__}: {exc}"
        raise AgemetricError(f"{file}: not a readable bundle manifest ({shortened(reason, 200)[1:-1]})") from None
    version = manifest.get("format") if isinstance(manifest, dict) else None
    if version != BUNDLE_FORMAT:
        raise AgemetricError(f"{file}: bundle format {shortened(version)}; this agemetric reads format {BUNDLE_FORMAT}")
    missing = [key for key in ("image_size", "k", "framing", "files") if key not in manifest]
    if missing:
        raise AgemetricError(f"{file}: the manifest lacks {', '.join(missing)}")
    try:
        whole(manifest["image_size"], "image_size", 1, LIMITS["image_size"])
        whole(manifest["k"], "k", 1)
        for key in ("embedding_dim", "gender_dim"):
            if key in manifest:
                whole(manifest[key], key, 0 if key == "gender_dim" else 1, LIMITS[key])
        _check_files(manifest["files"])
        _check_framing(manifest["framing"])
        if manifest.get("intervals") is not None:
            manifest["intervals"] = interval_fields(manifest["intervals"])
        if not isinstance(manifest.get("adaptation"), dict | None):
            raise AgemetricError(f"adaptation must be a table, got {shortened(manifest['adaptation'])}")
    except AgemetricError as exc:
        raise AgemetricError(f"{file}: {exc}") from None
    return manifest


def _check_files(files: object) -> None:
    """``files`` maps names to plain file names inside the bundle folder (no folders, no ``..``)."""
    example = f'{{"gallery": "{GALLERY}"}}'
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise AgemetricError(f"files must map names to file names (e.g. {example}), got {shortened(files)}")
    for name in files.values():
        if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise AgemetricError(f"files must name files inside the bundle folder, got {shortened(name)}")


def _check_framing(framing: object) -> None:
    """``framing`` is ``{"name": "center"}``, ``{"name": "box", "box": [l, t, r, b], "margin": m}``
    or ``{"name": <a registered framer>, "options": {...}}``."""
    if not isinstance(framing, dict) or not isinstance(framing.get("name"), str) or not framing["name"].strip():
        raise AgemetricError(f"framing must be a table with a name, got {shortened(framing)}")
    if framing["name"] == "box":
        if "box" not in framing:
            raise AgemetricError("framing 'box' lacks its box ([left, top, right, bottom] fractions)")
        try:
            checked_box(framing["box"], framing.get("margin", 0.0))
        except ValueError as exc:
            raise AgemetricError(f"framing: {exc}") from None
    options = framing.get("options", {})
    if not isinstance(options, dict):
        raise AgemetricError(f"framing options must be a table of named options, got {shortened(options)}")


def read_gallery(file: Path, dim: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(embeddings (N, D) float32, ages (N,) float32, genders (N,) int64, weights (N,) float32
    or None)`` from ``gallery.npz``, checked as a ``model.pt``'s gallery is: finite embeddings of
    the manifest's size, finite ages of 0-150 years, genders 0, 1 or -1 (unknown), positive finite
    weights (the faces each item stands for; none: one each)."""
    try:
        with np.load(file) as gallery:  # allow_pickle=False: arrays only, never Python objects
            embeddings = np.ascontiguousarray(gallery["embeddings"], dtype=np.float32)  # (N, D)
            ages = np.asarray(gallery["ages"], dtype=np.float64)  # (N,), float32 once checked
            genders = np.asarray(gallery["genders"], dtype=np.int64)  # (N,)
            weights = np.asarray(gallery["weights"], dtype=np.float64) if "weights" in gallery else None  # (N,)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise AgemetricError(f"{file}: cannot read the bundle's gallery ({type(exc).__name__})") from None
    n = len(embeddings)
    if embeddings.ndim != 2 or n == 0 or ages.shape != (n,) or genders.shape != (n,):
        raise AgemetricError(
            f"{file}: expected embeddings (N, D) with N > 0, ages (N,) and genders (N,); got "
            f"{embeddings.shape}, {ages.shape} and {genders.shape}"
        )
    if dim is not None and embeddings.shape[1] != dim:
        raise AgemetricError(f"{file}: the embeddings have {embeddings.shape[1]} values each; the manifest says {dim}")
    bad = int((~np.isfinite(embeddings)).any(axis=1).sum())
    if bad:
        raise AgemetricError(f"{file}: the gallery's embeddings must be finite numbers; {bad} are not")
    bad = int((~((ages >= AGE_RANGE[0]) & (ages <= AGE_RANGE[1]))).sum())  # NaN fails both
    if bad:
        raise AgemetricError(
            f"{file}: the gallery's ages must be finite numbers of years between 0 and 150; {bad} are not"
        )
    if not np.isin(genders, (-1, 0, 1)).all():
        raise AgemetricError(f"{file}: the gallery's genders must be 0, 1 or -1 (unknown)")
    if weights is not None and (weights.shape != (n,) or not (np.isfinite(weights) & (weights > 0)).all()):
        raise AgemetricError(f"{file}: the gallery's weights must be ({n},) positive finite numbers")
    return embeddings, ages.astype(np.float32), genders, None if weights is None else weights.astype(np.float32)


def write_gallery(file: Path, embeddings, ages, genders, weights=None) -> None:
    """``gallery.npz`` as `read_gallery()` reads it: ``embeddings (N, D)`` float32, ``ages (N,)``
    float32, ``genders (N,)`` int64 and, for a weighted gallery (per-age references, or your own
    faces beside the training faces), ``weights (N,)`` float32."""
    arrays = {
        "embeddings": np.asarray(embeddings, np.float32),
        "ages": np.asarray(ages, np.float32),
        "genders": np.asarray(genders, np.int64),
    }
    if weights is not None:
        arrays["weights"] = np.asarray(weights, np.float32)
    np.savez(file, **arrays)


def check_bundle_folder(out: Path) -> None:
    """``out`` is new, an empty folder or an earlier bundle; refuse a file or a folder that holds
    anything else (a bundle is written there by replacing the whole folder)."""
    if out.exists() and not out.is_dir():
        raise AgemetricError(f"out {out}: is a file; expected a new or empty folder")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in (MANIFEST, GALLERY, *MODEL_FILES.values()))
        if others:
            raise AgemetricError(
                f"out {out}: holds {others[0]!r}, which is not part of a bundle; choose a new or empty folder"
            )

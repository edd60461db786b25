"""Age estimation from an exported bundle (``agemetric export``), without the training code.

Needs numpy, PIL, faiss and either torch (the TorchScript model) or onnxruntime (the ONNX model);
it never imports the estimator, the plugins or the training modules. A bundle is a folder:

- ``bundle.json``: the manifest (format, image size, framing, k, embedding sizes, files, source run);
- ``model.torchscript.pt`` and/or ``model.onnx``: uint8 RGB images ``(B, 3, S, S)`` in, the age
  embedding ``(B, N_a)`` (and, for a multi-task run, the gender embedding ``(B, N_g)``) out; the
  normalisation is inside the model;
- ``gallery.npz``: ``embeddings`` ``(N, N_a)`` float32, ``ages`` ``(N,)`` float32, ``genders``
  ``(N,)`` int64 (-1 unknown).

A face's age is the mean age of its ``k`` nearest gallery embeddings under L1 distance (exact
search, faiss ``IndexFlat(METRIC_L1)``), as in the run it came from. Photos are framed as the run
framed them: ``center`` and ``box`` need nothing more; a plugin's framer (``dlib-align``) is
made by its registered name and options in the manifest, through agemetric's plugin registry, so
its package must be installed where the bundle runs (and it brings agemetric's interfaces, hence
torch, with it). A bundle is data: nothing its files name is imported or run.

Example::

    bundle = Bundle("bundles/utk")
    ages = bundle.predict(["face.jpg", "group.jpg"])  # (2,): the main face of each
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np

from agemetric._imaging import checked_box, crop_box
from agemetric._records import AGE_RANGE, interval_fields, whole
from agemetric._text import shortened
from agemetric.config import LIMITS
from agemetric.errors import AgemetricError
from agemetric.photos import photo_batch

BUNDLE_FORMAT = 1
MANIFEST = "bundle.json"
GALLERY = "gallery.npz"
#: model format -> its file name in a bundle
MODEL_FILES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
#: model format -> the module that runs it
RUNTIME_MODULES = {"torchscript": "torch", "onnx": "onnxruntime"}
RUNTIMES = ("auto", *MODEL_FILES)
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


class Bundle:
    """An exported model and its gallery, ready to estimate ages.

    Args:
        path: the bundle folder.
        runtime: ``"torchscript"`` (needs torch), ``"onnx"`` (needs onnxruntime) or ``"auto"``: the
            first of those two that the bundle holds and that is installed.
        threads: CPU threads for the model (``None``: the runtime's default). For TorchScript this
            calls ``torch.set_num_threads``, which holds for the whole process.

    Attributes:
        manifest: the parsed ``bundle.json``.
        runtime: the runtime in use.
        image_size: the input side S in pixels.
        k: neighbours averaged for an age.
        embeddings, ages, genders: the gallery (``(N, N_a)`` float32, ``(N,)`` float32, ``(N,)`` int64).
        intervals: the calibrated intervals (``level``, ``quantile``, ``offset``, ``normalised``,
            ``n_calibration``, and ``edges`` and ``quantiles`` when calibrated by group of
            estimates; see `agemetric.intervals.ConformalIntervals`), or ``None``.
    """

    def __init__(self, path: str | Path, runtime: str = "auto", threads: int | None = None):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.image_size = int(self.manifest["image_size"])
        self.k = int(self.manifest["k"])
        self.intervals = self.manifest.get("intervals")
        self._framer = _framer(self.manifest["framing"], self.path / MANIFEST)
        self.embeddings, self.ages, self.genders = _read_gallery(
            self.path / self.manifest["files"].get("gallery", GALLERY), self.manifest.get("embedding_dim")
        )
        self.runtime = self._choose_runtime(runtime)
        model_file = self.path / self.manifest["files"][self.runtime]
        model_class = _TorchScriptModel if self.runtime == "torchscript" else _OnnxModel
        self._model = model_class(model_file, threads)
        self._index = None  # the faiss index, built on first use

    def _choose_runtime(self, runtime: str) -> str:
        have = [name for name in MODEL_FILES if name in self.manifest["files"]]
        if runtime not in RUNTIMES:
            raise AgemetricError(f"--runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
        if runtime != "auto":
            if runtime not in have:
                raise AgemetricError(
                    f"--runtime {runtime}: the bundle {self.path} has no {runtime} model (it has: "
                    f"{', '.join(have) or 'none'}); export it with --format {runtime} or both"
                )
            if importlib.util.find_spec(RUNTIME_MODULES[runtime]) is None:
                raise AgemetricError(
                    f"--runtime {runtime} needs the {RUNTIME_MODULES[runtime]} package: pip install 'agemetric[export]'"
                )
            return runtime
        for name in have:
            if importlib.util.find_spec(RUNTIME_MODULES[name]) is not None:
                return name
        raise AgemetricError(
            f"{self.path}: no runtime for its models ({', '.join(have) or 'none'}); "
            f"install {' or '.join(RUNTIME_MODULES[n] for n in have) or 'torch'}"
        )

    @property
    def framer(self):
        """The run's framing: ``None`` (the whole image), a function, or a plugin's framer."""
        return self._framer

    def read_image(self, path: str | Path) -> np.ndarray:
        """A photo, framed (its main face) and resized as in training -> ``(3, S, S)`` uint8."""
        return photo_batch(str(path), self.image_size, self._framer)[0]

    def embed(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings of uint8 RGB images ``(N, 3, S, S)``.

        Returns:
            ``(age (N, N_a), gender (N, N_g) or None)`` float32.
        """
        s = self.image_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, s, s):
            raise AgemetricError(f"images must be uint8 (N, 3, {s}, {s}); got {images.dtype} {images.shape}")
        batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
        parts = [self._model(np.ascontiguousarray(batch)) for batch in batches]
        if not parts:
            return np.empty((0, self.embeddings.shape[1]), np.float32), None
        age = np.concatenate([p[0] for p in parts])
        if age.ndim != 2 or age.shape[1] != self.embeddings.shape[1]:
            raise AgemetricError(
                f"{self.path}: the model gives embeddings of shape {age.shape[1:]}, the gallery's have "
                f"{self.embeddings.shape[1]} values; the model and gallery.npz come from different runs"
            )
        gender = np.concatenate([p[1] for p in parts]) if len(parts[0]) > 1 else None
        return age, gender

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest gallery items (exact L1) of ``(M, N_a)`` queries: ``(distances, indices)``, ``(M, k)``."""
        if self._index is None:
            import faiss

            self._index = faiss.IndexFlat(self.embeddings.shape[1], faiss.METRIC_L1)
            self._index.add(self.embeddings)
        return self._index.search(np.ascontiguousarray(queries, dtype=np.float32), min(self.k, len(self.embeddings)))

    def predict(self, images: np.ndarray | str | Path | list) -> np.ndarray:
        """Ages ``(N,)`` float32: the mean age of the k nearest gallery faces.

        Args:
            images: a uint8 RGB ``(N, 3, S, S)`` batch (framed and resized), or photos framed with
                the run's framing (the main face of each): a path, a PIL image, a uint8
                ``(H, W, 3)`` array, or a list of them.
        """
        age_embeddings, _ = self.embed(photo_batch(images, self.image_size, self._framer))
        if len(age_embeddings) == 0:
            return np.empty(0, np.float32)
        _, idx = self.nearest(age_embeddings)  # (N, k)
        return self.ages[idx].mean(axis=1)

    def estimate(self, images: np.ndarray | str | Path | list, under: float | None = None) -> dict:
        """Ages with the neighbours' spread, the calibrated interval and, with ``under``, the
        probability of being younger than that age (as `AgeEstimator.estimate()` gives them).

        Returns:
            ``{"age", "spread", "low", "high", "under"}``: ``(N,)`` float32 arrays; ``low`` and
            ``high`` are ``None`` for a bundle without intervals, ``under`` without ``under``.
        """
        age_embeddings, _ = self.embed(photo_batch(images, self.image_size, self._framer))
        neighbours = self.ages[self.nearest(age_embeddings)[1]] if len(age_embeddings) else np.empty((0, self.k))
        age, spread = neighbours.mean(axis=1), neighbours.std(axis=1)  # (N,) each
        out = {"age": age, "spread": spread, "low": None, "high": None, "under": None}
        if self.intervals is not None:
            i = self.intervals
            quantile = i["quantile"]
            if i.get("edges"):  # the group of each estimate (agemetric.intervals._group_of)
                quantile = np.asarray(i["quantiles"])[np.searchsorted(i["edges"], age, side="left")]
            half = quantile * ((spread + i["offset"]) if i["normalised"] else np.ones_like(spread))
            out["low"], out["high"] = np.clip(age - half, *AGE_RANGE), np.clip(age + half, *AGE_RANGE)
        if under is not None:
            out["under"] = (neighbours < under).mean(axis=1)
        return {k: None if v is None else np.asarray(v, np.float32) for k, v in out.items()}


def _framer(framing: dict, manifest_file: Path):
    """The manifest's (checked) framing, as the run framed its photos: ``None`` (the whole
    image), a function (a fixed box) or a registered framer plugin made by its name and options
    through agemetric's plugin registry (so the plugin's package must be installed)."""
    name = framing["name"]
    if name == "center":
        return None
    if name == "box":
        box, margin = checked_box(framing["box"], framing.get("margin", 0.0))
        return lambda image: crop_box(image.convert("RGB"), box, margin)
    from agemetric import plugins  # only here: it brings the plugins' packages, and torch, with it

    try:
        return plugins.create("framer", name, **framing.get("options", {}))
    except AgemetricError as exc:
        raise AgemetricError(f"{manifest_file}: framing {shortened(name)}: {exc}") from None


def _read_gallery(file: Path, dim: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(embeddings (N, D) float32, ages (N,) float32, genders (N,) int64)`` from ``gallery.npz``,
    checked as a ``model.pt``'s gallery is: finite embeddings of the manifest's size, finite ages
    of 0-150 years, genders 0, 1 or -1 (unknown)."""
    try:
        with np.load(file) as gallery:  # allow_pickle=False: arrays only, never Python objects
            embeddings = np.ascontiguousarray(gallery["embeddings"], dtype=np.float32)  # (N, D)
            ages = np.asarray(gallery["ages"], dtype=np.float64)  # (N,), float32 once checked
            genders = np.asarray(gallery["genders"], dtype=np.int64)  # (N,)
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
    return embeddings, ages.astype(np.float32), genders


class _TorchScriptModel:
    """A TorchScript module on the CPU: numpy in, numpy out."""

    def __init__(self, file: Path, threads: int | None = None):
        import torch

        self._torch = torch
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            with warnings.catch_warnings():  # torch 2.14 marks TorchScript deprecated; it still runs
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.load. is deprecated", category=FutureWarning)
                self._module = torch.jit.load(str(file), map_location="cpu").eval()
        except (OSError, RuntimeError, ValueError) as exc:
            raise AgemetricError(f"{file}: cannot load the TorchScript model ({type(exc).__name__})") from None

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        with self._torch.inference_mode():
            return [t.numpy() for t in self._module(self._torch.from_numpy(images))]


class _OnnxModel:
    """An ONNX Runtime session on the CPU: numpy in, numpy out."""

    def __init__(self, file: Path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self._session = onnxruntime.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise AgemetricError(f"{file}: cannot load the ONNX model ({type(exc).__name__})") from None
        self._input = self._session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        return self._session.run(None, {self._input: images})

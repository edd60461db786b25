"""Age estimation from an exported bundle (``agemetric export``), without the training code.

Needs numpy, PIL, faiss and either torch (the TorchScript model) or onnxruntime (the ONNX model);
it never imports the estimator, the plugins or the training modules. A bundle is a folder:

- ``bundle.json``: the manifest (format, image size, framing, k, embedding sizes, files, source run);
- ``model.torchscript.pt`` and/or ``model.onnx``: uint8 RGB images ``(B, 3, S, S)`` in, the age
  embedding ``(B, N_a)`` (and, for a multi-task run, the gender embedding ``(B, N_g)``) out; the
  normalisation is inside the model;
- ``gallery.npz``: ``embeddings`` ``(N, N_a)`` float32, ``ages`` ``(N,)`` float32, ``genders``
  ``(N,)`` int64 (-1 unknown) and, for a weighted gallery (per-age references, or your own faces
  beside the training faces after ``agemetric adapt``), ``weights`` ``(N,)`` float32.

A face's age is the (weighted) mean age of its ``k`` nearest gallery embeddings under L1 distance (exact
search, faiss ``IndexFlat(METRIC_L1)``), as in the run it came from. Photos are framed as the run
framed them: ``center`` and ``box`` need nothing more; a plugin's framer (``dlib-align``) is
made by its registered name and options in the manifest, through agemetric's plugin registry, so
its package must be installed where the bundle runs (and it brings agemetric's interfaces, hence
torch, with it). A bundle is data: nothing its files name is imported or run.

Examples:
    ```python
    bundle = Bundle("bundles/utk")
    ages = bundle.predict(["face.jpg", "group.jpg"])  # (2,): the main face of each
    results = bundle.analyze(["group.jpg"], under=18)  # every face, with its box and interval
    ```
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import sys
import threading
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from agemetric._folders import replacing_folder
from agemetric._imaging import checked_box, crop_box
from agemetric._text import shortened
from agemetric.adaptation import Adaptation, GalleryArrays, adapt, checked_ages
from agemetric.analysis import Photo, PhotoResult, analyze
from agemetric.bundle_files import (
    GALLERY,
    MANIFEST,
    MODEL_FILES,
    check_bundle_folder,
    read_gallery,
    read_manifest,
    write_gallery,
)
from agemetric.errors import AgemetricError
from agemetric.estimates import Estimates, age_spread, interval, mean_age, share_under
from agemetric.photos import photo_batch

#: model format -> the module that runs it
RUNTIME_MODULES = {"torchscript": "torch", "onnx": "onnxruntime"}
RUNTIMES = ("auto", *MODEL_FILES)


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
        embeddings, ages, genders, weights: the gallery (``(N, N_a)`` float32, ``(N,)`` float32,
            ``(N,)`` int64, ``(N,)`` float32 or ``None``: one face each).
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
        self.adaptation = self.manifest.get("adaptation")  # what `adapt()` chose and measured, if it ran
        self._framer = _framer(self.manifest["framing"], self.path / MANIFEST)
        self.embeddings, self.ages, self.genders, self.weights = read_gallery(
            self.path / self.manifest["files"].get("gallery", GALLERY), self.manifest.get("embedding_dim")
        )
        self.runtime = self._choose_runtime(runtime)
        model_file = self.path / self.manifest["files"][self.runtime]
        model_class = _TorchScriptModel if self.runtime == "torchscript" else _OnnxModel
        self._model = model_class(model_file, threads)
        self._index = None  # the faiss index, built on first use

    def __repr__(self) -> str:
        return (
            f"Bundle({str(self.path)!r}, runtime={self.runtime!r}, image_size={self.image_size}, k={self.k}, "
            f"gallery of {len(self.ages)} faces, intervals {'calibrated' if self.intervals else 'none'})"
        )

    def _choose_runtime(self, runtime: str) -> str:
        have = [name for name in MODEL_FILES if name in self.manifest["files"]]
        if runtime not in RUNTIMES:
            raise AgemetricError(f"runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
        if runtime != "auto":
            if runtime not in have:
                raise AgemetricError(
                    f"runtime {runtime}: the bundle {self.path} has no {runtime} model (it has: "
                    f"{', '.join(have) or 'none'}); export the run again in the {runtime} format (or both)"
                )
            if importlib.util.find_spec(RUNTIME_MODULES[runtime]) is None:
                raise AgemetricError(
                    f"runtime {runtime} needs the {RUNTIME_MODULES[runtime]} package: pip install 'agemetric[export]'"
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

    def embed(self, images: Photo | Sequence[Photo], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings of images: a uint8 RGB ``(N, 3, S, S)`` batch (framed and resized), or photos
        framed with the run's framing (the main face of each): a path, a PIL image, a uint8
        ``(H, W, 3)`` array, or a list of them.

        Returns:
            ``(age (N, N_a), gender (N, N_g) or None)`` float32.
        """
        images = photo_batch(images, self.image_size, self._framer)
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

    def predict(self, images: Photo | Sequence[Photo]) -> np.ndarray:
        """Ages ``(N,)`` float32, one per image: the mean age of the k nearest gallery faces.

        Args:
            images: a uint8 RGB ``(N, 3, S, S)`` batch (framed and resized), or photos framed with
                the run's framing: a path, a PIL image, a uint8 ``(H, W, 3)`` array, or a list of
                them. Of a photo with several faces only the main (largest) face is estimated; a
                photo where the framer finds no face is estimated from its fallback framing (the
                whole photo). For every face with its box, and no estimate where none was found,
                use `analyze()`.
        """
        return self.estimate(images).age

    def estimate(self, images: Photo | Sequence[Photo], under: float | None = None) -> Estimates:
        """Ages with the neighbours' spread, the calibrated interval and, with ``under``, the
        probability of being younger than that age: the same `Estimates` as
        `AgeEstimator.estimate()` gives (``low`` and ``high`` ``None`` for a bundle without
        intervals, ``under`` without ``under``). ``images`` as in `predict()`.
        """
        age_embeddings, _ = self.embed(images)
        idx = self.nearest(age_embeddings)[1] if len(age_embeddings) else np.empty((0, self.k), np.int64)  # (N, k)
        ages, weights = self.ages[idx], None if self.weights is None else self.weights[idx]  # (N, k) float32
        out = Estimates(mean_age(ages, weights), age_spread(ages, weights))
        if self.intervals is not None:
            out.low, out.high = interval(out.age, out.spread, self.intervals)
        if under is not None:
            out.under = share_under(ages, under, weights)
        return out

    def analyze(self, photos: Photo | Sequence[Photo], under: float | None = None) -> list[PhotoResult]:
        """Every face of each photo with its box, age, interval and (with ``under``) the
        probability of being younger than ``under`` years, as `AgeEstimator.analyze()` gives
        them (`agemetric.analysis.analyze()`)."""
        return analyze(self, photos, under)

    # -- a new domain ----------------------------------------------------------------------

    def adapt(self, faces: np.ndarray | list, ages: Sequence[float] | np.ndarray, seed: int = 0) -> Adaptation:
        """Adapt to the user's own photos with a few labelled faces of them, as
        `AgeEstimator.adapt()` does (`agemetric.adaptation`): the gallery, ``k`` and intervals
        change in place; `save()` writes the adapted bundle.

        Args:
            faces: a uint8 ``(n, 3, S, S)`` batch (framed and resized), or photos (the main face of each).
            ages: ``(n,)`` their true ages.
            seed: how faces are dealt into cross-validation folds.
        """
        ages = checked_ages(ages, len(faces)).astype(np.float32)  # before any photo is read
        embeddings, _ = self.embed(faces)
        train = GalleryArrays(self.embeddings, self.ages, self.genders, self.weights)
        report, new = adapt(train, GalleryArrays(embeddings, ages), self.k, self.intervals, seed)
        self.embeddings, self.ages, self.genders, self.weights = new.embeddings, new.ages, new.genders, new.weights
        self.k, self.intervals, self.adaptation = report.chosen.k, report.intervals, report.to_dict()
        self._index = None
        return report

    def save(self, out: str | Path) -> dict:
        """Write this bundle as it is now (its gallery, ``k``, intervals and adaptation; the model
        files copied) to the folder ``out``: new, empty, or an earlier bundle, replaced only once
        the new one is complete. Returns the manifest written."""
        out = Path(out)
        check_bundle_folder(out)
        models = {name: file for name, file in self.manifest["files"].items() if name in MODEL_FILES}
        manifest = {
            **self.manifest,
            "k": self.k,
            "gallery_size": len(self.embeddings),
            "intervals": self.intervals,
            "adaptation": self.adaptation,
            "files": {"gallery": GALLERY, **models},
        }
        with replacing_folder(out, "out") as folder:
            for file in models.values():
                shutil.copyfile(self.path / file, folder / file)
            write_gallery(folder / GALLERY, self.embeddings, self.ages, self.genders, self.weights)
            (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest


def _framer(framing: dict, manifest_file: Path):
    """The manifest's (checked) framing, as the run framed its photos: ``None`` (the whole
    image), a function (a fixed box) or a registered framer plugin made by its name and options
    through agemetric's plugin registry (so the plugin's package must be installed)."""
    name = framing["name"]
    if name == "center":
        return None
    if name == "box":
        box, margin = checked_box(framing["box"], framing.get("margin", 0.0))
        return partial(_crop_rgb, box=box, margin=margin)  # a function that pickles: for serve's framing processes
    from agemetric import plugins  # only here: it brings the plugins' packages, and torch, with it

    try:
        return plugins.create("framer", name, **framing.get("options", {}))
    except AgemetricError as exc:
        raise AgemetricError(f"{manifest_file}: framing {shortened(name)}: {exc}") from None


def _crop_rgb(image, box: tuple[float, float, float, float], margin: float):
    """``image``'s region in ``box`` (fractions of the photo) widened by ``margin``, in RGB."""
    return crop_box(image.convert("RGB"), box, margin)


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
        from agemetric.devices import flush_subnormals

        flush_subnormals(self._module)  # a bundle exported before they were flushed

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        with self._torch.inference_mode():
            return [t.numpy() for t in self._module(self._torch.from_numpy(images))]


def _import_onnxruntime():
    """``import onnxruntime``, on a thread whose stack has room for the command line.

    When first imported on Linux, onnxruntime (1.30) reads the process's command line
    (``/proc/self/cmdline``) and recurses about 250 bytes of stack deep for each of its bytes:
    from about 32 KB of arguments (``agemetric predict BUNDLE photos/*.jpg`` over a few hundred
    photos) the main thread's usual 8 MB stack overflows and the process dies of SIGSEGV without
    a word. The thread's stack is reserved, not used: only the pages the import touches take
    memory. Where no such thread can be made, or there is no ``/proc``, it is a plain import.
    """
    try:
        length = len(Path("/proc/self/cmdline").read_bytes())
    except OSError:
        length = 0
    if length == 0 or sys.modules.get("onnxruntime") is not None:
        import onnxruntime

        return onnxruntime
    result: dict[str, object] = {}

    def load() -> None:
        try:
            result["module"] = importlib.import_module("onnxruntime")
        except BaseException as exc:  # raised again on the calling thread
            result["error"] = exc

    megabytes = 16 + (512 * length >> 20)  # twice the depth measured, and the usual stack besides
    try:
        previous = threading.stack_size(megabytes << 20)
        try:
            thread = threading.Thread(target=load, name="import onnxruntime")
            thread.start()
        finally:
            threading.stack_size(previous)
    except (RuntimeError, ValueError, MemoryError):  # e.g. under a memory limit (ulimit -v)
        import onnxruntime

        return onnxruntime
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["module"]


class _OnnxModel:
    """An ONNX Runtime session on the CPU: numpy in, numpy out."""

    def __init__(self, file: Path, threads: int | None = None):
        onnxruntime = _import_onnxruntime()
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

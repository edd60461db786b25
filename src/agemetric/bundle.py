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
rebuilt from the class and options in the manifest, so its package must be installed where the
bundle runs (and it brings agemetric's interfaces, hence torch, with it).

Example::

    bundle = Bundle("bundles/utk")
    ages = bundle.predict(["face.jpg", "group.jpg"])  # (2,): the main face of each
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np

from agemetric._imaging import crop_box
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
#: `agemetric.intervals.AGE_RANGE`, here without torch: the ages an interval is clipped to.
AGE_RANGE = (0.0, 150.0)


def is_bundle(path: str | Path) -> bool:
    """True when ``path`` is a folder with a ``bundle.json``."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict:
    """The checked ``bundle.json`` of the bundle folder ``path``."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise AgemetricError(f"{path}: not a bundle (no {MANIFEST}; expected a folder written by `agemetric export`)")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise AgemetricError(f"{file}: not a readable bundle manifest ({type(exc).__name__}: {exc})") from None
    version = manifest.get("format") if isinstance(manifest, dict) else None
    if version != BUNDLE_FORMAT:
        raise AgemetricError(f"{file}: bundle format {version!r}; this agemetric reads format {BUNDLE_FORMAT}")
    missing = [key for key in ("image_size", "k", "framing", "files") if key not in manifest]
    if missing:
        raise AgemetricError(f"{file}: the manifest lacks {', '.join(missing)}")
    for key in ("image_size", "k"):
        value = manifest[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AgemetricError(f"{file}: {key} must be a whole number >= 1, got {value!r}")
    files = manifest["files"]
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise AgemetricError(
            f'{file}: files must map names to file names (e.g. {{"gallery": "{GALLERY}"}}), got {files!r}'
        )
    if not isinstance(manifest["framing"], dict) or "name" not in manifest["framing"]:
        raise AgemetricError(f"{file}: framing must be a table with a name, got {manifest['framing']!r}")
    intervals = manifest.get("intervals")
    fields = {"level", "quantile", "offset", "normalised", "n_calibration"}
    if intervals is not None and not (isinstance(intervals, dict) and fields <= set(intervals)):
        raise AgemetricError(f"{file}: intervals must be a table with {', '.join(sorted(fields))}, got {intervals!r}")
    return manifest


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
        gallery_file = self.path / self.manifest["files"].get("gallery", GALLERY)
        try:
            with np.load(gallery_file) as gallery:
                self.embeddings = np.ascontiguousarray(gallery["embeddings"], dtype=np.float32)  # (N, N_a)
                self.ages = np.asarray(gallery["ages"], dtype=np.float32)  # (N,)
                self.genders = np.asarray(gallery["genders"], dtype=np.int64)  # (N,)
        except (OSError, ValueError, KeyError) as exc:
            raise AgemetricError(f"{gallery_file}: cannot read the bundle's gallery ({type(exc).__name__})") from None
        if self.embeddings.ndim != 2 or len(self.embeddings) == 0 or self.ages.shape != (len(self.embeddings),):
            raise AgemetricError(f"{gallery_file}: expected embeddings (N, D) with N > 0 and ages (N,)")
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
    """The manifest's framing, as the run framed its photos: ``None`` (the whole image), a function
    (a fixed box) or a plugin's framer, built from its recorded class and options."""
    name = framing.get("name") if isinstance(framing, dict) else None
    if name == "center":
        return None
    if name == "box":
        box, margin = tuple(framing["box"]), float(framing.get("margin", 0.0))
        return lambda image: crop_box(image.convert("RGB"), box, margin)
    if isinstance(framing, dict) and isinstance(framing.get("class"), str) and ":" in framing["class"]:
        module, _, qualname = framing["class"].partition(":")
        try:
            cls = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
        except (ImportError, AttributeError) as exc:
            raise AgemetricError(
                f"{manifest_file}: framing {name!r} needs {module} ({type(exc).__name__}: {exc}); "
                "install the plugin package the run used"
            ) from None
        return cls(**framing.get("options", {}))
    raise AgemetricError(f"{manifest_file}: framing must be 'center', 'box' or a plugin class, got {framing!r}")


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

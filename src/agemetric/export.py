"""Export a trained run as a bundle that `agemetric.bundle` runs without the training code.

The backbone is wrapped so that the exported model takes uint8 RGB images and normalises them
itself (no preprocessing code outside the model to drift), then traced to TorchScript and/or
exported to ONNX (torch's dynamo exporter, which needs ``onnx`` and ``onnxscript``: the ``export``
extra). The gallery is saved beside it as ``gallery.npz`` and everything is described in
``bundle.json``.

Examples:
    ```python
    manifest = export_bundle("runs/my-run", "bundles/my-run", "both")
    ```
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from agemetric._folders import replacing_folder
from agemetric._version import __version__
from agemetric.bundle_files import BUNDLE_FORMAT, GALLERY, MANIFEST, MODEL_FILES, check_bundle_folder, write_gallery
from agemetric.data.transforms import normalise
from agemetric.errors import AgemetricError
from agemetric.interfaces import Backbone
from agemetric.runs import RunFolder

#: ``--format`` -> the model files it writes
FORMATS = {"torchscript": ("torchscript",), "onnx": ("onnx",), "both": ("torchscript", "onnx")}
#: packages torch's ONNX exporter imports
ONNX_EXPORT_PACKAGES = ("onnx", "onnxscript")


class EmbeddingModel(nn.Module):
    """What a bundle's model computes: uint8 RGB ``(B, 3, S, S)`` -> ``(age (B, N_a),)`` or, with a
    gender head, ``(age, gender (B, N_g))``, float32; normalised as in training, in eval mode; with
    ``flip`` (the run's ``tta_flip``) the mean of each image's and its mirror image's embeddings."""

    def __init__(self, backbone: Backbone, flip: bool = False):
        super().__init__()
        self.backbone = backbone
        self.flip = flip
        self.register_buffer("mean", torch.tensor(backbone.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(backbone.std, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = normalise(images, self.mean, self.std)  # (B, 3, S, S)
        out = self.backbone.embed(x)
        if self.flip:
            mirrored = self.backbone.embed(x.flip(3))
            out = type(out)(*(None if a is None else (a + b) / 2 for a, b in zip(out, mirrored, strict=True)))
        return (out.age,) if out.gender is None else (out.age, out.gender)


def export_bundle(run_dir: str | Path, out: str | Path, fmt: str = "torchscript") -> dict:
    """Write a bundle of the run ``run_dir`` to the folder ``out``.

    Args:
        run_dir: a run folder with ``model.pt`` (from ``agemetric run``).
        out: the bundle folder: new, empty, or an earlier bundle (replaced).
        fmt: ``"torchscript"``, ``"onnx"`` or ``"both"``.

    Returns:
        The manifest written to ``out/bundle.json``.

    Raises:
        AgemetricError: the run is missing or cannot be bundled (a retriever other than ``l1-knn``),
            ``out`` is taken, ``fmt`` is unknown or the ONNX packages are missing.
    """
    if fmt not in FORMATS:
        raise AgemetricError(f"fmt must be one of {', '.join(FORMATS)}; got {fmt!r}")
    run_dir, out = Path(run_dir), Path(out)
    estimator = _exportable(run_dir, fmt)
    framing = _framing(estimator)
    check_bundle_folder(out)
    with replacing_folder(out, "out") as folder:
        manifest = _write_bundle(estimator, fmt, framing, run_dir, folder)
    return manifest


def _write_bundle(estimator, fmt: str, framing: dict, run_dir: Path, out: Path) -> dict:
    """Write the models, the gallery and (last) the manifest into the empty folder ``out``."""
    spec, retriever, backbone = estimator.spec, estimator.retriever, estimator.backbone
    size = estimator.image_size
    outputs = ["age"] if backbone.gender_dim == 0 else ["age", "gender"]
    files = {"gallery": GALLERY, **_save_models(estimator, fmt, outputs, out)}
    gallery = retriever.gallery
    genders = gallery.genders if gallery.genders is not None else torch.full((len(gallery),), -1)
    weights = None if gallery.weights is None else gallery.weights.numpy()
    write_gallery(out / GALLERY, gallery.embeddings.numpy(), gallery.ages.numpy(), genders.numpy(), weights)
    manifest = {
        "format": BUNDLE_FORMAT,
        "agemetric_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {
            "run": str(run_dir.resolve()),
            "backbone": spec.backbone,
            "loss": spec.loss,
            "retriever": spec.retriever,
        },
        "image_size": size,
        "input": "uint8 RGB (B, 3, S, S), 0-255; the model normalises",
        "outputs": outputs,
        "framing": framing,
        "metric": "l1",
        "k": retriever.k,
        "embedding_dim": backbone.embedding_dim,
        "gender_dim": backbone.gender_dim,
        "gallery_size": len(retriever),
        "intervals": None if estimator.intervals is None else estimator.intervals.to_dict(),
        "adaptation": estimator.adaptation,
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _exportable(run_dir: Path, fmt: str):
    """The run's estimator, checked to fit in a bundle (L1 kNN, a full gallery; ONNX packages)."""
    from agemetric.default_plugins.l1_knn import L1KNN
    from agemetric.estimator import AgeEstimator

    checkpoint = RunFolder(run_dir).model
    if not checkpoint.is_file():
        raise AgemetricError(f"{run_dir}: no {RunFolder.MODEL} (expected a run folder written by `agemetric run`)")
    if "onnx" in FORMATS[fmt]:
        missing = [name for name in ONNX_EXPORT_PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            raise AgemetricError(
                f"fmt {fmt} needs {' and '.join(missing)} for the ONNX export: pip install 'agemetric[export]'"
            )
    estimator = AgeEstimator.load(checkpoint)
    retriever = estimator.retriever
    if not isinstance(retriever, L1KNN):
        raise AgemetricError(
            f"{run_dir}: retriever {estimator.spec.retriever!r} does not estimate ages from L1 nearest "
            "neighbours; only runs with --retriever l1-knn can be exported as a bundle"
        )
    if len(retriever) == 0:
        raise AgemetricError(f"{checkpoint}: the model has no gallery")
    return estimator


def _framing(estimator) -> dict:
    """How the bundle frames a photo: the built-in framings by value, a plugin's by its registered
    name and options (a bundle never names code; its package must be installed where it runs):
    the framer says which (`agemetric.interfaces.Framer.bundle_framing`)."""
    by_value = estimator.framer.bundle_framing()
    return by_value or {"name": estimator.spec.framing, "options": dict(estimator.spec.framing_options)}


def _save_models(estimator, fmt: str, outputs: list[str], out: Path) -> dict[str, str]:
    """Write the embedding network in each of ``fmt``'s formats; returns ``{format: file name}``."""
    model = EmbeddingModel(estimator.backbone, flip=estimator.spec.tta_flip).float().eval()
    size = estimator.image_size
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    files = {}
    for name in FORMATS[fmt]:
        files[name] = MODEL_FILES[name]
        save = _save_torchscript if name == "torchscript" else _save_onnx
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+. is deprecated", category=FutureWarning)
                save(model, example, outputs, out / files[name])
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise AgemetricError(
                f"backbone {estimator.spec.backbone!r}: the {name} export failed ({type(exc).__name__}: {first})"
            ) from exc
    return files


def _save_torchscript(model: nn.Module, example: torch.Tensor, outputs: list[str], file: Path) -> None:
    """Trace ``model`` on ``example`` and save it once the trace gives the model's outputs for
    other images and another batch size. A trace keeps one path through the model's Python
    branches: torch warns of each (a TracerWarning), and this check is what tells whether one
    mattered, so the warnings are not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example)
    seeded = torch.Generator().manual_seed(1)
    other = torch.randint(0, 256, (3, *example.shape[1:]), dtype=torch.uint8, generator=seeded)
    for name, got, expected in zip(outputs, traced(other), model(other), strict=True):
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-4):
            raise ValueError(f"the traced model's {name} output differs from the model's on other images")
    torch.jit.save(traced, str(file))


def _save_onnx(model: nn.Module, example: torch.Tensor, outputs: list[str], file: Path) -> None:
    """Export ``model`` to one ONNX file with a dynamic batch axis (torch's dynamo exporter)."""
    torch.onnx.export(
        model,
        (example,),
        str(file),
        input_names=["images"],
        output_names=outputs,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        external_data=False,
        verbose=False,
    )

"""A model to estimate with, from a path: a run folder's `AgeEstimator` or an exported `Bundle`,
both `agemetric.analysis.Predictor`s (what ``predict``, ``serve`` and ``adapt`` take)."""

from __future__ import annotations

from pathlib import Path

from agemetric.analysis import Predictor
from agemetric.errors import AgemetricError


def load_predictor(path: str | Path, runtime: str = "auto", threads: int | None = None) -> Predictor:
    """The model at ``path``: a run folder written by ``agemetric run`` (its ``model.pt``, with its
    gallery) or a bundle written by ``agemetric export`` (``runtime``: ``"auto"``,
    ``"torchscript"`` or ``"onnx"``, for bundles only). ``threads``: the CPU threads the network
    runs on (``None``: the runtime's default); for a run or a TorchScript bundle this calls
    ``torch.set_num_threads``, which holds for the whole process."""
    from agemetric.bundle import Bundle
    from agemetric.bundle_files import is_bundle
    from agemetric.runs import RunFolder

    path = Path(path)
    if is_bundle(path):
        return Bundle(path, runtime, threads)
    model = RunFolder(path).model
    if not model.is_file():
        raise AgemetricError(f"{path}: neither a run folder ({RunFolder.MODEL}) nor a bundle (bundle.json)")
    if runtime != "auto":
        raise AgemetricError(f"runtime applies to bundles only; {path} is not one (no bundle.json)")
    from agemetric.estimator import AgeEstimator

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    estimator = AgeEstimator.load(model)
    estimator.require_gallery()
    return estimator

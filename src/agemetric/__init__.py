"""agemetric: age estimation from frontal face photos by deep metric learning.

The public API. Plugins are discovered, and torchvision, faiss and the training code imported,
only when first used.
"""

__version__ = "0.1.0"  # the single source of the version (pyproject reads it)

from agemetric.config import RunConfig, resolve
from agemetric.errors import AgemetricError, PluginError
from agemetric.hookspecs import hookimpl
from agemetric.interfaces import Backbone, FaceDataset, FaceRecord, Loss, Miner, Retriever
from agemetric.plugins import create, list_names
from agemetric.types import Embeddings, Pairs, Triplets


def __getattr__(name: str):
    # Heavier entry points, imported on first use.
    if name == "AgeEstimator":
        from agemetric.estimator import AgeEstimator

        return AgeEstimator
    if name == "run":
        from agemetric.experiment import run

        return run
    raise AttributeError(f"module 'agemetric' has no attribute {name!r}")


__all__ = [
    "AgeEstimator",
    "AgemetricError",
    "Backbone",
    "Embeddings",
    "FaceDataset",
    "FaceRecord",
    "Loss",
    "Miner",
    "Pairs",
    "PluginError",
    "Retriever",
    "RunConfig",
    "Triplets",
    "create",
    "hookimpl",
    "list_names",
    "resolve",
    "run",
]

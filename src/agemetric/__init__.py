"""agemetric: age estimation from frontal face photos by deep metric learning.

The public API. Every name is imported on first use, so that ``import agemetric.bundle`` (the
inference runtime of an exported bundle) loads neither torch's training side, the plugins nor
the estimator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"  # the single source of the version (pyproject reads it)

#: public name -> the module that defines it
_LAZY = {
    "RunConfig": "agemetric.config",
    "resolve": "agemetric.config",
    "AgemetricError": "agemetric.errors",
    "PluginError": "agemetric.errors",
    "hookimpl": "agemetric.hookspecs",
    "Backbone": "agemetric.interfaces",
    "FaceDataset": "agemetric.interfaces",
    "FaceRecord": "agemetric.interfaces",
    "Loss": "agemetric.interfaces",
    "Miner": "agemetric.interfaces",
    "Retriever": "agemetric.interfaces",
    "create": "agemetric.plugins",
    "list_names": "agemetric.plugins",
    "Embeddings": "agemetric.types",
    "Pairs": "agemetric.types",
    "Triplets": "agemetric.types",
    "AgeEstimator": "agemetric.estimator",
    "run": "agemetric.experiment",
}

if TYPE_CHECKING:
    from agemetric.config import RunConfig, resolve
    from agemetric.errors import AgemetricError, PluginError
    from agemetric.estimator import AgeEstimator
    from agemetric.experiment import run
    from agemetric.hookspecs import hookimpl
    from agemetric.interfaces import Backbone, FaceDataset, FaceRecord, Loss, Miner, Retriever
    from agemetric.plugins import create, list_names
    from agemetric.types import Embeddings, Pairs, Triplets


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
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

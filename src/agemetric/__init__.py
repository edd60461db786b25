"""agemetric: age estimation from frontal face photos by deep metric learning.

The building blocks, for any training loop:

- ``agemetric.losses``: ``RevisedContrastiveLoss`` (the paper's) and the baselines' losses;
- ``agemetric.miners``: ``AllPairsMiner`` and ``BatchMiner``;
- ``agemetric.retrievers``: ``L1KNN`` (the paper's 20-nearest-neighbour estimate) and others;
- ``agemetric.backbones``, ``agemetric.datasets``, ``agemetric.framers``;
- ``agemetric.pml``: pytorch-metric-learning interop (``AgeToleranceMiner``, index conversions);
- ``agemetric.functional`` and ``agemetric.metrics``: the maths, as plain tensor functions;
- ``agemetric.intervals`` and ``agemetric.groups``: how sure an estimate is (calibrated
  intervals, age-threshold decisions) and the error by group of people.

And the whole method: ``AgeEstimator``, ``RunConfig`` / ``resolve`` and ``run``; plugins by name
with ``create`` / ``list_names``. Every name is imported on first use, so ``import agemetric`` is
cheap and ``agemetric.bundle`` (the runtime of an exported bundle) loads no training code.

Examples:
    >>> import torch
    >>> from agemetric.losses import RevisedContrastiveLoss
    >>> embeddings = torch.randn(16, 70, requires_grad=True)
    >>> RevisedContrastiveLoss(margin=4)(embeddings, torch.arange(20.0, 36.0)).backward()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agemetric._lazy import lazy_getattr
from agemetric._version import __version__ as __version__

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
    "Framer": "agemetric.interfaces",
    "Face": "agemetric.interfaces",
    "Retriever": "agemetric.interfaces",
    "create": "agemetric.plugins",
    "list_names": "agemetric.plugins",
    "Embeddings": "agemetric.types",
    "Pairs": "agemetric.types",
    "Triplets": "agemetric.types",
    "Samples": "agemetric.types",
    "AgeEstimator": "agemetric.estimator",
    "ModelSpec": "agemetric.spec",
    "run": "agemetric.experiment",
}

#: The public submodules, also imported on first use (``agemetric.losses`` after ``import agemetric``).
_SUBMODULES = (
    "backbones",
    "bundle",
    "datasets",
    "distributed",
    "export",
    "framers",
    "functional",
    "groups",
    "intervals",
    "losses",
    "metrics",
    "miners",
    "photos",
    "pml",
    "retrievers",
    "testing",
)

if TYPE_CHECKING:
    from agemetric.config import RunConfig, resolve
    from agemetric.errors import AgemetricError, PluginError
    from agemetric.estimator import AgeEstimator
    from agemetric.experiment import run
    from agemetric.hookspecs import hookimpl
    from agemetric.interfaces import Backbone, Face, FaceDataset, FaceRecord, Framer, Loss, Miner, Retriever
    from agemetric.plugins import create, list_names
    from agemetric.spec import ModelSpec
    from agemetric.types import Embeddings, Pairs, Samples, Triplets


__getattr__ = lazy_getattr(__name__, _LAZY, _SUBMODULES)


def __dir__() -> list[str]:
    return sorted({*__all__, *_SUBMODULES, "__version__"})


__all__ = [
    "AgeEstimator",
    "AgemetricError",
    "Backbone",
    "Embeddings",
    "Face",
    "FaceDataset",
    "FaceRecord",
    "Framer",
    "Loss",
    "Miner",
    "ModelSpec",
    "Pairs",
    "PluginError",
    "Retriever",
    "RunConfig",
    "Samples",
    "Triplets",
    "create",
    "hookimpl",
    "list_names",
    "resolve",
    "run",
]

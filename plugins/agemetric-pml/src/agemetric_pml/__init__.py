"""pytorch-metric-learning losses and a triplet miner for agemetric, with age-margin positives.

The package's top level holds the hooks alone: every agemetric command imports it (to find
plugin commands), and the losses, which import torch, load when a hook is called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from agemetric import hookimpl

_LAZY = ("LOSSES", "PMLPairLoss", "PMLTripletMarginMiner")

if TYPE_CHECKING:
    from agemetric_pml.losses import LOSSES, PMLPairLoss, PMLTripletMarginMiner


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module("agemetric_pml.losses"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agemetric_pml' has no attribute {name!r}")


__all__ = ["LOSSES", "PMLPairLoss", "PMLTripletMarginMiner"]


@hookimpl
def register_losses(register):
    from agemetric_pml.losses import LOSSES

    for name, factory in LOSSES.items():
        register(name, factory)


@hookimpl
def register_miners(register):
    from agemetric_pml.losses import PMLTripletMarginMiner

    register("pml-triplet-margin", PMLTripletMarginMiner)

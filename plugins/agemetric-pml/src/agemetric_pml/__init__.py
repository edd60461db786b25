"""pytorch-metric-learning losses and a triplet miner for agemetric, with age-margin positives.

The package's top level holds the hooks alone: every agemetric command imports it (to find
plugin commands), and the losses (`agemetric_pml.losses`), which import torch, load when a hook
is called.
"""

from __future__ import annotations

from agemetric import hookimpl


@hookimpl
def register_losses(register):
    from agemetric_pml.losses import LOSSES

    for name, factory in LOSSES.items():
        register(name, factory)


@hookimpl
def register_miners(register):
    from agemetric_pml.losses import PMLTripletMarginMiner

    register("pml-triplet-margin", PMLTripletMarginMiner)

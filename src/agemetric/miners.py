"""Miners: which pairs (or samples) of a batch a loss compares.

``agemetric.pml.AgeToleranceMiner`` turns any of them into a pytorch-metric-learning miner.
"""

from agemetric.default_plugins.all_pairs import AllPairsMiner
from agemetric.default_plugins.baselines import BatchMiner
from agemetric.interfaces import Miner

__all__ = ["AllPairsMiner", "BatchMiner", "Miner"]

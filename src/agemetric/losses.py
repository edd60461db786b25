"""Losses: the paper's revised contrastive loss and the baselines, for any training loop.

Called without indices, a pair loss compares every pair of the batch::

    loss = RevisedContrastiveLoss(margin=4)
    loss(embeddings, ages).backward()

With a miner's output (agemetric's, or a pytorch-metric-learning ``indices_tuple``) it compares
only those pairs. ``agemetric.create("loss", name)`` builds the registered ones by name, plugins'
included.
"""

from agemetric.default_plugins.baselines import DEXLoss, L1RegressionLoss
from agemetric.default_plugins.revised_contrastive import RevisedContrastiveLoss
from agemetric.interfaces import Loss

__all__ = ["DEXLoss", "L1RegressionLoss", "Loss", "RevisedContrastiveLoss"]

"""Losses: the paper's revised contrastive loss and the baselines, for any training loop.

Called without indices, a pair loss compares every pair of the batch::

    loss = RevisedContrastiveLoss(margin=4)
    loss(embeddings, ages).backward()

With a miner's output (agemetric's, or a pytorch-metric-learning ``indices_tuple``) it compares
only those pairs. ``agemetric.create("loss", name)`` builds the registered ones by name, plugins'
included.

Losses compose: ``SumOfLosses`` adds weighted losses (as pytorch-metric-learning's
``MultipleLosses``), ``PerPartLoss`` scores each part of the embedding with its own loss, and
``AgeClassifierLoss`` is an auxiliary age classifier to add to a metric loss. The
``revised-contrastive`` loss of a run (``revised_contrastive()``) is the paper's with them, as
its options ask (``classifier``, ``parts``)::

    loss = SumOfLosses([RevisedContrastiveLoss(margin=4), AgeClassifierLoss(classes=81)], [1.0, 3.0])
"""

from agemetric.default_plugins.baselines import DEXLoss, L1RegressionLoss
from agemetric.default_plugins.loss_parts import AgeClassifierLoss, PerPartLoss, SumOfLosses
from agemetric.default_plugins.revised_contrastive import RevisedContrastiveLoss, revised_contrastive
from agemetric.interfaces import Loss

__all__ = [
    "AgeClassifierLoss",
    "DEXLoss",
    "L1RegressionLoss",
    "Loss",
    "PerPartLoss",
    "RevisedContrastiveLoss",
    "SumOfLosses",
    "revised_contrastive",
]

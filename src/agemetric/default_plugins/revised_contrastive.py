"""The paper's loss: revised contrastive loss (eq. 2-4) with margin-tolerant similarity."""

from __future__ import annotations

import torch

from agemetric import functional as F
from agemetric.hookspecs import hookimpl
from agemetric.interfaces import Loss
from agemetric.types import Pairs


class RevisedContrastiveLoss(Loss):
    """Revised contrastive loss of Jeong et al. (2018) over mined pairs, under L1 distance.

    Z = 1 iff ``|a_i - a_j| < margin`` (see
    [`agemetric.functional.margin_similarity()`][agemetric.functional.margin_similarity]);
    the loss is the mean over pairs (``reduction="mean"``, see [the method's decisions][method-decisions]).

    Args:
        margin: age tolerance in years (paper: 4).
        q: Q, the upper bound of the distance (paper: 100).
        reduction: ``"mean"`` (the paper's, as we read it), ``"balanced"`` (mean over similar
            pairs + mean over dissimilar pairs) or ``"sum"`` over pairs.

    Examples:
        >>> loss = RevisedContrastiveLoss(margin=4)
        >>> emb = torch.zeros(3, 2, requires_grad=True)
        >>> round(loss(emb, torch.tensor([20.0, 22.0, 50.0]), F.all_pairs(3)).item(), 4)  # (0 + 200 + 200) / 3
        133.3333
    """

    accepts = Pairs

    def __init__(self, margin: float = 4.0, q: float = F.Q_DEFAULT, reduction: str = "mean"):
        super().__init__(margin)
        if q <= 0:
            raise ValueError(f"q must be > 0, got {q}")
        if reduction not in ("mean", "balanced", "sum"):
            raise ValueError(f"reduction must be 'mean', 'balanced' or 'sum', got {reduction!r}")
        self.q = float(q)
        self.reduction = reduction

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: Pairs) -> torch.Tensor:
        d = F.pair_l1_distances(embeddings.float(), indices.first, indices.second)  # (P,)
        z = F.margin_similarity(labels, indices.first, indices.second, self.margin)  # (P,)
        return F.revised_contrastive_loss(d, z, q=self.q, reduction=self.reduction)


@hookimpl
def register_losses(register):
    register("revised-contrastive", RevisedContrastiveLoss)

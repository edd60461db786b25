"""The paper's loss: revised contrastive loss (eq. 2-4) with margin-tolerant similarity."""

from __future__ import annotations

import torch
from torch import nn

from agemetric import functional as F
from agemetric.hookspecs import hookimpl
from agemetric.interfaces import Loss
from agemetric.types import Pairs


class RevisedContrastiveLoss(Loss):
    """Revised contrastive loss of Jeong et al. (2018) over mined pairs, under L1 distance.

    Z = 1 iff ``|a_i - a_j| < margin`` (see `agemetric.functional.margin_similarity()`); the loss
    is the mean over pairs (``reduction="mean"``, see the method's decisions on the documentation's
    method page).

    Args:
        margin: age tolerance in years (paper: 4).
        q: Q, the upper bound of the distance (paper: 100).
        reduction: ``"mean"`` (the paper's, as we read it), ``"balanced"`` (mean over similar
            pairs + mean over dissimilar pairs) or ``"sum"`` over pairs.
        classifier: weight of an auxiliary age classifier (not the paper's; 0: none): a linear
            layer from the embedding to ``classes`` ages (0 to ``classes - 1`` years), trained
            with cross-entropy on the rounded ages of the paired faces and added to the loss with
            this weight. Ages are still predicted from the nearest faces; the classifier only
            shapes the embedding. The gender task's loss, made again with these options
            unless ``gender_loss`` names another plugin, classifies its 0/1 labels the same way.
        classes: the ages the auxiliary classifier tells apart.
        label_sigma: with the classifier, each face's target is a normal distribution over the
            ages centred on its age with this standard deviation in years (label distribution
            learning), instead of its rounded age alone (0).
        parts: score the embedding as this many consecutive parts (equal, or the first ones one
            dimension larger, as ``torch.tensor_split`` cuts), each on its own, and add the
            losses (each part with its own classifier). With a backbone whose embedding
            is made of independent networks' halves (agemetric-dlib's ``dlib-pair``), each
            network then learns on its own, as in an ensemble; the L1 distance on the whole
            embedding adds the parts' distances. 1: the whole embedding (the paper's).

    Examples:
        >>> from agemetric import functional as F
        >>> loss = RevisedContrastiveLoss(margin=4)
        >>> emb = torch.zeros(3, 2, requires_grad=True)
        >>> round(loss(emb, torch.tensor([20.0, 22.0, 50.0]), F.all_pairs(3)).item(), 4)  # (0 + 200 + 200) / 3
        133.3333
    """

    accepts = Pairs

    def __init__(
        self,
        margin: float = 4.0,
        q: float = 100.0,  # F.Q_DEFAULT, written out so that signatures show the number
        reduction: str = "mean",
        classifier: float = 0.0,
        classes: int = 101,
        label_sigma: float = 0.0,
        parts: int = 1,
    ):
        super().__init__(margin)
        if not q > 0 or q == float("inf"):  # NaN is not > 0
            raise ValueError(f"q must be a finite number > 0, got {q}")
        if reduction not in ("mean", "balanced", "sum"):
            raise ValueError(f"reduction must be 'mean', 'balanced' or 'sum', got {reduction!r}")
        if classifier < 0 or classes < 2:
            raise ValueError(f"classifier must be >= 0 and classes >= 2, got {classifier} and {classes}")
        if label_sigma < 0:
            raise ValueError(f"label_sigma must be >= 0, got {label_sigma}")
        if parts < 1:
            raise ValueError(f"parts must be >= 1, got {parts}")
        self.q = float(q)
        self.reduction = reduction
        self.classifier_weight = float(classifier)
        self.parts = int(parts)
        # one classifier per part; a single module (not a list) for one part keeps its state keys
        if not classifier:
            self.classifier = None
        elif parts == 1:
            self.classifier = nn.LazyLinear(int(classes))
        else:
            self.classifier = nn.ModuleList(nn.LazyLinear(int(classes)) for _ in range(parts))
        self.label_sigma = float(label_sigma)

    def extra_repr(self) -> str:
        shown = [super().extra_repr(), f"q={self.q:g}", f"reduction={self.reduction!r}"]
        if self.classifier_weight:
            shown.append(f"classifier={self.classifier_weight:g}")
            shown += [f"label_sigma={self.label_sigma:g}"] if self.label_sigma else []
        shown += [f"parts={self.parts}"] if self.parts > 1 else []
        return ", ".join(shown)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: Pairs) -> torch.Tensor:
        if embeddings.shape[1] < self.parts:
            dims = embeddings.shape[1]
            raise ValueError(f"parts={self.parts} needs at least as many embedding dimensions, got {dims}")
        z = F.margin_similarity(labels, indices.first, indices.second, self.margin)  # (P,)
        rows = torch.unique(torch.cat([indices.first, indices.second]))  # (S,) the paired faces
        classifiers = (
            list(self.classifier) if isinstance(self.classifier, nn.ModuleList) else [self.classifier] * self.parts
        )
        loss = embeddings.new_zeros((), dtype=torch.float32)
        for part, classifier in zip(embeddings.float().tensor_split(self.parts, dim=1), classifiers, strict=True):
            d = F.pair_l1_distances(part, indices.first, indices.second)  # (P,)
            loss = loss + F.revised_contrastive_loss(d, z, q=self.q, reduction=self.reduction)
            if classifier is not None:
                loss = loss + self.classifier_weight * self._classification(classifier(part[rows]), labels[rows])
        return loss

    def _classification(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``logits`` ``(S, classes)`` against the ages ``labels`` ``(S,)``."""
        if self.label_sigma > 0:
            ages = torch.arange(logits.shape[1], device=logits.device, dtype=torch.float32)  # (classes,)
            gap = (ages[None, :] - labels.float()[:, None]) / self.label_sigma  # (S, classes)
            target = torch.softmax(-0.5 * gap**2, dim=1)  # (S, classes) a normal distribution over the ages
        else:
            target = labels.round().long().clamp(0, logits.shape[1] - 1)  # (S,)
        return nn.functional.cross_entropy(logits, target)


@hookimpl
def register_losses(register):
    register("revised-contrastive", RevisedContrastiveLoss)

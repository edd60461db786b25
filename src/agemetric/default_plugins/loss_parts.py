"""Losses made of losses: an auxiliary age classifier, a sum of losses (as pytorch-metric-learning's
``MultipleLosses``), a loss per part of the embedding. The ``revised-contrastive`` loss of a run
puts the paper's loss together with them (see
`agemetric.default_plugins.revised_contrastive.revised_contrastive()`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from agemetric.interfaces import Loss
from agemetric.interfaces.checks import type_names
from agemetric.types import Indices, Pairs


class AgeClassifierLoss(Loss):
    """An auxiliary age classifier as a loss (not the paper's): a linear layer from the embedding
    to ``classes`` ages (0 to ``classes - 1`` years), trained with cross-entropy on the ages of
    the faces the pairs join. Added to a metric loss, it shapes the embedding so that age can be
    read from it along a line; ages are still predicted from the nearest faces.

    Args:
        margin: unused (every loss takes one).
        classes: the ages the classifier tells apart.
        label_sigma: each face's target is a normal distribution over the ages centred on its age
            with this standard deviation in years (label distribution learning); 0: its rounded
            age alone.

    Examples:
        >>> loss = AgeClassifierLoss(classes=5)
        >>> embeddings = torch.randn(4, 3, requires_grad=True)
        >>> loss(embeddings, torch.tensor([0.0, 1.0, 2.0, 3.0])).backward()  # every pair: every face
        >>> tuple(loss.classifier.weight.shape), loss.classifier.weight.grad is not None
        ((5, 3), True)
    """

    accepts = Pairs

    def __init__(self, margin: float = 4.0, classes: int = 101, label_sigma: float = 0.0):
        super().__init__(margin)
        if classes < 2:
            raise ValueError(f"classes must be >= 2, got {classes}")
        if label_sigma < 0:
            raise ValueError(f"label_sigma must be >= 0, got {label_sigma}")
        self.classifier = nn.LazyLinear(int(classes))
        self.classes, self.label_sigma = int(classes), float(label_sigma)

    def extra_repr(self) -> str:
        shown = [super().extra_repr(), f"classes={self.classes}"]
        return ", ".join(shown + ([f"label_sigma={self.label_sigma:g}"] if self.label_sigma else []))

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: Pairs) -> torch.Tensor:
        rows = torch.unique(torch.cat([indices.first, indices.second]))  # (S,) the paired faces
        logits = self.classifier(embeddings.float()[rows])  # (S, classes)
        ages = labels[rows]
        if self.label_sigma > 0:
            grid = torch.arange(logits.shape[1], device=logits.device, dtype=torch.float32)  # (classes,)
            gap = (grid[None, :] - ages.float()[:, None]) / self.label_sigma  # (S, classes)
            target = torch.softmax(-0.5 * gap**2, dim=1)  # (S, classes) a normal distribution over the ages
        else:
            target = ages.round().long().clamp(0, logits.shape[1] - 1)  # (S,)
        return nn.functional.cross_entropy(logits, target)


class _Composed(Loss):
    """A loss of ``losses`` that all take the same indices (what the composed loss takes)."""

    def __init__(self, losses: Sequence[Loss]):
        losses = list(losses)
        if not losses or not all(isinstance(loss, Loss) for loss in losses):
            raise ValueError(f"{type(self).__name__} needs one or more agemetric Loss objects")
        accepts = {tuple(loss.accepts) if isinstance(loss.accepts, tuple) else loss.accepts for loss in losses}
        if len(accepts) > 1:
            taken = ", ".join(sorted(type_names(kind) for kind in accepts))
            raise ValueError(f"{type(self).__name__}: the losses take different indices ({taken})")
        super().__init__(losses[0].margin)
        self.losses = nn.ModuleList(losses)
        self.accepts = losses[0].accepts

    def takes(self, kind: type) -> bool:
        return self.losses[0].takes(kind)

    def extra_repr(self) -> str:
        return ""


class SumOfLosses(_Composed):
    """Several losses of the same embeddings and indices, added with weights (as
    pytorch-metric-learning's ``MultipleLosses``).

    Args:
        losses: the losses; each takes the same kind of indices.
        weights: one per loss (default: 1 each).

    Examples:
        >>> from agemetric.losses import RevisedContrastiveLoss
        >>> paper, classifier = RevisedContrastiveLoss(margin=4), AgeClassifierLoss(classes=81)
        >>> loss = SumOfLosses([paper, classifier], [1.0, 3.0])
        >>> emb, ages = torch.randn(6, 8), torch.arange(20.0, 26.0)
        >>> bool(torch.isclose(loss(emb, ages), paper(emb, ages) + 3 * classifier(emb, ages)))
        True
    """

    def __init__(self, losses: Sequence[Loss], weights: Sequence[float] | None = None):
        super().__init__(losses)
        weights = [1.0] * len(self.losses) if weights is None else [float(w) for w in weights]
        if len(weights) != len(self.losses):
            raise ValueError(f"SumOfLosses: {len(self.losses)} losses but {len(weights)} weights")
        self.weights = tuple(weights)

    def extra_repr(self) -> str:
        return f"weights={self.weights}"

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: Indices) -> torch.Tensor:
        total = self.losses[0].compute(embeddings, labels, indices) * self.weights[0]
        for loss, weight in zip(self.losses[1:], self.weights[1:], strict=True):
            total = total + weight * loss.compute(embeddings, labels, indices)
        return total


class PerPartLoss(_Composed):
    """The embedding cut into consecutive parts (equal, or the first ones one dimension larger, as
    ``torch.tensor_split`` cuts), each scored by its own loss, the losses added. With a backbone
    whose embedding is made of independent networks' parts (agemetric-dlib's ``dlib-pair``), each
    network then learns on its own, as in an ensemble; the L1 distance on the whole embedding adds
    the parts' distances.

    Args:
        losses: one loss per part, each taking the same kind of indices.

    Examples:
        >>> from agemetric.losses import RevisedContrastiveLoss
        >>> paper = RevisedContrastiveLoss(margin=4)
        >>> loss = PerPartLoss([paper, RevisedContrastiveLoss(margin=4)])
        >>> emb, ages = torch.randn(6, 8), torch.arange(20.0, 26.0)
        >>> bool(torch.isclose(loss(emb, ages), paper(emb[:, :4], ages) + paper(emb[:, 4:], ages)))
        True
    """

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: Indices) -> torch.Tensor:
        parts = len(self.losses)
        if embeddings.shape[1] < parts:
            raise ValueError(f"parts={parts} needs at least as many embedding dimensions, got {embeddings.shape[1]}")
        total = embeddings.new_zeros((), dtype=torch.float32)
        for part, loss in zip(embeddings.tensor_split(parts, dim=1), self.losses, strict=True):
            total = total + loss.compute(part, labels, indices)
        return total

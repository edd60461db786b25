"""The paper's loss: revised contrastive loss (eq. 2-4) with margin-tolerant similarity; and
``revised-contrastive``, the registered loss: the paper's, optionally with an auxiliary age
classifier and scored by parts of the embedding (each a part of its own, composed)."""

from __future__ import annotations

import torch

from agemetric import functional as F
from agemetric.default_plugins.loss_parts import AgeClassifierLoss, PerPartLoss, SumOfLosses
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

    Examples:
        >>> from agemetric import functional as F
        >>> loss = RevisedContrastiveLoss(margin=4)
        >>> emb = torch.zeros(3, 2, requires_grad=True)
        >>> round(loss(emb, torch.tensor([20.0, 22.0, 50.0]), F.all_pairs(3)).item(), 4)  # (0 + 200 + 200) / 3
        133.3333
    """

    accepts = Pairs

    def __init__(self, margin: float = 4.0, q: float = 100.0, reduction: str = "mean"):
        # q: F.Q_DEFAULT, written out so that signatures show the number
        super().__init__(margin)
        if not q > 0 or q == float("inf"):  # NaN is not > 0
            raise ValueError(f"q must be a finite number > 0, got {q}")
        if reduction not in ("mean", "balanced", "sum"):
            raise ValueError(f"reduction must be 'mean', 'balanced' or 'sum', got {reduction!r}")
        self.q = float(q)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return ", ".join([super().extra_repr(), f"q={self.q:g}", f"reduction={self.reduction!r}"])

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: Pairs) -> torch.Tensor:
        z = F.margin_similarity(labels, indices.first, indices.second, self.margin)  # (P,)
        d = F.pair_l1_distances(embeddings.float(), indices.first, indices.second)  # (P,)
        return F.revised_contrastive_loss(d, z, q=self.q, reduction=self.reduction)


def revised_contrastive(
    margin: float = 4.0,
    q: float = 100.0,
    reduction: str = "mean",
    classifier: float = 0.0,
    classes: int = 101,
    label_sigma: float = 0.0,
    parts: int = 1,
) -> Loss:
    """The ``revised-contrastive`` loss of a run: `RevisedContrastiveLoss` (``margin``, ``q``,
    ``reduction``), and with the options below the parts added to it.

    Args:
        classifier: weight of an auxiliary age classifier (not the paper's; 0: none), an
            `agemetric.losses.AgeClassifierLoss` with ``classes`` and ``label_sigma``, added
            to the paper's loss with this weight (`agemetric.losses.SumOfLosses`). Ages are
            still predicted from the nearest faces; the classifier only shapes the embedding.
            The gender task's loss, made again with these options unless ``gender_loss`` names
            another plugin, classifies its 0/1 labels the same way.
        classes: the ages the auxiliary classifier tells apart (0 to ``classes - 1`` years).
        label_sigma: with the classifier, each face's target is a normal distribution over the
            ages centred on its age with this standard deviation in years (0: its rounded age).
        parts: score the embedding as this many consecutive parts, each with its own loss (and
            classifier), the losses added (`agemetric.losses.PerPartLoss`). With a backbone whose
            embedding is made of independent networks' halves (agemetric-dlib's ``dlib-pair``),
            each network then learns on its own, as in an ensemble. 1: the whole embedding (the
            paper's).

    Examples:
        >>> revised_contrastive(margin=4)
        RevisedContrastiveLoss(margin=4, q=100, reduction='mean')
        >>> loss = revised_contrastive(margin=4, classifier=3.0, parts=2)  # face-pair's
        >>> type(loss).__name__, [type(one).__name__ for one in loss.losses[0].losses]
        ('PerPartLoss', ['RevisedContrastiveLoss', 'AgeClassifierLoss'])
    """
    if classifier < 0 or classes < 2:
        raise ValueError(f"classifier must be >= 0 and classes >= 2, got {classifier} and {classes}")
    if label_sigma < 0:  # refused also without the classifier, as the options are given
        raise ValueError(f"label_sigma must be >= 0, got {label_sigma}")
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")

    def one() -> Loss:
        paper = RevisedContrastiveLoss(margin, q, reduction)
        if not classifier:
            return paper
        return SumOfLosses([paper, AgeClassifierLoss(margin, classes, label_sigma)], [1.0, classifier])

    loss = one() if parts == 1 else PerPartLoss([one() for _ in range(int(parts))])
    if classifier:
        loss.register_load_state_dict_pre_hook(_classifier_keys_of_one_loss(int(parts)))
    return loss


def _classifier_keys_of_one_loss(parts: int):
    """A load hook for the state of this loss saved when it was one module (the classifier's
    weights under ``classifier.*``, or ``classifier.{part}.*``): those keys moved to where the
    composed loss keeps them, so earlier run folders and checkpoints load."""

    def hook(module, state, prefix, *_) -> None:
        for key in [k for k in state if k.startswith(prefix + "classifier.")]:
            rest = key[len(prefix + "classifier.") :]
            if parts == 1:
                state[f"{prefix}losses.1.classifier.{rest}"] = state.pop(key)
            else:
                part, _, name = rest.partition(".")
                state[f"{prefix}losses.{part}.losses.1.classifier.{name}"] = state.pop(key)

    return hook


@hookimpl
def register_losses(register):
    register("revised-contrastive", revised_contrastive)

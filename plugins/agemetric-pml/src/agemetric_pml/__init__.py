"""pytorch-metric-learning losses for agemetric, with age-margin positives."""

from __future__ import annotations

import torch

from agemetric import Loss, Pairs, hookimpl
from agemetric.functional import margin_similarity


class PMLPairLoss(Loss):
    """Adapter: a pytorch-metric-learning loss fed explicit age-margin pairs.

    Each mined pair ``(i, j)`` is used in both directions; it is positive when
    ``|a_i - a_j| < margin`` and negative otherwise (PML itself would only call equal labels
    positive). The pairs go to PML as ``indices_tuple = (a1, p, a2, n)``.

    Args:
        margin: age tolerance in years.
        **options: keyword arguments of the PML loss.
    """

    accepts = Pairs
    pml_class: str = ""

    def __init__(self, margin: float = 4.0, **options):
        super().__init__(margin)
        from pytorch_metric_learning import losses

        self.pml = getattr(losses, self.pml_class)(**options)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: Pairs) -> torch.Tensor:
        first = torch.cat([indices.first, indices.second])  # (2P,) both directions
        second = torch.cat([indices.second, indices.first])  # (2P,)
        positive = margin_similarity(labels, first, second, self.margin).bool()  # (2P,)
        pairs = (first[positive], second[positive], first[~positive], second[~positive])
        return self.pml(embeddings.float(), labels, indices_tuple=pairs)


def _adapter(class_name: str, doc: str) -> type[PMLPairLoss]:
    return type(class_name, (PMLPairLoss,), {"pml_class": class_name, "__doc__": doc})


LOSSES = {
    "pml-contrastive": _adapter("ContrastiveLoss", "PML ContrastiveLoss over age-margin pairs."),
    "pml-triplet": _adapter("TripletMarginLoss", "PML TripletMarginLoss over triplets made from age-margin pairs."),
    "pml-lifted-structure": _adapter(
        "GeneralizedLiftedStructureLoss", "PML GeneralizedLiftedStructureLoss over age-margin pairs."
    ),
    "pml-multi-similarity": _adapter("MultiSimilarityLoss", "PML MultiSimilarityLoss over age-margin pairs."),
}


@hookimpl
def register_losses(register):
    for name, factory in LOSSES.items():
        register(name, factory)

"""The losses and the miner of agemetric-pml (imported by its hooks, on first use)."""

from __future__ import annotations

import torch

from agemetric import Loss, Miner, Pairs, Triplets
from agemetric.functional import all_triplets


class PMLPairLoss(Loss):
    """Adapter: a pytorch-metric-learning loss fed explicit age-margin pairs.

    Each mined pair ``(i, j)`` is used in both directions; it is positive when
    ``|a_i - a_j| < margin`` and negative otherwise (PML itself would only call equal labels
    positive): `agemetric.pml.to_indices_tuple()` makes PML's ``(a1, p, a2, n)``.
    Mined
    triplets (from ``pml-triplet-margin``) go to PML unchanged as ``(anchor, positive, negative)``.

    Args:
        margin: age tolerance in years.
        **options: keyword arguments of the PML loss.
    """

    accepts = (Pairs, Triplets)
    pml_class: str = ""

    def __init__(self, margin: float = 4.0, **options):
        super().__init__(margin)
        from pytorch_metric_learning import losses

        self.pml = getattr(losses, self.pml_class)(**options)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: Pairs | Triplets) -> torch.Tensor:
        from agemetric.pml import to_indices_tuple  # here: pytorch-metric-learning takes 0.6 s to import

        indices_tuple = to_indices_tuple(indices, labels, self.margin)  # triplets as they are
        return self.pml(embeddings.float(), labels, indices_tuple=indices_tuple)


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


def _age_triplet_margin_miner():
    from pytorch_metric_learning import miners

    from agemetric.pml import to_indices_tuple

    class AgeTripletMarginMiner(miners.TripletMarginMiner):
        """PML's TripletMarginMiner with age-margin candidates instead of equal labels.

        ``age_margin`` (years) decides positives and negatives; ``margin`` and
        ``type_of_triplets`` keep PML's meaning (a triplet is kept when
        ``d(a, n) - d(a, p) <= margin``; "hard" also needs ``<= 0``, "semihard" ``> 0``, "easy" is the rest).
        """

        def __init__(self, age_margin: float, **options):
            super().__init__(**options)
            self.age_margin = age_margin

        def mine(self, embeddings, labels, ref_emb, ref_labels):
            anchor, positive, negative = to_indices_tuple(all_triplets(labels, self.age_margin))
            dist = self.distance(embeddings, ref_emb)  # (B, B)
            gap = dist[anchor, negative] - dist[anchor, positive]  # (T,)
            if self.distance.is_inverted:  # a similarity: larger is closer
                gap = -gap
            self.set_stats(dist[anchor, positive], dist[anchor, negative], gap)
            if self.type_of_triplets == "easy":
                keep = gap > self.margin
            else:
                keep = gap <= self.margin
                if self.type_of_triplets == "hard":
                    keep &= gap <= 0
                elif self.type_of_triplets == "semihard":
                    keep &= gap > 0
            return anchor[keep], positive[keep], negative[keep]

    return AgeTripletMarginMiner


class PMLTripletMarginMiner(Miner):
    """``pml-triplet-margin``: triplets that violate PML's embedding margin, positives within the age margin.

    Args:
        margin: age tolerance in years (positives: ``|a - p| < margin``).
        embedding_margin: PML's ``margin`` in embedding distance (PML's default 0.2).
        type_of_triplets: "all", "hard", "semihard" (default) or "easy", as in PML.
        **options: other PML ``TripletMarginMiner`` options (e.g. ``distance``).
    """

    produces = Triplets

    def __init__(
        self, margin: float = 4.0, embedding_margin: float = 0.2, type_of_triplets: str = "semihard", **options
    ):
        super().__init__(margin)
        if type_of_triplets not in ("all", "hard", "semihard", "easy"):
            raise ValueError(f"type_of_triplets must be all, hard, semihard or easy, got {type_of_triplets!r}")
        self.pml = _age_triplet_margin_miner()(
            age_margin=margin, margin=embedding_margin, type_of_triplets=type_of_triplets, **options
        )

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        return Triplets(*(t.long() for t in self.pml(embeddings.float(), labels)))

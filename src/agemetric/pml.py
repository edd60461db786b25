"""pytorch-metric-learning, both ways: agemetric's index types as PML ``indices_tuple`` and back,
and a miner that makes any PML loss treat ages within a tolerance as positives.

PML calls two samples positive only when their labels are equal; with ages as labels, 30 and 31
are then as different as 30 and 80. `AgeToleranceMiner` is a PML miner that calls a pair
positive when the ages differ by less than ``margin`` years (the rule of agemetric's losses), so a
plain PML loop gets age tolerance by changing one line:

Examples:
    >>> import torch
    >>> from pytorch_metric_learning import losses
    >>> from agemetric.pml import AgeToleranceMiner
    >>> embeddings = torch.randn(16, 8, requires_grad=True)
    >>> ages = torch.arange(20.0, 36.0)
    >>> loss_fn, miner = losses.ContrastiveLoss(), AgeToleranceMiner(margin=4)
    >>> loss_fn(embeddings, ages, miner(embeddings, ages)).backward()

The other way round, agemetric's losses take a PML miner's output as it is:
``RevisedContrastiveLoss()(embeddings, ages, pml_miner(embeddings, ages))``; the pairs or
triplets are kept and agemetric decides which are similar by the age margin.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.miners import BaseMiner

from agemetric import functional as F
from agemetric._stack import AGEMETRIC_FILES, stacklevel_outside, torch_files
from agemetric.interfaces import Loss, Miner
from agemetric.interfaces.checks import check_finite, check_margin, describe
from agemetric.types import IndicesTuple, Pairs, Samples, Triplets, from_indices_tuple


def to_indices_tuple(
    indices: Pairs | Triplets, labels: torch.Tensor | None = None, margin: float | None = None
) -> IndicesTuple:
    """An agemetric miner's output as PML's ``indices_tuple``.

    Args:
        indices: ``Triplets`` become ``(anchor, positive, negative)`` as they are. ``Pairs``
            become ``(a1, p, a2, n)``, each pair in both directions, positive iff
            ``|a_i - a_j| < margin`` (so ``labels`` and ``margin`` are needed).
        labels: ``(B,)`` ages, for ``Pairs``.
        margin: the age tolerance in years, for ``Pairs``.

    Returns:
        A tuple of int64 ``(T,)`` or ``(P_pos,), (P_pos,), (P_neg,), (P_neg,)`` tensors.

    Raises:
        ValueError: ``Samples`` (PML has no single-sample indices), or ``Pairs`` without
            ``labels`` and ``margin``.

    Examples:
        >>> from agemetric.functional import all_pairs
        >>> a1, p, a2, n = to_indices_tuple(all_pairs(3), torch.tensor([20.0, 22.0, 50.0]), margin=4)
        >>> list(zip(a1.tolist(), p.tolist()))  # the positive pairs, both directions
        [(0, 1), (1, 0)]
    """
    if isinstance(indices, Triplets):
        return indices.anchor, indices.positive, indices.negative
    if isinstance(indices, Pairs):
        if labels is None or margin is None:
            raise ValueError("Pairs need labels and margin to become PML's (a1, p, a2, n): which pairs are positive")
        return F.split_by_margin(labels, indices, margin)
    if isinstance(indices, Samples):
        raise ValueError("Samples have no PML indices_tuple (PML's tuples hold pairs or triplets)")
    raise TypeError(f"expected Pairs or Triplets, got {type(indices).__name__}")


class AgeToleranceMiner(BaseMiner):
    """A pytorch-metric-learning miner for ages: positive iff ``|a_i - a_j| < margin``.

    Drop it into a PML training loop in place of a PML miner (PML's miners compare labels for
    equality, which ages within a tolerance are not); every PML loss that takes an
    ``indices_tuple`` then treats ages within the margin as the same class. Pair
    losses (``ContrastiveLoss``, ``MultiSimilarityLoss``, ...) take the pairs; triplet losses
    (``TripletMarginLoss``) build their triplets from them, as PML does for any pair miner.

    Args:
        margin: the age tolerance in years (agemetric's losses use 4 by default).
        miner: an agemetric miner choosing the pairs or triplets to return (default: every pair
            of the batch); its pairs are split into positives and negatives by ``margin``.
        **kwargs: PML ``BaseMiner`` options (e.g. ``distance``, used for PML's statistics only).

    With ``ref_emb`` / ``ref_labels`` (PML's cross-batch form) every (query, reference) pair is
    returned, split by ``margin``; a custom ``miner`` is then not supported.

    Examples:
        >>> miner = AgeToleranceMiner(margin=4)
        >>> a1, p, a2, n = miner(torch.zeros(3, 2), torch.tensor([20.0, 22.0, 50.0]))
        >>> miner.num_pos_pairs, miner.num_neg_pairs
        (2, 4)
    """

    def __init__(self, margin: float = 4.0, miner: Miner | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if miner is not None and not isinstance(miner, Miner):
            raise TypeError(
                f"miner: expected an agemetric miner (producing Pairs or Triplets), got {type(miner).__name__}; "
                "a pytorch-metric-learning miner compares labels for equality, which ages within a margin are not: "
                "use AgeToleranceMiner in its place"
            )
        if miner is not None and miner.produces not in (Pairs, Triplets):
            raise ValueError(f"miner must produce Pairs or Triplets, got {miner.produces.__name__}")
        self.margin = check_margin(margin)
        self.miner = miner

    def mine(self, embeddings, labels, ref_emb, ref_labels) -> IndicesTuple:
        who = describe(self)
        check_finite(who, "labels", labels)  # a NaN age would be a negative of every face
        if ref_labels is not labels:
            check_finite(who, "ref_labels", ref_labels)
        if ref_emb is embeddings:  # PML passes the batch itself when no reference set was given
            if self.miner is not None:
                indices = self.miner(embeddings, labels)
            else:
                indices = F.all_pairs(len(labels), device=labels.device)
            return to_indices_tuple(indices, labels, self.margin)
        if self.miner is not None:
            raise ValueError("AgeToleranceMiner with a custom miner does not take ref_emb / ref_labels")
        gap = (labels.view(-1, 1).double() - ref_labels.view(1, -1).double()).abs()  # (B, R)
        a1, p = torch.where(gap < self.margin)
        a2, n = torch.where(gap >= self.margin)
        return a1, p, a2, n


class CrossBatchMemory(pml_losses.CrossBatchMemory):
    """PML's ``CrossBatchMemory`` that also wraps agemetric's pair and triplet losses.

    Each batch is compared with the last ``memory_size`` embeddings of earlier batches (and
    itself), as PML's wrapper does for its own losses; PML refuses losses it does not list by
    name, agemetric's among them. With no ``miner`` an agemetric loss compares every (batch,
    memory) pair but each face with itself, and decides which are similar by its age margin; a
    PML loss needs ``miner=AgeToleranceMiner(margin)`` for ages (PML's default pairs equal
    labels). Everything else is PML's (``enqueue_mask``, ``reset_queue()``).

    Args:
        loss: an agemetric loss taking `agemetric.types.Pairs` or `agemetric.types.Triplets`,
            or a PML loss that PML's ``CrossBatchMemory`` supports.
        embedding_size: the embeddings' width ``D``.
        memory_size: how many embeddings the memory keeps.
        miner: a PML miner taking ``ref_emb`` (`AgeToleranceMiner`), or ``None``.

    Raises:
        TypeError: an agemetric loss that scores single images (``Samples``), one over triplets
            alone without a miner (the memory's own pairs are not triplets), or a PML loss PML's
            wrapper does not support.

    Examples:
        >>> from agemetric.losses import RevisedContrastiveLoss
        >>> memory = CrossBatchMemory(RevisedContrastiveLoss(margin=4), embedding_size=8, memory_size=64)
        >>> for _ in range(3):
        ...     embeddings = torch.randn(16, 8, requires_grad=True)
        ...     memory(embeddings, torch.randint(1, 90, (16,)).float()).backward()
        >>> memory.queue_idx  # 48 embeddings kept
        48
    """

    def __init__(
        self,
        loss: Loss | torch.nn.Module,
        embedding_size: int,
        memory_size: int = 1024,
        miner: BaseMiner | None = None,
    ):
        if isinstance(loss, Loss) and not (loss.takes(Pairs) or loss.takes(Triplets)):
            raise TypeError(
                f"{describe(loss)} scores single images (Samples), which a memory of other batches' embeddings "
                "does not feed; CrossBatchMemory wraps losses over pairs or triplets"
            )
        if isinstance(loss, Loss) and not loss.takes(Pairs) and miner is None:
            raise TypeError(
                f"{describe(loss)} takes triplets, and the memory's own (batch, memory) pairs are not: give it a "
                "miner that returns triplets with references (a PML triplet miner)"
            )
        if not isinstance(loss, Loss) and type(loss).__name__ not in self.supported_losses():
            raise TypeError(
                f"CrossBatchMemory does not support {type(loss).__name__}: agemetric's pair and triplet losses, or "
                f"one of PML's: {', '.join(self.supported_losses())}"
            )
        if isinstance(miner, AgeToleranceMiner) and miner.miner is not None:
            raise ValueError(
                "miner: an AgeToleranceMiner with a miner of its own mines within one batch; the memory gives it "
                "references: use AgeToleranceMiner(margin) alone"
            )
        super().__init__(loss, embedding_size, memory_size, miner)
        self._warned_equality = False

    @classmethod
    def check_loss_support(cls, loss_name: str) -> None:
        """Done in ``__init__``, by the loss's type (PML's check goes by the class name alone)."""

    def forward(self, embeddings, labels, indices_tuple=None, enqueue_mask=None):
        """As PML's (the loss of a batch against the memory, which it then joins), with a
        `ValueError` for a batch larger than the memory, and a warning (once) when a PML loss
        without a miner is given float ages, which it would pair by equality."""
        if enqueue_mask is None and len(embeddings) > self.memory_size:
            raise ValueError(
                f"a batch of {len(embeddings)} embeddings is larger than memory_size={self.memory_size}: "
                "make the memory at least a batch"
            )
        if self.miner is None and not isinstance(self.loss, Loss) and labels.is_floating_point():
            self._warn_equality()
        return super().forward(embeddings, labels, indices_tuple, enqueue_mask)

    def _warn_equality(self) -> None:
        if self._warned_equality:
            return
        self._warned_equality = True
        warnings.warn(
            f"CrossBatchMemory({type(self.loss).__name__}) without a miner pairs equal labels only, so float ages "
            "are nearly all negatives (warned once): pass miner=AgeToleranceMiner(margin)",
            stacklevel=stacklevel_outside(AGEMETRIC_FILES, torch_files()),
        )


__all__ = ["AgeToleranceMiner", "CrossBatchMemory", "IndicesTuple", "from_indices_tuple", "to_indices_tuple"]

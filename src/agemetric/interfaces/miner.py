"""Miner: chooses which pairs (or triplets) of a batch the loss compares."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from agemetric.errors import PluginError
from agemetric.interfaces.checks import (
    check_finite,
    check_indices,
    check_margin,
    check_rows,
    check_tensor,
    describe,
)
from agemetric.types import Indices, Pairs


class Miner(nn.Module, abc.ABC):
    """Selects index pairs or triplets from a batch, without gradients.

    Factories registered through ``register_miners`` are called as
    ``factory(margin=..., **miner_options)``; ``margin`` (years) is there for miners that
    decide "same age" (e.g. a triplet miner); miners that ignore it still accept it.

    Class attributes:
        produces: `agemetric.types.Pairs`, `agemetric.types.Triplets` or
            `agemetric.types.Samples`; the estimator checks that the loss ``accepts`` it.

    Examples:
        A subclass implements `mine` (``embeddings`` ``(B, D)``, ``labels`` ``(B,)``); here it pairs
        the first image with each of the others:

        >>> class FirstVsRest(Miner):
        ...     def mine(self, embeddings, labels):
        ...         rest = torch.arange(1, len(labels))
        ...         return Pairs(torch.zeros_like(rest), rest)
        >>> pairs = FirstVsRest()(torch.zeros(4, 70), torch.tensor([20.0, 30.0, 40.0, 50.0]))
        >>> pairs.first.tolist(), pairs.second.tolist()
        ([0, 0, 0], [1, 2, 3])
    """

    produces: ClassVar[type] = Pairs

    def __init__(self, margin: float = 4.0):
        super().__init__()
        self.margin = check_margin(margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin:g}"

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> Indices:
        """Mine a batch.

        Args:
            embeddings: ``(B, D)`` float.
            labels: ``(B,)`` ages (or gender labels for the gender task).
            ref_emb: not taken (an agemetric miner mines within the batch); the argument is
                there to say so to a pytorch-metric-learning user, whose miners take it.
            ref_labels: not taken, as ``ref_emb``.

        Returns:
            ``Pairs`` (each field ``(P,)`` int64) or ``Triplets`` (each ``(T,)`` int64), with
            every index in ``[0, B)``.
        """
        who = describe(self)
        if ref_emb is not None or ref_labels is not None:
            raise PluginError(
                f"{who}: mines within one batch and takes no ref_emb / ref_labels; for pairs with references use "
                "agemetric.pml.AgeToleranceMiner, or give the loss ref_emb and ref_labels without indices (every pair)"
            )
        check_tensor(who, "embeddings", embeddings, 2, floating=True)
        check_tensor(who, "labels", labels, 1)
        check_rows(who, "labels", labels, embeddings.shape[0])
        check_finite(who, "labels", labels)
        with torch.no_grad():
            out = self.mine(embeddings, labels)
        check_indices(who, out, self.produces, embeddings.shape[0])
        return out

    @abc.abstractmethod
    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Indices:
        """Return the indices for a checked batch (called under ``torch.no_grad``)."""

"""Loss: turns embeddings, labels and mined indices into one number to minimise."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from agemetric import functional as F
from agemetric.errors import PluginError
from agemetric.interfaces.checks import check_indices, check_margin, check_rows, check_tensor, describe
from agemetric.types import Indices, Pairs, Samples, Triplets, from_indices_tuple


class Loss(nn.Module, abc.ABC):
    """A metric-learning loss over mined pairs or triplets.

    Factories registered through ``register_losses`` are called as
    ``factory(margin=..., **loss_options)``; ``margin`` is the age tolerance in years under
    which two labels count as the same (the gender task uses 0.5: exact equality).

    Class attributes:
        accepts: what the loss takes from a miner: [`Pairs`][agemetric.types.Pairs],
            [`Triplets`][agemetric.types.Triplets], [`Samples`][agemetric.types.Samples], or a tuple of them
            (a loss that handles several).

    Examples:
        A subclass implements `compute` for checked, non-empty indices (here: the mean L1 distance
        of the pairs; ``embeddings`` ``(B, D)``, ``labels`` ``(B,)``, a 0-d result):

        >>> class MeanDistance(Loss):
        ...     def compute(self, embeddings, labels, indices):
        ...         return F.pair_l1_distances(embeddings, indices.first, indices.second).mean()
        >>> MeanDistance()(torch.tensor([[0.0, 0.0], [1.0, 2.0]]), torch.tensor([20.0, 30.0]))  # every pair
        tensor(3.)
    """

    accepts: ClassVar[type | tuple[type, ...]] = Pairs

    @classmethod
    def takes(cls, kind: type) -> bool:
        """Whether the loss accepts a miner's ``produces`` type."""
        return kind in (cls.accepts if isinstance(cls.accepts, tuple) else (cls.accepts,))

    def __init__(self, margin: float = 4.0):
        super().__init__()
        self.margin = check_margin(margin)

    def extra_repr(self) -> str:
        """What ``repr()`` shows inside the parentheses: the margin (subclasses add their options)."""
        return f"margin={self.margin:g}"

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, indices: Indices | tuple | None = None
    ) -> torch.Tensor:
        """Compute the loss.

        Args:
            embeddings: ``(B, D)`` float.
            labels: ``(B,)`` ages (or gender labels).
            indices: what a miner produced, of a type the loss ``accepts``; a
                pytorch-metric-learning ``indices_tuple`` (``(a1, p, a2, n)`` pairs or
                ``(anchor, positive, negative)`` triplets, from any PML miner); or ``None`` for
                every pair of the batch (every age triplet, or every sample, for losses that take
                those).

        Returns:
            A 0-d float tensor connected to ``embeddings`` (a zero when there are no pairs).

        Examples:
            >>> from agemetric.losses import RevisedContrastiveLoss
            >>> embeddings = torch.randn(8, 70, requires_grad=True)
            >>> loss = RevisedContrastiveLoss(margin=4)
            >>> loss(embeddings, torch.arange(20.0, 28.0)).backward()
        """
        who = describe(self)
        check_tensor(who, "embeddings", embeddings, 2, floating=True)
        check_tensor(who, "labels", labels, 1)
        check_rows(who, "labels", labels, embeddings.shape[0])
        if indices is None:
            indices = self.every(embeddings, labels)
        elif isinstance(indices, tuple | list):
            indices = from_indices_tuple(indices)
        check_indices(who, indices, self.accepts, embeddings.shape[0])
        if len(indices) == 0:
            return embeddings.sum() * 0.0
        out = self.compute(embeddings, labels, indices)
        if not isinstance(out, torch.Tensor) or out.ndim != 0:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise PluginError(f"{who}: compute() must return a 0-d tensor, got {shape}")
        return out

    def every(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Indices:
        """What the loss uses when called without indices: every pair of the batch (or, for a loss
        that takes no pairs, every age triplet within the margin, or every sample)."""
        accepts = self.accepts if isinstance(self.accepts, tuple) else (self.accepts,)
        if Pairs in accepts:
            return F.all_pairs(embeddings.shape[0], device=embeddings.device)
        if Triplets in accepts:
            return F.all_triplets(labels, self.margin)
        return Samples(torch.arange(embeddings.shape[0], device=embeddings.device))

    @abc.abstractmethod
    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: Indices) -> torch.Tensor:
        """Compute the loss for checked, non-empty indices."""

"""Loss: turns embeddings, labels and mined indices into one number to minimise."""

from __future__ import annotations

import abc
import warnings
from typing import ClassVar

import torch
from torch import nn

from agemetric import functional as F
from agemetric._stack import stacklevel_outside, torch_files
from agemetric.errors import PluginError
from agemetric.interfaces.checks import (
    check_finite,
    check_index_range,
    check_indices,
    check_margin,
    check_rows,
    check_tensor,
    describe,
)
from agemetric.types import Indices, Pairs, Samples, Triplets, from_indices_tuple


class Loss(nn.Module, abc.ABC):
    """A metric-learning loss over mined pairs or triplets.

    Factories registered through ``register_losses`` are called as
    ``factory(margin=..., **loss_options)``; ``margin`` is the age tolerance in years under
    which two labels count as the same (the gender task uses 0.5: exact equality).

    Class attributes:
        accepts: what the loss takes from a miner: `agemetric.types.Pairs`,
            `agemetric.types.Triplets`, `agemetric.types.Samples`, or a tuple of them
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
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        indices: Indices | tuple | None = None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        *,
        indices_tuple: Indices | tuple | None = None,
    ) -> torch.Tensor:
        """Compute the loss (called as a pytorch-metric-learning loss is).

        Args:
            embeddings: ``(B, D)`` float.
            labels: ``(B,)`` ages (or gender labels).
            indices: what a miner produced, of a type the loss ``accepts``; a
                pytorch-metric-learning ``indices_tuple`` (``(a1, p, a2, n)`` pairs or
                ``(anchor, positive, negative)`` triplets, from any PML miner); or ``None`` for
                every pair of the batch (every age triplet, or every sample, for losses that take
                those). A loss that takes pairs but not triplets compares each triplet's anchor
                with its positive and with its negative.
            ref_emb: ``(R, D)`` reference embeddings, as in PML: the pairs then join a row of
                ``embeddings`` (first) to a row of ``ref_emb`` (second), every such pair when
                ``indices`` is ``None``; a triplet's positive and negative are rows of ``ref_emb``.
            ref_labels: ``(R,)`` the references' labels (with ``ref_emb`` only).
            indices_tuple: another name for ``indices`` (PML's).

        Returns:
            A 0-d float tensor connected to ``embeddings`` (a zero when there are no pairs; a
            warning, once, when a batch of several ages had none: a miner that compares labels
            for equality finds none among unique ages).

        Examples:
            >>> from agemetric.losses import RevisedContrastiveLoss
            >>> embeddings = torch.randn(8, 70, requires_grad=True)
            >>> loss = RevisedContrastiveLoss(margin=4)
            >>> loss(embeddings, torch.arange(20.0, 28.0)).backward()
        """
        who = describe(self)
        if indices_tuple is not None:
            if indices is not None:
                raise PluginError(f"{who}: pass indices or indices_tuple, not both")
            indices = indices_tuple
        check_tensor(who, "embeddings", embeddings, 2, floating=True)
        check_tensor(who, "labels", labels, 1)
        check_rows(who, "labels", labels, embeddings.shape[0])
        check_finite(who, "labels", labels)
        labels = labels.to(embeddings.device)  # as PML does: labels may stay on the CPU
        from_pml = isinstance(indices, tuple | list)
        batch_labels = labels
        embeddings, labels, indices = self._batch(embeddings, labels, indices, ref_emb, ref_labels)
        check_indices(who, indices, self.accepts, embeddings.shape[0])
        if len(indices) == 0:
            if from_pml:
                self._warn_when_nothing_mined(batch_labels)
            return embeddings.sum() * 0.0
        out = self.compute(embeddings, labels, indices)
        if not isinstance(out, torch.Tensor) or out.ndim != 0:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise PluginError(f"{who}: compute() must return a 0-d tensor, got {shape}")
        return out

    def _batch(self, embeddings, labels, indices, ref_emb, ref_labels) -> tuple:
        """What `compute()` is given: the embeddings, labels and indices of `forward()`'s
        arguments (a PML tuple converted, triplets as pairs for a pair loss, the references
        appended, every pair when no indices were given)."""
        if isinstance(indices, tuple | list):
            indices = from_indices_tuple(indices)
        if isinstance(indices, Triplets) and not self.takes(Triplets) and self.takes(Pairs):
            rows = embeddings.shape[0] + (0 if ref_emb is None else ref_emb.shape[0])
            check_indices(describe(self), indices, Triplets, rows)
            indices = Pairs(torch.cat([indices.anchor] * 2), torch.cat([indices.positive, indices.negative]))
        if ref_emb is not None or ref_labels is not None:
            return self._with_references(embeddings, labels, indices, ref_emb, ref_labels)
        return embeddings, labels, self.every(embeddings, labels) if indices is None else indices

    def _with_references(self, embeddings, labels, indices, ref_emb, ref_labels) -> tuple:
        """The batch and the references as one batch, and ``indices`` into it (PML's ``ref_emb``)."""
        who = describe(self)
        if ref_emb is None or ref_labels is None:
            raise PluginError(f"{who}: ref_emb and ref_labels go together")
        check_tensor(who, "ref_emb", ref_emb, 2, floating=True)
        check_tensor(who, "ref_labels", ref_labels, 1)
        check_rows(who, "ref_labels", ref_labels, ref_emb.shape[0])
        check_finite(who, "ref_labels", ref_labels)
        if ref_emb.shape[1] != embeddings.shape[1]:
            raise PluginError(
                f"{who}: ref_emb must have {embeddings.shape[1]} columns like embeddings, got {ref_emb.shape[1]}"
            )
        b, r = embeddings.shape[0], ref_emb.shape[0]
        if indices is None and self.takes(Pairs):
            rows = torch.arange(b, device=embeddings.device)
            indices = Pairs(rows.repeat_interleave(r), torch.arange(r, device=embeddings.device).repeat(b))
        if not isinstance(indices, Pairs | Triplets):
            raise PluginError(
                f"{who}: ref_emb needs pairs or triplets (from a miner given the references too, such as "
                "agemetric.pml.AgeToleranceMiner)"
            )
        check_indices(who, indices, (Pairs, Triplets), max(b, r))
        if isinstance(indices, Pairs):
            check_index_range(who, "first", indices.first, b)
            check_index_range(who, "second", indices.second, r)
            indices = Pairs(indices.first, indices.second + b)
        else:
            check_index_range(who, "anchor", indices.anchor, b)
            for field in ("positive", "negative"):
                check_index_range(who, field, getattr(indices, field), r)
            indices = Triplets(indices.anchor, indices.positive + b, indices.negative + b)
        ref_labels = ref_labels.to(labels.device, labels.dtype)
        return torch.cat([embeddings, ref_emb]), torch.cat([labels, ref_labels]), indices

    def _warn_when_nothing_mined(self, labels: torch.Tensor) -> None:
        """Once per loss: a PML miner found nothing in a batch of several labels (PML's own miners
        pair equal labels, and unique float ages have none)."""
        if getattr(self, "_warned_nothing_mined", False):
            return
        distinct = labels.unique().numel()
        if distinct < 2:
            return
        self._warned_nothing_mined = True
        warnings.warn(
            f"{describe(self)}: the miner found no pair in a batch of {labels.numel()} labels with "
            f"{distinct} different values, so the loss is 0 (warned once). A miner that "
            "compares labels for equality finds none among unique float ages: mine with "
            "agemetric.pml.AgeToleranceMiner",
            stacklevel=stacklevel_outside(__file__, torch_files()),  # the line that called the loss
        )

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

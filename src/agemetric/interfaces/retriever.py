"""Retriever: a searchable gallery of embeddings with known ages."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch

from agemetric.errors import PluginError
from agemetric.functional import knn_mean_age
from agemetric.interfaces._checks import check_rows, check_tensor, describe


class Retriever(abc.ABC):
    """Stores gallery embeddings with their ages and predicts a query's age from neighbours.

    Factories registered through ``register_retrievers`` are called as
    ``factory(k=..., **retriever_options)``.

    Subclasses implement :meth:`_build` (index the gallery) and :meth:`_search`; the base
    class checks inputs, removes a query from its own neighbours, averages ages, and saves
    the gallery (``state_dict``) so the index can be rebuilt on load.

    Class attributes:
        requires_loss: the loss plugin this retriever works with (e.g. a comparator trained by
            that loss; read in :meth:`bind`), or ``None`` for any. The estimator refuses other losses.

    Args:
        k: how many neighbours vote (paper: M = 20).
    """

    requires_loss: ClassVar[str | None] = None

    def __init__(self, k: int = 20):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.embeddings: torch.Tensor | None = None
        self.ages: torch.Tensor | None = None
        self.genders: torch.Tensor | None = None

    def fit(self, embeddings: torch.Tensor, ages: torch.Tensor, genders: torch.Tensor | None = None) -> Retriever:
        """Index a gallery.

        Args:
            embeddings: ``(N, D)`` float.
            ages: ``(N,)`` ages.
            genders: ``(N,)`` int64 gender labels (-1 unknown), optional.

        Returns:
            ``self``.
        """
        who = describe(self)
        check_tensor(who, "embeddings", embeddings, 2, floating=True)
        check_tensor(who, "ages", ages, 1)
        check_rows(who, "ages", ages, embeddings.shape[0])
        if genders is not None:
            check_rows(who, "genders", genders, embeddings.shape[0])
        self.embeddings = embeddings.detach().float().cpu().contiguous()
        self.ages = ages.detach().float().cpu()
        self.genders = None if genders is None else genders.detach().long().cpu()
        self._build(self.embeddings)
        return self

    def search(
        self, queries: torch.Tensor, k: int | None = None, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` nearest gallery items of each query, nearest first.

        Args:
            queries: ``(M, D)`` float.
            k: neighbours to return (default ``self.k``); at most the gallery size
                (minus one when excluding).
            exclude: ``(M,)`` int64 gallery index each query must not return (itself, when
                the queries are gallery items), or ``None``.

        Returns:
            ``(distances (M, k) float32, indices (M, k) int64)``.
        """
        who = self.check_queries(queries, "search")
        k = self.k if k is None else int(k)
        n = self.embeddings.shape[0] - (exclude is not None)
        k = min(k, n)
        if k < 1:
            raise PluginError(f"{who}: the gallery has too few items ({n}) to search")
        queries = queries.detach().float().cpu().contiguous()
        if exclude is None:
            return self._search(queries, k)
        check_rows(who, "exclude", exclude, queries.shape[0])
        dist, idx = self._search(queries, k + 1)  # (M, k+1)
        drop = idx == exclude.view(-1, 1)  # (M, k+1)
        drop[:, -1] |= ~drop.any(dim=1)  # rows without self: drop the farthest instead
        keep = ~drop
        m = queries.shape[0]
        return dist[keep].view(m, k), idx[keep].view(m, k)

    def check_queries(self, queries: torch.Tensor, method: str) -> str:
        """Raise :class:`PluginError` unless the gallery is fitted and ``queries`` is ``(M, D)`` float
        with the gallery's ``D``; returns the name messages use (for subclasses' own methods).
        """
        who = describe(self)
        if self.embeddings is None:
            raise PluginError(f"{who}: call fit() before {method}()")
        check_tensor(who, "queries", queries, 2, floating=True)
        if queries.shape[1] != self.embeddings.shape[1]:
            raise PluginError(
                f"{who}: queries must have {self.embeddings.shape[1]} columns like the gallery, "
                f"got {tuple(queries.shape)}"
            )
        return who

    def predict(self, queries: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted ages ``(M,)``: the mean age of the ``k`` nearest gallery items."""
        _, idx = self.search(queries, exclude=exclude)  # (M, k)
        return knn_mean_age(self.ages[idx])

    def predict_gender(self, queries: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Majority gender ``(M,)`` of the ``k`` nearest gallery items with a known gender."""
        if self.genders is None:
            raise PluginError(f"{describe(self)}: the gallery has no gender labels")
        _, idx = self.search(queries, exclude=exclude)  # (M, k)
        g = self.genders[idx]  # (M, k), -1 unknown
        votes = torch.stack([(g == c).sum(1) for c in (0, 1)], dim=1)  # (M, 2)
        return votes.argmax(dim=1)

    def bind(self, estimator) -> None:  # noqa: B027 - optional, most retrievers need nothing
        """Called once by the :class:`~agemetric.estimator.AgeEstimator` that owns this retriever.

        The default does nothing. A retriever that needs more than the gallery, e.g. a trained
        comparator that lives in the loss (``estimator.loss``), keeps a reference here.
        """

    def state_dict(self) -> dict:
        """The gallery, enough to rebuild the index with :meth:`load_state_dict`."""
        return {"k": self.k, "embeddings": self.embeddings, "ages": self.ages, "genders": self.genders}

    def load_state_dict(self, state: dict) -> Retriever:
        self.k = int(state["k"])
        return self.fit(state["embeddings"], state["ages"], state["genders"])

    def __len__(self) -> int:
        return 0 if self.embeddings is None else int(self.embeddings.shape[0])

    @abc.abstractmethod
    def _build(self, embeddings: torch.Tensor) -> None:
        """Index the checked ``(N, D)`` float32 CPU gallery."""

    @abc.abstractmethod
    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(distances (M, k), indices (M, k) int64)``, nearest first."""

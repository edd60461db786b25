"""Retriever: a searchable gallery of embeddings with known ages."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import ClassVar

import torch

from agemetric.errors import PluginError
from agemetric.functional import knn_mean_age
from agemetric.interfaces.checks import check_rows, check_tensor, describe, positive_int


class Retriever(abc.ABC):
    """Stores gallery embeddings with their ages and predicts a query's age from neighbours.

    Factories registered through ``register_retrievers`` are called as
    ``factory(k=..., **retriever_options)``.

    Subclasses implement `_build()` (index the gallery) and `_search()`; the base
    class checks inputs, removes a query from its own neighbours, averages ages, and saves
    the gallery (``state_dict``) so the index can be rebuilt on load.

    Queries are searched in blocks of at most ``chunk_size`` (including `predict()` and
    `predict_gender()`, which keep only each block's ``(m,)`` answers), so the memory a
    search needs beyond the gallery does not grow with the number of queries past one block.

    A retriever that reduces the gallery (e.g. ``l1-knn`` with ``references``) stores
    ``weights``: how many training faces each gallery item stands for. The estimates are then
    weighted: the weighted mean age and weighted gender votes of the ``k`` nearest items.

    Class attributes:
        requires_loss: the loss plugin this retriever works with (e.g. a comparator trained by
            that loss; read in `bind()`), or ``None`` for any. The estimator refuses other losses.

    Args:
        k: how many neighbours vote (paper: M = 20).
        chunk_size: the most queries searched at once.

    Examples:
        A concrete retriever, `agemetric.retrievers.L1KNN`: `fit()` takes the gallery's ``(N, D)``
        embeddings and ``(N,)`` ages, `predict()` gives ``(M,)`` ages for ``(M, D)`` queries and
        `search()` the ``(M, k)`` distances and indices of their neighbours:

        >>> from agemetric.retrievers import L1KNN
        >>> gallery, ages = torch.tensor([[0.0], [1.0], [5.0], [6.0]]), torch.tensor([20.0, 22.0, 60.0, 64.0])
        >>> knn = L1KNN(k=2).fit(gallery, ages)
        >>> knn.predict(torch.tensor([[0.5], [5.5]]))
        tensor([21., 62.])
        >>> knn.search(torch.tensor([[0.5], [5.5]]))[1].shape
        torch.Size([2, 2])
    """

    requires_loss: ClassVar[str | None] = None

    def __init__(self, k: int = 20, chunk_size: int = 16384):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.chunk_size = positive_int("chunk_size", chunk_size)
        self.embeddings: torch.Tensor | None = None
        self.ages: torch.Tensor | None = None
        self.genders: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None  # (N,) float32, or None: one face each

    def fit(self, embeddings: torch.Tensor, ages: torch.Tensor, genders: torch.Tensor | None = None) -> Retriever:
        """Index a gallery.

        ``embeddings`` that are already float32, contiguous and on the CPU are kept without a
        copy: do not modify them in place afterwards.

        Args:
            embeddings: ``(N, D)`` float.
            ages: ``(N,)`` ages.
            genders: ``(N,)`` int64 gender labels (-1 unknown), optional.

        Returns:
            ``self``.
        """
        self.check_gallery(embeddings, ages, genders)
        return self.set_gallery(embeddings, ages, genders)

    def check_gallery(self, embeddings: torch.Tensor, ages: torch.Tensor, genders: torch.Tensor | None) -> None:
        """Raise `PluginError` unless the arguments of `fit()` fit together."""
        who = describe(self)
        check_tensor(who, "embeddings", embeddings, 2, floating=True)
        check_tensor(who, "ages", ages, 1)
        check_rows(who, "ages", ages, embeddings.shape[0])
        if genders is not None:
            check_rows(who, "genders", genders, embeddings.shape[0])

    def set_gallery(
        self,
        embeddings: torch.Tensor,
        ages: torch.Tensor,
        genders: torch.Tensor | None,
        weights: torch.Tensor | None = None,
    ) -> Retriever:
        """Store a checked gallery as it is (no selection) and index it; returns ``self``."""
        self.embeddings = embeddings.detach().float().cpu().contiguous()
        self.ages = ages.detach().float().cpu()
        self.genders = None if genders is None else genders.detach().long().cpu()
        self.weights = None if weights is None else weights.detach().float().cpu()
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
        if exclude is not None:
            check_rows(who, "exclude", exclude, queries.shape[0])
        queries = queries.detach().float().cpu().contiguous()
        blocks = [self._search_block(q, k, e) for q, e in self._blocks(queries, exclude)]
        if len(blocks) == 1:  # the usual case: no copy
            return blocks[0]
        return torch.cat([d for d, _ in blocks]), torch.cat([i for _, i in blocks])

    def _blocks(
        self, queries: torch.Tensor, exclude: torch.Tensor | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """``(queries, exclude)`` in blocks of at most ``chunk_size`` rows; one empty block when there are none."""
        for start in range(0, max(queries.shape[0], 1), self.chunk_size):
            stop = start + self.chunk_size
            yield queries[start:stop], None if exclude is None else exclude[start:stop]

    def _search_block(
        self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`search()` for one block of checked float32 CPU queries (``k`` already bounded)."""
        if exclude is None:
            return self._search(queries, k)
        dist, idx = self._search(queries, k + 1)  # (m, k+1)
        drop = idx == exclude.view(-1, 1)  # (m, k+1)
        drop[:, -1] |= ~drop.any(dim=1)  # rows without self: drop the farthest instead
        keep = ~drop
        m = queries.shape[0]
        return dist[keep].view(m, k), idx[keep].view(m, k)

    def _neighbour_blocks(
        self, queries: torch.Tensor, exclude: torch.Tensor | None, method: str
    ) -> Iterator[torch.Tensor]:
        """Indices ``(m, k)`` of the ``k`` nearest gallery items, one block of queries at a time."""
        who = self.check_queries(queries, method)
        if exclude is not None:
            check_rows(who, "exclude", exclude, queries.shape[0])
        for q, e in self._blocks(queries, exclude):
            yield self.search(q, exclude=e)[1]

    def _neighbour_weights(self, idx: torch.Tensor) -> torch.Tensor | None:
        """``(m, k)`` weights of the neighbours ``idx``, or ``None`` when every item counts once."""
        return None if self.weights is None else self.weights[idx]

    def check_queries(self, queries: torch.Tensor, method: str) -> str:
        """Raise `PluginError` unless the gallery is fitted and ``queries`` is ``(M, D)`` float
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
        """Predicted ages ``(M,)``: the mean age of the ``k`` nearest gallery items (weighted, see above)."""
        blocks = self._neighbour_blocks(queries, exclude, "predict")  # (m, k) each
        return torch.cat([knn_mean_age(self.ages[idx], self._neighbour_weights(idx)) for idx in blocks])

    def predict_gender(self, queries: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Majority gender ``(M,)`` of the ``k`` nearest gallery items with a known gender (weighted votes)."""
        if self.genders is None:
            raise PluginError(f"{describe(self)}: the gallery has no gender labels")
        out = []
        for idx in self._neighbour_blocks(queries, exclude, "predict_gender"):  # (m, k)
            g = self.genders[idx]  # (m, k), -1 unknown
            w = self._neighbour_weights(idx)
            votes = [(g == c).float() if w is None else (g == c) * w for c in (0, 1)]  # (m, k) each
            out.append(torch.stack([v.sum(1) for v in votes], dim=1).argmax(dim=1))  # (m,)
        return torch.cat(out)

    def bind(self, estimator) -> None:  # noqa: B027 - optional, most retrievers need nothing
        """Called once by the [`AgeEstimator`][agemetric.estimator.AgeEstimator] that owns this retriever.

        The default does nothing. A retriever that needs more than the gallery, e.g. a trained
        comparator that lives in the loss (``estimator.loss``), keeps a reference here.
        """

    def state_dict(self) -> dict:
        """The gallery, enough to rebuild the index with `load_state_dict()`."""
        return {
            "k": self.k,
            "embeddings": self.embeddings,
            "ages": self.ages,
            "genders": self.genders,
            "weights": self.weights,
        }

    def load_state_dict(self, state: dict) -> Retriever:
        """Restore a saved gallery as it was saved (a reduced gallery is not reduced again)."""
        self.k = int(state["k"])
        self.check_gallery(state["embeddings"], state["ages"], state["genders"])
        return self.set_gallery(state["embeddings"], state["ages"], state["genders"], state.get("weights"))

    def __len__(self) -> int:
        return 0 if self.embeddings is None else int(self.embeddings.shape[0])

    @abc.abstractmethod
    def _build(self, embeddings: torch.Tensor) -> None:
        """Index the checked ``(N, D)`` float32 CPU gallery."""

    @abc.abstractmethod
    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(distances (M, k), indices (M, k) int64)``, nearest first, for at most ``chunk_size`` queries."""

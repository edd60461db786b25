"""The paper's estimator: the mean age of the k nearest gallery faces under L1 distance."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from agemetric._stack import AGEMETRIC_FILES, stacklevel_outside
from agemetric.adaptation import Adaptation, GalleryArrays, adapt
from agemetric.hookspecs import hookimpl
from agemetric.interfaces import Retriever
from agemetric.interfaces.checks import describe
from agemetric.interfaces.gallery import Gallery, IndexOptions


class L1KNN(Retriever):
    """L1 k-nearest neighbours with faiss; predicts the mean age of the k nearest gallery faces
    (paper: k = M = 20), never counting a query as its own neighbour.

    The search is its `agemetric.retrievers.Gallery`'s, made from the arguments below:
    exact (faiss ``knn`` in blocks of queries against shards of the gallery) or approximate
    (HNSW), over every training face or over per-age reference faces, each weighted by the
    faces it stands for (the estimate is then the weighted mean age).

    Args:
        k: how many neighbours vote (paper: M = 20).
        index: ``"flat"`` (exact) or ``"hnsw"`` (approximate).
        chunk_size: the most queries searched at once.
        shard_size: gallery rows per exact-search pass (``flat``).
        hnsw_m: HNSW graph degree (faiss ``M``).
        ef_search: HNSW search list length (faiss ``efSearch``).
        ef_construction: HNSW build list length (faiss ``efConstruction``).
        references: ``"all"`` or ``"per-age"``.
        per_age: references per integer age (``references="per-age"``).

    Examples:
        >>> r = L1KNN(k=2).fit(torch.tensor([[0.0], [1.0], [10.0]]), torch.tensor([20.0, 30.0, 60.0]))
        >>> r.predict(torch.tensor([[0.2]]))
        tensor([25.])
    """

    def __init__(
        self,
        k: int = 20,
        index: str = "flat",
        chunk_size: int = 16384,
        shard_size: int = 32768,
        hnsw_m: int = 32,
        ef_search: int = 64,
        ef_construction: int = 40,
        references: str = "all",
        per_age: int = 10,
    ):
        options = IndexOptions(index, hnsw_m, ef_search, ef_construction, references, per_age)
        super().__init__(k, Gallery(options, chunk_size, shard_size))

    @property
    def options(self) -> IndexOptions:
        """The gallery's index options."""
        return self.gallery.options

    def fit(self, embeddings: torch.Tensor, ages: torch.Tensor, genders: torch.Tensor | None = None) -> L1KNN:
        """As `Retriever.fit()`; a gallery of no more items than ``k`` is warned about (every
        estimate would be its mean age)."""
        super().fit(embeddings, ages, genders)
        if 0 < len(self.gallery) <= self.k:
            warnings.warn(
                f"{describe(self)}: k = {self.k} is not less than the gallery's {len(self.gallery)} items, so every "
                "estimate is the mean age of the whole gallery; fit more faces, or choose a smaller k",
                stacklevel=stacklevel_outside(AGEMETRIC_FILES),
            )
        return self

    def predict(self, queries: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted ages ``(M,)``: the mean age of the ``k`` nearest gallery faces (weighted by
        the faces each reference stands for, with ``references="per-age"``)."""
        return self.gallery.mean_age(queries, self.k, exclude)

    def adapt(
        self,
        embeddings: torch.Tensor,
        ages: torch.Tensor,
        genders: torch.Tensor | None = None,
        intervals: dict | None = None,
        seed: int = 0,
    ) -> Adaptation:
        """Combine the user's labelled faces with the gallery as `agemetric.adaptation.choose()`
        decides from them (their faces alone, both with a weight, or the gallery kept; ``k``):
        the gallery and ``k`` change in place.

        Args:
            embeddings: ``(n, D)`` the user's faces' embeddings.
            ages: ``(n,)`` their true ages.
            genders: ``(n,)`` int64 (-1 unknown), or ``None``.
            intervals: the model's interval fields (their level and form are kept), or ``None``.
            seed: how faces are dealt into cross-validation folds.
        """
        g = self.gallery
        train = GalleryArrays(*(None if t is None else t.numpy() for t in (g.embeddings, g.ages, g.genders, g.weights)))
        user = GalleryArrays(embeddings.numpy(), ages.numpy(), None if genders is None else genders.numpy())
        report, new = adapt(train, user, self.k, intervals, seed)
        arrays = (new.embeddings, new.ages, new.genders, new.weights)
        g.set(*(None if a is None else torch.from_numpy(np.asarray(a)) for a in arrays))
        self.k = report.chosen.k
        self.on_gallery()
        return report


@hookimpl
def register_retrievers(register):
    register("l1-knn", L1KNN)

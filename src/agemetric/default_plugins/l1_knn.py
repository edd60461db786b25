"""The paper's estimator: exact L1 k-nearest neighbours (faiss), mean age of the k nearest."""

from __future__ import annotations

import torch

from agemetric.hookspecs import hookimpl
from agemetric.interfaces import Retriever


class L1KNN(Retriever):
    """Exact L1 search with faiss ``IndexFlat(D, METRIC_L1)``; predicts the mean age of the k
    nearest gallery faces (paper: k = M = 20), never counting a query as its own neighbour.

    Example:
        >>> r = L1KNN(k=2).fit(torch.tensor([[0.0], [1.0], [10.0]]), torch.tensor([20.0, 30.0, 60.0]))
        >>> r.predict(torch.tensor([[0.2]]))
        tensor([25.])
    """

    def _build(self, embeddings: torch.Tensor) -> None:
        import faiss  # heavy: imported on first use

        self._index = faiss.IndexFlat(embeddings.shape[1], faiss.METRIC_L1)
        self._index.add(embeddings.numpy())

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        dist, idx = self._index.search(queries.numpy(), k)  # (M, k) each
        return torch.from_numpy(dist), torch.from_numpy(idx).long()


@hookimpl
def register_retrievers(register):
    register("l1-knn", L1KNN)

"""The paper's estimator: L1 k-nearest neighbours (faiss), mean age of the k nearest.

Exact search by default, in blocks of queries against shards of the gallery; an approximate
HNSW index and a reduced gallery of per-age references as options (docs/benchmarks.md, "Large
galleries", has the measurements behind the defaults).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from agemetric.errors import PluginError
from agemetric.hookspecs import hookimpl
from agemetric.interfaces import Retriever
from agemetric.interfaces.checks import describe, positive_int

INDEX_KINDS = ("flat", "hnsw")
REFERENCE_KINDS = ("all", "per-age")


@dataclasses.dataclass(frozen=True)
class IndexOptions:
    """What the index is: saved with the gallery, so a loaded retriever rebuilds the same kind.

    Attributes:
        index: ``"flat"`` (exact) or ``"hnsw"`` (approximate, faiss ``IndexHNSWFlat``).
        hnsw_m: HNSW graph degree (faiss ``M``).
        ef_search: HNSW candidate list length at search time (faiss ``efSearch``; at least ``k`` is used).
        ef_construction: HNSW candidate list length while building (faiss ``efConstruction``).
        references: ``"all"`` (every gallery face) or ``"per-age"`` (``per_age`` references per integer age).
        per_age: references per integer age with ``references="per-age"``.

    Examples:
        `L1KNN` builds them from its arguments; invalid choices are refused:

        >>> L1KNN(k=5, index="hnsw", ef_search=128).options
        IndexOptions(index='hnsw', hnsw_m=32, ef_search=128, ef_construction=40, references='all', per_age=10)
        >>> IndexOptions(index="ivf")
        Traceback (most recent call last):
        ValueError: index must be 'flat' (exact) or 'hnsw' (approximate), got 'ivf'
    """

    index: str = "flat"
    hnsw_m: int = 32
    ef_search: int = 64
    ef_construction: int = 40
    references: str = "all"
    per_age: int = 10

    def __post_init__(self):
        if self.index not in INDEX_KINDS:
            raise ValueError(f"index must be 'flat' (exact) or 'hnsw' (approximate), got {self.index!r}")
        if self.references not in REFERENCE_KINDS:
            raise ValueError(f"references must be 'all' or 'per-age', got {self.references!r}")
        for name in ("hnsw_m", "ef_search", "ef_construction", "per_age"):
            object.__setattr__(self, name, positive_int(name, getattr(self, name)))


class L1KNN(Retriever):
    """L1 k-nearest neighbours with faiss; predicts the mean age of the k nearest gallery faces
    (paper: k = M = 20), never counting a query as its own neighbour.

    **Exact search** (``index="flat"``, the default) runs `faiss.knn()` with
    ``METRIC_L1`` directly on the gallery tensor (no copy of the gallery in a faiss index), for
    blocks of at most ``chunk_size`` queries against shards of at most ``shard_size`` gallery
    rows, merged into the k nearest by `faiss.ResultHeap`. A shard that fits in the CPU
    cache is reused by a whole block of queries. The memory beyond the gallery is about one
    block's results; the answers are those of ``IndexFlat(D, METRIC_L1)`` (tied distances may
    come in another order).

    **Approximate search** (``index="hnsw"``): faiss ``IndexHNSWFlat(D, hnsw_m, METRIC_L1)``
    with ``ef_construction`` and ``ef_search``. The gallery tensor then shares the index's
    storage (one copy of the vectors, kept alive by the tensor).

    **Reference selection** (``references="per-age"``): instead of every training face, the
    gallery keeps at most ``per_age`` references per integer age (``floor(age)``): faiss
    k-means (L2, seed 0) on that age's embeddings, then, for each centroid, the face nearest to
    it in L1. Real faces rather than centroids, so the references keep their true ages and
    gender labels (the paper's future work asks for reference *images*). Each reference carries
    a weight: how many faces of its age are nearer (L1) to it than to the age's other
    references; the estimate is the weighted mean age of the ``k`` nearest references (weighted
    gender votes likewise). The gallery is then the references: `search()`'s indices and
    ``exclude`` refer to them. A saved retriever keeps only the references and their weights.

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
        super().__init__(k, chunk_size)
        self.shard_size = positive_int("shard_size", shard_size)
        self.options = IndexOptions(index, hnsw_m, ef_search, ef_construction, references, per_age)
        self._hnsw = None  # the faiss index when options.index == "hnsw"

    def fit(self, embeddings: torch.Tensor, ages: torch.Tensor, genders: torch.Tensor | None = None) -> L1KNN:
        """Index a gallery, reduced to per-age references first when ``references="per-age"``."""
        if self.options.references == "all":
            return super().fit(embeddings, ages, genders)
        self.check_gallery(embeddings, ages, genders)
        embeddings = embeddings.detach().float().cpu().contiguous()
        keep, weights = per_age_references(embeddings, ages.detach().float().cpu(), self.options.per_age)
        genders = None if genders is None else genders.detach().cpu()[keep]
        return self.set_gallery(embeddings[keep], ages.detach().cpu()[keep], genders, weights)

    def _build(self, embeddings: torch.Tensor) -> None:
        self._hnsw = None
        if self.options.index == "flat" or embeddings.shape[0] == 0:
            return  # exact search reads self.embeddings directly
        import faiss  # heavy: imported on first use

        index = faiss.IndexHNSWFlat(embeddings.shape[1], self.options.hnsw_m, faiss.METRIC_L1)
        index.hnsw.efConstruction = self.options.ef_construction
        index.add(embeddings.numpy())
        self._hnsw = index
        self.embeddings = stored_vectors(index)  # the same values, without a second copy

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        import faiss

        if self._hnsw is not None:
            params = faiss.SearchParametersHNSW(efSearch=max(self.options.ef_search, k))
            dist, idx = self._hnsw.search(queries.numpy(), k, params=params)  # (m, k) each
            if (idx < 0).any():
                raise PluginError(f"{describe(self)}: HNSW found fewer than {k} neighbours; raise ef_search")
            return torch.from_numpy(dist), torch.from_numpy(idx)
        gallery, q = self.embeddings.numpy(), queries.numpy()
        if gallery.shape[0] <= self.shard_size:  # one shard: exactly IndexFlat's search, without its copy
            dist, idx = faiss.knn(q, gallery, k, metric=faiss.METRIC_L1)
            return torch.from_numpy(dist), torch.from_numpy(idx)
        heap = faiss.ResultHeap(q.shape[0], k, keep_max=False)  # the k smallest distances over all shards
        for start in range(0, gallery.shape[0], self.shard_size):
            shard = gallery[start : start + self.shard_size]
            dist, idx = faiss.knn(q, shard, min(k, shard.shape[0]), metric=faiss.METRIC_L1)  # (m, k') each
            heap.add_result(dist, idx + start)
        heap.finalize()  # nearest first
        return torch.from_numpy(heap.D), torch.from_numpy(heap.I)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "options": dataclasses.asdict(self.options)}

    def load_state_dict(self, state: dict) -> L1KNN:
        """Restore a saved gallery with the saved index options (older checkpoints: the defaults)."""
        self.options = IndexOptions(**state.get("options", {}))
        return super().load_state_dict(state)


def per_age_references(embeddings: torch.Tensor, ages: torch.Tensor, per_age: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``per_age`` reference faces per integer age, with how many faces each stands for.

    Per integer age (``floor``): faiss k-means (L2, seed 0) with ``per_age`` centroids, then the
    face nearest (L1) to each centroid; an age with at most ``per_age`` faces keeps them all.
    Every face of the age is then counted for its nearest (L1) reference. faiss runs on one
    thread here: the problems are small, and thousands of short multi-threaded steps were 200
    times slower on a busy 2-core machine (39.8 s against 0.2 s for 19,005 faces).

    Args:
        embeddings: ``(N, D)`` float32 CPU.
        ages: ``(N,)`` ages.
        per_age: the most references per integer age.

    Returns:
        ``(indices (R,) int64`` into the gallery, grouped by age (youngest first), ascending within an
        age; ``weights (R,) float32`` >= 1, summing to ``N)``.
    """
    import faiss

    years = ages.floor().long()  # (N,)
    keep, weights = [torch.empty(0, dtype=torch.int64)], [torch.empty(0)]
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for year in torch.unique(years).tolist():  # one small k-means per distinct age
            idx = torch.nonzero(years == year).flatten()  # (n_a,) ascending
            chosen, counts = _references_of_one_age(embeddings[idx].numpy(), per_age)
            keep.append(idx[chosen])
            weights.append(counts)
    finally:
        faiss.omp_set_num_threads(threads)
    return torch.cat(keep), torch.cat(weights)


def _references_of_one_age(group: np.ndarray, per_age: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``(r,)`` of ``group`` ``(n, D)`` chosen as references (ascending) and their weights ``(r,)``."""
    import faiss

    if len(group) <= per_age:
        return torch.arange(len(group)), torch.ones(len(group))
    kmeans = faiss.Kmeans(group.shape[1], per_age, niter=20, seed=0, min_points_per_centroid=1)
    kmeans.train(group)
    _, nearest = faiss.knn(kmeans.centroids, group, 1, metric=faiss.METRIC_L1)  # (per_age, 1)
    chosen = np.unique(nearest[:, 0])  # (r,) sorted, duplicates merged
    _, owner = faiss.knn(group, np.ascontiguousarray(group[chosen]), 1, metric=faiss.METRIC_L1)  # (n, 1)
    counts = np.bincount(owner[:, 0], minlength=len(chosen))  # (r,)
    used = counts > 0  # a reference identical to another may win no face
    return torch.from_numpy(chosen[used]), torch.from_numpy(counts[used]).float()


class _Owner:
    """Lends an array's buffer to numpy while holding the object that owns the memory."""

    def __init__(self, array: np.ndarray, owner: object):
        self.__array_interface__ = array.__array_interface__
        self.owner = owner


def stored_vectors(index) -> torch.Tensor:
    """The ``(N, D)`` float32 vectors of a faiss ``IndexHNSWFlat`` as a tensor sharing the index's
    storage (no copy); the tensor keeps the index alive. Vectors must not be added afterwards.
    """
    import faiss

    flat = faiss.downcast_index(index.storage)
    array = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)
    return torch.from_numpy(np.asarray(_Owner(array, index)))


@hookimpl
def register_retrievers(register):
    register("l1-knn", L1KNN)

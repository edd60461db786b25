"""The gallery: training-face embeddings with their ages, searched by L1 distance (faiss).

A `agemetric.interfaces.Retriever` composes a `Gallery` for its neighbours; the
paper's estimate, `agemetric.retrievers.L1KNN`, is the mean age of the ``k`` nearest.

Exact search by default, in blocks of queries against shards of the gallery; an approximate
HNSW index and a reduced gallery of per-age references as options (docs/benchmarks.md, "Large
galleries", has the measurements behind the defaults).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Iterator

import numpy as np
import torch

from agemetric.errors import PluginError
from agemetric.functional import knn_mean_age
from agemetric.interfaces.checks import check_finite, check_rows, check_tensor, describe, positive_int

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
        `L1KNN(index="hnsw", ef_search=128)` builds them from its arguments; invalid choices are refused:

        >>> IndexOptions(index="hnsw", ef_search=128)
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


class Gallery:
    """Gallery embeddings ``(N, D)`` with their ages (and optionally genders and weights), searched
    by L1 distance, never returning a query as its own neighbour when told which item it is.

    **Exact search** (``index="flat"``, the default) runs `faiss.knn()` with ``METRIC_L1``
    directly on the gallery tensor (no copy in a faiss index), for blocks of at most
    ``chunk_size`` queries against shards of at most ``shard_size`` gallery rows, merged into the
    k nearest by `faiss.ResultHeap`. A shard that fits in the CPU cache is reused by a whole
    block of queries. The memory beyond the gallery is about one block's results; the answers are
    those of ``IndexFlat(D, METRIC_L1)`` (tied distances may come in another order).

    **Approximate search** (``index="hnsw"``): faiss ``IndexHNSWFlat(D, hnsw_m, METRIC_L1)`` with
    ``ef_construction`` and ``ef_search``. The gallery tensor then shares the index's storage
    (one copy of the vectors, kept alive by the tensor).

    **Reference selection** (``references="per-age"``): instead of every training face, the
    gallery keeps at most ``per_age`` references per integer age (``floor(age)``): faiss k-means
    (L2, seed 0) on that age's embeddings, then, for each centroid, the face nearest to it in L1.
    Real faces rather than centroids, so the references keep their true ages and gender labels.
    Each reference carries a weight: how many faces of its age are nearer (L1) to it than to the
    age's other references; mean ages and gender votes are then weighted. `search()`'s indices
    and ``exclude`` refer to the references.

    Args:
        options: the index kind and reference selection (saved with the gallery).
        chunk_size: the most queries searched at once.
        shard_size: gallery rows per exact-search pass (``flat``).

    Examples:
        >>> g = Gallery().fit(torch.tensor([[0.0], [1.0], [10.0]]), torch.tensor([20.0, 30.0, 60.0]))
        >>> g.search(torch.tensor([[0.2]]), k=2)
        (tensor([[0.2000, 0.8000]]), tensor([[0, 1]]))
        >>> g.mean_age(torch.tensor([[0.2]]), k=2)
        tensor([25.])
    """

    def __init__(self, options: IndexOptions | None = None, chunk_size: int = 16384, shard_size: int = 32768):
        self.options = options or IndexOptions()
        self.chunk_size = positive_int("chunk_size", chunk_size)
        self.shard_size = positive_int("shard_size", shard_size)
        self.owner = None  # the retriever that composes this gallery: errors name it
        self.embeddings: torch.Tensor | None = None
        self.ages: torch.Tensor | None = None
        self.genders: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None  # (N,) float32, or None: one face each
        self._hnsw = None  # the faiss index when options.index == "hnsw"
        self._last: tuple | None = None  # the last search of over_neighbours(), with what it searched

    @property
    def who(self) -> str:
        return "gallery" if self.owner is None else describe(self.owner)

    def fit(self, embeddings: torch.Tensor, ages: torch.Tensor, genders: torch.Tensor | None = None) -> Gallery:
        """Check and store a gallery (reduced to per-age references first when
        ``references="per-age"``) and index it; returns ``self``.

        ``embeddings`` that are already float32, contiguous and on the CPU are kept without a
        copy: do not modify them in place afterwards.

        Args:
            embeddings: ``(N, D)`` float.
            ages: ``(N,)`` ages.
            genders: ``(N,)`` int64 gender labels (-1 unknown), optional.
        """
        self.check(embeddings, ages, genders)
        if self.options.references == "all":
            return self.set(embeddings, ages, genders)
        embeddings = embeddings.detach().float().cpu().contiguous()
        keep, weights = per_age_references(embeddings, ages.detach().float().cpu(), self.options.per_age)
        genders = None if genders is None else genders.detach().cpu()[keep]
        return self.set(embeddings[keep], ages.detach().cpu()[keep], genders, weights)

    def check(self, embeddings: torch.Tensor, ages: torch.Tensor, genders: torch.Tensor | None) -> None:
        """Raise `PluginError` unless the arguments of `fit()` fit together."""
        check_tensor(self.who, "embeddings", embeddings, 2, floating=True)
        check_tensor(self.who, "ages", ages, 1)
        check_rows(self.who, "ages", ages, embeddings.shape[0])
        check_finite(self.who, "the gallery's ages", ages)
        check_finite(self.who, "the gallery's embeddings", embeddings)
        if genders is not None:
            check_rows(self.who, "genders", genders, embeddings.shape[0])

    def set(
        self,
        embeddings: torch.Tensor,
        ages: torch.Tensor,
        genders: torch.Tensor | None,
        weights: torch.Tensor | None = None,
    ) -> Gallery:
        """Store a checked gallery as it is (no selection) and index it; returns ``self``."""
        self.embeddings = embeddings.detach().float().cpu().contiguous()
        self.ages = ages.detach().float().cpu()
        self.genders = None if genders is None else genders.detach().long().cpu()
        self.weights = None if weights is None else weights.detach().float().cpu()
        self._build()
        return self

    def __len__(self) -> int:
        return 0 if self.embeddings is None else int(self.embeddings.shape[0])

    # -- search ----------------------------------------------------------------------------
    def search(
        self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` nearest gallery items of each query, nearest first.

        Args:
            queries: ``(M, D)`` float.
            k: neighbours to return; at most the gallery size (minus one when excluding).
            exclude: ``(M,)`` int64 gallery index each query must not return (itself, when the
                queries are gallery items), or ``None``.

        Returns:
            ``(distances (M, k) float32, indices (M, k) int64)``.
        """
        self.check_queries(queries, "search")
        n = self.embeddings.shape[0] - (exclude is not None)
        k = min(int(k), n)
        if k < 1:
            raise PluginError(f"{self.who}: the gallery has too few items ({n}) to search")
        if exclude is not None:
            check_rows(self.who, "exclude", exclude, queries.shape[0])
        queries = queries.detach().float().cpu().contiguous()
        blocks = [self._search_block(q, k, e) for q, e in self._blocks(queries, exclude)]
        if len(blocks) == 1:  # the usual case: no copy
            return blocks[0]
        return torch.cat([d for d, _ in blocks]), torch.cat([i for _, i in blocks])

    def neighbours(self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """Indices ``(m, k)`` of the ``k`` nearest gallery items, one block of at most
        ``chunk_size`` queries at a time (so that memory does not grow with the queries)."""
        self.check_queries(queries, "search")
        if exclude is not None:
            check_rows(self.who, "exclude", exclude, queries.shape[0])
        for q, e in self._blocks(queries, exclude):
            yield self.search(q, k, exclude=e)[1]

    def mean_age(self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """``(M,)``: the mean age of each query's ``k`` nearest items (weighted by ``weights``)."""
        return self.over_neighbours(knn_mean_age, queries, k, exclude)

    def over_neighbours(
        self, statistic, queries: torch.Tensor, k: int, exclude: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(M,)``: ``statistic(ages (m, k), weights (m, k) or None) -> (m,)`` of each query's
        ``k`` nearest items, block by block (e.g. `agemetric.functional.knn_mean_age`)."""
        return torch.cat(
            [statistic(self.ages[idx], self._weights(idx)) for idx in self._neighbours(queries, k, exclude)]
        )

    def _neighbours(self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None) -> list[torch.Tensor]:
        """`neighbours()` as a list, remembered for the next call with the same ``queries`` tensor
        (unchanged since), ``k``, ``exclude`` and gallery: an estimate asks the mean, the spread and
        the share under a threshold of the same neighbours, and searching is most of their cost."""
        tensors = (queries, self.embeddings) if exclude is None else (queries, self.embeddings, exclude)
        if not all(isinstance(t, torch.Tensor) and not t.is_inference() for t in tensors):
            return list(self.neighbours(queries, k, exclude))  # no version to tell a change by
        last = self._last  # (k, options, [(a weak reference to each tensor, its version)], the search)
        if (
            last is not None
            and last[:2] == (k, self.options)
            and len(last[2]) == len(tensors)
            and all(ref() is t and version == t._version for (ref, version), t in zip(last[2], tensors, strict=True))
        ):
            return last[3]
        found = list(self.neighbours(queries, k, exclude))
        self._last = (k, self.options, [(weakref.ref(t), t._version) for t in tensors], found)
        return found

    def vote_gender(self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """``(M,)``: the majority gender of each query's ``k`` nearest items with a known gender
        (weighted votes)."""
        if self.genders is None:
            raise PluginError(f"{self.who}: the gallery has no gender labels")
        out = []
        for idx in self.neighbours(queries, k, exclude):  # (m, k)
            g = self.genders[idx]  # (m, k), -1 unknown
            w = self._weights(idx)
            votes = [(g == c).float() if w is None else (g == c) * w for c in (0, 1)]  # (m, k) each
            out.append(torch.stack([v.sum(1) for v in votes], dim=1).argmax(dim=1))  # (m,)
        return torch.cat(out)

    def check_queries(self, queries: torch.Tensor, method: str) -> None:
        """Raise `PluginError` unless the gallery is fitted and ``queries`` is ``(M, D)`` float
        with the gallery's ``D``."""
        if self.embeddings is None:
            raise PluginError(f"{self.who}: call fit() before {method}()")
        check_tensor(self.who, "queries", queries, 2, floating=True)
        if queries.shape[1] != self.embeddings.shape[1]:
            raise PluginError(
                f"{self.who}: queries must have {self.embeddings.shape[1]} columns like the gallery, "
                f"got {tuple(queries.shape)}"
            )
        check_finite(self.who, "queries", queries)  # faiss would answer "no neighbour" (-1) for NaN

    def _weights(self, idx: torch.Tensor) -> torch.Tensor | None:
        """``(m, k)`` weights of the neighbours ``idx``, or ``None`` when every item counts once."""
        return None if self.weights is None else self.weights[idx]

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

    def _build(self) -> None:
        self._hnsw = None
        if self.options.index == "flat" or self.embeddings.shape[0] == 0:
            return  # exact search reads self.embeddings directly
        import faiss  # heavy: imported on first use

        index = faiss.IndexHNSWFlat(self.embeddings.shape[1], self.options.hnsw_m, faiss.METRIC_L1)
        index.hnsw.efConstruction = self.options.ef_construction
        index.add(self.embeddings.numpy())
        self._hnsw = index
        self.embeddings = stored_vectors(index)  # the same values, without a second copy

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(distances (m, k), indices (m, k) int64)``, nearest first, for one block of queries."""
        import faiss

        if self._hnsw is not None:
            params = faiss.SearchParametersHNSW(efSearch=max(self.options.ef_search, k))
            dist, idx = self._hnsw.search(queries.numpy(), k, params=params)  # (m, k) each
            if (idx < 0).any():
                raise PluginError(f"{self.who}: HNSW found fewer than {k} neighbours; raise ef_search")
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

    # -- saving ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The gallery and its index options, enough to rebuild it with `load_state_dict()`."""
        return {
            "embeddings": self.embeddings,
            "ages": self.ages,
            "genders": self.genders,
            "weights": self.weights,
            "options": dataclasses.asdict(self.options),
        }

    def load_state_dict(self, state: dict) -> Gallery:
        """Restore a saved gallery as it was saved (a reduced gallery is not reduced again; older
        files without index options get the defaults)."""
        self.options = IndexOptions(**state.get("options", {}))
        self.check(state["embeddings"], state["ages"], state["genders"])
        return self.set(state["embeddings"], state["ages"], state["genders"], state.get("weights"))


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

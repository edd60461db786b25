"""The L1 kNN retriever against brute-force search."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agemetric.default_plugins.l1_knn import L1KNN

# these tests take k up to and past the gallery's size on purpose (the warning is tested in test_public_api)
pytestmark = pytest.mark.filterwarnings("ignore:.*is not less than the gallery")


def test_faiss_l1_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    gallery = torch.randn(300, 70, generator=g)
    queries = torch.randn(25, 70, generator=g)
    r = L1KNN(k=20).fit(gallery, torch.rand(300, generator=g) * 80)
    dist, idx = r.search(queries)
    brute = torch.cdist(queries.double(), gallery.double(), p=1)  # (25, 300)
    want_d, want_i = brute.topk(20, largest=False)
    assert torch.allclose(dist.double(), want_d, rtol=1e-4)
    assert torch.equal(idx, want_i)


def test_self_is_excluded_and_k_neighbours_remain():
    g = torch.Generator().manual_seed(1)
    gallery = torch.randn(50, 4, generator=g)
    ages = torch.arange(50).float()
    r = L1KNN(k=3).fit(gallery, ages)
    _, idx = r.search(gallery, exclude=torch.arange(50))
    assert idx.shape == (50, 3)
    assert not (idx == torch.arange(50).view(-1, 1)).any()
    brute = torch.cdist(gallery, gallery, p=1).fill_diagonal_(float("inf"))
    assert torch.equal(idx, brute.topk(3, largest=False).indices)
    # without exclusion, an item is its own nearest neighbour
    _, idx_self = r.search(gallery)
    assert torch.equal(idx_self[:, 0], torch.arange(50))


def test_predict_is_mean_age_of_k_nearest():
    gallery = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    r = L1KNN(k=3).fit(gallery, torch.tensor([10.0, 20.0, 30.0, 70.0]))
    assert torch.allclose(r.predict(torch.tensor([[0.9]])), torch.tensor([20.0]))
    # the query 0 is the gallery item 0: excluded, its neighbours are 1, 2, 3
    assert torch.allclose(r.predict(gallery[:1], exclude=torch.tensor([0])), torch.tensor([40.0]))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 60), st.integers(1, 25), st.integers(0, 10_000))
def test_prediction_within_gallery_age_range(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    gallery = torch.randn(n, 5, generator=g)
    ages = torch.randint(0, 100, (n,), generator=g).float()
    r = L1KNN(k=k).fit(gallery, ages)
    pred = r.predict(torch.randn(7, 5, generator=g))
    assert pred.shape == (7,)
    assert bool((pred >= ages.min() - 1e-4).all() and (pred <= ages.max() + 1e-4).all())


def test_gender_vote():
    gallery = torch.tensor([[0.0], [0.1], [0.2], [5.0]])
    r = L1KNN(k=3).fit(gallery, torch.ones(4), torch.tensor([1, 1, 0, 0]))
    assert r.predict_gender(torch.tensor([[0.0]])).tolist() == [1]


# --- large galleries: blocks of queries, shards of the gallery, HNSW, per-age references ---


def _brute_force(queries, gallery, k, exclude=None):
    """Top-k L1 distances ``(M, k)`` by torch.cdist (float64), the excluded item left out."""
    dist = torch.cdist(queries.double(), gallery.double(), p=1)  # (M, N)
    if exclude is not None:
        dist[torch.arange(len(queries)), exclude] = float("inf")
    return dist.topk(k, dim=1, largest=False).values


def _check_answer(queries, gallery, dist, idx, k, exclude=None):
    """The invariants of an exact answer; distances compared, not indices (ties may come in any order)."""
    assert dist.shape == idx.shape == (len(queries), k) and idx.dtype == torch.int64
    assert torch.equal(dist.double(), _brute_force(queries, gallery, k, exclude))  # integer data: exact sums
    recomputed = (queries.unsqueeze(1) - gallery[idx]).abs().sum(2)  # (M, k) distance to what was returned
    assert torch.equal(recomputed, dist)
    assert all(len(set(row)) == k for row in idx.tolist())  # no item twice
    if exclude is not None:
        assert not (idx == exclude.view(-1, 1)).any()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 90),
    d=st.integers(1, 6),
    k=st.integers(1, 30),
    chunk=st.integers(1, 40),
    shard=st.integers(1, 50),
    seed=st.integers(0, 10_000),
)
def test_blocked_exact_search_matches_brute_force(n, d, k, chunk, shard, seed):
    g = torch.Generator().manual_seed(seed)
    gallery = torch.randint(0, 4, (n, d), generator=g).float()  # small integers: many ties
    queries = torch.randint(0, 4, (37, d), generator=g).float()
    r = L1KNN(k=k, chunk_size=chunk, shard_size=shard).fit(gallery, torch.rand(n, generator=g) * 80)
    dist, idx = r.search(queries)
    _check_answer(queries, gallery, dist, idx, min(k, n))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 90),
    k=st.integers(1, 30),
    chunk=st.integers(1, 40),
    shard=st.integers(1, 50),
    seed=st.integers(0, 10_000),
)
def test_self_exclusion_across_query_blocks_and_gallery_shards(n, k, chunk, shard, seed):
    g = torch.Generator().manual_seed(seed)
    gallery = torch.randint(0, 3, (n, 3), generator=g).float()  # duplicates: another item at distance 0
    r = L1KNN(k=k, chunk_size=chunk, shard_size=shard).fit(gallery, torch.rand(n, generator=g) * 80)
    who = torch.randperm(n, generator=g)[: min(n, 45)]  # queries are gallery items, in any order
    dist, idx = r.search(gallery[who], exclude=who)
    _check_answer(gallery[who], gallery, dist, idx, min(k, n - 1), exclude=who)


def test_blocks_and_shards_give_the_one_pass_answer():
    g = torch.Generator().manual_seed(2)
    gallery, queries = torch.randn(500, 8, generator=g), torch.randn(300, 8, generator=g)  # no ties
    ages = torch.rand(500, generator=g) * 80
    one = L1KNN(k=20, chunk_size=10_000, shard_size=10_000).fit(gallery, ages)
    blocked = L1KNN(k=20, chunk_size=7, shard_size=33).fit(gallery, ages)
    assert torch.equal(one.search(queries)[1], blocked.search(queries)[1])
    assert torch.allclose(one.predict(queries[:50]), blocked.predict(queries[:50]))
    assert torch.equal(
        one.predict(gallery, exclude=torch.arange(500)), blocked.predict(gallery, exclude=torch.arange(500))
    )


def test_no_queries():
    r = L1KNN(k=3, chunk_size=2).fit(torch.randn(10, 4), torch.rand(10))
    dist, idx = r.search(torch.empty(0, 4))
    assert dist.shape == idx.shape == (0, 3)
    assert r.predict(torch.empty(0, 4)).shape == (0,)


def test_exact_gallery_is_not_copied():
    gallery = torch.randn(100, 5)
    r = L1KNN(k=3).fit(gallery, torch.rand(100))
    assert r.gallery.embeddings.data_ptr() == gallery.data_ptr()  # float32, contiguous, CPU: kept as is
    assert r.state_dict()["embeddings"] is r.gallery.embeddings


def _clustered(n, d, seed):
    """Embedding-like synthetic data: ages on a smooth curve in ``d`` dimensions, plus noise."""
    g = torch.Generator().manual_seed(seed)
    ages = torch.randint(1, 80, (n,), generator=g).float()
    direction = torch.randn(d, generator=g)
    return ages.view(-1, 1) / 10 * direction + 0.3 * torch.randn(n, d, generator=g), ages


def test_hnsw_recall_storage_and_reload(tmp_path):
    gallery, ages = _clustered(2000, 16, seed=3)
    queries, _ = _clustered(200, 16, seed=4)
    exact = L1KNN(k=20).fit(gallery, ages)
    hnsw = L1KNN(k=20, index="hnsw", hnsw_m=16, ef_search=64).fit(gallery, ages)
    _, want = exact.search(queries)
    dist, got = hnsw.search(queries)
    recall = sum(len(set(a) & set(b)) for a, b in zip(got.tolist(), want.tolist(), strict=True)) / want.numel()
    assert recall > 0.95
    assert torch.allclose((queries.unsqueeze(1) - gallery[got]).abs().sum(2), dist, rtol=1e-5)
    # one copy of the vectors: the gallery tensor is the index's storage
    assert torch.equal(hnsw.gallery.embeddings, gallery) and hnsw.gallery.embeddings.data_ptr() != gallery.data_ptr()
    torch.save(hnsw.state_dict(), tmp_path / "r.pt")
    again = L1KNN().load_state_dict(torch.load(tmp_path / "r.pt", weights_only=True))  # options come with the state
    assert again.options == hnsw.options and again.gallery._hnsw is not None
    assert torch.allclose(again.predict(queries), exact.predict(queries), atol=2.0)


def test_hnsw_storage_outlives_the_retriever():
    import gc

    gallery, ages = _clustered(300, 4, seed=5)
    r = L1KNN(k=5, index="hnsw").fit(gallery, ages)
    stored = r.gallery.embeddings
    del r
    gc.collect()
    assert torch.equal(stored, gallery)  # the tensor keeps the faiss index (its memory) alive


def test_hnsw_self_exclusion():
    gallery, ages = _clustered(400, 8, seed=6)
    r = L1KNN(k=10, index="hnsw").fit(gallery, ages)
    _, idx = r.search(gallery, exclude=torch.arange(400))
    assert idx.shape == (400, 10) and not (idx == torch.arange(400).view(-1, 1)).any()


def test_unknown_options_are_one_line_errors():
    import pytest

    from agemetric import plugins
    from agemetric.errors import PluginError

    with pytest.raises(PluginError, match="index must be 'flat' \\(exact\\) or 'hnsw' \\(approximate\\), got 'ivf'"):
        plugins.create("retriever", "l1-knn", k=20, index="ivf")
    with pytest.raises(PluginError, match="references must be 'all' or 'per-age', got 'coreset'"):
        plugins.create("retriever", "l1-knn", k=20, references="coreset")
    for name in ("chunk_size", "shard_size", "hnsw_m", "ef_search", "ef_construction", "per_age"):
        with pytest.raises(PluginError, match=f"{name} must be a positive integer, got 0"):
            plugins.create("retriever", "l1-knn", k=20, **{name: 0})


def test_old_checkpoints_load_as_exact_search():
    gallery, ages = torch.randn(30, 4), torch.rand(30) * 50
    old = {"k": 3, "embeddings": gallery, "ages": ages, "genders": None}  # saved before options and weights
    r = L1KNN(index="hnsw").load_state_dict(old)
    assert r.options.index == "flat" and r.gallery.weights is None
    assert torch.allclose(r.predict(gallery[:5]), L1KNN(k=3).fit(gallery, ages).predict(gallery[:5]))


def test_weighted_estimate_of_references():
    # per_age=1: age 10 keeps one of its three faces (weight 3), age 50 its only face (weight 1)
    gallery = torch.tensor([[0.0], [0.1], [0.2], [5.0]])
    r = L1KNN(k=2, references="per-age", per_age=1).fit(
        gallery, torch.tensor([10.0, 10.0, 10.0, 50.0]), torch.tensor([1, 1, 1, 0])
    )
    assert len(r) == 2 and r.gallery.weights.tolist() == [3.0, 1.0]
    assert torch.allclose(r.predict(torch.tensor([[1.0]])), torch.tensor([20.0]))  # (3 * 10 + 1 * 50) / 4
    assert r.predict_gender(torch.tensor([[4.0]])).tolist() == [1]  # 3 votes to 1, though age 50 is nearer


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 200), per_age=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_per_age_references(n, per_age, seed):
    g = torch.Generator().manual_seed(seed)
    gallery = torch.randn(n, 4, generator=g)
    ages = torch.randint(0, 12, (n,), generator=g).float() + 0.5 * torch.rand(n, generator=g)  # fractional ages
    r = L1KNN(k=5, references="per-age", per_age=per_age).fit(gallery, ages)
    years = ages.floor()
    for year in years.unique():
        chosen = r.ages.floor() == year
        assert 1 <= int(chosen.sum()) <= min(per_age, int((years == year).sum()))
        assert float(r.gallery.weights[chosen].sum()) == float((years == year).sum())  # every face counted once
    assert float(r.gallery.weights.min()) >= 1
    rows = (r.gallery.embeddings.unsqueeze(1) == gallery.unsqueeze(0)).all(2)  # (R, N): references are gallery faces
    assert bool(rows.any(1).all())
    pred = r.predict(torch.randn(9, 4, generator=g))
    assert bool((pred >= ages.min() - 1e-4).all() and (pred <= ages.max() + 1e-4).all())


def test_references_are_saved_not_selected_again(tmp_path):
    gallery, ages = _clustered(600, 8, seed=7)
    r = L1KNN(k=20, references="per-age", per_age=3).fit(gallery, ages)
    assert len(r) < 600 and float(r.gallery.weights.sum()) == 600
    torch.save(r.state_dict(), tmp_path / "r.pt")
    again = L1KNN().load_state_dict(torch.load(tmp_path / "r.pt", weights_only=True))
    assert again.options.references == "per-age"
    assert torch.equal(again.gallery.embeddings, r.gallery.embeddings)
    assert torch.equal(again.gallery.weights, r.gallery.weights)
    queries, _ = _clustered(50, 8, seed=8)
    assert torch.equal(again.predict(queries), r.predict(queries))


def test_ridge_with_one_penalty():
    """A single candidate penalty (scikit-learn's RidgeCV writes into its alphas list)."""
    from agemetric.retrievers import RidgeAge

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    ages = 30 + 10 * x[:, 0]
    ridge = RidgeAge(alphas=(1.0,)).fit(x, ages)
    assert (ridge.predict(x) - ages).abs().mean() < 1.0


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (lambda q: torch.zeros(len(q), 2), "must have 1 dimension"),
        (lambda q: torch.zeros(len(q) + 1), "one age per query"),
        (lambda q: torch.zeros(len(q), dtype=torch.int64), "floating-point"),
        (lambda q: [30.0] * len(q), "must be a torch.Tensor"),
    ],
)
def test_a_retriever_s_wrong_result_fails_in_predict_naming_it(result, message):
    from agemetric.errors import PluginError
    from agemetric.interfaces import Retriever

    class Odd(Retriever):
        def predict(self, queries, exclude=None):
            return result(queries)

    class OddChild(Odd):  # an override that calls the parent's (already checked) predict
        def predict(self, queries, exclude=None):
            return super().predict(queries, exclude)

    for cls in (Odd, OddChild):
        retriever = cls(k=1).fit(torch.rand(3, 2), torch.tensor([1.0, 2.0, 3.0]))
        with pytest.raises(PluginError, match=f"{cls.__name__}.predict: .*{message}"):
            retriever.predict(torch.rand(4, 2))


def test_an_estimate_s_statistics_search_once_and_never_reuse_a_stale_search(monkeypatch):
    """The mean, the spread and the share under a threshold of the same queries share one search;
    queries changed in place, other queries, another k or a refitted gallery are searched again,
    and every answer equals a fresh retriever's."""
    g = torch.Generator().manual_seed(3)
    gallery, ages = torch.randn(60, 5, generator=g), torch.rand(60, generator=g) * 80
    r = L1KNN(k=4).fit(gallery, ages)
    searches = []
    search = r.gallery.search
    monkeypatch.setattr(r.gallery, "search", lambda *a, **kw: searches.append(1) or search(*a, **kw))

    def fresh(queries, k=4, data=(gallery, ages)):
        other = L1KNN(k=k).fit(*data)
        return other.predict(queries), other.spread(queries), other.probability_under(queries, 30.0)

    queries = torch.randn(7, 5, generator=g)
    got = (r.predict(queries), r.spread(queries), r.probability_under(queries, 30.0))
    assert len(searches) == 1
    assert all(map(torch.equal, got, fresh(queries)))
    queries.mul_(-1)  # the same tensor, other values
    assert torch.equal(r.spread(queries), fresh(queries)[1]) and len(searches) == 2
    assert torch.equal(r.predict(queries.clone()), fresh(queries)[0]) and len(searches) == 3
    r.k = 6
    assert torch.equal(r.predict(queries), fresh(queries, k=6)[0]) and len(searches) == 4
    r.fit(gallery * 2, ages.flip(0))
    assert torch.equal(r.predict(queries), fresh(queries, k=6, data=(gallery * 2, ages.flip(0)))[0])

"""The L1 kNN retriever against brute-force search."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agemetric.default_plugins.l1_knn import L1KNN


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

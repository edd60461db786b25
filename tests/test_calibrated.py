"""CalibratedGallery alone, without a network: from embeddings to estimates against a brute-force
nearest-neighbour reference, and the errors it gives before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agemetric.calibrated import CalibratedGallery
from agemetric.errors import AgemetricError
from agemetric.interfaces import Retriever
from agemetric.intervals import ConformalIntervals
from agemetric.retrievers import L1KNN


def _faces(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ages = torch.rand(n, generator=g) * 80
    embeddings = ages[:, None] / 10 + torch.randn(n, 4, generator=g) * 0.3  # ages readable from the embedding
    return embeddings, ages


def _reference(gallery: tuple, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the standard deviation of the ages of each query's k nearest faces in L1, by brute force."""
    emb, ages = gallery
    means, spreads = [], []
    for q in queries:
        nearest = torch.argsort((emb - q).abs().sum(1), stable=True)[:k]
        means.append(ages[nearest].mean().item())
        spreads.append(ages[nearest].std(unbiased=False).item())
    return np.array(means), np.array(spreads)


def test_estimates_are_the_nearest_faces_mean_with_the_calibrated_interval():
    train, held, queries = _faces(200, 0), _faces(100, 1), _faces(30, 2)[0]
    gallery = CalibratedGallery(L1KNN(k=7))
    gallery.fit(*train)
    intervals = gallery.calibrate(*held, level=0.8, groups=2)
    e = gallery.estimate(queries, under=30)
    age, spread = _reference(train, queries, 7)
    np.testing.assert_allclose(e.age, age, rtol=1e-5)
    np.testing.assert_allclose(e.spread, spread, rtol=1e-4, atol=1e-4)
    low, high = intervals.bounds(torch.from_numpy(e.age), torch.from_numpy(e.spread))
    np.testing.assert_allclose(e.low, low.numpy(), rtol=1e-5)
    np.testing.assert_allclose(e.high, high.numpy(), rtol=1e-5)
    assert isinstance(intervals, ConformalIntervals) and gallery.intervals is intervals
    assert ((e.under >= 0) & (e.under <= 1)).all()
    torch.testing.assert_close(gallery.predict(queries), torch.from_numpy(e.age))


def test_without_intervals_an_estimate_has_no_bounds_and_without_faces_none_at_all():
    gallery = CalibratedGallery(L1KNN(k=3))
    with pytest.raises(AgemetricError, match="no gallery yet"):
        gallery.estimate(torch.zeros(1, 4))
    gallery.fit(*_faces(20, 0))
    e = gallery.estimate(torch.zeros(2, 4))
    assert e.low is None and e.high is None and e.under is None


def test_adapting_changes_the_gallery_and_recalibrates_and_needs_a_nearest_face_retriever():
    gallery = CalibratedGallery(L1KNN(k=5))
    gallery.fit(*_faces(200, 0))
    report = gallery.adapt(*_faces(40, 3), seed=0)
    assert gallery.adaptation == report.to_dict() and gallery.retriever.k == report.chosen.k
    assert gallery.intervals == ConformalIntervals.from_dict(report.intervals)

    class Median(Retriever):
        def predict(self, queries, exclude=None):
            return self.gallery.ages.median().expand(len(queries))

    other = CalibratedGallery(Median(k=1))
    other.fit(*_faces(20, 0))
    with pytest.raises(AgemetricError, match="adapt needs a retriever that estimates from the nearest faces"):
        other.require_adaptable()

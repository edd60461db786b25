"""CalibratedGallery: from embeddings to estimates. The retriever's gallery of training faces,
the prediction intervals calibrated on held-out faces, and what an adaptation to a user's own
faces changed: the half of `agemetric.AgeEstimator` that needs no network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from agemetric.errors import AgemetricError
from agemetric.estimates import Estimates, interval
from agemetric.interfaces import Retriever
from agemetric.interfaces.checks import describe
from agemetric.intervals import ConformalIntervals

if TYPE_CHECKING:
    from agemetric.adaptation import Adaptation


class CalibratedGallery:
    """A retriever's gallery with its calibrated intervals.

    Args:
        retriever: estimates ages from the gallery it is given (`fit()`).

    Examples:
        >>> import torch
        >>> from agemetric import retrievers
        >>> gallery = CalibratedGallery(retrievers.L1KNN(k=2))
        >>> _ = gallery.fit(torch.tensor([[0.0], [1.0], [10.0]]), torch.tensor([20.0, 30.0, 60.0]))
        >>> gallery.predict(torch.tensor([[0.4]]))
        tensor([25.])
        >>> _ = gallery.calibrate(torch.tensor([[0.2], [9.0]]), torch.tensor([24.0, 50.0]), level=0.5)
        >>> e = gallery.estimate(torch.tensor([[0.4]]), under=18)
        >>> float(e.age[0]), bool(e.low[0] <= e.age[0] <= e.high[0]), float(e.under[0])
        (25.0, True, 0.0)
    """

    def __init__(self, retriever: Retriever):
        self.retriever = retriever
        self.intervals: ConformalIntervals | None = None  # set by calibrate()
        self.adaptation: dict | None = None  # what adapt() chose and measured (`Adaptation.to_dict()`)

    def fit(self, embeddings: torch.Tensor, ages: torch.Tensor, genders: torch.Tensor | None = None) -> None:
        """Make ``embeddings`` ``(N, D)`` with their ``ages`` ``(N,)`` (and ``genders``) the gallery."""
        self.retriever.fit(embeddings, ages, genders)

    def require(self) -> None:
        """A one-line error unless the gallery has faces."""
        if len(self.retriever) == 0:
            raise AgemetricError("the estimator has no gallery yet: call fit_gallery() first")

    def predict(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The estimated ages ``(N,)`` of the faces embedded as ``embeddings``."""
        self.require()
        return self.retriever.predict(embeddings)

    def calibrate(
        self, embeddings: torch.Tensor, ages: torch.Tensor, level: float = 0.9, groups: int = 1
    ) -> ConformalIntervals:
        """Calibrate the intervals on faces neither trained on nor in the gallery (their
        ``embeddings`` and true ``ages``): see `agemetric.intervals.ConformalIntervals.calibrate`."""
        self.require()
        r = self.retriever
        self.intervals = ConformalIntervals.calibrate(
            ages, r.predict(embeddings), r.spread(embeddings), level, groups=groups
        )
        return self.intervals

    def estimate(self, embeddings: torch.Tensor, under: float | None = None) -> Estimates:
        """Ages with the neighbours' spread, the calibrated interval (after `calibrate()`) and,
        with ``under``, the probability of being younger than that age, as numpy arrays."""
        self.require()
        r = self.retriever
        out = Estimates(r.predict(embeddings).numpy(), r.spread(embeddings).numpy())
        if self.intervals is not None:
            out.low, out.high = interval(out.age, out.spread, self.intervals.to_dict())
        if under is not None:
            out.under = r.probability_under(embeddings, under).numpy()
        return out

    def require_adaptable(self) -> None:
        """A one-line error unless `adapt()` can adapt this gallery (before any photo is read)."""
        if not callable(getattr(self.retriever, "adapt", None)):  # l1-knn and retrievers built on it
            raise AgemetricError(
                f"adapt needs a retriever that estimates from the nearest faces (l1-knn), "
                f"not {describe(self.retriever)}"
            )
        self.require()

    def adapt(
        self, embeddings: torch.Tensor, ages: torch.Tensor, genders: torch.Tensor | None = None, seed: int = 0
    ) -> Adaptation:
        """Combine a user's labelled faces with the gallery and recalibrate the intervals on them
        (`agemetric.adaptation`); the gallery, ``k`` and the intervals change in place."""
        self.require_adaptable()
        intervals = None if self.intervals is None else self.intervals.to_dict()
        report = self.retriever.adapt(embeddings, ages, genders, intervals, seed)
        self.intervals = ConformalIntervals.from_dict(report.intervals)
        self.adaptation = report.to_dict()
        return report

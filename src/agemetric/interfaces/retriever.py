"""Retriever: turns a query's embedding into an age, from a gallery of faces with known ages."""

from __future__ import annotations

import abc
import functools

import torch

from agemetric.interfaces.checks import check_rows, check_tensor, describe
from agemetric.interfaces.gallery import Gallery


class Retriever(abc.ABC):
    """Predicts ages ``(M,)`` of ``(M, D)`` query embeddings from a fitted gallery.

    Factories registered through ``register_retrievers`` are called as
    ``factory(k=..., **retriever_options)``.

    A retriever composes a `agemetric.retrievers.Gallery` (``self.gallery``): `fit()`
    stores the training faces there, `search()` and `predict_gender()` ask it for the ``k``
    nearest faces, and `state_dict()` saves it. Subclasses implement `predict()`, the estimate
    itself (every call checks its result: one floating-point age per query); one that builds
    more from the gallery (a regression, reference faces) does so in `on_gallery()`.

    Args:
        k: how many neighbours vote (paper: M = 20).
        gallery: the gallery to fill (default: an exact L1 one).

    Examples:
        A new estimate, the median age of the ``k`` nearest faces:

        >>> class MedianAge(Retriever):
        ...     def predict(self, queries, exclude=None):
        ...         _, idx = self.search(queries, exclude=exclude)  # (M, k)
        ...         return self.gallery.ages[idx].median(dim=1).values
        >>> r = MedianAge(k=3).fit(torch.tensor([[0.0], [1.0], [2.0], [9.0]]), torch.tensor([20.0, 24.0, 60.0, 70.0]))
        >>> r.predict(torch.tensor([[0.5]]))
        tensor([24.])
    """

    def __init_subclass__(cls, **kwargs):
        """A subclass's `predict()` is wrapped so that every call checks what the plugin returns:
        a wrong result fails where it is made, naming the retriever, not later in the evaluation."""
        super().__init_subclass__(**kwargs)
        if "predict" in cls.__dict__ and not getattr(cls.__dict__["predict"], "_agemetric_checked", False):
            cls.predict = _checked_predict(cls.__dict__["predict"])

    def __init__(self, k: int = 20, gallery: Gallery | None = None):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.gallery = gallery if gallery is not None else Gallery()
        self.gallery.owner = self  # errors name the retriever

    def fit(self, embeddings: torch.Tensor, ages: torch.Tensor, genders: torch.Tensor | None = None) -> Retriever:
        """Make ``(N, D)`` embeddings with their ``(N,)`` ages (and int64 genders, -1 unknown) the
        gallery; returns ``self``."""
        self.gallery.fit(embeddings, ages, genders)
        self.on_gallery()
        return self

    def on_gallery(self) -> None:  # noqa: B027 - optional, most retrievers need nothing
        """Called when the gallery was fitted or loaded: build what the estimate needs from it
        (``self.gallery``). The default does nothing."""

    @abc.abstractmethod
    def predict(self, queries: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted ages ``(M,)`` of ``(M, D)`` float queries; ``exclude``: ``(M,)`` int64 gallery
        index each query must not use (itself, when the queries are gallery faces), or ``None``."""

    def search(
        self, queries: torch.Tensor, k: int | None = None, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` (default ``self.k``) nearest gallery faces of each query, nearest first:
        ``(distances (M, k), indices (M, k) int64)`` (see `Gallery.search()`)."""
        return self.gallery.search(queries, self.k if k is None else k, exclude)

    def spread(self, queries: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """How much the ``k`` nearest gallery faces of each query disagree: the standard deviation
        of their ages ``(M,)`` (`agemetric.intervals.knn_age_spread`); what calibrated intervals
        widen with."""
        from agemetric.intervals import knn_age_spread

        return self.gallery.over_neighbours(knn_age_spread, queries, self.k, exclude)

    def probability_under(
        self, queries: torch.Tensor, threshold: float, exclude: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(M,)``: the share of each query's ``k`` nearest gallery faces younger than
        ``threshold`` (`agemetric.intervals.knn_share_under`)."""
        from agemetric.intervals import knn_share_under

        return self.gallery.over_neighbours(
            lambda ages, weights: knn_share_under(ages, threshold, weights), queries, self.k, exclude
        )

    def predict_gender(self, queries: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Majority gender ``(M,)`` of the ``k`` nearest gallery faces with a known gender."""
        return self.gallery.vote_gender(queries, self.k, exclude)

    def attach(self, loss) -> None:  # noqa: B027 - optional, most retrievers need nothing
        """Called once by the `agemetric.estimator.AgeEstimator` with its age loss.

        The default does nothing. A retriever that estimates with something the loss trains (a
        comparator head) keeps it here, and raises `agemetric.PluginError` for a
        loss it cannot use: the estimator is then refused at construction.
        """

    def state_dict(self) -> dict:
        """``k`` and the gallery, enough to rebuild the retriever with `load_state_dict()`."""
        return {"k": self.k, **self.gallery.state_dict()}

    def load_state_dict(self, state: dict) -> Retriever:
        """Restore what `state_dict()` saved (a reduced gallery is not reduced again)."""
        self.k = int(state["k"])
        self.gallery.load_state_dict(state)
        self.on_gallery()
        return self

    def __len__(self) -> int:
        return len(self.gallery)

    @property
    def ages(self) -> torch.Tensor | None:
        """The gallery's ages ``(N,)`` (``None`` before `fit()`)."""
        return self.gallery.ages


def _checked_predict(predict):
    """``predict`` checking its result: a float tensor of one age per query."""

    @functools.wraps(predict)
    def checked(self: Retriever, queries: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        ages = predict(self, queries, exclude)
        who = f"{describe(self)}.predict"
        check_tensor(who, "its result", ages, 1, floating=True)
        check_rows(who, "its result (one age per query)", ages, len(queries))
        return ages

    checked._agemetric_checked = True
    return checked

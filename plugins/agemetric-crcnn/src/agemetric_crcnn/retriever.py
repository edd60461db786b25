"""Age estimation by comparison with reference faces of known age, using the CRCNN comparator."""

from __future__ import annotations

import torch

from agemetric import PluginError
from agemetric.interfaces.checks import check_rows, describe, positive_int
from agemetric.retrievers import Retriever
from agemetric_crcnn.functional import candidate_ages, relation_scores
from agemetric_crcnn.loss import CRCNNLoss


class CRCNNCompare(Retriever):
    """Estimates an age by comparing the query with reference faces through the trained CRCNN head.

    **References.** From the gallery, up to ``per_age`` faces per distinct integer age
    (``floor(age)``): those whose embeddings lie closest (L1) to the mean embedding of that age,
    ties broken by gallery order. They are the most typical faces of each age, and the choice is
    deterministic (it depends only on the gallery).

    **Estimate.** For every candidate age ``a`` (each integer between the gallery's youngest and
    oldest age, see `candidate_ages()`)
    ``score(a) = sum_r log P(relation(a, age_r) | query, r)``, where ``relation`` is younger /
    similar / older by the margin the head was trained with and ``P`` comes from the head asked
    both ways round (`CRCNNLoss.pair_log_probs()`). The prediction is the **argmax**: the
    maximum-likelihood age if the references are independent witnesses; ties go to the youngest
    tied candidate. Argmax rather than the softmax-weighted mean over candidates because the ML
    estimate is exact for a perfect comparator and needs no calibration: the score treats
    hundreds of correlated comparisons as independent, so its softmax is a posterior of
    unknown temperature, and the expectation's value depends on that temperature, a new free
    parameter. (On the quick preset the two were within noise: see the package README.)

    (query, reference) pairs go through the head in chunks of about ``chunk`` pairs, whole
    blocks of queries at a time. `search()` and `predict_gender()` are the exact L1 kNN
    ones of its gallery.

    The comparator is the estimator's loss: `attach()` keeps it when it is a `CRCNNLoss`
    (``--loss crcnn``) and refuses any other loss, so the estimator is refused at construction.

    Args:
        k: neighbours for `search()` and the gender vote (not used by `predict()`).
        per_age: the most references per integer age.
        chunk: roughly how many (query, reference) pairs go through the head at once.
    """

    def __init__(self, k: int = 20, per_age: int = 5, chunk: int = 32768):
        super().__init__(k)
        self.per_age = positive_int("per_age", per_age)
        self.chunk = positive_int("chunk", chunk)
        self.comparator: CRCNNLoss | None = None
        self.references: torch.Tensor | None = None  # (R,) int64 gallery indices
        self.candidates: torch.Tensor | None = None  # (C,) float32 ages

    def attach(self, loss) -> None:
        """Keep the estimator's loss as the comparator; any loss but a `CRCNNLoss` is refused."""
        if not isinstance(loss, CRCNNLoss):
            raise PluginError(f"{describe(self)} works only with --loss crcnn, got {describe(loss)}")
        self.comparator = loss

    def on_gallery(self) -> None:
        self.references = select_references(self.gallery.embeddings, self.ages, self.per_age)
        self.candidates = candidate_ages(self.ages)

    def predict(self, queries: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Maximum-likelihood ages ``(M,)`` of ``(M, D)`` queries (see the class docstring).

        Args:
            queries: ``(M, D)`` float embeddings.
            exclude: ``(M,)`` int64 gallery index each query must not use as a reference, or ``None``.
        """
        who = describe(self)
        comparator = self.comparator
        if comparator is None:
            raise PluginError(
                f"{who} compares faces with the trained CRCNN head, which lives in the loss: use it with "
                "`--loss crcnn` (an AgeEstimator attaches its loss to the retriever)"
            )
        if not comparator.initialized:
            raise PluginError(
                f"{who}: the CRCNN comparator has never seen a batch (untrained); train with --epochs >= 1"
            )
        self.gallery.check_queries(queries, "predict")
        if exclude is not None:
            check_rows(who, "exclude", exclude, queries.shape[0])
        device = next(comparator.parameters()).device
        refs = self.gallery.embeddings[self.references].to(device)  # (R, D)
        ref_ages = self.ages[self.references]  # (R,)
        queries = queries.detach().float().to(device)
        block = max(1, self.chunk // refs.shape[0])  # queries per chunk
        out = []
        for start in range(0, queries.shape[0], block):
            log_probs = comparator.pair_log_probs(queries[start : start + block], refs).cpu()  # (m, R, 3)
            if exclude is not None:
                own = self.references.view(1, -1) == exclude[start : start + block].view(-1, 1)  # (m, R)
                log_probs = log_probs.masked_fill(own.unsqueeze(2), 0.0)
            scores = relation_scores(log_probs, self.candidates, ref_ages, comparator.margin)  # (m, C)
            out.append(self.candidates[scores.argmax(dim=1)])
        return torch.cat(out) if out else torch.empty(0)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "per_age": self.per_age}

    def load_state_dict(self, state: dict) -> CRCNNCompare:
        self.per_age = int(state.get("per_age", self.per_age))
        return super().load_state_dict(state)


def select_references(embeddings: torch.Tensor, ages: torch.Tensor, per_age: int) -> torch.Tensor:
    """Up to ``per_age`` gallery items per integer age (``floor``): the closest (L1) to that age's
    mean embedding, ties broken by index.

    Args:
        embeddings: ``(N, D)`` float.
        ages: ``(N,)`` ages.
        per_age: the most items per integer age.

    Returns:
        ``(R,)`` int64 gallery indices, grouped by age (youngest first), nearest-to-mean first.
    """
    years = ages.floor().long()  # (N,)
    chosen = []
    for year in torch.unique(years).tolist():  # one small group per distinct age, at fit time
        idx = torch.nonzero(years == year).flatten()  # (n_a,) ascending
        group = embeddings[idx]  # (n_a, D)
        dist = (group - group.mean(dim=0, keepdim=True)).abs().sum(dim=1)  # (n_a,)
        order = torch.sort(dist, stable=True).indices[:per_age]
        chosen.append(idx[order])
    return torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.int64)

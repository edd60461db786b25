"""Baselines that share agemetric's backbones, data and budget, so that comparisons are fair.

- ``batch`` miner: every image on its own (`agemetric.types.Samples`).
- ``l1-regression`` loss with the ``direct`` retriever: the age embedding's first value *is* the
  age (use ``embedding_dim = 1``); trained with L1 or smooth-L1 (direct regression).
- ``dex`` loss with the ``expectation`` retriever: DEX (Rothe et al. 2015): one logit per age
  0..C-1 (``embedding_dim = C``, e.g. 101), cross-entropy on the rounded age, and the estimate is
  the softmax-weighted expected age.
- ``ridge`` retriever: ridge regression (``sklearn`` ``RidgeCV`` on standardised features) from the
  embedding to the age. With ``--epochs 0 --set backbone_options.head=none`` on an ImageNet
  backbone it is a *linear probe* on the frozen ImageNet features.

The retrievers here still index the gallery (exact L1), so neighbour search and the gender vote
work as for ``l1-knn``; only the age estimate differs. Estimates are clipped to the gallery's
age range, like a kNN estimate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agemetric.hookspecs import hookimpl
from agemetric.interfaces import Loss, Miner, Retriever
from agemetric.types import Samples


class BatchMiner(Miner):
    """Every image of the batch, on its own: ``Samples(arange(B))``.

    Examples:
        >>> BatchMiner()(torch.zeros(3, 70), torch.tensor([20.0, 30.0, 40.0])).index.tolist()
        [0, 1, 2]
    """

    produces = Samples

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Samples:
        return Samples(torch.arange(embeddings.shape[0], device=embeddings.device))


#: Direct regression works on standardised ages, ``(age - AGE_CENTER) / AGE_SCALE``, so that the
#: head starts near its target (an un-normalised head must first grow its bias to ~35 years, which
#: takes Adadelta thousands of steps). ``direct`` undoes the same transform.
AGE_CENTER, AGE_SCALE = 40.0, 20.0


class L1RegressionLoss(Loss):
    """Direct regression: ``|e_0 - (age - 40) / 20|`` (or smooth-L1 with ``beta``, in years), mean over images.

    Args:
        margin: unused (kept for the common factory signature).
        kind: ``"l1"`` or ``"smooth-l1"``.
        beta: smooth-L1's transition point in years.

    Examples:
        The embedding is ``(B, 1)``, the standardised age; here the errors are 0 and 0.5:

        >>> embeddings = torch.tensor([[0.0], [1.0]], requires_grad=True)  # 40 and 60 years
        >>> loss = L1RegressionLoss()(embeddings, torch.tensor([40.0, 50.0]))  # every sample
        >>> loss.item()
        0.25
    """

    accepts = Samples

    def __init__(self, margin: float = 4.0, kind: str = "l1", beta: float = 1.0):
        super().__init__(margin)
        if kind not in ("l1", "smooth-l1"):
            raise ValueError(f"kind must be 'l1' or 'smooth-l1', got {kind!r}")
        self.kind, self.beta = kind, float(beta)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: Samples) -> torch.Tensor:
        predicted = embeddings[indices.index, 0].float()  # (S,), standardised
        target = (labels[indices.index].float() - AGE_CENTER) / AGE_SCALE  # (S,)
        if self.kind == "l1":
            return F.l1_loss(predicted, target)
        return F.smooth_l1_loss(predicted, target, beta=self.beta / AGE_SCALE)


class DEXLoss(Loss):
    """DEX: cross-entropy over age classes 0..C-1, C = the embedding size (ages are rounded and clipped).

    Args:
        margin: unused (kept for the common factory signature).

    Examples:
        The embedding is ``(B, C)``: one logit per age 0..C-1 (uniform here, so the loss is ``log C``):

        >>> logits = torch.zeros(2, 101, requires_grad=True)  # (B, C = 101)
        >>> loss = DEXLoss()(logits, torch.tensor([25.0, 40.0]))  # every sample
        >>> round(loss.item(), 4)
        4.6151
    """

    accepts = Samples

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: Samples) -> torch.Tensor:
        logits = embeddings[indices.index].float()  # (S, C)
        target = labels[indices.index].round().long().clamp(0, logits.shape[1] - 1)  # (S,)
        return F.cross_entropy(logits, target)


class _Decoder(Retriever):
    """An estimate read from the embedding itself; the gallery gives the age range and the
    neighbours for the gender vote."""

    def clip(self, ages: torch.Tensor) -> torch.Tensor:
        """``(M,)`` ages clipped to the gallery's range."""
        return ages.clamp(float(self.ages.min()), float(self.ages.max()))


class DirectAge(_Decoder):
    """The estimate is the embedding's first value, in years (``e_0 * 20 + 40``, for ``l1-regression``).

    Examples:
        Queries ``(M, 1)`` give ``(M,)`` ages, clipped to the gallery's range (20 to 60 here):

        >>> direct = DirectAge(k=1).fit(torch.tensor([[-1.0], [1.0]]), torch.tensor([20.0, 60.0]))
        >>> direct.predict(torch.tensor([[0.0], [0.5], [3.0]]))
        tensor([40., 50., 60.])
    """

    def predict(self, queries: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        return self.clip(queries.detach().float()[:, 0].cpu() * AGE_SCALE + AGE_CENTER)


class ExpectedAge(_Decoder):
    """The estimate is ``sum_c softmax(e)_c * c`` (for ``dex``).

    Examples:
        Queries ``(M, C)`` of logits over ages 0..C-1 give ``(M,)`` expected ages:

        >>> expected = ExpectedAge(k=1).fit(torch.eye(3), torch.tensor([0.0, 1.0, 2.0]))  # C = 3
        >>> expected.predict(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 50.0]]))
        tensor([1., 2.])
    """

    def predict(self, queries: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        probs = queries.detach().float().cpu().softmax(dim=1)  # (M, C)
        return self.clip(probs @ torch.arange(probs.shape[1], dtype=torch.float32))  # (M,)


class RidgeAge(_Decoder):
    """Ridge regression from the embedding to the age, fitted on the gallery.

    The penalty is chosen by efficient leave-one-out cross-validation over ``alphas`` on
    standardised features (``sklearn``'s ``StandardScaler`` + ``RidgeCV``).

    Args:
        k: neighbours for `search()` and the gender vote.
        alphas: candidate penalties.

    Examples:
        Fitted on a gallery whose age is a linear function of its ``(N, 1)`` embeddings:

        >>> x = torch.linspace(0, 1, 11).view(-1, 1)  # (N, 1)
        >>> ridge = RidgeAge(k=3).fit(x, 20 + 40 * x[:, 0])  # age = 20 + 40 x
        >>> ridge.predict(torch.tensor([[0.25], [0.5]])).round()
        tensor([30., 40.])
    """

    def __init__(self, k: int = 20, alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)):
        super().__init__(k)
        self.alphas = tuple(float(a) for a in alphas)

    def on_gallery(self) -> None:
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), RidgeCV(alphas=list(self.alphas)))
        self.model.fit(self.gallery.embeddings.double().numpy(), self.ages.double().numpy())

    def predict(self, queries: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        return self.clip(torch.from_numpy(self.model.predict(queries.detach().double().cpu().numpy())).float())


@hookimpl
def register_miners(register):
    register("batch", BatchMiner)


@hookimpl
def register_losses(register):
    register("l1-regression", L1RegressionLoss)
    register("dex", DEXLoss)


@hookimpl
def register_retrievers(register):
    register("direct", DirectAge)
    register("expectation", ExpectedAge)
    register("ridge", RidgeAge)

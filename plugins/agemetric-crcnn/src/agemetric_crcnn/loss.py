"""The CRCNN comparator loss: a learnable younger / similar / older classifier over mined pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parameter import is_lazy

from agemetric import Loss, Pairs
from agemetric.interfaces.checks import positive_int
from agemetric_crcnn.functional import N_RELATIONS, SWAP, pair_features, relation


class CRCNNLoss(Loss):
    """Comparative loss after Abousaleh et al. (2016), "A novel comparative deep learning framework
    for facial age estimation" (CRCNN).

    For each mined pair ``(i, j)`` a small head classifies the first face as *younger*,
    *similar* (``|a_i - a_j| < margin``, agemetric's margin rule) or *older* than the second, trained
    with cross-entropy (mean over ordered pairs). Every pair is used in both directions,
    ``(i, j)`` and ``(j, i)``, with labels ``c`` and ``2 - c``, so the head learns that reversing
    the faces swaps younger and older. The head sees
    ``concat(e_i - e_j, |e_i - e_j|, (e_i + e_j) / 2)`` (see
    `agemetric_crcnn.functional.pair_features()` for why) and is
    ``LazyLinear(hidden) -> ReLU -> Linear(hidden, 3)``; the first layer is lazy because the loss
    factory does not know the embedding size (and the same class serves the gender task with
    another one). The gradient reaches the embeddings, so the backbone learns embeddings that are
    easy to compare; the head is a parameter of the estimator, trained with it and saved in its
    checkpoint. Computed in float32 (autocast off).

    `agemetric_crcnn.retriever.CRCNNCompare` (``--retriever crcnn-compare``) uses the trained
    head to estimate ages by comparing a face with references of known age.

    Args:
        margin: age tolerance in years of the "similar" class.
        hidden: width of the head's hidden layer.
    """

    accepts = Pairs

    def __init__(self, margin: float = 4.0, hidden: int = 64):
        super().__init__(margin)
        self.hidden = positive_int("hidden", hidden)
        self.head = nn.Sequential(nn.LazyLinear(self.hidden), nn.ReLU(), nn.Linear(self.hidden, N_RELATIONS))
        # A head that never saw a batch (``--epochs 0``) has uninitialised parameters, which
        # ``torch.load(weights_only=True)`` refuses; they are saved as empty placeholders instead.
        self.register_state_dict_post_hook(_placeholders_for_lazy)
        self.register_load_state_dict_pre_hook(_lazy_from_placeholders)

    @property
    def initialized(self) -> bool:
        """Whether the head has seen an input (its first layer knows the embedding size)."""
        return not any(is_lazy(p) for p in self.head.parameters())

    def logits(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Relation logits of ordered pairs.

        Args:
            first: ``(P, D)`` embeddings of the first faces.
            second: ``(P, D)`` embeddings of the second faces.

        Returns:
            ``(P, 3)`` float32 logits of younger / similar / older (first relative to second).
        """
        with torch.autocast(first.device.type, enabled=False):
            return self.head(pair_features(first.float(), second.float()))

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: Pairs) -> torch.Tensor:
        first = torch.cat([indices.first, indices.second])  # (2P,) both directions
        second = torch.cat([indices.second, indices.first])  # (2P,)
        target = relation(labels[first], labels[second], self.margin)  # (2P,) in {0, 1, 2}
        return F.cross_entropy(self.logits(embeddings[first], embeddings[second]), target)

    @torch.no_grad()
    def pair_log_probs(self, queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of each query's relation to each reference, from both directions.

        ``0.5 * (log P(c | q, r) + log P(2 - c | r, q))``: the head is asked both ways round and the
        answers are averaged (a geometric mean), so the result is exactly antisymmetric even where
        the head learnt the antisymmetry only approximately.

        Args:
            queries: ``(M, D)`` float.
            references: ``(R, D)`` float.

        Returns:
            ``(M, R, 3)`` float32.
        """
        m, r = queries.shape[0], references.shape[0]
        q = queries.float().unsqueeze(1).expand(m, r, -1).reshape(m * r, -1)  # (M R, D)
        ref = references.float().unsqueeze(0).expand(m, r, -1).reshape(m * r, -1)  # (M R, D)
        forward = self.logits(q, ref).log_softmax(dim=1)  # (M R, 3)
        backward = self.logits(ref, q).log_softmax(dim=1)[:, list(SWAP)]  # (M R, 3), classes swapped
        return (0.5 * (forward + backward)).view(m, r, N_RELATIONS)


def _placeholders_for_lazy(module, state_dict, prefix, local_metadata) -> None:
    for key, value in list(state_dict.items()):
        if key.startswith(prefix) and is_lazy(value):
            state_dict[key] = torch.empty(0)


def _lazy_from_placeholders(module, state_dict, prefix, *args) -> None:
    for name, param in module.named_parameters():
        key = prefix + name
        value = state_dict.get(key)
        if is_lazy(param) and isinstance(value, torch.Tensor) and not is_lazy(value) and value.numel() == 0:
            state_dict[key] = param  # lazy onto lazy: stays uninitialised

"""The tensor maths of comparative age estimation, stateless and documented with shapes.

Relations are coded as class indices: ``0`` = the first face is *younger* than the second,
``1`` = *similar* (``|a_i - a_j| < margin``), ``2`` = *older*. The code is chosen so that
swapping the two faces maps a relation ``c`` to ``2 - c`` (`SWAP`).
"""

from __future__ import annotations

import torch

YOUNGER, SIMILAR, OLDER = 0, 1, 2
N_RELATIONS = 3
#: ``relation(j, i) == SWAP[relation(i, j)]``: reversing the class axis swaps younger and older.
SWAP = (OLDER, SIMILAR, YOUNGER)


def relation(first: torch.Tensor, second: torch.Tensor, margin: float) -> torch.Tensor:
    """The relation of age ``first`` to age ``second``: younger (0), similar (1) or older (2).

    "Similar" is agemetric's margin rule
    (`agemetric.functional.margin_similarity()`):
    ``|a_i - a_j| < margin``, computed in float64. One addition: two *equal* labels are always
    similar, also at ``margin = 0`` (where the strict rule would call them neither similar nor
    ordered, and ``relation(i, j) = 2 - relation(j, i)`` would fail).

    Args:
        first: ages (any shape).
        second: ages, broadcastable with ``first``.
        margin: tolerance in years (label units).

    Returns:
        int64 tensor of the broadcast shape, values in ``{0, 1, 2}``.

    Examples:
        >>> relation(torch.tensor([20.0, 20.0, 20.0]), torch.tensor([30.0, 22.0, 10.0]), 4)
        tensor([0, 1, 2])
    """
    diff = first.double() - second.double()
    similar = (diff.abs() < margin) | (diff == 0)
    return torch.where(similar, SIMILAR, torch.where(diff < 0, YOUNGER, OLDER)).long()


def pair_features(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The comparator's input for ordered pairs: ``concat(e_i - e_j, |e_i - e_j|, (e_i + e_j) / 2)``.

    The three blocks split the pair by how they behave when the faces are swapped: the
    difference changes sign (it carries *which* face is older), the absolute difference does not
    (it carries *how far* apart they are: similar or not), and the mean does not either (it says
    *where* on the age scale the pair lies, since an embedding gap need not mean the same number
    of years at 5 and at 60). Together they are a linear re-basing of ``(e_i, e_j)`` plus the
    non-linear ``|e_i - e_j|``, so no information is lost.

    Args:
        first: ``(P, D)`` embeddings of the first faces.
        second: ``(P, D)`` embeddings of the second faces.

    Returns:
        ``(P, 3 D)`` float.
    """
    diff = first - second  # (P, D)
    return torch.cat([diff, diff.abs(), 0.5 * (first + second)], dim=1)  # (P, 3D)


def candidate_ages(ages: torch.Tensor) -> torch.Tensor:
    """The ages an estimate may take: every integer between the gallery's youngest and oldest age,
    with the two extremes themselves (they may be fractional).

    Args:
        ages: ``(N,)`` gallery ages, N >= 1.

    Returns:
        ``(C,)`` float32, sorted and unique, within ``[min(ages), max(ages)]``.

    Examples:
        >>> candidate_ages(torch.tensor([3.5, 6.0, 4.0]))
        tensor([3.5000, 4.0000, 5.0000, 6.0000])
    """
    lo, hi = float(ages.min()), float(ages.max())
    grid = torch.arange(int(torch.tensor(lo).floor()), int(torch.tensor(hi).ceil()) + 1, dtype=torch.float64)
    return torch.unique(grid.clamp(lo, hi)).float()  # (C,)


def relation_scores(log_probs: torch.Tensor, candidates: torch.Tensor, ref_ages: torch.Tensor, margin: float):
    """Log-likelihood of each candidate age given a query's comparisons with references.

    ``score[m, c] = sum_r log P(relation(candidates[c], ref_ages[r]) | query m, reference r)``:
    the references are treated as independent witnesses; a reference whose ``log_probs`` row is
    zero (an excluded one) does not count.

    Args:
        log_probs: ``(M, R, 3)`` log-probabilities of younger / similar / older for each
            (query, reference) pair.
        candidates: ``(C,)`` candidate ages.
        ref_ages: ``(R,)`` the references' ages.
        margin: the "similar" tolerance the comparator was trained with.

    Returns:
        ``(M, C)`` float32 scores.
    """
    rel = relation(candidates.view(-1, 1), ref_ages.view(1, -1), margin)  # (C, R)
    onehot = torch.nn.functional.one_hot(rel, N_RELATIONS).to(log_probs.dtype)  # (C, R, 3)
    return torch.einsum("mrk,crk->mc", log_probs, onehot)  # (M, C)

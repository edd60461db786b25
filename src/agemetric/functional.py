"""Pure tensor maths behind the default plugins.

Each function is stateless and documented with its shapes; the plugin classes in
`agemetric.default_plugins` are thin ``nn.Module`` wrappers over them.
"""

from __future__ import annotations

import torch

from agemetric.types import Pairs, Triplets

#: Q in eq. 2-4 of Jeong et al. (2018): the upper bound of the L1 distance.
Q_DEFAULT = 100.0
#: L_plus is quadratic up to ``LINEAR_FROM * Q`` and linear (its tangent) beyond, so that it stays
#: finite for huge distances (a diverging embedding) instead of overflowing to inf.
LINEAR_FROM = 1e4
#: The constant in L_minus; chosen in the paper so that L_minus and L_plus meet near D = Q / 2.
_DECAY = 2.77


def all_pairs(n: int, device: torch.device | str | None = None) -> Pairs:
    """Every unordered pair ``i < j`` of a batch of ``n`` items.

    Args:
        n: batch size B.
        device: where the index tensors live.

    Returns:
        ``Pairs`` of ``B (B - 1) / 2`` int64 indices, in row-major order of the upper triangle.

    Examples:
        >>> p = all_pairs(3)
        >>> p.first.tolist(), p.second.tolist()
        ([0, 0, 1], [1, 2, 2])
    """
    idx = torch.triu_indices(n, n, offset=1, device=device)  # (2, B(B-1)/2)
    return Pairs(idx[0], idx[1])


def pair_l1_distances(x: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """L1 distance between rows ``first[p]`` and ``second[p]`` of ``x``.

    Memory: with more pairs than rows (all pairs of a batch: ``P = B (B - 1) / 2``) the
    ``(B, B)`` distance matrix is computed by ``torch.cdist`` and the pairs are read from it, so
    no ``(P, D)`` difference tensor is built (B = 2048, D = 70: about 0.1 GB instead of 1.7 GB at
    peak, measured in ``benchmarks/throughput.py``). Few pairs are gathered directly.

    Args:
        x: ``(B, D)`` embeddings.
        first: ``(P,)`` int64 row indices.
        second: ``(P,)`` int64 row indices.

    Returns:
        ``(P,)`` distances ``||x[first] - x[second]||_1``.

    Examples:
        >>> x = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
        >>> pair_l1_distances(x, torch.tensor([0]), torch.tensor([1]))
        tensor([3.])
    """
    if first.numel() > x.shape[0]:
        full = torch.cdist(x.unsqueeze(0), x.unsqueeze(0), p=1)[0]  # (B, B)
        return full[first, second]  # (P,)
    return (x[first] - x[second]).abs().sum(dim=1)  # (P, D) -> (P,)


def margin_similarity(labels: torch.Tensor, first: torch.Tensor, second: torch.Tensor, margin: float) -> torch.Tensor:
    """Z of the paper: 1 where two labels count as "the same class".

    **Decision** (the method's decisions on the documentation's method page): ``Z = 1`` iff
    ``|a_i - a_j| < margin``, following Section 3
    ("if the difference between age is smaller than 4, two ages are considered to be in the
    same class", margin 4). The paper's Section 2.4 reads ``|a_i - a_j| <= m`` instead; on
    integer ages that reading with margin ``m`` equals this one with margin ``m + 1``.
    Margin 0.5 on integer labels means exact equality (the gender task's "margin 0").

    Args:
        labels: ``(B,)`` ages (or any numeric labels).
        first: ``(P,)`` int64.
        second: ``(P,)`` int64.
        margin: tolerance in label units.

    Returns:
        ``(P,)`` float tensor of 0s and 1s.

    Examples:
        >>> ages = torch.tensor([20.0, 23.0, 24.0])
        >>> margin_similarity(ages, torch.tensor([0, 0]), torch.tensor([1, 2]), 4)
        tensor([1., 0.])
    """
    gap = (labels[first].double() - labels[second].double()).abs()  # (P,), float64: exact for any margin
    return (gap < margin).to(torch.float32)


def all_triplets(labels: torch.Tensor, margin: float) -> Triplets:
    """Every ``(anchor, positive, negative)`` with ``|a - p| < margin <= |a - n|`` and ``p != a``.

    The age version of pytorch-metric-learning's ``get_all_triplets_indices`` (which calls only
    equal labels positive). There are up to ``B**3`` triplets: meant for batches of a few hundred.

    Args:
        labels: ``(B,)`` ages (or any numeric labels).
        margin: tolerance in label units.

    Returns:
        ``Triplets`` of int64 indices, ordered by anchor, then positive, then negative.

    Examples:
        >>> t = all_triplets(torch.tensor([20.0, 21.0, 40.0]), margin=4)
        >>> t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()
        ([0, 1], [1, 0], [2, 2])
    """
    gap = (labels.view(-1, 1).double() - labels.view(1, -1).double()).abs()  # (B, B)
    positive = gap < margin
    positive.fill_diagonal_(False)
    anchor, pos, neg = torch.where(positive.unsqueeze(2) & (gap >= margin).unsqueeze(1))  # each (T,)
    return Triplets(anchor, pos, neg)


def split_by_margin(
    labels: torch.Tensor, pairs: Pairs, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs as pytorch-metric-learning's ``(a1, p, a2, n)``: positive iff ``|a_i - a_j| < margin``.

    Each pair is used in both directions, as PML's own pair miners return them.

    Args:
        labels: ``(B,)`` ages.
        pairs: ``Pairs`` of ``P`` pairs.
        margin: tolerance in label units.

    Returns:
        ``(a1, p, a2, n)``: int64 tensors, ``len(a1) + len(a2) == 2 P``.

    Examples:
        >>> a1, p, a2, n = split_by_margin(torch.tensor([20.0, 22.0, 50.0]), all_pairs(3), margin=4)
        >>> a1.tolist(), p.tolist(), a2.tolist(), n.tolist()
        ([0, 1], [1, 0], [0, 1, 2, 2], [2, 2, 0, 1])
    """
    first = torch.cat([pairs.first, pairs.second])  # (2P,)
    second = torch.cat([pairs.second, pairs.first])  # (2P,)
    positive = margin_similarity(labels, first, second, margin).bool()  # (2P,)
    return first[positive], second[positive], first[~positive], second[~positive]


def revised_contrastive_loss(
    distances: torch.Tensor,
    similar: torch.Tensor,
    q: float = Q_DEFAULT,
    reduction: str = "mean",
) -> torch.Tensor:
    """The revised contrastive loss of Jeong et al. (2018), eq. 2-4.

    ``loss = (1 - Z) * L_minus(D) + Z * L_plus(D)`` with
    ``L_minus(D) = 2 Q exp(-2.77 D / Q)`` (pushes different ages apart) and
    ``L_plus(D) = (2 / Q) D^2`` (pulls similar ages together).

    **Guard** (not in the paper): beyond ``D_c = 1e4 Q`` (a distance of 10^6 for Q = 100) ``L_plus``
    continues linearly with the same value and slope, and the reduction accumulates in float64,
    so the loss and its gradient stay finite for distances up to about 10^33 (float32 holds 3.4e38).

    **Decision** (the method's decisions on the documentation's method page): the batch loss is
    the *mean* over all pairs (``reduction="mean"``),
    not pytorch-metric-learning's separate averaging of positive and negative pairs; that one is
    ``reduction="balanced"`` (the mean over similar pairs plus the mean over dissimilar pairs, so
    the few similar pairs of a batch weigh as much as the many dissimilar ones).
    An empty set of pairs gives a zero that keeps the graph.

    Args:
        distances: ``(P,)`` non-negative distances D.
        similar: ``(P,)`` Z in {0, 1}.
        q: Q, the upper bound of D.
        reduction: ``"mean"``, ``"balanced"``, ``"sum"`` or ``"none"``.

    Returns:
        A 0-d tensor, or ``(P,)`` for ``reduction="none"``.

    Examples:
        >>> d = torch.tensor([0.0, 0.0])
        >>> revised_contrastive_loss(d, torch.tensor([1.0, 0.0]), reduction="none")
        tensor([  0., 200.])
    """
    distances = distances.float()
    l_minus = 2.0 * q * torch.exp(-_DECAY * distances / q)  # (P,), in (0, 2Q] since D >= 0
    # L+ = 2 D^2 / Q, continued by its tangent beyond D_c = LINEAR_FROM * Q (value and slope match):
    # far past any distance training meets, and finite where D^2 would overflow float32
    d_c = LINEAR_FROM * q
    near = distances.clamp(max=d_c)
    l_plus = (2.0 / q) * near.square() + (4.0 * d_c / q) * (distances - near)  # (P,)
    # (1 - Z) L- + Z L+ for binary Z; `where` keeps an inf in the unused branch from making NaN
    per_pair = torch.where(similar > 0.5, l_plus, l_minus)  # (P,)
    if reduction == "none":
        return per_pair
    if reduction == "sum":
        return per_pair.sum(dtype=torch.float64).float()
    if reduction == "mean":  # accumulated in float64: a sum of large finite terms must not overflow
        return per_pair.mean(dtype=torch.float64).float() if per_pair.numel() else distances.sum() * 0.0
    if reduction == "balanced":  # the mean over similar pairs plus the mean over dissimilar pairs
        pos = similar > 0.5
        total = distances.sum().double() * 0.0
        for part in (per_pair[pos], per_pair[~pos]):
            if part.numel():
                total = total + part.mean(dtype=torch.float64)
        return total.float()
    raise ValueError(f"reduction must be 'mean', 'balanced', 'sum' or 'none', got {reduction!r}")


def knn_mean_age(neighbour_ages: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's estimate: the mean age of the k nearest gallery faces.

    Args:
        neighbour_ages: ``(M, k)`` ages of each query's neighbours.
        weights: ``(M, k)`` positive weights of the neighbours (e.g. how many training faces a
            reference stands for), or ``None`` for the plain mean.

    Returns:
        ``(M,)`` predicted ages.

    Examples:
        >>> knn_mean_age(torch.tensor([[20.0, 30.0], [40.0, 44.0]]))  # (M = 2, k = 2)
        tensor([25., 42.])
        >>> knn_mean_age(torch.tensor([[20.0, 30.0]]), weights=torch.tensor([[3.0, 1.0]]))
        tensor([22.5000])
    """
    if weights is None:
        return neighbour_ages.float().mean(dim=1)
    weights = weights.float()
    return (neighbour_ages.float() * weights).sum(dim=1) / weights.sum(dim=1)

"""The paper's miner: every unordered pair of the batch."""

from __future__ import annotations

import torch

from agemetric import functional as F
from agemetric.hookspecs import hookimpl
from agemetric.interfaces import Miner
from agemetric.types import Pairs


class AllPairsMiner(Miner):
    """Every pair ``i < j`` of the batch: ``B (B - 1) / 2`` pairs (the margin is not used).

    Examples:
        >>> len(AllPairsMiner()(torch.zeros(128, 70), torch.zeros(128)))
        8128
    """

    produces = Pairs

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Pairs:
        return F.all_pairs(embeddings.shape[0], device=embeddings.device)


@hookimpl
def register_miners(register):
    register("all-pairs", AllPairsMiner)

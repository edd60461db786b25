"""agemetric-pml: found through its entry point, passes agemetric's loss contract, and uses age margins."""

import pytest
import torch
from agemetric_pml import LOSSES

from agemetric import plugins
from agemetric.functional import all_pairs
from agemetric.testing import check_loss


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_registered_and_contract(name):
    assert name in plugins.list_names("loss")
    check_loss(name, miner="all-pairs")


def test_margin_decides_positives():
    """Two faces 2 years apart are pulled together with margin 4 and pushed apart with margin 1."""
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    ages = torch.tensor([30.0, 32.0])
    pairs = all_pairs(2)
    pull = plugins.create("loss", "pml-contrastive", margin=4)(emb, ages, pairs)
    push = plugins.create("loss", "pml-contrastive", margin=1)(emb, ages, pairs)
    # orthogonal unit vectors: distance sqrt(2) > pos_margin 0 (a positive costs), > neg_margin 1 (a negative is free)
    assert float(pull.detach()) > 0 and float(push.detach()) == 0

"""agemetric-pml: found through its entry point, passes agemetric's loss contract, and uses age margins."""

import itertools

import pytest
import torch
from agemetric_pml.losses import LOSSES
from hypothesis import given, settings
from hypothesis import strategies as st

from agemetric import plugins
from agemetric.config import resolve
from agemetric.estimator import AgeEstimator
from agemetric.functional import all_pairs
from agemetric.testing import check_loss, check_miner


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


def test_triplet_miner_contract_and_losses_take_its_triplets():
    check_miner("pml-triplet-margin")
    check_loss("pml-triplet", miner="pml-triplet-margin")
    check_loss("pml-contrastive", miner="pml-triplet-margin")


@settings(max_examples=40, deadline=None)
@given(
    ages=st.lists(st.integers(1, 30), min_size=2, max_size=9),
    kind=st.sampled_from(["all", "hard", "semihard", "easy"]),
    seed=st.integers(0, 1000),
)
def test_triplet_miner_matches_a_brute_force_loop(ages, kind, seed):
    """Kept (a, p, n): |a-p| < 4 <= |a-n| and PML's rule on d(a,n) - d(a,p) (integer L1 distances: no float ties)."""
    from pytorch_metric_learning.distances import LpDistance

    emb = torch.randint(-3, 4, (len(ages), 3), generator=torch.Generator().manual_seed(seed)).float()
    labels = torch.tensor(ages, dtype=torch.float32)
    distance = LpDistance(p=1, normalize_embeddings=False)
    miner = plugins.create(
        "miner", "pml-triplet-margin", margin=4, embedding_margin=1.0, type_of_triplets=kind, distance=distance
    )
    mined = miner(emb, labels)
    got = set(zip(mined.anchor.tolist(), mined.positive.tolist(), mined.negative.tolist(), strict=True))
    expected = set()
    for a, p, n in itertools.product(range(len(ages)), repeat=3):
        if a == p or not (abs(ages[a] - ages[p]) < 4 <= abs(ages[a] - ages[n])):
            continue
        gap = float((emb[a] - emb[n]).abs().sum() - (emb[a] - emb[p]).abs().sum())
        if {"all": gap <= 1, "hard": gap <= 0, "semihard": 0 < gap <= 1, "easy": gap > 1}[kind]:
            expected.add((a, p, n))
    assert got == expected


def test_triplet_miner_and_loss_train_in_the_estimator():
    config = resolve("quick", sets=["image_size=32", "embedding_dim=8", "loss=pml-triplet", "miner=pml-triplet-margin"])
    est = AgeEstimator.from_config(config)
    images = torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8)
    ages = torch.arange(16).float() * 3
    loss = est.training_loss(est.prepare(images), ages, torch.full((16,), -1))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in est.backbone.parameters())

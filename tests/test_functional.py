"""The maths of the default plugins against slow, obvious reference versions."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agemetric import functional as F
from agemetric.default_plugins.all_pairs import AllPairsMiner
from agemetric.default_plugins.revised_contrastive import RevisedContrastiveLoss


def reference_loss(emb, ages, margin, q=100.0):
    """Eq. 2-4 of Jeong et al., one pair at a time, in float64."""
    total, count = 0.0, 0
    n = emb.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            d = sum(abs(float(a) - float(b)) for a, b in zip(emb[i], emb[j], strict=True))
            z = 1.0 if abs(float(ages[i]) - float(ages[j])) < margin else 0.0
            l_minus = 2 * q * math.exp(-2.77 * d / q)
            l_plus = (2 / q) * d * d
            total += (1 - z) * l_minus + z * l_plus
            count += 1
    return total / count


def test_loss_matches_per_pair_loop():
    g = torch.Generator().manual_seed(0)
    for b, d, scale in [(2, 3, 1.0), (9, 70, 2.0), (17, 10, 20.0)]:
        emb = torch.randn(b, d, generator=g, dtype=torch.float64) * scale
        ages = torch.randint(1, 80, (b,), generator=g).double()
        for margin in (0.5, 4.0, 10.0):
            got = RevisedContrastiveLoss(margin=margin)(emb.float(), ages, F.all_pairs(b))
            want = reference_loss(emb.float().double(), ages, margin)
            assert abs(float(got) - want) <= 1e-5 * max(1.0, abs(want)), (b, d, margin, float(got), want)


@given(st.integers(min_value=0, max_value=60))
def test_all_pairs_count_and_range(b):
    pairs = F.all_pairs(b)
    assert len(pairs) == b * (b - 1) // 2
    if b >= 2:
        assert int(pairs.first.min()) >= 0 and int(pairs.second.max()) <= b - 1
        assert bool((pairs.first < pairs.second).all())
        # every unordered pair exactly once
        assert len({(int(i), int(j)) for i, j in zip(pairs.first, pairs.second, strict=True)}) == len(pairs)


batches = st.integers(min_value=2, max_value=24).flatmap(
    lambda b: st.tuples(
        st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=b * 4, max_size=b * 4),
        st.lists(st.integers(1, 90), min_size=b, max_size=b),
        st.randoms(use_true_random=False),
    )
)


@settings(max_examples=60, deadline=None)
@given(batches, st.floats(0, 12))
def test_loss_nonnegative_and_permutation_invariant(batch, margin):
    values, ages, rnd = batch
    b = len(ages)
    emb = torch.tensor(values).view(b, 4)
    ages = torch.tensor(ages, dtype=torch.float32)
    loss = RevisedContrastiveLoss(margin=margin)
    miner = AllPairsMiner()
    value = loss(emb, ages, miner(emb, ages))
    assert float(value) >= 0
    perm = list(range(b))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    permuted = loss(emb[perm], ages[perm], miner(emb[perm], ages[perm]))
    assert torch.allclose(value, permuted, rtol=1e-5, atol=1e-4)


@given(st.integers(1, 90), st.integers(0, 30), st.floats(0, 20))
def test_margin_semantics(age, gap, margin):
    ages = torch.tensor([float(age), float(age + gap)])
    z = F.margin_similarity(ages, torch.tensor([0]), torch.tensor([1]), margin)
    assert float(z) == (1.0 if gap < margin else 0.0)


def test_similar_pairs_pull_and_different_pairs_push():
    # Z = 1: loss grows with distance; Z = 0: loss shrinks with distance.
    d = torch.tensor([0.0, 10.0, 50.0])
    same = F.revised_contrastive_loss(d, torch.ones(3), reduction="none")
    diff = F.revised_contrastive_loss(d, torch.zeros(3), reduction="none")
    assert bool((same[1:] > same[:-1]).all()) and bool((diff[1:] < diff[:-1]).all())
    assert float(same[0]) == 0.0 and float(diff[0]) == 200.0


def test_loss_is_finite_for_huge_distances():
    d = torch.tensor([1e30, 1e6])
    diff = F.revised_contrastive_loss(d, torch.zeros(2), reduction="none")
    assert torch.isfinite(diff).all() and float(diff.max()) < 1e-3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1e33), min_size=1, max_size=50), st.lists(st.booleans(), min_size=50, max_size=50))
def test_loss_and_gradient_stay_finite_up_to_1e33(distances, similar):
    """A diverging embedding (similar pairs 1e33 apart) gives a finite loss and gradient, not inf/NaN."""
    d = torch.tensor(distances, requires_grad=True)
    z = torch.tensor(similar[: len(distances)]).float()
    loss = F.revised_contrastive_loss(d, z)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(d.grad).all()


@given(st.floats(0, 1e6 * 0.999))
def test_the_guard_leaves_the_papers_loss_alone_below_its_start(distance):
    """Up to D_c = 1e4 Q = 10^6 the loss is eq. 3 exactly; beyond, value and slope continue."""
    got = F.revised_contrastive_loss(torch.tensor([distance]), torch.ones(1), reduction="none")
    want = (2 / 100.0) * torch.tensor([distance]).square()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_the_guard_is_continuous_with_the_same_slope():
    d_c = F.LINEAR_FROM * F.Q_DEFAULT
    d = torch.tensor([d_c * (1 - 1e-6), d_c, d_c * (1 + 1e-6)], dtype=torch.float32, requires_grad=True)
    loss = F.revised_contrastive_loss(d, torch.ones(3), reduction="none")
    loss.sum().backward()
    torch.testing.assert_close(loss, (2 / F.Q_DEFAULT) * d.detach().square(), rtol=1e-5, atol=0)
    torch.testing.assert_close(d.grad, torch.full((3,), 4 * d_c / F.Q_DEFAULT), rtol=1e-5, atol=0)


def test_sum_reduction_and_empty_pairs():
    emb = torch.randn(5, 3, requires_grad=True)
    ages = torch.arange(5).float() * 10
    loss_sum = RevisedContrastiveLoss(margin=4, reduction="sum")(emb, ages, F.all_pairs(5))
    loss_mean = RevisedContrastiveLoss(margin=4)(emb, ages, F.all_pairs(5))
    assert torch.allclose(loss_sum, loss_mean * 10)
    zero = RevisedContrastiveLoss()(emb, ages, F.all_pairs(1))
    assert float(zero.detach()) == 0.0 and zero.requires_grad


@settings(max_examples=30, deadline=None)
@given(b=st.integers(2, 24), d=st.integers(1, 9), few=st.booleans(), seed=st.integers(0, 10_000))
def test_pair_l1_distances_and_gradients_match_a_per_pair_loop(b, d, few, seed):
    """Both paths (cdist for many pairs, gather for few) against sum(|x_i - x_j|) pair by pair."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    pairs = F.all_pairs(b)
    first, second = (pairs.first[:b], pairs.second[:b]) if few else (pairs.first, pairs.second)
    got = F.pair_l1_distances(x, first, second)
    weights = torch.rand(len(first), generator=g, dtype=torch.float64)
    (got * weights).sum().backward()
    expected_grad = torch.zeros_like(x)
    for p, (i, j) in enumerate(zip(first.tolist(), second.tolist(), strict=True)):
        assert math.isclose(
            float(got[p].detach()), float((x[i] - x[j]).detach().abs().sum()), rel_tol=1e-9, abs_tol=1e-9
        )
        sign = torch.sign(x[i] - x[j]).detach()
        expected_grad[i] += weights[p] * sign
        expected_grad[j] -= weights[p] * sign
    assert torch.allclose(x.grad, expected_grad, atol=1e-9)

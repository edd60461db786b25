"""The recipe's levers: balanced pair weighting, head learning rate, schedules, flip TTA, snapshots."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from agemetric import AgeEstimator, AgemetricError, resolve
from agemetric import functional as F
from agemetric.default_plugins.revised_contrastive import revised_contrastive
from agemetric.experiment import run
from agemetric.interfaces import Loss
from agemetric.losses import AgeClassifierLoss, PerPartLoss, RevisedContrastiveLoss, SumOfLosses
from agemetric.settings import TrainingSettings
from agemetric.testing import random_face_arrays
from agemetric.training import lr_factor, make_optimizer, parameter_groups
from agemetric.types import Pairs, Triplets


@given(
    st.lists(st.tuples(st.floats(0, 300), st.booleans()), min_size=1, max_size=30),
)
def test_balanced_reduction_is_the_mean_of_each_kind_of_pair_added(pairs):
    d = torch.tensor([p[0] for p in pairs])
    z = torch.tensor([float(p[1]) for p in pairs])
    per_pair = F.revised_contrastive_loss(d, z, reduction="none").tolist()
    pos = [v for v, (_, similar) in zip(per_pair, pairs, strict=True) if similar]
    neg = [v for v, (_, similar) in zip(per_pair, pairs, strict=True) if not similar]
    expected = (sum(pos) / len(pos) if pos else 0.0) + (sum(neg) / len(neg) if neg else 0.0)
    assert F.revised_contrastive_loss(d, z, reduction="balanced").item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_balanced_loss_keeps_the_graph_without_pairs():
    emb = torch.randn(1, 3, requires_grad=True)
    loss = F.revised_contrastive_loss(emb.sum(1)[:0], torch.zeros(0), reduction="balanced")
    assert loss.item() == 0.0


def test_lr_factor_warms_up_then_holds_or_decays():
    warm = TrainingSettings(warmup=0.1, lr_schedule="cosine")
    assert lr_factor(0.05, warm) == pytest.approx(0.5)
    assert lr_factor(0.1, warm) == pytest.approx(1.0)
    assert lr_factor(0.55, warm) == pytest.approx(0.5)
    assert lr_factor(1.0, warm) == pytest.approx(0.0, abs=1e-12)
    flat = dataclasses.replace(warm, lr_schedule="constant")
    assert lr_factor(0.9, flat) == 1.0 and lr_factor(0.0, flat) == pytest.approx(1e-3)


def test_heads_train_at_head_lr_and_the_trunk_at_lr():
    config = resolve("quick", sets=["lr=0.01", "head_lr=0.5", "image_size=32"])
    est = AgeEstimator.from_config(config, multitask=True)
    optimizer = make_optimizer(parameter_groups(est, config.training), config.training)
    trunk, heads = optimizer.param_groups
    assert (trunk["lr"], heads["lr"]) == (0.01, 0.5)
    head_ids = {id(p) for p in est.backbone.heads.parameters()}
    assert {id(p) for p in heads["params"]} == head_ids
    assert len(trunk["params"]) + len(heads["params"]) == len(list(est.parameters()))
    single = make_optimizer(parameter_groups(est, config.replace(head_lr=None).training), config.training)
    assert len(single.param_groups) == 1


@pytest.mark.parametrize("bad", ["head_lr=0", "warmup=1", "warmup=-0.1", "lr_schedule=step"])
def test_recipe_settings_are_checked(bad):
    with pytest.raises(AgemetricError):
        resolve("quick", sets=[bad])


def test_flip_tta_embeds_the_mean_of_the_image_and_its_mirror():
    config = resolve("quick", sets=["image_size=32"])
    est = AgeEstimator.from_config(config, multitask=False).eval()
    images = random_face_arrays(6, size=32).images
    plain = est.embed(images)
    mirrored = est.embed(images.flip(3))
    est.spec = dataclasses.replace(est.spec, tta_flip=True)
    torch.testing.assert_close(est.embed(images), (plain + mirrored) / 2)


def test_snapshots_evaluate_during_training_without_touching_the_run(tmp_path):
    sets = ["dataset_options.n=60", "epochs=2", "image_size=32", "batch_size=16", "k=3", "figures=false"]
    config = resolve("quick", sets=[*sets, f"out={tmp_path / 'a'}"])
    with_curve = run(config, snapshots=(0.0, 1e9))  # the first after step 1; the second never comes
    curve = with_curve.metrics["snapshots"]
    assert [s["mark"] for s in curve] == [0.0] and 0 < curve[0]["mae"] < 80 and 0 <= curve[0]["cs5"] <= 100
    without = run(config.replace(out=str(tmp_path / "b")))
    assert "snapshots" not in without.metrics
    assert math.isclose(with_curve.metrics["mae"], without.metrics["mae"], rel_tol=1e-6)  # same training


def test_auxiliary_age_classifier_adds_a_weighted_cross_entropy_and_trains_its_layer():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(6, 8, generator=g, requires_grad=True)
    ages = torch.tensor([3.4, 20.0, 22.0, 50.0, 50.6, 200.0])  # 200: clipped to the last class
    pairs = F.all_pairs(6)
    plain = RevisedContrastiveLoss()(emb, ages, pairs)
    with_head = revised_contrastive(classifier=2.5, classes=60)
    total = with_head(emb, ages, pairs)
    head = with_head.losses[1]
    assert isinstance(head, AgeClassifierLoss) and with_head.weights == (1.0, 2.5)
    logits = head.classifier(emb)  # every face is in some pair
    expected = plain + 2.5 * torch.nn.functional.cross_entropy(logits, torch.tensor([3, 20, 22, 50, 51, 59]))
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    total.backward()
    assert head.classifier.weight.grad is not None and emb.grad.abs().sum() > 0
    assert type(revised_contrastive()) is RevisedContrastiveLoss  # the paper's loss alone
    with pytest.raises(ValueError, match="classifier"):
        revised_contrastive(classifier=-1)


def test_the_age_classifier_alone_is_a_loss_on_the_paired_faces():
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(5, 4, generator=g)
    ages = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0])
    loss = AgeClassifierLoss(classes=60)
    only = Pairs(torch.tensor([0, 0]), torch.tensor([1, 3]))  # faces 0, 1 and 3 are paired
    value = loss(emb, ages, only)
    rows = torch.tensor([0, 1, 3])
    expected = torch.nn.functional.cross_entropy(loss.classifier(emb[rows]), ages[rows].long())
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="classes must be >= 2"):
        AgeClassifierLoss(classes=1)


def test_a_sum_of_losses_weighs_each_and_refuses_losses_taking_other_indices():
    g = torch.Generator().manual_seed(4)
    emb, ages = torch.randn(6, 8, generator=g), torch.arange(20.0, 26.0)
    paper, other = RevisedContrastiveLoss(margin=4), RevisedContrastiveLoss(margin=2, reduction="sum")
    summed = SumOfLosses([paper, other], [0.5, 2.0])(emb, ages)
    assert summed.item() == pytest.approx((0.5 * paper(emb, ages) + 2.0 * other(emb, ages)).item(), rel=1e-6)

    class TripletGap(Loss):
        accepts = Triplets

        def compute(self, embeddings, labels, indices):
            return embeddings.sum() * 0.0

    with pytest.raises(ValueError, match=r"take different indices \(Pairs, Triplets\)"):
        SumOfLosses([paper, TripletGap()])
    with pytest.raises(ValueError, match="2 losses but 1 weights"):
        SumOfLosses([paper, other], [1.0])


@given(st.integers(2, 4), st.integers(1, 3), st.integers(0, 2**16))
def test_parts_score_each_part_of_the_embedding_on_its_own_and_add_the_losses(parts, width, seed):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(7, parts * width, generator=g) * 20
    ages = torch.randint(0, 90, (7,), generator=g).float()
    pairs = F.all_pairs(7)
    expected = sum(RevisedContrastiveLoss()(chunk, ages, pairs) for chunk in emb.split(width, dim=1))
    assert revised_contrastive(parts=parts)(emb, ages, pairs).item() == pytest.approx(expected.item(), rel=1e-5)
    per_part = PerPartLoss([RevisedContrastiveLoss() for _ in range(parts)])
    assert per_part(emb, ages, pairs).item() == pytest.approx(expected.item(), rel=1e-5)


def test_parts_give_each_part_its_own_classifier_and_gradients_stay_in_their_part():
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(6, 8, generator=g, requires_grad=True)
    ages = torch.tensor([3.0, 20.0, 22.0, 50.0, 51.0, 70.0])
    pairs = F.all_pairs(6)
    loss = revised_contrastive(classifier=3.0, classes=80, parts=2)
    total = loss(emb, ages, pairs)
    heads = [part.losses[1].classifier for part in loss.losses]
    expected = sum(
        RevisedContrastiveLoss()(half, ages, pairs) + 3.0 * torch.nn.functional.cross_entropy(head(half), ages.long())
        for head, half in zip(heads, emb.split(4, dim=1), strict=True)
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    # the first half's gradient is that of the first part's loss alone: the second part does not reach it
    grad = torch.autograd.grad(loss(emb, ages, pairs), emb)[0]
    first_half = emb[:, :4]
    first_only = RevisedContrastiveLoss()(first_half, ages, pairs) + 3.0 * torch.nn.functional.cross_entropy(
        heads[0](first_half), ages.long()
    )
    torch.testing.assert_close(grad[:, :4], torch.autograd.grad(first_only, emb)[0][:, :4])
    with pytest.raises(ValueError, match="parts must be >= 1"):
        revised_contrastive(parts=0)
    with pytest.raises(ValueError, match="parts=9 needs at least as many"):
        revised_contrastive(parts=9)(emb, ages, pairs)
    # parts that do not divide the embedding: the first ones one dimension larger
    uneven = sum(RevisedContrastiveLoss()(chunk, ages, pairs) for chunk in (emb[:, :3], emb[:, 3:6], emb[:, 6:]))
    assert revised_contrastive(parts=3)(emb, ages, pairs).item() == pytest.approx(uneven.item(), rel=1e-5)


@pytest.mark.parametrize("parts", [1, 2])
def test_a_classifier_saved_when_the_loss_was_one_module_loads_into_the_composed_loss(parts):
    """Run folders and checkpoints written before the loss was composed keep the classifier under
    ``classifier.*`` (one part) or ``classifier.{part}.*``: they load, and score as they did."""
    g = torch.Generator().manual_seed(5)
    emb, ages = torch.randn(6, 8, generator=g), torch.tensor([3.0, 20.0, 22.0, 50.0, 51.0, 70.0])
    weights = [(torch.randn(80, 8 // parts, generator=g), torch.randn(80, generator=g)) for _ in range(parts)]
    if parts == 1:
        saved = {"classifier.weight": weights[0][0], "classifier.bias": weights[0][1]}
    else:
        saved = {
            f"classifier.{i}.{name}": w
            for i, pair in enumerate(weights)
            for name, w in zip(("weight", "bias"), pair, strict=True)
        }
    loss = revised_contrastive(classifier=3.0, classes=80, parts=parts)
    loss.load_state_dict(saved)
    expected = sum(
        RevisedContrastiveLoss()(half, ages) + 3.0 * torch.nn.functional.cross_entropy(half @ w.T + b, ages.long())
        for (w, b), half in zip(weights, emb.split(8 // parts, dim=1), strict=True)
    )
    assert loss(emb, ages).item() == pytest.approx(expected.item(), rel=1e-5)
    assert sorted(loss.state_dict()) == sorted(
        revised_contrastive(classifier=3.0, classes=80, parts=parts).state_dict()
    )


def test_label_sigma_trains_the_classifier_on_a_normal_distribution_over_the_ages():
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(5, 8, generator=g)
    ages = torch.tensor([0.0, 7.5, 30.0, 31.0, 59.0])
    pairs = F.all_pairs(5)
    loss = revised_contrastive(classifier=2.0, classes=60, label_sigma=3.0)
    total = loss(emb, ages, pairs)
    log_p = torch.log_softmax(loss.losses[1].classifier(emb), dim=1)  # (5, 60)
    expected = RevisedContrastiveLoss()(emb, ages, pairs).item()
    for i, age in enumerate(ages.tolist()):  # per face: -sum_c q_c log p_c, q a normal over 0..59 (normalised)
        q = [math.exp(-0.5 * ((c - age) / 3.0) ** 2) for c in range(60)]
        expected += 2.0 * -sum(qc / sum(q) * log_p[i, c].item() for c, qc in enumerate(q)) / 5
    assert total.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="label_sigma"):
        revised_contrastive(classifier=1.0, label_sigma=-1)
    with pytest.raises(ValueError, match="label_sigma"):
        revised_contrastive(label_sigma=-1)  # an option refused also where it would not be used


@pytest.mark.parametrize(
    ("parts", "label_sigma", "today"),
    [(1, 0.0, 260.8211669921875), (2, 0.0, 165.3852081298828), (2, 3.0, 166.53366088867188)],
)
def test_the_composed_loss_gives_the_one_module_loss_s_results_on_the_same_batch(parts, label_sigma, today):
    """``today``: what the loss gave on this batch when it was one module (classifier and parts
    inside the paper's loss), its classifiers' weights saved in that module's layout."""
    g = torch.Generator().manual_seed(7)
    emb = torch.randn(16, 70, generator=g) * 5
    ages = torch.randint(0, 90, (16,), generator=g).float()
    state = {}
    for part in range(parts):
        prefix = "classifier." if parts == 1 else f"classifier.{part}."
        state[prefix + "weight"] = torch.randn(81, 70 // parts, generator=g) * 0.1
        state[prefix + "bias"] = torch.randn(81, generator=g) * 0.1
    loss = revised_contrastive(margin=4, classifier=3.0, classes=81, label_sigma=label_sigma, parts=parts)
    loss.load_state_dict(state)
    assert loss(emb, ages, F.all_pairs(16)).item() == pytest.approx(today, rel=1e-6)

"""The public Python API: namespaces, losses without indices, and pytorch-metric-learning both ways."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

import agemetric
from agemetric import functional as F
from agemetric.losses import DEXLoss, L1RegressionLoss, Loss, RevisedContrastiveLoss
from agemetric.miners import AllPairsMiner, BatchMiner
from agemetric.pml import AgeToleranceMiner, CrossBatchMemory, from_indices_tuple, to_indices_tuple
from agemetric.types import Pairs, Samples, Triplets

NAMESPACES = {
    "backbone": "agemetric.backbones",
    "loss": "agemetric.losses",
    "miner": "agemetric.miners",
    "retriever": "agemetric.retrievers",
    "dataset": "agemetric.datasets",
    "framer": "agemetric.framers",
}

ages_strategy = st.lists(st.integers(0, 90), min_size=2, max_size=12).map(
    lambda a: torch.tensor(a, dtype=torch.float32)
)


# -- the namespace ------------------------------------------------------------------------------


def test_every_public_name_imports():
    for name in agemetric.__all__:
        assert getattr(agemetric, name) is not None, name
    done = subprocess.run(
        [sys.executable, "-c", "from agemetric import *; Samples; Face; Framer; print(len(dir()))"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_dir_lists_the_api_and_nothing_private():
    names = dir(agemetric)
    assert {"losses", "miners", "retrievers", "backbones", "pml", "Samples", "__version__"} <= set(names)
    assert not [n for n in names if n.startswith("_") and n != "__version__"]
    assert "TYPE_CHECKING" not in names and "importlib" not in names


def test_submodules_load_on_attribute_access():
    done = subprocess.run(
        [sys.executable, "-c", "import agemetric; print(agemetric.losses.RevisedContrastiveLoss.__name__)"],
        capture_output=True,
        text=True,
    )
    assert done.stdout.strip() == "RevisedContrastiveLoss", done.stderr


def test_help_lists_the_classes():
    import pydoc

    text = pydoc.render_doc(agemetric, renderer=pydoc.plaintext)
    for name in ("AgeEstimator", "Pairs", "Samples", "create", "list_names"):
        assert name in text


def test_help_reads_as_text_without_the_site_s_link_syntax():
    """Docstrings name objects in plain backticks (the site turns them into links)."""
    import pydoc
    import re

    modules = ["agemetric", "agemetric.pml", "agemetric.types", "agemetric.functional", *NAMESPACES.values()]
    for name in modules:
        text = pydoc.render_doc(importlib.import_module(name), renderer=pydoc.plaintext)
        assert not re.findall(r"\]\[[A-Za-z][\w.-]*\]", text), name


@pytest.mark.parametrize("kind", sorted(NAMESPACES))
def test_each_shipped_plugin_is_exported_in_its_namespace(kind):
    from agemetric.plugins import registry

    module = importlib.import_module(NAMESPACES[kind])
    exported = {getattr(module, n) for n in module.__all__}
    shipped = {e.factory for e in registry(kind).values() if e.factory.__module__.startswith("agemetric.")}
    assert shipped, kind
    assert shipped <= exported, sorted(f.__name__ for f in shipped - exported)


@pytest.mark.parametrize("kind", sorted(NAMESPACES))
def test_namespace_all_is_importable(kind):
    """Classes, and the functions registered as plugins' factories (a loss made of parts)."""
    from agemetric.plugins import registry

    factories = {e.factory for e in registry(kind).values()}
    module = importlib.import_module(NAMESPACES[kind])
    for name in module.__all__:
        assert isinstance(getattr(module, name), type) or getattr(module, name) in factories, name


# -- losses without indices ------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    ages=ages_strategy,
    margin=st.sampled_from([0.5, 2.0, 4.0, 10.0]),
    reduction=st.sampled_from(["mean", "balanced", "sum"]),
)
def test_a_pair_loss_without_indices_uses_every_pair(ages, margin, reduction):
    emb = torch.randn(len(ages), 5, generator=torch.Generator().manual_seed(len(ages)))
    loss = RevisedContrastiveLoss(margin=margin, reduction=reduction)
    expected = loss(emb, ages, F.all_pairs(len(ages)))
    assert torch.equal(loss(emb, ages), expected)


def test_the_three_lines_train():
    embeddings = torch.randn(16, 70, requires_grad=True)
    loss = RevisedContrastiveLoss(margin=4)
    loss(embeddings, torch.arange(20.0, 36.0)).backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0


def test_sample_losses_without_indices_use_every_sample():
    ages = torch.tensor([3.0, 40.0, 77.0])
    logits = torch.randn(3, 101)
    assert torch.equal(DEXLoss()(logits, ages), DEXLoss()(logits, ages, Samples(torch.arange(3))))
    direct = torch.randn(3, 1)
    assert torch.equal(L1RegressionLoss()(direct, ages), L1RegressionLoss()(direct, ages, BatchMiner()(direct, ages)))


class _TripletOnly(Loss):
    accepts = Triplets

    def compute(self, embeddings, labels, indices):
        return (embeddings[indices.anchor] - embeddings[indices.positive]).abs().sum() * 0 + len(indices)


def test_a_triplet_loss_without_indices_uses_every_age_triplet():
    ages = torch.tensor([20.0, 21.0, 40.0, 42.0])
    # positives within 4 years: (0,1), (1,0), (2,3), (3,2); each has 2 negatives
    assert _TripletOnly(margin=4)(torch.zeros(4, 2), ages).item() == 8


@settings(max_examples=30, deadline=None)
@given(ages=ages_strategy, margin=st.sampled_from([0.5, 3.0, 4.0]))
def test_all_triplets_against_a_loop(ages, margin):
    t = F.all_triplets(ages, margin)
    got = list(zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist(), strict=True))
    n = len(ages)
    want = [
        (a, p, q)
        for a in range(n)
        for p in range(n)
        for q in range(n)
        if p != a and abs(ages[a] - ages[p]) < margin <= abs(ages[a] - ages[q])
    ]
    assert got == want


# -- PML both ways ---------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(ages=ages_strategy, margin=st.sampled_from([0.5, 2.0, 4.0]))
def test_pairs_to_pml_against_a_loop(ages, margin):
    a1, p, a2, n = to_indices_tuple(F.all_pairs(len(ages)), ages, margin)
    pos, neg = set(zip(a1.tolist(), p.tolist(), strict=True)), set(zip(a2.tolist(), n.tolist(), strict=True))
    for i in range(len(ages)):
        for j in range(len(ages)):
            if i != j:
                assert ((i, j) in pos) == (abs(ages[i] - ages[j]) < margin)
                assert ((i, j) in neg) == (abs(ages[i] - ages[j]) >= margin)
    assert len(a1) + len(a2) == len(ages) * (len(ages) - 1)


def test_indices_tuple_round_trips():
    t = Triplets(torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 2]))
    back = from_indices_tuple(to_indices_tuple(t))
    assert isinstance(back, Triplets) and torch.equal(back.negative, t.negative)
    pairs = from_indices_tuple(
        to_indices_tuple(Pairs(torch.tensor([0, 0]), torch.tensor([1, 2])), torch.tensor([20.0, 21.0, 60.0]), 4)
    )
    assert sorted(zip(pairs.first.tolist(), pairs.second.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 0), (2, 0)]


def test_conversions_say_what_they_need():
    with pytest.raises(ValueError, match="labels and margin"):
        to_indices_tuple(F.all_pairs(3))
    with pytest.raises(ValueError, match="Samples"):
        to_indices_tuple(Samples(torch.arange(3)))
    with pytest.raises(ValueError, match="3 or 4 one-dimensional tensors"):
        from_indices_tuple((torch.tensor([0]), torch.tensor([1])))


def test_age_tolerance_miner_is_a_pml_miner():
    ages = torch.tensor([20.0, 22.0, 50.0, 53.0])
    miner = AgeToleranceMiner(margin=4)
    a1, p, a2, n = miner(torch.zeros(4, 3), ages)
    assert sorted(zip(a1.tolist(), p.tolist(), strict=True)) == [(0, 1), (1, 0), (2, 3), (3, 2)]
    assert miner.num_pos_pairs == 4 and miner.num_neg_pairs == 8
    # cross-batch form: every (query, reference) pair, split by the margin
    a1, p, a2, n = miner(torch.zeros(2, 3), ages[:2], torch.zeros(2, 3), ages[2:])
    assert len(a1) == 0 and len(a2) == 4


@pytest.mark.parametrize("pml_loss", ["ContrastiveLoss", "TripletMarginLoss", "MultiSimilarityLoss"])
def test_pml_losses_take_the_age_tolerance_miner(pml_loss):
    """Same value as PML's loss fed the hand-made tuple; and unlike label equality it sees age neighbours."""
    torch.manual_seed(0)
    emb = torch.randn(10, 4, requires_grad=True)
    ages = torch.tensor([20.0, 21.0, 22.0, 30.0, 31.0, 50.0, 51.0, 52.0, 70.0, 71.0])
    loss = getattr(pml_losses, pml_loss)()
    got = loss(emb, ages, AgeToleranceMiner(margin=4)(emb, ages))
    gap = (ages.view(-1, 1) - ages.view(1, -1)).abs()
    off_diagonal = ~torch.eye(10, dtype=torch.bool)
    a1, p = torch.where((gap < 4) & off_diagonal)
    a2, n = torch.where(gap >= 4)
    assert torch.allclose(got, loss(emb, ages, (a1, p, a2, n)))
    assert got.item() != loss(emb, ages).item()  # PML alone: every age distinct, so no positives
    got.backward()
    assert emb.grad.abs().sum() > 0


def test_an_agemetric_miner_inside_the_age_tolerance_miner():
    ages = torch.tensor([20.0, 22.0, 50.0])
    assert [t.tolist() for t in AgeToleranceMiner(4, miner=AllPairsMiner())(torch.zeros(3, 2), ages)] == [
        t.tolist() for t in AgeToleranceMiner(4)(torch.zeros(3, 2), ages)
    ]
    with pytest.raises(ValueError, match="Pairs or Triplets"):
        AgeToleranceMiner(4, miner=BatchMiner())


@pytest.mark.parametrize("miner", ["MultiSimilarityMiner", "PairMarginMiner", "BatchEasyHardMiner"])
def test_agemetric_losses_take_pml_miners_output(miner):
    torch.manual_seed(1)
    emb = torch.randn(12, 4)
    labels = torch.tensor([20.0, 20.0, 21.0, 30.0, 30.0, 31.0, 50.0, 50.0, 60.0, 60.0, 61.0, 70.0])
    mined = getattr(pml_miners, miner)()(emb, labels)
    loss = RevisedContrastiveLoss(margin=4)
    pairs = from_indices_tuple(mined)
    assert torch.equal(loss(emb, labels, mined), loss(emb, labels, pairs))
    if len(pairs):
        d = F.pair_l1_distances(emb, pairs.first, pairs.second)
        z = F.margin_similarity(labels, pairs.first, pairs.second, 4)
        assert torch.allclose(loss(emb, labels, mined), F.revised_contrastive_loss(d, z))


def _pair_loop(loss, emb, labels, first, second):
    """The revised contrastive loss of the pairs ``(emb[i], emb[j])``, one pair at a time."""
    terms = []
    for i, j in zip(first, second, strict=True):
        d = (emb[i] - emb[j]).abs().sum().double()
        similar = abs(float(labels[i]) - float(labels[j])) < loss.margin
        terms.append(2 / loss.q * d**2 if similar else 2 * loss.q * torch.exp(-2.77 / loss.q * d))
    return torch.stack(terms).mean()


def test_a_pml_triplet_miner_into_a_pair_loss_compares_anchors_with_positives_and_negatives():
    torch.manual_seed(2)
    emb, labels = torch.randn(6, 3), torch.tensor([1.0, 1.0, 5.0, 2.0, 30.0, 30.0])
    a, p, n = pml_miners.TripletMarginMiner(type_of_triplets="all")(emb, labels)
    loss = RevisedContrastiveLoss(margin=4)
    assert len(a) > 0
    want = _pair_loop(loss, emb, labels, [*a.tolist(), *a.tolist()], [*p.tolist(), *n.tolist()])
    assert torch.allclose(loss(emb, labels, (a, p, n)).double(), want)
    assert torch.allclose(loss(emb, labels, Triplets(a, p, n)).double(), want)
    with pytest.raises(ValueError, match="equal lengths"):
        loss(emb, labels, Triplets(a[:1], p, n))


def test_the_loss_takes_pml_keywords_indices_tuple_ref_emb_and_ref_labels():
    torch.manual_seed(3)
    emb, labels = torch.randn(5, 4), torch.tensor([20.0, 22.0, 40.0, 41.0, 70.0])
    ref, ref_labels = torch.randn(3, 4), torch.tensor([24.0, 42.0, 90.0])  # 24: exactly the margin from 20
    loss = RevisedContrastiveLoss(margin=4)
    mined = pml_miners.PairMarginMiner(pos_margin=0, neg_margin=100)(emb, labels)
    assert len(mined[0]) + len(mined[2]) > 0
    assert torch.equal(loss(emb, labels, indices_tuple=mined), loss(emb, labels, mined))
    # every (batch, reference) pair, against a loop over them
    every = [(i, j) for i in range(5) for j in range(3)]
    both, both_labels = torch.cat([emb, ref]), torch.cat([labels, ref_labels])
    want = _pair_loop(loss, both, both_labels, [i for i, _ in every], [5 + j for _, j in every])
    assert torch.allclose(loss(emb, labels, ref_emb=ref, ref_labels=ref_labels).double(), want)
    # a PML miner given the references: its positives and negatives are rows of ref_emb
    a1, p, a2, n = pml_miners.PairMarginMiner(pos_margin=0, neg_margin=100)(emb, labels, ref, ref_labels)
    first, second = torch.cat([a1, a2]).tolist(), (torch.cat([p, n]) + 5).tolist()
    got = loss(emb, labels, (a1, p, a2, n), ref, ref_labels)
    assert len(first) > 0 and torch.allclose(got.double(), _pair_loop(loss, both, both_labels, first, second))
    with pytest.raises(ValueError, match="ref_emb and ref_labels go together"):
        loss(emb, labels, ref_emb=ref)
    with pytest.raises(ValueError, match="second must lie in \\[0, 3\\)"):
        loss(emb, labels, Pairs(torch.tensor([0]), torch.tensor([4])), ref, ref_labels)
    with pytest.raises(ValueError, match="indices or indices_tuple, not both"):
        loss(emb, labels, mined, indices_tuple=mined)


def test_a_miner_that_finds_nothing_among_several_ages_is_warned_about_once(recwarn):
    loss = RevisedContrastiveLoss(margin=4)
    emb, ages = torch.randn(4, 3, requires_grad=True), torch.tensor([20.5, 33.1, 47.9, 61.2])
    mined = pml_miners.MultiSimilarityMiner()(emb, ages)  # label equality: nothing among unique ages
    assert all(len(t) == 0 for t in mined)
    assert float(loss(emb, ages, mined)) == 0.0
    assert float(loss(emb, ages, mined)) == 0.0
    (warning,) = [w for w in recwarn if "found no pair" in str(w.message)]
    assert "AgeToleranceMiner" in str(warning.message) and warning.filename == __file__
    # one age in the batch: nothing to find, nothing said
    other = RevisedContrastiveLoss(margin=4)
    same = torch.full((4,), 30.0)
    assert float(other(emb, same, (torch.zeros(0, dtype=torch.long),) * 4)) == 0.0
    assert len([w for w in recwarn if "found no pair" in str(w.message)]) == 1


def test_losses_and_miners_show_their_settings_and_refuse_a_margin_that_is_not_a_number():
    from agemetric.losses import RevisedContrastiveLoss
    from agemetric.miners import AllPairsMiner

    assert repr(RevisedContrastiveLoss(margin=6)) == "RevisedContrastiveLoss(margin=6, q=100, reduction='mean')"
    assert repr(AllPairsMiner(margin=2.5)) == "AllPairsMiner(margin=2.5)"
    for bad in (float("nan"), float("inf"), -1.0):
        for part in (RevisedContrastiveLoss, AllPairsMiner):
            with pytest.raises(ValueError, match="margin must be a finite number"):
                part(margin=bad)
    with pytest.raises(ValueError, match="q must be a finite number"):
        RevisedContrastiveLoss(q=float("nan"))


def test_mae_refuses_ages_of_different_shapes():
    from agemetric.metrics import mae

    with pytest.raises(ValueError, match=r"same shape, got \(2,\) and \(1,\)"):
        mae(torch.tensor([20.0, 30.0]), torch.tensor([22.0]))


def test_the_package_says_it_is_typed():
    from importlib import resources

    assert resources.files("agemetric").joinpath("py.typed").is_file()


@pytest.mark.parametrize("miner", [None, AgeToleranceMiner(margin=4)], ids=["every pair", "age miner"])
def test_cross_batch_memory_compares_each_face_with_the_memory_but_itself(miner):
    torch.manual_seed(5)
    loss, size = RevisedContrastiveLoss(margin=4), 10
    memory = CrossBatchMemory(loss, embedding_size=4, memory_size=size, miner=miner)
    slots_e, slots_a = torch.zeros(size, 4), torch.zeros(size)
    filled = 0
    for step in range(4):  # 6 faces a step: the memory (10) wraps round in the second
        emb, ages = torch.randn(6, 4, requires_grad=True), torch.randint(1, 80, (6,)).float()
        slots = [(6 * step + i) % size for i in range(6)]
        slots_e[slots], slots_a[slots] = emb.detach(), ages
        filled = min(size, filled + 6)
        pairs = [(i, j) for i in range(6) for j in range(filled) if j != slots[i]]
        both, both_ages = torch.cat([emb, slots_e[:filled]]), torch.cat([ages, slots_a[:filled]])
        want = _pair_loop(loss, both, both_ages, [i for i, _ in pairs], [6 + j for _, j in pairs])
        got = memory(emb, ages)
        assert torch.allclose(got.double(), want), step
        got.backward()
        assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_cross_batch_memory_keeps_pml_s_losses_and_refuses_what_it_cannot_feed():
    emb, ages = torch.randn(8, 4, requires_grad=True), torch.arange(20.0, 28.0)
    pml = CrossBatchMemory(pml_losses.ContrastiveLoss(), embedding_size=4, memory_size=16, miner=AgeToleranceMiner(4))
    assert torch.isfinite(pml(emb, ages))
    with pytest.raises(TypeError, match="scores single images"):
        CrossBatchMemory(L1RegressionLoss(), embedding_size=4)

    class TripletsOnly(Loss):
        accepts = Triplets

        def compute(self, embeddings, labels, indices):
            return embeddings.sum()

    with pytest.raises(TypeError, match="takes triplets, and the memory's own .* pairs are not: give it a miner"):
        CrossBatchMemory(TripletsOnly(), embedding_size=4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'distance'"):
        CrossBatchMemory(RevisedContrastiveLoss(), embedding_size=4, distance=None)
    with pytest.raises(TypeError, match="does not support ProxyAnchorLoss: agemetric's pair and triplet losses"):
        CrossBatchMemory(pml_losses.ProxyAnchorLoss(3, 4), embedding_size=4)
    with pytest.raises(ValueError, match=r"use AgeToleranceMiner\(margin\) alone"):
        CrossBatchMemory(RevisedContrastiveLoss(), 4, miner=AgeToleranceMiner(4, miner=AllPairsMiner()))
    with pytest.raises(ValueError, match="a batch of 8 embeddings is larger than memory_size=6"):
        CrossBatchMemory(RevisedContrastiveLoss(), embedding_size=4, memory_size=6)(emb, ages)


def test_cross_batch_memory_warns_once_when_a_pml_loss_would_pair_float_ages_by_equality():
    emb, ages = torch.randn(8, 4), torch.arange(20.0, 28.0) + 0.5
    memory = CrossBatchMemory(pml_losses.ContrastiveLoss(), embedding_size=4, memory_size=16)
    with pytest.warns(UserWarning, match=r"pairs equal labels only.*pass miner=AgeToleranceMiner\(margin\)") as said:
        memory(emb, ages)
        memory(emb, ages)
    assert len(said) == 1 and said[0].filename == __file__  # once, at the line that called the memory
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CrossBatchMemory(pml_losses.ContrastiveLoss(), embedding_size=4, memory_size=16)(emb, ages.long())  # classes
        CrossBatchMemory(RevisedContrastiveLoss(), embedding_size=4, memory_size=16)(emb, ages)  # margin decides


def test_wrong_arguments_are_value_errors_and_pml_conversions_are_named():
    from pytorch_metric_learning import losses as pml_losses_mod

    with pytest.raises(ValueError, match="labels must have 1 dimension"):
        RevisedContrastiveLoss()(torch.zeros(3, 2), torch.zeros(3, 1))
    emb, ages = torch.randn(4, 3), torch.tensor([20.0, 22.0, 40.0, 60.0])
    pairs = AllPairsMiner()(emb, ages)
    with pytest.raises(TypeError, match=r"to_indices_tuple\(pairs, ages, margin\)"):
        pml_losses_mod.ContrastiveLoss()(emb, ages, pairs)
    loss = pml_losses_mod.ContrastiveLoss()(emb, ages, to_indices_tuple(pairs, ages, 4.0))  # the conversion works
    assert torch.isfinite(loss)
    with pytest.raises(TypeError, match="use AgeToleranceMiner in its place"):
        AgeToleranceMiner(margin=4, miner=pml_miners.MultiSimilarityMiner())
    with pytest.raises(TypeError, match="Samples is not a pytorch-metric-learning indices_tuple"):
        pml_losses_mod.ContrastiveLoss()(emb, ages, BatchMiner()(emb, ages))


def test_the_loss_signature_shows_the_paper_s_q():
    import inspect

    assert inspect.signature(RevisedContrastiveLoss).parameters["q"].default == F.Q_DEFAULT == 100.0


@pytest.mark.parametrize("where", ["labels", "ref_labels"])
def test_a_nan_age_is_refused_by_losses_and_miners_not_taken_for_a_negative(where):
    from agemetric.losses import DEXLoss, RevisedContrastiveLoss
    from agemetric.miners import AllPairsMiner
    from agemetric.pml import AgeToleranceMiner

    embeddings, ages = torch.randn(4, 8), torch.tensor([20.0, 25.0, 30.0, 40.0])
    bad = torch.tensor([20.0, float("nan"), 30.0, 40.0])
    labels, refs = (bad, ages) if where == "labels" else (ages, bad)
    message = f"{where} must be finite numbers; 1 of 4 are not"
    for loss in (RevisedContrastiveLoss(), AgeToleranceMiner()):
        with pytest.raises(ValueError, match=message):
            loss(embeddings, labels, ref_emb=torch.randn(4, 8), ref_labels=refs)
    if where == "labels":
        for component in (RevisedContrastiveLoss(), DEXLoss(), AllPairsMiner(), AgeToleranceMiner()):
            with pytest.raises(ValueError, match=message):
                component(embeddings, labels)


def test_a_nan_query_is_refused_by_the_retriever_not_answered_with_an_age():
    from agemetric.retrievers import L1KNN

    retriever = L1KNN(k=2).fit(torch.randn(10, 8), torch.arange(10.0))
    queries = torch.randn(3, 8)
    queries[1, 2] = float("nan")
    with pytest.raises(ValueError, match="L1KNN: queries must be finite numbers; 1 of 24 are not"):
        retriever.predict(queries)


def test_int_ages_give_the_loss_of_the_same_ages_as_floats():
    from agemetric.losses import RevisedContrastiveLoss

    embeddings = torch.randn(4, 8, dtype=torch.float64)
    labels = torch.tensor([20, 25, 30, 40])  # int ages, as a dataset may give them
    loss = RevisedContrastiveLoss()
    assert torch.allclose(loss(embeddings, labels), loss(embeddings, labels.double()))


def test_a_k_as_large_as_the_gallery_is_warned_about():
    import warnings

    from agemetric.retrievers import L1KNN

    with pytest.warns(UserWarning, match="k = 100 is not less than the gallery's 100 items"):
        L1KNN(k=100).fit(torch.randn(100, 8), torch.arange(100.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L1KNN(k=99).fit(torch.randn(100, 8), torch.arange(100.0))


def test_an_agemetric_miner_given_references_says_what_to_use_instead():
    with pytest.raises(
        ValueError, match="mines within one batch and takes no ref_emb / ref_labels; .*AgeToleranceMiner"
    ):
        AllPairsMiner()(torch.randn(4, 8), torch.arange(4.0), torch.randn(3, 8), torch.arange(3.0))

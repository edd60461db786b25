"""agemetric-crcnn: registration, the loss contract and maths, the comparison estimate, persistence, the CLI."""

import json

import pytest
import torch
import torch.nn.functional as F
from agemetric_crcnn.functional import SWAP, candidate_ages, pair_features, relation
from agemetric_crcnn.loss import CRCNNLoss
from agemetric_crcnn.retriever import CRCNNCompare, select_references
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from agemetric import AgeEstimator, PluginError, plugins, resolve
from agemetric.cli import app
from agemetric.functional import all_pairs, margin_similarity
from agemetric.testing import check_loss, check_retriever, random_face_arrays
from agemetric.training import train

TINY = ["image_size=32", "embedding_dim=8", "gender_dim=4", "backbone_options.width=8", "k=3"]
CRCNN = ["loss=crcnn", "retriever=crcnn-compare", "batch_size=12", "epochs=1"]


def trained_loss(d=6, margin=4.0, seed=0) -> CRCNNLoss:
    """A CRCNN loss whose head has seen one batch of ``d``-dimensional embeddings (random weights)."""
    torch.manual_seed(seed)
    loss = CRCNNLoss(margin=margin, hidden=8)
    loss.logits(torch.zeros(1, d), torch.zeros(1, d))  # materialises the lazy first layer
    return loss


def perfect_loss(margin: float = 4.0, sharpness: float = 50.0) -> CRCNNLoss:
    """A head set by hand that knows the relation exactly when the embedding *is* the age (D = 1).

    Features are ``(d, |d|, mean)`` with ``d = a_i - a_j``; hidden units ``relu(d)``, ``relu(-d)``, ``1``;
    logits ``older = s (d - m + 1/2)``, ``younger = s (-d - m + 1/2)``, ``similar = 0``: exact on integer ages.
    """
    loss = CRCNNLoss(margin=margin, hidden=3)
    loss.logits(torch.zeros(1, 1), torch.zeros(1, 1))
    first, last = loss.head[0], loss.head[2]
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
        first.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
        shift = -(margin - 0.5)
        last.weight.copy_(sharpness * torch.tensor([[-1.0, 1.0, shift], [0.0, 0.0, 0.0], [1.0, -1.0, shift]]))
        last.bias.zero_()
    return loss


# -- registration and contracts ---------------------------------------------------------------


def test_registered():
    assert "crcnn" in plugins.list_names("loss")
    assert "crcnn-compare" in plugins.list_names("retriever")
    assert isinstance(plugins.create("loss", "crcnn", margin=4, hidden=16), CRCNNLoss)
    assert isinstance(plugins.create("retriever", "crcnn-compare", k=5, per_age=2), CRCNNCompare)


def test_loss_contract():
    check_loss("crcnn")
    check_loss("crcnn", miner="all-pairs", margin=0.5)  # the gender task's margin


def test_bad_options_are_reported():
    with pytest.raises(PluginError, match="hidden"):
        plugins.create("loss", "crcnn", margin=4, hidden=0)
    with pytest.raises(PluginError, match="per_age"):
        plugins.create("retriever", "crcnn-compare", k=5, per_age=0)


# -- relations ----------------------------------------------------------------------------------

ages_st = st.floats(min_value=-200, max_value=200, allow_nan=False, width=32)


@given(st.lists(st.tuples(ages_st, ages_st), min_size=1, max_size=20), st.floats(0, 50, allow_nan=False))
def test_relation_is_antisymmetric_and_uses_the_margin_rule(pairs, margin):
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    forward, backward = relation(a, b, margin), relation(b, a, margin)
    assert torch.equal(forward, 2 - backward)
    labels = torch.cat([a, b])
    n = len(pairs)
    similar = margin_similarity(labels, torch.arange(n), torch.arange(n) + n, margin).bool()
    assert torch.equal(forward == 1, similar | (a.double() == b.double()))
    assert torch.equal(forward[~similar] == 0, (a < b)[~similar])


def test_candidates_span_the_gallery():
    assert candidate_ages(torch.tensor([3.5, 6.0, 4.0])).tolist() == [3.5, 4.0, 5.0, 6.0]
    assert candidate_ages(torch.tensor([30.0])).tolist() == [30.0]


# -- the loss -----------------------------------------------------------------------------------


def test_cross_entropy_matches_a_per_pair_loop():
    torch.manual_seed(0)
    emb = torch.randn(5, 4, requires_grad=True)
    ages = torch.tensor([20.0, 23.0, 40.0, 18.0, 40.0])
    loss = CRCNNLoss(margin=4, hidden=8)
    pairs = all_pairs(5)
    value = loss(emb, ages, pairs)
    terms = []
    for i, j in zip(pairs.first.tolist(), pairs.second.tolist(), strict=True):
        for x, y in ((i, j), (j, i)):
            gap = float(ages[x] - ages[y])
            target = 1 if abs(gap) < 4 else (0 if gap < 0 else 2)
            feats = torch.cat([emb[x] - emb[y], (emb[x] - emb[y]).abs(), (emb[x] + emb[y]) / 2])
            terms.append(F.cross_entropy(loss.head(feats.view(1, -1)), torch.tensor([target])))
    expected = torch.stack(terms).mean()
    assert torch.allclose(value, expected, atol=1e-6)
    value.backward()
    assert emb.grad is not None and loss.head[0].weight.grad is not None


def test_features_swap_only_the_difference():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    ab, ba = pair_features(a, b), pair_features(b, a)
    assert torch.equal(ab[:, :4], -ba[:, :4]) and torch.equal(ab[:, 4:], ba[:, 4:])


def test_head_parameters_train_with_the_estimator():
    est = AgeEstimator.from_config(resolve("quick", sets=[*TINY, *CRCNN]), multitask=True)
    names = [name for name, _ in est.named_parameters()]
    assert any(n.startswith("loss.head.") for n in names) and any(n.startswith("gender_loss.head.") for n in names)
    settings = resolve("quick", sets=[*TINY, *CRCNN]).training
    history = train(est, random_face_arrays(), settings)  # channels_last on: the lazy head must survive .to()
    assert history and est.loss.initialized
    assert est.loss.head[0].weight.shape == (64, 3 * 8)  # hidden 64, features of an 8-d age embedding
    assert est.gender_loss.head[0].weight.shape == (64, 3 * 4)  # the gender task: a 4-d embedding


def test_log_probs_are_antisymmetric():
    loss = trained_loss(d=5)
    q, r = torch.randn(4, 5), torch.randn(3, 5)
    qr, rq = loss.pair_log_probs(q, r), loss.pair_log_probs(r, q)  # (4, 3, 3), (3, 4, 3)
    assert torch.allclose(qr, rq.transpose(0, 1)[..., list(SWAP)], atol=1e-6)


# -- the comparison estimate --------------------------------------------------------------------


def reference_predict(loss, gallery, ages, references, queries, exclude=None):
    """The estimate written as plain loops: for each query and candidate, sum log P over references."""
    cands = sorted({float(a) for a in range(int(ages.min()), int(ages.max()) + 1)} | {float(ages.min())})
    out = []
    for m, q in enumerate(queries):
        best, best_score = None, None
        for a in cands:
            score = 0.0
            for r in references.tolist():
                if exclude is not None and r == int(exclude[m]):
                    continue
                gap = a - float(ages[r])
                rel = 1 if abs(gap) < loss.margin else (0 if gap < 0 else 2)
                fwd = loss.logits(q.view(1, -1), gallery[r].view(1, -1)).log_softmax(1)[0, rel]
                bwd = loss.logits(gallery[r].view(1, -1), q.view(1, -1)).log_softmax(1)[0, 2 - rel]
                score += 0.5 * float(fwd + bwd)
            if best_score is None or score > best_score + 1e-9:
                best, best_score = a, score
        out.append(best)
    return torch.tensor(out)


def test_vectorised_estimate_matches_the_loops():
    torch.manual_seed(1)
    gallery, ages = torch.randn(30, 6), torch.randint(10, 25, (30,)).float()
    loss = trained_loss(d=6, margin=3)
    r = CRCNNCompare(k=3, per_age=2, chunk=7)  # chunks smaller than one query's references
    r.attach(loss)
    r.fit(gallery, ages)
    queries = torch.cat([torch.randn(4, 6), gallery[:3]])
    exclude = torch.tensor([-1, -1, -1, -1, 0, 1, 2])
    with torch.no_grad():
        for ex in (None, exclude):
            got = r.predict(queries, exclude=ex)
            assert torch.equal(got, reference_predict(loss, gallery, ages, r.references, queries, ex))


def test_a_perfect_comparator_recovers_the_true_age_exactly():
    ages = torch.arange(5, 61).float().repeat_interleave(2)  # every age twice
    gallery = ages.view(-1, 1) + 0.0  # the embedding is the age
    r = CRCNNCompare(k=3, per_age=1)
    r.attach(perfect_loss(margin=4))
    r.fit(gallery, ages)
    assert len(r.references) == 56  # one per integer age
    truth = torch.tensor([5.0, 6.0, 12.0, 33.0, 47.0, 59.0, 60.0])
    assert torch.equal(r.predict(truth.view(-1, 1)), truth)


def test_references_are_the_most_typical_faces_of_each_age():
    emb = torch.tensor([[0.0], [10.0], [1.0], [2.0], [5.0], [5.0]])
    ages = torch.tensor([30.0, 30.0, 30.4, 30.0, 41.0, 41.9])
    # age 30: mean of 0, 10, 1, 2 is 3.25 -> 2 (idx 3) then 1 (idx 2); age 41: a tie, kept in order
    assert select_references(emb, ages, per_age=2).tolist() == [3, 2, 4, 5]
    assert select_references(emb, ages, per_age=1).tolist() == [3, 4]


def test_retriever_contract_and_references_survive_save_load(tmp_path):
    check_retriever("crcnn-compare")  # attaches a `crcnn` loss: the retriever refuses the others
    g = torch.Generator().manual_seed(1)
    emb, ages = torch.randn(40, 6, generator=g), torch.randint(1, 80, (40,), generator=g).float()
    r = plugins.create("retriever", "crcnn-compare", k=5)
    r.attach(trained_loss(d=6))
    r.fit(emb, ages)
    torch.save(r.state_dict(), tmp_path / "r.pt")
    again = plugins.create("retriever", "crcnn-compare", k=5)
    again.load_state_dict(torch.load(tmp_path / "r.pt", weights_only=True))
    assert torch.equal(again.references, r.references)


def test_the_estimator_refuses_another_loss():
    with pytest.raises(PluginError, match="works only with --loss crcnn, got loss 'revised-contrastive'"):
        AgeEstimator.from_config(resolve("quick", sets=[*TINY, "retriever=crcnn-compare"]))


def test_predict_needs_the_crcnn_loss():
    r = CRCNNCompare(k=3).fit(torch.randn(10, 4), torch.arange(10).float())
    with pytest.raises(PluginError, match="--loss crcnn"):
        r.predict(torch.randn(2, 4))
    with pytest.raises(PluginError, match="works only with --loss crcnn"):
        r.attach(plugins.create("loss", "revised-contrastive", margin=4))
    r.attach(CRCNNLoss())  # never saw a batch
    with pytest.raises(PluginError, match="untrained"):
        r.predict(torch.randn(2, 4))


# -- persistence and the command line -----------------------------------------------------------


def test_save_and_load_keep_predictions(tmp_path):
    torch.manual_seed(0)
    config = resolve("quick", sets=[*TINY, *CRCNN])
    est = AgeEstimator.from_config(config, multitask=True)
    data = random_face_arrays()
    train(est, data, config.training)
    est.fit_gallery(data)
    before = est.predict(data.images[:6])
    est.save(tmp_path / "model.pt")
    again = AgeEstimator.load(tmp_path / "model.pt")
    assert again.retriever.comparator is again.loss
    assert torch.equal(again.loss.head[0].weight, est.loss.head[0].weight)
    assert torch.allclose(again.predict(data.images[:6]), before)


def test_an_untrained_head_saves_and_loads(tmp_path):
    """--epochs 0: the lazy head is saved as placeholders and comes back uninitialised."""
    est = AgeEstimator.from_config(resolve("quick", sets=[*TINY, *CRCNN]), multitask=True)
    est.fit_gallery(random_face_arrays())
    est.save(tmp_path / "model.pt")
    again = AgeEstimator.load(tmp_path / "model.pt")
    assert not again.loss.initialized
    with pytest.raises(PluginError, match="untrained"):
        again.predict(random_face_arrays().images[:2])


def test_cli_run_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("AGEMETRIC_CACHE", str(tmp_path / "cache"))  # never the user's image cache
    out = tmp_path / "run"
    args = ["run", "--loss", "crcnn", "--retriever", "crcnn-compare", "--epochs", "1", "--limit", "300"]
    args += ["--image-size", "32", "--batch-size", "16", "--k", "5", "--set", "backbone_options.width=8"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == 60 and metrics["mae"] >= 0
    predicted = [float(line.split(",")[2]) for line in (out / "predictions.csv").read_text().splitlines()[1:]]
    assert all(p == int(p) for p in predicted)  # integer candidates (the synthetic ages are integers)

"""The estimator: compatibility check, multi-task loss, save/load."""

import dataclasses

import pytest
import torch

from agemetric import hookimpl, plugins
from agemetric.config import resolve
from agemetric.errors import AgemetricError, PluginError
from agemetric.estimator import AgeEstimator
from agemetric.interfaces import Miner
from agemetric.testing import random_face_arrays
from agemetric.types import Pairs, Triplets

TINY = ["image_size=32", "embedding_dim=8", "gender_dim=4", "backbone_options.width=8", "k=3"]


class TripletMiner(Miner):
    produces = Triplets

    def mine(self, embeddings, labels):
        i = torch.zeros(1, dtype=torch.int64)
        return Triplets(i, i + 1, i + 2)


def test_incompatible_miner_and_loss_fail_at_construction():
    mod = type("M", (), {"register_miners": staticmethod(hookimpl(lambda register: register("trip", TripletMiner)))})
    plugins.load_plugins().register(mod, name="trip_plugin")
    plugins.reset()
    try:
        expected = r"miner .trip. .plugin .trip_plugin., TripletMiner. produces Triplets but loss .revised.contrastive"
        with pytest.raises(PluginError, match=expected + ".*accepts Pairs"):
            AgeEstimator.from_config(resolve("quick", sets=[*TINY, "miner=trip"]))
    finally:
        plugins.pm.unregister(mod)
        plugins.reset()


def test_multitask_loss_has_both_parts_and_ignores_unknown_genders():
    torch.manual_seed(0)
    est = AgeEstimator.from_config(resolve("quick", sets=TINY), multitask=True)
    data = random_face_arrays()
    genders = data.genders.clone()
    genders[:5] = -1
    parts = est.training_loss(est.prepare(data.images), data.ages, genders)
    assert set(parts) == {"loss", "age", "gender"}
    assert torch.allclose(parts["loss"].detach(), parts["age"] + parts["gender"])
    parts["loss"].backward()
    assert est.backbone.heads.gender[1].weight.grad is not None


def test_single_task_has_no_gender_head():
    est = AgeEstimator.from_config(resolve("quick", sets=TINY), multitask=False)
    assert est.backbone.gender_dim == 0 and est.gender_loss is None


def test_save_and_load_give_the_same_predictions(tmp_path):
    torch.manual_seed(0)
    est = AgeEstimator.from_config(resolve("quick", sets=TINY), multitask=True)
    data = random_face_arrays()
    est.fit_gallery(data)
    before = est.predict(data.images[:6])
    est.save(tmp_path / "model.pt")
    again = AgeEstimator.load(tmp_path / "model.pt")
    assert torch.allclose(again.predict(data.images[:6]), before)
    assert again.spec == est.spec and again.spec.multitask
    from_folder = AgeEstimator.load(str(tmp_path))  # a run folder: its model.pt
    assert torch.allclose(from_folder.predict(data.images[:6]), before)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AgemetricError, match="empty is a folder without a model.pt: give a run folder or a model"):
        AgeEstimator.load(tmp_path / "empty")


def test_model_files_of_the_first_format_still_load(tmp_path):
    """model.pt once stored the whole run config and the gender task beside it (format 1)."""
    config = resolve("quick", sets=TINY)
    est = AgeEstimator.from_config(config, multitask=True)
    est.fit_gallery(random_face_arrays())
    est.save(tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=False)
    del state["spec"]
    state.update(format=1, config={**config.flat(), "multitask": "auto"}, multitask=True)  # flat, as it was
    torch.save(state, tmp_path / "old.pt")
    old = AgeEstimator.load(tmp_path / "old.pt")
    assert old.spec == est.spec
    images = random_face_arrays().images[:4]
    torch.testing.assert_close(old.predict(images), est.predict(images))


def test_weights_file_round_trip(tmp_path):
    """--weights PATH loads a backbone saved by agemetric (trunk + heads)."""
    torch.manual_seed(0)
    first = plugins.create("backbone", "small_cnn", embedding_dim=8, gender_dim=0, width=8)
    torch.save(first.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(1)
    second = plugins.create(
        "backbone", "small_cnn", embedding_dim=8, gender_dim=0, width=8, weights=str(tmp_path / "w.pt")
    )
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_small_cnn_saved_without_the_stem_loads_and_estimates_as_it_did(tmp_path):
    """Models of the small CNN's earlier layout (no strided stem) keep loading from model.pt."""
    import agemetric
    from agemetric.default_plugins.small_cnn import SmallCNN

    config = agemetric.resolve("quick", sets=["image_size=32", "k=3", "backbone_options.stem=none"])
    old = agemetric.AgeEstimator.from_config(config)
    old.fit_gallery(random_face_arrays(12, size=32, seed=0))
    old.save(tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=False)
    state["spec"]["backbone_options"].pop("stem")  # as the earlier versions wrote it
    torch.save(state, tmp_path / "model.pt")
    loaded = agemetric.AgeEstimator.load(tmp_path / "model.pt")
    assert loaded.backbone.stem == "none" and SmallCNN(weights="none").stem == "strided"
    images = random_face_arrays(4, size=32, seed=1).images
    torch.testing.assert_close(loaded.predict(images), old.predict(images))
    with pytest.raises(ValueError, match="stem must be 'strided' or 'none'"):
        SmallCNN(stem="wide")


def test_bad_weights_files_are_clear_errors(tmp_path):
    from agemetric.errors import AgemetricError

    with pytest.raises(AgemetricError, match=r"no such file .*missing.pt' \(SmallCNN takes 'none' or a state-dict"):
        plugins.create("backbone", "small_cnn", weights=str(tmp_path / "missing.pt"))
    takes = r"\(ResNet18 takes 'none', 'imagenet', 'IMAGENET1K_V1', 'DEFAULT' or a state-dict file\)"
    with pytest.raises(AgemetricError, match=rf"no such file 'imagenett' {takes}; did you mean 'imagenet'\?"):
        plugins.create("backbone", "resnet18", weights="imagenett")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(AgemetricError, match="cannot read"):
        plugins.create("backbone", "small_cnn", weights=str(tmp_path / "junk.pt"))
    torch.save({"trunk.0.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(AgemetricError, match="does not fit SmallCNN"):
        plugins.create("backbone", "small_cnn", weights=str(tmp_path / "other.pt"))


def test_inception_imagenet_weights_load_from_the_torch_hub_cache(tmp_path, monkeypatch):
    """The real torchvision loading path, fed from a local cache file (no network)."""
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    filename = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    torch.save(reference.state_dict(), cache / filename)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    backbone = plugins.create("backbone", "inception_v3", embedding_dim=8, gender_dim=0, weights="imagenet")
    assert torch.equal(backbone.trunk.Conv2d_1a_3x3.conv.weight, reference.Conv2d_1a_3x3.conv.weight)
    assert backbone.trunk.transform_input  # torchvision's setting for these weights


@pytest.mark.parametrize("name, arch", [("mobilenet_v2", "mobilenet_v2"), ("resnet18", "resnet18")])
def test_torchvision_imagenet_weights_load_from_the_torch_hub_cache(tmp_path, monkeypatch, name, arch):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.get_model(arch, weights=None)
    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / weights.url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    backbone = plugins.create("backbone", name, embedding_dim=8, gender_dim=0, weights="imagenet")
    trunk_state = backbone.trunk.state_dict()
    for key, value in reference.state_dict().items():
        if key in trunk_state:
            assert torch.equal(trunk_state[key], value), key
    # the same torchvision file given as a path loads into the trunk too
    by_path = plugins.create(
        "backbone", name, embedding_dim=8, gender_dim=0, weights=str(cache / weights.url.rsplit("/", 1)[1])
    )
    assert all(torch.equal(by_path.trunk.state_dict()[k], v) for k, v in trunk_state.items())


def test_head_none_makes_the_pooled_features_the_embedding():
    backbone = plugins.create("backbone", "small_cnn", gender_dim=0, width=8, head="none")
    assert backbone.embedding_dim == 64  # 8 * width
    out = backbone(torch.randn(2, 3, 32, 32))
    assert out.age.shape == (2, 64)
    with pytest.raises(PluginError, match="head must be 'linear' or 'none'"):
        plugins.create("backbone", "small_cnn", head="mlp")


class RecordingMiner(Miner):
    """All pairs, remembering the margin it was made with and the labels it was called on."""

    def __init__(self, margin: float = 4.0):
        super().__init__()
        self.margin, self.calls = margin, []

    def mine(self, embeddings, labels):
        self.calls.append(labels.clone())
        i, j = torch.triu_indices(len(labels), len(labels), offset=1)
        return Pairs(i, j)


def test_the_gender_task_has_its_own_miner_at_its_own_margin():
    mod = type("R", (), {"register_miners": staticmethod(hookimpl(lambda register: register("rec", RecordingMiner)))})
    plugins.load_plugins().register(mod, name="rec_plugin")
    plugins.reset()
    try:
        est = AgeEstimator.from_config(
            resolve("quick", sets=[*TINY, "miner=rec", "gender_margin=0.25"]), multitask=True
        )
        assert est.miner is not est.gender_miner and (est.miner.margin, est.gender_miner.margin) == (4.0, 0.25)
        assert est.gender_loss.margin == 0.25
        data = random_face_arrays()
        est.training_loss(est.prepare(data.images), data.ages, data.genders)
        assert len(est.miner.calls) == 1 and est.miner.calls[0].max() > 1  # ages
        assert len(est.gender_miner.calls) == 1 and set(est.gender_miner.calls[0].tolist()) <= {0.0, 1.0}
        other = AgeEstimator.from_config(resolve("quick", sets=[*TINY, "miner=rec", "gender_miner=all-pairs"]), True)
        assert type(other.gender_miner).__name__ == "AllPairsMiner" and type(other.miner) is RecordingMiner
    finally:
        plugins.pm.unregister(mod)
        plugins.reset()


def test_subnormal_weights_are_flushed_to_zero_and_normal_ones_kept():
    from agemetric.devices import flush_subnormals

    tiny = torch.finfo(torch.float32).tiny
    layer = torch.nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[tiny / 4, -tiny / 2, tiny, 0.5]] * 3))
    assert flush_subnormals(layer) == 6
    assert layer.weight[0].tolist() == [0.0, 0.0, tiny, 0.5]  # the smallest normal number stays
    assert flush_subnormals(layer) == 0


def test_a_model_saved_with_subnormal_weights_loads_without_them(tmp_path):
    torch.manual_seed(0)
    est = AgeEstimator.from_config(resolve("quick", sets=TINY), multitask=False)
    est.fit_gallery(random_face_arrays())
    weight = next(est.backbone.parameters())
    with torch.no_grad():
        weight.view(-1)[:5] = torch.finfo(torch.float32).tiny / 8
    est.save(tmp_path / "model.pt")
    again = next(AgeEstimator.load(tmp_path / "model.pt").backbone.parameters())
    assert (again.view(-1)[:5] == 0).all() and torch.equal(again.view(-1)[5:], weight.view(-1)[5:])


def test_embedding_is_done_in_eval_mode_and_leaves_the_mode_as_it_was():
    est = AgeEstimator.from_config(resolve("quick", sets=TINY), multitask=False)
    images = random_face_arrays(8, size=32).images
    expected = est.eval().embed(images)
    est.train()
    torch.testing.assert_close(est.embed(images), expected)  # dropout and batch statistics off
    assert all(m.training for m in est.modules())
    est.eval()
    est.backbone.train()  # a part left in training mode is still embedded in eval mode
    torch.testing.assert_close(est.embed(images), expected)


def test_bfloat16_estimation_runs_a_copy_with_cast_weights_that_follows_the_model():
    est = AgeEstimator.from_config(resolve("quick", sets=[*TINY, "bf16=on"]), multitask=False).eval()
    images = random_face_arrays(6, size=32).images
    keys = set(est.state_dict())

    def plain():  # autocast over the model itself, casting its weights on every call
        with torch.no_grad(), est.autocast():
            return est.backbone(est.prepare(images)).age.float()

    assert torch.equal(est.embed(images), plain())
    with torch.no_grad():
        next(est.backbone.parameters()).mul_(-1)  # changed in place, as an optimizer step does
    assert torch.equal(est.embed(images), plain())
    assert set(est.state_dict()) == keys  # the copy is not part of the model


def test_an_estimator_built_from_parts_takes_its_gender_miner_from_the_settings():
    """Built directly with a gender loss and no gender miner: the settings' miner at the settings'
    gender margin, as a run would make it (the defaults: all pairs at 0.5)."""
    from agemetric.config import RunConfig
    from agemetric.spec import ModelSpec, build_parts

    config = RunConfig.from_flat(backbone="small_cnn", image_size=32, backbone_options={"width": 4}, gender_margin=0.25)
    spec = ModelSpec.from_config(config, True)
    parts = build_parts(spec)
    est = AgeEstimator(parts.backbone, parts.miner, parts.loss, parts.retriever, parts.gender_loss, 32, spec)
    assert type(est.gender_miner).__name__ == "AllPairsMiner" and est.gender_miner.margin == 0.25
    plain = AgeEstimator(parts.backbone, parts.miner, parts.loss, parts.retriever, parts.gender_loss, 32)
    assert plain.gender_miner.margin == RunConfig().model.gender_margin == 0.5


@pytest.mark.parametrize("tta_flip", [False, True])
@pytest.mark.parametrize("batch_size", [3, 256])
def test_embed_parts_gives_each_part_of_one_pass_as_embed_does(tta_flip, batch_size):
    est = AgeEstimator.from_config(resolve("quick", sets=[*TINY, "bf16=off"]), multitask=True).eval()
    est.spec = dataclasses.replace(est.spec, tta_flip=tta_flip)
    images = random_face_arrays(8, size=32).images
    with torch.no_grad():
        out = est.backbone(est.prepare(images))
        mirrored = est.backbone(est.prepare(images.flip(3)))
    parts = est.embed_parts(images, batch_size=batch_size)
    assert set(parts) == {"age", "gender"}
    for part in parts:
        expected = getattr(out, part)
        if tta_flip:
            expected = (expected + getattr(mirrored, part)) / 2
        torch.testing.assert_close(parts[part], expected)
        torch.testing.assert_close(est.embed(images, part=part), parts[part])
    assert list(est.embed_parts(images, "gender")) == ["gender"]
    assert len(est.embed_parts(images, ["age", "age"])["age"]) == len(images)
    single = AgeEstimator.from_config(resolve("quick", sets=TINY), multitask=False)
    assert list(single.embed_parts(images)) == ["age"]
    with pytest.raises(AgemetricError, match="part must be 'age'"):
        single.embed_parts(images, ("age", "gender"))

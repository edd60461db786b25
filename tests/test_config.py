"""Presets, TOML files and --set overrides."""

import pytest
import tomli_w

from agemetric.config import RunConfig, parse_set, resolve
from agemetric.errors import AgemetricError
from agemetric.presets import PRESETS


def test_defaults_are_the_papers_but_for_the_measured_optimiser():
    c = RunConfig()
    assert (c.backbone, c.loss, c.miner, c.retriever) == ("inception_v3", "revised-contrastive", "all-pairs", "l1-knn")
    assert (c.embedding_dim, c.gender_dim, c.margin, c.k, c.batch_size, c.image_size) == (70, 10, 4.0, 20, 128, 227)
    assert (c.optimizer, c.lr) == ("adam", 1e-4)  # docs/method.md: measured; the paper preset keeps Adadelta


def test_quick_is_the_default_preset_and_paper_keeps_the_papers_settings():
    assert resolve().backbone == PRESETS["quick"]["backbone"]
    assert resolve("finetune") == RunConfig()
    paper = resolve("paper")
    assert (paper.optimizer, paper.lr) == ("adadelta", 1.0)  # METHOD.md: Adadelta
    assert paper == RunConfig(optimizer="adadelta", lr=1.0)  # otherwise the defaults


def test_layers_apply_in_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps({"preset": "paper", "epochs": 3, "k": 7, "loss_options": {"q": 50.0}}))
    c = resolve(None, path, {"k": 9, "seed": None}, ["seed=4", "loss_options.reduction=sum"])
    assert (c.backbone, c.epochs, c.k, c.seed) == ("inception_v3", 3, 9, 4)
    assert c.loss_options == {"q": 50.0, "reduction": "sum"}


def test_written_config_round_trips(tmp_path):
    c = resolve("quick", sets=["margin=2.5", "limit=100"])
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(c.to_dict()))
    assert resolve(config_file=path) == c


def test_set_coerces_types():
    assert parse_set(["epochs=3", "margin=2", "augment=false", "limit=none", "loss_options.q=5"]) == {
        "epochs": 3,
        "margin": 2.0,
        "augment": False,
        "limit": None,
        "loss_options": {"q": 5},
    }


@pytest.mark.parametrize(
    "items, message",
    [
        (["epochs=abc"], "epochs expects int, got 'abc'"),
        (["nonsense=1"], "unknown setting 'nonsense'"),
        (["epochs"], "sets expects KEY=VALUE"),
        (["epochs.x=1"], "dotted keys go into a table"),
        (["augment=maybe"], "augment expects true or false"),
    ],
)
def test_bad_set_values_are_named(items, message):
    with pytest.raises(AgemetricError, match=message):
        parse_set(items)


@pytest.mark.parametrize(
    "sets, message",
    [
        (["epochs=-1"], "epochs must be >= 0"),
        (["image_size=0"], "image_size must be >= 1"),
        (["batch_size=1"], "batch_size must be >= 2"),
        (["margin=-1"], "margin must be >= 0"),
        (["test_fraction=1.5"], "test_fraction must be between 0 and 1"),
        (["bf16=sometimes"], "bf16 must be one of auto, on, off"),
    ],
)
def test_out_of_range_values_are_named(sets, message):
    with pytest.raises(AgemetricError, match=message):
        resolve(sets=sets)


def test_bad_config_files(tmp_path):
    with pytest.raises(AgemetricError, match="no such file"):
        resolve(config_file=tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = [")
    with pytest.raises(AgemetricError, match="not valid TOML"):
        resolve(config_file=bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('epochs = "many"')
    with pytest.raises(AgemetricError, match="epochs expects int"):
        resolve(config_file=wrong)
    with pytest.raises(AgemetricError, match="unknown preset 'fast'"):
        resolve("fast")


def test_preset_image_size_is_raised_to_the_backbones_minimum_but_explicit_is_kept():
    assert resolve("quick", options={"backbone": "inception_v3"}).image_size == 75
    assert resolve("quick", options={"backbone": "inception_v3", "image_size": 64}).image_size == 64
    assert resolve("quick").image_size == 64


def test_command_defaults_sit_between_the_preset_and_the_users_choices(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps({"k": 7}))
    assert resolve("quick", command_defaults={"epochs": 200}).epochs == 200  # above the preset's 15
    assert resolve("quick", path, command_defaults={"epochs": 200, "k": 3}).k == 7  # the file wins
    assert resolve("quick", sets=["epochs=2"], command_defaults={"epochs": 200}).epochs == 2

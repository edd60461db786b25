"""Presets, TOML files and --set overrides."""

import dataclasses
import re

import pytest
import tomli_w

from agemetric.config import RunConfig, parse_set, resolve
from agemetric.errors import AgemetricError
from agemetric.presets import PRESETS


def test_defaults_are_the_papers_but_for_the_measured_optimiser():
    model, training = RunConfig().model, RunConfig().training
    assert (model.backbone, model.loss, model.miner, model.retriever) == (
        "inception_v3",
        "revised-contrastive",
        "all-pairs",
        "l1-knn",
    )
    assert (model.embedding_dim, model.gender_dim, model.margin, model.k, model.image_size) == (70, 10, 4.0, 20, 227)
    assert training.batch_size == 128
    assert (training.optimizer, training.lr) == (
        "adam",
        1e-4,
    )  # docs/method.md: measured; the paper preset keeps Adadelta


def test_quick_is_the_default_preset_and_paper_keeps_the_papers_settings():
    assert resolve().model.backbone == PRESETS["quick"]["backbone"]
    assert resolve("finetune") == RunConfig()
    paper = resolve("paper")
    assert (paper.training.optimizer, paper.training.lr) == ("adadelta", 1.0)  # METHOD.md: Adadelta
    assert paper == RunConfig.from_flat(optimizer="adadelta", lr=1.0)  # otherwise the defaults


def test_layers_apply_in_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps({"preset": "paper", "epochs": 3, "k": 7, "loss_options": {"q": 50.0}}))
    c = resolve(None, path, {"k": 9, "seed": None}, ["seed=4", "loss_options.reduction=sum"])
    assert (c.model.backbone, c.training.epochs, c.model.k, c.seed) == ("inception_v3", 3, 9, 4)
    assert c.model.loss_options == {"q": 50.0, "reduction": "sum"}


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
        (["multitask=maybe"], "multitask expects auto, on or off"),
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
    twice = tmp_path / "twice.toml"
    twice.write_text(tomli_w.dumps({"k": 5, "model": {"k": 7}}))
    with pytest.raises(AgemetricError, match=r"twice.toml: k is given twice"):
        resolve(config_file=twice)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('epochs = "many"')
    with pytest.raises(AgemetricError, match="epochs expects int"):
        resolve(config_file=wrong)
    with pytest.raises(AgemetricError, match="unknown preset 'fast'"):
        resolve("fast")


def test_preset_image_size_is_raised_to_the_backbones_minimum_but_explicit_is_kept():
    assert resolve("quick", options={"backbone": "inception_v3"}).model.image_size == 75
    assert resolve("quick", options={"backbone": "inception_v3", "image_size": 64}).model.image_size == 64
    assert resolve("quick").model.image_size == 64


def test_command_defaults_sit_between_the_preset_and_the_users_choices(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps({"k": 7}))
    assert resolve("quick", command_defaults={"epochs": 200}).training.epochs == 200  # above the preset's 15
    assert resolve("quick", path, command_defaults={"epochs": 200, "k": 3}).model.k == 7  # the file wins
    assert resolve("quick", sets=["epochs=2"], command_defaults={"epochs": 200}).training.epochs == 2


def test_settings_live_in_sections_and_every_flat_name_is_one_setting():
    import dataclasses

    from agemetric.config import SECTION_OF, SECTIONS, SETTINGS

    names = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)) == len(SECTION_OF)  # no flat name in two sections
    assert "seed" in SETTINGS and "seed" not in SECTION_OF
    config = resolve("quick", sets=["epochs=3", "k=7", "interval_level=0.8", "figures=false", "limit=50"])
    assert (config.training.epochs, config.model.k, config.evaluation.interval_level) == (3, 7, 0.8)
    assert (config.output.figures, config.data.limit) == (False, 50)
    assert config.flat()["epochs"] == 3 and "out" not in config.flat()  # None values dropped


def test_set_takes_a_setting_with_its_section_and_refuses_another_section():
    assert resolve(sets=["training.epochs=4", "model.loss_options.q=5"]) == resolve(
        sets=["epochs=4", "loss_options.q=5"]
    )
    with pytest.raises(AgemetricError, match=r"sets model.epochs: model has no setting 'epochs' \(it is in training\)"):
        parse_set(["model.epochs=4"])


def test_a_config_file_may_be_flat_or_in_sections(tmp_path):
    flat, sectioned = tmp_path / "flat.toml", tmp_path / "sections.toml"
    flat.write_text(tomli_w.dumps({"epochs": 3, "k": 7, "multitask": "off", "loss_options": {"q": 5}}))
    sectioned.write_text(
        tomli_w.dumps({"training": {"epochs": 3}, "model": {"k": 7, "multitask": False, "loss_options": {"q": 5}}})
    )
    assert resolve(config_file=flat) == resolve(config_file=sectioned)
    assert resolve(config_file=flat).model.multitask is False
    twice = tmp_path / "twice.toml"
    twice.write_text(tomli_w.dumps({"k": 5, "model": {"k": 7}}))
    with pytest.raises(AgemetricError, match=r"twice.toml: k is given twice"):
        resolve(config_file=twice)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(tomli_w.dumps({"data": {"k": 7}}))
    with pytest.raises(AgemetricError, match=r"wrong.toml: data has no setting 'k' \(it is in model\)"):
        resolve(config_file=wrong)


@pytest.mark.parametrize(("word", "value"), [("auto", None), ("on", True), ("off", False), ("true", True)])
def test_multitask_is_decided_from_the_data_unless_set(word, value):
    assert resolve(sets=[f"multitask={word}"]).model.multitask is value


def test_each_section_checks_its_own_fields():
    from agemetric.settings import DataSettings, EvaluationSettings, TrainingSettings
    from agemetric.spec import ModelSpec

    cases = [
        (lambda: ModelSpec(image_size=4096), "image_size must be <= 2048, got 4096"),
        (lambda: ModelSpec(backbone=3), "backbone expects str, got 3"),
        (lambda: ModelSpec(loss_options={"margin": 2}), "loss_options.margin: set it with the setting 'margin'"),
        (lambda: DataSettings(split="people"), "split must be one of random, subject, hash, got 'people'"),
        (
            lambda: DataSettings(dataset_options={"root": "x"}),
            "dataset_options.root: set it with the setting 'data_dir'",
        ),
        (lambda: TrainingSettings(lr=float("nan")), "lr must be a finite number, got nan"),
        (lambda: TrainingSettings(device="gpu"), "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        (lambda: TrainingSettings(augment_options={"blur": 1}), "augment_options: unknown option"),
        (lambda: EvaluationSettings(interval_groups=0), "interval_groups must be >= 1, got 0"),
        (lambda: RunConfig(seed="0"), "seed expects int, got '0'"),
    ]
    for make, message in cases:
        with pytest.raises(AgemetricError, match=re.escape(message)):
            make()


def test_replace_changes_flat_settings_and_keeps_the_rest():
    config = resolve("quick", sets=["limit=40"])
    changed = config.replace(epochs=2, limit=None, multitask="on")
    assert (changed.training.epochs, changed.data.limit, changed.model.multitask) == (2, None, True)
    assert changed.model == dataclasses.replace(config.model, multitask=True)
    with pytest.raises(AgemetricError, match="unknown setting 'epoch'"):
        config.replace(epoch=2)


def test_a_flat_attribute_says_which_section_holds_the_setting():
    with pytest.raises(AttributeError, match=r"the setting is config.training.epochs"):
        _ = RunConfig().epochs
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        _ = RunConfig().nonsense


def test_replace_converts_only_the_settings_it_changes():
    from agemetric.settings import OutputSettings

    config = RunConfig(output=OutputSettings(out="none"))  # a folder named "none"
    assert config.replace(seed=1).output.out == "none" and config.replace(out="none").output.out is None


def test_a_run_folder_reads_back_the_settings_it_was_written_with(tmp_path):
    from agemetric.runs import RunFolder

    for preset in ("quick", "paper", "face"):
        config = resolve(preset, sets=["limit=30"])
        folder = RunFolder(tmp_path / preset)
        folder.path.mkdir()
        folder.write_config(config)
        assert folder.read_config() == config and folder.holds_config(config)  # no preset laid under the file


def test_a_model_spec_read_from_a_file_names_a_missing_field_and_a_built_model_decides_its_gender_task():
    from agemetric.estimator import AgeEstimator
    from agemetric.spec import ModelSpec

    written = resolve("quick").model.to_dict()
    with pytest.raises(AgemetricError, match="missing model field"):
        ModelSpec.from_dict({k: v for k, v in written.items() if k != "backbone"})
    undecided = resolve("quick", sets=["image_size=32", "backbone_options.width=4"]).model
    assert undecided.multitask is None and AgeEstimator.from_spec(undecided).spec.multitask is False

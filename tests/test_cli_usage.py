"""The command line as typer / click users expect it: usage lines, placeholders, choices, help
text as written, one-line usage errors, one name for one thing, output for pipes. No training."""

import json
import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

import agemetric
from agemetric import plugins
from agemetric.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "300"}  # help rows on one line each
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: typer's type names, which say nothing about what goes there
TYPE_PLACEHOLDERS = ("<bool>", "<str>", "<int>", "<float>", "<path>", "<list[", "<text>", "<file>", "<directory>")


def invoke(*args, **kwargs):
    return runner.invoke(app, list(args), env=WIDE, **kwargs)


def help_of(*command) -> str:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    return ANSI.sub("", result.output)


def all_commands():
    """Every command path, e.g. ("run",), ("paper", "k-sweep")."""
    root = typer.main.get_command(app)

    def walk(group, path):
        for name, command in group.commands.items():
            yield (*path, name)
            if hasattr(command, "commands"):
                yield from walk(command, (*path, name))

    return list(walk(root, ()))


def one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize(
    "command, usage",
    [
        (("predict",), "Usage: agemetric predict [OPTIONS] MODEL PHOTOS..."),
        (("evaluate",), "Usage: agemetric evaluate [OPTIONS] RUN_DIR"),
        (("export",), "Usage: agemetric export [OPTIONS] RUN_DIR"),
        (("report",), "Usage: agemetric report [OPTIONS] RUN_DIRS..."),
        (("paper", "k-sweep"), "Usage: agemetric paper k-sweep [OPTIONS] RUN_DIR"),
        (("install",), "Usage: agemetric install [OPTIONS] PACKAGES..."),
        (("run",), "Usage: agemetric run [OPTIONS]"),
    ],
)
def test_usage_lines_name_the_arguments(command, usage):
    text = help_of(*command)
    line = next(line.strip() for line in text.splitlines() if "Usage:" in line)
    assert line == usage


@pytest.mark.parametrize("command", [(), *all_commands()], ids=lambda c: " ".join(c) or "agemetric")
def test_help_placeholders_say_what_goes_there(command):
    text = help_of(*command)
    for bad in TYPE_PLACEHOLDERS:
        assert bad not in text, f"agemetric {' '.join(command)} --help shows {bad}"
    assert not re.search(r"\{[a-z_]+\}", text), text  # no {run_dir}, no unfilled {datasets}
    # a flag is followed by its help, not by a placeholder
    assert re.search(r"--help\s+-h\s{2,}Show this message and exit\.", text)


def test_run_placeholders_and_choices():
    text = help_of("run")
    expected = {
        "--bf16": r"\[auto\|on\|off\]",
        "--multitask": r"\[auto\|on\|off\]",
        "--optimizer": r"\[adadelta\|adam\|sgd\]",
        "--split": r"\[random\|subject\|hash\]",
        "--preset": "NAME",
        "--device": r"\[auto\|cpu\|cuda\|cuda:N\]",
        "--lr": "RATE",
        "--out": "DIR",
        "--set": "KEY=VALUE",
        "--data-dir,--data": "PATH",
        "--config": "FILE",
        "--backbone": "NAME",
    }
    for option, placeholder in expected.items():
        assert re.search(rf"{re.escape(option)}\s+{placeholder}\s", text), f"{option} {placeholder}"


def test_run_help_shows_the_quick_preset_s_defaults_and_describes_every_preset():
    from agemetric.presets import PRESETS

    text = " ".join(help_of("run").split())  # the help's words, whatever the wrapping
    text = re.sub(r" ?│ ?", " ", text)
    quick = PRESETS["quick"]
    for option, value in (("--backbone", quick["backbone"]), ("--epochs", quick["epochs"]), ("--k", 20)):
        assert re.search(rf"{option} (?:(?! --\w).)*?\[default: \(?{value}\)?\]", text), option
    assert "the defaults shown below are the quick preset's" in text
    described = text[text.index("--preset NAME") : text.index("--config ")]
    for name in PRESETS:
        assert re.search(rf"\b{name}\s+\(", described), name


def test_other_commands_show_their_choices():
    assert re.search(r"--runtime\s+\[auto\|torchscript\|onnx\]", help_of("predict"))
    assert re.search(r"--format\s+\[torchscript\|onnx\|both\]", help_of("export"))
    assert re.search(r"--preset\s+\[quick\|paper\|face\|face-pair\|finetune\]", help_of("paper", "multitask"))


def test_brackets_in_help_are_printed_as_written():
    assert "framing_options.box, [left, top, right, bottom])" in help_of("run")
    assert "--set framing_options.box=[l,t,r,b]." in help_of("evaluate")


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"agemetric {agemetric.__version__}"


def test_dataset_help_lists_the_registered_datasets(monkeypatch):
    names = plugins.list_names("dataset")
    assert {"synthetic", "utkface", "csv"} <= set(names)
    for command in (("run",), ("evaluate",), ("paper", "margin-sweep")):
        assert ", ".join(names) in help_of(*command), command
    real = plugins.list_names
    monkeypatch.setattr(
        plugins, "list_names", lambda kind: [*real(kind), "my-faces"] if kind == "dataset" else real(kind)
    )
    assert ", ".join([*names, "my-faces"]) in help_of("run")  # whatever is installed, not a list in the code


def test_one_name_for_one_thing():
    root = typer.main.get_command(app)
    seen_dataset = []
    for path in all_commands():
        command = root
        for name in path:
            command = command.commands[name]
        opts = {opt for param in command.params for opt in param.opts}
        assert "--output" not in opts, path
        if "--dataset" in opts:
            seen_dataset.append(path)
            assert {"--data-dir", "--data"} <= opts, f"{path}: --data-dir with its --data alias"
            assert "--set" in opts, f"{path} reads a dataset: --set too"
        if path[-1] in {
            "run",
            "evaluate",
            "export",
            "adapt",
            "report",
            "toy-embedding",
            "multitask",
            "margin-sweep",
            "k-sweep",
        }:
            assert "--out" in opts, f"{path} writes: --out"
    assert ("evaluate",) in seen_dataset and ("adapt",) in seen_dataset and len(seen_dataset) == 6


def test_common_settings_are_options_beside_set(monkeypatch, tmp_path):
    import agemetric.experiment

    seen = {}

    def fake_run(config, **kwargs):
        seen["config"] = config
        return None  # as a process other than rank 0: nothing to report

    monkeypatch.setattr(agemetric.experiment, "run", fake_run)
    result = invoke(
        "run", "--lr", "0.5", "--optimizer", "sgd", "--device", "cpu", "--data", str(tmp_path), "--set", "warmup=0.1"
    )
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.training.lr, config.training.optimizer, config.training.device, config.training.warmup) == (
        0.5,
        "sgd",
        "cpu",
        0.1,
    )
    assert config.data.data_dir == str(tmp_path)


def test_paper_commands_take_the_data_alias(monkeypatch, tmp_path):
    import agemetric.paper

    seen = {}

    def fake(config, folder, progress=None):
        seen["config"] = config
        return {"n_images": 1, "n_ages": 1, "rank_correlation": 0.0, "loo_mae": 0.0}

    monkeypatch.setattr(agemetric.paper, "toy_embedding", fake)
    result = invoke("paper", "toy-embedding", "--data", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert seen["config"].data.data_dir == str(tmp_path)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--epochs", "lots"], "Error: --epochs expects a whole number, got 'lots'"),
        (["run", "--lr=fast"], "Error: --lr expects a number, got 'fast'"),
        (["run", "--bf16", "maybe"], "Error: --bf16 must be one of auto, on, off; got 'maybe'"),
        (["run", "--optimizer", "rmsprop"], "Error: --optimizer must be one of adadelta, adam, sgd; got 'rmsprop'"),
        (["run", "--device", "tpu"], "Error: --device expects auto, cpu, cuda or cuda:N, got 'tpu'"),
        (["run", "--no-such-option"], "Error: No such option: --no-such-option"),
        (["evaluate"], "Error: Missing argument 'RUN_DIR'"),
        (["runn"], "Error: No such command 'runn'"),
        (["predict", "model", "photo.jpg", "--runtime", "tflite"], "Error: --runtime must be one of auto, torchscript"),
        (["export", "run", "--out", "b", "--format", "tflite"], "Error: --format must be one of torchscript, onnx,"),
    ],
)
def test_usage_errors_are_one_line(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    line = one_line(result.output)
    assert line.startswith(message), line
    assert "Traceback" not in result.output and "╭" not in result.output


def test_a_dataset_that_needs_a_folder_says_data_dir_is_required(tmp_path):
    out = tmp_path / "r"
    result = invoke("run", "--dataset", "utkface", "--out", str(out))
    assert result.exit_code == 2
    assert one_line(result.output) == "Error: --data-dir is required: the UTKFace folder"
    assert not out.exists()
    result = invoke("run", "--dataset", "csv", "--out", str(out))
    assert result.exit_code == 2 and "--data-dir is required" in one_line(result.output)


def test_the_library_names_its_settings_where_the_command_line_names_options(tmp_path):
    import agemetric

    with pytest.raises(agemetric.AgemetricError, match=r"^data_dir is required: the UTKFace folder$"):
        agemetric.run(agemetric.resolve(sets=["dataset=utkface", f"out={tmp_path / 'r'}"]))
    with pytest.raises(agemetric.AgemetricError, match=r"^config_file: no such file"):
        agemetric.resolve(config_file=tmp_path / "missing.toml")
    result = invoke("run", "--config", str(tmp_path / "missing.toml"))
    assert result.exit_code == 2 and one_line(result.output).startswith("Error: --config: no such file")


def test_piped_tables_are_not_cut_to_the_terminal_width(monkeypatch):
    import agemetric.plugins as registry

    long_names = [f"a-rather-long-loss-name-number-{i}" for i in range(6)]
    info = registry.PluginInfo("some-plugin", "1.0", ["register_losses"], {"loss": long_names})
    monkeypatch.setattr(registry, "plugin_info", lambda: [info])
    result = runner.invoke(app, ["plugins"], env={"COLUMNS": "80"})  # stdout is not a terminal here
    assert result.exit_code == 0, result.output
    assert ", ".join(long_names) in result.output  # one line, nothing cut or folded
    assert max(len(line) for line in result.output.splitlines()) > 80


def test_agemetric_plugins_piped_to_grep_finds_whole_names():
    if "pml-lifted-structure" not in plugins.list_names("loss"):
        pytest.skip("agemetric-pml is not installed")
    done = subprocess.run(
        [sys.executable, "-m", "agemetric", "plugins"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if "pml-lifted-structure" in line]


def test_plugins_json_is_unchanged():
    result = invoke("plugins", "--json")
    assert result.exit_code == 0
    assert {"name", "version", "hooks", "registered"} <= set(json.loads(result.output)[0])


@pytest.mark.parametrize("command", [[], ["predict"], ["paper", "k-sweep"]])
def test_dash_h_is_help(command):
    short, long = (runner.invoke(app, [*command, flag]) for flag in ("-h", "--help"))
    assert short.exit_code == long.exit_code == 0 and short.output == long.output
    assert "Usage: agemetric" in short.output


def test_shell_completion_is_offered(monkeypatch):
    # typer otherwise guesses the shell from the parent processes (shellingham), which a test
    # run started from no shell does not have; this has --show-completion take the shell's name
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = runner.invoke(app, ["--show-completion", "bash"])
    assert result.exit_code == 0 and "_agemetric_completion" in result.output, (result.output, result.exception)


def test_a_table_going_to_a_pipe_is_tab_separated_lines():
    result = runner.invoke(app, ["plugins"])  # the test runner's output is not a terminal
    lines = result.output.splitlines()
    assert result.exit_code == 0 and lines[:2] == ["agemetric plugins", "plugin\tversion\thooks\tregistered"]
    rows = [line.split("\t") for line in lines[2:] if line]
    assert rows and all(len(row) == 4 for row in rows)
    assert "small_cnn" in {name for row in rows for name in row[3].replace(",", " ").split()}
    assert not any(ch in result.output for ch in "┃│━─")


def test_a_closed_pipe_ends_the_command_quietly():
    code = (
        "import errno, sys\nimport agemetric.cli as c\n"
        "@c.app.command('gone')\ndef gone():\n    raise BrokenPipeError(errno.EPIPE, 'Broken pipe')\n"
        "sys.argv = ['agemetric', 'gone']\nc.main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr == ""


def test_evaluate_writes_its_out_file_before_printing(tmp_path):
    from agemetric.experiment import run

    sets = ["dataset_options.n=60", "epochs=1", "image_size=32", "backbone_options.width=4", "k=3", "figures=false"]
    run(agemetric.resolve("quick", sets=[*sets, f"out={tmp_path / 'run'}"]))
    out = tmp_path / "ev.json"
    command = [
        sys.executable,
        "-m",
        "agemetric",
        "evaluate",
        str(tmp_path / "run"),
        "--dataset",
        "synthetic",
        "--unseen",
    ]
    reader = subprocess.Popen([*command, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.close()  # the reader is gone before anything is printed, as with | head -0
    assert reader.wait(timeout=300) == 1 and reader.stderr.read() == b""
    assert json.loads(out.read_text())["n_test"] > 0

"""Plugin discovery, names, duplicates, inline and entry-point plugins."""

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from agemetric import FaceDataset, FaceRecord, Pairs, Retriever, hookimpl, plugins
from agemetric.cli import app
from agemetric.config import resolve
from agemetric.default_plugins.all_pairs import AllPairsMiner
from agemetric.default_plugins.revised_contrastive import RevisedContrastiveLoss
from agemetric.errors import PluginError
from agemetric.functional import all_pairs
from agemetric.interfaces import Framer


def test_canonical_names_are_interchangeable():
    a = plugins.get_entry("backbone", "inception_v3")
    assert plugins.get_entry("backbone", "Inception-V3") is a
    assert plugins.get_entry("loss", "revised_contrastive").name == "revised-contrastive"


def test_unknown_name_lists_known_ones():
    with pytest.raises(PluginError) as info:
        plugins.create("loss", "no-such-loss")
    assert "unknown loss 'no-such-loss'" in str(info.value)
    assert "revised-contrastive" in str(info.value)


def test_default_plugins_are_registered():
    assert "inception_v3" in plugins.list_names("backbone")
    assert {"all-pairs", "batch"} <= set(plugins.list_names("miner"))
    assert "l1-knn" in plugins.list_names("retriever")
    assert {"synthetic", "csv", "utkface"} <= set(plugins.list_names("dataset"))


def _inline(name, **hooks):
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    return module


@pytest.fixture
def register_inline():
    """Register inline plugin modules for one test; always unregistered afterwards."""
    added = []

    def add(module):
        plugins.load_plugins().register(module, name=module.__name__)
        plugins.reset()
        added.append(module)

    yield add
    for module in added:
        plugins.pm.unregister(module)
    plugins.load_errors[:] = [e for e in plugins.load_errors if e[0] not in {m.__name__ for m in added}]
    plugins.reset()


def test_inline_plugin_registers_a_loss(register_inline):
    class Halved(RevisedContrastiveLoss):
        pass

    register_inline(_inline("halved_plugin", register_losses=lambda register: register("halved", Halved)))
    assert isinstance(plugins.create("loss", "halved", margin=2), Halved)
    infos = {i.name: i for i in plugins.plugin_info()}
    assert infos["halved_plugin"].registered == {"loss": ["halved"]}


def test_a_name_registered_by_two_plugins_is_refused_by_name_and_the_rest_works(register_inline):
    register_inline(_inline("alpha", register_losses=lambda register: register("twin", RevisedContrastiveLoss)))
    register_inline(_inline("beta", register_losses=lambda register: register("Twin", object)))
    with pytest.raises(PluginError) as info:
        plugins.create("loss", "twin")
    message = str(info.value)
    assert "registered twice" in message and "AGEMETRIC_LOAD_PLUGINS" in message
    assert "'alpha'" in message and "'beta'" in message
    assert type(plugins.create("loss", "dex")).__name__ == "DEXLoss"  # the other names still work
    infos = {i.name: i for i in plugins.plugin_info()}
    assert any("registered twice" in problem for problem in infos["beta"].problems)


def test_a_plugin_cannot_take_a_built_in_name_and_says_so(register_inline):
    register_inline(_inline("copycat", register_losses=lambda register: register("Revised_Contrastive", object)))
    assert type(plugins.create("loss", "revised-contrastive")) is RevisedContrastiveLoss  # agemetric's own stays
    (problem,) = {i.name: i for i in plugins.plugin_info()}["copycat"].problems
    assert problem == (
        "loss name 'revised-contrastive' is agemetric's own (plugin 'agemetric.revised_contrastive'); plugin "
        "'copycat''s registration of it is skipped: register yours under another name"
    )
    plugins.reset()  # rebuilt: said once, not twice
    plugins.list_names("loss")
    assert sum(p == "copycat" for p, _ in plugins.load_errors) == 1


def test_a_misspelt_hook_skips_that_plugin_with_a_hint():
    module = _inline("misspelt_plugin", register_loss=lambda register: register("never", object))
    assert not plugins._register_checked(module, "misspelt", "misspelt_plugin:module")
    try:
        assert plugins.pm.get_plugin("misspelt") is None  # unregistered again: every command keeps working
        (name, message), *_ = [e for e in plugins.load_errors if e[0] == "misspelt"]
        assert "register_loss (did you mean register_losses?)" in message and "not an agemetric hook" in message
        assert "revised-contrastive" in plugins.list_names("loss")
    finally:
        plugins.load_errors[:] = [e for e in plugins.load_errors if e[0] != "misspelt"]


def test_hook_raising_is_reported_and_the_others_keep_working(register_inline):
    def broken(register):
        register("half-registered", AllPairsMiner)
        raise RuntimeError("boom")

    register_inline(_inline("broken_plugin", register_miners=broken))
    names = plugins.list_names("miner")
    assert "all-pairs" in names and "half-registered" not in names  # nothing from a hook that raised
    assert ("broken_plugin", "register_miners raised RuntimeError: boom") in plugins.load_errors
    with pytest.raises(PluginError, match="unknown miner 'half-registered'.*plugin 'broken_plugin' failed to load"):
        plugins.create("miner", "half-registered")


def test_wrong_output_shape_names_the_plugin(register_inline):
    class ShortMiner(AllPairsMiner):
        def mine(self, embeddings, labels):
            return Pairs(torch.zeros(2, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))

    class ScalarLessLoss(RevisedContrastiveLoss):
        def compute(self, embeddings, labels, indices):
            return embeddings.sum(dim=1)  # (B,) instead of 0-d

    register_inline(
        _inline(
            "shape_plugin",
            register_miners=lambda register: register("short", ShortMiner),
            register_losses=lambda register: register("vector-loss", ScalarLessLoss),
        )
    )
    emb, ages = torch.randn(4, 3), torch.tensor([20.0, 30.0, 40.0, 50.0])
    with pytest.raises(PluginError, match=r"miner 'short' \(plugin 'shape_plugin', ShortMiner\).*equal lengths"):
        plugins.create("miner", "short")(emb, ages)
    loss = plugins.create("loss", "vector-loss")
    with pytest.raises(PluginError, match=r"loss 'vector-loss' \(plugin 'shape_plugin'.*0-d tensor, got \(4,\)"):
        loss(emb, ages, all_pairs(4))


def test_trace_hooks_prints_loads_hook_calls_and_creations(register_inline, capsys):
    register_inline(_inline("traced_plugin", register_miners=lambda register: register("traced", AllPairsMiner)))
    plugins.set_tracing(True)
    try:
        plugins.create("miner", "traced")
    finally:
        plugins.set_tracing(False)
    err = capsys.readouterr().err
    assert "[agemetric hooks] register_miners <- plugin 'traced_plugin': traced" in err
    assert "create miner 'traced' (plugin 'traced_plugin')" in err


ENTRY_PLUGIN = textwrap.dedent("""
    import typer
    from agemetric import hookimpl
    from agemetric.default_plugins.revised_contrastive import RevisedContrastiveLoss

    class EntryLoss(RevisedContrastiveLoss):
        pass

    @hookimpl
    def register_losses(register):
        register("entry-loss", EntryLoss)

    @hookimpl
    def register_commands(cli):
        @cli.command()
        def hello(name: str = "world"):
            # a command added by a plugin
            print(f"hello {name} from entrytest")

        @cli.command()
        def boom():
            assert name_of("x") == "y"  # a bug in the plugin's command

        @cli.command()
        def ask():
            from agemetric import plugins
            plugins.create("loss", "no-such-loss")

        @cli.command()
        def stop():
            raise typer.Exit(3)  # the command's own exit code

        @cli.command()
        def misuse():
            from agemetric.functional import pair_l1_distances
            pair_l1_distances(None, None, None)  # raised inside agemetric: its traceback is kept

        tools = typer.Typer()

        @tools.command()
        def explode():
            raise OSError("in a group")

        cli.add_typer(tools, name="tools")

    def name_of(x):
        return x
""")


HOOKFAIL_PLUGIN = textwrap.dedent("""
    from agemetric import hookimpl

    @hookimpl
    def register_losses(register):
        raise KeyError("no such table")

    @hookimpl
    def register_commands(cli):
        @cli.command()
        def half():
            print("a command of a hook that then failed")

        raise RuntimeError("command hook broke")
""")


def _installed(site: Path, name: str, version: str, entry_points: str) -> None:
    """A distribution ``name`` ``version`` installed on the path ``site`` (its dist-info folder),
    declaring ``entry_points`` (``NAME = module`` lines) in the ``agemetric`` group."""
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(f"[agemetric]\n{entry_points}\n")


@pytest.fixture
def entry_point_dir(tmp_path):
    """A package with an ``agemetric`` entry point, installed as a dist-info folder on a path."""
    (tmp_path / "agemetric_entrytest.py").write_text(ENTRY_PLUGIN)
    _installed(tmp_path, "agemetric-entrytest", "1.2.3", "entrytest = agemetric_entrytest")
    (tmp_path / "broken.py").write_text("raise ImportError('missing dependency xyz')\n")
    _installed(tmp_path, "agemetric-broken", "0.1", "broken = broken\nhookfail = hookfail")
    (tmp_path / "hookfail.py").write_text(HOOKFAIL_PLUGIN)
    return tmp_path


def _cli(args, path, **env):
    """Run the real console entry point in a subprocess with ``path`` importable."""
    full_env = {k: v for k, v in os.environ.items() if k != "AGEMETRIC_LOAD_PLUGINS"}
    full_env.update(PYTHONPATH=str(path), COLUMNS="200", **env)
    return subprocess.run(
        [sys.executable, "-m", "agemetric", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_entry_point_plugin_is_discovered_and_broken_one_reported(entry_point_dir):
    result = _cli(["plugins", "--json"], entry_point_dir)
    assert result.returncode == 0, result.stderr
    assert '"entrytest"' in result.stdout and '"1.2.3"' in result.stdout and "entry-loss" in result.stdout
    assert "broken" in result.stderr and "missing dependency xyz" in result.stderr
    assert "'hookfail' failed to load" in result.stderr and "register_losses raised KeyError" in result.stderr
    assert "register_commands raised RuntimeError: command hook broke" in result.stderr


def test_cli_trace_hooks_shows_loads_and_failures(entry_point_dir):
    result = _cli(["--trace-hooks", "plugins", "--json"], entry_point_dir)
    assert result.returncode == 0, result.stderr
    assert "[agemetric hooks] loaded plugin 'entrytest' = agemetric_entrytest (agemetric-entrytest 1.2.3)" in (
        result.stderr
    )
    assert "[agemetric hooks] register_losses <- plugin 'entrytest': entry-loss" in result.stderr
    assert "plugin 'hookfail' FAILED: register_losses raised KeyError" in result.stderr


def test_plugin_adds_a_command_beside_a_broken_command_hook(entry_point_dir):
    result = _cli(["hello", "--name", "plugins"], entry_point_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello plugins from entrytest"
    assert "register_commands raised RuntimeError: command hook broke" in result.stderr


def test_a_plugin_command_s_errors_are_one_line_and_agemetric_plugins_lists_its_commands(entry_point_dir):
    boom = _cli(["boom"], entry_point_dir)
    assert boom.returncode == 1 and "Traceback" not in boom.stderr
    where = entry_point_dir / "agemetric_entrytest.py"
    assert boom.stderr.splitlines()[-1] == (
        f"Error: plugin 'entrytest' 1.2.3 ({where}:22, in boom) raised AssertionError: "
        'assert name_of("x") == "y"  # a bug in the plugin\'s command (agemetric --debug shows the traceback)'
    )
    ask = _cli(["ask"], entry_point_dir)
    assert ask.returncode == 2 and ask.stderr.splitlines()[-1].startswith("Error: unknown loss 'no-such-loss'; known:")
    stop = _cli(["stop"], entry_point_dir)
    assert stop.returncode == 3 and not any(line.startswith("Error") for line in stop.stderr.splitlines())
    misuse = _cli(["misuse"], entry_point_dir)
    assert misuse.returncode == 1 and "Traceback" in misuse.stderr and "agemetric/functional.py" in misuse.stderr
    listed = _cli(["plugins", "--json"], entry_point_dir)
    (entrytest,) = [p for p in json.loads(listed.stdout) if p["name"] == "entrytest"]
    explode = _cli(["tools", "explode"], entry_point_dir)
    assert explode.returncode == 1 and "in explode) raised OSError: in a group" in explode.stderr
    half = _cli(["half"], entry_point_dir)
    assert half.returncode == 2 and "No such command 'half'" in half.stderr
    commands = ["hello", "boom", "ask", "stop", "misuse", "tools"]
    assert entrytest["registered"] == {"loss": ["entry-loss"], "command": commands}


def test_an_entry_point_named_as_one_of_agemetric_s_own_plugins_is_skipped(tmp_path):
    (tmp_path / "impostor.py").write_text("from agemetric import hookimpl\n")
    _installed(tmp_path, "impostor", "0.1", "agemetric.small_cnn = impostor")
    done = _cli(["plugins"], tmp_path)
    assert done.returncode == 0, done.stderr
    said = "entry point 'agemetric.small_cnn' = 'impostor' has the name of one of agemetric's own plugins"
    assert said in done.stderr
    assert "small_cnn" in done.stdout and "Traceback" not in done.stderr


def test_a_plugin_in_a_namespace_package_is_named_when_its_code_raises(tmp_path):
    (tmp_path / "acme").mkdir()  # no __init__.py: a namespace package, as companies lay out plugins
    (tmp_path / "acme" / "agemetric_tools.py").write_text(
        "from agemetric import hookimpl\n\n@hookimpl\ndef register_commands(cli):\n"
        "    @cli.command()\n    def fail():\n        raise ValueError('in a namespace package')\n"
    )
    _installed(tmp_path, "acme-tools", "2.0", "acme = acme.agemetric_tools")
    done = _cli(["fail"], tmp_path)
    assert done.returncode == 1, done.stderr
    where = tmp_path / "acme" / "agemetric_tools.py"
    assert f"Error: plugin 'acme' 2.0 ({where}:7, in fail) raised ValueError: in a namespace package" in done.stderr


def test_agemetric_load_plugins_narrows_loading(entry_point_dir):
    result = _cli(["plugins", "--json"], entry_point_dir, AGEMETRIC_LOAD_PLUGINS="")
    assert result.returncode == 0, result.stderr
    assert "entry-loss" not in result.stdout and "revised-contrastive" in result.stdout
    assert "broken" not in result.stderr


def test_a_plugin_name_in_agemetric_load_plugins_that_is_not_installed_is_named(entry_point_dir):
    result = _cli(["run", "--loss", "entry-loss", "--out", "x"], entry_point_dir, AGEMETRIC_LOAD_PLUGINS="entrytestt")
    assert result.returncode == 2
    warning, error = [line for line in result.stderr.splitlines() if line.strip()]
    assert warning.startswith("Warning: AGEMETRIC_LOAD_PLUGINS names 'entrytestt', which no installed plugin is")
    assert error.startswith("Error: unknown loss 'entry-loss'")
    assert "not loaded, as AGEMETRIC_LOAD_PLUGINS='entrytestt' leaves them out: " in error and "entrytest" in error


class _FolderOfAges(FaceDataset):
    """A third-party dataset: ``{age}_{n}.png`` files; anything else is skipped with a reason."""

    def records(self):
        out = []
        for path in sorted(Path(self.root).iterdir()):
            age, sep, _ = path.stem.partition("_")
            if not (sep and age.isdigit()):
                self.skipped.add(path.name, "expected {age}_{n}.png")
                continue
            out.append(FaceRecord(key=path.name, age=float(age)))
        return out

    def file(self, record):
        return Path(self.root) / record.key


class _BruteForceL1(Retriever):
    """A third-party retriever: exact L1 search with torch instead of faiss, the mean age of the k nearest."""

    def search(self, queries, k=None, exclude=None):
        k = min(self.k if k is None else k, len(self) - (exclude is not None))
        dist = torch.cdist(queries.float(), self.gallery.embeddings, p=1)  # (M, N)
        if exclude is not None:
            dist[torch.arange(len(queries)), exclude] = float("inf")
        values, idx = dist.topk(k, dim=1, largest=False)
        return values, idx

    def predict(self, queries, exclude=None):
        return self.gallery.ages[self.search(queries, exclude=exclude)[1]].mean(dim=1)


class _GreyFramer(Framer):
    def frame(self, image):
        return image.convert("L").convert("RGB")

    def key(self):
        return "grey"


def test_every_kind_can_come_from_a_third_party_plugin(register_inline, tmp_path):
    """A plugin implementing the backbone, retriever, dataset and framer hooks is used by a whole run."""
    from PIL import Image

    from agemetric.default_plugins.small_cnn import SmallCNN
    from agemetric.experiment import run
    from agemetric.testing import check_backbone, check_framer, check_retriever

    register_inline(
        _inline(
            "everything_plugin",
            register_backbones=lambda register: register("third-party-cnn", SmallCNN),
            register_retrievers=lambda register: register("brute-force-l1", _BruteForceL1),
            register_datasets=lambda register: register("folder-of-ages", _FolderOfAges),
            register_framers=lambda register: register("grey", _GreyFramer),
        )
    )
    check_backbone("third-party-cnn")
    check_retriever("brute-force-l1")
    check_framer("grey")
    rng = torch.Generator().manual_seed(0)
    for n in range(40):
        age = 10 + n
        pixels = torch.full((24, 24, 3), 3 * age, dtype=torch.uint8) + torch.randint(0, 20, (24, 24, 3), generator=rng)
        Image.fromarray(pixels.to(torch.uint8).numpy()).save(tmp_path / f"{age}_{n}.png")
    (tmp_path / "notes.png").write_bytes(b"")  # a bad name: skipped, not fatal
    config = resolve(
        "quick",
        sets=[
            "backbone=third-party-cnn",
            "retriever=brute-force-l1",
            "dataset=folder-of-ages",
            "framing=grey",
            f"data_dir={tmp_path}",
            "epochs=1",
            "image_size=32",
            "batch_size=16",
            "k=3",
            "cache=false",
            "backbone_options.width=8",
            f"out={tmp_path / 'run'}",
        ],
    )
    result = run(config)
    split = result.metrics["split"]
    assert split["n_train"] + split["n_calibration"] + split["n_test"] == 40
    assert 'retriever = "brute-force-l1"' in (result.run_dir / "config.toml").read_text()


def test_an_option_called_kind_or_name_reaches_the_factory_not_create():
    from agemetric import plugins as registry

    for option in ("kind", "name"):
        with pytest.raises(PluginError, match="cannot create framer 'center'"):
            registry.create("framer", "center", **{option: "x"})


def test_a_built_in_name_stays_built_in_whatever_the_order_of_the_hooks(register_inline):
    module = types.ModuleType("early")
    module.register_losses = hookimpl(trylast=True)(lambda register: register("dex", object))  # called first
    register_inline(module)
    assert plugins.load_plugins().hook.register_losses.get_hookimpls()[0].plugin_name == "early"
    assert type(plugins.create("loss", "dex")).__name__ == "DEXLoss"
    (problem,) = {i.name: i for i in plugins.plugin_info()}["early"].problems
    assert "loss name 'dex' is agemetric's own (plugin 'agemetric.baselines')" in problem


def test_a_plugin_that_failed_to_import_is_listed_with_its_problem(monkeypatch):
    monkeypatch.setattr(plugins, "load_errors", [*plugins.load_errors, ("ghost", "import of 'ghost' failed: boom")])
    (ghost,) = [i for i in plugins.plugin_info() if i.name == "ghost"]
    assert ghost.hooks == [] and ghost.registered == {} and ghost.problems == ["import of 'ghost' failed: boom"]
    result = CliRunner().invoke(app, ["plugins", "--json"])
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert listed["ghost"]["problems"] == ["import of 'ghost' failed: boom"]


def test_a_presets_backbone_options_go_only_to_a_backbone_that_takes_them(register_inline):
    """The quick preset's ``dropout`` is its recipe for small_cnn; a plugin's backbone without a
    dropout still runs under it, and what the user sets is always passed on."""

    def plain(embedding_dim=70, gender_dim=10, weights="none", width=8):
        raise AssertionError("not built here")

    def open_ended(embedding_dim=70, gender_dim=10, weights="none", **options):
        raise AssertionError("not built here")

    def register_backbones(register):
        register("plain-net", plain)
        register("open-net", open_ended)

    register_inline(_inline("nets", register_backbones=register_backbones))
    assert resolve("quick").model.backbone_options == {"dropout": 0.0}
    assert resolve("quick", options={"backbone": "plain-net"}).model.backbone_options == {}
    assert resolve("quick", options={"backbone": "open-net"}).model.backbone_options == {"dropout": 0.0}
    given = resolve("quick", options={"backbone": "plain-net"}, sets=["backbone_options.dropout=0.2"])
    assert given.model.backbone_options == {"dropout": 0.2}  # the factory will say it does not take it


def test_register_plugin_refuses_hooks_that_are_not_agemetrics_and_a_taken_name():
    before = list(plugins.load_errors)
    with pytest.raises(PluginError, match=r"register_loss \(did you mean register_losses\?\)"):
        plugins.register_plugin(_inline("misspelt_inline", register_loss=lambda register: None))
    assert plugins.load_errors == before and plugins.pm.get_plugin("misspelt_inline") is None
    with pytest.raises(PluginError, match="plugin name 'agemetric.small_cnn' is taken"):
        plugins.register_plugin(_inline("other", register_losses=lambda register: None), "agemetric.small_cnn")
    with pytest.raises(PluginError, match="no plugin named 'never' is registered"):
        plugins.unregister_plugin("never")


def test_register_plugin_says_what_did_not_register_and_built_ins_stay():
    module = _inline("takes_dex", register_losses=lambda register: register("dex", object))
    with pytest.warns(UserWarning, match="plugin 'takes_dex': loss name 'dex' is agemetric's own"):
        plugins.register_plugin(module)
    try:
        with pytest.raises(PluginError, match="registered already, as 'takes_dex'"):
            plugins.register_plugin(module, "again")
    finally:
        plugins.unregister_plugin("takes_dex")
    with pytest.raises(PluginError, match="'agemetric.baselines' is one of agemetric's own"):
        plugins.unregister_plugin("agemetric.baselines")

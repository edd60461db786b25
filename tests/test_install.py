"""``agemetric install`` / ``uninstall``: pip into agemetric's own environment."""

import json
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from agemetric.cli import app
from agemetric.cli import install as install_module

runner = CliRunner()


@pytest.fixture
def fake_pip(monkeypatch):
    """Record pip command lines instead of running them; ``fake_pip.code`` is pip's exit code."""

    class Fake:
        calls: list[list[str]] = []
        code = 0

        def __call__(self, command, check):
            self.calls.append(command)
            return subprocess.CompletedProcess(command, self.code)

    fake = Fake()
    monkeypatch.setattr(install_module.subprocess, "run", fake)
    return fake


def test_install_runs_this_interpreters_pip_with_options_passed_through(fake_pip):
    result = runner.invoke(app, ["install", "-U", "-e", "./my-plugin", "--no-build-isolation"])
    assert result.exit_code == 0, result.output
    assert fake_pip.calls == [
        [sys.executable, "-m", "pip", "install", "--upgrade", "-e", "./my-plugin", "--no-build-isolation"]
    ]


def test_pip_failure_is_one_line_and_keeps_pips_exit_code(fake_pip):
    fake_pip.code = 1
    result = runner.invoke(app, ["install", "agemetric-does-not-exist"])
    assert result.exit_code == 1
    assert "pip install failed with exit code 1" in result.output and "Traceback" not in result.output


def test_uninstall_asks_pip_and_refuses_to_remove_agemetric(fake_pip):
    assert runner.invoke(app, ["uninstall", "-y", "agemetric-pml"]).exit_code == 0
    assert fake_pip.calls == [[sys.executable, "-m", "pip", "uninstall", "--yes", "agemetric-pml"]]
    result = runner.invoke(app, ["uninstall", "-y", "agemetric"])
    assert result.exit_code == 2 and "refusing to uninstall agemetric" in result.output


PLUGIN = textwrap.dedent("""
    from agemetric import hookimpl
    from agemetric.default_plugins.all_pairs import AllPairsMiner

    @hookimpl
    def register_miners(register):
        register("installed-miner", AllPairsMiner)
""")


def _agemetric(*args):
    return subprocess.run([sys.executable, "-m", "agemetric", *args], capture_output=True, text=True, timeout=300)


def test_real_install_and_uninstall_of_a_local_plugin(tmp_path):
    """The real pip, offline: a local package is installed, listed, and removed again."""
    (tmp_path / "agemetric_installtest.py").write_text(PLUGIN)
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "agemetric-installtest"
        version = "0.0.1"

        [project.entry-points.agemetric]
        installtest = "agemetric_installtest"

        [tool.setuptools]
        py-modules = ["agemetric_installtest"]
        """)
    )
    try:
        result = _agemetric("install", "--no-deps", "--no-build-isolation", "--no-index", str(tmp_path))
        assert result.returncode == 0, result.stdout + result.stderr
        listed = {p["name"]: p for p in json.loads(_agemetric("plugins", "--json").stdout)}
        assert listed["installtest"]["version"] == "0.0.1"
        assert listed["installtest"]["registered"] == {"miner": ["installed-miner"]}
    finally:
        result = _agemetric("uninstall", "-y", "agemetric-installtest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "installtest" not in _agemetric("plugins", "--json").stdout

"""docs/plugins.md stays true: its walk-through package works, and every hook is documented and tested."""

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agemetric import hookspecs

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"


def _titled_blocks(text: str) -> dict[str, str]:
    """The fenced code blocks with a ``title="FILE"``: file name -> content."""
    pattern = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```$', re.S | re.M)
    return {name: body for name, body in pattern.findall(text)}


HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    signature = f"{hook}{inspect.signature(getattr(hookspecs, hook))}"
    assert f"`{signature}`" in GUIDE.read_text(), f"docs/plugins.md: document {signature}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test_that_implements_it(hook):
    """Some test defines a plugin implementing the hook (inline module, entry-point package or docs example)."""
    tests = [*ROOT.glob("tests/test_*.py"), *ROOT.glob("plugins/*/tests/test_*.py")]
    implementing = re.compile(rf"(def {hook}\(|{hook}=)")
    assert any(implementing.search(p.read_text()) for p in tests if p.name != Path(__file__).name), (
        f"no test implements {hook}"
    )


def _agemetric(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "agemetric", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


def test_the_walkthrough_package_installs_tests_and_trains(tmp_path):
    """Write the guide's files into an empty folder, install, list, run its tests, train with it."""
    files = _titled_blocks(GUIDE.read_text())
    assert set(files) == {"pyproject.toml", "agemetric_nearby.py", "test_nearby.py"}
    package = tmp_path / "agemetric-nearby"
    package.mkdir()
    for name, body in files.items():
        (package / name).write_text(body)
    try:
        installed = _agemetric("install", "--no-deps", "--no-build-isolation", "--no-index", "-e", str(package))
        assert installed.returncode == 0, installed.stdout + installed.stderr
        listed = {p["name"]: p for p in json.loads(_agemetric("plugins", "--json").stdout)}
        assert listed["nearby"]["registered"] == {"loss": ["hinge-contrastive"], "miner": ["nearby-ages"]}
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert tests.returncode == 0 and "2 passed" in tests.stdout, tests.stdout + tests.stderr
        out = tmp_path / "run"
        options = (
            "--loss hinge-contrastive --miner nearby-ages --set loss_options.gap=10 --set dataset_options.n=90 "
            "--epochs 1 --image-size 32 --batch-size 16 --k 5 --set backbone_options.width=8"
        )
        run = _agemetric("run", *options.split(), "--out", str(out))
        assert run.returncode == 0, run.stdout + run.stderr
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["mae"] > 0 and 'loss = "hinge-contrastive"' in (out / "config.toml").read_text()
    finally:
        removed = _agemetric("uninstall", "-y", "agemetric-nearby")
    assert removed.returncode == 0, removed.stdout + removed.stderr


def test_ci_installs_and_tests_every_plugin_package():
    """The README's test command (what .ci/run executes) installs every package under plugins/."""
    readme = (ROOT / "README.md").read_text()
    command = readme.split("<!-- test-command:start -->")[1].split("<!-- test-command:end -->")[0]
    packages = sorted(p.parent.name for p in ROOT.glob("plugins/*/pyproject.toml"))
    assert packages, "no plugin packages found"
    for name in packages:
        assert f"-e plugins/{name}" in command, f"README test command does not install plugins/{name}"
    assert '"plugins"' in (ROOT / "pyproject.toml").read_text().split("testpaths")[1].split("\n")[0]

"""The documentation site: it builds with ``mkdocs build --strict``, and every code example runs.

Examples are the ```` ```python ```` and ```` ```bash ```` blocks of the pages under ``docs/``.
Each page's examples run in order, in one fresh folder (a later block may use an earlier block's
run folder) that holds small stand-ins for what the examples name: ``my_faces/labels.csv`` with
48 photos, ``photos/a.jpg`` and ``b.jpg``, a UTKFace-style folder of 80 at ``path/to/UTKFace``, and a
local torch hub cache with (random) ImageNet checkpoints, so nothing is downloaded. Training
commands (``agemetric run``, ``agemetric paper ...``) run as written with these appended, so that
each takes seconds: ``--set time_budget=2 --set limit=80 --set figures=false``.

A block is not executed only when the page says so and why, in an HTML comment on the line
before it (``<!-- not-executed: REASON -->``) or once at the top for a whole page of measurement
records (``<!-- examples-not-executed: REASON -->``); blocks with a ``title="file"`` are files of
the plugin walk-through, which ``tests/test_docs_plugins.py`` writes and runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.M | re.S)
SKIP_BLOCK = re.compile(r"<!--\s*not-executed:\s*(.+?)\s*-->\s*$")
SKIP_PAGE = re.compile(r"<!--\s*examples-not-executed:\s*(.+?)\s*-->")
SHORTEN = ["--set", "time_budget=2", "--set", "limit=80", "--set", "figures=false"]
TRAINING = re.compile(r"\bagemetric(\s+--\S+)*\s+(run|paper\s+(toy-embedding|multitask|margin-sweep))\b")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@dataclass
class Block:
    page: str
    line: int
    language: str
    title: bool
    code: str
    skip: str | None  # the reason given in the page, or None: executed


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    page_skip = SKIP_PAGE.search(text)
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = SKIP_BLOCK.search(before)
        out.append(
            Block(
                page=str(page.relative_to(DOCS)),
                line=text.count("\n", 0, m.start()) + 1,
                language=m.group(1),
                title="title=" in m.group(2),
                code=m.group(3),
                skip=(page_skip and page_skip.group(1)) or (reason and reason.group(1)),
            )
        )
    return out


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def examples(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.language in ("python", "bash") and not b.title and not b.skip]


def commands(code: str) -> list[str]:
    """The shell commands of a bash block: continuation lines joined, comments and blanks dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


# -- the folder the examples run in ------------------------------------------------------------


def _faces(n: int, seed: int) -> list[tuple[np.ndarray, int, int]]:
    """``n`` synthetic faces: ``(image (48, 48, 3) uint8, age, gender)``."""
    from agemetric.data import synthetic

    ages, genders = synthetic.sample_labels(n, seed)
    return [
        (synthetic.render(i, age, gender, seed, size=48), int(age), int(gender))
        for i, (age, gender) in enumerate(zip(ages.tolist(), genders.tolist(), strict=True))
    ]


def _hub_cache(home: Path) -> None:
    """Random-weight stand-ins for the ImageNet checkpoints torchvision would download."""
    import torch
    import torchvision

    cache = home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    for arch in ("mobilenet_v2", "inception_v3"):
        weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
        kwargs = {"aux_logits": True, "init_weights": False} if arch == "inception_v3" else {}
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
        torch.save(model.state_dict(), cache / weights.url.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def stand_ins(tmp_path_factory) -> Path:
    """Data, photos and weights for the examples (copied into each page's folder)."""
    root = tmp_path_factory.mktemp("docs-stand-ins")
    rows = _faces(48, seed=5)
    (root / "my_faces" / "img").mkdir(parents=True)
    lines = ["path,age,gender"]
    for i, (image, age, gender) in enumerate(rows):
        Image.fromarray(image).save(root / "my_faces" / "img" / f"{i:04d}.jpg")
        lines.append(f"img/{i:04d}.jpg,{age},{gender}")
    (root / "my_faces" / "labels.csv").write_text("\n".join(lines) + "\n")
    (root / "photos").mkdir()
    for name, (image, _, _) in zip(("a.jpg", "b.jpg"), rows, strict=False):
        Image.fromarray(np.ascontiguousarray(image[:, ::-1])).save(root / "photos" / name)
    utk = root / "path" / "to" / "UTKFace"
    utk.mkdir(parents=True)
    for i, (image, age, gender) in enumerate(_faces(80, seed=6)):  # enough for the face preset's k = 50
        Image.fromarray(image).save(utk / f"{age}_{gender}_0_2017010{i:04d}.jpg.chip.jpg")
    _hub_cache(root / "torch-home")
    return root


def run_page(page: Path, stand_ins: Path, workdir: Path) -> list[str]:
    """Run every example of ``page`` in ``workdir``; returns the python examples' outputs."""
    import shutil

    shutil.copytree(stand_ins, workdir, dirs_exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(
        TORCH_HOME=str(workdir / "torch-home"),
        AGEMETRIC_CACHE=str(workdir / "cache"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        OMP_NUM_THREADS="1",
        COLUMNS="200",
    )
    outputs = []
    for block in examples(page):
        where = f"{block.page}:{block.line}"
        if block.language == "python":
            done = subprocess.run(
                [sys.executable, "-c", block.code], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, f"{where}: python example failed\n{done.stderr[-3000:]}"
            outputs.append(done.stdout)
            continue
        for command in commands(block.code):
            if TRAINING.search(command):
                command = f"{command} {' '.join(SHORTEN)}"
            done = subprocess.run(
                ["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, f"{where}: `{command}` failed\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    return outputs


def loops_learn(outputs: list[str]) -> None:
    """The building-blocks page's training loops: the paper's loss learns (its MAE well below the
    mean training age's); the PML loop runs to a finite MAE no worse than the mean's by much (the
    page says that in 100 steps it learns little)."""
    maes = {
        line.partition(": MAE")[0]: float(line.rpartition("MAE ")[2].rstrip(")"))
        for out in outputs
        for line in out.splitlines()
        if "MAE " in line
    }
    mean = maes.pop("(the mean training age for everyone")
    assert set(maes) == {"revised contrastive", "PML multi-similarity with age tolerance"}, maes
    assert maes["revised contrastive"] < 0.8 * mean, (maes, mean)
    assert maes["PML multi-similarity with age tolerance"] < 1.1 * mean, (maes, mean)


#: what a page's python examples must print, beyond running
OUTPUT_CHECKS = {"api/building-blocks.md": loops_learn}


# -- the tests ------------------------------------------------------------------------------------


def test_site_builds_strict(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    for option in ("--backbone", "--data-dir", "--set", "k-sweep", "--run-figures"):
        assert option in cli, f"CLI reference lacks {option}"  # generated from the app, so complete
    api = (tmp_path / "site" / "api" / "estimator" / "index.html").read_text()
    assert "fit_gallery" in api and "time_budget" in api
    check_api_reference(tmp_path / "site")
    from agemetric import __version__

    home = (tmp_path / "site" / "index.html").read_text()
    assert f"agemetric {__version__}" in home and "github.com/agemetric/agemetric" in home  # version, repository
    assert "slate" in home  # the dark scheme of the light/dark toggle
    assert not list((tmp_path / "site").rglob("*.py")), "build scripts published into the site"


#: Where the public names are: the package's ``__all__`` and each building-block namespace's.
PUBLIC_MODULES = (
    "agemetric",
    "agemetric.losses",
    "agemetric.miners",
    "agemetric.retrievers",
    "agemetric.backbones",
    "agemetric.datasets",
    "agemetric.framers",
    "agemetric.pml",
    "agemetric.intervals",
    "agemetric.groups",
    "agemetric.functional",
    "agemetric.metrics",
)
RAW_ROLE = re.compile(r":(meth|class|func|data|attr|mod|exc|obj):(`|<code>)")
ANCHOR = re.compile(r'\bid="([A-Za-z_][\w.]*)"')


def check_api_reference(site: Path) -> None:
    """The API pages: no raw Sphinx roles, no examples rendered as quotes, an entry for every public name."""
    import importlib

    html = {str(p.relative_to(site)): p.read_text(encoding="utf-8") for p in (site / "api").rglob("*.html")}
    for page, text in html.items():
        body = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.S)
        assert not RAW_ROLE.search(body), f"{page}: a raw Sphinx role: {RAW_ROLE.search(body).group(0)}"
        # a docstring's ">>>" read as Markdown quote markers: the example's code ends up in nested quotes
        assert "<blockquote>" not in body, f"{page}: a blockquote (a >>> example not rendered as code?)"
    # doctest examples are highlighted code blocks
    assert any(re.search(r'<div class="(language-pycon )?highlight">.*?&gt;&gt;&gt;', t, re.S) for t in html.values())
    anchors = {a.rsplit(".", 1)[-1] for t in html.values() for a in ANCHOR.findall(t)}
    missing = []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        public = getattr(module, "__all__", None) or [
            n
            for n, v in vars(module).items()
            if callable(v) and not n.startswith("_") and getattr(v, "__module__", "") == name
        ]
        missing += [f"{name}.{n}" for n in public if n not in anchors]
    assert not missing, f"public names without an entry in the API reference: {missing}"


def test_every_page_is_in_the_navigation():
    import yaml

    def names(nav):
        for item in nav:
            for value in item.values() if isinstance(item, dict) else [item]:
                yield from names(value) if isinstance(value, list) else [value]

    class Loader(yaml.SafeLoader):  # mkdocs.yml may hold !!python tags; they do not matter here
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    nav = set(names(yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)["nav"]))
    assert {str(p.relative_to(DOCS)) for p in pages()} == nav


def test_skipped_examples_say_why():
    for page in pages():
        for block in blocks(page):
            if block.skip is not None:
                assert len(block.skip) > 15, f"{block.page}:{block.line}: give a reason"


def test_commands_split_like_a_shell():
    code = "agemetric run --a 1 \\\n    --b 2   # trailing note\n# a comment\n\nagemetric plugins\n"
    assert commands(code) == ["agemetric run --a 1 --b 2", "agemetric plugins"]
    assert TRAINING.search("agemetric --debug run --x") and TRAINING.search("agemetric paper multitask")
    assert not TRAINING.search("agemetric paper k-sweep runs/x") and not TRAINING.search("agemetric predict r a.jpg")


PAGES = [p for p in pages() if examples(p)]


def test_pages_name_paths_a_user_can_have():
    """Commands read data from ``path/to/...``, never from a folder beside our own checkout."""
    root = DOCS.parent
    texts = [*pages(), root / "README.md", *sorted((root / "benchmarks").glob("*.py"))]
    found = [
        f"{p.relative_to(root)}:{n}"
        for p in texts
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if "../shared" in line
    ]
    assert not found, f"workspace paths (use path/to/...): {found}"


def test_the_examples_cover_the_user_pages():
    executed = {str(p.relative_to(DOCS)) for p in PAGES}
    assert {
        "quickstart.md",
        "concepts.md",
        "datasets.md",
        "api/estimator.md",
        "api/distributed.md",
        "api/building-blocks.md",
        "index.md",
    } <= executed


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_examples_run(page, stand_ins, tmp_path):
    outputs = run_page(page, stand_ins, tmp_path)
    OUTPUT_CHECKS.get(str(page.relative_to(DOCS)), lambda outputs: None)(outputs)

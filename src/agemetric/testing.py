"""Contract checks for plugins, reused by agemetric's own tests and by plugin packages' tests.

Each ``check_*`` function builds the component by its registered name (so it is exactly what
``agemetric run`` would build), exercises it on small random data and raises ``AssertionError``
with a message naming the plugin when a contract is broken.

Example (in a plugin package's tests)::

    from agemetric.testing import check_loss

    def test_my_loss_contract():
        check_loss("my-loss")
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from agemetric import plugins
from agemetric.data.arrays import FaceArrays
from agemetric.interfaces.checks import FIELDS, describe


def random_face_arrays(n: int = 24, size: int = 32, seed: int = 0) -> FaceArrays:
    """``n`` random uint8 "faces" of ``size`` px with ages 1-79 and genders 0/1: for tests of training code."""
    g = torch.Generator().manual_seed(seed)
    return FaceArrays(
        images=torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
        ages=torch.randint(1, 80, (n,), generator=g).float(),
        genders=torch.randint(0, 2, (n,), generator=g),
        keys=[str(i) for i in range(n)],
    )


def _batch(b: int = 12, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, d, generator=g)  # (B, D)
    ages = torch.randint(1, 80, (b,), generator=g).float()  # (B,)
    return emb, ages


def check_backbone(name: str, embedding_dim: int = 6, gender_dim: int = 3) -> None:
    """Shapes and dtypes of the embeddings, with and without a gender head, and gradients."""
    for g_dim in (gender_dim, 0):
        backbone = plugins.create("backbone", name, embedding_dim=embedding_dim, gender_dim=g_dim, weights="none")
        backbone.train()
        side = max(backbone.min_size, 32)
        out = backbone(torch.randn(2, 3, side, side))
        assert out.age.shape == (2, embedding_dim), f"backbone {name}: age embedding {tuple(out.age.shape)}"
        assert out.age.dtype == torch.float32, f"backbone {name}: age embedding dtype {out.age.dtype}"
        if g_dim:
            assert out.gender is not None and out.gender.shape == (2, g_dim), f"backbone {name}: gender head"
        else:
            assert out.gender is None, f"backbone {name}: gender_dim=0 must give gender=None"
        out.age.sum().backward()
        assert any(p.grad is not None for p in backbone.parameters()), f"backbone {name}: no gradients"


def _genders(b: int = 12) -> torch.Tensor:
    return (torch.arange(b) % 2).float()  # (B,) 0/1, both in every batch of two or more


def check_miner(name: str, margin: float = 4.0, gender_margin: float = 0.5) -> None:
    """Output type is ``produces``, int64 1-d index tensors of equal length inside the batch; on
    0/1 gender labels at ``gender_margin`` (the gender task) it finds something to train on."""
    miner = plugins.create("miner", name, margin=margin)
    assert miner.produces in FIELDS, f"miner {name}: produces must be one of {[t.__name__ for t in FIELDS]}"
    for b in (2, 12):
        emb, ages = _batch(b)
        _check_indices(name, miner(emb, ages), miner.produces, b)  # the base class checks lengths too
    gender_miner = plugins.create("miner", name, margin=gender_margin)
    emb, _ = _batch(12)
    out = gender_miner(emb, _genders(12))
    _check_indices(name, out, miner.produces, 12)
    assert next(iter(vars(out).values())).numel() > 0, (
        f"miner {name}: no {miner.produces.__name__.lower()} on 0/1 gender labels at margin {gender_margin} "
        "(a batch of 6 + 6); the gender task would never train"
    )


def _check_indices(name: str, out, produces: type, b: int) -> None:
    assert isinstance(out, produces)
    for t in vars(out).values():
        assert t.dtype == torch.int64 and t.ndim == 1, f"miner {name}: indices must be (P,) int64"
        assert t.numel() == 0 or (0 <= int(t.min()) and int(t.max()) < b), f"miner {name}: index range"


def _matching_miner(loss) -> str:
    """The first registered miner whose output the loss accepts."""
    return next(
        e.name for e in plugins.registry("miner").values() if loss.takes(plugins.create("miner", e.name).produces)
    )


def check_loss(name: str, miner: str | None = None, margin: float = 4.0) -> None:
    """Finite 0-d loss with a gradient reaching the embeddings; zero (with graph) for no pairs."""
    loss = plugins.create("loss", name, margin=margin)
    miner_name = miner or _matching_miner(loss)
    mined = plugins.create("miner", miner_name, margin=margin)
    emb, ages = _batch()
    emb.requires_grad_(True)
    value = loss(emb, ages, mined(emb, ages))
    assert value.ndim == 0 and torch.isfinite(value), f"loss {name}: must be a finite 0-d tensor, got {value}"
    value.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all(), f"loss {name}: no finite gradient"
    empty_idx = torch.empty(0, dtype=torch.int64)
    empty = mined.produces(*[empty_idx] * len(FIELDS[mined.produces]))
    emb2 = emb.detach().clone().requires_grad_(True)
    zero = loss(emb2, ages, empty)
    assert float(zero.detach()) == 0.0 and zero.requires_grad, f"loss {name}: empty indices must give a zero with graph"


def check_retriever(name: str, k: int = 5) -> None:
    """Nearest-first order, self-exclusion, predictions within the gallery's ages, save/load.

    A retriever that refuses some losses in `attach()` is attached (as by the estimator) to the
    first registered loss it accepts, after one forward pass of that loss on the check batch (so
    lazy layers have their sizes).
    """
    emb, ages = _batch(b=40, d=6, seed=1)
    loss = _accepted_loss(plugins.create("retriever", name, k=k))
    if loss is not None:
        loss(emb, ages, plugins.create("miner", _matching_miner(loss))(emb, ages))

    def create():
        retriever = plugins.create("retriever", name, k=k)
        if loss is not None:
            retriever.attach(loss)
        return retriever

    retriever = create()
    retriever.fit(emb, ages)
    dist, idx = retriever.search(emb[:7])
    assert dist.shape == (7, k) and idx.shape == (7, k) and idx.dtype == torch.int64, f"retriever {name}: shapes"
    assert (dist[:, 1:] >= dist[:, :-1] - 1e-5).all(), f"retriever {name}: results must be nearest first"
    _, idx_ex = retriever.search(emb[:7], exclude=torch.arange(7))
    assert not (idx_ex == torch.arange(7).view(-1, 1)).any(), f"retriever {name}: returned the excluded item"
    pred = retriever.predict(emb[:7])
    assert pred.shape == (7,) and (pred >= ages.min() - 1e-4).all() and (pred <= ages.max() + 1e-4).all(), (
        f"retriever {name}: predictions outside the gallery's age range"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.pt"
        torch.save(retriever.state_dict(), path)
        again = create().load_state_dict(torch.load(path, weights_only=True))
    assert torch.allclose(again.predict(emb[:7]), pred), f"retriever {name}: save/load changed predictions"


def _accepted_loss(retriever):
    """``None`` when ``retriever`` accepts any loss, else the first registered loss it accepts."""
    from agemetric.errors import PluginError

    try:
        retriever.attach(plugins.create("loss", "revised-contrastive"))
        return None
    except PluginError:
        pass
    for entry in plugins.registry("loss").values():
        loss = plugins.create("loss", entry.name)
        try:
            retriever.attach(loss)
            return loss
        except PluginError:
            continue
    raise AssertionError(f"{describe(retriever)}: attach() refuses every registered loss")


def check_framer(name: str) -> None:
    """A face with a non-empty RGB image for photos of several shapes and modes (the main one and
    every one), boxes inside the photo, and a stable cache key."""
    from PIL import Image

    framer = plugins.create("framer", name)
    for size, mode in (((64, 64), "RGB"), ((80, 120), "L"), ((120, 80), "RGBA")):
        photo = Image.new(mode, size)
        faces = [framer(photo), *framer.all_faces(photo)]
        for face in faces:
            out = face.image
            assert out.mode == "RGB" and min(out.size) >= 1, f"framer {name}: bad output for a {size} {mode} image"
            if face.box is not None:
                left, top, right, bottom = face.box
                assert 0 <= left < right <= size[0] and 0 <= top < bottom <= size[1], f"framer {name}: box {face.box}"
    assert framer.key() == plugins.create("framer", name).key(), f"framer {name}: key() must be stable"


def on_terminal(args: list[str], cwd: str | Path | None = None, columns: int = 120) -> tuple[int, str]:
    """Run ``agemetric ARGS`` with stdin, stdout and stderr on a pseudo-terminal, as a person types
    it (tables, colours and progress bars as a terminal gets them); returns ``(exit code, everything
    it wrote)``. For testing a plugin's command as well as piped (`typer.testing.CliRunner`)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    command = [sys.executable, "-m", "agemetric", *args]
    proc = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower, cwd=cwd, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


def wait_until_serving(base: str, process: subprocess.Popen | None = None, seconds: float = 60.0) -> None:
    """Return once ``GET {base}/health`` answers 200; ``AssertionError`` when ``process`` (the
    server) exits first or ``seconds`` pass."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server exited with code {process.returncode} before answering {base}/health")
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the server did not answer {base}/health within {seconds:g} s")


@contextlib.contextmanager
def serving(
    model: str | Path, *options: str, stop: int = signal.SIGTERM, **popen: Any
) -> Iterator[tuple[subprocess.Popen, str]]:
    """``agemetric serve MODEL OPTIONS`` on a free local port for the length of the block: yields
    the server's process and base URL (``http://127.0.0.1:PORT``) once ``/health`` answers, and
    at the end sends it ``stop`` (SIGTERM; SIGINT as Ctrl-C) and waits for it to exit.
    ``popen``: keywords for `subprocess.Popen` (e.g. ``stderr=``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "agemetric", "serve", str(model), "--port", str(port), *options]
    process = subprocess.Popen(command, **popen)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(base, process)
        yield process, base
    finally:
        if process.poll() is None:
            process.send_signal(stop)
        process.wait(timeout=30)

"""Whatever bytes a user's files hold, the readers answer with agemetric's own one-line error (or
read them): no other exception escapes. Also a disk that fills up while a model is saved."""

from __future__ import annotations

import errno
import json
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agemetric._io import atomic_torch_save, load_torch
from agemetric.bundle import Bundle
from agemetric.bundle_files import MANIFEST, read_manifest
from agemetric.config import load_toml
from agemetric.data.splits import read_split
from agemetric.datasets import CSVFaces
from agemetric.errors import AgemetricError
from agemetric.estimator import AgeEstimator
from agemetric.interfaces import FaceRecord

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CSV_TEXT = st.text(alphabet=st.sampled_from(list('path,age,gender,split\n"\r 0123456789.-eE\xff\x00ab/')), max_size=300)


def _file(data: bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp())
    (folder / name).write_bytes(data)
    return folder / name


def _only_our_errors(read) -> None:
    try:
        read()
    except AgemetricError as exc:
        assert "\n" not in str(exc).strip(), str(exc)


@FUZZ
@given(st.one_of(st.binary(max_size=300), CSV_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_csv_dataset(data):
    path = _file(b"path,age\n" + data, "labels.csv")
    _only_our_errors(lambda: CSVFaces(path).records())
    path = _file(data, "labels.csv")
    _only_our_errors(lambda: CSVFaces(path).records())


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_config_file(data):
    _only_our_errors(lambda: load_toml(_file(data, "c.toml")))


@FUZZ
@given(st.one_of(st.binary(max_size=300), CSV_TEXT.map(lambda t: ("key,side\n" + t).encode("utf-8", "surrogatepass"))))
def test_split_file(data):
    records = [FaceRecord("a.png", 30.0), FaceRecord("b.png", 40.0)]
    _only_our_errors(lambda: read_split(_file(data, "split.csv"), records))


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_bundle_manifest(data):
    path = _file(data, "bundle.json")
    _only_our_errors(lambda: read_manifest(path.parent))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@FUZZ
@given(st.binary(max_size=300))
def test_model_file(data):
    _only_our_errors(lambda: load_torch(_file(data, "model.pt"), "checkpoint"))


def test_a_full_disk_while_saving_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    atomic_torch_save({"v": torch.tensor(1)}, path)

    def full(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(AgemetricError, match=r"cannot write .*model.pt \(.*No space left on device\); the previous"):
        atomic_torch_save({"v": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(load_torch(path, "checkpoint")["v"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


# -- bundles and model files: data that never runs code -------------------------------------------

#: names of code a hostile file may hold; `_tripwire` records every call of the marker module's functions
CODE_NAMES = ["os:system", "builtins:exec", "subprocess:call", "agemetric_tripwire:run", "agemetric_tripwire:Framer"]
_tripwire_calls: list = []


@pytest.fixture(scope="module")
def tripwire():
    """A module ``agemetric_tripwire`` whose functions record being called; importable by name."""
    module = types.ModuleType("agemetric_tripwire")
    module.run = module.Framer = lambda *args, **kwargs: _tripwire_calls.append((args, kwargs))
    sys.modules["agemetric_tripwire"] = module
    yield _tripwire_calls
    del sys.modules["agemetric_tripwire"]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(CODE_NAMES),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["class", "name", "options", "box", "command", "x"]), inner, max_size=4)
    ),
    max_leaves=12,
)
FRAMINGS = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"name": st.sampled_from(["center", "box", "dlib-align", "pwn", *CODE_NAMES])},
        optional={
            "class": st.sampled_from(CODE_NAMES),
            "options": st.just({}) | st.just({"command": "touch pwned"}) | JSON,
            "box": JSON | st.lists(st.floats(-1, 2), min_size=4, max_size=4),
            "margin": JSON,
        },
    ),
)
INTERVAL_VALUES = st.fixed_dictionaries(
    {
        "level": JSON | st.floats(0, 1),
        "quantile": JSON,
        "offset": JSON,
        "normalised": JSON | st.booleans(),
        "n_calibration": JSON | st.integers(0, 100),
    },
    optional={
        "edges": JSON | st.lists(st.floats(0, 100), max_size=3),
        "quantiles": JSON | st.lists(st.floats(0, 9), max_size=4),
    },
)


def _random_manifest(data, valid: dict) -> dict:
    """The valid manifest with a random framing, random intervals, and up to two other fields
    replaced by random values."""
    manifest = dict(valid)
    special = {"image_size": JSON | st.integers(-5, 10**7), "k": JSON | st.integers(-5, 10**7)}
    for key in data.draw(st.lists(st.sampled_from(sorted(valid)), max_size=2)):
        manifest[key] = data.draw(special.get(key, JSON))
    manifest["framing"] = data.draw(FRAMINGS)
    manifest["intervals"] = data.draw(st.none() | INTERVAL_VALUES)
    return manifest


def _arrays():
    shapes = st.tuples(st.integers(0, 4), st.integers(1, 9)) | st.tuples(st.integers(0, 4))
    values = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.integers(-3, 200)
    dtypes = st.sampled_from([np.float32, np.float64, np.int64, np.int8])

    def array(shape, value, dtype):
        with np.errstate(invalid="ignore", over="ignore"):  # NaN or inf as an int: any value will do
            return np.full(shape, value).astype(dtype)

    return st.builds(array, shapes, values, dtypes)


@pytest.fixture(scope="module")
def valid_bundle(tmp_path_factory, make_run):
    from agemetric.export import export_bundle

    folder = tmp_path_factory.mktemp("fuzz") / "run"
    make_run(folder)
    export_bundle(folder, folder.parent / "bundle", "torchscript")
    return folder.parent / "bundle"


@FUZZ
@given(data=st.data())
def test_random_bundles_load_or_give_our_error_and_run_no_code(valid_bundle, tripwire, data):
    manifest = json.loads((valid_bundle / MANIFEST).read_text())
    folder = Path(tempfile.mkdtemp())
    shutil.copy(valid_bundle / "model.torchscript.pt", folder)
    (folder / MANIFEST).write_text(json.dumps(_random_manifest(data, manifest)))
    with np.load(valid_bundle / "gallery.npz") as gallery:
        arrays = dict(gallery)
    for key in data.draw(st.lists(st.sampled_from(sorted(arrays)), max_size=2)):
        if data.draw(st.booleans()):
            arrays[key] = data.draw(_arrays())
        else:
            arrays.pop(key, None)
    np.savez(folder / "gallery.npz", **arrays)
    try:
        Bundle(folder).predict(np.zeros((1, 3, 32, 32), np.uint8))
    except AgemetricError as exc:
        assert "\n" not in str(exc).strip(), str(exc)
    assert tripwire == [] and not Path("pwned").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@FUZZ
@given(data=st.data())
def test_random_model_files_load_or_give_our_error(valid_bundle, tripwire, data):
    state = torch.load(valid_bundle.parent / "run" / "model.pt", weights_only=True)
    for key in data.draw(st.lists(st.sampled_from(sorted(state["spec"])), max_size=3)):
        state["spec"][key] = data.draw(JSON)
    state["intervals"] = data.draw(st.none() | INTERVAL_VALUES)
    for key in data.draw(st.lists(st.sampled_from(["embeddings", "ages", "genders", "k"]), max_size=2)):
        state["retriever"][key] = torch.from_numpy(data.draw(_arrays())) if key != "k" else data.draw(JSON)
    path = Path(tempfile.mkdtemp()) / "model.pt"
    torch.save(state, path)
    _only_our_errors(lambda: AgeEstimator.load(path).predict(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)))
    assert tripwire == []

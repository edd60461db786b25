"""Whatever bytes a user's files hold, the readers answer with agemetric's own one-line error (or
read them): no other exception escapes. Also a disk that fills up while a model is saved."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agemetric._io import atomic_torch_save, load_torch
from agemetric.bundle import read_manifest
from agemetric.config import load_toml
from agemetric.data.splits import read_split
from agemetric.datasets import CSVFaces
from agemetric.errors import AgemetricError
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

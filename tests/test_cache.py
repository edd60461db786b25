"""The disk cache of decoded images: its size limit, its listing and `agemetric cache`."""

from __future__ import annotations

import os
import time
from collections import namedtuple

import numpy as np
import pytest
from typer.testing import CliRunner

from agemetric import plugins
from agemetric.cli import app
from agemetric.data import cache
from agemetric.data.arrays import decode
from agemetric.errors import AgemetricError

runner = CliRunner()


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("AGEMETRIC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AGEMETRIC_CACHE_LIMIT", raising=False)
    return tmp_path / "cache"


def put(index: int, n: int = 10, used: float | None = None) -> str:
    """Store an entry of ``n`` 8x8 images (``n * 192`` bytes) whose pixels are all ``index``; its
    key, or why it was not stored."""
    key = f"{index:032x}"
    images = np.full((n, 3, 8, 8), index, np.uint8)
    why_not = cache.store(key, images, np.ones(n, bool), [None] * n, source=f"set {index}")
    if why_not is not None:
        return why_not
    if used is not None:
        for suffix in (".u8", ".json"):
            os.utime(cache.cache_dir() / f"{key}{suffix}", (used, used))
    return key


def test_storing_beyond_the_limit_removes_the_entries_used_longest_ago(folder, monkeypatch):
    monkeypatch.setenv("AGEMETRIC_CACHE_LIMIT", "5000")  # room for two entries of 1,920 bytes, not three
    first, second = put(1, used=1000), put(2, used=2000)
    assert cache.load(first, 10, 8) is not None  # read by a run: now the most recently used
    third = put(3)
    assert [e.key for e in cache.entries()] == [third, first]
    assert cache.load(second, 10, 8) is None
    assert sum(e.bytes for e in cache.entries()) <= 5000
    assert [e.source for e in cache.entries()] == ["set 3", "set 1"]


def test_an_entry_larger_than_the_limit_is_not_stored_and_the_others_are_kept(folder, monkeypatch):
    monkeypatch.setenv("AGEMETRIC_CACHE_LIMIT", "3K")
    kept = put(1)
    why_not = put(2, n=20)  # 3,840 bytes of pixels, 4,170 with the metadata
    assert [e.key for e in cache.entries()] == [kept]
    assert why_not == (
        "decoded images not kept in the cache: they take 4.17 kB, more than the limit of 3 kB "
        "($AGEMETRIC_CACHE_LIMIT); the next run decodes them again"
    )


def test_a_lowered_limit_shrinks_the_cache_at_the_next_store_and_the_listing_says_so(folder, monkeypatch):
    put(1, used=1000)
    second = put(2, used=2000)
    monkeypatch.setenv("AGEMETRIC_CACHE_LIMIT", "3K")
    listing = runner.invoke(app, ["cache"])
    assert "(limit 3 kB); over the limit: the next run that stores images removes" in listing.output
    assert put(3, n=20).startswith("decoded images not kept")  # too large itself: the others still shrink
    assert [e.key for e in cache.entries()] == [second]
    monkeypatch.setenv("AGEMETRIC_CACHE_LIMIT", "0")
    assert put(4) == f"{4:032x}" and cache.entries() == []  # 0: nothing stored, nothing kept
    monkeypatch.setenv("AGEMETRIC_CACHE_LIMIT", "twenty")
    assert runner.invoke(app, ["cache", "--clear"]).exit_code == 0  # clearing needs no limit


def test_an_entry_is_not_stored_when_it_would_fill_the_disk(folder, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: usage(10**12, 10**12, cache.KEEP_FREE + 1500))
    why_not, disk = put(1, n=10), f"the disk of {folder}"  # 2,128 bytes would leave less than KEEP_FREE
    assert cache.entries() == []
    assert why_not == f"decoded images not kept in the cache: their 2.13 kB would leave less than 1 GB free on {disk}"
    put(2, n=5)  # 1,168 bytes fit
    assert len(cache.entries()) == 1


@pytest.mark.parametrize("text, expected", [("500M", 5 * 10**8), ("20G", 2 * 10**10), ("1.5gb", 15 * 10**8), ("0", 0)])
def test_the_limit_reads_decimal_sizes(folder, monkeypatch, text, expected):
    monkeypatch.setenv("AGEMETRIC_CACHE_LIMIT", text)
    assert cache.limit() == expected


def test_a_mistyped_limit_is_an_error_before_anything_is_decoded(folder, monkeypatch, utk_dir):
    monkeypatch.setenv("AGEMETRIC_CACHE_LIMIT", "20 gigs")
    ds = plugins.create("dataset", "utkface", root=utk_dir)
    calls = []
    monkeypatch.setattr(type(ds), "load_image", lambda self, r: calls.append(r))
    with pytest.raises(AgemetricError, match="AGEMETRIC_CACHE_LIMIT: expected a size such as 500M, 20G.*'20 gigs'"):
        decode(ds, ds.records(), size=16, cache=True)
    assert calls == []


def test_a_zero_limit_decodes_without_storing_or_a_note(folder, monkeypatch, utk_dir):
    monkeypatch.setenv("AGEMETRIC_CACHE_LIMIT", "0")
    ds = plugins.create("dataset", "utkface", root=utk_dir)
    notes = []
    arrays = decode(ds, ds.records(), size=16, cache=True, note=notes.append)
    assert len(arrays.images) == 6 and cache.entries() == [] and notes == []


def test_decode_says_when_its_images_could_not_be_kept(folder, monkeypatch, utk_dir):
    ds = plugins.create("dataset", "utkface", root=utk_dir)
    notes = []
    monkeypatch.setenv("AGEMETRIC_CACHE_LIMIT", "1K")
    decode(ds, ds.records(), size=16, cache=True, note=notes.append)
    folder.parent.joinpath("a-file").write_text("")
    monkeypatch.setenv("AGEMETRIC_CACHE", str(folder.parent / "a-file"))  # not a folder: cannot be written
    monkeypatch.delenv("AGEMETRIC_CACHE_LIMIT")
    arrays = decode(ds, ds.records(), size=16, cache=True, note=notes.append)
    assert len(arrays.images) == 6
    assert notes[0].startswith("decoded images not kept in the cache: they take 6.64 kB, more than the limit of 1 kB")
    assert notes[1] == f"decoded images not kept in the cache ({folder.parent / 'a-file'}): File exists"


def test_clear_removes_entries_and_stopped_writes_but_not_writes_in_progress_or_other_files(folder):
    put(1), put(2)
    stopped, writing = folder / f".{1:032x}.u8.abc.tmp", folder / f".{3:032x}.u8.def.tmp"
    stopped.write_bytes(b"half"), writing.write_bytes(b"going")
    os.utime(stopped, (time.time() - 2 * cache.STALE, time.time() - 2 * cache.STALE))
    folder.joinpath("notes.txt").write_text("mine")
    held = sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".u8", ".json"))
    assert cache.clear() == (2, held + 4)
    assert sorted(p.name for p in folder.iterdir()) == [writing.name, "notes.txt"]


def test_the_limit_counts_the_metadata_and_stopped_writes(folder, monkeypatch):
    stopped = folder / f".{9:032x}.u8.abc.tmp"
    folder.mkdir()
    stopped.write_bytes(b"x" * 5000)
    os.utime(stopped, (time.time() - 2 * cache.STALE, time.time() - 2 * cache.STALE))
    monkeypatch.setenv("AGEMETRIC_CACHE_LIMIT", "4300")  # two entries of 1,920 pixel bytes and 208 of metadata
    put(1, used=1000), put(2)
    assert not stopped.exists()
    assert len(cache.entries()) == 2 and sum(p.stat().st_size for p in folder.iterdir()) <= 4300
    put(3)
    assert len(cache.entries()) == 2 and sum(p.stat().st_size for p in folder.iterdir()) <= 4300


def test_agemetric_cache_lists_where_the_images_came_from_and_clears(folder, utk_dir):
    ds = plugins.create("dataset", "utkface", root=utk_dir)
    decode(ds, ds.records(), size=16, cache=True)
    listing = runner.invoke(app, ["cache"])
    assert listing.exit_code == 0, listing.output
    header, row, summary = listing.output.splitlines()  # piped: tab-separated lines
    assert header.split("\t") == ["images from", "images", "pixels", "size", "last used"]
    assert row.split("\t")[:3] == [f"UTKFace {utk_dir}", "8", "16x16"]  # 2 of them unreadable
    assert summary.startswith(f"{folder}: 1 entry,") and "(limit 20 GB)" in summary
    cleared = runner.invoke(app, ["cache", "--clear"])
    assert cleared.exit_code == 0 and cleared.output.startswith(f"{folder}: removed 1 entry,")
    assert cache.entries() == []


def test_clear_names_a_file_it_cannot_remove(folder, monkeypatch):
    key = put(1)

    def refuse(path, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(type(folder), "unlink", refuse)
    done = runner.invoke(app, ["cache", "--clear"])
    assert done.exit_code == 2
    assert f"Error: cannot remove {folder / key}.u8: Permission denied" in done.output.replace("\n", "")

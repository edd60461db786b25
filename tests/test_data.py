"""Dataset plugins, decoding, splits and the synthetic generator."""

import os
import time

import numpy as np
import pytest
import torch

from agemetric import plugins
from agemetric.data import synthetic
from agemetric.data.arrays import decode
from agemetric.data.splits import random_split
from agemetric.errors import AgemetricError


def test_utkface_parses_names_and_skips_broken_files(utk_dir):
    ds = plugins.create("dataset", "utkface", root=utk_dir)
    records = ds.records()
    assert len(records) == 8  # 6 good + corrupt + zero-byte (these fail only when decoded)
    assert len(ds.skipped) == 1 and "61_1_20170109142408075" in ds.skipped.summary()
    by_age = {r.age: r.gender for r in records}
    assert by_age[25.0] == 1 and by_age[1.0] == 0
    arrays = decode(ds, records, size=32)
    assert arrays.images.shape == (6, 3, 32, 32) and arrays.images.dtype == torch.uint8
    assert len(ds.skipped) == 1 and len(arrays.unreadable) == 2
    assert "unreadable image" in arrays.unreadable.summary()


def test_utkface_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(AgemetricError, match="does not exist"):
        plugins.create("dataset", "utkface", root=tmp_path / "nope")


def test_csv_skips_bad_rows_with_reasons(csv_dir):
    ds = plugins.create("dataset", "csv", root=csv_dir)
    records = ds.records()
    assert [r.key for r in records] == ["img/0.jpg", "img/1.jpg", "img/2.jpg"]
    assert [r.gender for r in records] == [0, 1, -1]
    assert records[0].subject == "s1"
    reasons = dict(ds.skipped.items)
    assert "between 0 and 150" in reasons["row 5"]
    assert "not a number" in reasons["row 6"]
    assert "between 0 and 150" in reasons["row 7"]
    assert "no image file" in reasons["row 8"]
    assert "gender 'x'" in reasons["row 9"]


def test_csv_missing_columns_names_the_file(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,years\na.jpg,3\n")
    with pytest.raises(AgemetricError, match=r"labels.csv: missing column\(s\) age, path"):
        plugins.create("dataset", "csv", root=path)


def test_synthetic_is_deterministic_and_order_free():
    a = synthetic.render(5, 40, 1, seed=3, size=48)
    b = synthetic.render(5, 40, 1, seed=3, size=48)
    c = synthetic.render(6, 40, 1, seed=3, size=48)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    ages, genders = synthetic.sample_labels(500, seed=0)
    lo, hi = synthetic.AGE_RANGE
    assert ages.min() >= lo and ages.max() <= hi and set(np.unique(genders)) == {0, 1}
    assert np.array_equal(ages, synthetic.sample_labels(500, seed=0)[0])


def test_synthetic_dataset_decodes():
    ds = plugins.create("dataset", "synthetic", n=10, seed=1, size=64)
    arrays = decode(ds, ds.records(), size=32)
    assert arrays.images.shape == (10, 3, 32, 32) and arrays.has_gender and len(ds.skipped) == 0


@pytest.mark.parametrize("limit, most", [(None, 2), (1, 1)])
def test_decode_uses_at_most_the_datasets_decode_threads(limit, most):
    """The synthetic faces hold the GIL while drawn, so they say decode_threads = 1: decode() then
    loads from one thread; a dataset without a limit gets decode's workers."""
    import threading

    from agemetric.default_plugins.synthetic_dataset import SyntheticFaces

    class Counted(SyntheticFaces):
        decode_threads = limit

        def load_image(self, record):
            seen.add(threading.get_ident())
            time.sleep(0.01)  # long enough that a second worker takes a record meanwhile
            return super().load_image(record)

    seen: set[int] = set()
    ds = Counted(n=8, seed=0, size=16)
    assert len(decode(ds, ds.records(), size=16, workers=2)) == 8
    assert len(seen) == most


def test_random_split_is_a_seeded_partition():
    train, test = random_split(101, 0.2, seed=7)
    assert len(test) == 20 and len(train) == 81
    assert sorted(torch.cat([train, test]).tolist()) == list(range(101))
    assert torch.equal(test, random_split(101, 0.2, seed=7)[1])
    assert not torch.equal(test, random_split(101, 0.2, seed=8)[1])


def test_decode_cache_hit_skips_decoding_and_a_changed_file_misses(utk_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("AGEMETRIC_CACHE", str(tmp_path / "cache"))
    ds = plugins.create("dataset", "utkface", root=utk_dir)
    records = ds.records()
    first = decode(ds, records, size=24, cache=True)
    calls = []
    again_ds = plugins.create("dataset", "utkface", root=utk_dir)
    original = type(again_ds).load_image
    monkeypatch.setattr(type(again_ds), "load_image", lambda self, r: calls.append(r) or original(self, r))
    second = decode(again_ds, again_ds.records(), size=24, cache=True)
    assert calls == []  # served from the cache
    assert torch.equal(first.images, second.images) and first.keys == second.keys
    assert len(again_ds.skipped) == len(ds.skipped)  # unreadable files are still reported
    # another size, or a changed file, is a miss
    decode(again_ds, again_ds.records(), size=20, cache=True)
    assert len(calls) == len(records)
    calls.clear()
    target = utk_dir / records[0].key
    stat = target.stat()
    os.utime(target, ns=(1, 1))  # touched, same content: still a hit
    decode(again_ds, again_ds.records(), size=24, cache=True)
    assert calls == []
    other = utk_dir / records[1].key
    swapped = other.read_bytes()[: stat.st_size].ljust(stat.st_size, b"\0")
    target.write_bytes(swapped)  # another picture of the same size and modification time (as cp -p makes)
    os.utime(target, ns=(1, 1))
    again_ds = plugins.create("dataset", "utkface", root=utk_dir)  # a new run: files are read afresh
    decode(again_ds, again_ds.records(), size=24, cache=True)
    assert len(calls) == len(records)


def test_box_framer_crops_the_box_and_center_keeps_the_image():
    from PIL import Image

    img = Image.new("RGB", (100, 200), (0, 0, 0))
    img.paste((255, 255, 255), (20, 0, 80, 100))  # a white "face" in the top middle
    box = plugins.create("framer", "box", box=(0.2, 0.0, 0.8, 0.5))
    framed = box(img)
    assert framed.image.size == (60, 100) and framed.image.getextrema() == ((255, 255),) * 3
    assert framed.box is None and framed.note is None  # a fixed region: no face located, nothing to report
    grown = plugins.create("framer", "box", box=(0.2, 0.0, 0.8, 0.5), margin=0.5)(img)
    assert grown.image.size == (100, 150)  # 30 px more on each side, clipped to the image
    assert plugins.create("framer", "center")(img).image.size == (100, 200)
    with pytest.raises(Exception, match="box must be"):
        plugins.create("framer", "box", box=(0.8, 0.0, 0.2, 0.5))


def test_framing_changes_the_decoded_pixels_and_the_cache_key(utk_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("AGEMETRIC_CACHE", str(tmp_path / "cache"))
    ds = plugins.create("dataset", "utkface", root=utk_dir)
    records = ds.records()
    whole = decode(ds, records, size=16, cache=True)
    boxed = decode(ds, records, size=16, cache=True, framer=plugins.create("framer", "box", box=(0, 0, 0.5, 0.5)))
    assert whole.images.shape == boxed.images.shape and not torch.equal(whole.images, boxed.images)


def test_a_chip_framer_is_framed_once_and_every_smaller_size_is_resized_from_its_chips(utk_dir, tmp_path, monkeypatch):
    from agemetric.interfaces import Framer

    calls = []

    class Chips(Framer):
        chip_size = 40

        def frame(self, image):
            calls.append(1)
            return image.resize((40, 40))

    monkeypatch.setenv("AGEMETRIC_CACHE", str(tmp_path / "cache"))
    ds = plugins.create("dataset", "utkface", root=utk_dir)
    records = ds.records()
    direct = decode(ds, records, size=24, framer=Chips())  # no cache: framed and resized at once
    calls.clear()
    at_24 = decode(ds, records, size=24, cache=True, framer=Chips())
    framed = len(calls)
    assert framed == 6  # the readable images
    at_16 = decode(ds, records, size=16, cache=True, framer=Chips())
    at_40 = decode(ds, records, size=40, cache=True, framer=Chips())
    assert len(calls) == framed  # both served from the chips cached at 40
    assert torch.equal(at_24.images, direct.images)  # the same pixels as framing at 24 directly
    assert at_16.images.shape == (6, 3, 16, 16) and at_40.images.shape == (6, 3, 40, 40)
    assert at_24.keys == direct.keys and at_24.unreadable.summary() == direct.unreadable.summary()

"""The MORPH II, MegaAge-Asian and FG-NET layouts and the csv ``split`` column, on fake folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from agemetric import plugins
from agemetric.data.arrays import decode
from agemetric.data.loading import skipped
from agemetric.errors import AgemetricError


def write_face(path, seed: int, size: int = 40) -> None:
    """A small random RGB JPEG (a copy of conftest's helper, which importlib mode cannot import)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, "JPEG")


def write_broken(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


CORRUPT = b"\xff\xd8\xff not a jpeg"


# ---------------------------------------------------------------------------------------------- MORPH


@pytest.fixture
def morph_dir(tmp_path):
    """MORPH academic-release style: Album2/ with 4 good images, a badly named one, a corrupt and a
    zero-byte file, plus a non-image file that must be ignored."""
    root = tmp_path / "morph"
    album = root / "Album2"
    write_face(album / "001234_1M45.JPG", seed=0)
    write_face(album / "001234_2M47.jpg", seed=1)
    write_face(album / "000077_0F16.png", seed=2)
    write_face(album / "sub" / "250001_3F61.JPG", seed=3)
    write_face(album / "001234_M45.JPG", seed=4)  # no index
    write_broken(album / "000500_1F30.JPG", CORRUPT)
    write_broken(album / "000501_1M31.JPG", b"")
    (root / "README.txt").write_text("not an image\n")
    return root


def test_morph_parses_names_recursively(morph_dir):
    ds = plugins.create("dataset", "morph", root=morph_dir)
    assert ds.has_gender and ds.csv_path is None
    records = ds.records()
    assert [r.key for r in records] == [
        "Album2/000077_0F16.png",
        "Album2/000500_1F30.JPG",
        "Album2/000501_1M31.JPG",
        "Album2/001234_1M45.JPG",
        "Album2/001234_2M47.jpg",
        "Album2/sub/250001_3F61.JPG",
    ]
    by_key = {r.key: (r.age, r.gender, r.subject) for r in records}
    assert by_key["Album2/001234_1M45.JPG"] == (45.0, 0, "001234")
    assert by_key["Album2/000077_0F16.png"] == (16.0, 1, "000077")
    assert by_key["Album2/sub/250001_3F61.JPG"] == (61.0, 1, "250001")
    assert all(r.split is None for r in records)
    assert ds.skipped.items == [("Album2/001234_M45.JPG", "name is not {subject}_{index}{M|F}{age}.JPG")]

    arrays = decode(ds, records, size=32)
    assert arrays.images.shape == (4, 3, 32, 32)
    assert arrays.keys == [r.key for r in records if "00050" not in r.key]
    assert arrays.genders.tolist() == [1, 0, 0, 1]
    reasons = dict(skipped(ds, arrays).items)
    assert len(reasons) == 3
    assert "unreadable image" in reasons["Album2/000500_1F30.JPG"]
    assert "unreadable image" in reasons["Album2/000501_1M31.JPG"]


def test_morph_csv_labels_win(morph_dir):
    rows = [
        "ID_NUM,picture_num,Gender,AGE,race,photo",  # header case does not matter; extra columns ignored
        "001234,1,M,44,B,Album2/001234_1M45.JPG",  # the CSV's age wins over the name's
        "000077,0,F,16,W,Album2\\000077_0F16.png",  # Windows separator
        "000500,1,F,30,W,Album2/000500_1F30.JPG",  # corrupt: fails at decode only
        "009999,1,M,20,W,Album2/009999_1M20.JPG",  # no such file
        "000600,1,X,20,W,Album2/001234_2M47.jpg",  # bad gender
        "000601,1,F,old,W,Album2/001234_2M47.jpg",  # bad age
        "000602,1,F,20,W,",  # no photo
        "001234,1,M,44,B,Album2/001234_1M45.JPG",  # listed twice
        "",
        "250001,3,F,61,W,Album2/sub/250001_3F61.JPG",
    ]
    (morph_dir / "morph_2008_nonCommercial.csv").write_text("\n".join(rows) + "\n")
    ds = plugins.create("dataset", "morph", root=morph_dir)
    assert ds.csv_path.name == "morph_2008_nonCommercial.csv"
    assert "labels from morph_2008_nonCommercial.csv" in ds.describe()
    records = ds.records()
    # files the CSV does not list (001234_2M47.jpg, the badly named one, the zero-byte one) are ignored
    assert [(r.key, r.age, r.gender, r.subject) for r in records] == [
        ("Album2/000077_0F16.png", 16.0, 1, "000077"),
        ("Album2/000500_1F30.JPG", 30.0, 1, "000500"),
        ("Album2/001234_1M45.JPG", 44.0, 0, "001234"),
        ("Album2/sub/250001_3F61.JPG", 61.0, 1, "250001"),
    ]
    name = "morph_2008_nonCommercial.csv"
    reasons = dict(ds.skipped.items)
    assert len(ds.skipped) == 5
    assert reasons[f"{name} row 5"] == "no image file 'Album2/009999_1M20.JPG'"
    assert "gender 'X'" in reasons[f"{name} row 6"]
    assert "age 'old' is not a number" in reasons[f"{name} row 7"]
    assert reasons[f"{name} row 8"] == "empty photo"
    assert "listed twice" in reasons[f"{name} row 9"]

    arrays = decode(ds, records, size=32)
    assert len(arrays) == 3 and "Album2/000500_1F30.JPG" not in arrays.keys


def test_morph_csv_option_and_errors(morph_dir, tmp_path):
    header = "id_num,gender,age,photo\n"
    (morph_dir / "a.csv").write_text(header + "001234,M,40,Album2/001234_1M45.JPG\n")
    (morph_dir / "b.csv").write_text(header + "001234,M,41,Album2/001234_1M45.JPG\n")
    (morph_dir / "other.csv").write_text("path,age\nx.jpg,3\n")  # not a MORPH CSV: not autodetected
    with pytest.raises(AgemetricError, match=r"2 MORPH CSV files in .*\(a.csv, b.csv\); choose one with"):
        plugins.create("dataset", "morph", root=morph_dir)
    ds = plugins.create("dataset", "morph", root=morph_dir, csv="b.csv")
    assert [(r.key, r.age) for r in ds.records()] == [("Album2/001234_1M45.JPG", 41.0)]
    with pytest.raises(AgemetricError, match=r"other.csv: missing column\(s\) id_num, gender, photo"):
        plugins.create("dataset", "morph", root=morph_dir, csv="other.csv")
    with pytest.raises(AgemetricError, match=r"dataset_options.csv: no CSV file .*nope.csv"):
        plugins.create("dataset", "morph", root=morph_dir, csv="nope.csv")
    with pytest.raises(AgemetricError, match=r"data_dir: MORPH folder .*missing.* does not exist"):
        plugins.create("dataset", "morph", root=tmp_path / "missing")
    empty = tmp_path / "empty"
    write_face(empty / "face.jpg", seed=0)
    ds = plugins.create("dataset", "morph", root=empty)
    with pytest.raises(AgemetricError, match=r"no usable MORPH images in .*empty.*expected image files named"):
        ds.records()
    assert ds.skipped.items == [("face.jpg", "name is not {subject}_{index}{M|F}{age}.JPG")]


# ---------------------------------------------------------------------------------------- MegaAge-Asian


def write_lists(root, split, names, ages):
    (root / "list").mkdir(parents=True, exist_ok=True)
    (root / "list" / f"{split}_name.txt").write_text("".join(f"{n}\n" for n in names))
    (root / "list" / f"{split}_age.txt").write_text("".join(f"{a}\n" for a in ages))


@pytest.fixture
def megaage_dir(tmp_path):
    root = tmp_path / "megaage_asian"
    for i in (1, 2, 3):
        write_face(root / "train" / f"{i}.jpg", seed=i)
    write_broken(root / "train" / "4.jpg", CORRUPT)
    write_broken(root / "train" / "5.jpg", b"")
    write_face(root / "train" / "99.jpg", seed=99)  # not listed: ignored
    write_face(root / "test" / "1.jpg", seed=10)
    write_face(root / "test" / "2.jpg", seed=11)
    write_lists(
        root, "train", ["1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg", "6.jpg", "3.jpg"], [5, 23, 70, 8, 9, 30, 70]
    )
    write_lists(root, "test", ["1.jpg", "2.jpg", "", "2.jpg"], [" 41", "x", 3, 12])
    return root


def test_megaage_uses_the_official_lists(megaage_dir):
    ds = plugins.create("dataset", "megaage-asian", root=megaage_dir)
    assert not ds.has_gender
    records = ds.records()
    assert [(r.key, r.age, r.split) for r in records] == [
        ("test/1.jpg", 41.0, "test"),
        ("test/2.jpg", 12.0, "test"),  # its first line had a bad age; the second one counts
        ("train/1.jpg", 5.0, "train"),
        ("train/2.jpg", 23.0, "train"),
        ("train/3.jpg", 70.0, "train"),
        ("train/4.jpg", 8.0, "train"),
        ("train/5.jpg", 9.0, "train"),
    ]
    assert all(r.gender == -1 and r.subject is None for r in records)
    assert ds.skipped.items == [
        ("list/train_name.txt line 6", "no image file 'train/6.jpg'"),
        ("list/train_name.txt line 7", "image 'train/3.jpg' is listed twice"),
        ("list/test_name.txt line 2", "age 'x' is not a number"),
        ("list/test_name.txt line 3", "empty image name"),
    ]
    arrays = decode(ds, records, size=32)
    assert arrays.keys == ["test/1.jpg", "test/2.jpg", "train/1.jpg", "train/2.jpg", "train/3.jpg"]
    assert arrays.ages.tolist() == [41.0, 12.0, 5.0, 23.0, 70.0]
    assert len(ds.skipped) == 4, "decoding leaves the dataset's own list alone"
    assert {n for n, _ in arrays.unreadable.items} == {"train/4.jpg", "train/5.jpg"}
    assert all("unreadable image" in reason for _, reason in arrays.unreadable.items)
    assert skipped(ds, arrays).items == [*ds.skipped.items, *arrays.unreadable.items]


def test_megaage_length_mismatch_names_both_files(megaage_dir):
    write_lists(megaage_dir, "test", ["1.jpg", "2.jpg", "3.jpg"], [20, 30])
    ds = plugins.create("dataset", "megaage-asian", root=megaage_dir)
    with pytest.raises(AgemetricError) as err:
        ds.records()
    message = str(err.value)
    assert "list/test_name.txt has 3 lines but" in message and "list/test_age.txt has 2" in message


def test_megaage_fatal_layout_errors(megaage_dir, tmp_path):
    with pytest.raises(AgemetricError, match=r"data_dir: MegaAge-Asian folder .*nope.* does not exist"):
        plugins.create("dataset", "megaage-asian", root=tmp_path / "nope")
    (megaage_dir / "list" / "test_age.txt").unlink()
    with pytest.raises(AgemetricError, match=r"has no list/test_age.txt; expected the MegaAge-Asian layout: train/"):
        plugins.create("dataset", "megaage-asian", root=megaage_dir)
    bare = tmp_path / "bare"
    write_lists(bare, "train", ["1.jpg"], [20])
    write_lists(bare, "test", [], [])
    with pytest.raises(AgemetricError, match=r"has no train/ folder for the 1 images in list/train_name.txt"):
        plugins.create("dataset", "megaage-asian", root=bare).records()
    (bare / "train").mkdir()
    ds = plugins.create("dataset", "megaage-asian", root=bare)
    with pytest.raises(AgemetricError, match=r"no usable MegaAge-Asian images in .*bare.*expected train/ and test/"):
        ds.records()
    assert ds.skipped.items == [("list/train_name.txt line 1", "no image file 'train/1.jpg'")]


# ---------------------------------------------------------------------------------------------- FG-NET


@pytest.fixture
def fgnet_dir(tmp_path):
    root = tmp_path / "FGNET" / "images"
    write_face(root / "001A02.JPG", seed=0)
    write_face(root / "001A43a.JPG", seed=1)
    write_face(root / "001A43b.JPG", seed=2)
    write_face(root / "078A11b.jpg", seed=3)
    write_face(root / "002A5.png", seed=4)
    write_face(root / "001B02.JPG", seed=5)  # bad name
    write_face(root / "001A43c.JPG", seed=6)  # bad suffix letter
    write_broken(root / "003A10.JPG", CORRUPT)
    write_broken(root / "004A11.JPG", b"")
    (root / "001a02.pts").write_text("version: 1\n")  # landmarks: ignored
    write_face(root / "more" / "005A20.JPG", seed=7)  # only with recursive=True
    return root


def test_fgnet_parses_names(fgnet_dir):
    ds = plugins.create("dataset", "fgnet", root=fgnet_dir)
    assert not ds.has_gender
    records = ds.records()
    assert [(r.key, r.age, r.subject) for r in records] == [
        ("001A02.JPG", 2.0, "001"),
        ("001A43a.JPG", 43.0, "001"),
        ("001A43b.JPG", 43.0, "001"),
        ("002A5.png", 5.0, "002"),
        ("003A10.JPG", 10.0, "003"),
        ("004A11.JPG", 11.0, "004"),
        ("078A11b.jpg", 11.0, "078"),
    ]
    assert all(r.gender == -1 and r.split is None for r in records)
    assert ds.skipped.items == [
        ("001A43c.JPG", "name is not {subject}A{age}[a|b].JPG"),
        ("001B02.JPG", "name is not {subject}A{age}[a|b].JPG"),
    ]
    arrays = decode(ds, records, size=32)
    assert arrays.keys == ["001A02.JPG", "001A43a.JPG", "001A43b.JPG", "002A5.png", "078A11b.jpg"]
    assert (arrays.genders == -1).all() and not arrays.has_gender
    assert len(ds.skipped) == 2 and len(arrays.unreadable) == 2
    assert all("unreadable image" in reason for _, reason in arrays.unreadable.items)


def test_fgnet_recursive_and_errors(fgnet_dir, tmp_path):
    ds = plugins.create("dataset", "fgnet", root=fgnet_dir, recursive=True)
    assert ("more/005A20.JPG", 20.0, "005") in [(r.key, r.age, r.subject) for r in ds.records()]
    with pytest.raises(AgemetricError, match="dataset_options.recursive: expected true or false, got 'yes'"):
        plugins.create("dataset", "fgnet", root=fgnet_dir, recursive="yes")
    with pytest.raises(AgemetricError, match=r"data_dir: FG-NET folder .*nope.* does not exist"):
        plugins.create("dataset", "fgnet", root=tmp_path / "nope")
    with pytest.raises(AgemetricError, match=r"no FG-NET images in .*FGNET.*expected files named \{subject\}A"):
        plugins.create("dataset", "fgnet", root=fgnet_dir.parent).records()


# ------------------------------------------------------------------------------------ csv split column


def test_csv_split_column(tmp_path):
    root = tmp_path / "faces"
    for i in range(7):
        write_face(root / "img" / f"{i}.jpg", seed=i)
    write_broken(root / "img" / "bad.jpg", CORRUPT)
    rows = [
        "path,age,split",
        "img/0.jpg,20,train",
        "img/1.jpg,21, TEST ",
        "img/2.jpg,22,",
        "img/3.jpg,23,Train",
        "img/4.jpg,24,val",
        "img/5.jpg,25,train test",
        "img/6.jpg,26",  # short row: no split
        "img/bad.jpg,27,test",
    ]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    ds = plugins.create("dataset", "csv", root=root)
    records = ds.records()
    assert [(r.key, r.split) for r in records] == [
        ("img/0.jpg", "train"),
        ("img/1.jpg", "test"),
        ("img/2.jpg", None),
        ("img/3.jpg", "train"),
        ("img/6.jpg", None),
        ("img/bad.jpg", "test"),
    ]
    assert ds.skipped.items == [
        ("row 6", "split 'val' is not train, test or empty"),
        ("row 7", "split 'train test' is not train, test or empty"),
    ]
    arrays = decode(ds, records, size=32)
    assert len(arrays) == 5 and [n for n, _ in arrays.unreadable.items] == ["img/bad.jpg"]


def test_csv_without_split_column_has_no_splits(tmp_path):
    write_face(tmp_path / "a.jpg", seed=0)
    (tmp_path / "labels.csv").write_text("path,age\na.jpg,3\n")
    assert [r.split for r in plugins.create("dataset", "csv", root=tmp_path).records()] == [None]

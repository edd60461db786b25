"""Split protocols: grouping of identical images and subjects, fixed sides, the hash rule, split files."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agemetric.data.splits import make_split, read_split, write_split
from agemetric.errors import AgemetricError
from agemetric.interfaces import FaceRecord


def recs(n, subjects=None, splits=None):
    return [
        FaceRecord(
            f"k{i}",
            20.0 + i % 50,
            subject=None if subjects is None else subjects[i],
            split=None if splits is None else splits[i],
        )
        for i in range(n)
    ]


@settings(max_examples=50, deadline=None)
@given(st.integers(4, 80), st.integers(1, 10), st.integers(0, 1000), st.sampled_from(["random", "subject", "hash"]))
def test_identical_images_and_subjects_never_straddle(n, n_fp, seed, protocol):
    records = recs(n, subjects=[f"s{i % 7}" for i in range(n)])
    fingerprints = [hashlib.md5(str(i % (n // n_fp + 1)).encode()).hexdigest() for i in range(n)]
    try:
        split = make_split(records, fingerprints, protocol, 0.25, seed)
    except AgemetricError:
        return  # a protocol may be unable to put images on both sides of a tiny set
    assert set(split.side) == {r.key for r in records}
    by_fp, by_subject = {}, {}
    for r, fp in zip(records, fingerprints, strict=True):
        by_fp.setdefault(fp, set()).add(split.side[r.key])
        by_subject.setdefault(r.subject, set()).add(split.side[r.key])
    assert all(len(s) == 1 for s in by_fp.values())
    if protocol == "subject":
        assert all(len(s) == 1 for s in by_subject.values())


def test_random_split_size_and_seed():
    records = recs(100)
    fps = [r.key for r in records]
    a = make_split(records, fps, "random", 0.2, seed=1)
    assert a.info["n_test"] == 20 and a.info["protocol"] == "random"
    assert a.side == make_split(records, fps, "random", 0.2, seed=1).side
    assert a.side != make_split(records, fps, "random", 0.2, seed=2).side


def test_hash_rule_is_recomputable():
    records = recs(200)
    fps = [hashlib.md5(r.key.encode()).hexdigest() for r in records]
    split = make_split(records, fps, "hash", 0.2, seed=0)
    for r, fp in zip(records, fps, strict=True):
        assert (split.side[r.key] == "test") == (int(fp[:8], 16) % 5 == 0)


def test_dataset_fixed_sides_are_kept():
    records = recs(10, splits=["test", "train"] * 5)
    split = make_split(records, [r.key for r in records], "random", 0.5, seed=0)
    assert all(split.side[r.key] == r.split for r in records)
    assert split.info["fixed_by_dataset"] == 10


def test_subject_protocol_needs_subjects():
    with pytest.raises(AgemetricError, match="no subject ids"):
        make_split(recs(10), [str(i) for i in range(10)], "subject", 0.2, 0)


def test_duplicates_with_different_labels_are_counted():
    records = recs(10)
    fps = ["same", "same"] + [str(i) for i in range(8)]
    info = make_split(records, fps, "random", 0.2, 0).info
    assert info["groups_with_identical_images"] == 1 and info["of_which_with_different_labels"] == 1


def test_split_file_round_trip_and_errors(tmp_path):
    records = recs(20)
    split = make_split(records, [r.key for r in records], "random", 0.3, 0)
    path = tmp_path / "split.csv"
    write_split(path, split, [r.key for r in records])
    again = read_split(path, records + [FaceRecord("new", 30.0)])
    assert again.side == split.side and again.info["left_out"] == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("key,side\nk1,validation\n")
    with pytest.raises(AgemetricError, match="row 2: expected 'key,train', 'key,calibration' or 'key,test'"):
        read_split(bad, records)
    with pytest.raises(AgemetricError, match="cannot read"):
        read_split(tmp_path / "none.csv", records)


def test_the_split_says_what_decided_the_sides():
    fixed = [FaceRecord(f"{i}.png", 30.0, split="test" if i % 4 == 0 else "train") for i in range(8)]
    loose = [FaceRecord(f"x{i}.png", 30.0) for i in range(8)]
    prints = [hashlib.md5(str(i).encode()).hexdigest() for i in range(16)]
    assert make_split(fixed, prints[:8], "random", 0.25, 0).info["protocol"] == "dataset"
    mixed = make_split(fixed + loose, prints, "hash", 0.25, 0).info
    assert mixed["protocol"] == "dataset+hash" and mixed["fixed_by_dataset"] == 8
    assert make_split(loose, prints[8:], "random", 0.25, 0).info["protocol"] == "random"

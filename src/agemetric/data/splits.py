"""Train/test split protocols.

Whatever the protocol, byte-identical images (same md5) always land on the same side, and records
whose dataset fixes their side (an official split or a ``split`` column) keep it.

- ``random``: the paper's protocol: images (groups of identical images) drawn at random.
- ``subject``: no person on both sides (needs subject ids; records without one count as their own person).
- ``hash``: a group is a test group when ``int(md5[:8], 16) % round(1 / test_fraction) == 0``, so
  anyone can recompute the split from the files alone (with 0.2: ``% 5 == 0``).

A share of the training side can then be held out as ``calibration`` (`hold_out_calibration()`):
faces neither trained on nor in the gallery, on which prediction intervals are calibrated.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from agemetric._io import readable_text
from agemetric.errors import AgemetricError
from agemetric.interfaces import FaceRecord

PROTOCOLS = ("random", "subject", "hash")
#: The sides a record can be on.
SIDES = ("train", "calibration", "test")


@dataclass
class Split:
    """Which records train and which test.

    Attributes:
        side: record key -> ``"train"``, ``"calibration"`` or ``"test"``.
        info: the protocol and its counts, written to ``metrics.json``.
    """

    side: dict[str, str]
    info: dict = field(default_factory=dict)


class _Groups:
    """Union-find over record indices."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union_by(self, labels: Sequence[str | None]) -> None:
        first: dict[str, int] = {}
        for i, label in enumerate(labels):
            if label is None:
                continue
            if label in first:
                self.parent[self.find(i)] = self.find(first[label])
            else:
                first[label] = i


def make_split(
    records: Sequence[FaceRecord], fingerprints: Sequence[str], protocol: str, test_fraction: float, seed: int
) -> Split:
    """Assign every record to train or test.

    Args:
        records: the dataset's records (keys unique).
        fingerprints: md5 of each record's image (``FaceDataset.fingerprint``).
        protocol: ``"random"``, ``"subject"`` or ``"hash"``.
        test_fraction: the share of images to hold out (for ``hash``: 1 / the modulus).
        seed: the seed for ``random`` and ``subject``.

    Examples:
        >>> recs = [FaceRecord(str(i), 20.0 + i, subject=str(i // 2)) for i in range(10)]
        >>> s = make_split(recs, [r.key for r in recs], "subject", 0.2, seed=0)
        >>> sorted(s.side.values()).count("test"), s.info["protocol"]
        (2, 'subject')
    """
    if protocol not in PROTOCOLS:
        raise AgemetricError(f"split must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    n = len(records)
    groups = _Groups(n)
    groups.union_by(fingerprints)
    if protocol == "subject":
        if not any(r.subject for r in records):
            raise AgemetricError("split: subject, but this dataset has no subject ids; use random or hash")
        groups.union_by([r.subject for r in records])
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(groups.find(i), []).append(i)

    fixed, free = {}, []
    for root, idx in members.items():
        sides = {records[i].split for i in idx if records[i].split}
        if sides:
            fixed[root] = "test" if "test" in sides else "train"  # identical images across a fixed split: test
        else:
            free.append(root)
    if protocol == "hash":
        modulus = max(2, round(1 / test_fraction))
        test_groups = {r for r in free if min(int(fingerprints[i][:8], 16) for i in members[r]) % modulus == 0}
    else:
        order = torch.randperm(len(free), generator=torch.Generator().manual_seed(seed)).tolist()
        target = round(sum(len(members[r]) for r in free) * test_fraction)
        test_groups, count = set(), 0
        for j in order:
            if count >= target:
                break
            test_groups.add(free[j])
            count += len(members[free[j]])
    side = {}
    for root, idx in members.items():
        s = fixed.get(root) or ("test" if root in test_groups else "train")
        for i in idx:
            side[records[i].key] = s
    duplicates, conflicting = _duplicates(members, fingerprints, records)
    n_test = sum(1 for s in side.values() if s == "test")
    if n_test == 0 or n_test == n:
        raise AgemetricError(
            f"split {protocol!r} put {n_test} of {n} images in the test set; need images on both sides "
            "(more images, another test_fraction, or another protocol)"
        )
    fixed_count = sum(len(members[r]) for r in fixed)
    # what decided the sides: the dataset's own split for the rows it fixes, the protocol for the rest
    decided = "dataset" if fixed_count == n else f"dataset+{protocol}" if fixed_count else protocol
    info = {
        "protocol": decided,
        "test_fraction": test_fraction,
        "seed": seed,
        "n_train": n - n_test,
        "n_test": n_test,
        "fixed_by_dataset": fixed_count,
        "groups_with_identical_images": duplicates,
        "of_which_with_different_labels": conflicting,
    }
    return Split(side, info)


def hold_out_calibration(
    split: Split,
    records: Sequence[FaceRecord],
    fingerprints: Sequence[str],
    fraction: float,
    seed: int,
    by_subject: bool = False,
) -> Split:
    """Move about ``fraction`` of the training side to ``"calibration"``: groups of byte-identical
    images (with ``by_subject``, each person's images too) drawn at random with ``seed``, so that
    no calibration face has a copy (or, by subject, its person) in the gallery.

    Args:
        split: the train/test split of ``records``.
        records: the records, in the order of ``fingerprints``.
        fingerprints: md5 of each record's image.
        fraction: the share of the training side to hold out (0: none).
        seed: the seed of the draw.
        by_subject: keep each subject's images together.

    Examples:
        >>> recs = [FaceRecord(str(i), 20.0 + i) for i in range(20)]
        >>> s = Split({r.key: "test" if int(r.key) < 5 else "train" for r in recs}, {"n_train": 15, "n_test": 5})
        >>> held = hold_out_calibration(s, recs, [r.key for r in recs], 0.2, seed=0)
        >>> sorted(held.side.values()).count("calibration"), held.info["n_train"], held.info["n_calibration"]
        (3, 12, 3)
    """
    train = [i for i, r in enumerate(records) if split.side.get(r.key) == "train"]
    groups = _Groups(len(train))
    groups.union_by([fingerprints[i] for i in train])
    if by_subject:
        groups.union_by([records[i].subject for i in train])
    members: dict[int, list[int]] = {}
    for j in range(len(train)):
        members.setdefault(groups.find(j), []).append(train[j])
    roots = sorted(members)
    order = torch.randperm(len(roots), generator=torch.Generator().manual_seed(seed)).tolist()
    side, target, count = dict(split.side), round(len(train) * fraction), 0
    for j in order:
        if count >= target:
            break
        for i in members[roots[j]]:
            side[records[i].key] = "calibration"
        count += len(members[roots[j]])
    return Split(side, {**split.info, "n_train": len(train) - count, "n_calibration": count})


def _duplicates(members: dict[int, list[int]], fingerprints, records) -> tuple[int, int]:
    """Groups holding byte-identical images, and how many of them carry different ages."""
    copied = [idx for idx in members.values() if len({fingerprints[i] for i in idx}) < len(idx)]
    return len(copied), sum(1 for idx in copied if len({records[i].age for i in idx}) > 1)


def write_split(path: Path, split: Split, keys: Sequence[str]) -> None:
    """``split.csv``: one ``key,side`` row per record, in ``keys`` order."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "side"])
        writer.writerows([k, split.side[k]] for k in keys)


def read_sides(path: str | Path) -> dict[str, str]:
    """``{key: side}`` of a ``split.csv`` (sides ``train``, ``calibration``, ``test``), checked
    row by row (one-line errors naming the file and row)."""
    path = Path(path)
    with readable_text(path, "split_file"), path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["key", "side"]:
        raise AgemetricError(f"split_file: {path} must start with the header 'key,side'")
    given = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) < 2 or row[1].strip().lower() not in SIDES:
            raise AgemetricError(
                f"split_file: {path} row {number}: expected 'key,train', 'key,calibration' or 'key,test', got {row}"
            )
        given[row[0]] = row[1].strip().lower()
    return given


def read_split(path: str | Path, records: Sequence[FaceRecord]) -> Split:
    """Reuse a ``split.csv``: its records keep their side; records it does not list are left out."""
    path = Path(path)
    given = read_sides(path)
    side = {r.key: given[r.key] for r in records if r.key in given}
    counts = {s: sum(1 for v in side.values() if v == s) for s in SIDES}
    if counts["test"] == 0 or counts["train"] == 0:
        raise AgemetricError(f"split_file: {path} leaves {counts['test']} test and {counts['train']} train images here")
    info = {
        "protocol": f"file:{path.name}",
        "n_train": counts["train"],
        "n_test": counts["test"],
        "left_out": len(records) - len(side),
        **({"n_calibration": counts["calibration"]} if counts["calibration"] else {}),
    }
    return Split(side, info)


def random_split(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a plain random split of ``n`` items (no grouping), for arrays without records.

    Returns:
        ``(train (N_train,), test (N_test,))`` sorted int64 indices; both non-empty.

    Examples:
        >>> train, test = random_split(10, 0.2, seed=0)
        >>> len(train), len(test), sorted(train.tolist() + test.tolist()) == list(range(10))
        (8, 2, True)
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if n < 2:
        raise ValueError(f"need at least 2 images to split, got {n}")
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))  # (N,)
    return order[n_test:].sort().values, order[:n_test].sort().values

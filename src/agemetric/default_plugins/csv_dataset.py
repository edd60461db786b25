"""A generic CSV dataset: ``path,age[,gender][,subject][,split]``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from agemetric._io import readable_text
from agemetric.errors import AgemetricError
from agemetric.interfaces import FaceDataset, FaceRecord

_GENDERS = {"0": 0, "m": 0, "male": 0, "1": 1, "f": 1, "female": 1, "": -1, "-1": -1}
_SPLITS = {"train": "train", "test": "test", "": None}


def parse_gender(value: str) -> int:
    """0 = male, 1 = female, -1 = unknown; accepts 0/1, m/f, male/female (any case)."""
    key = value.strip().lower()
    if key not in _GENDERS:
        raise ValueError(f"gender {value!r} is not one of 0/1/m/f/male/female or empty")
    return _GENDERS[key]


def parse_split(value: str) -> str | None:
    """``"train"``, ``"test"`` (any case, surrounding spaces ignored) or ``None`` for an empty value."""
    key = value.strip().lower()
    if key not in _SPLITS:
        raise ValueError(f"split {value!r} is not train, test or empty")
    return _SPLITS[key]


#: The oldest age a label may give (years): anything above is a typo or a unit error.
MAX_AGE = 150.0


def parse_age(value: str) -> float:
    """An age in years, between 0 and `MAX_AGE`."""
    try:
        age = float(value)
    except ValueError:
        raise ValueError(f"age {value!r} is not a number") from None
    if not math.isfinite(age) or not 0 <= age <= MAX_AGE:
        raise ValueError(f"age {value!r} is not a number of years between 0 and {MAX_AGE:g}")
    return age


class CSVFaces(FaceDataset):
    """Images listed in a CSV file with a header ``path,age[,gender][,subject][,split]``.

    ``path`` is relative to the CSV's folder (or absolute). ``root`` is the CSV file, or a
    folder holding ``labels.csv``. The optional ``split`` column fixes a record's split:
    ``train`` or ``test`` (any case), empty for none. Rows with a bad age, gender or split, or
    a missing image, are skipped and reported. ``groups`` names further columns that label
    groups of people (``--set 'dataset_options.groups=["skin_tone"]'``): the error is reported
    per value of each; an empty value is unknown (counted, and left out of that grouping).

    Examples:
        A folder holding ``labels.csv`` and the image it lists:

        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> Image.new("RGB", (8, 8)).save(root / "a.png")
        >>> _ = (root / "labels.csv").write_text("path,age,gender\\na.png,31,f\\n")
        >>> CSVFaces(root).records()
        [FaceRecord(key='a.png', age=31.0, gender=1, subject=None, split=None)]
    """

    def __init__(self, root: str | Path | None = None, filename: str = "labels.csv", groups: list[str] | str = ()):
        super().__init__(root)
        if self.root is None:
            raise AgemetricError("data_dir is required: a CSV file, or a folder holding labels.csv")
        self.csv_path = self.root / filename if self.root.is_dir() else self.root
        if not self.csv_path.is_file():
            raise AgemetricError(f"data_dir: no CSV file at {str(self.csv_path)!r}")
        with readable_text(self.csv_path, "data_dir"), self.csv_path.open(newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
        self.columns = [c.strip().lower() for c in header]
        missing = {"path", "age"} - set(self.columns)
        if missing:
            raise AgemetricError(
                f"{self.csv_path}: missing column(s) {', '.join(sorted(missing))}; expected a header "
                f"'path,age[,gender][,subject][,split]', got {','.join(header) or '(empty file)'!r}"
            )
        self.has_gender = "gender" in self.columns
        self.groups = [str(g).strip().lower() for g in ([groups] if isinstance(groups, str) else groups)]
        absent = [g for g in self.groups if g not in self.columns]
        if absent:
            raise AgemetricError(
                f"dataset_options.groups: {self.csv_path} has no column {', '.join(map(repr, absent))}; "
                f"its columns: {', '.join(self.columns)}"
            )

    def records(self) -> list[FaceRecord]:
        base = self.csv_path.parent
        out = []
        with readable_text(self.csv_path, "data_dir"), self.csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, fieldnames=self.columns)
            next(reader)  # header
            for row_number, row in enumerate(reader, start=2):
                path = (row.get("path") or "").strip()
                where = f"row {row_number}"
                try:
                    if not path:
                        raise ValueError("empty path")
                    age = parse_age(row.get("age") or "")
                    gender = parse_gender(row.get("gender") or "")
                    split = parse_split(row.get("split") or "")
                except ValueError as exc:
                    self.skipped.add(where, str(exc))
                    continue
                if not (base / path).is_file():
                    self.skipped.add(where, f"no image file {path!r}")
                    continue
                subject = (row.get("subject") or "").strip() or None
                labels = tuple((g, value) for g in self.groups if (value := (row.get(g) or "").strip()))
                out.append(FaceRecord(path, age, gender, subject, split, groups=labels))
        return out

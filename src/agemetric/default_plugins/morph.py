"""MORPH II (academic release): labels in the file names and/or the official CSV."""

from __future__ import annotations

import csv
import re
from pathlib import Path, PurePosixPath

from agemetric._io import readable_text
from agemetric.default_plugins.csv_dataset import parse_age, parse_gender
from agemetric.errors import AgemetricError
from agemetric.interfaces import FaceDataset, FaceRecord

#: ``{subject}_{index}{M|F}{age}.JPG``, e.g. ``001234_1M45.JPG``; gender M = 0, F = 1.
NAME = re.compile(r"^(?P<subject>\d+)_(?P<index>\d+)(?P<gender>[MF])(?P<age>\d{1,3})\.(?i:jpe?g|png)$")
NAME_PATTERN = "{subject}_{index}{M|F}{age}.JPG"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
#: The columns of the official CSV that are used (header names are case-insensitive).
CSV_COLUMNS = ("id_num", "gender", "age", "photo")
LAYOUT = (
    f"image files named {NAME_PATTERN} (searched recursively, e.g. Album2/001234_1M45.JPG) "
    f"and/or the official CSV with columns {','.join(CSV_COLUMNS)}"
)


def _header(path: Path) -> list[str]:
    with readable_text(path, "data_dir"), path.open(newline="", encoding="utf-8-sig") as f:
        return [c.strip().lower() for c in next(csv.reader(f), [])]


class Morph(FaceDataset):
    """The MORPH II folder as distributed, labelled from the official CSV or from the file names.

    Layout under ``root``:

    - image files named ``{subject}_{index}{M|F}{age}.JPG`` (e.g. ``001234_1M45.JPG``; the
      extension may be ``.jpg``, ``.jpeg`` or ``.png`` in any case), found recursively, so the
      academic release's ``Album2/`` subfolder works as is;
    - optionally the release's CSV in ``root``, with (case-insensitive) columns ``id_num``
      (subject), ``gender`` (M/F), ``age`` and ``photo`` (the image path relative to ``root``,
      e.g. ``Album2/001234_1M45.JPG``); other columns are ignored.

    When a CSV is used its labels win: only the images it lists are used, whatever their names,
    and rows with a bad label, a repeated photo or a missing image file are skipped and
    reported. Without a CSV, image files whose names do not follow the pattern are skipped and
    reported; other files (``.csv``, ``.txt``, ...) are ignored.

    Record keys are paths relative to ``root`` (``/``-separated), ``subject`` is the subject id
    as written (leading zeros kept), gender is 0 = male, 1 = female.

    Args:
        root: the MORPH folder (``--data-dir``).
        csv: the CSV's file name in ``root`` (or a path). Default: the single ``*.csv`` in
            ``root`` whose header has the columns above, if any; with two or more such files,
            pass ``csv`` to choose.

    Examples:
        Labels from the file name (no CSV): subject ``001234``, photo 1, male, 45:

        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "Album2").mkdir(); Image.new("RGB", (8, 8)).save(root / "Album2/001234_1M45.JPG")
        >>> Morph(root).records()
        [FaceRecord(key='Album2/001234_1M45.JPG', age=45.0, gender=0, subject='001234', split=None)]
    """

    has_gender = True

    def __init__(self, root: str | Path | None = None, csv: str | None = None):
        super().__init__(root)
        self.require_folder("MORPH")
        self.csv_path = self._find_csv(csv)

    def _find_csv(self, name: str | None) -> Path | None:
        if name is not None:
            path = self.root / name
            if not path.is_file():
                raise AgemetricError(f"dataset_options.csv: no CSV file {str(path)!r}")
            missing = [c for c in CSV_COLUMNS if c not in _header(path)]
            if missing:
                raise AgemetricError(
                    f"{path}: missing column(s) {', '.join(missing)}; expected the MORPH CSV header with columns "
                    f"{','.join(CSV_COLUMNS)} (any case, other columns allowed)"
                )
            return path
        found = [
            p for p in sorted(self.root.glob("*.csv")) if p.is_file() and all(c in _header(p) for c in CSV_COLUMNS)
        ]
        if len(found) > 1:
            raise AgemetricError(
                f"data_dir: {len(found)} MORPH CSV files in {str(self.root)!r} "
                f"({', '.join(p.name for p in found)}); choose one with dataset_options.csv"
            )
        return found[0] if found else None

    def records(self) -> list[FaceRecord]:
        out = self._from_csv() if self.csv_path is not None else self._from_names()
        if not out:
            raise AgemetricError(f"data_dir: no usable MORPH images in {str(self.root)!r}; expected {LAYOUT}")
        return sorted(out, key=lambda r: r.key)

    def _from_names(self) -> list[FaceRecord]:
        out = []
        for path in sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            key = path.relative_to(self.root).as_posix()
            m = NAME.match(path.name)
            if m is None:
                self.skipped.add(key, f"name is not {NAME_PATTERN}")
                continue
            gender = 0 if m["gender"] == "M" else 1
            out.append(FaceRecord(key=key, age=float(m["age"]), gender=gender, subject=m["subject"]))
        return out

    def _from_csv(self) -> list[FaceRecord]:
        out, seen = [], set()
        with readable_text(self.csv_path, "data_dir"), self.csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            columns = [c.strip().lower() for c in next(reader, [])]
            index = {c: columns.index(c) for c in CSV_COLUMNS}
            for row_number, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                where = f"{self.csv_path.name} row {row_number}"
                cell = {c: (row[i] if i < len(row) else "") for c, i in index.items()}
                photo = cell["photo"].strip().replace("\\", "/")
                try:
                    if not photo:
                        raise ValueError("empty photo")
                    age = parse_age(cell["age"])
                    gender = parse_gender(cell["gender"])
                except ValueError as exc:
                    self.skipped.add(where, str(exc))
                    continue
                key = PurePosixPath(photo).as_posix()
                if not self.new_image(key, where, seen):
                    continue
                subject = cell["id_num"].strip() or None
                out.append(FaceRecord(key=key, age=age, gender=gender, subject=subject))
        return out

    def describe(self) -> str:
        source = self.csv_path.name if self.csv_path is not None else "file names"
        return f"{type(self).__name__} ({self.root}, labels from {source})"

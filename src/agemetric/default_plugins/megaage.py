"""MegaAge-Asian: the official train/test folders and name/age lists."""

from __future__ import annotations

from pathlib import Path

from agemetric._io import readable_text
from agemetric.default_plugins.csv_dataset import parse_age
from agemetric.errors import AgemetricError
from agemetric.interfaces import FaceDataset, FaceRecord

SPLITS = ("train", "test")
LAYOUT = (
    "train/ and test/ image folders and list/train_name.txt, list/train_age.txt, "
    "list/test_name.txt, list/test_age.txt (one image name or age per line, aligned line by line)"
)


def _read_list(path: Path) -> list[str]:
    """The stripped lines of ``path``, without trailing blank lines."""
    with readable_text(path, "data_dir"):
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


class MegaAgeAsian(FaceDataset):
    """MegaAge-Asian in its official layout, with the official train/test split.

    Layout under ``root``::

        train/                 training images (e.g. train/1.jpg)
        test/                  test images
        list/train_name.txt    image names in train/, one per line
        list/train_age.txt     their ages, on the same lines
        list/test_name.txt
        list/test_age.txt

    Records carry ``split="train"`` or ``"test"`` from the lists they come from, keys are paths
    relative to ``root`` (e.g. ``train/1.jpg``). There are no gender or subject labels.

    A missing list file, a missing image folder, or a name list and age list of different
    lengths is an error; a bad age, an empty or repeated name, or a missing image file skips
    that line (reported in ``skipped``). Images not named in the lists are ignored.

    Args:
        root: the MegaAge-Asian folder (``--data-dir``).

    Examples:
        One training image aged 23 (the test lists exist but are empty):

        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "train").mkdir(); (root / "list").mkdir(); Image.new("RGB", (8, 8)).save(root / "train/1.jpg")
        >>> for name, text in {"train_name": "1.jpg", "train_age": "23", "test_name": "", "test_age": ""}.items():
        ...     _ = (root / "list" / f"{name}.txt").write_text(text)
        >>> MegaAgeAsian(root).records()
        [FaceRecord(key='train/1.jpg', age=23.0, gender=-1, subject=None, split='train')]
    """

    has_gender = False

    def __init__(self, root: str | Path | None = None):
        super().__init__(root)
        self.require_folder("MegaAge-Asian")
        lists = [self.root / "list" / f"{split}_{kind}.txt" for split in SPLITS for kind in ("name", "age")]
        missing = [p.relative_to(self.root).as_posix() for p in lists if not p.is_file()]
        if missing:
            raise AgemetricError(
                f"data_dir: {str(self.root)!r} has no {', '.join(missing)}; expected the MegaAge-Asian layout: {LAYOUT}"
            )

    def records(self) -> list[FaceRecord]:
        out = []
        for split in SPLITS:
            out.extend(self._split_records(split))
        if not out:
            raise AgemetricError(f"data_dir: no usable MegaAge-Asian images in {str(self.root)!r}; expected {LAYOUT}")
        return sorted(out, key=lambda r: r.key)

    def _split_records(self, split: str) -> list[FaceRecord]:
        name_file, age_file = f"list/{split}_name.txt", f"list/{split}_age.txt"
        names, ages = _read_list(self.root / name_file), _read_list(self.root / age_file)
        if len(names) != len(ages):
            raise AgemetricError(
                f"{self.root / name_file} has {len(names)} lines but {self.root / age_file} has {len(ages)}; "
                "expected one age per image name, aligned line by line"
            )
        if names and not (self.root / split).is_dir():
            raise AgemetricError(
                f"data_dir: {str(self.root)!r} has no {split}/ folder for the {len(names)} images in {name_file}"
            )
        out, seen = [], set()
        for line_number, (name, age_text) in enumerate(zip(names, ages, strict=True), start=1):
            where = f"{name_file} line {line_number}"
            try:
                if not name:
                    raise ValueError("empty image name")
                age = parse_age(age_text)
            except ValueError as exc:
                self.skipped.add(where, str(exc))
                continue
            key = f"{split}/{name}"
            if self.new_image(key, where, seen):
                out.append(FaceRecord(key=key, age=age, split=split))
        return out

"""FG-NET: labels in the file names."""

from __future__ import annotations

import re
from pathlib import Path

from agemetric.errors import AgemetricError
from agemetric.interfaces import FaceDataset, FaceRecord

#: ``{subject}A{age}[a|b].JPG``, e.g. ``001A02.JPG``, ``001A43a.JPG``, ``078A11b.jpg``.
NAME = re.compile(r"^(?P<subject>\d+)[Aa](?P<age>\d{1,3})(?P<copy>[ab])?\.(?i:jpe?g|png)$")
NAME_PATTERN = "{subject}A{age}[a|b].JPG"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


class FGNet(FaceDataset):
    """The FG-NET ageing database: one folder of images named ``{subject}A{age}[a|b].JPG``.

    ``subject`` is the person's number as written (e.g. ``"001"``), ``age`` the age in years;
    the optional ``a``/``b`` tells apart two photos of the same person at the same age. The
    extension may be ``.jpg``, ``.jpeg`` or ``.png`` in any case. Image files whose names do not
    follow the pattern are skipped and reported; other files (e.g. the ``.pts`` landmark
    files) are ignored. There are no gender labels.

    Record keys are paths relative to ``root`` (``/``-separated).

    Args:
        root: the FG-NET image folder (``--data-dir``).
        recursive: also look in subfolders of ``root``.

    Examples:
        Two photos of subject ``001``, at 2 and at 43:

        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("001A02.JPG", "001A43a.JPG"):
        ...     Image.new("RGB", (8, 8)).save(root / name)
        >>> [(r.key, r.subject, r.age) for r in FGNet(root).records()]
        [('001A02.JPG', '001', 2.0), ('001A43a.JPG', '001', 43.0)]
    """

    has_gender = False

    def __init__(self, root: str | Path | None = None, recursive: bool = False):
        super().__init__(root)
        self.require_folder("FG-NET")
        if not isinstance(recursive, bool):
            raise AgemetricError(f"dataset_options.recursive: expected true or false, got {recursive!r}")
        self.recursive = recursive

    def records(self) -> list[FaceRecord]:
        files = self.root.rglob("*") if self.recursive else self.root.iterdir()
        out = []
        for path in sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            key = path.relative_to(self.root).as_posix()
            m = NAME.match(path.name)
            if m is None:
                self.skipped.add(key, f"name is not {NAME_PATTERN}")
                continue
            out.append(FaceRecord(key=key, age=float(m["age"]), subject=m["subject"]))
        if not out:
            where = "in or under" if self.recursive else "in"
            raise AgemetricError(
                f"data_dir: no FG-NET images {where} {str(self.root)!r}; expected files named {NAME_PATTERN} "
                "(e.g. 001A02.JPG)" + ("" if self.recursive else ", directly in the folder (or set recursive=true)")
            )
        return sorted(out, key=lambda r: r.key)

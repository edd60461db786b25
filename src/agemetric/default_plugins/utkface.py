"""UTKFace "Aligned & Cropped Faces": labels in the file names."""

from __future__ import annotations

import re
from pathlib import Path

from agemetric.errors import AgemetricError
from agemetric.interfaces import FaceDataset, FaceRecord

#: ``{age}_{gender}_{race}_{datetime}.jpg.chip.jpg``; gender 0 = male, 1 = female.
#: The race codes, as the dataset's authors name them.
RACES = ("white", "black", "asian", "indian", "others")
NAME = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?P<race>[0-4])_(?P<time>\d+)\.jpg\.chip\.jpg$")


class UTKFace(FaceDataset):
    """The UTKFace folder; files whose names do not follow the pattern are skipped and reported.
    Each record carries its race as the group ``race`` (`RACES`).

    Known flaw of the real copy, left to the split protocol: some images are byte-identical
    copies carrying different labels.

    Examples:
        Files named ``{age}_{gender}_{race}_{datetime}.jpg.chip.jpg`` (gender 0 = male, 1 = female):

        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> Image.new("RGB", (8, 8)).save(root / "26_1_2_20170116174525125.jpg.chip.jpg")
        >>> UTKFace(root).records()
        [FaceRecord(key='26_1_2_20170116174525125.jpg.chip.jpg', age=26.0, gender=1, subject=None, split=None)]
    """

    has_gender = True

    def __init__(self, root: str | Path | None = None):
        super().__init__(root)
        self.require_folder("UTKFace")

    def records(self) -> list[FaceRecord]:
        out = []
        for path in sorted(p for p in self.root.iterdir() if p.is_file()):
            m = NAME.match(path.name)
            if m is None:
                self.skipped.add(path.name, "name is not {age}_{gender}_{race}_{datetime}.jpg.chip.jpg")
                continue
            race = (("race", RACES[int(m["race"])]),)
            out.append(FaceRecord(key=path.name, age=float(m["age"]), gender=int(m["gender"]), groups=race))
        if not out:
            raise AgemetricError(f"data_dir: no UTKFace images in {str(self.root)!r}")
        return out

"""The embedded default dataset: procedurally generated faces (no download)."""

from __future__ import annotations

from PIL import Image

from agemetric._text import shortened
from agemetric.data import synthetic
from agemetric.interfaces import FaceDataset, FaceRecord


class SyntheticFaces(FaceDataset):
    """``n`` synthetic faces, deterministic from ``seed`` (see `agemetric.data.synthetic`).

    Ages are integers in `agemetric.data.synthetic.AGE_RANGE`; genders 0/1. Every image is
    rendered from its own seed ``(seed, index)``, so any subset can be made alone.

    Args:
        root: unused (the data is generated).
        n: number of faces.
        seed: the dataset's seed (independent of the training seed).
        size: side of the rendered images before resizing to the run's image size.

    Examples:
        >>> faces = SyntheticFaces(n=3, seed=0, size=64)
        >>> records = faces.records()
        >>> len(records), faces.load_image(records[0]).size
        (3, (64, 64))
    """

    has_gender = True
    decode_threads = 1  # drawing a face is many small numpy calls: a second thread only waits for the GIL
    #: The most faces (``n``) and the largest side (``size``): beyond them a run only runs out of
    #: memory (a million faces already hold their labels and keys in about a gigabyte).
    MAX_N = 1_000_000
    MAX_SIZE = 2048

    def __init__(self, root: str | None = None, n: int = 4000, seed: int = 0, size: int = 128):
        super().__init__(None)
        self.n = _whole(n, "n", 2, self.MAX_N)
        self.seed = _whole(seed, "seed", 0, 2**63 - 1)
        self.size = _whole(size, "size", 8, self.MAX_SIZE)

    def records(self) -> list[FaceRecord]:
        ages, genders = synthetic.sample_labels(self.n, self.seed)
        return [
            FaceRecord(key=f"synthetic-{self.seed}-{i:06d}", age=float(a), gender=int(g))
            for i, (a, g) in enumerate(zip(ages.tolist(), genders.tolist(), strict=True))
        ]

    def load_image(self, record: FaceRecord) -> Image.Image:
        index = int(record.key.rsplit("-", 1)[1])
        return Image.fromarray(synthetic.render(index, record.age, record.gender, self.seed, self.size))

    def describe(self) -> str:
        return f"synthetic (n={self.n}, seed={self.seed})"


def _whole(value: object, name: str, low: int, high: int) -> int:
    """``value`` as an int if it is a whole number (``1e3`` from a TOML file too) in ``[low, high]``."""
    whole = isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
    if not whole or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number between {low:,} and {high:,}, got {shortened(value)}")
    return int(value)

"""The embedded default dataset: procedurally generated faces (no download)."""

from __future__ import annotations

from PIL import Image

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

    def __init__(self, root: str | None = None, n: int = 4000, seed: int = 0, size: int = 128):
        super().__init__(None)
        if n < 2:
            raise ValueError(f"n must be >= 2, got {n}")
        self.n, self.seed, self.size = int(n), int(seed), int(size)

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

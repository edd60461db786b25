"""Decode a dataset once into a uint8 tensor, so training never touches JPEGs again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from agemetric.interfaces import FaceDataset, FaceRecord


@dataclass
class FaceArrays:
    """A decoded dataset (or split of one).

    Attributes:
        images: ``(N, 3, S, S)`` uint8.
        ages: ``(N,)`` float32.
        genders: ``(N,)`` int64, -1 where unknown.
        keys: ``N`` record keys (file names or synthetic ids), for prediction files and splits.
    """

    images: torch.Tensor
    ages: torch.Tensor
    genders: torch.Tensor
    keys: list[str]

    def __len__(self) -> int:
        return int(self.ages.numel())

    def subset(self, index: torch.Tensor) -> FaceArrays:
        """The rows ``index`` (a ``(M,)`` int64 tensor)."""
        return FaceArrays(
            self.images[index], self.ages[index], self.genders[index], [self.keys[i] for i in index.tolist()]
        )

    @property
    def has_gender(self) -> bool:
        """True when at least two images carry a gender label."""
        return int((self.genders >= 0).sum()) >= 2


def to_square(image: Image.Image, size: int) -> np.ndarray:
    """Centre-crop ``image`` to a square and resize it to ``size`` -> ``(size, size, 3)`` uint8."""
    image = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def decode(
    dataset: FaceDataset,
    records: Sequence[FaceRecord],
    size: int,
    progress: Callable[[int], None] | None = None,
    workers: int = 2,
) -> FaceArrays:
    """Decode ``records`` into a :class:`FaceArrays` of ``size`` x ``size`` images.

    Images that fail to load are skipped and recorded in ``dataset.skipped``.

    Args:
        dataset: where the images come from.
        records: which ones.
        size: output side S in pixels.
        progress: called with the number of images finished since the last call.
        workers: decoding threads (PIL releases the GIL while decoding).
    """

    def load(record: FaceRecord) -> np.ndarray | str:
        try:
            return to_square(dataset.load_image(record), size)
        except Exception as exc:  # a corrupt file must not stop the run
            return f"{type(exc).__name__}: {exc}".splitlines()[0][:120]

    images = np.empty((len(records), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(records), dtype=bool)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, (record, result) in enumerate(zip(records, pool.map(load, records), strict=True)):
            if isinstance(result, str):
                dataset.skipped.add(record.key, f"unreadable image: {result}")
            else:
                images[i] = result
                ok[i] = True
            if progress is not None:
                progress(1)
    kept = [r for r, good in zip(records, ok, strict=True) if good]
    tensor = torch.from_numpy(images[ok]).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S)
    return FaceArrays(
        images=tensor,
        ages=torch.tensor([r.age for r in kept], dtype=torch.float32),
        genders=torch.tensor([r.gender for r in kept], dtype=torch.int64),
        keys=[r.key for r in kept],
    )

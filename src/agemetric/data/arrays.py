"""Decode a dataset once into a uint8 tensor, so training never touches JPEGs again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from agemetric._imaging import to_square
from agemetric.data import cache as image_cache
from agemetric.interfaces import Face, FaceDataset, FaceRecord, Framer, Skipped


@dataclass
class FaceArrays:
    """A decoded dataset (or split of one).

    Attributes:
        images: ``(N, 3, S, S)`` uint8.
        ages: ``(N,)`` float32.
        genders: ``(N,)`` int64, -1 where unknown.
        keys: ``N`` record keys (file names or synthetic ids), for prediction files and splits.
        notes: ``N`` framing notes (``None`` where the framer did what it promises, else why it
            fell back, e.g. no face found), or ``None`` when nothing was noted.
        groups: grouping name -> ``N`` group values (``None`` where unknown), from the records'
            ``groups``, or ``None`` when the dataset labels none.
        unreadable: the records that could not be decoded (not among the ``N``), with the reason.
    """

    images: torch.Tensor
    ages: torch.Tensor
    genders: torch.Tensor
    keys: list[str]
    notes: list[str | None] | None = None
    groups: dict[str, list[str | None]] | None = None
    unreadable: Skipped = field(default_factory=Skipped)

    def __len__(self) -> int:
        return int(self.ages.numel())

    def subset(self, index: torch.Tensor) -> FaceArrays:
        """The rows ``index`` (a ``(M,)`` int64 tensor)."""
        rows = index.tolist()
        return FaceArrays(
            self.images[index],
            self.ages[index],
            self.genders[index],
            [self.keys[i] for i in rows],
            None if self.notes is None else [self.notes[i] for i in rows],
            None if self.groups is None else {name: [v[i] for i in rows] for name, v in self.groups.items()},
        )

    def noted(self) -> list[tuple[str, str]]:
        """``(key, note)`` of every image whose framing fell back."""
        return [(k, n) for k, n in zip(self.keys, self.notes or [], strict=False) if n is not None]

    @property
    def has_gender(self) -> bool:
        """True when at least two images carry a gender label."""
        return int((self.genders >= 0).sum()) >= 2


def decode(
    dataset: FaceDataset,
    records: Sequence[FaceRecord],
    size: int,
    progress: Callable[[int], None] | None = None,
    workers: int = 2,
    cache: bool = False,
    framer: Framer | None = None,
    note: Callable[[str], None] | None = None,
) -> FaceArrays:
    """Decode ``records`` into a `FaceArrays` of ``size`` x ``size`` images.

    Images that fail to load are left out and listed in the result's ``unreadable``.

    Args:
        dataset: where the images come from.
        records: which ones.
        size: output side S in pixels.
        progress: called with the number of images finished since the last call.
        workers: decoding threads (PIL releases the GIL while decoding); at most the dataset's
            ``decode_threads`` load its images.
        cache: read and write the decoded pixels in the disk cache (`agemetric.data.cache`).
        framer: the face framing applied before resizing (default: the whole image).
        note: called with a sentence for the user when the decoded images could not be kept in
            the cache (over its size limit, a full disk, a folder that cannot be written).
    """
    loading = min(workers, dataset.decode_threads or workers)
    chip = getattr(framer, "chip_size", None) if cache else None
    if chip and size < chip:  # the framed chips are cached once, at the framer's side, then resized
        images, ok, reasons, notes = _decoded(dataset, records, chip, progress, loading, cache, framer, note)
        images = _resized(images, size, workers)
    else:
        images, ok, reasons, notes = _decoded(dataset, records, size, progress, loading, cache, framer, note)
    unreadable = Skipped()
    for record, reason in zip(records, reasons, strict=True):
        if reason is not None:
            unreadable.add(record.key, f"unreadable image: {reason}")
    kept = [r for r, good in zip(records, ok, strict=True) if good]
    return FaceArrays(
        images=torch.from_numpy(images[ok] if not ok.all() else np.ascontiguousarray(images)),  # (N, 3, S, S)
        ages=torch.tensor([r.age for r in kept], dtype=torch.float32),
        genders=torch.tensor([r.gender for r in kept], dtype=torch.int64),
        keys=[r.key for r in kept],
        notes=[n for n, good in zip(notes, ok, strict=True) if good] if any(notes) else None,
        groups=_groups(kept),
        unreadable=unreadable,
    )


def _decoded(
    dataset, records, size, progress, workers, cache, framer, note
) -> tuple[np.ndarray, np.ndarray, list, list]:
    """`_decode_all()` through the disk cache when ``cache`` is on."""
    if not cache:
        return _decode_all(dataset, records, size, progress, workers, framer)
    image_cache.limit()  # a mistyped $AGEMETRIC_CACHE_LIMIT is said before the decode, not after it
    key = image_cache.cache_key(dataset, records, size, framer.key() if framer is not None else "")
    hit = image_cache.load(key, len(records), size)
    if hit is not None:
        if progress is not None:
            progress(len(records))
        return hit
    decoded = _decode_all(dataset, records, size, progress, workers, framer)
    why_not = image_cache.store(key, *decoded, source=_source(dataset, framer))
    if why_not is not None and note is not None:
        note(why_not)
    return decoded


def _source(dataset, framer) -> str:
    """What `agemetric cache` says an entry holds: the dataset, its folder, the framing."""
    where = f" {dataset.root}" if dataset.root is not None else ""
    framing = f", framed by {type(framer).__name__}" if framer is not None else ""
    return f"{type(dataset).__name__}{where}{framing}"


def _resized(images: np.ndarray, size: int, workers: int) -> np.ndarray:
    """``(N, 3, S, S)`` uint8 -> ``(N, 3, size, size)``, each image resized as `to_square` resizes."""

    def one(image: np.ndarray) -> np.ndarray:
        return to_square(Image.fromarray(image.transpose(1, 2, 0)), size).transpose(2, 0, 1)  # (3, size, size)

    out = np.zeros((images.shape[0], 3, size, size), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, image in enumerate(pool.map(one, images)):
            out[i] = image
    return out


def _groups(records: Sequence[FaceRecord]) -> dict[str, list[str | None]] | None:
    """The records' groups by name (``None`` where a record has no value for a name)."""
    names = sorted({name for r in records for name, _ in r.groups})
    if not names:
        return None
    labelled = [dict(r.groups) for r in records]
    return {name: [g.get(name) for g in labelled] for name in names}


def _decode_all(dataset, records, size, progress, workers, framer) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Decode every record with a thread pool -> ``(images (N, 3, S, S), ok (N,), reasons, notes)``."""

    def load(record: FaceRecord) -> tuple[np.ndarray, str | None] | str:
        try:
            image = dataset.load_image(record)
            face = framer(image) if framer is not None else Face(image)
            return to_square(face.image, size), face.note
        except Exception as exc:  # a corrupt file must not stop the run
            return f"{type(exc).__name__}: {exc}".splitlines()[0][:120]

    images = np.zeros((len(records), 3, size, size), dtype=np.uint8)
    ok = np.zeros(len(records), dtype=bool)
    reasons: list[str | None] = [None] * len(records)
    notes: list[str | None] = [None] * len(records)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, result in enumerate(pool.map(load, records)):
            if isinstance(result, str):
                reasons[i] = result
            else:
                images[i] = result[0].transpose(2, 0, 1)  # (S, S, 3) -> (3, S, S)
                notes[i] = result[1]
                ok[i] = True
            if progress is not None:
                progress(1)
    return images, ok, reasons, notes

"""FaceDataset: a labelled collection of face images."""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from agemetric._text import printable
from agemetric.errors import AgemetricError


@dataclass(frozen=True)
class FaceRecord:
    """One labelled image.

    Attributes:
        key: a unique, stable id (a path relative to the data folder, or a synthetic id).
        age: age in years.
        gender: 0 = male, 1 = female, -1 = unknown.
        subject: the person's id where the dataset has one, else ``None``.
        split: ``"train"`` or ``"test"`` where the dataset fixes the split (an official
            protocol or a ``split`` column), else ``None``.
        groups: ``(name, value)`` pairs naming the person's groups where the dataset labels them
            (UTKFace: ``(("race", "asian"),)``), for the error by group; not in the repr.

    Examples:
        >>> FaceRecord("face.jpg", age=31.0, gender=1)
        FaceRecord(key='face.jpg', age=31.0, gender=1, subject=None, split=None)
    """

    key: str
    age: float
    gender: int = -1
    subject: str | None = None
    split: str | None = None
    groups: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass
class Skipped:
    """Rows a dataset could not use, with the reason, reported to the user (never fatal)."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, reason: str) -> None:
        """Record one unusable row or file; a name that is not valid text (a file name in another
        encoding) is kept with its odd bytes escaped (``\\xff``), printable and writable."""
        self.items.append((printable(name), printable(reason)))

    def __len__(self) -> int:
        return len(self.items)

    def summary(self, first: int = 3) -> str:
        """``"12 skipped: a.jpg (bad name), ..."``, or an empty string."""
        if not self.items:
            return ""
        shown = ", ".join(f"{n} ({r})" for n, r in self.items[:first])
        more = f", and {len(self.items) - first} more" if len(self.items) > first else ""
        return f"{len(self.items)} skipped: {shown}{more}"


class FaceDataset(abc.ABC):
    """A dataset plugin: lists labelled records and loads one image.

    Factories registered through ``register_datasets`` are called as
    ``factory(root=..., **dataset_options)``; ``root`` is the ``--data-dir`` (``None`` for
    datasets that need no files, such as the embedded synthetic one).

    Subclasses implement `records()` (and `load_image()` when images are not files under
    ``root``); problems with single rows are
    recorded in ``self.skipped`` instead of raised.

    Examples:
        A subclass implements `records()`; images are read from ``root / key``:

        >>> import tempfile
        >>> class OneFace(FaceDataset):
        ...     def records(self):
        ...         return [FaceRecord("face.png", age=30.0)]
        >>> data = OneFace(tempfile.mkdtemp()); Image.new("RGB", (8, 6)).save(data.root / "face.png")
        >>> data.load_image(data.records()[0]).size
        (8, 6)
    """

    #: Whether records carry gender labels (turns the multi-task gender head on by default).
    has_gender: bool = False
    #: The most threads `agemetric.data.arrays.decode()` loads this dataset's images with, or
    #: ``None`` for its default. Set 1 where `load_image()` holds Python's GIL (images drawn with
    #: many small numpy calls, as the synthetic faces are): more threads then only contend for it.
    decode_threads: int | None = None

    def __init__(self, root: str | Path | None = None):
        self.root = None if root is None else Path(root)
        self.skipped = Skipped()

    @abc.abstractmethod
    def records(self) -> list[FaceRecord]:
        """All usable records, in a stable order."""

    def load_image(self, record: FaceRecord) -> Image.Image:
        """The image of ``record`` as an upright RGB PIL image, read from `file()` as `predict`
        reads photos (`agemetric.photos.load_photo`: EXIF orientation applied, 16-bit and float
        images scaled to 8 bits, transparency over white); may raise on a corrupt file. Datasets
        without files (synthetic) override this."""
        from agemetric.photos import load_photo

        path = self.file(record)
        if path is None:
            raise NotImplementedError(f"{type(self).__name__} has no files: override load_image()")
        return load_photo(path)

    def file(self, record: FaceRecord) -> Path | None:
        """The image file of ``record`` (``root / key``, or beside a CSV root), or ``None`` when the
        dataset has no files (synthetic)."""
        if self.root is None:
            return None
        return (self.root if self.root.is_dir() else self.root.parent) / record.key

    def fingerprint(self, record: FaceRecord) -> str:
        """The md5 of the image file's bytes (the key when there is no file): byte-identical copies
        share it, so a split can keep them on one side."""
        path = self.file(record)
        if path is None:
            return hashlib.md5(record.key.encode()).hexdigest()
        try:
            digests = self.__dict__.setdefault("_digests", {})  # the split and the decode cache both ask
            if record.key not in digests:  # so this dataset object reads each file once
                with path.open("rb") as f:
                    digests[record.key] = hashlib.file_digest(f, "md5").hexdigest()  # streamed, never held whole
            return digests[record.key]
        except OSError:
            return hashlib.md5(record.key.encode()).hexdigest()  # decode() reports the file

    def require_folder(self, name: str) -> Path:
        """``root``, which must be an existing folder: that of the dataset ``name`` (e.g.
        ``"UTKFace"``); a reader calls this first."""
        if self.root is None:
            raise AgemetricError(f"data_dir is required: the {name} folder")
        if not self.root.is_dir():
            raise AgemetricError(f"data_dir: {name} folder {str(self.root)!r} does not exist")
        return self.root

    def new_image(self, key: str, where: str, seen: set[str]) -> bool:
        """Whether the row ``where`` lists an image not listed before (``seen``, which it joins)
        whose file exists; else the row goes to ``skipped`` with the reason."""
        if key in seen:
            self.skipped.add(where, f"image {key!r} is listed twice")
            return False
        path = self.file(FaceRecord(key, age=0.0))
        if path is None or not path.is_file():
            self.skipped.add(where, f"no image file {key!r}")
            return False
        seen.add(key)
        return True

    def describe(self) -> str:
        """A short name for reports, e.g. ``"utkface (/data/UTKFace)"``."""
        return type(self).__name__ if self.root is None else f"{type(self).__name__} ({self.root})"

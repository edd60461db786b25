"""Photos in, per-face results out: the one path from a photo to its faces' ages that
`agemetric.estimator.AgeEstimator.analyze()`,
`agemetric.bundle.Bundle.analyze()` and ``agemetric predict`` all take, so
that they cannot disagree about a photo.

A model takes part through the small `Predictor` protocol: the side of the faces it takes, its
framer, and `estimate()` from framed faces to their `Estimates`. Torch is never imported here.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeAlias

import numpy as np
from PIL import Image, UnidentifiedImageError

from agemetric._records import AGE_RANGE
from agemetric.errors import AgemetricError
from agemetric.estimates import Estimates
from agemetric.photos import FoundFace, as_image, find_faces, read_photo, upright_size

if TYPE_CHECKING:
    from agemetric.framing_processes import FramingProcesses

#: a photo as `analyze()` takes it: a file's path, an open binary file (its ``name``, when it has
#: one, is the result's source), a PIL image, or a uint8 ``(H, W, 3)`` array
Photo: TypeAlias = str | os.PathLike | BinaryIO | Image.Image | np.ndarray
#: photos framed and estimated together (bounded memory for any number of photos)
CHUNK = 32


class Predictor(Protocol):
    """What `analyze()` needs of a model: a trained `AgeEstimator` and an exported `Bundle` both
    are one."""

    @property
    def image_size(self) -> int:
        """The side of the square faces the network takes, in pixels."""

    @property
    def framer(self) -> Any:
        """How faces are found in a photo: a `agemetric.interfaces.Framer`, a plain
        function from a photo to its face, or ``None`` (the whole photo)."""

    def estimate(self, images: np.ndarray, under: float | None = None) -> Estimates:
        """`Estimates` of uint8 ``(N, 3, S, S)`` framed faces."""


@dataclass(frozen=True)
class FaceResult:
    """One face of a photo.

    Attributes:
        box: ``(left, top, right, bottom)`` in the photo's own pixels, or ``None`` when the
            framing does not locate faces (the whole photo, a fixed box).
        age: the estimate in years, or ``None`` when the face was not estimated (see ``note``).
        low / high: the calibrated interval's ends, or ``None`` (a model without intervals).
        p_under: the probability of being under the age asked for, or ``None``.
        note: the framer's note when it fell back: for a face not estimated, what went wrong
            (``"no face found"``, the part of the framer's ``"no face found: centre framing"``
            before the colon).
    """

    box: tuple[int, int, int, int] | None
    age: float | None
    low: float | None = None
    high: float | None = None
    p_under: float | None = None
    note: str | None = None

    def to_dict(self, under: bool = False) -> dict:
        """The face as JSON data (``agemetric predict --json``): ages rounded to 0.01 years,
        ``p_under`` to 0.001, present when ``under`` was asked for."""
        out: dict[str, Any] = {"box": None if self.box is None else list(self.box)}
        out |= {name: _rounded(getattr(self, name), 2) for name in ("age", "low", "high")}
        if under:
            out["p_under"] = _rounded(self.p_under, 3)
        return out | {"note": self.note}

    def __str__(self) -> str:
        """``34 (29-40)``, ``34.2`` without an interval, or the note of a face not estimated."""
        if self.age is None:
            return self.note or "not estimated"
        if self.low is None:
            return f"{self.age:.1f}"
        return f"{self.age:.0f} ({self.low:.0f}-{self.high:.0f})"


@dataclass(frozen=True)
class PhotoResult:
    """One photo and its faces.

    Attributes:
        source: the photo's path, or ``"image N"`` for an image given in memory.
        size: ``(width, height)`` in the photo's own pixels (``None`` when it could not be read).
        faces: the faces found, largest first; one face without a box when the framing does not
            locate faces or found none (its note says so).
        under: the age asked about (``p_under``), or ``None``.
        error: why the photo could not be read, or ``None``.
    """

    source: str
    size: tuple[int, int] | None
    faces: tuple[FaceResult, ...] = field(default=())
    under: float | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        """The photo as JSON data: the object ``agemetric predict --json`` prints per line."""
        width, height = self.size or (None, None)
        out: dict[str, Any] = {"photo": self.source, "width": width, "height": height}
        if self.under is not None:  # what each face's p_under is the probability of
            out["under"] = self.under
        out["faces"] = [face.to_dict(self.under is not None) for face in self.faces]
        return out if self.error is None else out | {"error": self.error}

    def __repr__(self) -> str:
        if self.error is not None:
            return f"PhotoResult({self.source!r}, error={self.error!r})"
        faces = ", ".join(str(face) for face in self.faces)
        return f"PhotoResult({self.source!r}, {self.size[0]}x{self.size[1]}, faces=[{faces}])"


def analyze(predictor: Predictor, photos: Photo | Sequence[Photo], under: float | None = None) -> list[PhotoResult]:
    """Every face of each photo with its age, interval and (with ``under``) the probability of
    being younger than ``under`` years.

    Args:
        predictor: an `AgeEstimator` or a `Bundle`.
        photos: a photo or a list of them: paths, open binary files, PIL images or uint8
            ``(H, W, 3)`` arrays.
        under: an age in years to ask about, or ``None``.

    Returns:
        One `PhotoResult` per photo, in order. A file that cannot be read gives a result with
        its ``error`` (the others are still estimated); anything that is not a photo at all is
        an `AgemetricError`.
    """
    return [result for result, _ in analyses(predictor, photos, under)]


def analyses(
    predictor: Predictor,
    photos: Photo | Sequence[Photo],
    under: float | None = None,
    chunk: int = CHUNK,
    processes: FramingProcesses | None = None,
    framed: Callable[[], None] | None = None,
) -> Iterator[tuple[PhotoResult, Image.Image | None]]:
    """`analyze()` as a stream: each photo's result with the photo as it was framed (``None``
    when it could not be read, or when it was framed in another process).

    Args:
        predictor: as for `analyze()`.
        photos: as for `analyze()`.
        under: as for `analyze()`.
        chunk: how many photos are framed and estimated together (the memory it holds).
        processes: `agemetric.framing_processes.FramingProcesses` that read the photos and find
            their faces while the faces of the photos before them are estimated (``None``: this
            process's framing threads). A photo whose process died is framed again; one that
            stops a process itself gets an ``error``.
        framed: called once for each photo as it has been read and its faces found, before its
            chunk is estimated (a progress bar's step); from another thread with ``processes``.
    """
    check_under(under)
    items = list(photos) if isinstance(photos, list | tuple) else [photos]
    for chunk_framed in _framed_chunks(predictor, items, chunk, processes, framed):
        estimates = estimate_photos(predictor, chunk_framed, under)
        yield from zip(estimates, (photo.image for photo in chunk_framed), strict=True)


def _framed_chunks(
    predictor: Predictor,
    items: list,
    chunk: int,
    processes: FramingProcesses | None,
    framed: Callable[[], None] | None,
) -> Iterator[list[FramedPhoto]]:
    """``items`` framed, ``chunk`` at a time: on this process's framing threads, or in
    ``processes`` with the next chunk already given to them while this one is estimated
    (``framed``: as for `analyses()`)."""
    starts = range(0, len(items), chunk)
    if processes is None:
        for start in starts:
            yield frame_photos(predictor, items[start : start + chunk], start, len(items), framed)
        return
    pending: deque[list] = deque()

    def submit(start: int) -> None:
        jobs = []
        for i, item in enumerate(items[start : start + chunk], start):
            future = processes.submit(item, i, len(items))
            if framed is not None:  # once per photo: a photo sent again is not counted again
                future.add_done_callback(lambda _: framed())
            jobs.append((future, item, i))
        pending.append(jobs)

    ahead = iter(starts)
    for start in itertools.islice(ahead, 2):
        submit(start)
    while pending:
        jobs = pending.popleft()
        following = next(ahead, None)
        if following is not None:
            submit(following)
        yield _answers(processes, jobs, len(items))


def _answers(processes: FramingProcesses, jobs: list, count: int) -> list[FramedPhoto]:
    """The framing processes' answers for a chunk's ``(future, photo, index)`` jobs. A process
    that dies fails every photo its pool held: those are sent again together, and any that
    fails again is tried alone, so that only a photo that stops a process itself is reported
    (as not read)."""
    from concurrent.futures.process import BrokenProcessPool

    def result(future) -> list[FramedPhoto] | None:
        try:
            return future.result()
        except BrokenProcessPool:
            return None

    out = {index: result(future) for future, _, index in jobs}
    failed = [(item, index) for _, item, index in jobs if out[index] is None]
    again = [(processes.submit(item, index, count), index) for item, index in failed]
    out.update({index: result(future) for future, index in again})
    for item, index in failed:
        if out[index] is None:
            out[index] = result(processes.submit(item, index, count))
        if out[index] is None:
            error = "its framing process stopped while reading it (crashed or was killed)"
            out[index] = [FramedPhoto(_source(item, index), None, None, error)]
    return [photo for _, _, index in jobs for photo in out[index]]


@dataclass(frozen=True)
class FramedPhoto:
    """A photo read and framed, its faces not yet estimated: `analyze()`'s first step, which
    `agemetric serve` takes for some requests while the network estimates the faces of others.

    Attributes:
        source: as `PhotoResult.source`.
        image: the photo as it was framed; ``None`` when it could not be read, or after
            `without_image()`.
        size: ``(width, height)`` in its own pixels, or ``None``.
        error: why it could not be read, or ``None``.
        faces: its faces as the framer found them, their boxes in ``image``'s pixels.
    """

    source: str
    image: Image.Image | None
    size: tuple[int, int] | None
    error: str | None
    faces: tuple[FoundFace, ...] = ()

    def without_image(self) -> FramedPhoto:
        """The photo as `estimate_photos()` needs it, without its pixels (the boxes put in the
        photo's own pixels): what a framing process sends back."""
        if self.image is None:
            return self
        faces = tuple(replace(face, box=_own_pixels(face.box, self.image.size, self.size)) for face in self.faces)
        return replace(self, image=None, faces=faces)


def frame_photos(
    predictor: Predictor,
    photos: Sequence[Photo],
    start: int = 0,
    count: int | None = None,
    framed: Callable[[], None] | None = None,
) -> list[FramedPhoto]:
    """Read ``photos`` and find their faces with ``predictor``'s framer (``start``: the first
    one's index among ``count`` photos, for in-memory images' names; ``framed``: called once per
    photo as it is done, one that cannot be read included)."""
    read = [_read(item, start + i, count or len(photos)) for i, item in enumerate(photos)]
    images = [image for _, image, _, _ in read if image is not None]
    for _ in range(len(read) - len(images) if framed is not None else 0):
        framed()
    by_photo: list[list[FoundFace]] = [[] for _ in images]
    for face in find_faces(images, predictor.image_size, predictor.framer, framed=framed):
        by_photo[face.photo].append(face)
    faces = iter(by_photo)
    return [
        FramedPhoto(source, image, size, error, tuple(next(faces)) if image is not None else ())
        for source, image, size, error in read
    ]


def estimate_photos(
    predictor: Predictor, framed: Sequence[FramedPhoto], under: float | None = None
) -> list[PhotoResult]:
    """`analyze()`'s second step: the faces of framed photos estimated together, as results."""
    found = [face for photo in framed for face in photo.faces if face.note is None]
    estimates = predictor.estimate(np.stack([face.pixels for face in found]), under) if found else None
    row_of = {id(face): row for row, face in enumerate(found)}
    out = []
    for photo in framed:
        if photo.error is not None:
            out.append(PhotoResult(photo.source, None, under=under, error=photo.error))
            continue
        shown = photo.size if photo.image is None else photo.image.size
        faces = [_result(face, estimates, row_of.get(id(face)), shown, photo.size) for face in photo.faces]
        out.append(PhotoResult(photo.source, photo.size, tuple(faces), under))
    return out


def check_under(under: float | None, name: str = "under") -> None:
    """Refuse an age threshold outside 0-150 years (``name``: the option as the user wrote it)."""
    low, high = AGE_RANGE
    if under is not None and not low < under <= high:
        raise AgemetricError(f"{name}: expected an age in years between {low:g} and {high:g}, got {under:g}")


def _read(item, index: int, count: int) -> tuple[str, Image.Image | None, tuple[int, int] | None, str | None]:
    """``(source, image, size in its own pixels, error)``: a file that cannot be read is an error
    of its own; an object that is not a photo raises."""
    if isinstance(item, str | os.PathLike) or hasattr(item, "read"):
        source = _source(item, index)
        try:
            image, size = read_photo(item)
        except UnidentifiedImageError:
            return source, None, None, "cannot read image (not an image file, or a format Pillow cannot read)"
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            return source, None, None, f"cannot read image ({type(exc).__name__}: {str(exc)[:80]})"
        return source, image, size, None
    image = as_image(item, f"photos[{index}]" if count > 1 else "photo")
    if isinstance(item, Image.Image):  # boxes in its own pixels, also when it was shrunk to MAX_SIDE
        return f"image {index}", image, upright_size(item), None
    shape = np.shape(item)  # a (H, W, 3) array or tensor, checked by as_image
    return f"image {index}", image, (int(shape[1]), int(shape[0])), None


def _source(item, index: int) -> str:
    """How a result names the photo ``item`` (number ``index``): its path, its file's name, or
    ``image INDEX``."""
    if isinstance(item, str | os.PathLike):
        return str(item)
    return str(getattr(item, "name", f"image {index}"))


def _own_pixels(box: tuple[int, int, int, int] | None, shown: tuple[int, int], size: tuple[int, int]):
    """A box in the pixels of the photo as it was framed (``shown``) put in the photo's own
    pixels (a photo is read at most `agemetric.photos.MAX_SIDE` pixels a side, so a larger one's
    boxes are scaled back up)."""
    if box is None or shown == size:
        return box
    sx, sy = size[0] / shown[0], size[1] / shown[1]
    return (
        max(0, round(box[0] * sx)),
        max(0, round(box[1] * sy)),
        min(size[0], round(box[2] * sx)),
        min(size[1], round(box[3] * sy)),
    )


def _result(face, estimates: Estimates | None, row: int | None, shown: tuple[int, int], size: tuple[int, int]):
    """A found face as a `FaceResult`, its box in the photo's own pixels."""
    box = _own_pixels(face.box, shown, size)
    if row is None:  # what went wrong, not what the framer did instead: nothing was estimated from that
        return FaceResult(box, None, note=face.note.partition(": ")[0])
    value = estimates.row(row)
    return FaceResult(box, value["age"], value["low"], value["high"], value["under"], face.note)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)

"""Photos in: reading any image file, checking in-memory images, framing every face.

Shared by `agemetric.AgeEstimator`,
`agemetric.bundle.Bundle` and ``agemetric predict``, so a photo is
read and framed the same way everywhere. Torch is never imported here (bundles run on ONNX
Runtime alone); a torch tensor is recognised by its ``numpy`` method.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps

from agemetric._imaging import to_square
from agemetric._stack import AGEMETRIC_FILES, stacklevel_outside, torch_files
from agemetric.errors import AgemetricError

#: photos are decoded at most this large (longer side, pixels); JPEGs are decoded at a reduced
#: scale straight away, so memory stays bounded whatever the file's size
MAX_SIDE = 4096
#: photos are framed on one thread per core, at most this many (`set_framing_threads()` may choose otherwise)
FRAMING_THREADS = 4
#: file name endings ``agemetric predict FOLDER`` takes
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_photo(path: str | os.PathLike, max_side: int = MAX_SIDE) -> Image.Image:
    """Read an image file as an upright RGB image of at most ``max_side`` pixels a side.

    EXIF orientation is applied; grayscale, palette, CMYK and 16-bit images are converted; a
    transparent background becomes white. Memory stays bounded by the file's pixels (at most
    PIL's limit of about 179 megapixels): a JPEG is decoded at 1/2, 1/4 or 1/8 scale when that is
    enough, any other image is shrunk right after decoding, before any conversion.
    """
    return read_photo(path, max_side)[0]


def read_photo(path: str | os.PathLike | BinaryIO, max_side: int = MAX_SIDE) -> tuple[Image.Image, tuple[int, int]]:
    """`load_photo()` of a path or an open binary file, and the upright photo's size in the
    file's pixels ``(width, height)`` (what boxes are reported in when the photo was shrunk to
    ``max_side``)."""
    with warnings.catch_warnings():  # PIL warns above half its limit; agemetric reads those in bounded memory
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            size = image.size
            if image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale when that is enough
            if max(image.size) > max_side:  # before any conversion: 16-bit and float pixels take 2-8 bytes each
                scale = max_side / max(image.size)
                small = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(small, Image.Resampling.BOX)
            upright = upright_size(image, size)
            return to_rgb(ImageOps.exif_transpose(image), max_side), upright


def upright_size(image: Image.Image, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """``(width, height)`` of ``image`` once turned upright by its EXIF orientation (``size``:
    its stored size, when ``image`` has been shrunk since)."""
    width, height = size or image.size
    quarter_turn = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
    return (height, width) if quarter_turn else (width, height)


def to_rgb(image: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """``image`` in RGB, alpha composited over white, 16-bit and float images scaled to 8 bits,
    downscaled so that its longer side is at most ``max_side``."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        peak = float(finite.max()) if finite.size else 0.0
        if image.mode.startswith("I;16") or peak > 255:
            top = 65535.0
        else:  # a float image of 0-1 values is scaled by 255, like one of 0-255 values is kept
            top = 1.0 if image.mode == "F" and peak <= 1.0 else 255.0
        values = np.nan_to_num(values, nan=0.0, posinf=top, neginf=0.0)
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image


def as_image(item, what: str = "image") -> Image.Image:
    """A path, a PIL image, or a uint8 ``(H, W, 3)`` (RGB), ``(H, W, 4)`` (RGBA) or ``(H, W)``
    (grey) numpy array or torch tensor -> RGB PIL image.

    Raises:
        AgemetricError: for anything else, saying what was expected (a float array, values
            outside 0-255, the wrong shape).
    """
    if isinstance(item, str | os.PathLike):
        try:
            return load_photo(item)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise AgemetricError(f"{item}: cannot read image ({type(exc).__name__}: {exc})") from None
    if isinstance(item, Image.Image):
        return to_rgb(ImageOps.exif_transpose(item))
    if hasattr(item, "numpy") and hasattr(item, "detach"):  # a torch tensor
        item = item.detach().cpu().numpy()
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8:
            hint = " (scale a 0-1 float image by 255 and convert it to uint8)" if item.dtype.kind == "f" else ""
            raise AgemetricError(f"{what}: expected uint8 pixels 0-255, got dtype {item.dtype}{hint}")
        if item.ndim == 3 and item.shape[2] == 1:  # one channel: grey
            item = item[:, :, 0]
        grey_or_rgba = (item.ndim == 2 or (item.ndim == 3 and item.shape[2] == 4)) and min(item.shape[:2]) >= 1
        if grey_or_rgba:  # as PIL images of those modes are: alpha over white, grey as RGB
            return to_rgb(Image.fromarray(np.ascontiguousarray(item)))
        if item.ndim != 3 or item.shape[2] != 3 or min(item.shape[:2]) < 1:
            channels_first = item.ndim == 3 and item.shape[0] in (1, 3, 4)
            hint = " (channels first? use .permute(1, 2, 0) or .transpose(1, 2, 0))" if channels_first else ""
            raise AgemetricError(
                f"{what}: expected an (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey array, got shape "
                f"{tuple(item.shape)}{hint}"
            )
        return Image.fromarray(np.ascontiguousarray(item))
    raise AgemetricError(
        f"{what}: expected a file path, a PIL image or a uint8 (H, W, 3) array/tensor, got {type(item).__name__}"
    )


@dataclass(frozen=True)
class FoundFace:
    """One face of one photo, ready for the network.

    Attributes:
        photo: index of the photo in the input.
        pixels: ``(3, S, S)`` uint8, framed and resized as in training.
        box: ``(left, top, right, bottom)`` in the (upright) photo's pixels, or ``None`` when the
            framing does not locate faces (the whole photo, a fixed box).
        note: set when the framer fell back (e.g. no face was found).
    """

    photo: int
    pixels: np.ndarray
    box: tuple[int, int, int, int] | None
    note: str | None


def find_faces(
    images: Sequence[Image.Image],
    size: int,
    framer,
    every_face: bool = True,
    framed: Callable[[], None] | None = None,
) -> list[FoundFace]:
    """Frame ``images`` -> their faces, in photo order (every face, or only the main one;
    ``framed``: called as each image is done, in order).

    ``framer`` is a `agemetric.interfaces.Framer`, a plain function from an image to its
    face region (a bundle's fixed framing), or ``None`` (the whole image). The images are framed
    on a few threads at once (detectors such as dlib's release the GIL); always the same threads,
    so a detector a framer keeps per thread is loaded a bounded number of times.
    """

    def frame(image: Image.Image) -> list[tuple[np.ndarray, tuple[int, int, int, int] | None, str | None]]:
        if framer is None or not hasattr(framer, "all_faces"):
            region = image if framer is None else framer(image)
            return [(to_square(region, size), None, None)]
        faces = framer.all_faces(image) if every_face else [framer(image)]
        return [(to_square(face.image, size), face.box, face.note) for face in faces]

    found = map(frame, images) if _framing.on_framing_thread() else framing_threads().map(frame, images)
    out = []
    for i, faces in enumerate(found):
        out += [FoundFace(i, pixels.transpose(2, 0, 1), box, note) for pixels, box, note in faces]
        if framed is not None:
            framed()
    return out


def framing_threads() -> ThreadPoolExecutor:
    """The threads `find_faces()` frames photos on (`framing_thread_count()` of them). Photos
    framed from one of them are framed on it, in turn."""
    with _framing.lock:
        if _framing.pool is None:
            _framing.pool = ThreadPoolExecutor(framing_thread_count(), "agemetric-framing", initializer=_framing.mark)
        return _framing.pool


def framing_thread_count() -> int:
    """How many threads frame photos: `set_framing_threads()`'s count, by default one per core, at
    most `FRAMING_THREADS`."""
    return _framing.count or min(FRAMING_THREADS, os.cpu_count() or 1)


def set_framing_threads(count: int | None) -> None:
    """Frame photos on ``count`` threads from now on (``None``: one per core, at most
    `FRAMING_THREADS`); like ``torch.set_num_threads``, for the whole process."""
    if count is not None and count < 1:
        raise AgemetricError(f"framing threads: expected at least 1, got {count}")
    with _framing.lock:
        if _framing.pool is not None:
            _framing.pool.shutdown(wait=False)
        _framing.pool, _framing.count = None, count


class _Framing:
    """The framing threads, and whether the current thread is one of them."""

    def __init__(self):
        self.pool: ThreadPoolExecutor | None = None
        self.count: int | None = None
        self.lock, self.local = threading.Lock(), threading.local()

    def mark(self) -> None:
        self.local.framing = True

    def on_framing_thread(self) -> bool:
        return getattr(self.local, "framing", False)


_framing = _Framing()


def batch_of(inputs, size: int, what: str = "images") -> np.ndarray | None:
    """``inputs`` as a uint8 ``(N, 3, S, S)`` batch when it already is one (numpy or torch), else
    ``None``; a batch of another size or dtype is an error that says what was expected."""
    array = inputs
    if hasattr(array, "numpy") and hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    if not isinstance(array, np.ndarray) or array.ndim != 4:
        return None
    if array.dtype != np.uint8:
        raise AgemetricError(
            f"{what}: expected uint8 pixels 0-255, got dtype {array.dtype} "
            "(a float tensor is not taken as pixels: convert it to uint8 first)"
        )
    if array.shape[1:] != (3, size, size):
        raise AgemetricError(
            f"{what}: a batch must be uint8 (N, 3, {size}, {size}) (framed and resized), got {tuple(array.shape)}; "
            "pass photos (paths, PIL images or (H, W, 3) arrays) to have them framed and resized"
        )
    return array


def photo_batch(inputs, size: int, framer: Callable | None, what: str = "images") -> np.ndarray:
    """What `AgeEstimator.predict()` and `Bundle.predict()` take, as uint8 ``(N, 3, S, S)``:
    a ready batch as is; a photo or a list of photos framed (main face) and resized."""
    ready = batch_of(inputs, size, what)
    if ready is not None:
        return ready
    items = inputs if isinstance(inputs, list | tuple) else [inputs]
    pixels, noted = [], []
    for i, item in enumerate(items):  # one photo in memory at a time: only its framed face is kept
        name = f"{what}[{i}]" if len(items) > 1 else what
        for face in find_faces([as_image(item, name)], size, framer, every_face=False):
            pixels.append(face.pixels)
            if face.note is not None:
                noted.append(f"{name} ({face.note})")
    if noted:  # estimated all the same, as documented; say so
        warnings.warn(
            f"{len(noted)} of {len(items)} photo(s) fell back, e.g. {noted[0]}: their estimates are of that framing "
            "(analyze() leaves such faces unestimated)",
            stacklevel=stacklevel_outside(AGEMETRIC_FILES, torch_files()),
        )
    return np.stack(pixels) if pixels else _empty(size)


def _empty(size: int) -> np.ndarray:
    return np.empty((0, 3, size, size), np.uint8)


def photo_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders as the photos directly inside them (sorted by name)."""
    out = []
    for path in paths:
        if Path(path).is_dir():
            out += sorted(p for p in Path(path).iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
        else:
            out.append(Path(path))
    return out

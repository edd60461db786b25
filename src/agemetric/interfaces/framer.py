"""Framer: finds the face region of a photo before it is resized (a detector can replace it)."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class Face:
    """One face of a photo, as a framer found it.

    Attributes:
        image: the region the network sees (then centre-cropped to a square and resized).
        box: where the face is in the photo, ``(left, top, right, bottom)`` in pixels, or ``None``
            when the framer did not locate it (the whole photo or a fixed region).
        note: why the framer fell back to something other than what it promises, then after
            ``": "`` what it did instead (``"no face found: centre framing"``), else ``None``; runs
            count and list these, and ``analyze()`` reports the part before the colon for a face
            it does not estimate.

    Examples:
        What a framer returns (``center`` does not locate the face, so ``box`` is ``None``):

        >>> from agemetric.framers import CenterFramer
        >>> face = CenterFramer()(Image.new("L", (64, 48)))  # any PIL mode in, RGB out
        >>> face.image.mode, face.image.size, face.box, face.note
        ('RGB', (64, 48), None, None)
    """

    image: Image.Image
    box: tuple[int, int, int, int] | None = None
    note: str | None = None


class Framer(abc.ABC):
    """Turns a photo into the region the network sees; the result is then centre-cropped to a
    square and resized.

    Factories registered through ``register_framers`` are called as ``factory(**framing_options)``.
    A plugin implements `frame()` (the face used for training and evaluation); a detector also
    implements `faces()` (every face, for ``agemetric predict``). `key()` must change
    whenever the output would, because decoded images are cached under it. A framer whose faces
    are square chips of one side sets `chip_size`: the disk cache then keeps the chips once at
    that side, and a run at any smaller image size resizes them instead of framing every photo
    again.

    Examples:
        A subclass implements `frame()`; calling the framer gives a `agemetric.interfaces.Face`:

        >>> class LeftHalf(Framer):
        ...     def frame(self, image):
        ...         return image.crop((0, 0, image.width // 2, image.height))
        >>> LeftHalf()(Image.new("RGB", (100, 80))).image.size
        (50, 80)
    """

    #: the side of the square faces `frame()` returns when it is fixed (else ``None``)
    chip_size: int | None = None

    def __call__(self, image: Image.Image) -> Face:
        """The face of an image (any PIL mode) used for training and evaluation."""
        return self._checked(self.frame(image.convert("RGB")))

    def all_faces(self, image: Image.Image) -> list[Face]:
        """Every face of an image (any PIL mode), at least one (a fallback carries a note)."""
        found = [self._checked(f) for f in self.faces(image.convert("RGB"))]
        return found or [self(image)]

    @abc.abstractmethod
    def frame(self, image: Image.Image) -> Image.Image | Face:
        """The main face region of an RGB image (for detectors: the largest face)."""

    def faces(self, image: Image.Image) -> list[Image.Image | Face]:
        """Every face region of an RGB image, largest first; by default the one of `frame()`."""
        return [self.frame(image)]

    def bundle_framing(self) -> dict | None:
        """How an exported bundle frames photos as this framer does, by value, without the
        plugin: ``{"name": "center"}`` (the whole photo) or ``{"name": "box", "box": [left, top,
        right, bottom], "margin": m}`` (fractions of the photo's sides). ``None`` (the default):
        the bundle names the framer by its registered name and options, so the plugin's package
        must be installed where the bundle runs."""
        return None

    def key(self) -> str:
        """What identifies this framer's output in the image cache (class and options)."""
        return f"{type(self).__qualname__}{sorted(vars(self).items())}"

    def _checked(self, out: Image.Image | Face) -> Face:
        face = out if isinstance(out, Face) else Face(out)
        if not isinstance(face.image, Image.Image) or min(face.image.size) < 1:
            raise ValueError(f"{type(self).__name__}.frame must return a non-empty PIL image or Face")
        return face

"""Framer: chooses the face region of a photo before it is resized (a detector can replace it)."""

from __future__ import annotations

import abc

from PIL import Image


class Framer(abc.ABC):
    """Turns a photo into the region the network sees; the result is then centre-cropped to a
    square and resized.

    Factories registered through ``register_framers`` are called as ``factory(**framing_options)``.
    A face-detector plugin implements :meth:`frame` with its detector; :meth:`key` must change
    whenever the output would, because decoded images are cached under it.
    """

    def __call__(self, image: Image.Image) -> Image.Image:
        out = self.frame(image.convert("RGB"))
        if not isinstance(out, Image.Image) or min(out.size) < 1:
            raise ValueError(f"{type(self).__name__}.frame must return a non-empty PIL image")
        return out

    @abc.abstractmethod
    def frame(self, image: Image.Image) -> Image.Image:
        """The face region of an RGB image."""

    def key(self) -> str:
        """What identifies this framer's output in the image cache (class and options)."""
        return f"{type(self).__qualname__}{sorted(vars(self).items())}"

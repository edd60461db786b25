"""Image framing and resizing with PIL and numpy only: shared by training and by exported bundles.

Kept free of torch and of the plugin machinery so that `agemetric.bundle` prepares photos
exactly as training did, with the same code.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


def crop_box(image: Image.Image, box: tuple[float, float, float, float], margin: float = 0.0) -> Image.Image:
    """Crop ``box`` (``(left, top, right, bottom)`` fractions of the size), grown by ``margin`` times
    the box's size on each side and clipped to the image."""
    w, h = image.size
    left, top, right, bottom = box
    dx, dy = (right - left) * margin, (bottom - top) * margin
    return image.crop(
        (
            max(0, round((left - dx) * w)),
            max(0, round((top - dy) * h)),
            min(w, round((right + dx) * w)),
            min(h, round((bottom + dy) * h)),
        )
    )


def to_square(image: Image.Image, size: int) -> np.ndarray:
    """Centre-crop ``image`` (already framed) to a square and resize it to ``size`` ->
    ``(size, size, 3)`` uint8."""
    image = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)

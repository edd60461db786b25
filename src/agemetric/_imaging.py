"""Image framing and resizing with PIL and numpy only: shared by training and by exported bundles.

Kept free of torch and of the plugin machinery so that `agemetric.bundle` prepares photos
exactly as training did, with the same code.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from agemetric._text import shortened

#: `BoxFramer`'s default box: the middle 70 % of the width, the top 80 % of the height
DEFAULT_BOX = (0.15, 0.0, 0.85, 0.8)


def checked_box(box, margin) -> tuple[tuple[float, float, float, float], float]:
    """``(box, margin)`` as floats, checked: ``box`` is ``(left, top, right, bottom)`` fractions
    of the size with left < right and top < bottom, ``margin`` a finite number >= 0.

    Raises:
        ValueError: saying what was expected.
    """
    try:
        if isinstance(box, str | bytes | dict) or isinstance(margin, bool):
            raise TypeError
        values = tuple(float(v) for v in box)
        margin = float(margin)
    except (TypeError, ValueError):
        raise ValueError(
            f"box must be 4 numbers and margin a number, got box {shortened(box)}, margin {shortened(margin)}"
        ) from None
    if len(values) != 4 or not (0 <= values[0] < values[2] <= 1 and 0 <= values[1] < values[3] <= 1):
        raise ValueError(
            f"box must be (left, top, right, bottom) fractions with left < right, top < bottom; got {shortened(values)}"
        )
    if not 0 <= margin <= 10:
        raise ValueError(f"margin must be between 0 and 10 (times the box's size), got {margin}")
    return values, margin  # type: ignore[return-value]


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

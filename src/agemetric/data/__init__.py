"""Decoding datasets into uint8 arrays, the disk cache, splits and tensor transforms.

The names below are imported on first use, so that ``agemetric.data.cache`` (``agemetric cache``)
loads without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agemetric._lazy import lazy_getattr

__getattr__ = lazy_getattr(
    __name__,
    {"FaceArrays": "agemetric.data.arrays", "decode": "agemetric.data.arrays", "random_split": "agemetric.data.splits"},
)

if TYPE_CHECKING:
    from agemetric.data.arrays import FaceArrays, decode
    from agemetric.data.splits import random_split

__all__ = ["FaceArrays", "decode", "random_split"]

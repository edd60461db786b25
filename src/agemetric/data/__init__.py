"""Decoding datasets into uint8 arrays, the disk cache, splits and tensor transforms."""

from agemetric.data.arrays import FaceArrays, decode
from agemetric.data.splits import random_split

__all__ = ["FaceArrays", "decode", "random_split"]

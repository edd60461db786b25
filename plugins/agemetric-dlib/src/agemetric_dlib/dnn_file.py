"""Read the weights of a dlib DNN file (dlib's own binary serialisation) without dlib.

Enough of the format for dlib's face recognition ResNet: its convolutions (``con_``), affine
layers (``affine_``) and fully connected layer (``fc_``), in file order, which is the network's
order from the input up. dlib writes an integer as one byte (its length, 0x80 for a negative
sign) followed by that many little-endian bytes, a string as its length and its bytes, and a
tensor as a version (2), four dimensions and then raw little-endian float32 values. Layers
without weights (relu, pooling, add_prev) are skipped: the reader looks for the next weighted
layer's name after the end of the last one read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agemetric import AgemetricError

#: a serialised layer name: its length byte pair, then e.g. ``con_4``, ``affine_`` or ``fc_2``
_LAYER_NAME = re.compile(rb"\x01(?:\x05con_\d|\x07affine_|\x04fc_\d)")


@dataclass
class Conv:
    weight: torch.Tensor  # (out, in, kh, kw)
    bias: torch.Tensor  # (out,)
    stride: int
    padding: int


@dataclass
class Affine:
    scale: torch.Tensor  # (C,)
    offset: torch.Tensor  # (C,)


@dataclass
class Dense:
    weight: torch.Tensor  # (out, in), as nn.Linear stores it


class _Stream:
    def __init__(self, data: bytes, pos: int):
        self.data, self.pos = data, pos

    def int(self) -> int:
        head = self.data[self.pos]
        n = head & 0x0F
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -value if head & 0x80 else value

    def string(self) -> str:
        n = self.int()
        text = self.data[self.pos : self.pos + n].decode("latin-1")
        self.pos += n
        return text

    def tensor(self) -> np.ndarray:
        if (version := self.int()) != 2:
            raise ValueError(f"tensor version {version}, expected 2")
        count = int(np.prod([self.int() for _ in range(4)]))
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32)
        self.pos += 4 * count
        return values


def read_dnn_layers(path: str | Path) -> list[Conv | Affine | Dense]:
    """The weighted layers of the dlib DNN file ``path``, from the input up."""
    data = Path(path).read_bytes()
    layers: list[Conv | Affine | Dense] = []
    pos = 0
    try:
        while match := _LAYER_NAME.search(data, pos):
            stream = _Stream(data, match.start())
            name = stream.string()
            if name.startswith("con_"):
                params = stream.tensor()
                filters, rows, cols, stride, _, padding, _ = (stream.int() for _ in range(7))
                n = params.size - filters  # the filters, then one bias per filter
                weight = params[:n].reshape(filters, n // (filters * rows * cols), rows, cols)
                layers.append(Conv(torch.from_numpy(weight), torch.from_numpy(params[n:]), stride, padding))
            elif name.startswith("affine_"):
                params = stream.tensor()  # gamma, then beta
                half = params.size // 2
                layers.append(Affine(torch.from_numpy(params[:half]), torch.from_numpy(params[half:])))
            else:
                outputs, inputs = stream.int(), stream.int()
                params = stream.tensor()  # (inputs, outputs), then the biases if any
                layers.append(Dense(torch.from_numpy(params[: inputs * outputs].reshape(inputs, outputs).T.copy())))
            pos = stream.pos
    except (ValueError, IndexError) as e:
        raise AgemetricError(f"{path}: not a dlib DNN file this reader understands ({e})") from None
    return layers

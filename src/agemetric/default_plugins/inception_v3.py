"""The paper's backbone: torchvision Inception V3 with the classifier replaced by embedding heads."""

from __future__ import annotations

import torch
from torch import nn

from agemetric.default_plugins._heads import attach_heads, load_weights_file
from agemetric.errors import AgemetricError
from agemetric.hookspecs import hookimpl
from agemetric.interfaces import Backbone
from agemetric.types import Embeddings


class InceptionV3(Backbone):
    """Inception V3 (torchvision) -> 2048 pooled features -> dropout(0.5) + linear heads.

    As in Jeong et al. (2018): N_a = 70 age dimensions, N_g = 10 gender dimensions, input
    227 x 227 (any side >= 75 works). The auxiliary classifier is not used.

    Args:
        embedding_dim: N_a.
        gender_dim: N_g (0 = no gender head).
        weights: ``None``/``"none"`` (random init), ``"imagenet"`` (torchvision's
            ``IMAGENET1K_V1``, downloaded on first use or read from the torch hub cache), or a
            path to a state dict (of this backbone, or of a torchvision Inception V3 trunk).
        dropout: p before the heads.
        head: ``"linear"`` (the paper's FC embedding) or ``"none"`` (the pooled features are the
            embedding, for frozen-feature baselines).
    """

    min_size = 75

    def __init__(
        self,
        embedding_dim: int = 70,
        gender_dim: int = 10,
        weights: str | None = None,
        dropout: float = 0.5,
        head: str = "linear",
    ):
        super().__init__(embedding_dim, gender_dim, weights)
        import torchvision  # heavy: imported on first use

        choice = (weights or "none").lower()
        if choice == "imagenet":
            tv_weights = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1
            try:
                trunk = torchvision.models.inception_v3(weights=tv_weights)  # needs aux_logits=True
            except Exception as exc:  # no network and no cached file
                raise AgemetricError(
                    f"--weights imagenet: cannot load torchvision's Inception V3 weights ({exc}); "
                    "put inception_v3_google-0cc3c7bd.pth in $TORCH_HOME/hub/checkpoints or use --weights none"
                ) from exc
        else:
            trunk = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
        trunk.aux_logits, trunk.AuxLogits = False, None  # the auxiliary classifier is not used
        trunk.fc = nn.Identity()
        self.trunk = trunk
        attach_heads(self, 2048, dropout, head)
        if choice not in ("none", "imagenet"):
            load_weights_file(self, weights, classifier_prefixes=("fc.", "AuxLogits."))

    def embed(self, images: torch.Tensor) -> Embeddings:
        features = self.trunk(images)  # (B, 2048)
        return self.heads(features)


@hookimpl
def register_backbones(register):
    register("inception_v3", InceptionV3)

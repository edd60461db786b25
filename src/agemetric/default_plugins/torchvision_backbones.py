"""Backbones from torchvision: the paper's Inception V3, and MobileNetV2, ResNet-18, ResNet-50.

Each keeps torchvision's trunk, drops its classifier and adds agemetric's embedding heads
(dropout 0.5 + linear age head of N_a = 70, optional gender head of N_g = 10), as the paper does
with Inception V3.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from agemetric.default_plugins.heads import TrunkBackbone
from agemetric.errors import AgemetricError
from agemetric.hookspecs import hookimpl
from agemetric.interfaces import Backbone


def _torchvision_weights(arch: str, choice: str):
    """``"imagenet"`` -> the architecture's ``IMAGENET1K_V1``; a member name (``"IMAGENET1K_V2"``)
    -> that member; anything else -> ``None`` (a file path)."""
    import torchvision  # heavy: imported on first use

    enum = torchvision.models.get_model_weights(arch)
    name = "IMAGENET1K_V1" if choice.lower() == "imagenet" else choice.upper()
    return enum.__members__.get(name)


def build_trunk(arch: str, weights: str | None, **random_init_kwargs) -> nn.Module:
    """torchvision's ``arch`` with ImageNet weights when asked (from the torch hub cache or the
    network), random weights (built with ``random_init_kwargs``) otherwise; the caller removes
    the classifier."""
    import torchvision

    choice = weights or "none"
    tv_weights = None if choice.lower() == "none" else _torchvision_weights(arch, choice)
    if tv_weights is None:
        return torchvision.models.get_model(arch, weights=None, **random_init_kwargs)
    try:
        return torchvision.models.get_model(arch, weights=tv_weights)
    except Exception as exc:  # no network and no cached file
        filename = tv_weights.url.rsplit("/", 1)[1]
        raise AgemetricError(
            f"weights {choice}: cannot load torchvision's {arch} weights ({type(exc).__name__}: {exc}); "
            f"put {filename} in $TORCH_HOME/hub/checkpoints, or pass the file's path, or set weights to 'none'"
        ) from exc


class TorchvisionBackbone(TrunkBackbone):
    """A torchvision classification network whose classifier is replaced by embedding heads.

    Subclasses set ``arch`` (the torchvision model name), ``features`` (pooled feature size) and
    ``classifier`` (the attribute holding the classifier, replaced by ``nn.Identity``).

    Args:
        embedding_dim: N_a.
        gender_dim: N_g (0 = no gender head).
        weights: ``"none"``, ``"imagenet"`` (torchvision's ``IMAGENET1K_V1``, read from
            ``$TORCH_HOME/hub/checkpoints`` when there, else downloaded), a torchvision weights
            name such as ``"IMAGENET1K_V2"``, or a state-dict file (of this backbone, or of the
            torchvision model).
        dropout: p before the heads.
        head: ``"linear"`` (the paper's FC embedding) or ``"none"`` (the pooled features are the
            embedding, for frozen-feature baselines).

    Examples:
        Another torchvision network is three class attributes away (random weights here):

        >>> import torch
        >>> class ResNet34(TorchvisionBackbone):
        ...     arch, features, classifier = "resnet34", 512, "fc"
        >>> out = ResNet34(weights="none", gender_dim=0).eval()(torch.zeros(2, 3, 64, 64))
        >>> tuple(out.age.shape), out.gender
        ((2, 70), None)
    """

    @property
    def weight_names(self) -> tuple[str, ...]:
        """``"imagenet"`` and torchvision's names of this architecture's weights (``IMAGENET1K_V2``)."""
        import torchvision

        return ("imagenet", *torchvision.models.get_model_weights(self.arch).__members__)

    arch: str
    features: int
    classifier: str
    #: keyword arguments for the randomly initialised model (torchvision's pretrained ones are fixed)
    random_init_kwargs: dict = {}
    #: state-dict prefixes of parts the trunk drops, ignored when loading a torchvision file
    dropped_prefixes: tuple[str, ...] = ()
    min_size = 32

    def __init__(
        self,
        embedding_dim: int = 70,
        gender_dim: int = 10,
        weights: str | None = None,
        dropout: float = 0.5,
        head: str = "linear",
    ):
        named = weights is None or weights.lower() == "none" or _torchvision_weights(self.arch, weights) is not None
        trunk = build_trunk(self.arch, weights if named else None, **self.random_init_kwargs)
        self.strip(trunk)
        super().__init__(trunk, self.features, embedding_dim, gender_dim, weights, dropout, head)
        if not named:
            self.load_weights(Path(weights), classifier_prefixes=(f"{self.classifier}.", *self.dropped_prefixes))

    def strip(self, trunk: nn.Module) -> None:
        """Remove the classifier (and any other part the embedding does not use)."""
        setattr(trunk, self.classifier, nn.Identity())


class MobileNetV2(TorchvisionBackbone):
    """MobileNetV2 (1280 pooled features); fast on a CPU.

    Examples:
        Images ``(B, 3, H, W)`` give ``age`` ``(B, 70)`` and ``gender`` ``(B, 10)`` (random weights here):

        >>> import torch
        >>> model = MobileNetV2(weights="none").eval()
        >>> out = model(torch.zeros(2, 3, 64, 64))
        >>> tuple(out.age.shape), tuple(out.gender.shape)
        ((2, 70), (2, 10))
    """

    arch, features, classifier = "mobilenet_v2", 1280, "classifier"


class ResNet18(TorchvisionBackbone):
    """ResNet-18 (512 pooled features).

    Examples:
        Images ``(B, 3, H, W)`` give ``age`` ``(B, 70)`` and ``gender`` ``(B, 10)`` (random weights here):

        >>> import torch
        >>> model = ResNet18(weights="none").eval()
        >>> out = model(torch.zeros(2, 3, 64, 64))
        >>> tuple(out.age.shape), tuple(out.gender.shape)
        ((2, 70), (2, 10))
    """

    arch, features, classifier = "resnet18", 512, "fc"


class ResNet50(TorchvisionBackbone):
    """ResNet-50 (2048 pooled features).

    Examples:
        Images ``(B, 3, H, W)`` give ``age`` ``(B, 70)`` and ``gender`` ``(B, 10)`` (random weights here):

        >>> import torch
        >>> model = ResNet50(weights="none").eval()
        >>> out = model(torch.zeros(2, 3, 64, 64))
        >>> tuple(out.age.shape), tuple(out.gender.shape)
        ((2, 70), (2, 10))
    """

    arch, features, classifier = "resnet50", 2048, "fc"


class InceptionV3(TorchvisionBackbone):
    """The paper's backbone: Inception V3 (2048 pooled features), input 227 x 227 in the paper
    (any side >= 75 works); the auxiliary classifier is dropped. Pretrained weights are
    torchvision's ``IMAGENET1K_V1``, file ``inception_v3_google-0cc3c7bd.pth``.

    Examples:
        Images ``(B, 3, H, W)`` with ``H, W >= 75`` give ``age`` ``(B, 70)`` and ``gender`` ``(B, 10)``
        (random weights here):

        >>> import torch
        >>> model = InceptionV3(weights="none").eval()
        >>> out = model(torch.zeros(2, 3, 75, 75))
        >>> tuple(out.age.shape), tuple(out.gender.shape)
        ((2, 70), (2, 10))
    """

    arch, features, classifier = "inception_v3", 2048, "fc"
    random_init_kwargs = {"aux_logits": False, "init_weights": True}
    dropped_prefixes = ("AuxLogits.",)
    min_size = 75

    def strip(self, trunk: nn.Module) -> None:
        super().strip(trunk)
        trunk.aux_logits, trunk.AuxLogits = False, None  # torchvision builds it with pretrained weights


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "inception_v3": InceptionV3,
    "mobilenet_v2": MobileNetV2,
    "resnet18": ResNet18,
    "resnet50": ResNet50,
}


@hookimpl
def register_backbones(register):
    for name, factory in BACKBONES.items():
        register(name, factory)

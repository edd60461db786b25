"""ModelSpec: what a trained model is made of, apart from how it was trained; `build_parts()`
creates those parts.

``model.pt`` stores a spec beside the weights, and `AgeEstimator` is built from one; the data,
the split and the training settings stay in the run folder's ``config.toml``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from agemetric import plugins
from agemetric._records import number, whole
from agemetric._text import shortened
from agemetric.config import RunConfig
from agemetric.config_checks import LIMITS
from agemetric.errors import AgemetricError
from agemetric.interfaces import Backbone, Loss, Miner, Retriever


@dataclass(frozen=True)
class ModelSpec:
    """The parts of a model by name, their options, and how it sees and embeds images. The
    fields mean what the `agemetric.config.RunConfig` fields of the same name mean
    (their defaults live there: make a spec with `from_config()`), except ``multitask``, which is
    decided here: whether the model has the gender head and the gender task's parts.

    Examples:
        >>> import dataclasses
        >>> from agemetric import AgeEstimator, resolve
        >>> spec = ModelSpec.from_config(resolve("quick", sets=["image_size=32"]))
        >>> est = AgeEstimator.from_spec(dataclasses.replace(spec, k=5))
        >>> est.spec.k, est.retriever.k, est.image_size
        (5, 5, 32)
    """

    backbone: str
    embedding_dim: int
    gender_dim: int
    multitask: bool
    loss: str
    margin: float
    miner: str
    retriever: str
    k: int
    gender_loss: str | None
    gender_miner: str | None
    gender_margin: float
    image_size: int
    framing: str
    tta_flip: bool
    bf16: str
    channels_last: bool
    backbone_options: dict[str, Any] = field(default_factory=dict)
    loss_options: dict[str, Any] = field(default_factory=dict)
    miner_options: dict[str, Any] = field(default_factory=dict)
    retriever_options: dict[str, Any] = field(default_factory=dict)
    framing_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        """Every field checked, as it may come from a file (``model.pt``): a size beyond the
        config's limits would otherwise ask for memory no photo needs."""
        for name in ("backbone", "loss", "miner", "retriever", "framing"):
            if not isinstance(getattr(self, name), str):
                raise AgemetricError(f"{name} must be a plugin name, got {shortened(getattr(self, name))}")
        for name in ("gender_loss", "gender_miner"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise AgemetricError(f"{name} must be a plugin name or None, got {shortened(getattr(self, name))}")
        whole(self.embedding_dim, "embedding_dim", 1, LIMITS["embedding_dim"])
        whole(self.gender_dim, "gender_dim", 0, LIMITS["gender_dim"])
        whole(self.image_size, "image_size", 1, LIMITS["image_size"])
        whole(self.k, "k", 1)
        number(self.margin, "margin", 0)
        number(self.gender_margin, "gender_margin", 0)
        for name in ("multitask", "tta_flip", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise AgemetricError(f"{name} must be true or false, got {shortened(getattr(self, name))}")
        if self.bf16 not in ("auto", "on", "off"):
            raise AgemetricError(f"bf16 must be 'auto', 'on' or 'off', got {shortened(self.bf16)}")
        for name in ("backbone_options", "loss_options", "miner_options", "retriever_options", "framing_options"):
            options = getattr(self, name)
            if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
                raise AgemetricError(f"{name} must be a table of named options, got {shortened(options)}")

    @classmethod
    def from_config(cls, config: RunConfig, multitask: bool | None = None) -> ModelSpec:
        """The model a run's config describes.

        Args:
            config: the run's config.
            multitask: whether the model has the gender task; ``None`` reads ``config.multitask``
                (``"auto"`` counts as off: a run decides it from the data).

        Examples:
            >>> from agemetric import resolve
            >>> spec = ModelSpec.from_config(resolve("quick"))
            >>> spec.backbone, spec.image_size, spec.multitask
            ('small_cnn', 64, False)
        """
        if multitask is None:
            multitask = config.multitask == "on"
        names = {f.name for f in dataclasses.fields(cls)} - {"multitask"}
        return cls(multitask=multitask, **{name: getattr(config, name) for name in names})

    def to_dict(self) -> dict[str, Any]:
        """Plain values (what ``model.pt`` stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelSpec:
        """The spec `to_dict()` wrote (an unknown or missing field is a one-line error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise AgemetricError(f"unknown model field(s) {', '.join(unknown)}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise AgemetricError(str(exc)) from None


@dataclass
class Parts:
    """The plugins a `ModelSpec` names, created: what `AgeEstimator` is made of."""

    backbone: Backbone | None  # None when `build_parts()` was asked for the light parts only
    miner: Miner
    loss: Loss
    retriever: Retriever
    gender_miner: Miner | None = None
    gender_loss: Loss | None = None


def build_parts(spec: ModelSpec, weights: str = "none", backbone: bool = True) -> Parts:
    """Create every part ``spec`` names, with its options (one-line errors for a wrong name or
    option). With ``spec.multitask``, the gender task's parts come from ``gender_loss`` /
    ``gender_miner`` at ``gender_margin`` (by default the age task's plugins, created again with
    that margin).

    Args:
        spec: the model.
        weights: the backbone's initial weights (``"none"``, ``"imagenet"``, a file, or what the
            plugin accepts).
        backbone: ``False`` skips the backbone (the heavy part), e.g. for an early check.
    """
    net = None
    if backbone:
        net = plugins.create(
            "backbone",
            spec.backbone,
            embedding_dim=spec.embedding_dim,
            gender_dim=spec.gender_dim if spec.multitask else 0,
            weights=weights,
            **spec.backbone_options,
        )
    parts = Parts(
        net,
        plugins.create("miner", spec.miner, margin=spec.margin, **spec.miner_options),
        plugins.create("loss", spec.loss, margin=spec.margin, **spec.loss_options),
        plugins.create("retriever", spec.retriever, k=spec.k, **spec.retriever_options),
    )
    if spec.multitask:
        parts.gender_miner = _gender_part("miner", spec.gender_miner, spec.miner, spec.miner_options, spec)
        parts.gender_loss = _gender_part("loss", spec.gender_loss, spec.loss, spec.loss_options, spec)
    return parts


def _gender_part(kind: str, name: str | None, age_name: str, age_options: dict, spec: ModelSpec):
    """The gender task's miner or loss: its own plugin, or the age task's with the same options."""
    if name is None or plugins.canonical(name) == plugins.canonical(age_name):
        return plugins.create(kind, age_name, margin=spec.gender_margin, **age_options)
    return plugins.create(kind, name, margin=spec.gender_margin)

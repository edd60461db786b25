"""ModelSpec: what a trained model is made of, apart from how it was trained; `build_parts()`
creates those parts.

``model.pt`` stores a spec beside the weights, and `AgeEstimator` is built from one; the data,
the split and the training settings stay in the run folder's ``config.toml``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agemetric import plugins
from agemetric._records import whole
from agemetric.config_checks import (
    CHOICES,
    LIMITS,
    bounds,
    check_fields,
    field_types,
    least,
    most,
    one_of,
    options_table,
    setting,
)
from agemetric.errors import AgemetricError

if TYPE_CHECKING:
    from agemetric.config import RunConfig
    from agemetric.interfaces import Backbone, Loss, Miner, Retriever


@dataclass(frozen=True)
class ModelSpec:
    """The model section of a run's settings: the parts of a model by name, their options, and how
    it sees and embeds images; what ``model.pt`` stores beside the weights. The defaults are the
    paper's (see the method's decisions on the documentation's method page).

    Attributes:
        backbone: backbone plugin name.
        embedding_dim: N_a (paper: 70).
        gender_dim: N_g (paper: 10).
        multitask: the gender task: ``True``, ``False``, or ``None`` to decide from the data (on
            when it has gender labels); a model built while it is ``None`` has no gender task.
        loss: loss plugin name.
        margin: age tolerance in years; Z = 1 iff ``|a_i - a_j| < margin`` (paper: 4).
        miner: miner plugin name.
        retriever: retriever plugin name.
        k: neighbours averaged for a prediction (paper: M = 20).
        gender_loss / gender_miner: the gender task's plugins (``None``: the age task's, made
            again with ``gender_margin`` and the same options).
        gender_margin: the margin on 0/1 gender labels (0.5: Z = 1 iff the same gender).
        image_size: input side in pixels (paper: 227).
        framing: face framing plugin applied before resizing: ``"center"`` (the whole image, for
            cropped faces) or ``"box"`` (a crop box, for uncropped mug-shots; ``framing_options``).
        tta_flip: embed every image (gallery and queries) as the mean of its own embedding and its
            mirror image's.
        bf16: bfloat16 autocast: ``"auto"`` (on where the CPU or GPU supports it), ``"on"``, ``"off"``.
        channels_last: NHWC memory format (faster convolutions on CPU).
        backbone_options / loss_options / miner_options / retriever_options / framing_options:
            extra keyword arguments for the plugin factories.

    Examples:
        >>> import dataclasses
        >>> from agemetric import AgeEstimator, resolve
        >>> spec = resolve("quick", sets=["image_size=32"]).model
        >>> est = AgeEstimator.from_spec(dataclasses.replace(spec, k=5))
        >>> est.spec.k, est.retriever.k, est.image_size
        (5, 5, 32)
        >>> ModelSpec(k=0)
        Traceback (most recent call last):
        ...
        agemetric.errors.AgemetricError: k must be >= 1, got 0
    """

    backbone: str = "inception_v3"
    embedding_dim: int = setting(70, least(1), most(LIMITS["embedding_dim"]))
    gender_dim: int = setting(10, least(0), most(LIMITS["gender_dim"]))
    multitask: bool | None = None
    loss: str = "revised-contrastive"
    margin: float = setting(4.0, least(0))
    miner: str = "all-pairs"
    retriever: str = "l1-knn"
    k: int = setting(20, least(1))
    gender_loss: str | None = None
    gender_miner: str | None = None
    gender_margin: float = setting(0.5, least(0))
    image_size: int = setting(227, least(1), most(LIMITS["image_size"]))
    framing: str = "center"
    tta_flip: bool = False
    bf16: str = setting("auto", one_of(CHOICES["bf16"]))
    channels_last: bool = True
    backbone_options: dict[str, Any] = options_table()
    loss_options: dict[str, Any] = options_table()
    miner_options: dict[str, Any] = options_table()
    retriever_options: dict[str, Any] = options_table()
    framing_options: dict[str, Any] = options_table()

    def __post_init__(self):
        """Every field checked, as it may come from a file (``model.pt``): a size beyond the
        limits would otherwise ask for memory no photo needs."""
        check_fields(self)

    @classmethod
    def from_config(cls, config: RunConfig, multitask: bool | None = None) -> ModelSpec:
        """The model a run's settings describe, with the gender task decided.

        Args:
            config: the run's settings.
            multitask: whether the model has the gender task; ``None`` reads
                ``config.model.multitask`` (undecided counts as off: a run decides it from the data).

        Examples:
            >>> from agemetric import resolve
            >>> spec = ModelSpec.from_config(resolve("quick"))
            >>> spec.backbone, spec.image_size, spec.multitask
            ('small_cnn', 64, False)
        """
        if multitask is None:
            multitask = bool(config.model.multitask)
        return dataclasses.replace(config.model, multitask=multitask)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (what ``model.pt`` stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelSpec:
        """The spec `to_dict()` wrote (an unknown field, or a value it cannot hold, is a one-line error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(values) - names), sorted(names - set(values))
        if unknown:
            raise AgemetricError(f"unknown model field(s) {', '.join(unknown)}")
        if missing:  # a model file lists every field: a default would build another model
            raise AgemetricError(f"missing model field(s) {', '.join(missing)}")
        types_ = field_types(cls)
        for f in dataclasses.fields(cls):  # a file's whole numbers: both bounds in one message
            if types_[f.name][0] is int and f.name in values:
                low, high = bounds(f)
                whole(values[f.name], f.name, 0 if low is None else int(low), None if high is None else int(high))
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

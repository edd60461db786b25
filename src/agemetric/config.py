"""One frozen dataclass describes a run; presets, TOML files and ``--set`` overrides build it.

Resolution order (later wins): the ``RunConfig`` defaults < the preset < the ``--config`` file <
explicit command-line options < ``--set key=value``. A preset's image size that is too small for
the chosen backbone (``--backbone inception_v3`` under the quick preset) is raised to the
backbone's minimum; an explicit one is never changed (too small is an error).
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agemetric import config_checks
from agemetric._text import SHOWN, shortened
from agemetric.errors import AgemetricError
from agemetric.presets import PRESETS


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. The defaults are the paper's method (see the method's
    decisions on the documentation's method page) with one measured change: Adam at lr 1e-4 instead
    of Adadelta (fine-tuning an ImageNet MobileNetV2 on UTKFace for 420 s: MAE 6.28 +- 0.06
    against 7.33 +- 0.67, two seeds each, and the same direction on a second split; see the
    benchmarks page). ``--preset paper`` keeps Adadelta.

    Attributes:
        backbone: backbone plugin name.
        weights: ``"none"``, ``"imagenet"`` or a state-dict path.
        embedding_dim: N_a (paper: 70).
        gender_dim: N_g (paper: 10).
        loss: loss plugin name.
        margin: age tolerance in years; Z = 1 iff ``|a_i - a_j| < margin`` (paper: 4).
        miner: miner plugin name.
        retriever: retriever plugin name.
        k: neighbours averaged for a prediction (paper: M = 20).
        dataset: dataset plugin name.
        data_dir: the dataset's folder or file (``None`` for the synthetic default).
        limit: use at most this many images (a random subset drawn with ``seed``), or ``None``.
        split: split protocol: ``"random"`` (the paper's), ``"subject"`` (no person on both sides) or
            ``"hash"`` (test iff ``int(md5[:8], 16) % round(1 / test_fraction) == 0``); identical
            images always share a side (see `agemetric.data.splits`).
        split_file: reuse a ``split.csv`` from an earlier run (overrides ``split``).
        test_fraction: share of images held out for testing.
        calibration: share of the training split held out of training and of the gallery to
            calibrate the prediction intervals (0: no intervals); identical images, and under
            ``split = "subject"`` each person's images, stay together.
        interval_level: the coverage the intervals are calibrated for (0.9: nine faces in ten).
        interval_groups: calibrate the intervals apart in this many groups of faces with similar
            estimates (Mondrian), so that the coverage holds for children and the old as well as
            on average; fewer groups when one would hold under 200 calibration faces; 1: one
            quantile for all.
        image_size: input side in pixels (paper: 227).
        framing: face framing plugin applied before resizing: ``"center"`` (the whole image, for
            cropped faces) or ``"box"`` (a crop box, for uncropped mug-shots; ``framing_options``).
        epochs: passes over the training split (0: no training, e.g. for a linear probe).
        time_budget: stop training after this many seconds (checked before each step), or ``None``.
        batch_size: images per batch; all pairs of a batch are compared (paper: 128).
        balance: how an epoch draws its images: ``"off"`` (each training image once, shuffled),
            ``"ages"`` (drawn with replacement, an image's chance proportional to one over the
            square root of the number of training images in its 5-year age band, so that rare ages
            are seen more often) or ``"ages+groups"`` (the same over age band and group, where the
            dataset labels groups, e.g. UTKFace's race); an epoch draws as many images as the split holds.
        optimizer: ``"adam"`` (default, measured), ``"adadelta"`` (paper) or ``"sgd"``.
        lr: learning rate (1e-4 for Adam; Adadelta's is a scale factor, 1.0 its usual value).
        head_lr: learning rate of the embedding heads and of any loss parameters (``None``: ``lr``);
            a pretrained trunk fine-tunes best with a smaller ``lr`` than its new heads.
        lr_schedule: ``"constant"`` or ``"cosine"`` (decays to 0 at the end of the epochs, or of
            ``time_budget`` when that comes first).
        warmup: fraction of training (steps, or of ``time_budget``) over which the learning rate
            rises linearly from 0 (0: none).
        weight_decay: L2 penalty.
        weight_average: end training with a moving average of the weights (0: off); at step ``n``
            its decay is ``min(weight_average, (1 + n) / (10 + n))``, so early on it spans
            about the last ninth of the steps.
        multitask: gender task: ``"auto"`` (on when the data has gender labels), ``"on"``, ``"off"``.
        gender_loss / gender_miner: the gender task's plugins (``None``: the age task's, made
            again with ``gender_margin`` and the same options).
        gender_margin: the margin on 0/1 gender labels (0.5: Z = 1 iff the same gender).
        augment: random flip, shift and zoom during training.
        augment_options: its strength, keywords of `agemetric.data.transforms.augment()`
            (``max_shift``, ``scale``, ``rotate``, ``jitter``, ``flip``, ``style``).
        tta_flip: embed every image (gallery and queries) as the mean of its own embedding and its
            mirror image's.
        bn_recalibration: after training, recompute BatchNorm statistics over this many training
            batches (0: keep the running averages); see `agemetric.training.recalibrate_batchnorm()`.
        figures: write the run's figures (``figures/*.png``) and ``report.md``.
        cache: keep decoded images in the disk cache (``$AGEMETRIC_CACHE`` or ``~/.cache/agemetric``).
        bf16: bfloat16 autocast: ``"auto"`` (on where the CPU or GPU supports it), ``"on"``, ``"off"``.
        device: where training runs: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``; under torchrun each process takes ``cuda:LOCAL_RANK``.
        channels_last: NHWC memory format (faster convolutions on CPU).
        seed: seeds the split, the initialisation and the batch order.
        threads: torch CPU threads (``None`` = torch's default).
        out: the run folder (``None``: a new folder under ``runs/`` named by time, dataset and backbone).
        backbone_options / loss_options / miner_options / retriever_options / dataset_options / framing_options:
            extra keyword arguments for the plugin factories.

    Examples:
        >>> config = RunConfig(backbone="resnet18", weights="none", epochs=2)
        >>> config.margin, config.k, config.retriever
        (4.0, 20, 'l1-knn')
        >>> RunConfig(batch_size=1)
        Traceback (most recent call last):
        ...
        agemetric.errors.AgemetricError: batch_size must be >= 2 (pairs need two images), got 1
    """

    backbone: str = "inception_v3"
    weights: str = "imagenet"
    embedding_dim: int = 70
    gender_dim: int = 10
    loss: str = "revised-contrastive"
    margin: float = 4.0
    miner: str = "all-pairs"
    retriever: str = "l1-knn"
    k: int = 20
    dataset: str = "synthetic"
    data_dir: str | None = None
    limit: int | None = None
    split: str = "random"
    split_file: str | None = None
    test_fraction: float = 0.2
    calibration: float = 0.1
    interval_level: float = 0.9
    interval_groups: int = 6
    image_size: int = 227
    framing: str = "center"
    epochs: int = 275
    time_budget: float | None = None
    batch_size: int = 128
    balance: str = "off"
    optimizer: str = "adam"
    lr: float = 1e-4
    head_lr: float | None = None
    lr_schedule: str = "constant"
    warmup: float = 0.0
    weight_decay: float = 0.0
    weight_average: float = 0.0
    multitask: str = "auto"
    gender_loss: str | None = None
    gender_miner: str | None = None
    gender_margin: float = 0.5
    augment: bool = True
    tta_flip: bool = False
    bn_recalibration: int = 20
    cache: bool = True
    figures: bool = True
    bf16: str = "auto"
    channels_last: bool = True
    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    out: str | None = None
    backbone_options: dict = field(default_factory=dict)
    loss_options: dict = field(default_factory=dict)
    miner_options: dict = field(default_factory=dict)
    retriever_options: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    framing_options: dict = field(default_factory=dict)
    augment_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        config_checks.check(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, ``None`` values dropped (TOML has no null)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(RunConfig)


def coerce(key: str, value: Any) -> Any:
    """Convert ``value`` (a string from ``--set`` or a TOML value) to the type of field ``key``."""
    types_ = _field_types()
    if key not in types_:
        close = difflib.get_close_matches(key, types_, n=1) if len(key) <= SHOWN else []  # a long key: no match
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise AgemetricError(f"unknown setting {shortened(key)}; {hint}known: {', '.join(sorted(types_))}")
    hint = types_[key]
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if isinstance(value, str):
        text = value.strip()
        if optional and text.lower() in ("none", "null", ""):
            return None
        if base is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise AgemetricError(f"{key} expects true or false, got {shortened(value)}")
        if base in (int, float):
            try:
                return base(text)
            except ValueError:
                raise AgemetricError(f"{key} expects {base.__name__}, got {shortened(value)}") from None
        if base is dict:
            raise AgemetricError(f"{key} is a table: set one entry with {key}.NAME=VALUE")
        return text
    if value is None and optional:
        return None
    if base is float and isinstance(value, int) and not isinstance(value, bool) and abs(value) < 1e308:  # fits
        return float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise AgemetricError(f"{key} expects {base.__name__}, got {shortened(value)}")
    return value


def _parse_literal(text: str) -> Any:
    """A ``--set`` value for a plugin option: a TOML literal (number, bool, string, list) or text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["epochs=3", "loss_options.q=50"]`` -> overrides (nested for ``*_options``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise AgemetricError(f"sets expects KEY=VALUE, got {shortened(item)}")
        if "." in key:
            table, _, sub = key.partition(".")
            if not (table.endswith("_options") and table in _field_types()):
                tables = ", ".join(k for k in sorted(_field_types()) if k.endswith("_options"))
                raise AgemetricError(f"sets {key}: dotted keys go into a table ({tables})")
            out.setdefault(table, {})[sub] = _parse_literal(value)
        else:
            out[key] = coerce(key, value)
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file: top-level keys are `RunConfig` fields (plus ``preset``)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AgemetricError(f"config_file: no such file {str(path)!r}") from None
    except IsADirectoryError:
        raise AgemetricError(
            f"config_file: {path} is a folder; expected a TOML file (e.g. a run's config.toml)"
        ) from None
    except UnicodeDecodeError as exc:
        raise AgemetricError(f"config_file: {path} is not UTF-8 text (byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError is a ValueError; so is an int of 5000 digits
        reason = exc if isinstance(exc, tomllib.TOMLDecodeError) else "nested too deeply or a number too long"
        raise AgemetricError(f"config_file: {path} is not valid TOML: {reason}") from None
    except OSError as exc:
        raise AgemetricError(f"config_file: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    preset = data.pop("preset", None)
    if preset is not None and not isinstance(preset, str):
        raise AgemetricError(
            f"config_file: {path}: preset expects a name ({', '.join(PRESETS)}), got {shortened(preset)}"
        )
    out = {key: coerce(key, value) for key, value in data.items()}
    if preset is not None:
        out["preset"] = preset
    return out


def resolve(
    preset: str | None = None,
    config_file: str | Path | None = None,
    options: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    command_defaults: dict[str, Any] | None = None,
) -> RunConfig:
    """Build the run's config: defaults < preset < ``command_defaults`` < file < ``options`` < ``sets``.

    Args:
        preset: a name from `agemetric.presets.PRESETS` (``"quick"``, the default when neither
            argument nor file names one; ``"face"``, ``"face-pair"``, ``"paper"``, ...).
        config_file: a TOML file.
        options: explicit values (e.g. from CLI flags); ``None`` values are ignored.
        sets: ``KEY=VALUE`` strings.
        command_defaults: a command's own defaults (e.g. more epochs for ``agemetric paper
            toy-embedding``): above the preset, below everything the user gives.

    Examples:
        >>> config = resolve("quick", options={"epochs": 3}, sets=["k=10", "loss_options.q=50"])
        >>> config.backbone, config.epochs, config.k, config.loss_options
        ('small_cnn', 3, 10, {'q': 50})
        >>> resolve(sets=["epoch=3"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        agemetric.errors.AgemetricError: unknown setting 'epoch'; did you mean 'epochs'? ...
    """
    from_file = load_toml(config_file) if config_file else {}
    name = preset or from_file.pop("preset", None) or "quick"
    from_file.pop("preset", None)
    if name not in PRESETS:
        raise AgemetricError(f"preset: unknown preset {shortened(name)}; known: {', '.join(PRESETS)}")
    merged: dict[str, Any] = {}
    for layer in (
        PRESETS[name],
        command_defaults or {},
        from_file,
        {k: v for k, v in (options or {}).items() if v is not None},
        parse_set(sets or []),
    ):
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    for key in merged:
        coerce(key, merged[key])  # type check every layer's values
    explicit = set(from_file) | {k for k, v in (options or {}).items() if v is not None} | set(parse_set(sets or []))
    if "image_size" not in explicit:
        merged["image_size"] = _fit_image_size(merged.get("backbone", RunConfig.backbone), merged.get("image_size"))
    return RunConfig(**merged)


def _fit_image_size(backbone: str, size: int | None) -> int:
    """A preset's image size, raised to the backbone's minimum (e.g. 75 for Inception V3)."""
    from agemetric import plugins

    size = size or RunConfig.image_size
    factory = plugins.get_entry("backbone", backbone).factory
    return max(size, int(getattr(factory, "min_size", 1)))

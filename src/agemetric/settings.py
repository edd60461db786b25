"""The sections of a run's settings besides the model's (`agemetric.spec.ModelSpec`): the data,
training, evaluation and output. Each is a frozen dataclass whose fields declare what they may
hold (`agemetric.config_checks`); `agemetric.config.RunConfig` holds one of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agemetric.config_checks import (
    CHOICES,
    DEVICES,
    LIMITS,
    above,
    check_fields,
    least,
    matching,
    most,
    one_of,
    options_table,
    setting,
    within,
)


@dataclass(frozen=True)
class DataSettings:
    """Which faces a run reads and how it splits them.

    Attributes:
        dataset: dataset plugin name.
        data_dir: the dataset's folder or file (``None`` for the synthetic default).
        dataset_options: extra keyword arguments for the dataset plugin.
        limit: use at most this many images (a random subset drawn with the run's ``seed``), or ``None``.
        split: split protocol: ``"random"`` (the paper's), ``"subject"`` (no person on both sides) or
            ``"hash"`` (test iff ``int(md5[:8], 16) % round(1 / test_fraction) == 0``); identical
            images always share a side (see `agemetric.data.splits`).
        split_file: reuse a ``split.csv`` from an earlier run (overrides ``split``).
        test_fraction: share of images held out for testing.
        cache: keep decoded images in the disk cache (``$AGEMETRIC_CACHE`` or ``~/.cache/agemetric``).

    Examples:
        >>> DataSettings(test_fraction=1.5)
        Traceback (most recent call last):
        ...
        agemetric.errors.AgemetricError: test_fraction must be between 0 and 1, got 1.5
    """

    dataset: str = "synthetic"
    data_dir: str | None = None
    dataset_options: dict[str, Any] = options_table()
    limit: int | None = setting(None, least(2))
    split: str = setting("random", one_of(CHOICES["split"]))
    split_file: str | None = None
    test_fraction: float = setting(0.2, within(lambda v: 0 < v < 1, "between 0 and 1"))
    cache: bool = True

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class TrainingSettings:
    """How a run trains the model: what `agemetric.training.train()` reads. The defaults are the
    paper's with one measured change: Adam at lr 1e-4 instead of Adadelta (fine-tuning an ImageNet
    MobileNetV2 on UTKFace for 420 s: MAE 6.28 +- 0.06 against 7.33 +- 0.67, two seeds each, and
    the same direction on a second split; see the benchmarks page). ``--preset paper`` keeps Adadelta.

    Attributes:
        weights: the backbone's starting weights: ``"none"``, ``"imagenet"`` or a state-dict path.
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
        augment: random flip, shift and zoom during training.
        augment_options: its strength, keywords of `agemetric.data.transforms.augment()`
            (``max_shift``, ``scale``, ``rotate``, ``jitter``, ``flip``, ``style``).
        bn_recalibration: after training, recompute BatchNorm statistics over this many training
            batches (0: keep the running averages); see `agemetric.training.recalibrate_batchnorm()`.
        device: where training runs: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``; under torchrun each process takes ``cuda:LOCAL_RANK``.
        threads: torch CPU threads (``None`` = torch's default).

    Examples:
        >>> TrainingSettings(batch_size=1)
        Traceback (most recent call last):
        ...
        agemetric.errors.AgemetricError: batch_size must be >= 2 (pairs need two images), got 1
    """

    weights: str = "imagenet"
    epochs: int = setting(275, least(0))
    time_budget: float | None = setting(None, above(0, " seconds"))
    batch_size: int = setting(128, least(2, " (pairs need two images)"), most(LIMITS["batch_size"]))
    balance: str = setting("off", one_of(CHOICES["balance"]))
    optimizer: str = setting("adam", one_of(CHOICES["optimizer"]))
    lr: float = setting(1e-4, above(0))
    head_lr: float | None = setting(None, above(0))
    lr_schedule: str = setting("constant", one_of(CHOICES["lr_schedule"]))
    warmup: float = setting(0.0, within(lambda v: 0 <= v < 1, "a fraction in [0, 1)"))
    weight_decay: float = setting(0.0, least(0))
    weight_average: float = setting(0.0, within(lambda v: 0 <= v < 1, "a decay in [0, 1)"))
    augment: bool = True
    augment_options: dict[str, Any] = options_table()
    bn_recalibration: int = setting(20, least(0))
    device: str = setting("auto", matching(DEVICES, "auto, cpu, cuda or cuda:N"))
    threads: int | None = setting(None, least(1))

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class EvaluationSettings:
    """The prediction intervals a run calibrates after training.

    Attributes:
        calibration: share of the training split held out of training and of the gallery to
            calibrate the prediction intervals (0: no intervals); identical images, and under
            ``split = "subject"`` each person's images, stay together.
        interval_level: the coverage the intervals are calibrated for (0.9: nine faces in ten).
        interval_groups: calibrate the intervals apart in this many groups of faces with similar
            estimates (Mondrian), so that the coverage holds for children and the old as well as
            on average; fewer groups when one would hold under 200 calibration faces; 1: one
            quantile for all.

    Examples:
        >>> EvaluationSettings(interval_level=1.0)
        Traceback (most recent call last):
        ...
        agemetric.errors.AgemetricError: interval_level must be in (0, 1), got 1.0
    """

    calibration: float = setting(0.1, within(lambda v: 0 <= v < 1, "in [0, 1)"))
    interval_level: float = setting(0.9, within(lambda v: 0 < v < 1, "in (0, 1)"))
    interval_groups: int = setting(6, least(1))

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class OutputSettings:
    """What a run writes.

    Attributes:
        out: the run folder (``None``: a new folder under ``runs/`` named by time, dataset and backbone).
        figures: write the run's figures (``figures/*.png``) and ``report.md``.
    """

    out: str | None = None
    figures: bool = True

    def __post_init__(self) -> None:
        check_fields(self)

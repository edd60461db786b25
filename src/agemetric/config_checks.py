"""What a run's settings may hold: the allowed choices, the size limits, the plugin options that
agemetric sets itself, and the checks `agemetric.config.RunConfig` runs when it is made.

Each check names the setting and what it expected, so that a bad value from a preset, a TOML file,
a command-line flag or ``--set`` is one clear line (an `AgemetricError`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING

from agemetric._text import shortened
from agemetric.errors import AgemetricError

if TYPE_CHECKING:
    from agemetric.config import RunConfig

#: the settings that take one of a few words
CHOICES = {
    "multitask": ("auto", "on", "off"),
    "bf16": ("auto", "on", "off"),
    "optimizer": ("adadelta", "adam", "sgd"),
    "split": ("random", "subject", "hash"),
    "lr_schedule": ("constant", "cosine"),
    "balance": ("off", "ages", "ages+groups"),
}

#: The largest values of the size settings: beyond them a run only runs out of memory.
LIMITS = {"image_size": 2048, "embedding_dim": 8192, "gender_dim": 8192, "batch_size": 65536}

#: what ``augment_options`` may set (keywords of `agemetric.data.transforms.augment()`)
AUGMENT_OPTIONS = {"flip", "max_shift", "scale", "rotate", "jitter", "style"}

#: plugin options that agemetric passes itself, from these settings: ``--set loss_options.margin=3``
#: would give the factory ``margin`` twice
RESERVED_OPTIONS = {
    "backbone_options": {"embedding_dim": "embedding_dim", "gender_dim": "gender_dim", "weights": "weights"},
    "loss_options": {"margin": "margin"},
    "miner_options": {"margin": "margin"},
    "retriever_options": {"k": "k"},
    "dataset_options": {"root": "data_dir"},
}


def check_options(table: str, options: dict) -> None:
    """Refuse a ``*_options`` entry that agemetric sets from its own setting, or an unknown augmentation option."""
    if table == "augment_options" and set(options) - AUGMENT_OPTIONS:
        unknown, known = sorted(set(options) - AUGMENT_OPTIONS), ", ".join(sorted(AUGMENT_OPTIONS))
        raise AgemetricError(f"augment_options: unknown option(s) {shortened(unknown)}; known: {known}")
    for key in options:
        setting = RESERVED_OPTIONS.get(table, {}).get(key)
        if setting is not None:
            raise AgemetricError(f"{table}.{key}: set it with the setting {setting!r}, not here")


def check(config: RunConfig) -> None:
    """Raise `AgemetricError` naming the first setting of ``config`` that holds a value it cannot take."""
    for table in (*RESERVED_OPTIONS, "augment_options"):
        check_options(table, getattr(config, table))
    _check_numbers(config)
    _check_fractions(config)
    _check_words(config)


def _least(config: RunConfig, name: str, least: float) -> None:
    value = getattr(config, name)
    if value is not None and value < least:  # None: unset (limit, threads, ...)
        raise AgemetricError(f"{name} must be >= {least}, got {shortened(value)}")


def _check_numbers(config: RunConfig) -> None:
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise AgemetricError(f"{f.name} must be a finite number, got {value}")
    for name in ("embedding_dim", "k", "image_size", "interval_groups", "threads"):
        _least(config, name, 1)
    for name, most in LIMITS.items():
        if getattr(config, name) > most:
            raise AgemetricError(f"{name} must be <= {most}, got {shortened(getattr(config, name))}")
    if config.batch_size < 2:
        raise AgemetricError(f"batch_size must be >= 2 (pairs need two images), got {config.batch_size}")
    _least(config, "limit", 2)
    for name in ("gender_dim", "margin", "gender_margin", "weight_decay", "epochs", "bn_recalibration"):
        _least(config, name, 0)
    if config.time_budget is not None and config.time_budget <= 0:
        raise AgemetricError(f"time_budget must be > 0 seconds, got {config.time_budget}")
    for name in ("lr", "head_lr"):
        value = getattr(config, name)
        if value is not None and value <= 0:  # head_lr None: lr
            raise AgemetricError(f"{name} must be > 0, got {value}")


def _check_fractions(config: RunConfig) -> None:
    if not 0 <= config.weight_average < 1:
        raise AgemetricError(f"weight_average must be a decay in [0, 1), got {config.weight_average}")
    if not 0 <= config.warmup < 1:
        raise AgemetricError(f"warmup must be a fraction in [0, 1), got {config.warmup}")
    if not 0 < config.test_fraction < 1:
        raise AgemetricError(f"test_fraction must be between 0 and 1, got {config.test_fraction}")
    if not 0 <= config.calibration < 1:
        raise AgemetricError(f"calibration must be in [0, 1), got {config.calibration}")
    if not 0 < config.interval_level < 1:
        raise AgemetricError(f"interval_level must be in (0, 1), got {config.interval_level}")


def _check_words(config: RunConfig) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", config.device):
        raise AgemetricError(f"device must be auto, cpu, cuda or cuda:N, got {shortened(config.device)}")
    for name, allowed in CHOICES.items():
        if (value := getattr(config, name)) not in allowed:
            raise AgemetricError(f"{name} must be one of {', '.join(allowed)}, got {shortened(value)}")

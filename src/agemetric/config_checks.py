"""What a setting may hold, declared with the setting. `setting()` makes a dataclass field that
carries its rules (`least`, `most`, `above`, `within`, `one_of`, `matching`), `options_table()` a
field for a table of plugin options; `check_fields()`, which every settings section calls when it
is made, checks each field's type and rules.

Each check names the setting and what it expected, so that a bad value from a preset, a TOML file,
a command-line flag, ``--set`` or ``model.pt`` is one clear line (an `AgemetricError`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any

from agemetric._text import shortened
from agemetric.errors import AgemetricError

#: the settings that take one of a few words
CHOICES = {
    "bf16": ("auto", "on", "off"),
    "optimizer": ("adadelta", "adam", "sgd"),
    "split": ("random", "subject", "hash"),
    "lr_schedule": ("constant", "cosine"),
    "balance": ("off", "ages", "ages+groups"),
}

#: what ``device`` may be: where training runs
DEVICES = r"auto|cpu|cuda(:\d+)?"

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

Rule = Callable[[str, Any], None]


def setting(default: Any, *rules: Rule) -> Any:
    """A dataclass field whose value `check_fields()` checks against ``rules`` (``None``, where the
    field allows it, passes every rule).

    Examples:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Settings:
        ...     k: int = setting(20, least(1))
        ...     def __post_init__(self):
        ...         check_fields(self)
        >>> Settings(k=0)
        Traceback (most recent call last):
        ...
        agemetric.errors.AgemetricError: k must be >= 1, got 0
    """
    return dataclasses.field(default=default, metadata={"rules": rules})


def options_table() -> Any:
    """A dataclass field for a table of plugin options (empty by default), checked by `plugin_options()`."""
    return dataclasses.field(default_factory=dict, metadata={"rules": (plugin_options,)})


def _failing(test: Callable[[Any], bool], wording: str, **limits: float) -> Rule:
    """A rule: ``test(value)`` must hold, else "NAME must be WORDING, got VALUE"."""

    def rule(name: str, value: Any) -> None:
        if not test(value):
            raise AgemetricError(f"{name} must be {wording}, got {shortened(value)}")

    rule.__dict__.update(limits)  # ``low`` / ``high``, read back by `bounds()`
    return rule


def least(bound: float, why: str = "") -> Rule:
    """At least ``bound`` (``why``: a reason shown after it)."""
    return _failing(lambda v: v >= bound, f">= {bound}{why}", low=bound)


def most(bound: float) -> Rule:
    """At most ``bound``."""
    return _failing(lambda v: v <= bound, f"<= {bound}", high=bound)


def above(bound: float, unit: str = "") -> Rule:
    """Strictly above ``bound``."""
    return _failing(lambda v: v > bound, f"> {bound}{unit}")


def within(test: Callable[[float], bool], wording: str) -> Rule:
    """``test(value)`` holds; ``wording`` says what that means (``"a fraction in [0, 1)"``)."""
    return _failing(test, wording)


def one_of(choices: tuple[str, ...]) -> Rule:
    """One of a few words."""
    return _failing(lambda v: v in choices, f"one of {', '.join(choices)}")


def matching(pattern: str, wording: str) -> Rule:
    """The whole text matches ``pattern``; ``wording`` says what that means."""
    return _failing(lambda v: re.fullmatch(pattern, v) is not None, wording)


def bounds(f: dataclasses.Field) -> tuple[float | None, float | None]:
    """The least and most a field's rules allow (``None``: no such rule)."""
    rules = f.metadata.get("rules", ())
    low = next((rule.low for rule in rules if hasattr(rule, "low")), None)
    return low, next((rule.high for rule in rules if hasattr(rule, "high")), None)


def plugin_options(name: str, options: Any) -> None:
    """A table of named options, without an option agemetric sets itself from a setting."""
    if not all(isinstance(key, str) for key in options):
        raise AgemetricError(f"{name} must be a table of named options, got {shortened(options)}")
    if name == "augment_options" and set(options) - AUGMENT_OPTIONS:
        unknown, known = sorted(set(options) - AUGMENT_OPTIONS), ", ".join(sorted(AUGMENT_OPTIONS))
        raise AgemetricError(f"augment_options: unknown option(s) {shortened(unknown)}; known: {known}")
    for key in options:
        owner = RESERVED_OPTIONS.get(name, {}).get(key)
        if owner is not None:
            raise AgemetricError(f"{name}.{key}: set it with the setting {owner!r}, not here")


@functools.cache
def field_types(cls: type) -> dict[str, tuple[type, bool]]:
    """``{field: (base type, whether None is allowed)}`` of a settings dataclass."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint)
        optional = isinstance(hint, types.UnionType) and type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else hint
        out[name] = (typing.get_origin(base) or base, optional)
    return out


def _check_type(name: str, value: Any, base: type) -> None:
    if base is bool:
        if not isinstance(value, bool):
            raise AgemetricError(f"{name} must be true or false, got {shortened(value)}")
        return
    fits = isinstance(value, base) and not isinstance(value, bool)
    if base is float:
        fits = isinstance(value, int | float) and not isinstance(value, bool)
    if not fits:
        raise AgemetricError(f"{name} expects {base.__name__}, got {shortened(value)}")
    if base is float and not math.isfinite(value):
        raise AgemetricError(f"{name} must be a finite number, got {value}")


def check_fields(settings: Any) -> None:
    """Raise `AgemetricError` naming the first field of the dataclass ``settings`` whose value has
    the wrong type or breaks one of its declared rules."""
    types_ = field_types(type(settings))
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name in types_:
            base, optional = types_[f.name]
            if value is None and optional:
                continue
            _check_type(f.name, value, base)
        for rule in f.metadata.get("rules", ()):
            rule(f.name, value)

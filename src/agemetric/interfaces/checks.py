"""The checks the interfaces run on what passes through them; each error says what was expected.

Public, so that plugins and the testing kit check their own inputs the same way.
"""

from __future__ import annotations

import math

import torch

from agemetric.errors import PluginError
from agemetric.types import Pairs, Samples, Triplets


def describe(component: object) -> str:
    """How messages name a component: ``loss 'my-loss' (plugin 'my_plugin', MyLoss)``.

    Components built by `agemetric.plugins.create()` carry their registry entry; others are
    named by their class.
    """
    entry = getattr(component, "_agemetric_entry", None)
    if entry is None:
        return type(component).__name__
    kind, name, plugin = entry
    return f"{kind} {name!r} (plugin {plugin!r}, {type(component).__name__})"


def registered_name(component: object) -> str:
    """The registry name a component was created under (its class name if not created by name)."""
    entry = getattr(component, "_agemetric_entry", None)
    return type(component).__name__ if entry is None else entry[1]


def check_tensor(who: str, name: str, t: object, ndim: int, *, floating: bool | None = None) -> torch.Tensor:
    """Raise `PluginError` unless ``t`` is a tensor with ``ndim`` dimensions."""
    if not isinstance(t, torch.Tensor):
        raise PluginError(f"{who}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != ndim:
        raise PluginError(f"{who}: {name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if floating is True and not t.is_floating_point():
        raise PluginError(f"{who}: {name} must be a floating-point tensor, got {t.dtype}")
    if floating is False and t.dtype != torch.int64:
        raise PluginError(f"{who}: {name} must be int64, got {t.dtype}")
    return t


def check_rows(who: str, name: str, t: torch.Tensor, rows: int) -> None:
    """Raise unless ``t`` has ``rows`` rows."""
    if t.shape[0] != rows:
        raise PluginError(f"{who}: {name} must have {rows} rows, got shape {tuple(t.shape)}")


def check_finite(who: str, name: str, t: torch.Tensor) -> None:
    """Raise unless every value of ``t`` is a finite number (no NaN, no infinity)."""
    if t.is_floating_point() and not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise PluginError(f"{who}: {name} must be finite numbers; {bad} of {t.numel()} are not")


def check_index_range(who: str, name: str, idx: torch.Tensor, size: int) -> None:
    """Raise unless every index lies in ``[0, size)``."""
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
        raise PluginError(f"{who}: {name} must lie in [0, {size}), got range [{int(idx.min())}, {int(idx.max())}]")


def positive_int(name: str, value: object) -> int:
    """``value`` as an int; `ValueError` naming the option unless it is a whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


#: The index fields of each hand-over type.
FIELDS = {Pairs: ("first", "second"), Triplets: ("anchor", "positive", "negative"), Samples: ("index",)}


def type_names(types: type | tuple[type, ...]) -> str:
    """``Pairs`` or ``Pairs or Triplets``: for messages about what a loss accepts."""
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def check_indices(who: str, indices: object, expected: type | tuple[type, ...], batch_size: int) -> None:
    """Raise `PluginError` unless ``indices`` is a well-formed ``expected`` (a type or a tuple of types)."""
    if not isinstance(indices, expected):
        raise PluginError(f"{who}: expected {type_names(expected)}, got {type(indices).__name__}")
    fields = FIELDS[type(indices)]
    n = None
    for field in fields:
        t = check_tensor(who, field, getattr(indices, field), 1, floating=False)
        if n is not None and t.numel() != n:
            raise PluginError(f"{who}: index tensors must have equal lengths, got {t.numel()} != {n}")
        n = t.numel()
        check_index_range(who, field, t, batch_size)


def check_pair(miner: object, loss: object, task: str = "") -> None:
    """Refuse a miner whose output the loss does not take (``task``: a prefix for the message,
    e.g. ``"gender task: "``)."""
    if not loss.takes(miner.produces):
        raise PluginError(
            f"{task}{describe(miner)} produces {miner.produces.__name__} but {describe(loss)} accepts "
            f"{type_names(loss.accepts)}; choose a matching pair"
        )


def check_margin(margin: object) -> float:
    """``margin`` as a float: a finite number of years, 0 or more (NaN would make every pair dissimilar)."""
    try:
        value = float(margin)
    except (TypeError, ValueError):
        raise TypeError(f"margin must be a number of years, got {type(margin).__name__}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"margin must be a finite number of years >= 0, got {margin}")
    return value

"""Shared input/output checks for the interfaces; each error says what was expected."""

from __future__ import annotations

import torch

from agemetric.errors import PluginError


def describe(component: object) -> str:
    """How messages name a component: ``loss 'my-loss' (plugin 'my_plugin', MyLoss)``.

    Components built by [`agemetric.plugins.create()`][agemetric.plugins.create] carry their registry entry; others are
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


def check_index_range(who: str, name: str, idx: torch.Tensor, size: int) -> None:
    """Raise unless every index lies in ``[0, size)``."""
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
        raise PluginError(f"{who}: {name} must lie in [0, {size}), got range [{int(idx.min())}, {int(idx.max())}]")

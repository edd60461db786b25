"""A package's public names imported on first use (PEP 562 ``__getattr__``), so that importing
the package loads none of the modules behind them (torch among them)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_getattr(package: str, names: dict[str, str], submodules: tuple[str, ...] = ()) -> Callable[[str], object]:
    """The module ``__getattr__`` of ``package``: each of ``names`` (public name -> the module that
    defines it) imported when first asked for and kept in the package (later look-ups skip the
    function); each of ``submodules`` imported as ``package.name``."""

    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")  # the import system sets the attribute
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__

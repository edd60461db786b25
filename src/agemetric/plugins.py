"""Plugin discovery and the registries of backbones, losses, miners, retrievers and datasets.

The default plugins are loaded by import path (:data:`DEFAULT_PLUGINS`); third-party plugins
are found through the ``agemetric`` entry-point group. ``AGEMETRIC_LOAD_PLUGINS`` (a comma
list of entry-point names; empty = none) narrows which third-party plugins load.
Everything is lazy: nothing is imported until a registry is first used.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from agemetric import __version__, hookspecs
from agemetric.errors import PluginError

ENTRY_POINT_GROUP = "agemetric"

DEFAULT_PLUGINS = (
    "agemetric.default_plugins.small_cnn",
    "agemetric.default_plugins.torchvision_backbones",
    "agemetric.default_plugins.revised_contrastive",
    "agemetric.default_plugins.all_pairs",
    "agemetric.default_plugins.l1_knn",
    "agemetric.default_plugins.baselines",
    "agemetric.default_plugins.datasets",
    "agemetric.default_plugins.framing",
)

#: kind -> the hook that fills its registry.
KINDS = {
    "backbone": "register_backbones",
    "loss": "register_losses",
    "miner": "register_miners",
    "retriever": "register_retrievers",
    "dataset": "register_datasets",
    "framer": "register_framers",
}

pm = pluggy.PluginManager("agemetric")
pm.add_hookspecs(hookspecs)

_loaded = False
_versions: dict[str, str] = {}  # entry-point name -> its distribution's version
_registries: dict[str, dict[str, Entry]] = {}
#: Plugins that failed to import: (name, error message); reported by ``agemetric plugins``.
load_errors: list[tuple[str, str]] = []


@dataclass(frozen=True)
class Entry:
    """A registered factory: its display name, the factory, and the plugin that registered it."""

    name: str
    factory: Callable
    plugin: str


@dataclass
class PluginInfo:
    """What ``agemetric plugins`` shows for one plugin."""

    name: str
    version: str | None
    hooks: list[str]
    registered: dict[str, list[str]] = field(default_factory=dict)


def canonical(name: str) -> str:
    """The registry key of a name: case and ``-``/``_`` do not matter.

    Example:
        >>> canonical("Inception-V3") == canonical("inception_v3")
        True
    """
    return name.strip().lower().replace("-", "_")


def default_name(module_name: str) -> str:
    """The plugin name of a default plugin module: ``agemetric.<module>``."""
    return "agemetric." + module_name.rsplit(".", 1)[1]


def load_plugins() -> pluggy.PluginManager:
    """Register the default plugins and the installed third-party ones (once)."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        if not pm.is_registered(module):
            pm.register(module, name=default_name(module_name))
    wanted = os.environ.get("AGEMETRIC_LOAD_PLUGINS")
    allowed = None if wanted is None else {canonical(n) for n in wanted.split(",") if n.strip()}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and canonical(ep.name) not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            load_errors.append((ep.name, f"{type(exc).__name__}: {exc}"))
            continue
        pm.register(plugin, name=ep.name)
        if ep.dist is not None:
            _versions[ep.name] = ep.dist.version
    pm.check_pending()
    return pm


def _build(kind: str) -> dict[str, Entry]:
    registry: dict[str, Entry] = {}
    caller = getattr(load_plugins().hook, KINDS[kind])
    for impl in caller.get_hookimpls():  # registration order: default plugins first

        def register(name: str, factory: Callable, _plugin: str = impl.plugin_name) -> None:
            if not isinstance(name, str) or not name.strip():
                raise PluginError(f"plugin {_plugin!r} registered a {kind} with an empty name")
            key = canonical(name)
            if key in registry:
                raise PluginError(
                    f"{kind} name {name!r} is registered twice: by plugin "
                    f"{registry[key].plugin!r} and by plugin {_plugin!r}"
                )
            registry[key] = Entry(name, factory, _plugin)

        try:
            impl.function(register=register)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin {impl.plugin_name!r} failed in {KINDS[kind]}: {type(exc).__name__}: {exc}"
            ) from exc
    return registry


def registry(kind: str) -> dict[str, Entry]:
    """The registry of one kind (``"backbone"``, ``"loss"``, ...): canonical name -> Entry."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if kind not in _registries:
        _registries[kind] = _build(kind)
    return _registries[kind]


def reset() -> None:
    """Forget the built registries (after registering or unregistering a plugin)."""
    _registries.clear()


def list_names(kind: str) -> list[str]:
    """The display names registered for ``kind``, sorted."""
    return sorted(e.name for e in registry(kind).values())


def get_entry(kind: str, name: str) -> Entry:
    """The entry for ``name``, or a :class:`PluginError` listing the known names."""
    entry = registry(kind).get(canonical(name))
    if entry is None:
        known = ", ".join(list_names(kind)) or "(none)"
        raise PluginError(f"unknown {kind} {name!r}; known: {known}")
    return entry


def create(kind: str, name: str, **kwargs):
    """Build a registered component by name; ``None``-valued kwargs are dropped (timm habit).

    Example:
        >>> loss = create("loss", "revised-contrastive", margin=4)
        >>> type(loss).__name__
        'RevisedContrastiveLoss'
    """
    entry = get_entry(kind, name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        component = entry.factory(**kwargs)
    except (TypeError, ValueError) as exc:
        where = f"{kind} {entry.name!r} (plugin {entry.plugin!r})"
        raise PluginError(f"cannot create {where} with {kwargs}: {exc}") from exc
    try:  # lets error messages name the plugin (see agemetric.interfaces._checks.describe)
        object.__setattr__(component, "_agemetric_entry", (kind, entry.name, entry.plugin))
    except (AttributeError, TypeError):
        pass  # a factory returned something that takes no attributes; messages fall back to the class
    return component


def plugin_info() -> list[PluginInfo]:
    """Each registered plugin with its version, hooks and the names it registered."""
    load_plugins()
    infos = {}
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        version = __version__ if name in {default_name(m) for m in DEFAULT_PLUGINS} else _versions.get(name)
        infos[name] = PluginInfo(name, version, hooks)
    for kind in KINDS:
        for entry in registry(kind).values():
            infos[entry.plugin].registered.setdefault(kind, []).append(entry.name)
    return list(infos.values())

"""Plugin discovery and the registries of backbones, losses, miners, retrievers and datasets.

The default plugins are loaded by import path (`DEFAULT_PLUGINS`); third-party plugins
are found through the ``agemetric`` entry-point group. ``AGEMETRIC_LOAD_PLUGINS`` (a comma
list of entry-point names; empty = none) narrows which third-party plugins load.
Everything is lazy: nothing is imported until a registry is first used.

A broken plugin never takes the others down: an import error, or a hook that raises, is
recorded in `load_errors` (shown by ``agemetric plugins`` and in "unknown name" errors) and
that plugin's registrations are skipped. ``AGEMETRIC_TRACE_HOOKS=1`` (or ``agemetric
--trace-hooks``) prints every plugin load, hook call and component creation to stderr.
"""

from __future__ import annotations

import difflib
import importlib
import linecache
import os
import sys
import time
import traceback
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from agemetric import hookspecs
from agemetric._stack import AGEMETRIC_FILES
from agemetric._text import SHOWN, printable, shortened
from agemetric._version import __version__
from agemetric.errors import PluginError

ENTRY_POINT_GROUP = "agemetric"
#: The environment variable naming the third-party plugins to load (comma-separated; unset: all).
ENV_FILTER = "AGEMETRIC_LOAD_PLUGINS"

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
_third_party_loaded = False
_versions: dict[str, str] = {}  # entry-point name -> its distribution's version
_registries: dict[str, dict[str, Entry]] = {}
#: Plugins that failed to import or whose hook raised: (plugin name, error message).
load_errors: list[tuple[str, str]] = []
#: Installed plugins that ``AGEMETRIC_LOAD_PLUGINS`` did not name, so were not loaded.
left_out: list[str] = []
#: plugin name -> the commands it added (filled by the ``agemetric`` command line when it starts).
commands: dict[str, list[str]] = {}

_tracing = os.environ.get("AGEMETRIC_TRACE_HOOKS", "").strip().lower() not in ("", "0", "false", "no", "off")


def set_tracing(enabled: bool) -> None:
    """Print plugin loads, hook calls and component creation to stderr (``--trace-hooks``)."""
    global _tracing
    _tracing = bool(enabled)


def trace(message: str) -> None:
    """One ``[agemetric hooks]`` line on stderr when tracing is on."""
    if _tracing:
        print(f"[agemetric hooks] {message}", file=sys.stderr, flush=True)


def _failed(plugin: str, message: str) -> None:
    if (plugin, message) not in load_errors:  # a registry rebuilt calls the hooks again: said once
        load_errors.append((plugin, message))
    trace(f"plugin {plugin!r} FAILED: {message}")


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
    #: why it, or some of its names, failed to load (`load_errors`)
    problems: list[str] = field(default_factory=list)


def canonical(name: str) -> str:
    """The registry key of a name: case and ``-``/``_`` do not matter.

    Examples:
        >>> canonical("Inception-V3") == canonical("inception_v3")
        True
    """
    return name.strip().lower().replace("-", "_")


def default_name(module_name: str) -> str:
    """The plugin name of a default plugin module: ``agemetric.<module>``."""
    return "agemetric." + module_name.rsplit(".", 1)[1]


#: The plugin names of the default plugins: the names they register are never taken by another plugin.
BUILT_IN = frozenset(default_name(module) for module in DEFAULT_PLUGINS)


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
    _load_third_party()
    return pm


def _load_third_party() -> None:
    """Register the installed third-party plugins (once): all that ``register_commands`` needs, so
    that the command line starts without importing the default plugins (and torch)."""
    global _third_party_loaded
    if _third_party_loaded:
        return
    _third_party_loaded = True
    wanted = os.environ.get(ENV_FILTER)
    allowed = None if wanted is None else {canonical(n): n.strip() for n in wanted.split(",") if n.strip()}
    installed = metadata.entry_points(group=ENTRY_POINT_GROUP)
    for key, name in (allowed or {}).items():
        if key not in {canonical(ep.name) for ep in installed}:
            known = ", ".join(sorted(ep.name for ep in installed)) or "none"
            _failed(ENV_FILTER, f"names {shortened(name)}, which no installed plugin is (installed: {known})")
    for ep in installed:
        if allowed is not None and canonical(ep.name) not in allowed:
            left_out.append(ep.name)
            continue
        if ep.name in BUILT_IN:  # it would take the place of one of agemetric's own plugins
            _failed(ep.name, f"entry point {ep.name!r} = {ep.value!r} has the name of one of agemetric's own plugins")
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        started = time.perf_counter()
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            _failed(ep.name, f"import of {ep.value!r} failed: {type(exc).__name__}: {exc}")
            continue
        if not _register_checked(plugin, ep.name, ep.value):
            continue
        if ep.dist is not None:
            _versions[ep.name] = ep.dist.version
        dist = f" ({ep.dist.name} {ep.dist.version})" if ep.dist is not None else ""
        trace(f"loaded plugin {ep.name!r} = {ep.value}{dist} in {1000 * (time.perf_counter() - started):.1f} ms")


def _register_checked(plugin, name: str, where: str) -> bool:
    """Register ``plugin``; one whose hooks are not agemetric's (a misspelt name, wrong arguments)
    is unregistered again and recorded in `load_errors`. Returns whether it stays."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        _failed(name, f"{where!r} does not fit agemetric's hooks: {exc}")
        return False
    unknown = sorted(h.name for h in pm.get_hookcallers(plugin) or [] if not h.has_spec())
    if unknown:
        pm.unregister(plugin)
        hooks = sorted(n for n in dir(hookspecs) if n.startswith("register_"))
        named = []
        for hook in unknown:
            close = difflib.get_close_matches(hook, hooks, n=1)
            named.append(f"{hook} (did you mean {close[0]}?)" if close else hook)
        _failed(name, f"{where!r} implements {', '.join(named)}, which is not an agemetric hook; skipped")
        return False
    return True


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register ``plugin`` in this process as an installed plugin is through its entry point: a
    module, or any object, with ``@agemetric.hookimpl`` functions (for a notebook or a test). Its
    names can be used at once.

    Args:
        plugin: the module or object.
        name: its plugin name (default: the module's ``__name__``).

    Raises:
        PluginError: its hooks are not agemetric's (a misspelt hook name, other arguments), or
            the name is taken.

    Examples:
        >>> import types
        >>> from agemetric import hookimpl
        >>> from agemetric.losses import RevisedContrastiveLoss
        >>> @hookimpl
        ... def register_losses(register):
        ...     register("my-loss", RevisedContrastiveLoss)
        >>> register_plugin(types.SimpleNamespace(register_losses=register_losses), "mine")
        >>> type(create("loss", "my-loss", margin=2)).__name__
        'RevisedContrastiveLoss'
        >>> unregister_plugin("mine")
        >>> "my-loss" in list_names("loss")
        False
    """
    load_plugins()
    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    if pm.get_plugin(name) is not None:
        raise PluginError(f"plugin name {name!r} is taken; give another name")
    if pm.is_registered(plugin):
        raise PluginError(f"plugin {name!r} is registered already, as {pm.get_name(plugin)!r}")
    errors = len(load_errors)
    if not _register_checked(plugin, name, name):
        _, message = load_errors.pop(errors)
        raise PluginError(f"plugin {name!r}: {message}")
    reset()
    for kind in KINDS:  # build the registries now, to say what did not register
        registry(kind)
    for message in dict.fromkeys(message for plugin_name, message in load_errors if plugin_name == name):
        warnings.warn(f"plugin {name!r}: {message}", stacklevel=2)


def unregister_plugin(name: str) -> None:
    """Take back a plugin `register_plugin()` registered (its names are gone at once)."""
    if pm.get_plugin(name) is None:
        raise PluginError(f"no plugin named {name!r} is registered")
    if name in BUILT_IN:
        raise PluginError(f"plugin {name!r} is one of agemetric's own, which stay registered")
    pm.unregister(name=name)
    reset()


def call_each(
    hook: str,
    kwargs: Callable[[str], dict] | dict,
    committed: Callable[[str], str] | None = None,
) -> None:
    """Call every implementation of ``hook`` in registration order (default plugins first).

    A plugin whose implementation raises is recorded in `load_errors` and skipped; the
    others still run. Each successful call is traced.

    Args:
        hook: the hook's name.
        kwargs: the hook's arguments, or a function of the plugin name that returns them.
        committed: called with the plugin name after its implementation returned; its text is
            added to the trace line.
    """
    if hook == "register_commands":  # agemetric's own plugins add no commands
        _load_third_party()
    else:
        load_plugins()
    impls = getattr(pm.hook, hook).get_hookimpls()
    for impl in sorted(impls, key=lambda impl: impl.plugin_name not in BUILT_IN):  # stable: the defaults first
        started = time.perf_counter()
        args = kwargs(impl.plugin_name) if callable(kwargs) else kwargs
        try:
            impl.function(**{name: args[name] for name in impl.argnames})
        except PluginError:
            raise
        except Exception as exc:  # skip this plugin, keep the others
            _failed(impl.plugin_name, f"{hook} raised {type(exc).__name__}: {exc}")
            continue
        note = committed(impl.plugin_name) if committed is not None else ""
        trace(f"{hook} <- plugin {impl.plugin_name!r}{note} ({1000 * (time.perf_counter() - started):.1f} ms)")


#: What building a registry says of a name (in `load_errors`): said again when it is rebuilt.
REGISTRY_ERRORS = ("is registered twice", "is agemetric's own")

#: (kind, canonical name) -> the plugins that registered it, when more than one did
clashes: dict[tuple[str, str], list[str]] = {}


class _Registrar:
    """The ``register`` callback handed to one plugin's hook; entries join the registry only if the hook returns."""

    def __init__(self, kind: str, plugin: str, registry: dict[str, Entry]):
        self.kind, self.plugin, self.registry, self.pending = kind, plugin, registry, {}
        self.clashing: list[str] = []
        self.displaced: list[Entry] = []  # another plugin's registrations of agemetric's own names
        self.repeated: list[str] = []  # names this plugin registered again: the first registration is kept

    def __call__(self, name: str, factory: Callable) -> None:
        if not isinstance(name, str) or not name.strip():
            raise PluginError(f"plugin {self.plugin!r} registered a {self.kind} with an empty name")
        if not callable(factory):
            raise PluginError(f"plugin {self.plugin!r} registered {self.kind} {name!r} with a non-callable factory")
        key = canonical(name)
        if key in self.pending:  # its own name again (perhaps spelt otherwise): the first one stays
            self.repeated.append(name)
            return
        if key in self.registry and not (self.plugin in BUILT_IN and self.registry[key].plugin not in BUILT_IN):
            self.clashing.append(key)  # another plugin has it: refused when asked for, the rest works
            return
        if key in self.registry:  # a plugin called before agemetric's own took its name: it goes back
            self.displaced.append(self.registry[key])
        self.pending[key] = Entry(name, factory, self.plugin)


def _taken_back(kind: str, name: str, owner: str, plugin: str) -> None:
    """Say that ``plugin``'s registration of ``name``, the built-in ``owner``'s, is skipped."""
    _failed(
        plugin,
        f"{kind} name {name!r} is agemetric's own (plugin {owner!r}); plugin {plugin!r}'s registration of it is "
        "skipped: register yours under another name",
    )


def _build(kind: str) -> dict[str, Entry]:
    registry: dict[str, Entry] = {}
    current: dict[str, _Registrar] = {}

    def start(plugin: str) -> dict:
        current[plugin] = _Registrar(kind, plugin, registry)
        return {"register": current[plugin]}

    def commit(plugin: str) -> str:  # only a hook that returned adds its names
        registry.update(current[plugin].pending)
        for entry in current[plugin].displaced:
            _taken_back(kind, entry.name, plugin, entry.plugin)
        for name in current[plugin].repeated:
            first = shortened(current[plugin].pending[canonical(name)].name)
            again = f"{kind} name {shortened(name)} is registered twice by plugin {plugin!r} (first as {first})"
            _failed(plugin, f"{again}; the second registration is skipped")
        for key in current[plugin].clashing:
            owner = registry[key].plugin
            if owner in BUILT_IN:  # agemetric's own name: it stays agemetric's
                _taken_back(kind, registry[key].name, owner, plugin)
                continue
            owners = clashes.setdefault((kind, key), [owner])
            owners.append(plugin)
            _failed(
                plugin,
                f"{kind} name {registry[key].name!r} is registered twice: by plugin {owners[0]!r} and by "
                f"plugin {plugin!r} (neither is used)",
            )
        return ": " + (", ".join(e.name for e in current[plugin].pending.values()) or "-")

    call_each(KINDS[kind], start, commit)
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
    for key in list(clashes):
        del clashes[key]
    load_errors[:] = [e for e in load_errors if not any(said in e[1] for said in REGISTRY_ERRORS)]


def list_names(kind: str) -> list[str]:
    """The display names registered for ``kind``, sorted.

    Examples:
        >>> from agemetric import list_names
        >>> {"revised-contrastive", "dex"} <= set(list_names("loss"))
        True
        >>> "l1-knn" in list_names("retriever")
        True
    """
    return sorted(e.name for e in registry(kind).values())


def get_entry(kind: str, name: str) -> Entry:
    """The entry for ``name``, or a `PluginError` listing the known names."""
    entry = registry(kind).get(canonical(name))
    owners = clashes.get((kind, canonical(name)))
    if owners:
        raise PluginError(
            f"{kind} name {shortened(name)} is registered twice: by plugin {owners[0]!r} and by plugin {owners[1]!r}; "
            "uninstall one of them, or list the third-party plugins to load in AGEMETRIC_LOAD_PLUGINS "
            "(comma-separated; the built-in ones always load)"
        )
    if entry is None:
        known = ", ".join(list_names(kind)) or "(none)"
        broken = "".join(f"; plugin {p!r} failed to load ({m})" for p, m in load_errors if p != ENV_FILTER)
        if left_out:
            broken += f"; not loaded, as {ENV_FILTER}={os.environ.get(ENV_FILTER, '')!r} leaves them out: "
            broken += ", ".join(left_out)
        close = difflib.get_close_matches(name, list_names(kind), n=1) if len(name) <= SHOWN else []
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PluginError(f"unknown {kind} {shortened(name)}; {hint}known: {known}{broken}")
    return entry


def create(kind: str, name: str, /, **kwargs):
    """Build a registered component by name; ``None``-valued kwargs are dropped (timm habit).

    Examples:
        >>> loss = create("loss", "revised-contrastive", margin=4)
        >>> type(loss).__name__
        'RevisedContrastiveLoss'
    """
    entry = get_entry(kind, name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    trace(f"create {kind} {entry.name!r} (plugin {entry.plugin!r}) with {kwargs}")
    try:
        component = entry.factory(**kwargs)
    except PluginError:  # already says which plugin and what was expected
        raise
    except (TypeError, ValueError, OSError) as exc:  # OSError: e.g. a root path too long for the system
        where = f"{kind} {entry.name!r} (plugin {entry.plugin!r})"
        given = "{" + ", ".join(f"{shortened(k)}: {shortened(v)}" for k, v in kwargs.items()) + "}"
        reason = printable(str(exc))
        if isinstance(exc, OSError) and exc.strerror:  # its file name said once, shortened
            reason = exc.strerror + (f": {shortened(exc.filename)}" if exc.filename else "")
        reason = reason if len(reason) <= 4 * SHOWN else reason[: 4 * SHOWN - 3] + "..."  # it may echo a value
        raise PluginError(f"cannot create {where} with {given}: {reason}") from exc
    try:  # lets error messages name the plugin (see agemetric.interfaces.checks.describe)
        object.__setattr__(component, "_agemetric_entry", (kind, entry.name, entry.plugin))
    except (AttributeError, TypeError):
        pass  # a factory returned something that takes no attributes; messages fall back to the class
    return component


@dataclass(frozen=True)
class Blame:
    """Where in a third-party plugin's code an exception was raised (see `blame()`)."""

    plugin: str
    version: str | None
    path: str
    line: int
    function: str

    def __str__(self) -> str:
        version = f" {self.version}" if self.version else ""
        return f"plugin {self.plugin!r}{version} ({self.path}:{self.line}, in {self.function})"

    def source(self) -> str:
        """The line of code itself (``""`` when the file cannot be read)."""
        return linecache.getline(self.path, self.line).strip()


def blame(exc: BaseException) -> Blame | None:
    """Which third-party plugin's code raised ``exc`` (``plugin 'x' 1.0 (x/losses.py:12, in
    compute)`` as text): the deepest frame of its traceback inside a plugin's package, or ``None``
    when no plugin's code is on it, or when agemetric's own code is below that frame (an error of
    agemetric's own, or of a library agemetric calls, keeps its traceback).

    Examples:
        >>> blame(ValueError("raised here, by no plugin")) is None
        True
    """
    roots = _plugin_roots()
    found = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        path = os.path.abspath(frame.f_code.co_filename)
        plugin = next((name for root, name in roots.items() if path == root or path.startswith(root + os.sep)), None)
        if plugin is not None:
            found = Blame(plugin, _versions.get(plugin), path, line, frame.f_code.co_name)
        elif found is not None and path.startswith(AGEMETRIC_FILES):
            found = None  # agemetric's code, called by the plugin, raised it
    return found


def _plugin_roots() -> dict[str, str]:
    """The folder (or single file) of each third-party plugin's package -> the plugin's name:
    its module's (or, for a plugin object, its class's module's) top-level package, or, inside a
    namespace package (which has no file), the first package below it that has one. agemetric's
    own folder and the standard library's modules are never one."""
    roots = {}
    for name, plugin in pm.list_name_plugin():
        module = plugin.__name__ if isinstance(plugin, types.ModuleType) else getattr(plugin, "__module__", None)
        if name in BUILT_IN or not isinstance(module, str) or module.partition(".")[0] in sys.stdlib_module_names:
            continue
        parts = module.split(".")
        files = (getattr(sys.modules.get(".".join(parts[: i + 1])), "__file__", None) for i in range(len(parts)))
        file = next((f for f in files if f), None)
        if not file:
            continue
        file = os.path.abspath(file)
        root = os.path.dirname(file) if os.path.basename(file) == "__init__.py" else file
        if not (root + os.sep).startswith(AGEMETRIC_FILES) and not AGEMETRIC_FILES.startswith(root + os.sep):
            roots[root] = name
    return roots


def plugin_info() -> list[PluginInfo]:
    """Each plugin with its version, hooks, the names it registered and what failed (a plugin
    that failed to import is listed with its problem alone)."""
    load_plugins()
    infos = {}
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0] not in BUILT_IN):
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        version = __version__ if name in BUILT_IN else _versions.get(name)
        infos[name] = PluginInfo(name, version, hooks)
    for kind in KINDS:
        for entry in registry(kind).values():
            infos[entry.plugin].registered.setdefault(kind, []).append(entry.name)
    for plugin, names in commands.items():
        if plugin in infos:
            infos[plugin].registered["command"] = list(names)
    for plugin, message in load_errors:
        if plugin == ENV_FILTER:  # not a plugin: said on its own
            continue
        infos.setdefault(plugin, PluginInfo(plugin, _versions.get(plugin), [])).problems.append(message)
    return list(infos.values())

"""One frozen dataclass in sections describes a run; presets, TOML files and ``--set`` overrides build it.

Resolution order (later wins): the ``RunConfig`` defaults < the preset < the ``--config`` file <
explicit command-line options < ``--set key=value``. A preset's image size that is too small for
the chosen backbone (``--backbone inception_v3`` under the quick preset) is raised to the
backbone's minimum; an explicit one is never changed (too small is an error).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agemetric._text import SHOWN, shortened
from agemetric.config_checks import check_fields, field_types
from agemetric.errors import AgemetricError
from agemetric.presets import PRESETS
from agemetric.settings import DataSettings, EvaluationSettings, OutputSettings, TrainingSettings
from agemetric.spec import ModelSpec


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run, in sections that follow the pipeline. The defaults are the
    paper's method (see the method's decisions on the documentation's method page) with one
    measured change, Adam instead of Adadelta (`agemetric.settings.TrainingSettings`).

    Every setting also has a flat name, its field's name (``epochs``, ``k``, ``data_dir``): the
    names of presets, ``--set``, flat config files and `from_flat()`. `SECTION_OF` says which
    section holds each.

    Attributes:
        model: the model's parts and how it sees images (`agemetric.spec.ModelSpec`; what ``model.pt`` keeps).
        data: which faces, and how they are split (`agemetric.settings.DataSettings`).
        training: how the model trains (`agemetric.settings.TrainingSettings`).
        evaluation: the calibrated prediction intervals (`agemetric.settings.EvaluationSettings`).
        output: what the run writes, and where (`agemetric.settings.OutputSettings`).
        seed: seeds the split, the initialisation and the batch order.

    Examples:
        >>> config = RunConfig.from_flat(backbone="resnet18", weights="none", epochs=2)
        >>> config.model.margin, config.model.k, config.training.epochs
        (4.0, 20, 2)
        >>> config.replace(k=10).model.k
        10
        >>> RunConfig.from_flat(batch_size=1)
        Traceback (most recent call last):
        ...
        agemetric.errors.AgemetricError: batch_size must be >= 2 (pairs need two images), got 1
    """

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSettings = field(default_factory=DataSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)

    def __getattr__(self, name: str) -> Any:
        """Only for a name that is not an attribute: a setting's flat name says where it lives."""
        section = SECTION_OF.get(name)
        if section is not None:
            raise AttributeError(f"RunConfig has no attribute {name!r}; the setting is config.{section}.{name}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def from_flat(cls, **settings: Any) -> RunConfig:
        """A config from flat settings (``epochs=3, k=10``); the rest keep their defaults. Each
        value is converted as a ``--set`` value is (`coerce()`)."""
        return cls().replace(**settings)

    def replace(self, **settings: Any) -> RunConfig:
        """This config with some flat settings changed (``config.replace(epochs=3, limit=None)``);
        the new values are converted as `from_flat()` converts them."""
        changed = {key: coerce(key, value) for key, value in settings.items()}
        sections = {}
        for name in SECTIONS:
            mine = {key: value for key, value in changed.items() if SECTION_OF.get(key) == name}
            if mine:
                sections[name] = dataclasses.replace(getattr(self, name), **mine)
        top = {key: value for key, value in changed.items() if key not in SECTION_OF}
        return dataclasses.replace(self, **sections, **top)

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name, ``None`` values dropped."""
        flat = {"seed": self.seed}
        for name in SECTIONS:
            flat.update(dataclasses.asdict(getattr(self, name)))
        return {key: value for key, value in flat.items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        """Plain data in sections (what ``config.toml`` holds), ``None`` values dropped (TOML has no null)."""
        out: dict[str, Any] = {"seed": self.seed}
        for name in SECTIONS:
            values = dataclasses.asdict(getattr(self, name))
            out[name] = {key: value for key, value in values.items() if value is not None}
        return out


#: the sections of `RunConfig`, by attribute
SECTIONS: dict[str, type] = {
    "model": ModelSpec,
    "data": DataSettings,
    "training": TrainingSettings,
    "evaluation": EvaluationSettings,
    "output": OutputSettings,
}

#: the alias table: the section that holds each flat setting (``"epochs": "training"``)
SECTION_OF: dict[str, str] = {f.name: name for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)}

#: every setting's flat name
SETTINGS: tuple[str, ...] = (*SECTION_OF, "seed")


def default(key: str) -> Any:
    """The default of the flat setting ``key`` (``default("epochs")`` is 275)."""
    cls = SECTIONS[SECTION_OF[key]] if key in SECTION_OF else RunConfig
    f = next(f for f in dataclasses.fields(cls) if f.name == key)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


@functools.cache
def _types() -> dict[str, tuple[type, bool]]:
    """``{flat name: (base type, whether None is allowed)}`` of every setting."""
    out = {"seed": field_types(RunConfig)["seed"]}
    for cls in SECTIONS.values():
        out.update(field_types(cls))
    return out


def coerce(key: str, value: Any) -> Any:
    """Convert ``value`` (a string from ``--set`` or a TOML value) to the type of the flat setting
    ``key``. An optional true-or-false setting (``multitask``) also takes ``auto`` for ``None``."""
    types_ = _types()
    if key not in types_:
        close = difflib.get_close_matches(key, types_, n=1) if len(key) <= SHOWN else []  # a long key: no match
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise AgemetricError(f"unknown setting {shortened(key)}; {hint}known: {', '.join(sorted(types_))}")
    base, optional = types_[key]
    if isinstance(value, str):
        text = value.strip()
        if optional and (text.lower() in ("none", "null", "") or (base is bool and text.lower() == "auto")):
            return None
        if base is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            expected = "auto, on or off" if optional else "true or false"
            raise AgemetricError(f"{key} expects {expected}, got {shortened(value)}")
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


def _unsectioned(key: str, section: str, where: str) -> str:
    """``key`` as written in ``section``: refused when the setting lives in another section."""
    home = SECTION_OF.get(key)
    if home != section:
        hint = f"it is in {home}" if home else ("a top-level setting" if key == "seed" else "unknown setting")
        raise AgemetricError(f"{where}: {section} has no setting {shortened(key)} ({hint})")
    return key


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["epochs=3", "loss_options.q=50", "model.k=10"]`` -> flat overrides (nested for
    ``*_options``); a key may start with its section's name."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise AgemetricError(f"sets expects KEY=VALUE, got {shortened(item)}")
        parts = key.split(".")
        if len(parts) > 1 and parts[0] in SECTIONS:
            _unsectioned(parts[1], parts[0], f"sets {key}")
            parts = parts[1:]
        if len(parts) == 1:
            out[parts[0]] = coerce(parts[0], value)
            continue
        table, sub = parts[0], ".".join(parts[1:])
        if not (table.endswith("_options") and table in SECTION_OF):
            tables = ", ".join(k for k in sorted(SECTION_OF) if k.endswith("_options"))
            raise AgemetricError(
                f"sets {key}: dotted keys go into a table ({tables}) or a section ({', '.join(SECTIONS)})"
            )
        out.setdefault(table, {})[sub] = _parse_literal(value)
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file as flat settings: top-level keys are flat settings (plus ``preset``),
    tables named after a section (``[model]``, ``[training]``, ...) hold that section's."""
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
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            pairs = [(_unsectioned(name, key, f"config_file: {path}"), v) for name, v in value.items()]
        else:
            pairs = [(key, value)]
        for name, v in pairs:
            if name in flat:
                raise AgemetricError(f"config_file: {path}: {name} is given twice (at the top and in its section)")
            flat[name] = v
    out = {key: coerce(key, value) for key, value in flat.items()}
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
        >>> config.model.backbone, config.training.epochs, config.model.k, config.model.loss_options
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
    given = [
        command_defaults or {},
        from_file,
        {k: v for k, v in (options or {}).items() if v is not None},
        parse_set(sets or []),
    ]
    merged: dict[str, Any] = {}
    for layer in (PRESETS[name], *given):
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    explicit = set(from_file) | set(given[2]) | set(given[3])
    backbone = merged.get("backbone", ModelSpec.backbone)
    if "image_size" not in explicit:
        merged["image_size"] = _fit_image_size(backbone, merged.get("image_size"))
    user_options = {key for layer in given for key in layer.get("backbone_options", {})}
    from_preset = set(PRESETS[name].get("backbone_options", {})) - user_options
    if from_preset:
        merged["backbone_options"] = _taken(backbone, merged["backbone_options"], from_preset)
    return RunConfig.from_flat(**merged)


def _taken(backbone: str, options: dict[str, Any], from_preset: set[str]) -> dict[str, Any]:
    """``options`` without those of ``from_preset`` (a preset's recipe, e.g. its dropout) that
    ``backbone``'s factory does not take: a plugin's backbone need not have them. The user's own
    options always go to the factory, which says what it does not take."""
    import inspect

    from agemetric import plugins

    try:
        parameters = inspect.signature(plugins.get_entry("backbone", backbone).factory).parameters
    except (TypeError, ValueError):  # no signature to read: pass them all
        return options
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return options
    return {key: value for key, value in options.items() if key not in from_preset or key in parameters}


def _fit_image_size(backbone: str, size: int | None) -> int:
    """A preset's image size, raised to the backbone's minimum (e.g. 75 for Inception V3)."""
    from agemetric import plugins

    size = size or ModelSpec.image_size
    factory = plugins.get_entry("backbone", backbone).factory
    return max(size, int(getattr(factory, "min_size", 1)))

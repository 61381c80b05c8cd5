"""Settings: ``amalfa.settings.json`` merged over defaults, and the folders under ``.amalfa/``.

One place defines every default and every folder, so no other module carries a "shadow" default
that could drift from this one. The file keeps the original camelCase keys (``excludePatterns``,
``thresholdBytes``...) so settings files written for the original system load unchanged; the
Python side uses snake_case attributes.

Which file is read, first match wins:

1. the ``path`` argument of :func:`load_settings` (it must exist);
2. the file named by the ``AMALFA_SETTINGS`` environment variable (it must exist);
3. ``amalfa.settings.json`` in ``root`` (default: the current folder); when it is absent the
   defaults are used as they are.

Validation is strict about types and names the key path in its message
(``scratchpad.thresholdBytes must be an integer >= 0, got "big"``), because a wrong type that
slipped through would surface much later as a confusing failure elsewhere. Unknown keys only warn
(``UserWarning``): a file written for a newer or older version should still load.

Relative paths (``database``, the folders) are resolved against ``Settings.root``, which is the
``root`` argument or, when it is not given, the current folder at load time. The root is made
absolute when the settings are loaded, so a later ``os.chdir`` does not move the database.

Nothing here creates a folder until :meth:`Folders.ensure` is called.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from amalfa._text import parse_json
from amalfa.errors import SettingsError
from amalfa.limits import DEBOUNCE_MS, JSON_SAFE, THREADS

__all__ = [
    "SETTINGS_ENV_VAR",
    "SETTINGS_FILE_NAME",
    "EmbeddingSettings",
    "Folders",
    "ScratchpadSettings",
    "Settings",
    "WatchSettings",
    "DEFAULT_VECTOR_PORT",
    "VECTOR_PORT_ENV_VAR",
    "get_folders",
    "load_settings",
    "vector_port",
]

SETTINGS_FILE_NAME = "amalfa.settings.json"
SETTINGS_ENV_VAR = "AMALFA_SETTINGS"
#: The vector daemon's port on 127.0.0.1 when $VECTOR_PORT does not name one.
DEFAULT_VECTOR_PORT = 3010
VECTOR_PORT_ENV_VAR = "VECTOR_PORT"

# The default sources when the file names none (the original fell back to ./docs as well).
_DEFAULT_SOURCES = ("./docs",)
_DEFAULT_EXCLUDE_PATTERNS = ("node_modules", ".git", ".amalfa")


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Folders:
    """The folders amalfa keeps its state in, all under ``<root>/.amalfa``.

    Only paths: nothing exists on disk until :meth:`ensure` creates it, so reading settings or
    building a ``Folders`` never litters a project with empty folders.
    """

    base: Path
    runtime: Path
    logs: Path
    cache: Path
    scratchpad: Path
    backups: Path

    def ensure(self, *names: str) -> None:
        """Create the named folders (``"runtime"``, ``"scratchpad"``...), or all when none named.

        Parents are created as needed and existing folders are left alone.
        """
        known = [f.name for f in fields(self)]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"unknown folder name(s) {', '.join(map(repr, unknown))}; "
                f"expected some of {', '.join(known)}"
            )
        for name in names or known:
            getattr(self, name).mkdir(parents=True, exist_ok=True)


def get_folders(root: str | Path | None = None) -> Folders:
    """The folders under ``<root>/.amalfa`` (``root`` defaults to the current folder)."""
    base = _absolute_root(root) / ".amalfa"
    cache = base / "cache"
    return Folders(
        base=base,
        runtime=base / "runtime",
        logs=base / "logs",
        cache=cache,
        scratchpad=cache / "scratchpad",
        backups=base / "backups",
    )


def _absolute_root(root: str | Path | None) -> Path:
    # absolute() rather than resolve(): keep the path the user gave, symlinks and all.
    return Path.cwd() if root is None else Path(root).expanduser().absolute()


# --------------------------------------------------------------------------------------------
# The settings dataclasses (defaults live here and only here)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmbeddingSettings:
    """Which embedding model to use and the dimension its vectors must have."""

    # The embedder's default too (amalfa.embedder.DEFAULT_MODEL; tests/test_settings.py holds
    # them equal): the model amalfa embeds with when nothing else is said, installed by the
    # `model` extra, so the default settings work offline.
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    dimensions: int = 384
    # "fp32" (parity with sentence-transformers) or "int8" (faster, measured lower quality);
    # a database records the one it was built with, and queries follow the database
    precision: str = "fp32"
    # onnxruntime intra-op threads; None: the embedder's own choice (the cores this process has)
    threads: int | None = None


@dataclass(frozen=True, slots=True)
class ScratchpadSettings:
    """How the scratchpad decides what to cache and how much to keep."""

    enabled: bool = True
    threshold_bytes: int = 4 * 1024
    max_age_ms: int = 24 * 60 * 60 * 1000
    max_cache_size_bytes: int = 50 * 1024 * 1024
    include_preview: bool = True
    preview_length: int = 200


# The kinds of file change `amalfa watch` can answer (watchfiles' Change names).
WATCH_EVENTS: tuple[str, ...] = ("added", "modified", "deleted")


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """File watching. Off by default: a library should not start watching files unasked."""

    enabled: bool = False
    debounce_ms: int = 1000
    notifications: bool = True
    # which kinds of change the watcher answers; "modified" alone ignores new and deleted files
    events: tuple[str, ...] = WATCH_EVENTS


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings. Build with :func:`load_settings`; ``Settings()`` gives the defaults."""

    sources: list[str] = field(default_factory=lambda: list(_DEFAULT_SOURCES))
    exclude_patterns: list[str] = field(default_factory=lambda: list(_DEFAULT_EXCLUDE_PATTERNS))
    database: str = ".amalfa/runtime/resonance.db"
    embeddings: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    scratchpad: ScratchpadSettings = field(default_factory=ScratchpadSettings)
    watch: WatchSettings = field(default_factory=WatchSettings)
    root: Path = field(default_factory=Path.cwd)
    # The file these settings came from; None when only defaults were used.
    settings_file: Path | None = None

    @property
    def database_path(self) -> Path:
        """The database file, resolved against :attr:`root` when ``database`` is relative."""
        path = Path(self.database).expanduser()
        return path if path.is_absolute() else self.root / path

    @property
    def folders(self) -> Folders:
        """The folders under ``<root>/.amalfa``."""
        return get_folders(self.root)

    def as_dict(self) -> dict[str, Any]:
        """The settings as they would be written to a settings file (camelCase keys)."""
        result: dict[str, Any] = {}
        for json_key, (attr, _) in _TOP_LEVEL.items():
            result[json_key] = list(getattr(self, attr))
        result["database"] = self.database
        for json_key, (attr, _cls, spec) in _SECTIONS.items():
            section = getattr(self, attr)
            result[json_key] = {
                # tuples (watch.events) as JSON lists, so a round trip compares equal
                key: list(value) if isinstance(value := getattr(section, name), tuple) else value
                for key, (name, _) in spec.items()
                if key not in _ALIASES.get(json_key, {})
            }
        return result


# --------------------------------------------------------------------------------------------
# Validation: one converter per expected type; each names the key path when it refuses a value
# --------------------------------------------------------------------------------------------

Converter = Callable[[Any, str], Any]


def _show(value: Any) -> str:
    """A value as it appears in JSON, so the message matches what the user wrote."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _refuse(key: str, expected: str, value: Any) -> SettingsError:
    return SettingsError(f"{key} must be {expected}, got {_show(value)}")


def _integer(minimum: int, maximum: int = JSON_SAFE.high) -> Converter:
    def convert(value: Any, key: str) -> int:
        # bool is an int subclass; true/false for a size is a mistake, not 1/0.
        if isinstance(value, bool):
            raise _refuse(key, f"an integer >= {minimum}", value)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)  # JSON writers sometimes emit 4096.0 or 1e3
        if not isinstance(value, int) or value < minimum:
            raise _refuse(key, f"an integer >= {minimum}", value)
        if value > maximum:  # amalfa.limits: no number reaches C (or a timer) unchecked
            raise _refuse(key, f"an integer in {minimum}..{maximum}", value)
        return value

    return convert


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _refuse(key, "true or false", value)
    return value


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _refuse(key, "a non-empty string", value)
    return value


def _text_list(value: Any, key: str) -> list[str]:
    if not isinstance(value, list):
        raise _refuse(key, "a list of strings", value)
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise _refuse(f"{key}[{index}]", "a non-empty string", item)
    return list(value)


# amalfa.models.registry.PRECISIONS (tests/test_settings.py holds them equal); not imported, so
# that reading settings does not load the model builder
PRECISIONS: tuple[str, ...] = ("fp32", "int8")


def _precision(value: Any, key: str) -> str:
    if value not in PRECISIONS:
        raise _refuse(key, f"one of {', '.join(PRECISIONS)}", value)
    return str(value)


def _threads(value: Any, key: str) -> int | None:
    return None if value is None else _integer(THREADS.low, THREADS.high)(value, key)


def _watch_events(value: Any, key: str) -> tuple[str, ...]:
    kinds = _text_list(value, key)
    unknown = [kind for kind in kinds if kind not in WATCH_EVENTS]
    if unknown or not kinds:
        raise _refuse(key, f"a non-empty list of {', '.join(WATCH_EVENTS)}", value)
    return tuple(dict.fromkeys(kinds))


# json key -> (attribute, converter)
_TOP_LEVEL: dict[str, tuple[str, Converter]] = {
    "sources": ("sources", _text_list),
    "excludePatterns": ("exclude_patterns", _text_list),
}

_SectionSpec = dict[str, tuple[str, Converter]]

# json key -> (attribute on Settings, dataclass, {json key -> (field, converter)})
_SECTIONS: dict[str, tuple[str, type, _SectionSpec]] = {
    "embeddings": (
        "embeddings",
        EmbeddingSettings,
        {"model": ("model", _text), "dimensions": ("dimensions", _integer(1)),
         "precision": ("precision", _precision), "threads": ("threads", _threads)},
    ),
    "scratchpad": (
        "scratchpad",
        ScratchpadSettings,
        {
            "enabled": ("enabled", _boolean),
            "thresholdBytes": ("threshold_bytes", _integer(0)),
            "maxAgeMs": ("max_age_ms", _integer(0)),
            "maxCacheSizeBytes": ("max_cache_size_bytes", _integer(0)),
            "includePreview": ("include_preview", _boolean),
            "previewLength": ("preview_length", _integer(0)),
        },
    ),
    "watch": (
        "watch",
        WatchSettings,
        {
            "enabled": ("enabled", _boolean),
            # The original file calls it "debounce"; "debounceMs" is accepted as well.
            "debounce": ("debounce_ms", _integer(0, DEBOUNCE_MS.high)),
            "debounceMs": ("debounce_ms", _integer(0, DEBOUNCE_MS.high)),
            "notifications": ("notifications", _boolean),
            "events": ("events", _watch_events),
        },
    ),
}

# Keys that are accepted on input but not written by Settings.as_dict().
_ALIASES: dict[str, dict[str, str]] = {"watch": {"debounceMs": "debounce"}}

# Keys that are never reported as unknown: "$schema" is how editors attach a JSON schema.
_IGNORED_KEYS = frozenset({"$schema"})


def _parse_section(
    raw: Any, section: str, cls: type, spec: _SectionSpec, unknown: list[str]
) -> Any:
    if not isinstance(raw, Mapping):
        raise _refuse(section, "an object", raw)
    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in raw.items():
        if key not in spec:
            unknown.append(f"{section}.{key}")
            continue
        name, convert = spec[key]
        converted = convert(value, f"{section}.{key}")
        if name in values and values[name] != converted:
            raise SettingsError(
                f"{section}.{given_as[name]} and {section}.{key} are the same setting "
                f"and disagree ({_show(values[name])} vs {_show(converted)})"
            )
        values[name] = converted
        given_as[name] = key
    return cls(**values)


def _parse(raw: Any, *, root: Path, settings_file: Path | None) -> tuple[Settings, list[str]]:
    """Validate the decoded file and merge it over the defaults; also return unknown keys."""
    if not isinstance(raw, Mapping):
        raise SettingsError(f"the settings must be a JSON object, got {type(raw).__name__}")
    raw = dict(raw)
    unknown: list[str] = []
    values: dict[str, Any] = {}

    # The original accepted a single "source" string before "sources" existed.
    if "source" in raw and "sources" not in raw:
        raw["sources"] = [_text(raw.pop("source"), "source")]

    for key, value in raw.items():
        if key in _TOP_LEVEL:
            name, convert = _TOP_LEVEL[key]
            values[name] = convert(value, key)
        elif key == "database":
            values["database"] = _text(value, key)
        elif key in _SECTIONS:
            name, cls, spec = _SECTIONS[key]
            values[name] = _parse_section(value, key, cls, spec, unknown)
        elif key not in _IGNORED_KEYS:
            unknown.append(key)

    # An empty list means "the default" in the original; keep that so its files still work.
    if not values.get("sources", True):
        values["sources"] = list(_DEFAULT_SOURCES)
    return Settings(**values, root=root, settings_file=settings_file), unknown


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _choose_file(path: str | Path | None, root: Path) -> tuple[Path, bool]:
    """The settings file to read, and whether it was asked for explicitly (so must exist)."""
    if path is not None:
        return Path(path).expanduser(), True
    from_env = os.environ.get(SETTINGS_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser(), True
    return root / SETTINGS_FILE_NAME, False


def vector_port(environ: Mapping[str, str] | None = None) -> int:
    """The vector daemon's port: ``$VECTOR_PORT`` (decimal digits, 1..65535), or
    :data:`DEFAULT_VECTOR_PORT` when it is unset or blank. Anything else raises
    :class:`~amalfa.errors.SettingsError` naming the value; the daemon refuses to start on it and
    the embedder's client does not ask a daemon at all. The one parser of the variable, so the
    daemon and its clients always agree on the port."""
    raw = (os.environ if environ is None else environ).get(VECTOR_PORT_ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_VECTOR_PORT
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 65536:
        raise SettingsError(f"{VECTOR_PORT_ENV_VAR} must be a port number (1..65535); "
                            f"got {raw!r}")
    return int(raw)


def load_settings(path: str | Path | None = None, *, root: str | Path | None = None) -> Settings:
    """Read, validate and return the settings (see the module docstring for which file).

    Raises :class:`~amalfa.errors.SettingsError` when an explicitly named file is missing, when
    the file is not valid JSON (the message names the file, line and column), or when a value has
    the wrong type (the message names the file and the key path). Unknown keys warn.
    """
    project_root = _absolute_root(root)
    settings_file, explicit = _choose_file(path, project_root)
    try:
        text = settings_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            origin = "" if path is not None else f" (named by ${SETTINGS_ENV_VAR})"
            raise SettingsError(f"settings file {settings_file}{origin} does not exist") from None
        return Settings(root=project_root)
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{settings_file}: not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise SettingsError(f"{settings_file}: cannot be read ({exc.strerror})") from exc

    try:
        raw = parse_json(text)
    except ValueError as exc:  # where and why, in one line
        raise SettingsError(f"{settings_file}: {exc}") from None

    try:
        settings, unknown = _parse(raw, root=project_root, settings_file=settings_file)
    except SettingsError as exc:
        raise SettingsError(f"{settings_file}: {exc}") from None

    for key in unknown:
        warnings.warn(
            f"{settings_file}: unknown settings key {key!r} is ignored", UserWarning, stacklevel=2
        )
    return settings

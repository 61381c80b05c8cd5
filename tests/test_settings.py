"""Settings: file resolution, defaults, validation messages, unknown keys and the folders."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import pytest

import amalfa
from amalfa.errors import AmalfaError, SettingsError
from amalfa.settings import (
    SETTINGS_ENV_VAR,
    SETTINGS_FILE_NAME,
    EmbeddingSettings,
    Folders,
    ScratchpadSettings,
    Settings,
    WatchSettings,
    get_folders,
    load_settings,
)


@pytest.fixture(autouse=True)
def _no_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own AMALFA_SETTINGS must not leak into these tests.
    monkeypatch.delenv(SETTINGS_ENV_VAR, raising=False)


def write_settings(folder: Path, data: object, name: str = SETTINGS_FILE_NAME) -> Path:
    path = folder / name
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def load_quietly(**kwargs: object) -> Settings:
    """Load and fail on any warning, so tests of valid files also prove they do not warn."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_settings(**kwargs)  # type: ignore[arg-type]


# -- defaults and merging ---------------------------------------------------------------------


def test_defaults_when_there_is_no_file(tmp_path: Path) -> None:
    settings = load_quietly(root=tmp_path)

    assert settings.sources == ["./docs"]
    assert settings.exclude_patterns == ["node_modules", ".git", ".amalfa"]
    assert settings.database == ".amalfa/runtime/resonance.db"
    assert settings.embeddings == EmbeddingSettings("sentence-transformers/all-MiniLM-L6-v2", 384)
    assert settings.scratchpad == ScratchpadSettings(
        enabled=True,
        threshold_bytes=4096,
        max_age_ms=24 * 60 * 60 * 1000,
        max_cache_size_bytes=50 * 1024 * 1024,
        include_preview=True,
        preview_length=200,
    )
    assert settings.watch == WatchSettings(enabled=False, debounce_ms=1000, notifications=True)
    assert settings.root == tmp_path
    assert settings.settings_file is None
    assert list(tmp_path.iterdir()) == []  # loading creates nothing


def test_defaults_equal_a_bare_settings_object(tmp_path: Path) -> None:
    assert load_quietly(root=tmp_path) == Settings(root=tmp_path)


def test_file_in_root_is_merged_over_defaults(tmp_path: Path) -> None:
    path = write_settings(
        tmp_path,
        {
            "sources": ["notes", "papers"],
            "database": "data/graph.db",
            "scratchpad": {"thresholdBytes": 100, "includePreview": False},
            "embeddings": {"dimensions": 768},
        },
    )
    settings = load_quietly(root=tmp_path)

    assert settings.settings_file == path
    assert settings.sources == ["notes", "papers"]
    assert settings.database == "data/graph.db"
    assert settings.scratchpad.threshold_bytes == 100
    assert settings.scratchpad.include_preview is False
    # keys not in the file keep their defaults, section by section
    assert settings.scratchpad.preview_length == 200
    assert settings.scratchpad.enabled is True
    assert settings.embeddings == EmbeddingSettings("sentence-transformers/all-MiniLM-L6-v2", 768)
    assert settings.exclude_patterns == ["node_modules", ".git", ".amalfa"]


def test_root_defaults_to_the_current_folder_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_settings(tmp_path, {"database": "x.db"})
    monkeypatch.chdir(tmp_path)
    settings = load_quietly()
    assert settings.root.is_absolute()
    assert settings.root == Path(os.getcwd())
    assert settings.database == "x.db"

    # a later chdir does not move the database
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert settings.database_path == tmp_path / "x.db"


def test_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_settings(tmp_path, {"database": "from-root.db"})
    other = tmp_path / "conf"
    other.mkdir()
    env_file = write_settings(other, {"database": "from-env.db"}, name="custom.json")
    monkeypatch.setenv(SETTINGS_ENV_VAR, str(env_file))

    settings = load_quietly(root=tmp_path)
    assert settings.database == "from-env.db"
    assert settings.settings_file == env_file
    assert settings.root == tmp_path  # the root is still the project, not the file's folder


def test_explicit_path_wins_over_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write_settings(tmp_path, {"database": "from-env.db"}, name="env.json")
    arg_file = write_settings(tmp_path, {"database": "from-arg.db"}, name="arg.json")
    monkeypatch.setenv(SETTINGS_ENV_VAR, str(env_file))

    assert load_quietly(path=arg_file, root=tmp_path).database == "from-arg.db"
    assert load_quietly(path=str(arg_file), root=tmp_path).database == "from-arg.db"


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(SettingsError, match=r"nope\.json.*does not exist"):
        load_settings(missing, root=tmp_path)


def test_missing_env_file_is_an_error_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SETTINGS_ENV_VAR, str(tmp_path / "gone.json"))
    with pytest.raises(SettingsError, match=r"gone\.json \(named by \$AMALFA_SETTINGS\)"):
        load_settings(root=tmp_path)


def test_empty_env_var_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_settings(tmp_path, {"database": "root.db"})
    monkeypatch.setenv(SETTINGS_ENV_VAR, "")
    assert load_quietly(root=tmp_path).database == "root.db"


def test_package_exports_load_settings(tmp_path: Path) -> None:
    assert amalfa.load_settings is load_settings
    assert amalfa.load_settings(root=tmp_path).root == tmp_path


# -- the original's conveniences --------------------------------------------------------------


def test_legacy_single_source_becomes_sources(tmp_path: Path) -> None:
    write_settings(tmp_path, {"source": "./notes"})
    assert load_quietly(root=tmp_path).sources == ["./notes"]


def test_empty_sources_fall_back_to_the_default(tmp_path: Path) -> None:
    write_settings(tmp_path, {"sources": []})
    assert load_quietly(root=tmp_path).sources == ["./docs"]


def test_watch_accepts_debounce_and_debounce_ms(tmp_path: Path) -> None:
    write_settings(tmp_path, {"watch": {"enabled": True, "debounce": 250}})
    assert load_quietly(root=tmp_path).watch == WatchSettings(True, 250, True)

    write_settings(tmp_path, {"watch": {"debounceMs": 400, "notifications": False}})
    assert load_quietly(root=tmp_path).watch == WatchSettings(False, 400, False)


def test_embedding_precision_and_threads(tmp_path: Path) -> None:
    from amalfa.embedder import Embedder
    from amalfa.models.registry import PRECISIONS
    from amalfa.settings import PRECISIONS as SETTINGS_PRECISIONS

    assert SETTINGS_PRECISIONS == PRECISIONS  # one list, kept in two places on purpose
    assert (Settings().embeddings.precision, Settings().embeddings.threads) == ("fp32", None)
    write_settings(tmp_path, {"embeddings": {"precision": "int8", "threads": 1}})
    settings = load_quietly(root=tmp_path)
    assert (settings.embeddings.precision, settings.embeddings.threads) == ("int8", 1)
    assert Embedder.for_settings(settings).precision == "int8"  # finds files, loads nothing
    for key, bad in (("precision", "int4"), ("precision", 8), ("threads", 0),
                     ("threads", 10**6), ("threads", True)):
        write_settings(tmp_path, {"embeddings": {key: bad}})
        with pytest.raises(SettingsError, match=rf"embeddings\.{key}"):
            load_settings(root=tmp_path)


def test_watch_events_choose_among_the_known_kinds(tmp_path: Path) -> None:
    assert Settings().watch.events == ("added", "modified", "deleted")
    write_settings(tmp_path, {"watch": {"events": ["modified", "deleted", "modified"]}})
    settings = load_quietly(root=tmp_path)
    assert settings.watch.events == ("modified", "deleted")  # repeats dropped, order kept
    assert settings.as_dict()["watch"]["events"] == ["modified", "deleted"]
    for bad in (["moved"], [], "modified", [3]):
        write_settings(tmp_path, {"watch": {"events": bad}})
        with pytest.raises(SettingsError, match=r"watch\.events"):
            load_settings(root=tmp_path)


def test_watch_debounce_aliases_that_disagree_are_an_error(tmp_path: Path) -> None:
    write_settings(tmp_path, {"watch": {"debounce": 250, "debounceMs": 400}})
    with pytest.raises(SettingsError, match=r"watch\.debounce and watch\.debounceMs"):
        load_settings(root=tmp_path)


def test_integral_floats_are_accepted_as_integers(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE_NAME).write_text('{"scratchpad": {"thresholdBytes": 1e3}}')
    settings = load_quietly(root=tmp_path)
    assert settings.scratchpad.threshold_bytes == 1000
    assert isinstance(settings.scratchpad.threshold_bytes, int)


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"scratchpad": {"thresholdBytes": "big"}},
            'scratchpad.thresholdBytes must be an integer >= 0, got "big"',
        ),
        (
            {"scratchpad": {"thresholdBytes": -1}},
            "scratchpad.thresholdBytes must be an integer >= 0, got -1",
        ),
        (
            {"scratchpad": {"maxAgeMs": 1.5}},
            "scratchpad.maxAgeMs must be an integer >= 0, got 1.5",
        ),
        (
            {"scratchpad": {"maxCacheSizeBytes": True}},
            "scratchpad.maxCacheSizeBytes must be an integer >= 0, got true",
        ),
        (
            {"scratchpad": {"previewLength": None}},
            "scratchpad.previewLength must be an integer >= 0, got null",
        ),
        (
            {"scratchpad": {"enabled": "yes"}},
            'scratchpad.enabled must be true or false, got "yes"',
        ),
        (
            {"scratchpad": {"includePreview": 1}},
            "scratchpad.includePreview must be true or false, got 1",
        ),
        ({"scratchpad": []}, "scratchpad must be an object, got []"),
        ({"embeddings": {"dimensions": 0}}, "embeddings.dimensions must be an integer >= 1"),
        ({"embeddings": {"model": ""}}, 'embeddings.model must be a non-empty string, got ""'),
        ({"embeddings": {"model": 5}}, "embeddings.model must be a non-empty string, got 5"),
        ({"embeddings": "bge"}, 'embeddings must be an object, got "bge"'),
        ({"watch": {"enabled": "no"}}, 'watch.enabled must be true or false, got "no"'),
        ({"watch": {"debounce": -5}}, "watch.debounce must be an integer >= 0, got -5"),
        ({"sources": "docs"}, 'sources must be a list of strings, got "docs"'),
        ({"sources": ["docs", 3]}, "sources[1] must be a non-empty string, got 3"),
        ({"excludePatterns": [""]}, 'excludePatterns[0] must be a non-empty string, got ""'),
        ({"database": 42}, "database must be a non-empty string, got 42"),
        ({"database": "  "}, 'database must be a non-empty string, got "  "'),
        ({"source": ["a"]}, 'source must be a non-empty string, got ["a"]'),
    ],
)
def test_invalid_values_name_the_key_and_expected_type(
    tmp_path: Path, data: dict[str, object], message: str
) -> None:
    path = write_settings(tmp_path, data)
    with pytest.raises(SettingsError) as caught:
        load_settings(root=tmp_path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_settings_error_is_a_value_error_and_an_amalfa_error(tmp_path: Path) -> None:
    write_settings(tmp_path, {"database": 1})
    with pytest.raises(ValueError):
        load_settings(root=tmp_path)
    with pytest.raises(AmalfaError):
        load_settings(root=tmp_path)


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    write_settings(tmp_path, ["not", "an", "object"])
    with pytest.raises(SettingsError, match="must be a JSON object, got list"):
        load_settings(root=tmp_path)


def test_invalid_json_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / SETTINGS_FILE_NAME
    path.write_text('{\n  "database": "x.db",\n  "sources": [\n}\n', encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        load_settings(root=tmp_path)
    message = str(caught.value)
    assert str(path) in message
    assert "line 4" in message


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE_NAME).write_bytes(b'{"database": "\xff\xfe"}')
    with pytest.raises(SettingsError, match="not UTF-8"):
        load_settings(root=tmp_path)


# -- unknown keys -----------------------------------------------------------------------------


def test_unknown_keys_warn_naming_the_key_and_still_load(tmp_path: Path) -> None:
    write_settings(
        tmp_path,
        {"database": "a.db", "sonar": {"enabled": False}, "scratchpad": {"thresholdByte": 1}},
    )
    with pytest.warns(UserWarning) as caught:
        settings = load_settings(root=tmp_path)
    messages = [str(w.message) for w in caught]
    assert any("'sonar'" in m for m in messages)
    assert any("'scratchpad.thresholdByte'" in m for m in messages)
    assert len(messages) == 2
    assert settings.database == "a.db"
    assert settings.scratchpad.threshold_bytes == 4096  # the misspelt key changed nothing


def test_unknown_key_warning_points_at_the_caller(tmp_path: Path) -> None:
    write_settings(tmp_path, {"mystery": 1})
    with pytest.warns(UserWarning) as caught:
        load_settings(root=tmp_path)
    assert caught[0].filename == __file__


def test_schema_key_is_not_reported_as_unknown(tmp_path: Path) -> None:
    write_settings(tmp_path, {"$schema": "./amalfa.schema.json", "database": "s.db"})
    assert load_quietly(root=tmp_path).database == "s.db"


# -- derived paths ----------------------------------------------------------------------------


def test_database_path_is_resolved_against_root(tmp_path: Path) -> None:
    assert Settings(root=tmp_path).database_path == tmp_path / ".amalfa/runtime/resonance.db"
    absolute = tmp_path / "elsewhere" / "db.sqlite"
    assert Settings(database=str(absolute), root=tmp_path / "p").database_path == absolute


def test_settings_are_immutable(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.database = "other.db"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.scratchpad.enabled = False  # type: ignore[misc]


def test_as_dict_round_trips_through_a_file(tmp_path: Path) -> None:
    original = Settings(
        sources=["a", "b"],
        database="g.db",
        scratchpad=ScratchpadSettings(threshold_bytes=10, preview_length=5),
        watch=WatchSettings(enabled=True, debounce_ms=5),
        root=tmp_path,
    )
    data = original.as_dict()
    assert data["scratchpad"]["thresholdBytes"] == 10
    assert data["watch"] == {"enabled": True, "debounce": 5, "notifications": True,
                             "events": ["added", "modified", "deleted"]}
    path = write_settings(tmp_path, data)
    loaded = load_quietly(root=tmp_path)
    assert loaded == dataclasses.replace(original, settings_file=path)


# -- folders ----------------------------------------------------------------------------------


def test_folders_layout(tmp_path: Path) -> None:
    folders = get_folders(tmp_path)
    base = tmp_path / ".amalfa"
    assert folders == Folders(
        base=base,
        runtime=base / "runtime",
        logs=base / "logs",
        cache=base / "cache",
        scratchpad=base / "cache" / "scratchpad",
        backups=base / "backups",
    )
    assert Settings(root=tmp_path).folders == folders
    assert not base.exists()  # nothing is created until asked


def test_get_folders_defaults_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert get_folders().base == Path(os.getcwd()) / ".amalfa"
    assert get_folders("relative").base == Path(os.getcwd()) / "relative" / ".amalfa"


def test_ensure_creates_only_the_named_folders(tmp_path: Path) -> None:
    folders = get_folders(tmp_path)
    folders.ensure("scratchpad")
    assert folders.scratchpad.is_dir()
    assert folders.cache.is_dir()  # as a parent
    assert not folders.runtime.exists()
    assert not folders.logs.exists()

    folders.ensure("scratchpad")  # twice is fine


def test_ensure_without_names_creates_all(tmp_path: Path) -> None:
    folders = get_folders(tmp_path)
    folders.ensure()
    for name in ("base", "runtime", "logs", "cache", "scratchpad", "backups"):
        assert getattr(folders, name).is_dir(), name


def test_ensure_refuses_unknown_names(tmp_path: Path) -> None:
    folders = get_folders(tmp_path)
    with pytest.raises(ValueError, match="'tmp'"):
        folders.ensure("runtime", "tmp")
    assert not folders.runtime.exists()  # nothing created when the request is wrong


def test_the_default_model_is_the_embedders_default() -> None:
    # one source of truth: a project without settings embeds and queries with the model that
    # `pip install 'amalfa[model]'` installs, whether it goes through the settings or not
    from amalfa.embedder import DEFAULT_MODEL

    assert load_settings(root=Path("/nonexistent-root")).embeddings.model == DEFAULT_MODEL


@pytest.mark.parametrize(("value", "port"), [(None, 3010), ("", 3010), ("  ", 3010),
                                             ("4000", 4000), (" 4001\n", 4001), ("65535", 65535),
                                             ("1", 1)])
def test_vector_port(value: str | None, port: int) -> None:
    from amalfa.settings import vector_port

    assert vector_port({} if value is None else {"VECTOR_PORT": value}) == port


@pytest.mark.parametrize("value", ["0", "65536", "http", "-1", "30 10", "3e3", "\u0663"])
def test_a_bad_vector_port_names_the_variable_and_the_value(value: str) -> None:
    from amalfa.settings import vector_port

    with pytest.raises(SettingsError, match=f"VECTOR_PORT must be a port number.*{value!r}"):
        vector_port({"VECTOR_PORT": value})


def test_vector_port_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from amalfa.settings import vector_port

    monkeypatch.setenv("VECTOR_PORT", "3456")
    assert vector_port() == 3456

"""Scratchpad: caching large outputs on disk, reading them back, pruning, and refusing bad ids."""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path

import pytest

import amalfa
from amalfa.scratchpad import (
    EntryInfo,
    PruneResult,
    Scratchpad,
    ScratchpadEntry,
    ScratchpadStats,
    content_id,
    detect_content_type,
    format_size,
    make_preview,
)
from amalfa.settings import ScratchpadSettings, Settings

THRESHOLD = 100


def sha12(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()[:12]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "pad"


@pytest.fixture
def pad(folder: Path) -> Scratchpad:
    return Scratchpad(folder=folder, config=ScratchpadSettings(threshold_bytes=THRESHOLD))


def big(text: str = "line of output", size: int = 500) -> str:
    return (text + "\n") * (size // (len(text) + 1) + 1)


def age(path: Path, seconds: float) -> None:
    """Make a file look ``seconds`` old."""
    past = time.time() - seconds
    os.utime(path, (past, past))


# -- construction -----------------------------------------------------------------------------


def test_folder_and_config_come_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path, scratchpad=ScratchpadSettings(threshold_bytes=7))
    pad = Scratchpad(settings=settings)
    assert pad.folder == tmp_path / ".amalfa" / "cache" / "scratchpad"
    assert pad.config.threshold_bytes == 7
    assert not pad.folder.exists()  # created on the first write only
    pad.maybe_cache("tool", "x" * 10)
    assert pad.folder.is_dir()
    assert amalfa.Scratchpad is Scratchpad


def test_settings_are_loaded_when_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AMALFA_SETTINGS", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "amalfa.settings.json").write_text('{"scratchpad": {"previewLength": 3}}')
    pad = Scratchpad()
    assert pad.folder == tmp_path / ".amalfa" / "cache" / "scratchpad"
    assert pad.config.preview_length == 3
    # an explicit folder still takes the config from the settings, and the reverse
    assert Scratchpad(folder=tmp_path / "f").config.preview_length == 3
    assert Scratchpad(config=ScratchpadSettings()).folder == pad.folder


# -- maybe_cache ------------------------------------------------------------------------------


def test_small_content_comes_back_unchanged(pad: Scratchpad) -> None:
    small = "x" * (THRESHOLD - 1)
    assert pad.maybe_cache("tool", small) is small
    assert not pad.folder.exists()


def test_threshold_counts_utf8_bytes_not_characters(folder: Path) -> None:
    pad = Scratchpad(folder=folder, config=ScratchpadSettings(threshold_bytes=6))
    assert pad.maybe_cache("t", "ééé") != "ééé"  # 3 characters, 6 bytes: cached
    assert pad.maybe_cache("t", "abcde") == "abcde"  # 5 bytes: kept


def test_content_at_the_threshold_is_cached(pad: Scratchpad) -> None:
    content = "y" * THRESHOLD
    reference = pad.maybe_cache("tool", content)
    assert reference != content
    assert pad.read_content(sha12(content)) == content


def test_large_content_is_stored_and_referenced(pad: Scratchpad) -> None:
    content = big("search result", 2000)
    entry_id = sha12(content)
    reference = pad.maybe_cache("search_documents", content)

    path = pad.folder / f"{entry_id}.json"
    size = len(content.encode())
    assert reference.startswith(f"📁 Output cached: {path} ({size / 1024:.1f}KB)")
    assert "\n\nPreview: search result search result" in reference
    assert reference.endswith(f'To read full content, use: Scratchpad.read_content("{entry_id}")')

    stored = json.loads(path.read_text(encoding="utf-8"))
    assert set(stored) == {
        "id",
        "tool",
        "timestamp",
        "sizeBytes",
        "contentType",
        "preview",
        "content",
    }
    assert stored["id"] == entry_id
    assert stored["tool"] == "search_documents"
    assert stored["sizeBytes"] == size
    assert stored["contentType"] == "text"
    assert stored["content"] == content
    assert stored["timestamp"].endswith("Z")


def test_identical_content_is_written_once(pad: Scratchpad) -> None:
    content = big()
    first = pad.maybe_cache("a", content)
    path = pad.folder / f"{sha12(content)}.json"
    inode, stored = path.stat().st_ino, path.read_bytes()

    second = pad.maybe_cache("b", content)
    assert second == first
    assert path.stat().st_ino == inode  # not replaced by a new file
    assert path.read_bytes() == stored  # the first tool and timestamp are kept
    assert len(list(pad.folder.iterdir())) == 1


def test_reuse_refreshes_the_age_used_by_prune(folder: Path) -> None:
    config = ScratchpadSettings(threshold_bytes=10, max_age_ms=60_000)
    pad = Scratchpad(folder=folder, config=config)
    content = big()
    pad.maybe_cache("t", content)
    path = folder / f"{sha12(content)}.json"
    age(path, 3600)
    pad.maybe_cache("t", content)
    assert time.time() - path.stat().st_mtime < 60
    assert pad.prune() == PruneResult(0, 0)
    assert path.exists()


def test_writes_leave_no_temporary_files(pad: Scratchpad) -> None:
    for n in range(5):
        pad.maybe_cache("t", big(f"output {n}"))
    names = [p.name for p in pad.folder.iterdir()]
    assert len(names) == 5
    assert all(name.endswith(".json") and not name.startswith(".") for name in names)


def test_unicode_content_round_trips(pad: Scratchpad) -> None:
    content = "日本語のテキスト — ✓ émoji 🚀\n" * 20
    pad.maybe_cache("t", content)
    assert pad.read_content(content_id(content)) == content


def test_content_must_be_text(pad: Scratchpad) -> None:
    with pytest.raises(TypeError, match="content must be a str, got bytes"):
        pad.maybe_cache("t", b"x" * 500)  # type: ignore[arg-type]


def test_disabled_scratchpad_passes_content_through(folder: Path) -> None:
    pad = Scratchpad(folder=folder, config=ScratchpadSettings(enabled=False, threshold_bytes=1))
    content = big(size=100_000)
    assert pad.maybe_cache("t", content) is content
    assert not folder.exists()


def test_preview_can_be_left_out_of_the_reference(folder: Path) -> None:
    pad = Scratchpad(
        folder=folder, config=ScratchpadSettings(threshold_bytes=10, include_preview=False)
    )
    content = big()
    reference = pad.maybe_cache("t", content)
    assert "Preview:" not in reference
    assert pad.read(sha12(content)).preview.startswith("line of output")  # type: ignore[union-attr]


# -- content types and previews ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("  [1, 2, 3]\n", "json"),
        ('{"a": 1}', "json"),
        ("{not json at all}", "text"),
        ('"a json string"', "text"),  # only arrays and objects count as JSON output
        ("Intro\n\n## Section\ntext", "markdown"),
        ("# Title", "markdown"),
        ("C# is a language and #hashtags are not headings", "text"),
        ("plain words", "text"),
    ],
)
def test_content_type_detection(content: str, expected: str) -> None:
    assert detect_content_type(content) == expected


def test_previews() -> None:
    assert make_preview(json.dumps(list(range(40))), "json", 10) == "[Array with 40 items]"
    assert make_preview('{"a": 1, "b": 2}', "json", 10) == "{a, b}"
    six = json.dumps({k: 1 for k in "abcdef"})
    assert make_preview(six, "json", 10) == "{a, b, c, d, e...}"
    assert make_preview("line one\nline two\nline three", "text", 12) == "line one lin..."
    assert make_preview("short", "text", 12) == "short"


def test_json_preview_is_stored_and_shown(pad: Scratchpad) -> None:
    content = json.dumps([{"id": n, "title": f"doc {n}"} for n in range(50)])
    reference = pad.maybe_cache("t", content)
    assert "Preview: [Array with 50 items]" in reference
    entry = pad.read(sha12(content))
    assert entry is not None
    assert entry.content_type == "json"
    assert entry.preview == "[Array with 50 items]"


def test_preview_length_comes_from_the_config(folder: Path) -> None:
    pad = Scratchpad(folder=folder, config=ScratchpadSettings(threshold_bytes=10, preview_length=8))
    reference = pad.maybe_cache("t", "abcdefghij" * 20)
    assert "Preview: abcdefgh...\n" in reference


def test_format_size() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 1536, 1024 * 1024, 5 * 1024**2 + 1)] == [
        "0B",
        "1023B",
        "1.0KB",
        "1.5KB",
        "1.00MB",
        "5.00MB",
    ]


# -- reading ----------------------------------------------------------------------------------


def test_read_returns_the_entry(pad: Scratchpad) -> None:
    content = "# Report\n\n" + big()
    pad.maybe_cache("report_tool", content)
    entry = pad.read(sha12(content))
    assert isinstance(entry, ScratchpadEntry)
    assert entry.id == sha12(content)
    assert entry.tool == "report_tool"
    assert entry.content_type == "markdown"
    assert entry.size_bytes == len(content.encode())
    assert entry.content == content
    assert pad.read_content(entry.id) == content


def test_reading_a_missing_entry_is_none_without_warning(pad: Scratchpad) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pad.read("0123456789ab") is None
        assert pad.read_content("0123456789ab") is None


@pytest.mark.parametrize(
    "bad_id",
    [
        "../../etc/passwd",
        "../secret",
        "/etc/passwd",
        "0123456789ab/../../x",
        "0123456789AB",  # ids are lowercase
        "0123456789a",  # too short
        "0123456789abc",  # too long
        "0123456789ag",
        "0123456789ab.json",
        "",
        123456789012,
        None,
    ],
)
def test_ids_that_are_not_12_hex_digits_are_refused(
    pad: Scratchpad, tmp_path: Path, bad_id: object
) -> None:
    # a file outside the scratchpad that a traversal would reach
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    for method in (pad.read, pad.read_content, pad.delete):
        with pytest.raises(ValueError, match="invalid scratchpad id"):
            method(bad_id)  # type: ignore[arg-type]
    assert secret.read_text() == "{}"


def test_corrupt_entry_reads_as_missing_with_a_warning(pad: Scratchpad) -> None:
    pad.folder.mkdir(parents=True)
    path = pad.folder / "0123456789ab.json"
    path.write_text('{"id": "0123456789ab", "content": "trunc')
    with pytest.warns(UserWarning, match="0123456789ab.json is damaged"):
        assert pad.read("0123456789ab") is None
    with pytest.warns(UserWarning):
        assert pad.read_content("0123456789ab") is None
    assert path.exists()  # left for inspection; prune or delete removes it


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.update(content=e["content"] + "tampered"),  # no longer matches its id
        lambda e: e.update(sizeBytes="big"),
        lambda e: e.update(contentType="binary"),
        lambda e: e.pop("tool"),
        lambda e: e.update(id="ffffffffffff"),
    ],
)
def test_entries_with_bad_fields_read_as_missing(pad: Scratchpad, mutate: object) -> None:
    content = big()
    pad.maybe_cache("t", content)
    path = pad.folder / f"{sha12(content)}.json"
    record = json.loads(path.read_text())
    mutate(record)  # type: ignore[operator]
    path.write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="damaged"):
        assert pad.read(sha12(content)) is None


def test_caching_again_repairs_a_corrupt_entry(pad: Scratchpad) -> None:
    content = big()
    pad.maybe_cache("t", content)
    path = pad.folder / f"{sha12(content)}.json"
    path.write_text("garbage")
    with pytest.warns(UserWarning, match="damaged"):
        pad.maybe_cache("t", content)
    assert pad.read_content(sha12(content)) == content


def test_non_utf8_entry_is_damaged(pad: Scratchpad) -> None:
    pad.folder.mkdir(parents=True)
    (pad.folder / "0123456789ab.json").write_bytes(b"\xff\xfe\x00")
    with pytest.warns(UserWarning, match="not UTF-8"):
        assert pad.read("0123456789ab") is None


# -- list and stats ---------------------------------------------------------------------------


def set_timestamp(pad: Scratchpad, entry_id: str, timestamp: str) -> None:
    path = pad.folder / f"{entry_id}.json"
    record = json.loads(path.read_text())
    record["timestamp"] = timestamp
    path.write_text(json.dumps(record))


def test_list_is_metadata_newest_first(pad: Scratchpad) -> None:
    contents = {
        stamp: big(f"output at {stamp}") for stamp in ("2024-01-02", "2024-01-03", "2024-01-01")
    }
    for stamp, content in contents.items():
        pad.maybe_cache(f"tool {stamp}", content)
        set_timestamp(pad, sha12(content), f"{stamp}T00:00:00.000Z")

    infos = pad.list()
    assert [info.tool for info in infos] == [
        "tool 2024-01-03",
        "tool 2024-01-02",
        "tool 2024-01-01",
    ]
    assert all(type(info) is EntryInfo for info in infos)
    assert not hasattr(infos[0], "content")


def test_list_skips_corrupt_entries_and_other_files(pad: Scratchpad) -> None:
    good = big()
    pad.maybe_cache("t", good)
    (pad.folder / "abcdefabcdef.json").write_text("not json")
    (pad.folder / "notes.txt").write_text("not an entry")
    (pad.folder / "README.json").write_text("{}")  # not an id
    with pytest.warns(UserWarning, match="abcdefabcdef.json is damaged"):
        infos = pad.list()
    assert [info.id for info in infos] == [sha12(good)]


def test_list_of_a_missing_folder_is_empty(pad: Scratchpad) -> None:
    assert pad.list() == []
    assert pad.stats() == ScratchpadStats(0, 0, None, None)


def test_stats(pad: Scratchpad) -> None:
    first, second = big("aaa", 300), big("bbb", 700)
    pad.maybe_cache("t", first)
    pad.maybe_cache("t", second)
    set_timestamp(pad, sha12(first), "2024-01-01T00:00:00.000Z")
    set_timestamp(pad, sha12(second), "2024-06-01T00:00:00.000Z")
    assert pad.stats() == ScratchpadStats(
        entries=2,
        total_size_bytes=len(first) + len(second),
        oldest_timestamp="2024-01-01T00:00:00.000Z",
        newest_timestamp="2024-06-01T00:00:00.000Z",
    )


# -- delete, prune, clear ---------------------------------------------------------------------


def test_delete(pad: Scratchpad) -> None:
    content = big()
    pad.maybe_cache("t", content)
    assert pad.delete(sha12(content)) is True
    assert not (pad.folder / f"{sha12(content)}.json").exists()
    assert pad.delete(sha12(content)) is False
    assert pad.read(sha12(content)) is None


def test_prune_removes_entries_older_than_max_age(folder: Path) -> None:
    config = ScratchpadSettings(threshold_bytes=10, max_age_ms=60_000)
    pad = Scratchpad(folder=folder, config=config)
    old, fresh = big("old"), big("fresh")
    pad.maybe_cache("t", old)
    pad.maybe_cache("t", fresh)
    old_path = folder / f"{sha12(old)}.json"
    old_size = old_path.stat().st_size
    age(old_path, 61)

    assert pad.prune() == PruneResult(deleted=1, freed_bytes=old_size)
    assert pad.read(sha12(old)) is None
    assert pad.read_content(sha12(fresh)) == fresh


def test_prune_then_removes_the_oldest_until_under_the_size_cap(folder: Path) -> None:
    contents = [big(f"entry {n}", 1000) for n in range(4)]
    writer = Scratchpad(folder=folder, config=ScratchpadSettings(threshold_bytes=10))
    for content in contents:
        writer.maybe_cache("t", content)
    paths = [folder / f"{sha12(c)}.json" for c in contents]
    for n, path in enumerate(paths):
        age(path, 100 - n)  # entry 0 oldest, entry 3 newest; all well within the age limit
    sizes = [p.stat().st_size for p in paths]

    cap = sizes[2] + sizes[3]  # room for the two newest exactly
    pad = Scratchpad(
        folder=folder, config=ScratchpadSettings(threshold_bytes=10, max_cache_size_bytes=cap)
    )
    assert pad.prune() == PruneResult(deleted=2, freed_bytes=sizes[0] + sizes[1])
    assert [p.exists() for p in paths] == [False, False, True, True]
    assert pad.prune() == PruneResult(0, 0)  # already under the cap


def test_prune_removes_stale_temporary_files_only(folder: Path) -> None:
    pad = Scratchpad(folder=folder, config=ScratchpadSettings(threshold_bytes=10, max_age_ms=1000))
    folder.mkdir(parents=True)
    stale = folder / ".0123456789ab.abc123.tmp"
    stale.write_text("half an entry")
    age(stale, 10)
    fresh = folder / ".0123456789ab.def456.tmp"
    fresh.write_text("being written")
    other = folder / "keep.txt"
    other.write_text("not ours")
    age(other, 10)

    assert pad.prune() == PruneResult(deleted=1, freed_bytes=len("half an entry"))
    assert not stale.exists()
    assert fresh.exists()
    assert other.exists()


def test_prune_of_a_missing_folder_does_nothing(pad: Scratchpad) -> None:
    assert pad.prune() == PruneResult(0, 0)
    assert not pad.folder.exists()


def test_clear_removes_every_entry_and_nothing_else(pad: Scratchpad) -> None:
    for n in range(3):
        pad.maybe_cache("t", big(f"entry {n}"))
    (pad.folder / "keep.txt").write_text("not an entry")
    assert pad.clear() == 3
    assert pad.list() == []
    assert [p.name for p in pad.folder.iterdir()] == ["keep.txt"]
    assert pad.clear() == 0


def test_deeply_nested_json_content_is_cached_as_text(tmp_path):
    pad = Scratchpad(folder=tmp_path / "pad")
    content = "[" * 100_000
    reference = pad.maybe_cache("tool", content)
    assert reference != content
    (entry,) = pad.list()
    assert pad.read_content(entry.id) == content


def test_cache_returns_the_entry_id_and_small_text_with_a_surrogate_as_itself(tmp_path) -> None:
    """``cache`` names the entry it stored (None for text returned as it is); a small output
    holding a lone surrogate comes back made valid, not as an error."""
    from amalfa.scratchpad import content_id

    pad = Scratchpad(folder=tmp_path / "pad", config=ScratchpadSettings(threshold_bytes=100))
    assert pad.cache("stats", "small \udcff text") == ("small \ufffd text", None)
    big = "x" * 500
    reference, entry_id = pad.cache("search", big)
    assert entry_id == content_id(big) and entry_id in reference
    assert pad.read_content(entry_id) == big

"""The scratchpad: large tool outputs go to disk and a short reference comes back instead.

An agent's context window is small; a 200 KB search result pasted into it crowds out everything
else. :meth:`Scratchpad.maybe_cache` keeps small outputs as they are and stores large ones under
a content id, returning a few lines with the size, a preview and how to read the rest.

Storage: one JSON file per entry, ``<folder>/<id>.json`` (default folder
``.amalfa/cache/scratchpad``), with the original's camelCase keys::

    {"id": "3f2a9c0b1d4e", "tool": "search", "timestamp": "2025-01-01T12:00:00.000Z",
     "sizeBytes": 10240, "contentType": "json", "preview": "[Array with 40 items]",
     "content": "..."}

The id is the first 12 hex digits of the content's sha256, so identical content is stored once.
Ids are checked against that exact form before any path is built: nothing a caller passes can
name a file outside the folder. Entries are written to a temporary file and renamed into place,
so a reader never sees half an entry; an entry that is damaged anyway (or whose content no longer
matches its id) reads as missing, with a warning.

Pruning uses each file's modification time, which :meth:`Scratchpad.maybe_cache` refreshes when
it reuses an entry, so an output that keeps coming back is not pruned as old.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from amalfa._atomic import TEMP_PREFIX, TEMP_SUFFIX, atomic_write_text
from amalfa._text import format_size, parse_json, utc_now_iso
from amalfa.settings import ScratchpadSettings, Settings, load_settings
from amalfa.text_rules import for_model

__all__ = [
    "ContentType",
    "EntryInfo",
    "PruneResult",
    "Scratchpad",
    "ScratchpadEntry",
    "ScratchpadStats",
]

ContentType = Literal["json", "markdown", "text"]

_ID_PATTERN = re.compile(r"[0-9a-f]{12}")
_ENTRY_SUFFIX = ".json"
# Temporary files start with a dot and end in .tmp, so they never look like entries.
_TEMP_PREFIX = TEMP_PREFIX
_TEMP_SUFFIX = TEMP_SUFFIX
_MARKDOWN_HEADING = re.compile(r"^#{1,6}\s", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """An entry's metadata (what :meth:`Scratchpad.list` returns)."""

    id: str
    tool: str
    timestamp: str
    size_bytes: int
    content_type: ContentType
    preview: str


@dataclass(frozen=True, slots=True)
class ScratchpadEntry(EntryInfo):
    """An entry with its content (what :meth:`Scratchpad.read` returns)."""

    content: str

    def info(self) -> EntryInfo:
        """The metadata without the content."""
        return EntryInfo(
            self.id, self.tool, self.timestamp, self.size_bytes, self.content_type, self.preview
        )


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What :meth:`Scratchpad.prune` removed (sizes are of the files on disk)."""

    deleted: int
    freed_bytes: int


@dataclass(frozen=True, slots=True)
class ScratchpadStats:
    """Totals over the readable entries (``total_size_bytes`` counts content bytes)."""

    entries: int
    total_size_bytes: int
    oldest_timestamp: str | None
    newest_timestamp: str | None


def content_id(content: str) -> str:
    """The id of ``content``: the first 12 hex digits of the sha256 of its UTF-8 bytes."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()[:12]


def detect_content_type(content: str) -> ContentType:
    """``json`` for a JSON object or array, ``markdown`` when a line is a heading, else ``text``."""
    stripped = content.strip()
    if stripped[:1] in ("{", "["):
        try:
            json.loads(stripped)
        except (json.JSONDecodeError, RecursionError):  # too deep to be worth a JSON preview
            pass
        else:
            return "json"
    if _MARKDOWN_HEADING.search(content):
        return "markdown"
    return "text"


def make_preview(content: str, content_type: ContentType, length: int) -> str:
    """A short preview: JSON arrays and objects are summarised, other text is cut to ``length``.

    A cut preview has its newlines flattened and ends with ``...`` so it reads as one line.
    """
    if content_type == "json":
        parsed = json.loads(content)
        if isinstance(parsed, list):
            return f"[Array with {len(parsed)} items]"
        if isinstance(parsed, dict):
            keys = list(parsed)
            more = "..." if len(keys) > 5 else ""
            return "{" + ", ".join(keys[:5]) + more + "}"
    if len(content) <= length:
        return content
    return content[:length].replace("\n", " ").strip() + "..."


class Scratchpad:
    """A disk cache for large tool outputs, configured by ``ScratchpadSettings``.

    ``config`` and ``folder`` default to the settings' ``scratchpad`` section and
    ``folders.scratchpad``; ``settings`` is loaded with :func:`~amalfa.settings.load_settings`
    only when one of them is not given. The folder is created on the first write.
    """

    def __init__(
        self,
        *,
        folder: str | Path | None = None,
        config: ScratchpadSettings | None = None,
        settings: Settings | None = None,
    ):
        if folder is None or config is None:
            settings = settings if settings is not None else load_settings()
            config = config if config is not None else settings.scratchpad
            folder = folder if folder is not None else settings.folders.scratchpad
        self._config = config
        self._folder = Path(folder)

    @property
    def folder(self) -> Path:
        """Where the entries are kept."""
        return self._folder

    @property
    def config(self) -> ScratchpadSettings:
        """The scratchpad settings in use."""
        return self._config

    # -- caching ----------------------------------------------------------------------------

    def maybe_cache(self, tool: str, content: str) -> str:
        """Return ``content`` itself when it is small (or the scratchpad is disabled), else store
        it and return a reference: where it is, its size, the preview (when enabled) and how to
        read it back.

        Text for reading: a lone surrogate in ``content`` or ``tool`` becomes U+FFFD
        (:func:`amalfa.text_rules.for_model`), so any str can be cached and read back as UTF-8.
        """
        return self.cache(tool, content)[0]

    def cache(self, tool: str, content: str) -> tuple[str, str | None]:
        """:meth:`maybe_cache`, and the entry's id (None when ``content`` came back itself), for
        callers that tell the reader how to fetch the entry in their own words."""
        if not isinstance(content, str):
            raise TypeError(f"content must be a str, got {type(content).__name__}")
        content = for_model(content, what="content")
        tool = for_model(tool, what="tool")
        config = self._config
        size_bytes = len(content.encode("utf-8"))
        if not config.enabled or size_bytes < config.threshold_bytes:
            return content, None

        entry_id = content_id(content)
        path = self._path(entry_id)
        existing = self._load(entry_id, path)
        if existing is not None:
            try:
                os.utime(path)  # reused: no longer a candidate for pruning by age
            except FileNotFoundError:
                existing = None  # pruned or deleted since it was read: write it again
        if existing is not None:
            preview = existing.preview
        else:
            content_type = detect_content_type(content)
            preview = make_preview(content, content_type, config.preview_length)
            record = {
                "id": entry_id,
                "tool": tool,
                "timestamp": utc_now_iso(),
                "sizeBytes": size_bytes,
                "contentType": content_type,
                "preview": preview,
                "content": content,
            }
            self._write(path, json.dumps(record, ensure_ascii=False, indent=2))

        reference = f"📁 Output cached: {path} ({format_size(size_bytes)})"
        if config.include_preview:
            reference += f"\n\nPreview: {preview}"
        reference += f'\n\nTo read full content, use: Scratchpad.read_content("{entry_id}")'
        return reference, entry_id

    # -- reading ----------------------------------------------------------------------------

    def read(self, entry_id: str) -> ScratchpadEntry | None:
        """The entry, or None when it does not exist or is damaged (which also warns).

        Raises ValueError for anything but a 12-hex-digit id.
        """
        return self._load(entry_id, self._path(entry_id))

    def read_content(self, entry_id: str) -> str | None:
        """Just the content of the entry, or None (see :meth:`read`)."""
        entry = self.read(entry_id)
        return entry.content if entry is not None else None

    def list(self) -> builtins.list[EntryInfo]:
        """Metadata of every readable entry, newest first; damaged entries warn and are left out."""
        infos = []
        for path in self._entry_files():
            entry = self._load(path.stem, path)
            if entry is not None:
                infos.append(entry.info())
        infos.sort(key=lambda info: (info.timestamp, info.id), reverse=True)
        return infos

    def stats(self) -> ScratchpadStats:
        """How many entries there are, their total content size and the time span."""
        infos = self.list()
        if not infos:
            return ScratchpadStats(0, 0, None, None)
        timestamps = sorted(info.timestamp for info in infos)
        return ScratchpadStats(
            entries=len(infos),
            total_size_bytes=sum(info.size_bytes for info in infos),
            oldest_timestamp=timestamps[0],
            newest_timestamp=timestamps[-1],
        )

    # -- removing ---------------------------------------------------------------------------

    def delete(self, entry_id: str) -> bool:
        """Delete an entry; False when there was none. Raises ValueError for a malformed id."""
        try:
            self._path(entry_id).unlink()
        except FileNotFoundError:
            return False
        return True

    def prune(self) -> PruneResult:
        """Delete entries older than ``max_age_ms``, then the oldest until the files in the
        folder take no more than ``max_cache_size_bytes``.

        Temporary files left by a crashed writer are removed once they are older than the age
        limit too.
        """
        if not self._folder.is_dir():
            return PruneResult(0, 0)
        max_age_s = self._config.max_age_ms / 1000
        now = time.time()
        deleted = freed = 0
        remaining: builtins.list[tuple[float, int, Path]] = []

        for path in self._folder.iterdir():
            is_entry = _is_entry_file(path)
            if not (is_entry or _is_temp_file(path)):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # deleted by someone else meanwhile
            if now - stat.st_mtime > max_age_s:
                if _unlink(path):
                    deleted += 1
                    freed += stat.st_size
            elif is_entry:
                remaining.append((stat.st_mtime, stat.st_size, path))

        total = sum(size for _, size, _ in remaining)
        for _, size, path in sorted(remaining, key=lambda item: (item[0], item[2].name)):
            if total <= self._config.max_cache_size_bytes:
                break
            if _unlink(path):
                deleted += 1
                freed += size
            total -= size
        return PruneResult(deleted, freed)

    def clear(self) -> int:
        """Delete every entry; returns how many were deleted."""
        return sum(1 for path in self._entry_files() if _unlink(path))

    # -- the files --------------------------------------------------------------------------

    def _path(self, entry_id: str) -> Path:
        # The only way from an id to a path, so the check cannot be bypassed.
        if not isinstance(entry_id, str) or not _ID_PATTERN.fullmatch(entry_id):
            raise ValueError(
                f"invalid scratchpad id {entry_id!r}: expected 12 lowercase hex digits"
            )
        return self._folder / f"{entry_id}{_ENTRY_SUFFIX}"

    def _entry_files(self) -> builtins.list[Path]:
        if not self._folder.is_dir():
            return []
        return [path for path in self._folder.iterdir() if _is_entry_file(path)]

    def _load(self, entry_id: str, path: Path) -> ScratchpadEntry | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return _decode_entry(entry_id, raw)
        except _DamagedEntry as exc:
            warnings.warn(
                f"scratchpad entry {path} is damaged ({exc}); treating it as missing",
                UserWarning,
                stacklevel=3,
            )
            return None

    def _write(self, path: Path, text: str) -> None:
        atomic_write_text(path, text)


class _DamagedEntry(Exception):
    """Internal: an entry file that cannot be trusted (the message says why)."""


def _decode_entry(entry_id: str, raw: bytes) -> ScratchpadEntry:
    try:
        data: Any = parse_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _DamagedEntry("not UTF-8") from None
    except ValueError as exc:
        raise _DamagedEntry(str(exc)) from None
    if not isinstance(data, dict):
        raise _DamagedEntry("not a JSON object")
    expected_types = {
        "id": str,
        "tool": str,
        "timestamp": str,
        "sizeBytes": int,
        "contentType": str,
        "preview": str,
        "content": str,
    }
    for key, kind in expected_types.items():
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            raise _DamagedEntry(f"{key!r} missing or not a {kind.__name__}")
    if data["id"] != entry_id or content_id(data["content"]) != entry_id:
        raise _DamagedEntry("content does not match its id")
    if data["contentType"] not in ("json", "markdown", "text"):
        raise _DamagedEntry(f"unknown contentType {data['contentType']!r}")
    return ScratchpadEntry(
        id=entry_id,
        tool=data["tool"],
        timestamp=data["timestamp"],
        size_bytes=data["sizeBytes"],
        content_type=data["contentType"],
        preview=data["preview"],
        content=data["content"],
    )


def _is_entry_file(path: Path) -> bool:
    return (
        path.suffix == _ENTRY_SUFFIX
        and _ID_PATTERN.fullmatch(path.stem) is not None
        and path.is_file()
    )


def _is_temp_file(path: Path) -> bool:
    return (
        path.name.startswith(_TEMP_PREFIX) and path.name.endswith(_TEMP_SUFFIX) and path.is_file()
    )


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False  # someone else removed it first; not ours to count
    return True

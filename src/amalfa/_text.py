"""How amalfa writes values as text: byte sizes, one-line messages, paths and UTC timestamps.

One formatter for each, so the command line, the scratchpad, the stats files and the backups all
write the same thing the same way. The size format (``512B``, ``4.0KB``, ``1.50MB``) is the one
the original TypeScript scratchpad put into its references, which agents already read. Times are
UTC with milliseconds and a ``Z``, as JavaScript's ``toISOString`` writes them, so files shared
with the TypeScript tools sort and parse alike.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

__all__ = ["file_stamp", "format_size", "one_line", "show_path", "utc_now", "utc_now_iso"]


def format_size(size_bytes: int) -> str:
    """A byte count for people: ``512B``, ``4.0KB``, ``1.50MB``, ``2.00GB``."""
    if size_bytes < 1024:
        return f"{size_bytes}B"
    if size_bytes < 1024 ** 2:
        return f"{size_bytes / 1024:.1f}KB"
    if size_bytes < 1024 ** 3:
        return f"{size_bytes / 1024 ** 2:.2f}MB"
    return f"{size_bytes / 1024 ** 3:.2f}GB"


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(text.split())


def show_path(path: Path | str) -> str:
    """A path relative to the current folder when it is inside it (shorter to read)."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def utc_now_iso() -> str:
    """An ISO 8601 UTC timestamp with milliseconds: ``2024-05-01T12:00:00.123Z``."""
    return utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def file_stamp() -> str:
    """A UTC timestamp for file names that sorts by time: ``20240501T120000123456Z``."""
    return utc_now().strftime("%Y%m%dT%H%M%S%fZ")

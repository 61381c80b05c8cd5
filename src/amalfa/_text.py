"""How amalfa writes values as text: byte sizes, one-line messages, paths, UTC timestamps and
aligned tables.

One formatter for each, so the command line, the scratchpad, the stats files and the backups all
write the same thing the same way. The size format (``512B``, ``4.0KB``, ``1.50MB``) is the one
the original TypeScript scratchpad put into its references, which agents already read. Times are
UTC with milliseconds and a ``Z``, as JavaScript's ``toISOString`` writes them, so files shared
with the TypeScript tools sort and parse alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["file_stamp", "format_size", "one_line", "parse_json", "render_pairs", "render_table",
           "show_path", "utc_now", "utc_now_iso"]


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


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
                 flex: int | None = None, width: int | None = None) -> str:
    """Left-aligned columns under a header and a rule of dashes. Given a total ``width``, the
    ``flex`` column is cut (with an ellipsis) so the lines fit it; without, every character is
    kept (for piped output, grep and files)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    if flex is not None and width is not None:
        others = sum(w for i, w in enumerate(widths) if i != flex) + 2 * (len(widths) - 1)
        room = max(len(headers[flex]), 12, width - others - 1)
        if widths[flex] > room:
            widths[flex] = room
            for row in cells:
                if len(row[flex]) > room:
                    row[flex] = row[flex][:room - 1] + "\u2026"
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def render_pairs(pairs: Sequence[tuple[str, Any]]) -> str:
    """``name  value`` lines with the names padded to one width."""
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in pairs)


def parse_json(text: str | bytes) -> Any:
    """``json.loads(text)``; a document that does not parse raises ValueError saying where and
    why in one line (``invalid JSON at line 3, column 5: Expecting value``), including one
    nested too deeply, for which json raises RecursionError instead."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: "
                         f"{exc.msg}") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None

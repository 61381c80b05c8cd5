"""Text for people: aligned tables, name/value pairs, short paths and the progress bar.

Tables fit a terminal by cutting one flexible column; piped output keeps every character, for
grep and friends. JSON output needs none of this (``Context.emit_json``).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import IO, Any

from amalfa._text import format_size, one_line, show_path

__all__ = ["ProgressBar", "format_size", "one_line", "render_pairs", "render_table", "show_path"]


def render_table(headers: list[str], rows: list[list[Any]], *, flex: int | None = None) -> str:
    """Left-aligned columns. On a terminal the ``flex`` column is cut (with an ellipsis) to fit
    its width; piped output keeps every character, for grep and friends."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    if flex is not None and sys.stdout.isatty():
        columns = shutil.get_terminal_size().columns
        others = sum(w for i, w in enumerate(widths) if i != flex) + 2 * (len(widths) - 1)
        room = max(len(headers[flex]), 12, columns - others - 1)
        if widths[flex] > room:
            widths[flex] = room
            for row in cells:
                if len(row[flex]) > room:
                    row[flex] = row[flex][:room - 1] + "\u2026"
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def render_pairs(pairs: list[tuple[str, Any]]) -> str:
    """``name  value`` lines with the names padded to one width."""
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in pairs)


class ProgressBar:
    """``embedding [#########.........] 120/400  31.2 files/s`` on stderr, redrawn in place at
    most ten times a second. Only used when stderr is a terminal."""

    def __init__(self, label: str, stream: IO[str]) -> None:
        self.label = label
        self.stream = stream
        self.started = time.perf_counter()
        self.last_draw = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        rate = done / (now - self.started) if now > self.started and done else 0.0
        tail = f" {done}/{total}  {rate:.1f} files/s"
        width = max(10, min(40, shutil.get_terminal_size((80, 24)).columns
                            - len(self.label) - len(tail) - 4))
        filled = width * done // total if total else width
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}]{tail}")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()

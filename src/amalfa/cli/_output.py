"""Text for people on the command line: tables that fit the terminal, and the progress bar.

The formatters themselves (tables, pairs, sizes, paths) are the library's, in
:mod:`amalfa._text`; this module adds what only a terminal needs. Tables fit a terminal by
cutting one flexible column; piped output keeps every character, for grep and friends. JSON
output needs none of this (``Context.emit_json``).
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import IO, Any

from amalfa import _text
from amalfa._text import format_size, one_line, render_pairs, show_path

__all__ = ["ProgressBar", "format_size", "one_line", "render_pairs", "render_table", "show_path"]


def render_table(headers: list[str], rows: list[list[Any]], *, flex: int | None = None) -> str:
    """:func:`amalfa._text.render_table`; on a terminal the ``flex`` column is cut to fit its
    width, piped output keeps every character."""
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    return _text.render_table(headers, rows, flex=flex, width=width)


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

"""Reading a node's text back from its source file.

The graph is hollow: a node keeps the path of the file it came from (``meta["source"]``,
relative to the project root) and the sha256 of the file's bytes (``hash``), never the text.
:func:`read_node` opens that file and returns the document (front matter off unless ``raw``),
or a range of its lines (a passage: search hits give 1-based line ranges in the file).

It refuses, with a :class:`~amalfa.errors.SourceReadError` saying which:

- a node without a source;
- a source that leads outside the configured sources (``../`` in a stored path, an absolute
  path, a file no source folder or glob covers): the check is on the path as written, after
  ``..`` is folded, so a database edited by another tool cannot make ``read`` print any file;
- a file that is gone, or whose bytes no longer hash to what was ingested (the line numbers and
  the search hits that point here would be wrong): ``check_hash=False`` reads it anyway.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from amalfa.errors import NodeNotFoundError, SourceReadError

if TYPE_CHECKING:
    from amalfa.db import ResonanceDB

__all__ = ["NodeText", "parse_line_range", "read_node", "source_allowed", "source_base"]

_GLOB_CHARS = re.compile(r"[*?\[]")
_LINE_RANGE = re.compile(r"\A\s*(\d*)\s*:\s*(\d*)\s*\Z")
_FENCE = "---"
_FENCE_ENDS = ("---", "...")


@dataclass(frozen=True, slots=True)
class NodeText:
    """A node's text from its source file: ``text`` is file lines ``line_start..line_end``
    (1-based, inclusive; ``line_end < line_start`` for an empty body)."""

    id: str
    source: str
    path: Path
    text: str
    line_start: int
    line_end: int

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "source": self.source, "path": str(self.path),
                "line_start": self.line_start, "line_end": self.line_end, "text": self.text}


def parse_line_range(spec: str) -> tuple[int | None, int | None]:
    """``"A:B"`` -> (A, B), 1-based and inclusive; either side may be left out (``"12:"``).

    Raises ValueError naming the problem for anything else (``"0:3"``, ``"9:2"``, ``"a:b"``).
    """
    if not isinstance(spec, str):
        raise TypeError(f"lines must be a str like '10:20', not {type(spec).__name__}")
    match = _LINE_RANGE.match(spec)
    if match is None:
        raise ValueError(f"lines {spec!r} is not a range like '10:20', '10:' or ':20'")
    first = int(match[1]) if match[1] else None
    last = int(match[2]) if match[2] else None
    if (first is not None and first < 1) or (last is not None and last < 1):
        raise ValueError(f"lines {spec!r}: line numbers start at 1")
    if first is not None and last is not None and last < first:
        raise ValueError(f"lines {spec!r}: the range ends before it starts")
    return first, last


def source_base(source: str) -> PurePosixPath:
    """The fixed folder (or file) part of a configured source: ``docs/**/*.md`` -> ``docs``."""
    parts = []
    for part in PurePosixPath(source.replace(os.sep, "/")).parts:
        if _GLOB_CHARS.search(part):
            break
        parts.append(part)
    return PurePosixPath(posixpath.normpath("/".join(parts) or "."))


def source_allowed(source: str, sources: Iterable[str],
                   root: str | os.PathLike[str] = ".") -> bool:
    """Whether a stored ``source`` path (relative to ``root``) lies under a configured source,
    judged on the path as written with ``..`` folded (the ingest's own :class:`Scope` rule)."""
    from amalfa.ingest.discover import Scope

    if not source or source.startswith(("/", "\\")) or os.path.isabs(source):
        return False
    folded = posixpath.normpath(source.replace("\\", "/"))
    if folded == ".." or folded.startswith("../"):
        return False
    return Scope([os.fspath(item) for item in sources], Path(root)).contains(folded)


def _body_start(lines: list[str]) -> int:
    """The index of the first line after the front matter (0 when there is none).

    Front matter is a first line ``---`` and a later line ``---`` or ``...``; a file whose fence
    never closes has none (the whole file is body, as the ingest reads it).
    """
    if not lines or lines[0].rstrip("\r\n").rstrip() != _FENCE:
        return 0
    for index in range(1, len(lines)):
        if lines[index].rstrip("\r\n").rstrip() in _FENCE_ENDS:
            return index + 1
    return 0


def read_node(db: ResonanceDB, node_id: str, *, root: str | os.PathLike[str],
              sources: Iterable[str], raw: bool = False,
              lines: tuple[int | None, int | None] | str | None = None,
              check_hash: bool = True) -> NodeText:
    """The text of node ``node_id`` from its source file under ``root``.

    ``raw=True`` keeps the front matter; ``lines`` ("A:B" or a pair from
    :func:`parse_line_range`) picks file lines A..B instead. ``sources`` are the configured
    sources (settings ``sources``): a stored path outside them is refused. Raises
    NodeNotFoundError, SourceReadError (no source, outside the sources, gone, changed since
    ingest) or ValueError (a line range outside the file).
    """
    if type(node_id) is not str or not node_id:
        raise ValueError(f"node id must be a non-empty str, got {node_id!r}")
    line_range = parse_line_range(lines) if isinstance(lines, str) else lines
    node = db.get_node(node_id)
    if node is None:
        raise NodeNotFoundError([node_id])
    source = node.meta.get("source")
    if not isinstance(source, str) or not source:
        raise SourceReadError(f"node {node_id!r} has no source file (it was not ingested from "
                              "a file)")
    source_list = list(sources)
    if not source_allowed(source, source_list, root):
        raise SourceReadError(f"node {node_id!r}: its source {source!r} is outside the "
                              f"configured sources ({', '.join(source_list) or 'none'}); "
                              "refusing to read it")
    path = Path(root) / os.path.normpath(source)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceReadError(f"node {node_id!r}: its source file {source} is gone (deleted or "
                              "moved since ingest); run `amalfa init` to bring the graph in "
                              "step") from None
    except IsADirectoryError:
        raise SourceReadError(f"node {node_id!r}: its source {source} is a folder") from None
    except OSError as exc:
        raise SourceReadError(f"node {node_id!r}: cannot read {source}: {exc.strerror}") from None
    if check_hash and node.hash and hashlib.sha256(data).hexdigest() != node.hash:
        raise SourceReadError(f"node {node_id!r}: {source} has changed since it was ingested; "
                              "run `amalfa init` (or keep `amalfa watch` running) to re-ingest")
    text = data.decode("utf-8", errors="replace")
    file_lines = text.splitlines(keepends=True)
    if line_range is not None:
        first, last = line_range
        first = 1 if first is None else first
        last = len(file_lines) if last is None else last
        if first > len(file_lines):
            raise ValueError(f"lines {first}:{last} are outside {source}, which has "
                             f"{len(file_lines)} lines")
        last = min(last, len(file_lines))
        return NodeText(node_id, source, path, "".join(file_lines[first - 1:last]), first, last)
    start = 0 if raw else _body_start(file_lines)
    return NodeText(node_id, source, path, "".join(file_lines[start:]), start + 1,
                    len(file_lines))

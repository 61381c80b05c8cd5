"""Finding the Markdown files of a run: folders, globs and files, minus the exclude patterns.

Everything here works on paths relative to the project root, because node ids are made from
those paths (:func:`amalfa.db.generate_id`) and must not depend on where the user stood.

* A folder is searched recursively for ``*.md``/``*.markdown``; a glob (``docs/**/*.md``;
  ``*``, ``?``, ``[..]`` stay inside one path component, ``**`` spans any number) yields the
  Markdown files it matches and everything under folders it matches; a file named outright is
  taken whatever its suffix, because the user asked for it.
* Exclude patterns are gitignore patterns, matched by ``pathspec``: one without ``/`` matches
  any single path component (``node_modules``, ``*.draft.md``); one with ``/`` is anchored at the
  root and matches a path or any of its parent folders (``docs/internals``, ``**/drafts/*``).
  Excluded folders are pruned whole, never walked.
* Symbolic links to folders are followed once (loops are cut) and a file reached by two paths
  is returned once.

:class:`Scope` answers the pipeline's other question: which stored nodes a run may remove (only
those whose source path the run's sources cover, whether or not the file still exists).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

import pathspec

from amalfa.ingest.notices import IngestWarning

__all__ = ["MARKDOWN_SUFFIXES", "Excludes", "Scope", "absolute", "discover", "is_markdown",
           "relative_posix", "strip_markdown_suffix"]

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})


def discover(
    sources: Iterable[str | os.PathLike[str]],
    *,
    root: Path | str,
    exclude_patterns: Iterable[str] = (),
) -> list[Path]:
    """Expand folders, globs and files into the sorted list of Markdown files to ingest.

    Each source is relative to ``root`` (absolute ones must lie inside it, since ids are made from
    the path relative to the root). A folder is searched recursively for ``*.md``/``*.markdown``;
    a glob (``docs/**/*.md``; ``*``, ``?``, ``[..]`` stay inside one path component, ``**``
    spans any number) yields the Markdown files it matches and everything under folders it
    matches; a file named outright is taken whatever its suffix, because the user asked for it.

    An exclude pattern without ``/`` matches any single path component (``node_modules``,
    ``*.draft.md``); one with ``/`` is a glob anchored at the root that matches a path or any of
    its parent folders (``docs/internals``, ``**/drafts/*``). Symbolic links to folders are
    followed once (loops are cut) and a file reached by two paths is returned once, under the
    path that sorts first. Sources that match nothing and sources outside the root give an
    :class:`IngestWarning`.
    """
    root_path = absolute(root)
    excludes = Excludes(exclude_patterns)
    found: set[Path] = set()
    for source in sources:
        text = os.fspath(source)
        if not isinstance(text, str):
            raise TypeError(f"sources must hold path strings, not {type(text).__name__}")
        matches = list(_expand_source(text, root_path, excludes))
        if not matches:
            warnings.warn(f"{text}: no Markdown files found", IngestWarning, stacklevel=2)
        found.update(matches)

    # A file reachable through a symbolic link and directly would otherwise become two nodes.
    by_target: dict[str, Path] = {}
    for path in sorted(found, key=lambda p: relative_posix(p, root_path)):
        by_target.setdefault(os.path.realpath(path), path)
    return sorted(by_target.values(), key=lambda p: relative_posix(p, root_path))


# --------------------------------------------------------------------------------------------
# Parsing documents
# --------------------------------------------------------------------------------------------


class Scope:
    """Which root-relative paths the sources of a run cover, whether or not the files exist:
    a folder covers everything under it, a file itself, a glob what it (or a parent) matches."""

    def __init__(self, sources: list[str], root: Path) -> None:
        self.everything = False
        self.prefixes: list[str] = []
        self.globs: list[re.Pattern[str]] = []
        for source in sources:
            pattern = _root_relative(source.replace(os.sep, "/"), root)
            if pattern is None:
                continue
            if _GLOB_MAGIC_RE.search(pattern):
                self.globs.append(_glob_regex(pattern))
            elif pattern == ".":
                self.everything = True
            else:
                self.prefixes.append(pattern)

    def contains(self, rel: str) -> bool:
        if self.everything:
            return True
        if any(rel == prefix or rel.startswith(prefix + "/") for prefix in self.prefixes):
            return True
        if self.globs:
            segments = rel.split("/")
            heads = ["/".join(segments[:i]) for i in range(len(segments), 0, -1)]
            return any(glob.fullmatch(head) for glob in self.globs for head in heads)
        return False


_GLOB_MAGIC_RE = re.compile(r"[*?\[]")


def absolute(path: Path | str) -> Path:
    # Lexical, not resolve(): ids come from the path the user sees, not a symlink target.
    return Path(os.path.abspath(os.fspath(path)))


def relative_posix(path: Path, root: Path) -> str:
    """The POSIX path of ``path`` inside ``root``; ValueError when it is outside."""
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"{path} is not inside the project root {root}")
    return PurePosixPath(Path(rel)).as_posix()


def is_markdown(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in MARKDOWN_SUFFIXES


def strip_markdown_suffix(name: str) -> str:
    return name[: -len(PurePosixPath(name).suffix)] if is_markdown(name) else name


def _expand_source(source: str, root: Path, excludes: Excludes) -> Iterator[Path]:
    pattern = _root_relative(source.replace(os.sep, "/"), root)
    if pattern is None:
        warnings.warn(f"{source}: outside the project root {root}; skipped", IngestWarning,
                      stacklevel=3)
        return
    if _GLOB_MAGIC_RE.search(pattern):
        yield from _expand_glob(pattern, root, excludes)
        return
    if pattern == ".":
        yield from _walk_markdown(root, "", excludes)
        return
    if excludes.match(pattern):
        return
    path = root / pattern
    if path.is_dir():
        yield from _walk_markdown(path, pattern, excludes)
    elif path.is_file():
        yield path


def _root_relative(pattern: str, root: Path) -> str | None:
    """A source path or glob rewritten relative to ``root`` (``"."`` for the root itself).

    The literal head before the first wildcard is normalised (``..``, absolute paths); None when
    it leaves the root, because such files would have no id.
    """
    parts = pattern.split("/")
    literal = next((i for i, part in enumerate(parts) if _GLOB_MAGIC_RE.search(part)), len(parts))
    head = "/".join(parts[:literal]) or ("/" if pattern.startswith("/") else ".")
    rel = os.path.relpath(os.path.abspath(os.path.join(root, head)), root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    head_rel = "" if rel == os.curdir else PurePosixPath(Path(rel)).as_posix()
    return "/".join(part for part in (head_rel, *parts[literal:]) if part) or "."


def _walk_markdown(top: Path, top_rel: str, excludes: Excludes) -> Iterator[Path]:
    """Markdown files under ``top``, following folder symlinks but never the same folder twice."""
    for path, _ in _walk(top, top_rel, excludes):
        if is_markdown(path.name):
            yield path


def _walk(top: Path, top_rel: str, excludes: Excludes) -> Iterator[tuple[Path, str]]:
    """Every file under ``top`` as ``(path, path relative to the root)``; excluded paths are
    pruned whole, and a folder met again through a symlink loop is not entered twice."""
    seen_folders: set[tuple[int, int]] = set()
    stack = [(top, top_rel)]
    while stack:
        folder, folder_rel = stack.pop()
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in seen_folders:
                continue
            seen_folders.add((info.st_dev, info.st_ino))
            entries = list(os.scandir(folder))
        except OSError as exc:
            warnings.warn(f"{folder}: cannot list: {exc.strerror or exc}", IngestWarning,
                          stacklevel=4)
            continue
        for entry in entries:
            rel = f"{folder_rel}/{entry.name}" if folder_rel else entry.name
            if excludes.match(rel):
                continue
            try:
                if entry.is_dir():
                    stack.append((Path(entry.path), rel))
                elif entry.is_file():
                    yield Path(entry.path), rel
            except OSError:  # a broken symlink or a vanished entry: nothing to ingest
                continue


def _expand_glob(pattern: str, root: Path, excludes: Excludes) -> Iterator[Path]:
    parts = pattern.split("/")
    literal = 0
    while literal < len(parts) - 1 and not _GLOB_MAGIC_RE.search(parts[literal]):
        literal += 1
    base_rel = "/".join(parts[:literal])
    base = root / base_rel if base_rel else root
    if (base_rel and excludes.match(base_rel)) or not base.is_dir():
        return
    regex = _glob_regex(pattern)
    for path, rel in _walk(base, base_rel, excludes):
        if not is_markdown(path.name):
            continue
        # A glob that matches a folder takes everything under it, as pathlib's "docs/*" would
        # hand back the folder and a user expects its files.
        segments = rel.split("/")
        if any(regex.fullmatch("/".join(segments[:i])) for i in range(len(segments), 0, -1)):
            yield path


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a path glob: ``*``/``?``/``[..]`` within a component, ``**`` across them."""
    parts = pattern.strip("/").split("/")
    out: list[str] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        out.append(_glob_component(part))
        if not last:
            out.append("/")
    return re.compile("".join(out))


def _glob_component(part: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(part):
        char = part[i]
        if char == "*":
            while i + 1 < len(part) and part[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = part.find("]", i + 2 if part[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = part[i + 1 : end]
                negate = body[:1] in ("!", "^")
                body = body[1:] if negate else body
                out.append("[" + ("^/" if negate else "") + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


class Excludes:
    """The exclude patterns as one gitignore matcher (pathspec's ``GitIgnoreSpec``): a
    pattern without ``/`` matches any path component, one with ``/`` is anchored at the root,
    and a pattern that matches a folder excludes everything under it."""

    def __init__(self, patterns: Iterable[str]) -> None:
        cleaned = [p.strip().removeprefix("./").strip("/") for p in patterns
                   if p and p.strip("/. ")]
        self._spec = pathspec.GitIgnoreSpec.from_lines(cleaned) if cleaned else None

    def __bool__(self) -> bool:
        return self._spec is not None

    def match(self, rel: str) -> bool:
        """Whether the root-relative POSIX path ``rel`` or any folder above it is excluded."""
        if self._spec is None:
            return False
        segments = rel.split("/")
        return any(self._spec.match_file("/".join(segments[:i + 1]))
                   for i in range(len(segments)))

"""Markdown files -> hollow nodes and edges: everything behind ``amalfa init``.

Two layers. The **parse layer** finds files with :func:`discover` and turns them into
:class:`ParsedDocument` records with :func:`parse_documents` (or one at a time with
:func:`parse_document`); :func:`resolve_links` gives the edges between them. It touches neither
the database nor the model, so the rules of ingestion (ids, titles, summaries, links) can be
tested on their own and reused by a watcher without loading anything heavy.

The **pipeline**, :func:`ingest`, runs the parse layer and brings a :class:`~amalfa.db.ResonanceDB`
in step with the files: new and changed files (by sha256) are embedded and written, unchanged
files are left alone (their rows are not even rewritten), nodes of deleted files are removed with
their edges, and the link edges are synchronised. The database and the embedder are passed in,
so the pipeline runs the same against any model and any database file.

Decisions a reader may look for:

* Ids come from :func:`generate_id` of the path relative to the project root, exactly as the
  original system made them, so databases it built keep matching.
* Markdown links become ``links_to`` edges and ``[[wikilinks]]`` become ``wikilink`` edges, so a
  reader of the graph can tell a path written by hand from a name resolved by lookup.
* Only links to Markdown files (``.md``/``.markdown``) among the ingested documents become edges;
  links into code, images, other sites or to files outside the root are dropped.
* Front matter is read by a small YAML subset parser (no PyYAML, no object construction); YAML
  1.2 core scalars, dates kept as strings. Front matter it cannot read is kept as body text with an
  :class:`IngestWarning`, so one bad file never stops an ingest.
* A node belongs to ingestion when its ``meta`` has a ``source`` path. Only such nodes are ever
  removed, and only when their file lies inside the paths of this run and was not found (deleted,
  renamed, or excluded now). Nodes written by other tools, and ingested nodes outside this run's
  paths, are never touched, so ``amalfa init docs/guide`` leaves ``docs/concepts`` alone.
* Writes go in one transaction per batch of files (node rows with their embeddings), then one
  transaction for deletions and link edges. An interrupted run leaves each batch written whole or
  not at all; the next run finds the remaining files changed and finishes the job, and edges are
  recomputed from all files on every run, so they heal too.
* The texts to embed are sorted by length before they are cut into batches, so each model batch
  pads its texts to nearly the same length.
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import posixpath
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from amalfa.db import generate_id
from amalfa.errors import AmalfaError

if TYPE_CHECKING:
    from amalfa.db import ResonanceDB
    from amalfa.embedder import Embedder
    from amalfa.stats import IngestionStats

__all__ = [
    "MARKDOWN_SUFFIXES",
    "MAX_FILE_BYTES",
    "SUMMARY_MAX_CHARS",
    "EDGE_LINKS_TO",
    "EDGE_WIKILINK",
    "IngestWarning",
    "IngestError",
    "DocumentTooLargeError",
    "DocumentIdError",
    "FrontMatterError",
    "ModelMismatchError",
    "ParsedDocument",
    "ParseReport",
    "IngestResult",
    "ProgressCallback",
    "ingest",
    "recorded_model",
    "discover",
    "parse_documents",
    "parse_document",
    "resolve_links",
    "parse_front_matter",
    "generate_id",
]

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
# Larger files are almost always generated dumps or logs; embedding them would only cost time.
MAX_FILE_BYTES = 10 * 1024 * 1024
# The original system's summary column holds the lead paragraph, at most this many characters.
SUMMARY_MAX_CHARS = 500
EDGE_LINKS_TO = "links_to"
EDGE_WIKILINK = "wikilink"
# Edge types this module owns: it adds and removes only these, never edges other tools wrote.
INGESTED_EDGE_TYPES = (EDGE_LINKS_TO, EDGE_WIKILINK)
# Files written per transaction. Texts are embedded a batch at a time too, so a batch is also
# the most work an interruption can throw away.
DEFAULT_BATCH_SIZE = 64
# The amalfa_meta key under which the name of the model that made the embeddings is recorded.
MODEL_META_KEY = "embedding_model"

DEFAULT_DOMAIN = "knowledge"
DEFAULT_LAYER = "experience"
DEFAULT_TYPE = "document"

# Front-matter fields that become node columns; the rest go to ``meta``.
_COLUMN_FIELDS = frozenset({"title", "date", "domain", "layer", "type"})


# --------------------------------------------------------------------------------------------
# Errors and warnings
# --------------------------------------------------------------------------------------------


class IngestWarning(UserWarning):
    """A file was skipped or read leniently; ingestion went on. The message names the file."""


class IngestError(AmalfaError):
    """A file cannot become a document (too large, no usable id, unreadable front matter)."""


class DocumentTooLargeError(IngestError):
    """The file is larger than the size cap; it is skipped rather than embedded."""


class DocumentIdError(IngestError, ValueError):
    """The file's path gives an empty id (a name with no letters or digits, such as ``_.md``)."""


class ModelMismatchError(IngestError):
    """The database's embeddings come from another model than the one about to be used."""


class FrontMatterError(IngestError, ValueError):
    """Front matter outside the supported YAML subset. ``line`` is 1-based in the file."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ParsedDocument:
    """One Markdown file, ready to become a hollow node.

    ``links`` holds the ids of Markdown files this one links to with ``[text](path)`` (whether or
    not they were ingested); ``wikilinks`` holds the raw ``[[target]]`` names, which can only be
    resolved against the whole set of documents (see :func:`resolve_links`).
    """

    id: str
    title: str
    hash: str
    summary: str | None
    meta: dict[str, Any]
    date: str
    domain: str
    layer: str
    type: str
    text: str
    source: str
    path: Path
    links: list[str] = field(default_factory=list)
    wikilinks: list[str] = field(default_factory=list)

    def node_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``amalfa.Node`` (it calls the title ``label``); no embedding."""
        return {
            "id": self.id,
            "type": self.type,
            "label": self.title,
            "domain": self.domain,
            "layer": self.layer,
            "summary": self.summary,
            "hash": self.hash,
            "meta": self.meta,
            "date": self.date,
        }


@dataclass(slots=True)
class ParseReport:
    """What :func:`parse_documents` made: the documents and the files it skipped, with why."""

    documents: list[ParsedDocument] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Finding files
# --------------------------------------------------------------------------------------------


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
    root_path = _absolute(root)
    excludes = [_compile_exclude(p) for p in exclude_patterns if p and p.strip("/. ")]
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
    for path in sorted(found, key=lambda p: _relative_posix(p, root_path)):
        by_target.setdefault(os.path.realpath(path), path)
    return sorted(by_target.values(), key=lambda p: _relative_posix(p, root_path))


# --------------------------------------------------------------------------------------------
# Parsing documents
# --------------------------------------------------------------------------------------------


def parse_documents(
    paths: Iterable[Path | str],
    *,
    root: Path | str,
    max_bytes: int = MAX_FILE_BYTES,
) -> ParseReport:
    """Parse many files, skipping (with an :class:`IngestWarning`) those that cannot be ingested.

    Skipped: files over ``max_bytes``, unreadable or vanished files, names without a usable id,
    and a file whose id another file already took (``My File.md`` and ``my-file.md`` share
    ``my-file``; the first in order wins, so repeated runs keep the same node).
    """
    report = ParseReport()
    owner_of_id: dict[str, str] = {}
    for path in paths:
        try:
            doc = parse_document(Path(path), root=root, max_bytes=max_bytes)
        except IngestError as exc:
            reason = str(exc)
        except OSError as exc:
            reason = f"{path}: cannot read: {exc.strerror or exc}"
        else:
            if doc.id not in owner_of_id:
                owner_of_id[doc.id] = doc.source
                report.documents.append(doc)
                continue
            reason = f"{doc.source}: id {doc.id!r} is already used by {owner_of_id[doc.id]}"
        warnings.warn(f"skipped {reason}", IngestWarning, stacklevel=2)
        report.skipped.append((Path(path), reason))
    return report


def parse_document(
    path: Path | str,
    *,
    root: Path | str,
    text: str | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> ParsedDocument:
    """Read one Markdown file (a relative ``path`` is taken relative to ``root``).

    With ``text`` the file is not read: ``text`` is the content, the hash is over its UTF-8
    bytes, and the date falls back to the file's mtime if it exists, else today (UTC).
    Raises :class:`DocumentTooLargeError`, :class:`DocumentIdError`, ``OSError`` or
    ``ValueError`` (a path outside ``root``).
    """
    root_path = _absolute(root)
    path = Path(path)
    if not path.is_absolute():
        path = root_path / path
    source = _relative_posix(path, root_path)
    try:
        doc_id = generate_id(source)
    except ValueError:
        raise DocumentIdError(f"{source}: the file name gives an empty id") from None

    if text is None:
        data, mtime = _read_capped(path, max_bytes)
        content = _decode(data, source)
    else:
        data = text.encode("utf-8")
        content = _normalise_text(text)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = None

    front, body = parse_front_matter(content, source=source)
    visible = _mask_fences_and_comments(body)
    title = _front_matter_text(front, "title", source) or _first_h1(visible) or path.stem

    summary = _lead_paragraph(visible)
    return ParsedDocument(
        id=doc_id,
        title=title,
        hash=hashlib.sha256(data).hexdigest(),
        summary=_truncate_words(summary, SUMMARY_MAX_CHARS) if summary else None,
        meta=_meta(front, source),
        date=_front_matter_text(front, "date", source) or _iso_date(mtime),
        domain=_front_matter_text(front, "domain", source) or DEFAULT_DOMAIN,
        layer=_front_matter_text(front, "layer", source) or DEFAULT_LAYER,
        type=_front_matter_text(front, "type", source) or DEFAULT_TYPE,
        text=_embedding_text(title, body, visible),
        source=source,
        path=path,
        links=_markdown_link_ids(visible, source),
        wikilinks=_wikilink_targets(visible),
    )


# --------------------------------------------------------------------------------------------
# Links between documents
# --------------------------------------------------------------------------------------------


def resolve_links(docs: Sequence[ParsedDocument]) -> list[tuple[str, str, str]]:
    """Unique ``(source_id, target_id, edge_type)`` triples for links between ``docs``.

    Markdown links give ``links_to`` edges when their target id is among ``docs``. A wikilink
    ``[[name]]``/``[[folder/name]]`` is matched case-insensitively against file names with or
    without suffix (``name`` ending a path, for the folder form), then by slug (``[[Getting
    Started]]`` finds ``getting-started.md``); when several files match, the one in the linking
    file's folder wins, then the shallowest, then the first by path. No self-loops.
    """
    ids = {doc.id for doc in docs}
    by_stem: dict[str, list[ParsedDocument]] = {}
    by_slug: dict[str, list[ParsedDocument]] = {}
    for doc in docs:
        stem = _strip_markdown_suffix(PurePosixPath(doc.source).name)
        by_stem.setdefault(stem.casefold(), []).append(doc)
        slug = _slug(stem)
        if slug:
            by_slug.setdefault(slug, []).append(doc)

    edges: dict[tuple[str, str, str], None] = {}
    for doc in docs:
        for target in doc.links:
            if target in ids and target != doc.id:
                edges[(doc.id, target, EDGE_LINKS_TO)] = None
        for name in doc.wikilinks:
            target_doc = _match_wikilink(name, doc, by_stem, by_slug)
            if target_doc is not None and target_doc.id != doc.id:
                edges[(doc.id, target_doc.id, EDGE_WIKILINK)] = None
    return list(edges)


# --------------------------------------------------------------------------------------------
# The pipeline: files -> database
# --------------------------------------------------------------------------------------------

#: ``progress(done, total)``: called with the number of files embedded and written so far.
ProgressCallback = Callable[[int, int], None]


@dataclass(slots=True)
class IngestResult:
    """What one run of :func:`ingest` did. Ids are node ids; ``seconds`` holds the wall time of
    each phase (``discover``, ``parse``, ``embed``, ``write``, ``link``, ``total``)."""

    files: int = 0
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    links: list[tuple[str, str, str]] = field(default_factory=list)
    edges_added: int = 0
    edges_removed: int = 0
    model: str = ""
    domains: dict[str, str] = field(default_factory=dict)  # id -> domain, this run's documents
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def documents(self) -> int:
        """Files that became (or stayed) nodes in this run."""
        return len(self.domains)

    @property
    def embedded(self) -> int:
        """Files embedded and written: the new ones and the changed ones."""
        return len(self.added) + len(self.updated)

    def links_by_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, _, edge_type in self.links:
            counts[edge_type] = counts.get(edge_type, 0) + 1
        return counts

    def record(self, stats: IngestionStats) -> None:
        """Count the state this run leaves (every document, not just the changed ones) into
        ``stats``, per domain: nodes, vectors and link edges by type (by the source's domain)."""
        for domain in self.domains.values():
            stats.record_node(domain)
            stats.record_vector(domain)
        for source, _, edge_type in self.links:
            stats.record_edge(self.domains[source], edge_type)


def ingest(
    sources: Iterable[str | os.PathLike[str]],
    *,
    db: ResonanceDB,
    embedder: Embedder,
    root: Path | str,
    exclude_patterns: Iterable[str] = (),
    files: Sequence[Path] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    embed_batch_size: int = 32,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Bring ``db`` in step with the Markdown files under ``sources`` (see the module docstring).

    ``sources`` are folders, files or globs relative to ``root`` as for :func:`discover`; they
    also bound which ingested nodes may be removed. ``files`` is the output of :func:`discover`
    when the caller already ran it. ``batch_size`` files are embedded and written per
    transaction, the model seeing ``embed_batch_size`` texts at a time. ``force`` embeds every
    file again (after a model change). ``progress`` is called after every batch.

    Raises :class:`ModelMismatchError` when the database's embeddings come from another model (and
    ``force`` is off), ValueError when the dimensions disagree; nothing is written then.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    from amalfa.db import Node

    source_list: list[str] = [os.fspath(source) for source in sources]
    root_path = _absolute(root)
    excludes = list(exclude_patterns)
    result = IngestResult(model=embedder.model_name)
    clock = _PhaseClock(result.seconds)

    with clock("discover"):
        if files is None:
            files = discover(source_list, root=root_path, exclude_patterns=excludes)
        result.files = len(files)
    with clock("parse"):
        report = parse_documents(files, root=root_path)
        docs = report.documents
        result.skipped = report.skipped
        result.domains = {doc.id: doc.domain for doc in docs}
    _check_model(db, embedder, force=force)

    # What the database holds from earlier runs, and what has to change.
    known = _ingested_nodes(db)
    to_embed: list[ParsedDocument] = []
    for doc in docs:
        before = known.get(doc.id)
        if before is None:
            result.added.append(doc.id)
        elif force or before.hash != doc.hash or before.source != doc.source \
                or not before.has_embedding:
            result.updated.append(doc.id)
        else:
            result.unchanged.append(doc.id)
            continue
        to_embed.append(doc)
    kept_ids = set(result.domains) | _ids_of(report.skipped, root_path)
    scope = _Scope(source_list, root_path)
    result.removed = [node_id for node_id, node in known.items()
                      if node_id not in kept_ids and scope.contains(node.source)]

    # Nodes: one transaction per batch; texts of similar length share a batch.
    to_embed.sort(key=lambda doc: len(doc.text))
    if progress is not None and to_embed:
        progress(0, len(to_embed))
    model_recorded = recorded_model(db) == embedder.model_name
    done = 0
    for start in range(0, len(to_embed), batch_size):
        batch = to_embed[start:start + batch_size]
        with clock("embed"):
            vectors = embedder.embed_batch([doc.text for doc in batch],
                                           batch_size=embed_batch_size)
        with clock("write"), db.transaction():
            if not model_recorded:
                _record_model(db, embedder.model_name)
                model_recorded = True
            db.insert_nodes(Node(**doc.node_fields(), embedding=vector)
                            for doc, vector in zip(batch, vectors))
        done += len(batch)
        if progress is not None:
            progress(done, len(to_embed))

    # Deletions and link edges: one transaction, computed over every file of the run so that
    # edges left out by an interrupted run are restored.
    with clock("link"):
        removed = set(result.removed)
        stand_ins = [_stand_in(node_id, node.source) for node_id, node in known.items()
                     if node_id not in result.domains and node_id not in removed]
        result.links = resolve_links([*docs, *stand_ins])
        wanted = set(result.links)
        stored = {edge for edge in _link_edges(db) if edge[0] in result.domains}
        with db.transaction():
            delete_edge = db.raw.prepare(_DELETE_EDGE)
            for edge in sorted(stored - wanted):
                result.edges_removed += delete_edge.run(edge)
            for edge in result.links:
                if edge not in stored:
                    result.edges_added += db.insert_edge(*edge)
            for node_id in result.removed:
                db.delete_node(node_id)  # its edges from and to other nodes go with it
    result.seconds["total"] = clock.total()
    return result


def recorded_model(db: ResonanceDB) -> str | None:
    """The name of the model the database's embeddings come from, as :func:`ingest` recorded it
    (None for a database it never wrote embeddings to)."""
    conn = db.raw
    if conn.prepare(_HAS_META_TABLE).first() is None:
        return None
    row = conn.prepare(_GET_META).first((MODEL_META_KEY,))
    return None if row is None or row[0] is None else str(row[0])


# ---- pipeline details ---------------------------------------------------------------------------

# The database has no API for these yet: they run on the connection, so the connection's history
# triggers still audit the edge deletions.
_HAS_META_TABLE = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'amalfa_meta'"
_GET_META = "SELECT value FROM amalfa_meta WHERE key = ?"
_SET_META = "INSERT OR REPLACE INTO amalfa_meta (key, value) VALUES (?, ?)"
_DELETE_EDGE = "DELETE FROM edges WHERE source = ? AND target = ? AND type = ?"
_SELECT_LINK_EDGES = "SELECT source, target, type FROM edges WHERE type IN (?, ?)"
# Nodes whose meta names a source file: the ones ingestion wrote. The LIKE prefilter keeps
# json_extract off rows that cannot match; json_valid keeps it off meta that is not JSON.
_SELECT_INGESTED = (
    "SELECT id, hash, embedding IS NOT NULL, "
    "CASE WHEN json_valid(meta) THEN json_extract(meta, '$.source') END "
    "FROM nodes WHERE meta LIKE '%\"source\"%'"
)


@dataclass(frozen=True, slots=True)
class _KnownNode:
    hash: str | None
    source: str
    has_embedding: bool


def _ingested_nodes(db: ResonanceDB) -> dict[str, _KnownNode]:
    known = {}
    for node_id, digest, has_embedding, source in db.raw.prepare(_SELECT_INGESTED).execute():
        if isinstance(source, str) and source:
            known[node_id] = _KnownNode(digest, source, bool(has_embedding))
    return known


def _link_edges(db: ResonanceDB) -> list[tuple[str, str, str]]:
    return [tuple(row) for row in db.raw.prepare(_SELECT_LINK_EDGES).execute(INGESTED_EDGE_TYPES)]


def _record_model(db: ResonanceDB, name: str) -> None:
    db.raw.prepare(_SET_META).run((MODEL_META_KEY, name))


def _check_model(db: ResonanceDB, embedder: Embedder, *, force: bool) -> None:
    """Refuse to mix vectors of two models in one database (their scores mean nothing together)."""
    expected = db.dimensions
    if expected is not None and embedder.dimensions != expected:
        raise ValueError(f"the database at {db.path} holds {expected}-d embeddings, but the model "
                         f"{embedder.model_name} makes {embedder.dimensions}-d ones")
    recorded = recorded_model(db)
    if recorded is not None and recorded != embedder.model_name and not force \
            and db.get_stats().vectors:
        raise ModelMismatchError(
            f"the database at {db.path} was embedded with {recorded}, not with "
            f"{embedder.model_name}; embed every file again with force (amalfa init --force) "
            "or use the model it was built with")


def _ids_of(skipped: list[tuple[Path, str]], root: Path) -> set[str]:
    """Ids of files that exist but could not be read this time: their old nodes stay."""
    ids = set()
    for path, _ in skipped:
        try:
            ids.add(generate_id(_relative_posix(path, root)))
        except ValueError:
            continue
    return ids


def _stand_in(node_id: str, source: str) -> ParsedDocument:
    """An ingested node outside this run, as a link target for :func:`resolve_links`."""
    return ParsedDocument(id=node_id, title="", hash="", summary=None, meta={}, date="",
                          domain="", layer="", type="", text="", source=source,
                          path=Path(source))


class _Scope:
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


class _PhaseClock:
    """Adds up the wall time spent in each named phase."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def total(self) -> float:
        return time.perf_counter() - self.started


# --------------------------------------------------------------------------------------------
# Front matter
# --------------------------------------------------------------------------------------------


def parse_front_matter(text: str, *, source: str | None = None) -> tuple[dict[str, Any], str]:
    """Split a leading ``---`` front-matter block from ``text``: ``(fields, body)``.

    The block must start on the first line (a BOM is ignored) and end with a ``---`` or ``...``
    line. It is read as a YAML subset: a mapping of plain/quoted scalars, ints, floats,
    ``true``/``false``, ``null``/``~``, inline ``[a, b]`` and ``{k: v}``, block lists, nested
    mappings and ``|``/``>`` block scalars. Dates and times stay strings; ``yes``/``no`` stay
    strings (YAML 1.2). Anchors, aliases and tags are not interpreted: they read as strings.
    When the block is unclosed or outside the subset, ``({}, text)`` comes back and an
    :class:`IngestWarning` names ``source`` and the line, so the file is still ingested.
    """
    text = _normalise_text(text)
    lines = text.split("\n")
    if not lines or lines[0].rstrip() != "---":
        return {}, text
    label = source or "<text>"
    for end in range(1, len(lines)):
        if lines[end].rstrip() in ("---", "..."):
            break
    else:
        warnings.warn(
            f"{label}: front matter has no closing '---'; it is read as body text",
            IngestWarning,
            stacklevel=2,
        )
        return {}, text
    try:
        fields = _YamlSubset(lines[1:end], first_line=2).parse()
    except FrontMatterError as exc:
        warnings.warn(
            f"{label}: malformed front matter ({exc}); it is read as body text",
            IngestWarning,
            stacklevel=2,
        )
        return {}, text
    return fields, "\n".join(lines[end + 1 :])


# --------------------------------------------------------------------------------------------
# Ids
# --------------------------------------------------------------------------------------------

# generate_id lives in amalfa.db (the original system's rules, character for character), so ids
# made here and ids made by any other writer of the database always agree. It is re-exported here
# because ingestion is where most callers meet it.


# ============================================================================================
# Details below: discovery, reading, Markdown structure, the YAML subset.
# ============================================================================================

_GLOB_MAGIC_RE = re.compile(r"[*?\[]")


def _absolute(path: Path | str) -> Path:
    # Lexical, not resolve(): ids come from the path the user sees, not a symlink target.
    return Path(os.path.abspath(os.fspath(path)))


def _relative_posix(path: Path, root: Path) -> str:
    """The POSIX path of ``path`` inside ``root``; ValueError when it is outside."""
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"{path} is not inside the project root {root}")
    return PurePosixPath(Path(rel)).as_posix()


def _is_markdown(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in MARKDOWN_SUFFIXES


def _strip_markdown_suffix(name: str) -> str:
    return name[: -len(PurePosixPath(name).suffix)] if _is_markdown(name) else name


def _expand_source(source: str, root: Path, excludes: list[_Exclude]) -> Iterator[Path]:
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
    if _is_excluded(pattern, excludes):
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


def _walk_markdown(top: Path, top_rel: str, excludes: list[_Exclude]) -> Iterator[Path]:
    """Markdown files under ``top``, following folder symlinks but never the same folder twice."""
    for path, _ in _walk(top, top_rel, excludes):
        if _is_markdown(path.name):
            yield path


def _walk(top: Path, top_rel: str, excludes: list[_Exclude]) -> Iterator[tuple[Path, str]]:
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
            if _is_excluded(rel, excludes):
                continue
            try:
                if entry.is_dir():
                    stack.append((Path(entry.path), rel))
                elif entry.is_file():
                    yield Path(entry.path), rel
            except OSError:  # a broken symlink or a vanished entry: nothing to ingest
                continue


def _expand_glob(pattern: str, root: Path, excludes: list[_Exclude]) -> Iterator[Path]:
    parts = pattern.split("/")
    literal = 0
    while literal < len(parts) - 1 and not _GLOB_MAGIC_RE.search(parts[literal]):
        literal += 1
    base_rel = "/".join(parts[:literal])
    base = root / base_rel if base_rel else root
    if (base_rel and _is_excluded(base_rel, excludes)) or not base.is_dir():
        return
    regex = _glob_regex(pattern)
    for path, rel in _walk(base, base_rel, excludes):
        if not _is_markdown(path.name):
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


@dataclass(slots=True, frozen=True)
class _Exclude:
    anywhere: bool  # no "/" in the pattern: test each path component
    regex: re.Pattern[str]


def _compile_exclude(pattern: str) -> _Exclude:
    cleaned = pattern.strip().removeprefix("./").strip("/")
    return _Exclude(anywhere="/" not in cleaned, regex=_glob_regex(cleaned))


def _is_excluded(rel: str, excludes: list[_Exclude]) -> bool:
    if not excludes:
        return False
    segments = rel.split("/")
    prefixes = ["/".join(segments[: i + 1]) for i in range(len(segments))]
    for exclude in excludes:
        candidates = segments if exclude.anywhere else prefixes
        if any(exclude.regex.fullmatch(c) for c in candidates):
            return True
    return False


# ---- reading ---------------------------------------------------------------------------------


def _read_capped(path: Path, max_bytes: int) -> tuple[bytes, float]:
    """The file's bytes and mtime, refusing files over the cap before reading them."""
    with open(path, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_size > max_bytes:
            raise DocumentTooLargeError(
                f"{path}: {info.st_size} bytes is over the {max_bytes}-byte limit"
            )
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while we looked
        raise DocumentTooLargeError(f"{path}: over the {max_bytes}-byte limit")
    return data, info.st_mtime


def _decode(data: bytes, source: str) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        warnings.warn(
            f"{source}: not valid UTF-8 (byte {exc.start}); undecodable bytes read as U+FFFD",
            IngestWarning,
            stacklevel=3,
        )
        text = data.decode("utf-8-sig", errors="replace")
    return _normalise_text(text)


def _normalise_text(text: str) -> str:
    text = text.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _iso_date(mtime: float | None) -> str:
    # UTC, so the same file gives the same date on every machine.
    moment = datetime.now(timezone.utc) if mtime is None else datetime.fromtimestamp(
        mtime, timezone.utc)
    return moment.date().isoformat()


def _front_matter_text(front: dict[str, Any], key: str, source: str) -> str | None:
    """A front-matter field that must be text; numbers are accepted, other values warned."""
    value = front.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        warnings.warn(
            f"{source}: front-matter {key!r} should be text, got {type(value).__name__}; ignored",
            IngestWarning,
            stacklevel=3,
        )
        return None
    text = str(value).strip()
    return text or None


def _meta(front: dict[str, Any], source: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": source, "tags": _normalise_tags(front.get("tags"), source)}
    for key, value in front.items():
        if key in _COLUMN_FIELDS or key == "tags":
            continue
        if key == "source":
            warnings.warn(
                f"{source}: front-matter 'source' is reserved for the file path; ignored",
                IngestWarning,
                stacklevel=3,
            )
            continue
        meta[key] = value
    return meta


def _normalise_tags(value: Any, source: str) -> list[str]:
    """Tags as a list of strings: ``"a, b"`` and ``[a, b]`` both give ``["a", "b"]``."""
    if value is None:
        return []
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        items = [value]
    else:
        warnings.warn(
            f"{source}: front-matter 'tags' should be a list or text, got {type(value).__name__};"
            " ignored",
            IngestWarning,
            stacklevel=4,
        )
        return []
    tags: dict[str, None] = {}
    for item in items:
        if item is None or isinstance(item, (bool, list, dict)):
            continue
        tag = str(item).strip()
        if tag:
            tags[tag] = None
    return list(tags)


# ---- Markdown structure -----------------------------------------------------------------------

_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ATX_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_RE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_HR_RE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_LIST_ITEM_RE = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)")
_HTML_BLOCK_RE = re.compile(r"^ {0,3}<(?:[A-Za-z][A-Za-z0-9-]*(?:[\s/>]|$)|/|!|\?)")
_REF_DEF_RE = re.compile(r"^ {0,3}\[((?:[^\[\]\\]|\\.)+)\]:[ \t]*(<[^<>\n]*>|\S+)", re.M)
_TABLE_DELIMITER_RE = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_HTML_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
_PARAGRAPH_SPLIT_RE = re.compile(r"(\n[ \t]*\n)")
_INLINE_CODE_RE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def _mask_fences_and_comments(body: str) -> str:
    """``body`` with fenced code and HTML comments blanked, keeping the line count.

    Titles, summaries and links must never come from code samples or hidden comments.
    """
    out: list[str] = []
    fence: str | None = None
    for line in body.split("\n"):
        match = _FENCE_RE.match(line)
        if fence is None:
            if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
                fence = match.group(1)
                out.append("")
            else:
                out.append(line)
        else:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                    and not match.group(2).strip():
                fence = None
            out.append("")
    masked = "\n".join(out)
    return _HTML_COMMENT_RE.sub(lambda m: "\n" * m.group().count("\n"), masked)


def _mask_inline_code(text: str) -> str:
    """Blank out code spans paragraph by paragraph (a span never crosses a blank line)."""
    pieces = _PARAGRAPH_SPLIT_RE.split(text)
    for index in range(0, len(pieces), 2):
        if "`" in pieces[index]:
            pieces[index] = _INLINE_CODE_RE.sub(
                lambda m: re.sub(r"[^\n]", " ", m.group()), pieces[index]
            )
    return "".join(pieces)


def _first_h1(visible: str) -> str | None:
    """The text of the first level-1 heading (ATX ``# x`` or setext ``x\\n===``)."""
    lines = visible.split("\n")
    for index, line in enumerate(lines):
        match = _ATX_RE.match(line)
        if match and len(match.group(1)) == 1:
            title = _plain_text(match.group(2) or "")
            if title:
                return title
        elif (
            index + 1 < len(lines)
            and line.strip()
            and not match
            and re.match(r"^ {0,3}=+[ \t]*$", lines[index + 1])
        ):
            title = _plain_text(line)
            if title:
                return title
    return None


def _lead_paragraph(visible: str) -> str | None:
    """The first prose paragraph as plain text (headings, lists, quotes, tables, HTML skipped)."""
    block: list[str] = []
    for line in [*visible.split("\n"), ""]:
        if not line.strip():
            text = _paragraph_text(block)
            block = []
            if text:
                return text
            continue
        if block and _SETEXT_RE.match(line):  # the block was a setext heading
            block = []
            continue
        if _ATX_RE.match(line) or _HR_RE.match(line):
            text = _paragraph_text(block)
            block = []
            if text:
                return text
            continue
        block.append(line)
    return None


def _paragraph_text(block: list[str]) -> str | None:
    if not block:
        return None
    first = block[0]
    if (
        _LIST_ITEM_RE.match(first)
        or first.lstrip().startswith((">", "|"))
        or first.startswith(("    ", "\t"))  # indented code
        or _HTML_BLOCK_RE.match(first)
        or (len(block) > 1 and _TABLE_DELIMITER_RE.match(block[1]) and "|" in block[1])
        or all(_REF_DEF_RE.match(line) for line in block)
    ):
        return None
    joined = " ".join(line.strip().removesuffix("\\") for line in block)
    return _plain_text(joined) or None


_IMAGE_RE = re.compile(r"!\[(?:[^\[\]]|\[[^\[\]]*\])*\](?:\([^)]*\)|\[[^\]]*\])")
_WIKI_EMBED_RE = re.compile(r"!\[\[[^\[\]\n]*\]\]")
_WIKILINK_RE = re.compile(r"(!?)\[\[([^\[\]\n]+?)\]\]")
_INLINE_LINK_TEXT_RE = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)")
_REF_LINK_TEXT_RE = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])+)\]\[[^\]]*\]")
_AUTOLINK_RE = re.compile(r"<((?:[A-Za-z][A-Za-z0-9+.-]*:|mailto:)[^<>\s]*)>")
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_EMPHASIS_RES = (
    re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"),
    re.compile(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)"),
    re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"),
    re.compile(r"\*(?=\S)(.+?)(?<=\S)\*"),
    re.compile(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)"),
)
_ESCAPE_RE = re.compile(r"\\([!-/:-@\[-`{-~])")
_CODE_SLOT_RE = re.compile(r"\x00(\d+)\x00")


def _plain_text(markdown: str) -> str:
    """Inline Markdown as reading text: emphasis, links, images, code marks and tags removed."""
    codes: list[str] = []

    def keep_code(match: re.Match[str]) -> str:
        codes.append(match.group(2).strip())
        return f"\x00{len(codes) - 1}\x00"

    text = _INLINE_CODE_RE.sub(keep_code, markdown.replace("\x00", ""))
    text = _WIKI_EMBED_RE.sub("", text)
    text = _IMAGE_RE.sub("", text)  # badges and pictures say nothing in a summary
    text = _WIKILINK_RE.sub(lambda m: _wikilink_label(m.group(2)), text)
    text = _INLINE_LINK_TEXT_RE.sub(r"\1", text)
    text = _REF_LINK_TEXT_RE.sub(r"\1", text)
    text = _AUTOLINK_RE.sub(r"\1", text)
    text = _HTML_TAG_RE.sub("", text)
    for pattern in _EMPHASIS_RES:
        text = pattern.sub(r"\1", text)
    text = _ESCAPE_RE.sub(r"\1", text)
    text = html.unescape(text)
    text = _CODE_SLOT_RE.sub(lambda m: codes[int(m.group(1))], text)
    return " ".join(text.split())


def _truncate_words(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word boundary, ending with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if not text[limit - 1].isspace():
        space = cut.rfind(" ")
        if space > 0:
            cut = cut[:space]
    return (cut.rstrip(" ,;:.-\u2013\u2014") or cut) + "\u2026"


def _embedding_text(title: str, body: str, visible: str) -> str:
    """Title and body, without repeating the title when the body opens with it as its heading.

    HTML comments are dropped: a reader never sees them, so a search should not match them.
    """
    body = _HTML_COMMENT_RE.sub("", body).strip()
    for line in visible.split("\n"):
        if not line.strip():
            continue
        match = _ATX_RE.match(line)
        if match and len(match.group(1)) == 1 and _plain_text(match.group(2) or "") == title:
            return body
        break
    return f"{title}\n\n{body}".strip()


# ---- links ----------------------------------------------------------------------------------

_INLINE_LINK_RE = re.compile(
    r"(?<!\\)(!?)\[((?:[^\[\]\\]|\\.|\[[^\[\]]*\])*)\]"
    r"\(\s*(<[^<>\n]*>|[^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*)"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*\)"
)
_URL_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _markdown_link_ids(visible: str, source: str) -> list[str]:
    """Ids of the Markdown files that inline links and reference definitions point to."""
    text = _WIKILINK_RE.sub(lambda m: " " * len(m.group()), _mask_inline_code(visible))
    targets: dict[str, None] = {}
    destinations = [m.group(3) for m in _INLINE_LINK_RE.finditer(text) if not m.group(1)]
    destinations += [m.group(2) for m in _REF_DEF_RE.finditer(text)]
    for destination in destinations:
        rel = _resolve_link_path(destination, source)
        if rel is None:
            continue
        try:
            targets[generate_id(rel)] = None
        except ValueError:
            continue
    return list(targets)


def _resolve_link_path(destination: str, source: str) -> str | None:
    """The root-relative POSIX path a link points to, or None for what is not a local Markdown
    file inside the root (URLs, ``#anchors``, images, code, ``../`` beyond the root)."""
    dest = destination.strip()
    if dest.startswith("<") and dest.endswith(">"):
        dest = dest[1:-1].strip()
    if not dest or dest.startswith(("#", "//")) or _URL_SCHEME_RE.match(dest):
        return None
    dest = unquote(dest.split("#", 1)[0].split("?", 1)[0])
    if not dest or not _is_markdown(dest):
        return None
    # A leading "/" means the project root, as on the sites that render these docs.
    joined = dest.lstrip("/") if dest.startswith("/") else posixpath.join(
        posixpath.dirname(source), dest)
    rel = posixpath.normpath(joined)
    if rel == ".." or rel.startswith("../") or rel.startswith("/"):
        return None
    return rel


def _wikilink_targets(visible: str) -> list[str]:
    """The targets of ``[[target]]``, ``[[target|alias]]`` and ``[[target#heading]]``.

    ``![[embeds]]`` are ignored like images; ``[[#heading]]`` points into the same file.
    """
    targets: dict[str, None] = {}
    for match in _WIKILINK_RE.finditer(_mask_inline_code(visible)):
        if match.group(1):
            continue
        target = match.group(2).split("|", 1)[0].split("#", 1)[0].strip()
        if target:
            targets[target] = None
    return list(targets)


def _wikilink_label(inner: str) -> str:
    target, _, alias = inner.partition("|")
    if alias.strip():
        return alias.strip()
    name, _, heading = target.partition("#")
    return name.strip() or heading.strip()


def _slug(name: str) -> str | None:
    try:
        return generate_id(name)
    except ValueError:
        return None


def _match_wikilink(
    name: str,
    doc: ParsedDocument,
    by_stem: dict[str, list[ParsedDocument]],
    by_slug: dict[str, list[ParsedDocument]],
) -> ParsedDocument | None:
    wanted = name.strip().removeprefix("./").lstrip("/")
    wanted = _strip_markdown_suffix(wanted).casefold()
    last = wanted.rsplit("/", 1)[-1]
    candidates = by_stem.get(last) or by_slug.get(_slug(last) or "", [])
    if "/" in wanted:
        candidates = [
            c for c in candidates
            if ("/" + _strip_markdown_suffix(c.source).casefold()).endswith("/" + wanted)
        ]
    if not candidates:
        return None
    folder = posixpath.dirname(doc.source)
    return min(
        candidates,
        key=lambda c: (posixpath.dirname(c.source) != folder, c.source.count("/"), c.source),
    )


# ---- the YAML subset ---------------------------------------------------------------------------

_YAML_KEY_RE = re.compile(
    r"""^(?:"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>(?:[^']|'')*)'"""
    r"""|(?P<plain>[^\s#'"\[\]{},&*!|>%@`?:-][^#\n]*?))"""
    r"""[ \t]*:(?:[ \t]+(?P<rest>.*))?$"""
)
_YAML_INT_RE = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_YAML_FLOAT_RE = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
                            r"|[-+]?[0-9]+[eE][-+]?[0-9]+")
_YAML_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_YAML_TRUE = frozenset({"true", "True", "TRUE"})
_YAML_FALSE = frozenset({"false", "False", "FALSE"})
_YAML_COMMENT_RE = re.compile(r"[ \t]+#.*$")
_YAML_BLOCK_HEADER_RE = re.compile(r"([|>])([-+]?)([1-9]?)([-+]?)[ \t]*(?:#.*)?")
_YAML_ESCAPES = {
    "0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f",
    "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85",
    "_": "\xa0", "L": "\u2028", "P": "\u2029",
}
_YAML_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def _is_sequence_item(content: str) -> bool:
    return content == "-" or content.startswith(("- ", "-\t"))


def _resolve_plain(text: str) -> Any:
    """YAML 1.2 core types for a plain scalar; leading-zero numbers and dates stay strings."""
    if text in _YAML_NULLS:
        return None
    if text in _YAML_TRUE:
        return True
    if text in _YAML_FALSE:
        return False
    if _YAML_INT_RE.fullmatch(text):
        return int(text)
    if _YAML_FLOAT_RE.fullmatch(text):
        number = float(text)
        # JSON has no inf: meta must stay serialisable, so "1e999" remains text.
        return number if math.isfinite(number) else text
    return text


class _YamlSubset:
    """A line-based reader for the YAML that people write in front matter. Never builds objects
    other than dict, list, str, int, float, bool and None, so untrusted files are safe to read."""

    def __init__(self, lines: list[str], *, first_line: int) -> None:
        self.lines = list(lines)  # compact "- key: value" items are rewritten in place
        self.pos = 0
        self.line = 0  # the line last looked at, for error messages
        self.first_line = first_line

    def error(self, message: str) -> FrontMatterError:
        return FrontMatterError(message, self.first_line + self.line)

    def parse(self) -> dict[str, Any]:
        peeked = self._peek()
        if peeked is None:
            return {}
        indent, content = peeked
        if _is_sequence_item(content) or not _YAML_KEY_RE.match(content):
            raise self.error("front matter must be a mapping of 'key: value' lines")
        result = self._mapping(indent)
        if self._peek() is not None:
            raise self.error("unexpected indentation")
        return result

    # -- lines

    def _peek(self) -> tuple[int, str] | None:
        """Indent and content of the next line that is neither blank nor a comment."""
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            content = line.lstrip(" ")
            self.line = self.pos
            if content.startswith("\t") and content.strip():
                raise self.error("tabs are not allowed for indentation")
            content = content.strip()
            if content and not content.startswith("#"):
                return len(line) - len(line.lstrip(" ")), content
            self.pos += 1
        self.line = len(self.lines)
        return None

    # -- collections

    def _block(self, indent: int) -> Any:
        peeked = self._peek()
        assert peeked is not None
        content = peeked[1]
        if _is_sequence_item(content):
            return self._sequence(indent)
        if _YAML_KEY_RE.match(content):
            return self._mapping(indent)
        # A scalar written on the lines below its key.
        start = self.pos
        self.pos += 1
        return self._value(content, indent - 1, start, in_sequence=False)

    def _mapping(self, indent: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while (peeked := self._peek()) is not None:
            line_indent, content = peeked
            if line_indent < indent:
                break
            if line_indent > indent:
                raise self.error("unexpected indentation")
            match = _YAML_KEY_RE.match(content)
            if match is None:
                if _is_sequence_item(content):
                    raise self.error("a list item where a 'key: value' line was expected")
                raise self.error(f"expected 'key: value', got {content!r}")
            key = self._key(match)
            start = self.pos
            self.pos += 1
            result[key] = self._value(match.group("rest") or "", indent, start, in_sequence=False)
        return result

    def _key(self, match: re.Match[str]) -> str:
        if match.group("dq") is not None:
            return self._double_quoted('"' + match.group("dq") + '"')[0]
        if match.group("sq") is not None:
            return match.group("sq").replace("''", "'")
        return match.group("plain").strip()

    def _sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while (peeked := self._peek()) is not None:
            line_indent, content = peeked
            if line_indent < indent or (line_indent == indent and not _is_sequence_item(content)):
                break
            if line_indent > indent:
                raise self.error("unexpected indentation")
            after_dash = content[1:]
            rest = after_dash.lstrip(" \t")
            if rest and not rest.startswith("#") and (
                _is_sequence_item(rest) or _YAML_KEY_RE.match(rest)
            ):
                # "- key: value" opens a mapping whose keys line up with "key".
                item_indent = indent + 1 + len(after_dash) - len(rest)
                self.lines[self.pos] = " " * item_indent + rest
                items.append(self._block(item_indent))
                continue
            start = self.pos
            self.pos += 1
            items.append(self._value(rest, indent, start, in_sequence=True))
        return items

    # -- values

    def _value(self, rest: str, indent: int, start: int, *, in_sequence: bool) -> Any:
        """The value after ``key:`` or ``-`` on line ``start``, plus any lines that belong to it."""
        text = rest.strip()
        if not text or text.startswith("#"):
            peeked = self._peek()
            if peeked is None:
                return None
            line_indent, content = peeked
            if line_indent > indent:
                return self._block(line_indent)
            if line_indent == indent and not in_sequence and _is_sequence_item(content):
                return self._sequence(line_indent)  # "key:\n- a\n- b" is a list
            return None
        if text[0] in "|>":
            return self._block_scalar(text, indent)
        if text[0] in "[{":
            while _flow_depth(text) > 0 and self.pos < len(self.lines):
                text += " " + self.lines[self.pos].strip()
                self.pos += 1
            value, end = self._flow(text, 0)
            self._expect_end(text, end)
            return value
        if text[0] in "\"'":
            value, end = self._quoted(text)
            self._expect_end(text, end)
            return value
        # A plain scalar may continue on more-indented lines; it then folds into one string.
        parts = [_YAML_COMMENT_RE.sub("", text)]
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                break
            if len(line) - len(line.lstrip(" ")) <= indent:
                break
            parts.append(_YAML_COMMENT_RE.sub("", stripped))
            self.pos += 1
        return " ".join(parts) if len(parts) > 1 else _resolve_plain(parts[0])

    def _expect_end(self, text: str, end: int) -> None:
        tail = text[end:].strip()
        if tail and not tail.startswith("#"):
            raise self.error(f"unexpected text after the value: {tail!r}")

    def _block_scalar(self, header: str, indent: int) -> str:
        match = _YAML_BLOCK_HEADER_RE.fullmatch(header)
        if match is None or (match.group(2) and match.group(4)):
            raise self.error(f"bad block scalar header {header!r}")
        style, chomp, explicit = match.group(1), match.group(2) or match.group(4), match.group(3)
        raw: list[str] = []
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            if line.strip() and len(line) - len(line.lstrip(" ")) <= indent:
                break
            raw.append(line if line.strip() else "")
            self.pos += 1
        widths = [len(line) - len(line.lstrip(" ")) for line in raw if line]
        content_indent = indent + int(explicit) if explicit else min(widths, default=indent + 1)
        if any(width < content_indent for width in widths):
            raise self.error(f"block scalar lines are indented less than {header!r} says")
        lines = [line[content_indent:] if line else "" for line in raw]
        trailing = 0
        while lines and lines[-1] == "":
            lines.pop()
            trailing += 1
        value = "\n".join(lines) if style == "|" else _fold(lines)
        if chomp == "-" or not value:
            return value if chomp != "+" else value + "\n" * trailing
        return value + "\n" * (trailing + 1 if chomp == "+" else 1)

    def _quoted(self, text: str, start: int = 0) -> tuple[str, int]:
        if text[start] == "'":
            out: list[str] = []
            i = start + 1
            while i < len(text):
                if text[i] == "'":
                    if text[i + 1 : i + 2] == "'":
                        out.append("'")
                        i += 2
                        continue
                    return "".join(out), i + 1
                out.append(text[i])
                i += 1
            raise self.error("unterminated single-quoted string")
        return self._double_quoted(text, start)

    def _double_quoted(self, text: str, start: int = 0) -> tuple[str, int]:
        out: list[str] = []
        i = start + 1
        while i < len(text):
            char = text[i]
            if char == '"':
                return "".join(out), i + 1
            if char != "\\":
                out.append(char)
                i += 1
                continue
            code = text[i + 1 : i + 2]
            if code in _YAML_ESCAPES:
                out.append(_YAML_ESCAPES[code])
                i += 2
            elif code in _YAML_HEX_ESCAPES:
                width = _YAML_HEX_ESCAPES[code]
                digits = text[i + 2 : i + 2 + width]
                if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise self.error(f"bad \\{code} escape in a double-quoted string")
                try:
                    out.append(chr(int(digits, 16)))
                except (ValueError, OverflowError):
                    raise self.error(f"\\{code}{digits} is not a character") from None
                i += 2 + width
            else:
                raise self.error(f"unknown escape \\{code} in a double-quoted string")
        raise self.error("unterminated double-quoted string")

    def _flow(self, text: str, pos: int) -> tuple[Any, int]:
        """A ``[..]`` or ``{..}`` collection starting at ``pos``; returns it and the next index."""
        closing = "]" if text[pos] == "[" else "}"
        is_map = closing == "}"
        items: list[Any] = []
        mapping: dict[str, Any] = {}
        pos += 1
        while True:
            pos = _skip_spaces(text, pos)
            if pos >= len(text):
                raise self.error(f"unclosed {'{' if is_map else '['}")
            if text[pos] == closing:
                return (mapping if is_map else items), pos + 1
            if is_map:
                key, pos = self._flow_node(text, pos, stops=",:}", as_key=True)
                pos = _skip_spaces(text, pos)
                value: Any = None
                if pos < len(text) and text[pos] == ":":
                    value, pos = self._flow_node(text, _skip_spaces(text, pos + 1), stops=",}")
                mapping[str(key)] = value
            else:
                item, pos = self._flow_node(text, pos, stops=",]")
                items.append(item)
            pos = _skip_spaces(text, pos)
            if pos >= len(text):
                raise self.error(f"unclosed {'{' if is_map else '['}")
            if text[pos] == ",":
                pos += 1
            elif text[pos] != closing:
                raise self.error(f"expected ',' or '{closing}' in an inline collection")

    def _flow_node(
        self, text: str, pos: int, *, stops: str, as_key: bool = False
    ) -> tuple[Any, int]:
        if pos >= len(text):
            raise self.error("an inline collection ends too early")
        char = text[pos]
        if char in "[{":
            return self._flow(text, pos)
        if char in "\"'":
            return self._quoted(text, pos)
        if char == ",":
            raise self.error("an empty entry in an inline collection")
        end = pos
        while end < len(text) and text[end] not in stops:
            if text[end] == "#" and end > pos and text[end - 1] in " \t":
                break
            end += 1
        if end < len(text) and text[end] == "#":
            raise self.error("a comment inside an inline collection")
        raw = text[pos:end].strip()
        return (raw if as_key else _resolve_plain(raw)), end


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _flow_depth(text: str) -> int:
    """How many brackets are still open at the end of ``text`` (quotes respected)."""
    depth = 0
    quote: str | None = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and quote == '"':
                i += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        i += 1
    return depth


def _fold(lines: list[str]) -> str:
    """YAML ``>`` folding: lines join with spaces, a blank line is a newline, indented lines
    keep their breaks."""
    out: list[str] = []
    for index, line in enumerate(lines):
        if index == 0:
            out.append(line)
            continue
        previous = lines[index - 1]
        if line == "":
            out.append("\n")
        elif previous == "":
            out.append(line)
        elif line.startswith((" ", "\t")) or previous.startswith((" ", "\t")):
            out.append("\n" + line)
        else:
            out.append(" " + line)
    return "".join(out)

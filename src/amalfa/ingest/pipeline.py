"""The ingest pipeline: bring a database in step with a folder of Markdown files.

:func:`ingest` runs discovery and parsing, then writes what changed:

* **Documents.** New and changed files (by sha256) get their node row and their document-level
  embedding (the file's opening, as the original system made it); unchanged files are left
  alone, their rows not even rewritten. Nodes of deleted files are removed with their edges and
  passages. A node belongs to ingestion when its ``meta`` has a ``source`` path; only such nodes
  are ever removed, and only when their file lies inside the paths of this run, so
  ``amalfa init docs/guide`` leaves ``docs/concepts`` alone.
* **Passages.** A changed file is cut into passages (:mod:`amalfa.ingest.passages`) and only the
  passages whose hash is new are embedded; a passage whose text is unchanged keeps its row and
  embedding and only gets its new place (ordinal, lines). Editing one paragraph of a long file
  re-embeds that paragraph's passage and the document vector, nothing else.
* **Links.** ``links_to``/``wikilink`` edges are recomputed from every file of the run and
  synchronised, so edges left out by an interrupted run are restored.

Writes go in one transaction per batch of files (node rows, passages and their keyword entries
together), then one transaction for deletions and link edges. An interrupted run leaves each
batch written whole or not at all; the next run finds the remaining files changed and finishes.

All texts of a batch (document openings and passages) go to the model in one call; the embedder
sorts them by token length and pads each model batch to its own longest text, so a batch of
short passages never pays for a long one. Everything else is kept cheap so that the model's
time dominates (see ``docs/benchmarks/search.md``).

The database and the embedder are passed in, so the pipeline runs the same against any model and
any database file. The database layer does every write; this module holds no SQL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from amalfa.db import generate_id
from amalfa.db.meta import MODEL_KEY as MODEL_META_KEY
from amalfa.ingest.discover import Scope, absolute, discover, relative_posix
from amalfa.ingest.documents import ParsedDocument, parse_documents
from amalfa.ingest.links import INGESTED_EDGE_TYPES, resolve_links
from amalfa.ingest.passages import Passage, TokenCounter, split_passages

if TYPE_CHECKING:
    from amalfa.db import ResonanceDB
    from amalfa.db.passages import PassageRow
    from amalfa.embedder import Embedder
    from amalfa.stats import IngestionStats

__all__ = ["DEFAULT_BATCH_SIZE", "MODEL_META_KEY", "ROOT_META_KEY", "IngestResult",
           "ProgressCallback", "ingest", "recorded_model", "recorded_root"]

# Files written per transaction; also the most work an interruption can throw away.
DEFAULT_BATCH_SIZE = 64
# The amalfa_meta key holding the project root of the last ingest: search reads passages' lines
# back from the files, and source paths are relative to this folder.
ROOT_META_KEY = "ingest_root"

#: ``progress(files_done, files_total, passages_embedded)``, called after every batch.
ProgressCallback = Callable[[int, int, int], None]


@dataclass(slots=True)
class IngestResult:
    """What one run of :func:`ingest` did. Ids are node ids; ``seconds`` holds the wall time of
    each phase (``discover``, ``parse``, ``chunk``, ``embed``, ``write``, ``link``, ``total``).

    ``passages_embedded`` counts passages sent to the model, ``passages_kept`` stored passages
    reused as they were, ``passages_removed`` stored passages deleted because their text went
    away (passages of removed documents are not counted: they go with their node).
    """

    files: int = 0
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    links: list[tuple[str, str, str]] = field(default_factory=list)
    edges_added: int = 0
    edges_removed: int = 0
    passages_embedded: int = 0
    passages_kept: int = 0
    passages_removed: int = 0
    texts_embedded: int = 0
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


@dataclass(slots=True)
class _Work:
    """One document of a batch: what to embed and what to change in its passages."""

    doc: ParsedDocument
    embed_node: bool
    new: list[Passage] = field(default_factory=list)
    moves: list[tuple[int, int, str | None, int, int]] = field(default_factory=list)
    drop: list[int] = field(default_factory=list)
    kept: int = 0  # stored passages reused in place


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
    counter: TokenCounter | None = None,
) -> IngestResult:
    """Bring ``db`` in step with the Markdown files under ``sources`` (see the module docstring).

    ``sources`` are folders, files or globs relative to ``root`` as for :func:`discover`; they
    also bound which ingested nodes may be removed. ``files`` is the output of :func:`discover`
    when the caller already ran it. ``batch_size`` files are embedded and written per
    transaction, the model seeing ``embed_batch_size`` texts at a time. ``force`` embeds every
    file and passage again (after a model change). ``progress`` is called after every batch.
    ``counter`` sizes passages (default: the embedder's own tokenizer and ``max_length``).

    Raises :class:`ModelMismatchError` when the database's embeddings come from another model or precision (and
    ``force`` is off), ValueError when the dimensions disagree; nothing is written then.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    from amalfa.db import Node

    source_list: list[str] = [os.fspath(source) for source in sources]
    root_path = absolute(root)
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
    known = db.ingested_nodes()
    chunked = db.nodes_with_passages()
    work: list[_Work] = []
    for doc in docs:
        before = known.get(doc.id)
        if before is None:
            result.added.append(doc.id)
        elif force or before.hash != doc.hash or before.source != doc.source \
                or not before.has_embedding:
            result.updated.append(doc.id)
        else:
            result.unchanged.append(doc.id)
            if doc.id not in chunked and doc.body.strip():
                # written before passages existed: cut it now, the node stays as it is
                work.append(_Work(doc, embed_node=False))
            continue
        work.append(_Work(doc, embed_node=True))
    kept_ids = set(result.domains) | _ids_of(report.skipped, root_path)
    scope = Scope(source_list, root_path)
    result.removed = [node_id for node_id, node in known.items()
                      if node_id not in kept_ids and scope.contains(node.source)]

    # Documents and passages: one transaction per batch; texts of similar length share a batch.
    work.sort(key=lambda item: len(item.doc.text))
    if progress is not None and work:
        progress(0, len(work), 0)
    if work and counter is None:
        counter = TokenCounter.for_embedder(embedder)
    model_recorded = (db.recorded_model(), db.recorded_precision()) == (embedder.model_name,
                                                                         embedder.precision)
    done = 0
    for start in range(0, len(work), batch_size):
        batch = work[start:start + batch_size]
        with clock("chunk"):
            for item in batch:
                assert counter is not None
                _plan_passages(item, db, counter, force=force,
                               stored=item.doc.id in chunked or item.doc.id in known)
        texts = [item.doc.text for item in batch if item.embed_node]
        texts += [passage.embed_text for item in batch for passage in item.new]
        with clock("embed"):
            vectors = embedder.embed_batch(texts, batch_size=embed_batch_size)
        result.texts_embedded += len(texts)
        with clock("write"), db.transaction():
            if not model_recorded:
                db.record_model(embedder.model_name, embedder.precision)
                model_recorded = True
            node_docs = [item.doc for item in batch if item.embed_node]
            db.insert_nodes(Node(**doc.node_fields(), embedding=vector)
                            for doc, vector in zip(node_docs, vectors))
            offset = len(node_docs)
            for item in batch:
                result.passages_removed += db.delete_passages(item.drop)
                db.move_passages(item.moves)
                count = len(item.new)
                db.insert_passages(item.doc.id, item.new, vectors[offset:offset + count])
                offset += count
                result.passages_embedded += count
                result.passages_kept += len(item.moves) + item.kept
        done += len(batch)
        if progress is not None:
            progress(done, len(work), result.passages_embedded)

    # Deletions and link edges: one transaction, computed over every file of the run so that
    # edges left out by an interrupted run are restored.
    with clock("link"):
        removed = set(result.removed)
        stand_ins = [_stand_in(node_id, node.source) for node_id, node in known.items()
                     if node_id not in result.domains and node_id not in removed]
        result.links = resolve_links([*docs, *stand_ins])
        wanted = set(result.links)
        stored = {(edge.source, edge.target, edge.type)
                  for edge in db.get_edges_by_type(INGESTED_EDGE_TYPES)
                  if edge.source in result.domains}
        with db.transaction():
            for edge in sorted(stored - wanted):
                result.edges_removed += db.delete_edge(*edge)
            for edge in result.links:
                if edge not in stored:
                    result.edges_added += db.insert_edge(*edge)
            for node_id in result.removed:
                db.delete_node(node_id)  # its edges and passages go with it
            if docs and recorded_root(db) != str(root_path):
                db.set_meta(ROOT_META_KEY, str(root_path))
    result.seconds["total"] = clock.total()
    return result


def _plan_passages(item: _Work, db: ResonanceDB, counter: TokenCounter, *, force: bool,
                   stored: bool) -> None:
    """Cut the document and match its passages against the stored ones by hash."""
    passages = split_passages(item.doc, counter)
    old: list[PassageRow] = db.get_passages(item.doc.id) if stored else []
    reusable: dict[str, list[PassageRow]] = {}
    if not force:
        for row in old:
            if row.has_embedding:
                reusable.setdefault(row.hash, []).append(row)
    used: set[int] = set()
    for passage in passages:
        rows = reusable.get(passage.hash)
        if not rows:
            item.new.append(passage)
            continue
        row = rows.pop(0)
        used.add(row.id)
        place = (passage.ordinal, passage.heading, passage.line_start, passage.line_end)
        if place != (row.ordinal, row.heading, row.line_start, row.line_end):
            item.moves.append((row.id, *place))
        else:
            item.kept += 1
    item.drop = [row.id for row in old if row.id not in used]


def recorded_model(db: ResonanceDB) -> str | None:
    """The name of the model the database's embeddings come from, as :func:`ingest` recorded it
    (None for a database it never wrote embeddings to)."""
    return db.recorded_model()


def recorded_root(db: ResonanceDB) -> str | None:
    """The project root of the last ingest into ``db`` (None before the first)."""
    value = db.get_meta(ROOT_META_KEY)
    return None if value is None else str(value)


# ---- pipeline details ---------------------------------------------------------------------------


def _check_model(db: ResonanceDB, embedder: Embedder, *, force: bool) -> None:
    """Refuse to mix vectors of two models, or two precisions of one, in one database (their
    scores mean nothing together)."""
    expected = db.dimensions
    if expected is not None and embedder.dimensions != expected:
        raise ValueError(f"the database at {db.path} holds {expected}-d embeddings, but the model "
                         f"{embedder.model_name} makes {embedder.dimensions}-d ones")
    # one model and one precision per database (Embedder.check_database names both and the way
    # out); force re-embeds every file, so the new pair replaces the recorded one
    if not force and db.get_stats().vectors:
        embedder.check_database(db)


def _ids_of(skipped: list[tuple[Path, str]], root: Path) -> set[str]:
    """Ids of files that exist but could not be read this time: their old nodes stay."""
    ids = set()
    for path, _ in skipped:
        try:
            ids.add(generate_id(relative_posix(path, root)))
        except ValueError:
            continue
    return ids


def _stand_in(node_id: str, source: str) -> ParsedDocument:
    """An ingested node outside this run, as a link target for :func:`resolve_links`."""
    return ParsedDocument(id=node_id, title="", hash="", summary=None, meta={}, date="",
                          domain="", layer="", type="", text="", source=source,
                          path=Path(source))


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


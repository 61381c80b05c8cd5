"""Passages and their keyword index (migration 0005), as a mixin of ResonanceDB.

Every statement on ``passages`` and ``passages_fts`` lives here. The table holds where each
chunk of a document is (line range, heading path), the hash of what was embedded, the FAFCAS
embedding and the passage's plain text with its heading context. ``passages_fts`` is an FTS5
index with external content (it reads that text, stores only the inverted index); the schema's
triggers keep it in step with every insert, update and delete, whoever makes them.

Methods check nothing about transactions: the ingest pipeline calls the writers inside
``with db.transaction():`` so a document's passages, their index entries and its node row change
together or not at all. Embeddings are bound as raw float32 bytes (the pipeline hands FAFCAS
rows straight from the model's output).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from amalfa.db._rows import has_table, one_row
from amalfa.db.validation import refuses_unstorable_text

if TYPE_CHECKING:
    from amalfa._core.connection import Connection

__all__ = ["PassageRow", "PassageLocation", "PassageStore"]

_SELECT_FOR_NODE = (
    "SELECT id, ordinal, heading, line_start, line_end, hash, embedding IS NOT NULL "
    "FROM passages WHERE node_id = ? ORDER BY ordinal, id"
)
_NODES_WITH_PASSAGES = "SELECT DISTINCT node_id FROM passages"
_INSERT = (
    "INSERT INTO passages (node_id, ordinal, heading, line_start, line_end, hash, context, text, "
    "embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MOVE = "UPDATE passages SET ordinal = ?, heading = ?, line_start = ?, line_end = ? WHERE id = ?"
_DELETE = "DELETE FROM passages WHERE id = ?"
_DELETE_FOR_NODE = "DELETE FROM passages WHERE node_id = ?"
_COUNT = "SELECT count(*), count(embedding) FROM passages"
# bm25 weights: a match in the heading context (document title and heading path) counts twice
# what a match in the body does. FTS5's bm25() is lower-is-better; it is negated for callers.
_KEYWORD = (
    "SELECT rowid, -bm25(passages_fts, 2.0, 1.0) FROM passages_fts WHERE passages_fts MATCH ? "
    "ORDER BY bm25(passages_fts, 2.0, 1.0) LIMIT ?"
)
_LOCATE = (
    "SELECT p.id, p.node_id, p.ordinal, p.heading, p.line_start, p.line_end, p.hash, p.text, "
    "n.title, n.hash, CASE WHEN json_valid(n.meta) THEN json_extract(n.meta, '$.source') END, "
    "n.domain, n.type, n.date "
    "FROM passages AS p JOIN nodes AS n ON n.id = p.node_id WHERE p.id = ?"
)


@dataclass(frozen=True, slots=True)
class PassageRow:
    """A stored passage as the ingest pipeline compares it (no embedding, no text)."""

    id: int
    ordinal: int
    heading: str | None
    line_start: int
    line_end: int
    hash: str
    has_embedding: bool


@dataclass(frozen=True, slots=True)
class PassageLocation:
    """Where a passage is: its row, its text as indexed, its document (id, title, source path,
    file hash at ingest, domain, type, date) and its line range in that file."""

    id: int
    node_id: str
    ordinal: int
    heading: str | None
    line_start: int
    line_end: int
    hash: str
    text: str
    title: str | None
    document_hash: str | None
    source: str | None
    domain: str | None = None
    type: str | None = None
    date: str | None = None


class PassageStore:
    """``passages`` and ``passages_fts`` reads and writes for :class:`~amalfa.db.ResonanceDB`."""

    _conn: Connection

    def has_passages_table(self) -> bool:
        """Whether the schema has passages (a read-only database may predate migration 0005)."""
        return has_table(self._conn, "passages")

    # -- what is stored ------------------------------------------------------------------------

    @refuses_unstorable_text
    def get_passages(self, node_id: str) -> list[PassageRow]:
        """The stored passages of a document, in order."""
        return [PassageRow(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]))
                for row in self._conn.prepare(_SELECT_FOR_NODE).execute((node_id,))]

    def nodes_with_passages(self) -> set[str]:
        """Ids of the documents that have at least one passage."""
        return {row[0] for row in self._conn.prepare(_NODES_WITH_PASSAGES).execute()}

    def count_passages(self) -> tuple[int, int]:
        """(passages, passages with an embedding)."""
        if not self.has_passages_table():
            return 0, 0
        total, embedded = one_row(self._conn.prepare(_COUNT))
        return int(total), int(embedded)

    # -- writing (inside the caller's transaction) ---------------------------------------------

    @refuses_unstorable_text
    def insert_passages(self, node_id: str, passages: Sequence[Any],
                        embeddings: npt.NDArray[np.float32]) -> list[int]:
        """Insert passages of ``node_id`` with their embeddings (one row of ``embeddings`` per
        passage); the schema's trigger indexes their text. Returns the new rowids.

        Each passage needs ``ordinal``, ``heading``, ``line_start``, ``line_end``, ``hash``,
        ``context`` and ``text`` attributes (:class:`amalfa.ingest.passages.Passage`).
        """
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(passages):
            raise ValueError(f"need one embedding per passage: {len(passages)} passages, "
                             f"embeddings of shape {vectors.shape}")
        insert = self._conn.prepare(_INSERT)
        ids: list[int] = []
        for passage, vector in zip(passages, vectors):
            insert.run((node_id, passage.ordinal, passage.heading, passage.line_start,
                        passage.line_end, passage.hash, passage.context, passage.text, vector))
            ids.append(self._conn.last_insert_rowid)
        return ids

    def move_passages(self, moves: Iterable[tuple[int, int, str | None, int, int]]) -> None:
        """Give kept passages their new place: ``(id, ordinal, heading, line_start, line_end)``.
        The embedding is untouched, so nothing is logged for the vector caches."""
        self._conn.prepare(_MOVE).executemany(
            (ordinal, heading, start, end, passage_id)
            for passage_id, ordinal, heading, start, end in moves)

    def delete_passages(self, ids: Iterable[int]) -> int:
        """Delete passages by rowid (the trigger takes them out of the index); returns how
        many."""
        return int(self._conn.prepare(_DELETE).executemany((passage_id,) for passage_id in ids))

    @refuses_unstorable_text
    def delete_node_passages(self, node_id: str) -> int:
        """Delete every passage of a document."""
        return int(self._conn.prepare(_DELETE_FOR_NODE).run((node_id,)))

    # -- searching -----------------------------------------------------------------------------

    @refuses_unstorable_text
    def keyword_passages(self, match: str, limit: int,
                         ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``limit`` best passages for an FTS5 MATCH expression by BM25: (rowids, scores),
        best first, scores higher-is-better. ``match`` is passed as a bound parameter; building
        a safe expression from user text is the caller's job (:func:`amalfa.search.keyword_query`).
        """
        rows = self._conn.prepare(_KEYWORD).execute((match, int(limit)))
        rowids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        scores = np.fromiter((row[1] for row in rows), dtype=np.float32, count=len(rows))
        return rowids, scores

    def locate_passages(self, rowids: Iterable[int]) -> list[PassageLocation | None]:
        """Each passage's place and document (None for a rowid that no longer exists)."""
        stmt = self._conn.prepare(_LOCATE)
        out: list[PassageLocation | None] = []
        for rowid in rowids:
            row = stmt.first((int(rowid),))
            out.append(None if row is None else PassageLocation(*row))
        return out

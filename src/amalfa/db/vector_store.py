"""The SQL that reads embeddings and the vector change log, as a mixin of ResonanceDB.

:class:`amalfa.vectors.VectorEngine` keeps a matrix of a table's embeddings in memory; every
statement it needs lives here, so the database layer stays the only code that writes SQL on the
graph's tables. The methods hand raw prepared statements to the C kernels of
:mod:`amalfa._core.fafcas` (which step them without the GIL and copy BLOBs straight from SQLite's
pages) and return numpy arrays, never a Python object per row.

The change log (migration 0004) is read by position: ``head`` is the last sequence number ever
handed out (``sqlite_sequence``, which pruning does not lower), ``oldest`` the oldest entry kept.
A reader that remembers seq S can catch up from the log when ``oldest <= S + 1``; otherwise
entries it needed were pruned and it reloads.

(The bulk write from one (N, d) matrix, ``insert_nodes_matrix``, is a node write: it lives with
the other node writes in :mod:`amalfa.db.nodes`.)

Table names are never taken from callers: ``source`` must be one of :data:`VECTOR_SOURCES`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from amalfa._core import fafcas as kernels
from amalfa.db._rows import has_table, one_row
from amalfa.db.meta import DATABASE_ID_KEY, read_meta

if TYPE_CHECKING:
    from amalfa._core.connection import Connection

__all__ = ["VECTOR_SOURCES", "VectorStore"]

#: the tables whose ``embedding`` column a VectorEngine can follow
VECTOR_SOURCES = ("nodes", "passages")

_LOG_HEAD = "SELECT seq FROM sqlite_sequence WHERE name = 'vector_changes'"
_LOG_OLDEST = "SELECT min(seq) FROM vector_changes"
_SAVE_EMBEDDING = "UPDATE nodes SET embedding = ? WHERE id = ?"
_HYDRATE = "SELECT id, title, date, meta, domain, type FROM nodes WHERE rowid = ?"


def _sql(source: str) -> dict[str, str]:
    if source not in VECTOR_SOURCES:
        raise ValueError(f"source must be one of {VECTOR_SOURCES}, not {source!r}")
    return {
        "load": (f"SELECT rowid, embedding FROM {source} WHERE embedding IS NOT NULL "
                 "AND rowid > ? ORDER BY rowid"),
        "changed_ids": (f"SELECT DISTINCT row_id FROM vector_changes WHERE seq > ? "
                        f"AND source = '{source}' ORDER BY row_id"),
        "load_by_rowid": (f"SELECT rowid, embedding FROM {source} WHERE rowid IN "
                          "(SELECT value FROM json_each(?)) AND embedding IS NOT NULL "
                          "ORDER BY rowid"),
        "blob": f"SELECT embedding FROM {source} WHERE rowid = ?",
        "rowid_span": f"SELECT (SELECT min(rowid) FROM {source}), (SELECT max(rowid) FROM {source})",
    }


_SQL = {source: _sql(source) for source in VECTOR_SOURCES}


def _scan_sql(domain: str | None, type_: str | None) -> str:
    sql = "SELECT rowid, embedding FROM nodes WHERE embedding IS NOT NULL"
    if domain is not None:
        sql += " AND domain = :domain"
    if type_ is not None:
        sql += " AND type = :type"
    return sql


class VectorStore:
    """Reads of embeddings and of the change log (mixed into :class:`ResonanceDB`)."""

    _conn: Connection

    # -- where the data stands ------------------------------------------------------------------

    def has_vector_source(self, source: str) -> bool:
        """Whether ``source``'s table exists in this database (``passages`` comes with 0005)."""
        if source not in VECTOR_SOURCES:
            raise ValueError(f"source must be one of {VECTOR_SOURCES}, not {source!r}")
        return has_table(self._conn, source)

    def data_version(self) -> tuple[int, int]:
        """(``PRAGMA data_version``, this connection's total changes): equal pairs mean nothing
        was committed by anyone in between (other connections move the first, ours the second)."""
        conn = self._conn
        return int(one_row(conn.prepare("PRAGMA data_version"))[0]), conn.total_changes

    def database_id(self) -> str | None:
        """The random id migration 0004 gave this database (None before it): caches kept beside
        the file are valid for this id only."""
        value = read_meta(self._conn, DATABASE_ID_KEY)
        return None if value is None else str(value)

    def vector_blobs(self, source: str, rowids: Any) -> list[Any]:
        """The stored embedding value of each rowid (None where the row is gone)."""
        stmt = self._conn.prepare(_SQL[source]["blob"])
        return [None if row is None else row[0] for row in (stmt.first((int(r),)) for r in rowids)]

    def vector_log_position(self) -> tuple[int, int | None]:
        """(head, oldest): the last seq handed out (0 if none) and the oldest kept (None: empty)."""
        row = self._conn.prepare(_LOG_HEAD).first()
        head = int(row[0]) if row is not None and row[0] is not None else 0
        (oldest,) = one_row(self._conn.prepare(_LOG_OLDEST))
        return head, None if oldest is None else int(oldest)

    def vector_row_bound(self, source: str, dimensions: int) -> int:
        """An upper bound on the rows of ``source`` with a ``dimensions``-d embedding, in O(log n):
        no more than the rowid span, and no more than the database's bytes over the vector size."""
        low, high = one_row(self._conn.prepare(_SQL[source]["rowid_span"]))
        if low is None:
            return 0
        (pages,) = one_row(self._conn.prepare("PRAGMA page_count"))
        (page_size,) = one_row(self._conn.prepare("PRAGMA page_size"))
        by_bytes = int(pages) * int(page_size) // (4 * dimensions) + 1
        return max(0, min(int(high) - int(low) + 1, by_bytes))

    @contextmanager
    def read_transaction(self) -> Iterator[None]:
        """One read transaction around several reads (nothing when one is already open)."""
        conn = self._conn
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN")
        try:
            yield
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    # -- loading into the cached matrix ---------------------------------------------------------

    def load_vectors(self, source: str, out: npt.NDArray[np.float32], ids: npt.NDArray[np.int64],
                     *, after_rowid: int = -(2**63),
                     skipped_ids: npt.NDArray[np.int64] | None = None) -> tuple[int, int, bool]:
        """Copy embeddings of rows after ``after_rowid`` (in rowid order) into ``out``/``ids``.

        Returns (rows filled, rows skipped, more rows pending); see ``fafcas.load_matrix``.
        """
        stmt = self._conn.prepare(_SQL[source]["load"])
        stmt.bind((after_rowid,))
        return kernels.load_matrix(stmt, out, ids, skipped_ids=skipped_ids)

    def vector_changes_since(self, source: str, seq: int) -> npt.NDArray[np.int64]:
        """The distinct rowids of ``source`` logged after ``seq``, ascending."""
        rows = self._conn.prepare(_SQL[source]["changed_ids"]).execute((seq,))
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def load_vectors_by_rowid(self, source: str, rowids: npt.NDArray[np.int64],
                              out: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], *,
                              skipped_ids: npt.NDArray[np.int64] | None = None,
                              ) -> tuple[int, int, bool]:
        """Copy the current embeddings of the given rows (those that still have one), in rowid
        order: one statement, the rowids bound as one JSON array."""
        stmt = self._conn.prepare(_SQL[source]["load_by_rowid"])
        stmt.bind((json.dumps(rowids.tolist()),))
        return kernels.load_matrix(stmt, out, ids, skipped_ids=skipped_ids)

    # -- the direct scan and hydration ----------------------------------------------------------

    def scan_node_vectors(self, query: npt.NDArray[np.float32], limit: int, *,
                          domain: str | None = None, type: str | None = None,
                          threshold: float) -> tuple[npt.NDArray[np.float32],
                                                     npt.NDArray[np.int64], int]:
        """Top-k straight over ``nodes``' BLOBs (filters bound as parameters):
        (scores, rowids, rows skipped)."""
        stmt = self._conn.prepare(_scan_sql(domain, type))
        params: dict[str, str] = {}
        if domain is not None:
            params["domain"] = domain
        if type is not None:
            params["type"] = type
        stmt.bind(params)
        return kernels.scan_statement(stmt, query, limit, threshold)

    def node_rows_for_hits(self, rowids: Any) -> list[tuple[Any, ...] | None]:
        """(id, title, date, meta, domain, type) of each node rowid; None for a row now gone."""
        stmt = self._conn.prepare(_HYDRATE)
        return [stmt.first((rowid,)) for rowid in rowids]

    def set_node_embedding(self, node_id: str, vector: npt.NDArray[np.float32]) -> bool:
        """Store an already-validated FAFCAS vector as a node's embedding; False: no such node."""
        return self._conn.prepare(_SAVE_EMBEDDING).run((vector, node_id)) > 0

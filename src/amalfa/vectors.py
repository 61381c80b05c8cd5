"""VectorEngine: semantic search over the graph's FAFCAS embeddings.

Two scan paths, one result shape:

* the **cached matrix**: all embeddings in one (N, d) float32 array with their rowids, loaded
  once and reloaded by itself when the database changes (``PRAGMA data_version`` catches commits
  from other connections and processes, ``total_changes`` this connection's own writes), then
  scanned in C across the machine's cores at memory speed;
* the **direct scan**: step ``SELECT rowid, embedding FROM nodes ...`` and score every BLOB from
  SQLite's own pointer, with the GIL released and no Python object per row; used for filtered
  queries (domain/type, always bound parameters) or when the cache is off.

Only the top k rows are hydrated (id, title, date, meta) from ``nodes``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from amalfa._core import fafcas as kernels
from amalfa.fafcas import as_query, to_fafcas

if TYPE_CHECKING:
    from amalfa.db import ResonanceDB
    from amalfa.embedder import Embedder

__all__ = ["VectorEngine", "SearchResult"]

_COUNT_VECTORS = "SELECT count(*) FROM nodes WHERE embedding IS NOT NULL"
_LOAD_VECTORS = "SELECT rowid, embedding FROM nodes WHERE embedding IS NOT NULL ORDER BY rowid"
_HYDRATE = "SELECT id, title, date, meta, domain, type FROM nodes WHERE rowid = ?"
_SAVE_EMBEDDING = "UPDATE nodes SET embedding = ? WHERE id = ?"


def _scan_sql(domain: str | None, type_: str | None) -> str:
    sql = "SELECT rowid, embedding FROM nodes WHERE embedding IS NOT NULL"
    if domain is not None:
        sql += " AND domain = :domain"
    if type_ is not None:
        sql += " AND type = :type"
    return sql


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One hit: the node's id, its score (dot product), and its hydrated metadata."""

    id: str
    score: float
    title: str | None
    content: str
    date: str | None
    domain: str | None = None
    type: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class VectorEngine:
    """Semantic search over a :class:`~amalfa.db.ResonanceDB`'s embeddings.

    ``VectorEngine(db)`` uses the database's own connection (it never opens another). With
    ``cache=True`` (the default) unfiltered searches run over an in-memory matrix that follows
    the database; ``n_threads=0`` picks the core count for large matrices.
    """

    def __init__(self, db: ResonanceDB, *, embedder: Embedder | None = None, cache: bool = True,
                 n_threads: int = 0) -> None:
        self.db = db
        self._embedder = embedder
        self.cache_enabled = cache
        self.n_threads = n_threads
        self._matrix: npt.NDArray[np.float32] | None = None
        self._rowids: npt.NDArray[np.int64] | None = None
        self._version: tuple[int, int] | None = None
        self.last_skipped = 0  # rows with a BLOB of the wrong length in the last scan/load

    # -- writing ----------------------------------------------------------------------------------

    def save_embedding(self, node_id: str, vector: Any) -> None:
        """Store ``vector`` (normalised to FAFCAS) as the embedding of an existing node."""
        if not isinstance(node_id, str) or not node_id:
            raise ValueError("id must be a non-empty string")
        arr = to_fafcas(vector)
        if arr.ndim != 1:
            raise ValueError(f"embedding must be 1-D; got shape {arr.shape}")
        expected = self.db.dimensions
        if expected is not None and arr.shape[0] != expected:
            raise ValueError(
                f"embedding has dimension {arr.shape[0]}; this database holds {expected}-d vectors")
        with self.db.transaction():
            if expected is None:
                self.db.record_dimensions(arr.shape[0])
            changed = self.db.raw.prepare(_SAVE_EMBEDDING).run((arr, node_id))
            if changed == 0:
                raise KeyError(f"no node with id {node_id!r}")

    # -- the cached matrix ------------------------------------------------------------------------

    def _current_version(self) -> tuple[int, int]:
        conn = self.db.raw
        (data_version,) = conn.prepare("PRAGMA data_version").first()
        return int(data_version), conn.total_changes

    def refresh(self, *, force: bool = False) -> bool:
        """Reload the matrix if the database changed since it was loaded; True when reloaded."""
        version = self._current_version()
        if not force and self._matrix is not None and version == self._version:
            return False
        conn = self.db.raw
        dim = self.db.dimensions
        own_transaction = not conn.in_transaction
        if own_transaction:
            conn.execute("BEGIN")  # count and load see one snapshot
        try:
            (count,) = conn.prepare(_COUNT_VECTORS).first()
            if dim is None or count == 0:
                matrix = np.zeros((0, dim or 0), dtype=np.float32)
                rowids = np.zeros(0, dtype=np.int64)
                skipped = 0
            else:
                matrix = np.empty((count, dim), dtype=np.float32)
                rowids = np.empty(count, dtype=np.int64)
                filled, skipped, _ = kernels.load_matrix(conn.prepare(_LOAD_VECTORS), matrix, rowids)
                matrix, rowids = matrix[:filled], rowids[:filled]
        finally:
            if own_transaction:
                conn.execute("COMMIT")
        self._matrix, self._rowids = matrix, rowids
        self._version = self._current_version()
        self.last_skipped = skipped
        return True

    @property
    def matrix(self) -> npt.NDArray[np.float32]:
        """The cached (N, d) matrix, refreshed first if the database changed (read-only view)."""
        self.refresh()
        assert self._matrix is not None
        view = self._matrix.view()
        view.flags.writeable = False
        return view

    @property
    def rowids(self) -> npt.NDArray[np.int64]:
        self.refresh()
        assert self._rowids is not None
        return self._rowids

    # -- searching --------------------------------------------------------------------------------

    def search(self, text: str, limit: int = 5, **filters: Any) -> list[SearchResult]:
        """Embed ``text`` and search by its vector."""
        if self._embedder is None:
            from amalfa.embedder import Embedder

            self._embedder = Embedder.get_instance()
        return self.search_by_vector(self._embedder.embed(text), limit, **filters)

    def search_by_vector(self, vector: Any, limit: int = 5, *, domain: str | None = None,
                         type: str | None = None, threshold: float = 0.0,
                         use_cache: bool | None = None) -> list[SearchResult]:
        """The ``limit`` nodes most similar to ``vector`` whose score exceeds ``threshold``.

        Best first; equal scores resolve to the earlier-inserted node. Raises ValueError for a
        query of the wrong dimension, NaN/inf, or ``limit`` < 1. An empty database gives [].
        """
        limit = _check_limit(limit)
        dim = self.db.dimensions
        query = as_query(vector, dim)
        if dim is None:
            return []
        threshold = _check_threshold(threshold)
        cached = self.cache_enabled if use_cache is None else use_cache
        if cached and domain is None and type is None:
            self.refresh()
            assert self._matrix is not None and self._rowids is not None
            scores, index = kernels.topk_matrix(self._matrix, query, limit, threshold,
                                                self.n_threads)
            rowids = self._rowids[index]
        else:
            scores, rowids = self.scan_sqlite(query, limit, domain=domain, type=type,
                                              threshold=threshold)
        return self._hydrate(scores, rowids)

    def search_batch(self, vectors: Any, limit: int = 5, *,
                     threshold: float = 0.0) -> list[list[SearchResult]]:
        """Search for many query vectors (Q, d) in one pass over the cached matrix."""
        limit = _check_limit(limit)
        dim = self.db.dimensions
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        if queries.ndim != 2:
            raise ValueError(f"queries must be 2-D (q, d); got shape {queries.shape}")
        if dim is None:
            return [[] for _ in range(queries.shape[0])]
        for row in queries:
            as_query(row, dim)
        threshold = _check_threshold(threshold)
        self.refresh()
        assert self._matrix is not None and self._rowids is not None
        scores, index, counts = kernels.topk_matrix_batch(self._matrix, queries, limit, threshold,
                                                          self.n_threads)
        return [self._hydrate(scores[q, :counts[q]], self._rowids[index[q, :counts[q]]])
                for q in range(queries.shape[0])]

    def scan_sqlite(self, vector: Any, limit: int = 5, *, domain: str | None = None,
                    type: str | None = None, threshold: float = -math.inf,
                    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top-k straight over the BLOB rows in SQLite: (scores, rowids), best first."""
        limit = _check_limit(limit)
        query = as_query(vector, self.db.dimensions)
        stmt = self.db.raw.prepare(_scan_sql(domain, type))
        params: dict[str, str] = {}
        if domain is not None:
            params["domain"] = domain
        if type is not None:
            params["type"] = type
        stmt.bind(params)
        scores, rowids, skipped = kernels.scan_statement(stmt, query, limit, threshold)
        self.last_skipped = skipped
        return scores, rowids

    def _hydrate(self, scores: npt.NDArray[np.float32],
                 rowids: npt.NDArray[np.int64]) -> list[SearchResult]:
        stmt = self.db.raw.prepare(_HYDRATE)
        results = []
        for score, rowid in zip(scores.tolist(), rowids.tolist()):
            row = stmt.first((rowid,))
            if row is None:  # deleted between scan and hydration
                continue
            node_id, title, date, meta_text, domain, type_ = row
            meta = _parse_meta(meta_text)
            results.append(SearchResult(
                id=node_id, score=score, title=title,
                content=f"[Hollow Node: {meta.get('source', '')}]",
                date=date, domain=domain, type=type_, meta=meta))
        return results


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
        raise TypeError(f"limit must be an integer, not {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return int(limit)


def _check_threshold(threshold: float) -> float:
    value = float(threshold)
    if math.isnan(value):
        raise ValueError("threshold is NaN")
    return value


def _parse_meta(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: json's answer to too deep nesting
        return {}
    return meta if isinstance(meta, dict) else {}

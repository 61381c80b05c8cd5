"""VectorEngine: semantic search over a table's FAFCAS embeddings, following every write.

(One concept, under 700 lines: the engine's refresh, its two scan paths and hydration
share the cached matrix's state; the kernels' callers live in ``vector_scans``, the snapshot
file in ``vector_snapshot``.)

Two scan paths, one result shape:

* the **cached matrix**: the embeddings of ``nodes`` (or ``passages``) in one float32 array with
  their rowids, scanned in C at memory speed. It follows the database at the cost of what
  changed: the schema's triggers (migration 0004) log every insert, embedding update and delete
  of any writer, in any process, into ``vector_changes`` with an increasing ``seq``; the matrix
  remembers the seq it reflects and, when ``PRAGMA data_version``/``total_changes`` say something
  was committed, re-reads only the rows logged since (one statement), updating rows in place,
  appending new ones and tombstoning removed ones;
* the **direct scan**: step ``SELECT rowid, embedding FROM nodes ...`` and score every BLOB from
  SQLite's own pointer, with the GIL released; used for filtered queries (domain/type, always
  bound parameters) or when the cache is off.

How the cached matrix is kept (and why):

- **Rowid order, tombstones.** Rows sit in rowid order (a full load reads them so; new rows
  almost always get larger rowids and are appended), so a changed rowid is found by binary search
  and ties in score go to the earlier-inserted row, as in the direct scan. A removed row becomes
  a tombstone: its vector is set to NaN, which the C kernels never rank, so the scan needs no
  mask. A rowid reused later revives its slot. An insert below the largest rowid (explicit
  rowids) is appended out of order and lookups fall back to a sort.
- **Full reload only when it is cheaper.** Re-reading a changed row costs a B-tree probe; a full
  reload streams the table. When the log holds more than :data:`RELOAD_FRACTION` of the cached
  rows (and at least :data:`RELOAD_MIN_CHANGES`), or tombstones pass :data:`COMPACT_FRACTION`,
  the matrix is reloaded in place into the buffer it already has. The log is pruned by a trigger
  (0004: entries more than 65536 behind are dropped); a reader that finds a gap reloads.
- **No count(*), no second copy.** A full reload sizes its buffer from an O(log n) upper bound
  (rowid span, database bytes / vector bytes) allocated with ``np.empty``: pages never written
  never become resident. Appends grow the buffer by 25% in place (``ndarray.resize``, a
  ``realloc``/``mremap``), never by copying into a second matrix. Because the buffer moves,
  :attr:`matrix` and :attr:`rowids` hand out copies, and one engine is used from one thread at a
  time (like the ResonanceDB it reads).
- **Never stale, never wrong after a rollback.** A refresh inside this connection's own write
  transaction sees its uncommitted rows; the rowids it touched are remembered and re-read after
  the transaction ends, so a rollback cannot leave rolled-back vectors in the cache.

A cold process starts from the snapshot file beside the database (amalfa.vector_snapshot) when
it validates. Only the top k rows are hydrated (id, title, date, meta) from ``nodes``.

**int8 by default, scores exact.** Beside the float matrix the engine keeps int8 codes (a
quarter of its size, per-row scales); the scan reads the codes, keeps a pool of candidates
(:data:`INT8_POOL_FACTOR` x k, at least :data:`INT8_POOL_MIN`) and rescores the pool from the
floats, so every returned score is the exact dot product (amalfa.vector_scans). A scan over
memory is bound by the bytes it reads: at 1M x 384 the int8 scan answers in about a third of
the fp32 scan's time. It became the default once measured exact enough on real embeddings:
recall@10 1.0 against the fp32 scan on the 200 real MiniLM embeddings of the test data and on
the passages of the retrieval benchmark (docs/benchmarks/vectors.md). ``precision="fp32"``
scans the floats (no pool: exact by construction, no codes kept).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from amalfa._core import fafcas as kernels
from amalfa.db.vector_store import VECTOR_SOURCES
from amalfa.fafcas import as_query, to_fafcas
from amalfa.limits import RESULTS, THREADS, IntRange
from amalfa.text_rules import check_storable
from amalfa.vector_scans import gemm_top_k, int8_top_k, quantize
from amalfa.vector_snapshot import (codes_match, peek_seq, read_snapshot, snapshot_path,
                                    write_snapshot)

if TYPE_CHECKING:
    from amalfa.db import ResonanceDB
    from amalfa.embedder import Embedder

__all__ = ["VectorEngine", "SearchResult", "SCAN_PRECISIONS", "RELOAD_FRACTION",
           "RELOAD_MIN_CHANGES", "COMPACT_FRACTION", "BATCH_GEMM_MIN_QUERIES", "SNAPSHOT_MIN_ROWS",
           "INT8_POOL_FACTOR", "INT8_POOL_MIN"]

#: a refresh reloads fully when the log holds more changes than this fraction of the cached rows:
#: measured, re-reading one changed row by rowid costs about 4x what streaming one row costs
RELOAD_FRACTION = 0.25
#: ... but never for fewer changes than this (small tables reload in microseconds either way)
RELOAD_MIN_CHANGES = 256
#: tombstones beyond this fraction of the cached rows are compacted by the next full reload
COMPACT_FRACTION = 0.25
#: a full reload of at least this many rows writes the snapshot a cold process starts from
#: (below it the B-tree walk costs a few milliseconds and a cache file is not worth keeping)
SNAPSHOT_MIN_ROWS = 10_000
#: how the cached matrix is scanned: "int8" (the default) picks a candidate pool from int8 codes
#: and rescores it exactly in fp32; "fp32" scans the floats (4x the bytes, no candidate pool)
SCAN_PRECISIONS = ("int8", "fp32")
#: with precision="int8" the int8 scan keeps this many candidates per wanted hit (and at least
#: INT8_POOL_MIN) and rescores them exactly in fp32: recall@10 measured 1.0 on MiniLM vectors
INT8_POOL_FACTOR = 4
INT8_POOL_MIN = 32
#: search_batch runs as blocked matrix-matrix products (numpy's BLAS) from this many queries on
BATCH_GEMM_MIN_QUERIES = 16
# ids of skipped (wrong-length or non-finite) rows remembered per load
_SKIPPED_ROOM = 4096
_GROWTH = 1.25
_NO_ROWID = np.iinfo(np.int64).min


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

    ``VectorEngine(db)`` uses the database's own connection (it never opens another).
    ``source="passages"`` follows the passages table instead of nodes (only :meth:`top_k` and
    :meth:`top_k_batch` then apply: hits are passage rowids). With ``cache=True`` (the default)
    unfiltered searches run over the in-memory matrix; ``n_threads=0`` picks the core count for
    large matrices. ``precision`` is how that matrix is scanned (:data:`SCAN_PRECISIONS`):
    "int8" (the default; scores exact, see the module's notes) or "fp32".
    """

    def __init__(self, db: ResonanceDB, *, source: str = "nodes", embedder: Embedder | None = None,
                 cache: bool = True, n_threads: int = 0, snapshot: bool = True,
                 precision: str = "int8") -> None:
        if source not in VECTOR_SOURCES:
            raise ValueError(f"source must be one of {VECTOR_SOURCES}, not {source!r}")
        if not db.has_vector_source(source):
            raise ValueError(f"the database at {db.path} has no {source} table "
                             "(it comes with a later migration)")
        if precision not in SCAN_PRECISIONS:
            raise ValueError(f"precision must be one of {SCAN_PRECISIONS}, not {precision!r}")
        self.db = db
        self.source = source
        self.precision = precision
        self._embedder = embedder
        self.cache_enabled = cache
        # amalfa.limits: 0 (the core count) .. THREADS.high, before the kernels' C int sees it
        self.n_threads = IntRange(0, THREADS.high).check(n_threads, "n_threads")
        self.last_skipped = 0  # rows with a BLOB of the wrong length (or NaN/inf) last time
        self.full_reloads = 0  # how many refreshes reloaded everything (for tests and benchmarks)
        self.snapshot_loads = 0  # how many times the matrix came from the snapshot file
        filename = db.raw.filename
        #: the cache file beside the database (None: in memory, or snapshot=False)
        self.snapshot_file = snapshot_path(filename, source) if snapshot and filename else None
        self.snapshot_min_rows = SNAPSHOT_MIN_ROWS
        self._drop()

    def _drop(self) -> None:
        """Forget the cache; the next query reloads."""
        self._matrix: npt.NDArray[np.float32] | None = None
        self._rowids = np.empty(0, np.int64)
        self._live = np.empty(0, np.bool_)
        self._n = 0  # slots used (live rows + tombstones)
        self._dead = 0
        self._sorted = True
        self._dim: int | None = None
        self._seq = 0  # the log position the matrix reflects
        self._committed_seq = 0  # ... of which this connection had committed everything
        self._tainted: set[int] | None = None  # rowids read inside our own write transaction
        self._reload_after_transaction = False  # a full reload happened inside one
        self._version: tuple[int, int] | None = None
        self._skipped: set[int] = set()
        self._skipped_extra = 0
        # precision="int8": per-row symmetric int8 codes and scales, slot for slot with _matrix
        self._codes: npt.NDArray[np.int8] | None = None
        self._scales = np.empty(0, np.float32)
        self._snapshot_rejected = False  # the file failed validation: rewrite it

    # -- writing ----------------------------------------------------------------------------------

    def save_embedding(self, node_id: str, vector: Any) -> None:
        """Store ``vector`` (normalised to FAFCAS) as the embedding of an existing node."""
        if not isinstance(node_id, str) or not node_id:
            raise ValueError("id must be a non-empty string")
        check_storable(node_id, what="node id")
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
            if not self.db.set_node_embedding(node_id, arr):
                raise KeyError(f"no node with id {node_id!r}")

    # -- the cached matrix ------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> bool:
        """Bring the matrix up to date with what is committed; True when anything was applied.

        ``force=True`` reloads everything.
        """
        db = self.db
        writing = db.raw.txn_state == 2  # our own write transaction: its rows may roll back
        version = db.data_version()
        if (not force and self._matrix is not None and version == self._version
                and (self._tainted is None or writing)):
            return False
        dim = db.dimensions
        with db.read_transaction():
            head, oldest = db.vector_log_position()
            if (self._matrix is None and not force and not writing and dim is not None
                    and self.snapshot_file is not None):
                self._load_snapshot(dim, head, oldest)
            start = self._committed_seq
            behind = head - start + (len(self._tainted) if self._tainted else 0)
            gap = head > start and (oldest is None or oldest > start + 1)
            live = self._n - self._dead
            full = (force or self._matrix is None or dim != self._dim or gap
                    or (self._reload_after_transaction and not writing)
                    or behind > self._reload_threshold(live)
                    or self._dead > max(RELOAD_MIN_CHANGES, COMPACT_FRACTION * self._n))
            if writing and self._tainted is None:
                self._tainted = set()
            if full:
                self._reload(dim, head)
                changed = True
                if not writing:
                    self._maybe_save_snapshot(head)
            else:
                changed = head != self._seq or self._tainted is not None
                if changed:
                    self._apply_changes(start, head)
            self._seq = head
            if writing:
                # what was read may roll back: re-read it once the transaction is over
                self._reload_after_transaction = self._reload_after_transaction or full
            else:
                self._committed_seq = head
                self._tainted = None
                self._reload_after_transaction = False
        # the version read before the snapshot began: a commit landing after it makes the next
        # query look again (at worst one needless, cheap refresh), never skip a change
        self._version = version
        self.last_skipped = len(self._skipped) + self._skipped_extra
        return changed

    def _reload(self, dim: int | None, head: int) -> None:
        self.full_reloads += 1
        self._skipped, self._skipped_extra = set(), 0
        self._dim = dim
        self._n = self._dead = 0
        self._sorted = True
        if dim is None:
            self._matrix = np.empty((0, 0), np.float32)
            return
        capacity = self.db.vector_row_bound(self.source, dim) + 16
        skipped_ids = np.empty(_SKIPPED_ROOM, np.int64)
        while True:
            if self._matrix is None or self._matrix.shape != (self._matrix.shape[0], dim) \
                    or self._matrix.shape[0] < capacity or not self._matrix.flags.owndata:
                # drop the old buffer first: never two matrices at once
                self._matrix = self._rowids = self._live = None  # type: ignore[assignment]
                self._matrix = np.empty((capacity, dim), np.float32)
                self._rowids = np.empty(capacity, np.int64)
                self._live = np.empty(capacity, np.bool_)
            try:
                filled, skipped, pending = self.db.load_vectors(
                    self.source, self._matrix, self._rowids, skipped_ids=skipped_ids)
            except BaseException:
                self._drop()
                raise
            if not pending:
                break
            capacity = 2 * self._matrix.shape[0]  # the bound is an upper bound; defensive only
        self._n = filled
        self._live[:filled] = True
        self._quantize_all()
        self._skipped = set(skipped_ids[:min(skipped, _SKIPPED_ROOM)].tolist())
        self._skipped_extra = max(0, skipped - _SKIPPED_ROOM)

    def _reload_threshold(self, rows: int) -> float:
        return max(RELOAD_MIN_CHANGES, RELOAD_FRACTION * rows)

    def _load_snapshot(self, dim: int, head: int, oldest: int | None) -> None:
        """Start from the snapshot file when it validates (see amalfa.vector_snapshot)."""
        assert self.snapshot_file is not None
        database_id = self.db.database_id()
        if database_id is None:
            return
        int8 = self.precision == "int8"
        found = read_snapshot(self.snapshot_file, database_id=database_id, source=self.source,
                              dim=dim, int8=int8, spare_rows=1024)
        if found is None:
            return
        snap, arrays = found
        rowids, matrix = arrays.rowids, arrays.matrix
        behind = head - snap.seq
        if (behind < 0 or (behind > 0 and (oldest is None or oldest > snap.seq + 1))
                or behind > self._reload_threshold(snap.n)):
            return  # restored from an older copy, pruned past it, or cheaper to reload
        changed = set(self.db.vector_changes_since(self.source, snap.seq).tolist()) if behind else set()
        slots = [slot for slot in snap.sample_slots if int(rowids[slot]) not in changed]
        stored = self.db.vector_blobs(self.source, rowids[slots].tolist())
        if (any(blob != matrix[slot].tobytes() for slot, blob in zip(slots, stored))
                or (int8 and not codes_match(matrix, arrays.codes, arrays.scales, slots))):
            # edited behind the log's back, another copy's, or damaged: never trusted, and
            # replaced by the full reload that follows
            self._snapshot_rejected = True
            return
        self._matrix, self._rowids = matrix, rowids
        self._live = np.ones(len(rowids), np.bool_)
        self._n, self._dead, self._dim = snap.n, 0, dim
        self._sorted = bool(np.all(rowids[1:snap.n] > rowids[:snap.n - 1]))
        self._seq = self._committed_seq = snap.seq
        self._skipped, self._skipped_extra = set(snap.skipped), 0
        if int8:
            assert arrays.codes is not None and arrays.scales is not None
            self._codes, self._scales = arrays.codes, arrays.scales
        self.snapshot_loads += 1

    def _maybe_save_snapshot(self, head: int) -> None:
        """After a full reload: write the snapshot if it is missing or would be reloaded."""
        if self.snapshot_file is None or self._n < self.snapshot_min_rows or self._matrix is None:
            return
        database_id = self.db.database_id()
        if database_id is None:
            return
        seq = peek_seq(self.snapshot_file, database_id=database_id, source=self.source)
        if (seq is not None and seq <= head and head - seq <= self._reload_threshold(self._n)
                and not self._snapshot_rejected):
            return
        self._snapshot_rejected = False
        self.save_snapshot(_head=head, _database_id=database_id)

    def save_snapshot(self, *, _head: int | None = None, _database_id: str | None = None) -> bool:
        """Write the cached matrix (as committed) to the snapshot file; False when it cannot be
        written (in memory, not writable, inside this connection's write transaction)."""
        if self.snapshot_file is None:
            return False
        if _head is None:
            if self.db.raw.txn_state == 2:
                return False
            self.refresh()
            _head, _database_id = self._seq, self.db.database_id()
        if _database_id is None or self._matrix is None or self._tainted is not None:
            return False
        n = self._n
        codes = None if self._codes is None else self._codes[:n]
        return write_snapshot(self.snapshot_file, database_id=_database_id, source=self.source,
                              seq=_head, matrix=self._matrix[:n], rowids=self._rowids[:n],
                              live=self._live[:n], skipped=sorted(self._skipped),
                              codes=codes, scales=self._scales[:n] if codes is not None else None)

    def _rowid_order(self) -> npt.NDArray[np.intp] | None:
        """The permutation that sorts the cached rowids (None while they are in order)."""
        return None if self._sorted else np.argsort(self._rowids[:self._n], kind="stable")

    def _positions(self, rowids: npt.NDArray[np.int64],
                   order: npt.NDArray[np.intp] | None) -> npt.NDArray[np.intp]:
        """Slot of each rowid in the cache, -1 where it has none (``order``: _rowid_order())."""
        n = self._n
        stored = self._rowids[:n]
        if order is None:
            at = np.searchsorted(stored, rowids)
        else:
            at = np.searchsorted(stored[order], rowids)
        at = np.minimum(at, max(n - 1, 0))
        slots = at if order is None else order[at] if n else at
        found = (stored[slots] == rowids) if n else np.zeros(len(rowids), np.bool_)
        return np.where(found, slots, -1)

    def _apply_changes(self, start: int, head: int) -> None:
        assert self._matrix is not None and self._dim is not None
        changed = self.db.vector_changes_since(self.source, start)
        if self._tainted:
            changed = np.union1d(changed, np.fromiter(self._tainted, np.int64,
                                                      count=len(self._tainted)))
        if len(changed) == 0:
            return
        k, d = len(changed), self._dim
        fresh = np.empty((k, d), np.float32)
        fresh_ids = np.empty(k, np.int64)
        skipped_ids = np.empty(k, np.int64)
        filled, skipped, _ = self.db.load_vectors_by_rowid(self.source, changed, fresh, fresh_ids,
                                                           skipped_ids=skipped_ids)
        fresh, fresh_ids = fresh[:filled], fresh_ids[:filled]
        if self._tainted is not None:
            self._tainted.update(changed.tolist())
        for rowid in changed.tolist():
            self._skipped.discard(rowid)
        self._skipped.update(skipped_ids[:skipped].tolist())
        # rows gone (deleted, embedding NULL or unreadable): tombstones
        gone = np.setdiff1d(changed, fresh_ids, assume_unique=True)
        order = self._rowid_order()  # one sort for both lookups: nothing moves until the append
        if len(gone):
            slots = self._positions(gone, order)
            slots = slots[slots >= 0]
            slots = slots[self._live[slots]]
            self._matrix[slots] = np.nan
            self._live[slots] = False
            self._dead += len(slots)
            if self._codes is not None:
                self._scales[slots] = np.nan
        if not filled:
            return
        slots = self._positions(fresh_ids, order)
        known = slots >= 0
        old = slots[known]
        rows = fresh[known]
        self._dead -= int(np.count_nonzero(~self._live[old]))
        self._matrix[old] = rows
        self._live[old] = True
        self._quantize_slots(old, rows)
        new_ids = fresh_ids[~known]
        if len(new_ids):
            n = self._n
            self._reserve(n + len(new_ids))
            if n and new_ids[0] <= self._rowids[n - 1]:
                self._sorted = False
            self._matrix[n:n + len(new_ids)] = fresh[~known]
            self._rowids[n:n + len(new_ids)] = new_ids
            self._live[n:n + len(new_ids)] = True
            self._n = n + len(new_ids)
            if self._codes is not None:
                kernels.quantize_rows(self._matrix, self._codes, self._scales, n, self._n)

    def _reserve(self, rows: int) -> None:
        """Grow the buffers in place (realloc) to hold ``rows`` rows: by 25% at least."""
        assert self._matrix is not None and self._dim is not None
        capacity = self._matrix.shape[0]
        if rows <= capacity:
            return
        capacity = max(rows, int(capacity * _GROWTH), 1024)
        # the first growth after a cold start moves the rows from the mapped snapshot (file
        # pages of the page cache) into the engine's own memory, once; then realloc in place
        # (refcheck=False is safe: the engine never hands out views of these arrays)
        self._matrix = _owned(self._matrix, self._n)
        self._matrix.resize((capacity, self._dim), refcheck=False)
        self._rowids.resize(capacity, refcheck=False)
        self._live.resize(capacity, refcheck=False)
        if self._codes is not None:
            self._codes = _owned(self._codes, self._n)
            self._scales = _owned(self._scales, self._n)
            self._codes.resize((capacity, self._dim), refcheck=False)
            self._scales.resize(capacity, refcheck=False)

    def _quantize_all(self) -> None:
        """precision="int8": codes for every slot, sized like the matrix (one copy, a quarter of
        its size)."""
        if self.precision != "int8" or self._matrix is None or self._dim is None:
            return
        capacity = self._matrix.shape[0]
        if (self._codes is None or self._codes.shape != (capacity, self._dim)
                or not self._codes.flags.owndata):
            self._codes = None  # never two at once
            self._codes = np.empty((capacity, self._dim), np.int8)
            self._scales = np.empty(capacity, np.float32)
        kernels.quantize_rows(self._matrix, self._codes, self._scales, 0, self._n)

    def _quantize_slots(self, slots: npt.NDArray[np.intp],
                        rows: npt.NDArray[np.float32]) -> None:
        """The int8 codes of ``rows``, now stored at ``slots``: one kernel call for them all."""
        if self._codes is None or not len(slots):
            return
        self._codes[slots], self._scales[slots] = quantize(rows)

    @property
    def matrix(self) -> npt.NDArray[np.float32]:
        """A read-only copy of the cached (N, d) matrix (live rows, rowid order), refreshed first."""
        self.refresh()
        assert self._matrix is not None
        rows = self._matrix[:self._n]
        out = rows[self._live[:self._n]] if self._dead else rows.copy()
        out.flags.writeable = False
        return out

    @property
    def rowids(self) -> npt.NDArray[np.int64]:
        """The rowids of :attr:`matrix`'s rows (a copy)."""
        self.refresh()
        ids = self._rowids[:self._n]
        return ids[self._live[:self._n]] if self._dead else ids.copy()

    @property
    def seq(self) -> int:
        """The change-log position the cached matrix reflects."""
        return self._seq

    # -- searching --------------------------------------------------------------------------------

    def top_k(self, vector: Any, k: int, *, threshold: float = -math.inf,
              ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``k`` rows of the source table most similar to ``vector``: (rowids, scores),
        best first, over the cached matrix (refreshed first)."""
        k = _check_limit(k)
        dim = self.db.dimensions
        query = as_query(vector, dim)
        if dim is None:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        scores, rowids = self._cached_top_k(query, k, _check_threshold(threshold))
        return rowids, scores

    def _cached_top_k(self, query: npt.NDArray[np.float32], k: int, threshold: float,
                      ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        self.refresh()
        assert self._matrix is not None
        if self._n == 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        if self._codes is not None:
            return self._int8_top_k(query, k, threshold)
        scores, index = kernels.topk_matrix(self._matrix[:self._n], query, k, threshold,
                                            self.n_threads)
        return scores, self._rowids[index]

    def _int8_top_k(self, query: npt.NDArray[np.float32], k: int, threshold: float,
                    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        assert self._codes is not None and self._matrix is not None
        n = self._n
        pool = min(n, max(k * INT8_POOL_FACTOR, INT8_POOL_MIN))
        scores, index = int8_top_k(self._codes[:n], self._scales[:n], self._matrix[:n], query, k,
                                   pool, threshold, self.n_threads)
        return scores, self._rowids[index]

    def search(self, text: str, limit: int = 5, **filters: Any) -> list[SearchResult]:
        """Embed ``text`` and search by its vector.

        The text is embedded with the model and precision the database recorded (by default),
        and an embedder of another one is refused with
        :class:`~amalfa.errors.ModelMismatchError`: vectors of two models are not comparable,
        even when their dimensions agree."""
        if self._embedder is None:
            from amalfa.embedder import Embedder

            self._embedder = Embedder.for_database(self.db)
        self._embedder.check_database(self.db)
        return self.search_by_vector(self._embedder.embed(text), limit, **filters)

    def search_by_vector(self, vector: Any, limit: int = 5, *, domain: str | None = None,
                         type: str | None = None, threshold: float = 0.0,
                         use_cache: bool | None = None) -> list[SearchResult]:
        """The ``limit`` nodes most similar to ``vector`` whose score exceeds ``threshold``.

        Best first; equal scores resolve to the earlier-inserted node. Raises ValueError for a
        query of the wrong dimension, NaN/inf, or ``limit`` < 1. An empty database gives [].
        """
        self._nodes_only("search_by_vector")
        limit = _check_limit(limit)
        dim = self.db.dimensions
        query = as_query(vector, dim)
        if dim is None:
            return []
        threshold = _check_threshold(threshold)
        cached = self.cache_enabled if use_cache is None else use_cache
        if cached and domain is None and type is None:
            scores, rowids = self._cached_top_k(query, limit, threshold)
        else:
            scores, rowids = self.scan_sqlite(query, limit, domain=domain, type=type,
                                              threshold=threshold)
        return self._hydrate(scores, rowids)

    def top_k_batch(self, vectors: Any, k: int, *, threshold: float = -math.inf,
                    ) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """:meth:`top_k` for each row of a (q, d) array, in one pass over the matrix.

        From :data:`BATCH_GEMM_MIN_QUERIES` queries on, the scores come from blocked
        matrix-matrix products (numpy's BLAS) and each block's best k per query are kept;
        below that, one C pass scores every row against all queries while it is in cache.
        """
        k = _check_limit(k)
        dim = self.db.dimensions
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        if queries.ndim != 2:
            raise ValueError(f"queries must be 2-D (q, d); got shape {queries.shape}")
        if dim is None:
            return [(np.empty(0, np.int64), np.empty(0, np.float32))] * queries.shape[0]
        for row in queries:
            as_query(row, dim)
        threshold = _check_threshold(threshold)
        self.refresh()
        assert self._matrix is not None
        q = queries.shape[0]
        if self._n == 0 or q == 0:
            return [(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in range(q)]
        matrix = self._matrix[:self._n]
        if q >= BATCH_GEMM_MIN_QUERIES:
            return [(self._rowids[index], scores)
                    for scores, index in gemm_top_k(matrix, queries, k, threshold)]
        scores, index, counts = kernels.topk_matrix_batch(matrix, queries, k, threshold,
                                                          self.n_threads)
        return [(self._rowids[index[j, :counts[j]]], scores[j, :counts[j]]) for j in range(q)]

    def search_batch(self, vectors: Any, limit: int = 5, *,
                     threshold: float = 0.0) -> list[list[SearchResult]]:
        """Search for many query vectors (Q, d) in one pass over the cached matrix."""
        self._nodes_only("search_batch")
        return [self._hydrate(scores, rowids)
                for rowids, scores in self.top_k_batch(vectors, limit, threshold=threshold)]

    def scan_sqlite(self, vector: Any, limit: int = 5, *, domain: str | None = None,
                    type: str | None = None, threshold: float = -math.inf,
                    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top-k straight over the BLOB rows in SQLite: (scores, rowids), best first."""
        self._nodes_only("scan_sqlite")
        limit = _check_limit(limit)
        for name, value in (("domain", domain), ("type", type)):
            if value is not None:  # a filter SQLite cannot store matches nothing: say so
                check_storable(value, what=name)
        query = as_query(vector, self.db.dimensions)
        scores, rowids, skipped = self.db.scan_node_vectors(query, limit, domain=domain,
                                                            type=type, threshold=threshold)
        self.last_skipped = skipped
        return scores, rowids

    def _nodes_only(self, what: str) -> None:
        if self.source != "nodes":
            raise ValueError(f"{what} returns nodes; on source={self.source!r} use top_k")

    def _hydrate(self, scores: npt.NDArray[np.float32],
                 rowids: npt.NDArray[np.int64]) -> list[SearchResult]:
        results = []
        for score, row in zip(scores.tolist(), self.db.node_rows_for_hits(rowids.tolist())):
            if row is None:  # deleted between scan and hydration
                continue
            node_id, title, date, meta_text, domain, type_ = row
            meta = _parse_meta(meta_text)
            results.append(SearchResult(
                id=node_id, score=score, title=title,
                content=f"[Hollow Node: {meta.get('source', '')}]",
                date=date, domain=domain, type=type_, meta=meta))
        return results


def _owned(array: npt.NDArray[Any], rows: int) -> npt.NDArray[Any]:
    """``array`` itself when it owns its memory (so it can be resized in place), else a copy of
    its first ``rows`` rows (it is mapped from the snapshot)."""
    return array if array.flags.owndata else array[:rows].copy()


def _check_limit(limit: int) -> int:
    # amalfa.limits: 1..2**31 - 1, checked before the kernels' Py_ssize_t sees it
    return RESULTS.check(limit, "limit")


def _check_threshold(threshold: float) -> float:
    try:
        value = float(threshold)
    except OverflowError:  # an int beyond float's range: a bound nothing (or all) passes
        value = math.inf if threshold > 0 else -math.inf
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

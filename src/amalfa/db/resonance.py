"""ResonanceDB: the knowledge graph's nodes and edges in SQLite, with an audit history.

The tables are the original system's (``nodes``, ``edges``, ``ember_state``, ``history``), kept in
step by :mod:`amalfa.migrations`, plus the ones later migrations add. :class:`ResonanceDB` opens
the connection, migrates the schema and holds the lifecycle; what it does to each table lives in
a mixin of its own module, named for what it holds:

- :mod:`amalfa.db.nodes` (``NodeStore``): node upserts, bulk inserts, reads, ingest bookkeeping;
- :mod:`amalfa.db.edges` (``EdgeStore``): edge inserts, reads by node and by type, deletes;
- :mod:`amalfa.db.history` (``HistoryLog``): the audit triggers and ``get_history``;
- :mod:`amalfa.db.meta` (``MetaStore``): ``amalfa_meta`` (recorded model, dimension);
- :mod:`amalfa.db.transactions` (``Transactions``): BEGIN IMMEDIATE, savepoints, the WAL bound;
- :mod:`amalfa.db.graph`, :mod:`amalfa.db.vector_store`, :mod:`amalfa.db.passages`: walks,
  vector reads and passages, added by their own issues.

The records (``Node``, ``Edge`` ...) are in :mod:`amalfa.db.records`, the checks that run before
any write in :mod:`amalfa.db.validation`, node ids in :mod:`amalfa.db.ids`. A table added later
gets a mixin module of its own and a place in the bases of ``class ResonanceDB`` below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from amalfa import migrations
from amalfa._core.connection import Connection
from amalfa.db._rows import one_row
from amalfa.db.edges import EdgeStore
from amalfa.db.graph import GraphQueries
from amalfa.db.history import HistoryLog
from amalfa.db.nodes import NodeStore
from amalfa.db.passages import PassageStore
from amalfa.db.records import DatabaseNotFoundError, DatabaseStats
from amalfa.db.vector_store import VectorStore
from amalfa.errors import BusyError
from amalfa.factory import DatabaseFactory

__all__ = ["ResonanceDB"]

_COUNT_NODES = (
    "SELECT count(*), count(embedding), coalesce(sum(meta LIKE '%semantic_tokens%'), 0) FROM nodes"
)
_COUNT_EDGES = "SELECT count(*) FROM edges"


class ResonanceDB(NodeStore, EdgeStore, HistoryLog, GraphQueries, VectorStore, PassageStore):
    """The graph database: typed CRUD on nodes and edges, transactions, audit history.

    ``ResonanceDB(path)`` opens an existing database (a missing file raises
    :class:`DatabaseNotFoundError`, which is both a CantOpenError and a FileNotFoundError);
    ``ResonanceDB.create(path)`` or ``create=True`` makes it, folders included. Opening applies
    pending migrations (see :mod:`amalfa.migrations`; ``backup_dir`` overrides where the backup
    taken first goes). ``readonly=True`` opens without writing anything, and needs a current
    schema. ``dimensions`` is the embedding dimension expected (from settings); it must agree with
    the one the database has recorded, and is recorded when none is. ``history=False`` turns the
    audit trail off for this connection.

    One instance wraps one connection; use it from one thread at a time.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False,
                 readonly: bool = False, dimensions: int | None = None, history: bool = True,
                 backup_dir: str | os.PathLike[str] | None = None) -> None:
        if create and readonly:
            raise ValueError("create=True and readonly=True contradict each other")
        if dimensions is not None and (isinstance(dimensions, bool)
                                       or not isinstance(dimensions, int) or dimensions <= 0):
            raise ValueError(f"dimensions must be a positive int, got {dimensions!r}")
        target = os.fspath(path)
        in_memory = target in (":memory:", "")
        if not in_memory and not create and not Path(target).exists():
            raise DatabaseNotFoundError(target)
        self._path = Path(target)
        self._readonly = readonly
        self._savepoints = 0
        self._history = False
        self._conn = _connect(target, create=create and not in_memory, readonly=readonly)
        # absolute (a later chdir does not move it); None: nothing to bound
        self._wal_file = (None if in_memory or readonly
                          else f"{self._conn.filename}-wal")
        self._wal_retry_at = 0  # WAL size that must be passed before a blocked checkpoint retries
        try:
            where = "in memory" if in_memory else f"at {target}"
            if readonly:
                state = migrations.check_readonly(self._conn, where=where)
                self._migration = migrations.MigrationReport(state.version, state.version)
            else:
                self._migration = migrations.migrate(
                    self._conn, db_path=None if in_memory else target, backup_dir=backup_dir)
            self._dimensions, self._dimensions_recorded = self._load_dimensions()
            if dimensions is not None:
                self._adopt_dimensions(dimensions)
            if history and not readonly:
                self.history_enabled = True
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def create(cls, path: str | os.PathLike[str], **options: Any) -> ResonanceDB:
        """Open ``path``, creating the database (and its folders) when missing."""
        return cls(path, create=True, **options)

    # -- properties -----------------------------------------------------------------------------

    @property
    def raw(self) -> Connection:
        """The underlying :class:`amalfa._core.connection.Connection`."""
        return self._conn

    @property
    def path(self) -> Path:
        return self._path

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def closed(self) -> bool:
        return self._conn.closed

    @property
    def migration_report(self) -> migrations.MigrationReport:
        """What opening did to the schema: versions, migrations applied, adoption, backup."""
        return self._migration

    # -- stats and lifecycle ----------------------------------------------------------------------

    def get_stats(self) -> DatabaseStats:
        """Counts of nodes, edges, vectors and semantic tokens, and the size on disk."""
        conn = self._conn
        nodes, vectors, semantic_tokens = one_row(conn.prepare(_COUNT_NODES))
        (edges,) = one_row(conn.prepare(_COUNT_EDGES))
        (page_count,) = one_row(conn.prepare("PRAGMA page_count"))
        (page_size,) = one_row(conn.prepare("PRAGMA page_size"))
        size = page_count * page_size
        try:
            size += os.stat(f"{self._path}-wal").st_size
        except FileNotFoundError:
            pass
        return DatabaseStats(nodes, edges, vectors, semantic_tokens, size)

    # -- lifecycle ------------------------------------------------------------------------------

    def checkpoint(self) -> tuple[int, int]:
        """Copy the WAL into the database file and truncate it (``wal_checkpoint(TRUNCATE)``).

        Returns (frames in the log, frames checkpointed). Raises BusyError if readers keep the
        log in use beyond the busy timeout.
        """
        return self._conn.checkpoint("TRUNCATE")

    def close(self) -> None:
        """Run ``PRAGMA optimize`` and close. An open transaction is rolled back. Idempotent."""
        conn = self._conn
        if conn.closed:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if not self._readonly:
                try:
                    conn.execute("PRAGMA optimize")
                except BusyError:
                    pass  # another writer held the lock past the timeout: optimizing can wait
        finally:
            conn.close()

    def __enter__(self) -> ResonanceDB:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn.closed else ("readonly" if self._readonly else "open")
        return f"<ResonanceDB {str(self._path)!r} {state}>"




def _connect(target: str, *, create: bool, readonly: bool) -> Connection:
    """Open through DatabaseFactory (which also waits out a concurrent WAL switch)."""
    if create:
        return DatabaseFactory.connect_to_resonance(target)
    in_memory = target in ("", ":memory:")
    return DatabaseFactory.connect(target, readonly=readonly, create=in_memory)

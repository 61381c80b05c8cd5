"""Transactions on the database's connection, and the bound on the write-ahead log.

- **Transactions start with BEGIN IMMEDIATE**, taking the write lock up front: a transaction that
  read first and wrote later could fail with SQLITE_BUSY when upgrading its lock, which the busy
  timeout cannot retry. Nested :meth:`Transactions.transaction` blocks become SAVEPOINTs.
- **The WAL is bounded after each commit.** SQLite's automatic checkpoints are PASSIVE: with
  readers in back-to-back read transactions the log never gets a moment to restart and grows
  without limit (~40 KB per small transaction). So after every commit the database performs,
  when the ``-wal`` file is over :data:`WAL_LIMIT_BYTES`, it checkpoints and resets the log,
  waiting at most :data:`WAL_CHECKPOINT_TIMEOUT_MS` for readers (and trying again after the next
  commit when they do not leave in time). Every store's single-statement write calls
  :meth:`Transactions._after_write`, which bounds the log when the write committed on its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from amalfa.errors import BusyError, LockedError, MisuseError
from amalfa.factory import BUSY_TIMEOUT_MS

if TYPE_CHECKING:
    from amalfa._core.connection import Connection

__all__ = ["WAL_CHECKPOINT_TIMEOUT_MS", "WAL_LIMIT_BYTES", "WAL_RETRY_GROWTH_BYTES",
           "Transactions"]

# a -wal file larger than this is checkpointed and reset after the next commit
WAL_LIMIT_BYTES = 64 * 2**20
# how long that checkpoint waits for readers to leave the log (short: a commit is waiting)
WAL_CHECKPOINT_TIMEOUT_MS = 100
#: after a checkpoint that readers blocked, the WAL may grow this much before the next attempt
WAL_RETRY_GROWTH_BYTES = 2 * 2**20

_Self = TypeVar("_Self", bound="Transactions")


class Transactions:
    """``begin``/``commit``/``rollback``, ``with db.transaction():`` and the WAL bound."""

    _conn: Connection
    _savepoints: int
    #: the -wal file's absolute path (a later chdir does not move it); None: nothing to bound
    _wal_file: str | None
    #: the WAL size that must be passed before a checkpoint readers blocked is tried again
    _wal_retry_at: int

    def begin(self) -> None:
        """Start a transaction holding the write lock (BEGIN IMMEDIATE)."""
        if self._conn.in_transaction:
            raise MisuseError("a transaction is already open; use `with db.transaction():` "
                              "to nest through a savepoint")
        self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")
        self._bound_wal()

    def rollback(self) -> None:
        self._conn.execute("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    @contextmanager
    def transaction(self: _Self) -> Iterator[_Self]:
        """``with db.transaction():`` commits at the end, rolls back if the block raises; the
        block gets the database.

        Inside another transaction (another block, or :meth:`begin`) it becomes a SAVEPOINT, so
        an inner failure undoes only the inner block.
        """
        conn = self._conn
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._bound_wal()
            return
        self._savepoints += 1
        name = f"amalfa_sp{self._savepoints}"
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            if conn.in_transaction:  # the caller may have ended the outer transaction
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
            raise
        finally:
            self._savepoints -= 1
        conn.execute(f"RELEASE {name}")

    def _after_write(self) -> None:
        """After a single-statement write: outside a transaction it committed on its own."""
        if not self._conn.in_transaction:
            self._bound_wal()

    def _bound_wal(self) -> None:
        """Checkpoint and reset the WAL when its file is over WAL_LIMIT_BYTES (see the module
        notes). One stat per commit when it is not.

        TRUNCATE, not RESTART: both reset the log once every reader has left it, but RESTART
        keeps the file at its size, so it would stay over the limit and every later commit would
        checkpoint again.
        """
        if self._wal_file is None:
            return
        try:
            size = os.stat(self._wal_file).st_size
        except FileNotFoundError:
            return
        if size <= max(WAL_LIMIT_BYTES, self._wal_retry_at):
            return
        conn = self._conn
        # A TRUNCATE checkpoint holds the write lock while it waits for readers, so a failed
        # attempt costs every writer up to WAL_CHECKPOINT_TIMEOUT_MS: after one, wait until the
        # log has grown by another WAL_RETRY_GROWTH_BYTES before the next.
        conn.set_busy_timeout(WAL_CHECKPOINT_TIMEOUT_MS)
        try:
            conn.checkpoint("TRUNCATE")
            self._wal_retry_at = 0
        except (BusyError, LockedError):
            self._wal_retry_at = size + WAL_RETRY_GROWTH_BYTES
        finally:
            conn.set_busy_timeout(BUSY_TIMEOUT_MS)

"""DatabaseFactory: the one place that opens SQLite connections and configures them.

Every connection amalfa opens goes through :meth:`DatabaseFactory.connect`, which applies the
canonical pragmas in a fixed order:

1. ``busy_timeout = 5000`` first, so every later statement (the WAL switch included) waits for a
   competing process instead of failing at once with "database is locked";
2. ``journal_mode = WAL``, switched only when the file is not in WAL already (the switch needs a
   brief exclusive lock, so a WAL database is never switched again);
3. ``synchronous = NORMAL`` (durable at checkpoints, safe against corruption under WAL);
4. ``mmap_size = 0`` (no memory-mapped I/O: a truncated file cannot crash the process);
5. ``temp_store = MEMORY``;
6. ``foreign_keys = ON``.

:meth:`DatabaseFactory.perform_health_check` reads them back, reports drift as warnings and runs
a write/read probe on a small ``_health`` table.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from amalfa._core.connection import Connection, compile_options, sqlite_version
from amalfa.errors import BusyError, CantOpenError, HealthCheckError
from amalfa.text_rules import check_path

__all__ = ["DatabaseFactory", "HealthReport", "sqlite_version", "compile_options", "Connection"]

BUSY_TIMEOUT_MS = 5000
HEALTH_ROWS_KEPT = 10

# (pragma, value) in the order they are applied after busy_timeout and the journal-mode check
_CANONICAL_PRAGMAS: tuple[tuple[str, str], ...] = (
    ("synchronous", "NORMAL"),
    ("mmap_size", "0"),
    ("temp_store", "MEMORY"),
    ("foreign_keys", "ON"),
)


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What :meth:`DatabaseFactory.perform_health_check` found."""

    status: str  # "healthy" or "degraded"
    journal_mode: str
    warnings: list[str] = field(default_factory=list)
    pragmas: dict[str, object] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"


class DatabaseFactory:
    """Opens connections with the canonical pragmas; checks their health."""

    @staticmethod
    def connect(path: str | os.PathLike[str], *, readonly: bool = False,
                create: bool = True) -> Connection:
        """Open ``path`` and apply the canonical pragmas.

        ``readonly`` connections cannot write (writes raise :class:`amalfa.errors.ReadOnlyError`)
        and never change the journal mode; ``create=False`` makes a missing file an error.
        """
        # amalfa.text_rules: a NUL would cut the name short in C (another file opened); a name
        # that is not UTF-8 cannot reach sqlite3_open_v2
        target = check_path(os.fspath(path), what="database path", utf8=True)
        if not create and target != ":memory:" and not Path(target).exists():
            raise CantOpenError(f"database file does not exist: {target}", 14, 14)
        conn = Connection(target, readonly=readonly, create=create and not readonly)
        try:
            DatabaseFactory._configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def connect_to_resonance(path: str | os.PathLike[str], *, readonly: bool = False) -> Connection:
        """Open the resonance graph database (created when missing, unless ``readonly``)."""
        target = Path(path)
        if not readonly:
            target.parent.mkdir(parents=True, exist_ok=True)
        return DatabaseFactory.connect(target, readonly=readonly, create=not readonly)

    @staticmethod
    def _configure(conn: Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        (mode,) = conn.execute("PRAGMA journal_mode")[0]
        if str(mode).lower() != "wal" and not conn.readonly:
            _switch_to_wal(conn)
        for name, value in _CANONICAL_PRAGMAS:
            conn.execute(f"PRAGMA {name} = {value}")
        # same timeout, fairer waiting: SQLite's own handler backs off to 100 ms polls, so a
        # writer that has waited longest can lose the lock to newcomers again and again
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)

    @staticmethod
    def read_pragmas(conn: Connection) -> dict[str, object]:
        """The current values of the pragmas the factory sets."""
        names = ("busy_timeout", "journal_mode", "synchronous", "mmap_size", "temp_store",
                 "foreign_keys")
        return {name: conn.execute(f"PRAGMA {name}")[0][0] for name in names}

    @staticmethod
    def perform_health_check(conn: Connection) -> HealthReport:
        """Check the pragmas and run a write/read probe; raise HealthCheckError if it fails.

        Warnings: WAL off, mmap_size not 0, busy_timeout under 5000 ms, synchronous not NORMAL,
        foreign keys off. The probe writes a random token into ``_health`` (which keeps only its
        10 newest rows) and reads it back in one immediate transaction. A read-only connection
        gets a read probe and a warning instead.
        """
        pragmas = DatabaseFactory.read_pragmas(conn)
        journal_mode = str(pragmas["journal_mode"]).lower()
        warnings: list[str] = []
        if journal_mode != "wal":
            warnings.append(f"journal_mode is {journal_mode}, not wal")
        if pragmas["mmap_size"] != 0:
            warnings.append(f"mmap_size is {pragmas['mmap_size']}, not 0")
        if int(pragmas["busy_timeout"]) < BUSY_TIMEOUT_MS:  # type: ignore[call-overload]
            warnings.append(f"busy_timeout is {pragmas['busy_timeout']} ms, under {BUSY_TIMEOUT_MS}")
        if pragmas["synchronous"] != 1:
            warnings.append(f"synchronous is {pragmas['synchronous']}, not 1 (NORMAL)")
        if pragmas["foreign_keys"] != 1:
            warnings.append("foreign_keys is off")
        if conn.readonly:
            warnings.append("read-only connection: write probe skipped")
            _read_probe(conn)
        else:
            _write_read_probe(conn)
        return HealthReport(status="degraded" if warnings else "healthy",
                            journal_mode=journal_mode, warnings=warnings, pragmas=pragmas)


def _switch_to_wal(conn: Connection) -> None:
    """Switch to WAL, retrying while another process holds the file open.

    The switch needs an exclusive lock, and SQLite answers SQLITE_BUSY at once for it, without
    calling the busy handler, when another connection has the file open: two processes creating
    the same database would otherwise fail at random. The retry is bounded by the busy timeout,
    like any other wait for a lock.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except BusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _read_probe(conn: Connection) -> None:
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema")
    except Exception as exc:
        raise HealthCheckError(f"health probe could not read the schema: {exc}") from exc


def _write_read_probe(conn: Connection) -> None:
    token = secrets.token_hex(8)
    nested = conn.in_transaction
    try:
        # inside a caller's transaction the probe rides along in a savepoint
        conn.execute("SAVEPOINT amalfa_health" if nested else "BEGIN IMMEDIATE")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _health ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " token TEXT NOT NULL,"
            " checked_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))")
        conn.execute("INSERT INTO _health (token) VALUES (?)", (token,))
        rowid = conn.last_insert_rowid
        found = conn.execute("SELECT token FROM _health WHERE id = ?", (rowid,))
        conn.execute(
            "DELETE FROM _health WHERE id NOT IN (SELECT id FROM _health ORDER BY id DESC LIMIT ?)",
            (HEALTH_ROWS_KEPT,))
        conn.execute("RELEASE amalfa_health" if nested else "COMMIT")
    except Exception as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK TO amalfa_health" if nested else "ROLLBACK")
            if nested:
                conn.execute("RELEASE amalfa_health")
        raise HealthCheckError(f"health probe failed: {exc}") from exc
    if found != [(token,)]:
        raise HealthCheckError(f"health probe read back {found!r}, expected the token {token!r}")

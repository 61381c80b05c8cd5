"""Versioned schema migrations for the resonance database, and the runner that applies them.

The migrations are the ``NNNN_name.sql`` files beside this module, shipped as package data and
read with :mod:`importlib.resources`. They mirror the three steps in which the original system
built its schema, so a database is at version 1, 2 or 3 whichever system made it.

What the runner guarantees:

- Each migration runs in its own ``BEGIN IMMEDIATE`` transaction together with the row that
  records it in ``amalfa_migrations``: a migration is applied entirely or not at all.
- Two processes opening the same new database at once are safe: the applied version is read
  again inside each write transaction, so the loser of the race finds the work done and skips it.
- Before a database that already holds rows is changed, an online copy (SQLite's backup API) goes
  to the backups folder.
- A database recorded at a version newer than this code knows raises
  :class:`~amalfa.errors.SchemaVersionError`; the runner never guesses at a future schema.
- A database made by the original system (drizzle's ``__drizzle_migrations`` and the tables of one
  of its three steps) is adopted: the equivalent migrations are recorded as applied without
  touching a row, then the remaining ones run. When the drizzle table is present the runner also
  records the steps it applies there, so the original system still recognises the database.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from amalfa._core.connection import Connection
from amalfa._text import file_stamp
from amalfa.errors import DatabaseError, ReadOnlyError, SchemaVersionError

__all__ = [
    "Migration",
    "MigrationReport",
    "SchemaState",
    "check_readonly",
    "default_backup_dir",
    "inspect_schema",
    "latest_version",
    "load_migrations",
    "migrate",
]

# Our own bookkeeping, created by the runner (not by a numbered migration) so that it exists
# before the first migration is recorded. amalfa_meta holds small settings of the database, such
# as the recorded embedding dimension.
BOOKKEEPING_SQL = """
CREATE TABLE IF NOT EXISTS amalfa_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS amalfa_meta (
    key TEXT PRIMARY KEY NOT NULL,
    value
);
"""

_RECORD_MIGRATION = "INSERT INTO amalfa_migrations (version, name, checksum) VALUES (?, ?, ?)"
_APPLIED_VERSION = "SELECT coalesce(max(version), 0) FROM amalfa_migrations"
_APPLIED_ROWS = "SELECT version, name, checksum FROM amalfa_migrations ORDER BY version"
_TABLES = "SELECT name FROM sqlite_schema WHERE type = 'table'"

# Tables that hold no user data: bookkeeping (ours, drizzle's, the factory's health probe) and
# SQLite's own. A database whose other tables are all empty needs no backup.
_BOOKKEEPING_TABLES = frozenset(
    {"amalfa_migrations", "amalfa_meta", "__drizzle_migrations", "_health", "sqlite_sequence"}
)

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# The columns the original system's first step gave its tables; a database whose tables lack
# any of them was made by something else and is not adopted.
_NODE_COLUMNS_STEP1 = frozenset(
    {"id", "type", "title", "domain", "layer", "embedding", "hash", "meta", "date"}
)
_EDGE_COLUMNS_STEP1 = frozenset(
    {"source", "target", "type", "confidence", "veracity", "context_source"}
)

# For our migration N, the row the original system's drizzle migrator wrote for its equivalent
# step: (sha256 of the original .sql file, the "when" of its journal entry). Drizzle decides what
# to run by comparing created_at with the journal, so recording these keeps an adopted database
# usable by the original system after we have migrated it further.
_DRIZZLE_EQUIVALENTS: dict[int, tuple[str, int]] = {
    2: ("7b30e2bf86221fedb429141261731220b2b2616a8bb09d3f5fbadccb55f41b16", 1768308220948),
    3: ("b6400314b4a5187a3a058a5d35c3cb6031eadd86fff72403accdc73495d69e78", 1769588665479),
}


@dataclass(frozen=True, slots=True)
class Migration:
    """One shipped migration: ``version`` from the file name, its SQL and the SQL's sha256."""

    version: int
    name: str
    sql: str
    checksum: str


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where a database stands.

    ``version`` is the applied version (recorded by amalfa, or inferred for a database made by
    the original system); ``source`` says which: ``"empty"``, ``"amalfa"`` or ``"original"``.
    """

    version: int
    source: str


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What :func:`migrate` did (``applied`` is empty when the database was current)."""

    from_version: int
    to_version: int
    applied: tuple[int, ...] = ()
    adopted: bool = False
    backup: Path | None = None


@cache
def load_migrations() -> tuple[Migration, ...]:
    """The shipped migrations in version order (read once per process).

    Raises DatabaseError if the files are not numbered 1, 2, 3... without gaps: that is a
    packaging bug, and applying a partial sequence would be worse than refusing.
    """
    found: list[Migration] = []
    for entry in importlib.resources.files(__name__).iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        sql = entry.read_text(encoding="utf-8")
        checksum = hashlib.sha256(sql.encode("utf-8")).hexdigest()
        found.append(Migration(int(match.group(1)), entry.name[:-4], sql, checksum))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise DatabaseError(
            f"the shipped migrations are not numbered 1..{len(found)} without gaps: {versions}")
    return tuple(found)


def latest_version() -> int:
    """The schema version this code creates and understands."""
    return len(load_migrations())


def default_backup_dir(db_path: str | os.PathLike[str]) -> Path:
    """Where backups of ``db_path`` go unless told otherwise.

    In the ``.amalfa`` layout (the database in ``.amalfa/runtime/`` or ``.amalfa/``) that is
    ``.amalfa/backups``, the folder :func:`amalfa.settings.get_folders` names; anywhere else a
    ``backups`` folder beside the database file.
    """
    folder = Path(db_path).absolute().parent
    if folder.name == ".amalfa":
        return folder / "backups"
    if folder.name == "runtime" and folder.parent.name == ".amalfa":
        return folder.parent / "backups"
    return folder / "backups"


# -- reading the state ----------------------------------------------------------------------------


def _tables(conn: Connection) -> set[str]:
    return {row[0] for row in conn.execute(_TABLES)}


def _columns(conn: Connection, table: str) -> set[str]:
    # table names come from sqlite_schema or from our constants, never from a caller
    return {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}


def inspect_schema(conn: Connection) -> SchemaState:
    """Read where the database stands, without writing anything.

    With our bookkeeping table present its highest version counts. Otherwise the original
    system's steps are recognised from the tables and columns present: the graph tables with the
    first step's columns = 1, plus ``history`` = 2, plus ``nodes.summary`` = 3. Raises
    DatabaseError for a ``nodes`` or ``edges`` table of some other shape (adopting it would fail
    later, half-way, in a confusing place).
    """
    tables = _tables(conn)
    if "amalfa_migrations" in tables:
        (version,) = conn.execute(_APPLIED_VERSION)[0]
        return SchemaState(int(version), "amalfa")
    if "nodes" not in tables:
        return SchemaState(0, "empty")
    node_columns = _columns(conn, "nodes")
    missing = sorted(_NODE_COLUMNS_STEP1 - node_columns)
    if missing:
        raise DatabaseError(
            f"cannot adopt this database: its nodes table lacks the column(s) {', '.join(missing)}")
    if "edges" in tables:
        missing = sorted(_EDGE_COLUMNS_STEP1 - _columns(conn, "edges"))
        if missing:
            raise DatabaseError(
                f"cannot adopt this database: its edges table lacks the column(s) "
                f"{', '.join(missing)}")
    if not {"edges", "ember_state"} <= tables:
        # nodes alone (an early layout): migration 1 creates the missing tables and keeps nodes
        return SchemaState(0, "original")
    has_summary = "summary" in node_columns
    if "history" not in tables:
        if has_summary:
            raise DatabaseError(
                "cannot adopt this database: nodes has a summary column but there is no history "
                "table, a layout neither amalfa nor the original system makes")
        return SchemaState(1, "original")
    return SchemaState(3 if has_summary else 2, "original")


def _has_data(conn: Connection) -> bool:
    for table in sorted(_tables(conn) - _BOOKKEEPING_TABLES):
        if table.startswith("sqlite_"):
            continue
        if conn.execute(f'SELECT EXISTS (SELECT 1 FROM "{table}")')[0][0]:
            return True
    return False


def _check_not_newer(state: SchemaState, latest: int, where: str) -> None:
    if state.version > latest:
        raise SchemaVersionError(
            f"the database {where} is at schema version {state.version}, newer than this "
            f"version of amalfa understands (schema version {latest}); upgrade amalfa to open it")


def _check_checksums(conn: Connection, migrations: tuple[Migration, ...]) -> None:
    shipped = {m.version: m for m in migrations}
    for version, name, checksum in conn.execute(_APPLIED_ROWS):
        known = shipped.get(version)
        if known is not None and known.checksum != checksum:
            # an edited migration is worth knowing about but not worth refusing to open for
            warnings.warn(
                f"migration {version} ({name}) was applied from SQL whose checksum differs from "
                f"the shipped {known.name}.sql", UserWarning, stacklevel=4)


# -- changing it -----------------------------------------------------------------------------------


def check_readonly(conn: Connection, *, where: str = "") -> SchemaState:
    """For read-only connections: the state, or an error if the schema is not the current one.

    A read-only connection cannot migrate; a database made by the original system at its last
    step has our current schema already and is fine to read.
    """
    state = inspect_schema(conn)
    latest = latest_version()
    _check_not_newer(state, latest, where)
    if state.version < latest:
        raise ReadOnlyError(
            f"the database {where} is at schema version {state.version} and needs migrations "
            f"{state.version + 1}..{latest}, which a read-only connection cannot apply; open it "
            "read-write once to migrate it")
    return state


def migrate(conn: Connection, *, db_path: str | os.PathLike[str] | None = None,
            backup_dir: str | os.PathLike[str] | None = None) -> MigrationReport:
    """Bring the database to :func:`latest_version`, adopting an original-system database.

    ``db_path`` names the database in messages and places the default backup folder
    (:func:`default_backup_dir`); ``backup_dir`` overrides that folder. Nothing is backed up when
    the database is current, has no rows, or is in memory (``db_path`` None or ``:memory:``).
    Must be called outside a transaction.
    """
    if conn.in_transaction:
        raise DatabaseError("migrate() must run outside a transaction")
    migrations = load_migrations()
    latest = len(migrations)
    name = None if db_path is None else os.fspath(db_path)
    in_memory = name in (None, "", ":memory:")
    where = "in memory" if in_memory else f"at {name}"
    before = inspect_schema(conn)
    _check_not_newer(before, latest, where)
    if before.source == "amalfa":
        _check_checksums(conn, migrations)
        if before.version == latest:
            return MigrationReport(before.version, before.version)

    backup = None
    if name is not None and not in_memory and _has_data(conn):
        # taken before any write; a racing process may take one too, which costs only disk space
        folder = Path(backup_dir) if backup_dir is not None else default_backup_dir(name)
        backup = _backup(conn, Path(name), folder, before.version)

    adopted = _bootstrap(conn, migrations, where)
    applied: list[int] = []
    for migration in migrations:
        if _apply(conn, migration, latest, where):
            applied.append(migration.version)
    return MigrationReport(before.version, latest, tuple(applied), adopted, backup)


@contextmanager
def _immediate_transaction(conn: Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception.

    IMMEDIATE takes the write lock at once, so two processes migrating one file serialise here
    and each re-reads the schema state inside its own transaction.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _bootstrap(conn: Connection, migrations: tuple[Migration, ...], where: str) -> bool:
    """Create our bookkeeping; record the steps an original-system database already has.

    Returns True when this call adopted the database.
    """
    with _immediate_transaction(conn):
        state = inspect_schema(conn)  # again: another process may have got here first
        _check_not_newer(state, len(migrations), where)
        conn.executescript(BOOKKEEPING_SQL)
        adopted = state.source == "original"
        if adopted:
            record = conn.prepare(_RECORD_MIGRATION)
            for migration in migrations[:state.version]:
                record.run((migration.version, migration.name, migration.checksum))
            tables = _tables(conn)
            origin = "original (drizzle)" if "__drizzle_migrations" in tables else "original"
            # amalfa_meta's one writer is the database layer (imported here, not at the top:
            # amalfa.db imports this module)
            from amalfa.db.meta import ADOPTED_FROM_KEY, write_meta

            write_meta(conn, ADOPTED_FROM_KEY, f"{origin} at step {state.version}")
    return adopted


def _apply(conn: Connection, migration: Migration, latest: int, where: str) -> bool:
    """Apply one migration in its own immediate transaction unless it is applied already."""
    with _immediate_transaction(conn):
        (current,) = conn.execute(_APPLIED_VERSION)[0]
        if current > latest:
            raise SchemaVersionError(
                f"the database {where} was migrated to schema version {current} by a newer "
                f"amalfa while this one (schema version {latest}) was opening it")
        if current >= migration.version:
            return False  # another process applied it first
        if current != migration.version - 1:
            raise DatabaseError(
                f"the database {where} is at schema version {current}; cannot apply migration "
                f"{migration.version} out of order")
        conn.executescript(migration.sql)
        conn.execute(_RECORD_MIGRATION, (migration.version, migration.name, migration.checksum))
        if migration.version in _DRIZZLE_EQUIVALENTS and "__drizzle_migrations" in _tables(conn):
            digest, created_at = _DRIZZLE_EQUIVALENTS[migration.version]
            conn.execute("INSERT INTO __drizzle_migrations (hash, created_at) VALUES (?, ?)",
                         (digest, created_at))
    return True


def _backup(conn: Connection, db_path: Path, folder: Path, version: int) -> Path:
    """Copy the database into ``folder`` with the online backup API; return the copy's path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = file_stamp()
    stem = f"{db_path.stem}.v{version}.{stamp}"
    target = folder / f"{stem}.db"
    counter = 1
    while target.exists():
        target = folder / f"{stem}-{counter}.db"
        counter += 1
    # Copy under a temporary name and rename only once the copy is complete: a process killed
    # mid-copy must never leave an unusable file under a name that says "backup". The prefix
    # keeps the partial file out of globs for "<stem>.v<N>.*.db".
    partial = folder / f"partial-{target.name}"
    try:
        conn.backup_to(str(partial))
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        Path(f"{partial}-journal").unlink(missing_ok=True)
        raise
    return target

"""The exception hierarchy.

Every exception amalfa raises on purpose derives from :class:`AmalfaError`. Errors that come from
SQLite derive from :class:`DatabaseError` and carry the primary ``result`` code, the
``extended_result`` code and SQLite's own message, in the manner of apsw.

Every exception the package raises lives here, grouped by where it comes from: SQLite and the
binding, settings and models, ingest, the daemon and the command line. The command line picks
its hint for an error by class (``isinstance``), never by class name.

This module is a leaf: it imports nothing from the package, so the compiled core can import it to
raise these classes without an import cycle.
"""

from __future__ import annotations

import errno
import os
from typing import Any

__all__ = [
    "AmalfaError",
    "DatabaseError",
    "BusyError",
    "LockedError",
    "ConstraintError",
    "ReadOnlyError",
    "CorruptError",
    "NotADatabaseError",
    "CantOpenError",
    "MisuseError",
    "DiskIOError",
    "FullError",
    "SchemaChangedError",
    "InterruptError",
    "AuthorizationError",
    "TooBigError",
    "MismatchError",
    "RangeError",
    "ConnectionClosedError",
    "StatementFinalizedError",
    "SchemaVersionError",
    "HealthCheckError",
    "DatabaseNotFoundError",
    "SettingsError",
    "ModelError",
    "BaselineError",
    "IngestError",
    "DocumentTooLargeError",
    "DocumentIdError",
    "ModelMismatchError",
    "FrontMatterError",
    "DaemonError",
    "CommandError",
    "exception_for",
]


class AmalfaError(Exception):
    """Base of every error amalfa raises on purpose."""


class DatabaseError(AmalfaError):
    """An error reported by SQLite (or by the binding about a database object).

    ``result`` is SQLite's primary result code (``extended_result & 0xff``), ``extended_result``
    the extended code; both are 0 for errors the binding raises itself.
    """

    def __init__(self, message: str, result: int = 0, extended_result: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.result = result
        self.extended_result = extended_result or result


class BusyError(DatabaseError):
    """SQLITE_BUSY: another connection holds the lock and busy_timeout ran out."""


class LockedError(DatabaseError):
    """SQLITE_LOCKED: a conflict inside this connection (or a shared-cache peer)."""


class ConstraintError(DatabaseError):
    """SQLITE_CONSTRAINT: a UNIQUE, NOT NULL, CHECK or FOREIGN KEY constraint failed."""


class ReadOnlyError(DatabaseError):
    """SQLITE_READONLY: a write on a read-only connection or file."""


class CorruptError(DatabaseError):
    """SQLITE_CORRUPT: the database file is malformed."""


class NotADatabaseError(DatabaseError):
    """SQLITE_NOTADB: the file is not an SQLite database."""


class CantOpenError(DatabaseError):
    """SQLITE_CANTOPEN: the file could not be opened (missing, or its folder is)."""


class MisuseError(DatabaseError):
    """SQLITE_MISUSE, or an API used out of order."""


class DiskIOError(DatabaseError):
    """SQLITE_IOERR: the operating system reported an I/O error (named so it does not shadow
    the builtin ``IOError``, an alias of ``OSError``)."""


class FullError(DatabaseError):
    """SQLITE_FULL: the disk is full."""


class SchemaChangedError(DatabaseError):
    """SQLITE_SCHEMA: the schema changed under a prepared statement."""


class InterruptError(DatabaseError):
    """SQLITE_INTERRUPT: the operation was interrupted."""


class AuthorizationError(DatabaseError):
    """SQLITE_AUTH: the authorizer refused the statement."""


class TooBigError(DatabaseError):
    """SQLITE_TOOBIG: a string or BLOB exceeds SQLite's length limit."""


class MismatchError(DatabaseError):
    """SQLITE_MISMATCH: a value of the wrong type (for example a non-integer rowid)."""


class RangeError(DatabaseError):
    """SQLITE_RANGE: a parameter index out of range."""


class ConnectionClosedError(MisuseError):
    """A closed connection (or a statement of one) was used."""


class StatementFinalizedError(MisuseError):
    """A finalized statement was used."""


class SchemaVersionError(DatabaseError):
    """The database's schema is newer than this version of amalfa understands."""


class HealthCheckError(DatabaseError):
    """The factory's write/read probe failed."""


class DatabaseNotFoundError(CantOpenError, FileNotFoundError):
    """The database file does not exist and creating it was not asked for.

    Both a CantOpenError (amalfa's hierarchy) and a FileNotFoundError, so either ``except``
    catches it; ``filename`` holds the path.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        target = os.fspath(path)
        message = (f"no database at {target}; use ResonanceDB.create(path) or "
                   "ResonanceDB(path, create=True) to make a new one")
        CantOpenError.__init__(self, message, 14, 14)
        self.errno = errno.ENOENT
        self.strerror = message
        self.filename = target

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.filename,))


class SettingsError(AmalfaError, ValueError):
    """A settings file or value is invalid; the message names the key."""


class ModelError(AmalfaError):
    """An embedding or reranking model could not be found, verified or loaded."""


class BaselineError(AmalfaError, ValueError):
    """An ingestion baseline file exists but is malformed; the message names the file and key."""


class IngestError(AmalfaError):
    """A file could not be ingested; the message names the file and the reason."""


class DocumentTooLargeError(IngestError):
    """A Markdown file is larger than the ingest size limit."""


class DocumentIdError(IngestError, ValueError):
    """A document's id (from its front matter or its path) is not a valid node id."""


class ModelMismatchError(IngestError):
    """The database's embeddings were made by another model than the one asked for; mixing two
    models' vectors in one table would give wrong scores without a word."""


class FrontMatterError(IngestError, ValueError):
    """A file's YAML front matter does not parse or is not a mapping."""


class DaemonError(AmalfaError):
    """The vector daemon could not be started, stopped or reached; the message may end with the
    last lines of its log."""


class CommandError(AmalfaError):
    """A command-line mistake the user can fix: a one-line message, a one-line hint and the exit
    status the command line returns (1 unless said otherwise; 2 for a usage error)."""

    def __init__(self, message: str, *, hint: str | None = None, status: int = 1) -> None:
        super().__init__(message)
        self.hint = hint
        self.status = status


class AbortError(DatabaseError):
    """SQLITE_ABORT: a statement cut off, e.g. a read whose transaction a ROLLBACK undid
    (SQLITE_ABORT_ROLLBACK). Not an interrupt: nobody asked the statement to stop.
    """


class NoMemError(DatabaseError, MemoryError):
    """SQLITE_NOMEM: SQLite could not allocate memory (raised by the compiled core for code 7,
    a scan included: it stops with this rather than return partial results)."""


__all__ += ["AbortError", "NoMemError"]


# SQLite primary result codes -> classes. Codes not listed map to DatabaseError.
_BY_RESULT: dict[int, type[DatabaseError]] = {
    3: AuthorizationError,  # SQLITE_PERM
    4: AbortError,
    5: BusyError,
    6: LockedError,
    7: NoMemError,
    9: InterruptError,
    8: ReadOnlyError,
    10: DiskIOError,
    11: CorruptError,
    13: FullError,
    14: CantOpenError,
    17: SchemaChangedError,
    18: TooBigError,
    19: ConstraintError,
    20: MismatchError,
    21: MisuseError,
    23: AuthorizationError,
    25: RangeError,
    26: NotADatabaseError,
}


def exception_for(extended_result: int, message: str) -> DatabaseError:
    """Build the exception for an SQLite result code (primary or extended)."""
    result = extended_result & 0xFF
    cls = _BY_RESULT.get(result, DatabaseError)
    return cls(message, result, extended_result)


# -- input outside what the library accepts (issue 15; amalfa.text_rules, amalfa.limits raise them)


class InputError(AmalfaError, ValueError):
    """An argument outside what amalfa accepts; the message names the input, where and why."""


class InvalidTextError(InputError, UnicodeEncodeError):
    """Text that cannot be stored or sent as UTF-8 (a lone surrogate); the message names the
    field, the character's position and its code point.

    It is a UnicodeEncodeError too (``start``/``end`` point at the character), so code that
    caught the encoder's own error keeps working.
    """

    def __init__(self, message: str, text: str, position: int) -> None:
        UnicodeEncodeError.__init__(self, "utf-8", text, position, position + 1,
                                    "surrogates not allowed")
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:  # picklable across processes
        return (type(self), (self.message, self.object, self.start))


class OutOfRangeError(InputError):
    """A number outside its documented range (a limit, depth, port, batch size, threshold);
    the message names the input and the range."""


__all__ += ["InputError", "InvalidTextError", "OutOfRangeError"]


# -- the graph, reading sources, live sync (issue 14; amalfa.db.graph, amalfa.reader, watch) --


class NodeNotFoundError(AmalfaError, LookupError):
    """No node has this id (or these ids); ``node_ids`` lists every one that is missing."""

    def __init__(self, node_ids: list[str] | str) -> None:
        ids = [node_ids] if isinstance(node_ids, str) else list(node_ids)
        shown = ", ".join(repr(node_id) for node_id in ids[:5])
        more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
        noun = "node" if len(ids) == 1 else "nodes"
        super().__init__(f"no {noun} with id {shown}{more} in the graph")
        self.node_ids = ids

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError
        return str(self.args[0])

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.node_ids,))


class SourceReadError(AmalfaError):
    """A node's source file cannot be read as ingested: it is gone, changed since ingest, outside
    the configured sources, or the node has no source; the message says which."""


class WatcherRunningError(AmalfaError):
    """Another ``amalfa watch`` already holds this database's watcher lock; ``pid`` is its
    process id when known."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self.args[0]), self.pid))


__all__ += ["NodeNotFoundError", "SourceReadError", "WatcherRunningError"]

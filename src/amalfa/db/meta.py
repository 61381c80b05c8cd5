"""``amalfa_meta``: the database's own small facts (embedding model, precision, dimension).

This module is the table's only writer. :class:`MetaStore` is the mixin that gives
:class:`~amalfa.db.ResonanceDB` ``get_meta``/``set_meta`` and the named facts built on them
(``recorded_model``, ``record_model``); the module-level functions do the same on a bare
:class:`~amalfa._core.connection.Connection`, for the migration runner (which creates the table)
and for readers that must not open a ResonanceDB (the doctor: opening one would migrate the
schema it reports on). Reads tolerate a database without the table (adopted from the original
system and opened read-only): every value is then None.

The model is recorded because vectors of two models must never be compared, even when their
dimensions agree: queries use the recorded model and ingest refuses another one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from amalfa.db._rows import has_table, one_row
from amalfa.db.transactions import Transactions
from amalfa.db.validation import refuses_unstorable_text

if TYPE_CHECKING:
    from amalfa._core.connection import Connection

__all__ = ["ADOPTED_FROM_KEY", "DIMENSIONS_KEY", "MODEL_KEY", "PRECISION_KEY", "MetaStore",
           "read_meta", "write_meta", "write_meta_if_absent"]

#: The name of the model the embeddings come from (as ``Embedder.model_name`` gives it).
MODEL_KEY = "embedding_model"
#: The numeric precision of that model's weights (``"int8"``, ``"fp32"``), when recorded.
PRECISION_KEY = "embedding_precision"
#: The embedding dimension; recorded by the first embedding written.
DIMENSIONS_KEY = "embedding_dimensions"
#: Which system and schema step a database adopted from the original system came from.
ADOPTED_FROM_KEY = "adopted_from"
#: The random id migration 0004 gives a database: caches kept beside the file name it.
DATABASE_ID_KEY = "database_id"

_GET = "SELECT value FROM amalfa_meta WHERE key = ?"
_SET = "INSERT OR REPLACE INTO amalfa_meta (key, value) VALUES (?, ?)"
_SET_IF_ABSENT = "INSERT OR IGNORE INTO amalfa_meta (key, value) VALUES (?, ?)"
_FIRST_EMBEDDING_LENGTH = (
    "SELECT length(embedding) FROM nodes WHERE embedding IS NOT NULL ORDER BY rowid LIMIT 1"
)


def recorded_model_of(conn: Connection) -> str | None:
    """The model the database's embeddings come from, as recorded (None when not)."""
    value = read_meta(conn, MODEL_KEY)
    return None if value is None else str(value)


def recorded_precision_of(conn: Connection) -> str | None:
    """The recorded model's weight precision (None when not recorded)."""
    value = read_meta(conn, PRECISION_KEY)
    return None if value is None else str(value)


def read_meta(conn: Connection, key: str) -> Any:
    """The value stored under ``key`` (None when absent, or when there is no table)."""
    if not has_table(conn, "amalfa_meta"):
        return None
    row = conn.prepare(_GET).first((key,))
    return None if row is None else row[0]


def write_meta(conn: Connection, key: str, value: Any) -> None:
    """Store ``value`` under ``key``, replacing what was there (in the caller's transaction)."""
    conn.prepare(_SET).run((key, value))


def write_meta_if_absent(conn: Connection, key: str, value: Any) -> Any:
    """Store ``value`` under ``key`` unless a value is there; returns the stored value. Run it
    inside a write transaction: whichever process writes first wins, the other learns it."""
    conn.prepare(_SET_IF_ABSENT).run((key, value))
    (stored,) = one_row(conn.prepare(_GET), (key,))
    return stored


class MetaStore(Transactions):
    """``amalfa_meta`` reads and writes for :class:`~amalfa.db.ResonanceDB`, and the embedding
    dimension kept there."""

    _path: Path
    _readonly: bool
    _dimensions: int | None
    _dimensions_recorded: bool

    # -- the embedding dimension ------------------------------------------------------------

    @property
    def dimensions(self) -> int | None:
        """The embedding dimension of this database (None until known)."""
        return self._dimensions

    def _load_dimensions(self) -> tuple[int | None, bool]:
        """(dimension, whether it is recorded): the recorded one, else inferred from the first
        stored vector (an adopted or pre-recording database), else None."""
        value = read_meta(self._conn, DIMENSIONS_KEY)
        if value is not None:
            return int(value), True
        row = self._conn.prepare(_FIRST_EMBEDDING_LENGTH).first()
        if row is not None and row[0] and row[0] % 4 == 0:
            return row[0] // 4, False
        return None, False

    def _adopt_dimensions(self, dimensions: int) -> None:
        if self._dimensions is not None and self._dimensions != dimensions:
            raise ValueError(f"dimensions={dimensions} given, but the database at {self._path} "
                             f"holds {self._dimensions}-d embeddings")
        self._dimensions = dimensions
        if not self._readonly and not self._dimensions_recorded:
            self.record_dimensions(dimensions)

    def record_dimensions(self, dimensions: int) -> None:
        """Record the embedding dimension (once); ValueError if a different one is recorded.

        Called by the first write of an embedding; callers that write embeddings through
        :attr:`raw` call it themselves.
        """
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions <= 0:
            raise ValueError(f"dimensions must be a positive int, got {dimensions!r}")
        with self.transaction():
            self._record_dimensions_in_transaction(dimensions, None)
        self._dimensions, self._dimensions_recorded = dimensions, True

    def _record_dimensions_in_transaction(self, dimensions: int, node_id: str | None) -> None:
        # whichever process writes first wins, the other learns it
        stored = write_meta_if_absent(self._conn, DIMENSIONS_KEY, dimensions)
        if int(stored) != dimensions:
            subject = f"node {node_id!r}: embedding" if node_id else "embedding"
            raise ValueError(f"{subject} has dimension {dimensions}; the database at "
                             f"{self._path} holds {stored}-d embeddings")

    # -- any key --------------------------------------------------------------------------------

    @refuses_unstorable_text
    def get_meta(self, key: str) -> Any:
        """The value stored under ``key``, or None."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"a meta key must be a non-empty str, got {key!r}")
        return read_meta(self._conn, key)

    @refuses_unstorable_text
    def set_meta(self, key: str, value: str | int | float | None) -> None:
        """Store ``value`` under ``key`` (replacing it); None removes nothing, it stores NULL."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"a meta key must be a non-empty str, got {key!r}")
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, (str, int, float))):
            raise TypeError(f"meta {key!r}: a value must be a str, int, float or None, "
                            f"not {type(value).__name__}")
        write_meta(self._conn, key, value)
        self._after_write()

    def recorded_model(self) -> str | None:
        """The name of the model the database's embeddings come from (None when never
        recorded)."""
        return recorded_model_of(self._conn)

    def recorded_precision(self) -> str | None:
        """The recorded model's weight precision (``"int8"``, ``"fp32"``), when recorded."""
        return recorded_precision_of(self._conn)

    @refuses_unstorable_text
    def record_model(self, model: str, precision: str | None = None) -> None:
        """Record the model (and its precision) the embeddings come from. Call it in the
        transaction that writes the first embeddings of that model."""
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"a model name must be a non-empty str, got {model!r}")
        if precision is not None and (not isinstance(precision, str) or not precision.strip()):
            raise ValueError(f"a precision must be a non-empty str or None, got {precision!r}")
        write_meta(self._conn, MODEL_KEY, model)
        if precision is not None:
            write_meta(self._conn, PRECISION_KEY, precision)
        self._after_write()

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

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amalfa._core.connection import Connection

__all__ = ["DIMENSIONS_KEY", "MODEL_KEY", "PRECISION_KEY", "MetaStore", "read_meta",
           "write_meta", "write_meta_if_absent"]

#: The name of the model the embeddings come from (as ``Embedder.model_name`` gives it).
MODEL_KEY = "embedding_model"
#: The numeric precision of that model's weights (``"int8"``, ``"fp32"``), when recorded.
PRECISION_KEY = "embedding_precision"
#: The embedding dimension; recorded by the first embedding written.
DIMENSIONS_KEY = "embedding_dimensions"

_HAS_TABLE = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'amalfa_meta'"
_GET = "SELECT value FROM amalfa_meta WHERE key = ?"
_SET = "INSERT OR REPLACE INTO amalfa_meta (key, value) VALUES (?, ?)"
_SET_IF_ABSENT = "INSERT OR IGNORE INTO amalfa_meta (key, value) VALUES (?, ?)"


def read_meta(conn: Connection, key: str) -> Any:
    """The value stored under ``key`` (None when absent, or when there is no table)."""
    if conn.prepare(_HAS_TABLE).first() is None:
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
    (stored,) = conn.prepare(_GET).first((key,))
    return stored


class MetaStore:
    """``amalfa_meta`` reads and writes for :class:`~amalfa.db.ResonanceDB`."""

    _conn: Connection

    def _after_write(self) -> None:  # pragma: no cover - ResonanceDB's own is used
        raise NotImplementedError

    def get_meta(self, key: str) -> Any:
        """The value stored under ``key``, or None."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"a meta key must be a non-empty str, got {key!r}")
        return read_meta(self._conn, key)

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
        value = read_meta(self._conn, MODEL_KEY)
        return None if value is None else str(value)

    def recorded_precision(self) -> str | None:
        """The recorded model's weight precision (``"int8"``, ``"fp32"``), when recorded."""
        value = read_meta(self._conn, PRECISION_KEY)
        return None if value is None else str(value)

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

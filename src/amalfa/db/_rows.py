"""``one_row``: the row a statement always returns (an aggregate, a PRAGMA, a value just
written), as a tuple that is never None, so readers need no check of their own and a type
checker knows it. A missing row means the database is not what it should be: DatabaseError.
``has_table``: whether the schema has a table (databases from older steps may lack one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from amalfa.errors import DatabaseError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from amalfa._core.connection import Connection, Statement

__all__ = ["has_table", "one_row"]

_HAS_TABLE = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?"


def has_table(conn: Connection, name: str) -> bool:
    """Whether the database on ``conn`` has a table called ``name``."""
    return conn.prepare(_HAS_TABLE).first((name,)) is not None


def one_row(statement: Statement, params: Sequence[Any] = ()) -> tuple[Any, ...]:
    """The first row of ``statement`` run with ``params``; DatabaseError when there is none."""
    row = statement.first(params)
    if row is None:
        raise DatabaseError(f"expected a row from {statement.sql!r}, got none")
    return row

"""Reads of the graph on a bare connection, for code that must not open a ResonanceDB.

The doctor reports on a database as it is; opening it as a :class:`~amalfa.db.ResonanceDB`
would migrate it first. These functions read what it needs on a
:class:`~amalfa._core.connection.Connection` from :class:`~amalfa.factory.DatabaseFactory`,
and work on any schema version, including a file with no graph tables yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from amalfa.db._rows import has_table, one_row
from amalfa.db.meta import recorded_model_of, recorded_precision_of

if TYPE_CHECKING:
    from amalfa._core.connection import Connection

__all__ = ["node_counts", "recorded_model_of", "recorded_precision_of"]

_COUNT_NODES = "SELECT count(*), count(embedding) FROM nodes"


def node_counts(conn: Connection) -> tuple[int, int]:
    """(nodes, nodes with an embedding); (0, 0) when there is no ``nodes`` table."""
    if not has_table(conn, "nodes"):
        return 0, 0
    nodes, vectors = one_row(conn.prepare(_COUNT_NODES))
    return int(nodes), int(vectors)

"""Edges: adding, reading and deleting typed, directed links between nodes.

An edge is keyed by (source, target, type): adding one that exists is a no-op
(:meth:`EdgeStore.insert_edge`) or updates its weights (:meth:`EdgeStore.insert_semantic_edge`).
Deletions run on the connection, so the history triggers audit them like any other change.
Walks over the edges (neighbourhoods, paths) live in :mod:`amalfa.db.graph`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from amalfa.db.records import DEFAULT_EDGE_TYPE, Edge
from amalfa.db.transactions import Transactions
from amalfa.db.validation import bad_id, check_edge_key, check_number, refuses_unstorable_text

__all__ = ["EdgeStore"]

_INSERT_EDGE = "INSERT OR IGNORE INTO edges (source, target, type) VALUES (?, ?, ?)"
_UPSERT_SEMANTIC_EDGE = (
    "INSERT INTO edges (source, target, type, confidence, veracity, context_source) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (source, target, type) DO UPDATE SET confidence = excluded.confidence, "
    "veracity = excluded.veracity, context_source = excluded.context_source"
)
_DELETE_EDGE = "DELETE FROM edges WHERE source = ? AND target = ? AND type = ?"
_EDGE_COLUMNS = "source, target, type, confidence, veracity, context_source"
_SELECT_EDGES_OUT = f"SELECT {_EDGE_COLUMNS} FROM edges WHERE source = ?"
_SELECT_EDGES_IN = f"SELECT {_EDGE_COLUMNS} FROM edges WHERE target = ?"
_SELECT_EDGES_BOTH = (
    f"SELECT {_EDGE_COLUMNS} FROM edges WHERE source = ?1 "
    f"UNION ALL SELECT {_EDGE_COLUMNS} FROM edges WHERE target = ?1 AND source <> ?1"
)
# The types bound as one JSON array: one cached statement for any number of types.
_SELECT_EDGES_OF_TYPES = (
    f"SELECT {_EDGE_COLUMNS} FROM edges WHERE type IN (SELECT value FROM json_each(?)) "
    "ORDER BY rowid"
)


class EdgeStore(Transactions):
    """Edge reads and writes for :class:`~amalfa.db.ResonanceDB`."""

    @refuses_unstorable_text
    def insert_edge(self, source: str, target: str, type: str = DEFAULT_EDGE_TYPE) -> bool:
        """Add an edge unless the same (source, target, type) exists; True when added."""
        check_edge_key(source, target, type)
        added = self._conn.prepare(_INSERT_EDGE).run((source, target, type)) > 0
        self._after_write()
        return added

    @refuses_unstorable_text
    def insert_semantic_edge(self, source: str, target: str, type: str,
                             confidence: float = 1.0, veracity: float = 1.0,
                             context_source: str | None = None) -> None:
        """Add an edge, or update the confidence, veracity and context of an existing one."""
        check_edge_key(source, target, type)
        confidence = check_number(confidence, "confidence")
        veracity = check_number(veracity, "veracity")
        if context_source is not None and not isinstance(context_source, str):
            raise TypeError("context_source must be a str or None, "
                            f"not {context_source.__class__.__name__}")
        self._conn.prepare(_UPSERT_SEMANTIC_EDGE).run(
            (source, target, type, confidence, veracity, context_source))
        self._after_write()

    @refuses_unstorable_text
    def delete_edge(self, source: str, target: str, type: str = DEFAULT_EDGE_TYPE) -> bool:
        """Delete the edge (source, target, type); False when there was none."""
        check_edge_key(source, target, type)
        deleted = self._conn.prepare(_DELETE_EDGE).run((source, target, type)) > 0
        self._after_write()
        return deleted

    @refuses_unstorable_text
    def delete_edges(self, edges: Iterable[tuple[str, str, str] | Edge]) -> int:
        """Delete many edges, each given as an :class:`Edge` or a (source, target, type) tuple,
        in one transaction; returns how many existed. A bad key raises before anything is
        deleted."""
        keys = [(e.source, e.target, e.type) if isinstance(e, Edge) else tuple(e) for e in edges]
        for key in keys:
            if len(key) != 3:
                raise ValueError(f"an edge key is (source, target, type), got {key!r}")
            check_edge_key(*key)
        if not keys:
            return 0
        delete = self._conn.prepare(_DELETE_EDGE)
        with self.transaction():
            return sum(delete.run(key) for key in keys)

    @refuses_unstorable_text
    def get_edges(self, node_id: str, *, direction: str = "outgoing") -> list[Edge]:
        """Edges of a node: ``"outgoing"`` (the default, as the original), ``"incoming"`` or
        ``"both"`` (a self-loop listed once)."""
        if type(node_id) is not str:
            bad_id(node_id)
        sql = {"outgoing": _SELECT_EDGES_OUT, "incoming": _SELECT_EDGES_IN,
               "both": _SELECT_EDGES_BOTH}.get(direction)
        if sql is None:
            raise ValueError(f"direction must be 'outgoing', 'incoming' or 'both', "
                             f"not {direction!r}")
        return [Edge(*row) for row in self._conn.prepare(sql).execute((node_id,))]

    @refuses_unstorable_text
    def get_incoming_edges(self, node_id: str) -> list[Edge]:
        """Edges pointing at a node."""
        return self.get_edges(node_id, direction="incoming")

    @refuses_unstorable_text
    def get_edges_by_type(self, types: str | Iterable[str]) -> list[Edge]:
        """Every edge of one type, or of any of several (in insertion order); ingest reads its
        link edges (``links_to``, ``wikilink``) this way."""
        wanted: list[Any] = [types] if isinstance(types, str) else list(types)
        for kind in wanted:
            if not isinstance(kind, str) or not kind:
                bad_id(kind, "type")
        rows = self._conn.prepare(_SELECT_EDGES_OF_TYPES).execute((json.dumps(wanted),))
        return [Edge(*row) for row in rows]

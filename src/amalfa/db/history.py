"""The audit trail: ``history`` rows written by temporary triggers, and reading them back.

With history on (the default) the connection creates ``TEMP`` triggers on ``nodes`` and
``edges`` that write the audit rows inside SQLite, in the same statement as the change they
describe: a node upsert and its history row cannot be separated, and logging costs no Python
work per row. Being temporary, the triggers belong to this connection only: turning history off
really turns logging off, and other programs writing the file are not affected. Rows hold the
entity's JSON form before and after (no embedding), as the original system's did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from amalfa.db.records import HistoryEntry
from amalfa.db.validation import check_count, load_json, refuses_unstorable_text
from amalfa.errors import MisuseError

if TYPE_CHECKING:
    from amalfa._core.connection import Connection

__all__ = ["HISTORY_TRIGGERS", "HistoryLog"]


def _node_json_sql(row: str) -> str:
    """A node's JSON form in SQL (no embedding); ``row`` is NEW or OLD inside a trigger."""
    return (
        f"json_object('id', {row}.id, 'type', {row}.type, 'label', {row}.title, "
        f"'domain', {row}.domain, 'layer', {row}.layer, 'summary', {row}.summary, "
        f"'hash', {row}.hash, "
        # meta is embedded as JSON when it parses; text written by other tools stays a string
        f"'meta', CASE WHEN json_valid({row}.meta) THEN json({row}.meta) ELSE {row}.meta END, "
        f"'date', {row}.date)"
    )


def _edge_json_sql(row: str) -> str:
    return (
        f"json_object('source', {row}.source, 'target', {row}.target, 'type', {row}.type, "
        f"'confidence', {row}.confidence, 'veracity', {row}.veracity, "
        f"'context_source', {row}.context_source)"
    )


def _history_sql(by_id: bool, by_type: bool) -> str:
    where = [clause for clause, wanted in (("entity_id = ?", by_id), ("entity_type = ?", by_type))
             if wanted]
    sql = ("SELECT id, entity_type, entity_id, action, old_value, new_value, timestamp "
           "FROM history")
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " ORDER BY id LIMIT ?"


_GET_HISTORY_SQL = {(i, t): _history_sql(i, t) for i in (False, True) for t in (False, True)}


def _history_trigger(name: str, event: str, table: str, entity: str, action: str,
                     entity_id: str, old: str, new: str) -> str:
    return (
        f"CREATE TEMP TRIGGER IF NOT EXISTS {name} AFTER {event} ON main.{table} BEGIN "
        "INSERT INTO history (entity_type, entity_id, action, old_value, new_value) "
        f"VALUES ('{entity}', {entity_id}, '{action}', {old}, {new}); END"
    )


# The edge id is the original system's: "<source>-<target>-<type>".
_EDGE_ID_NEW = "NEW.source || '-' || NEW.target || '-' || NEW.type"
_EDGE_ID_OLD = "OLD.source || '-' || OLD.target || '-' || OLD.type"
HISTORY_TRIGGERS: tuple[tuple[str, str], ...] = tuple(
    (name, _history_trigger(name, *spec)) for name, spec in (
        ("amalfa_history_node_insert",
         ("INSERT", "nodes", "node", "insert", "NEW.id", "NULL", _node_json_sql("NEW"))),
        ("amalfa_history_node_update",
         ("UPDATE", "nodes", "node", "update", "NEW.id", _node_json_sql("OLD"),
          _node_json_sql("NEW"))),
        ("amalfa_history_node_delete",
         ("DELETE", "nodes", "node", "delete", "OLD.id", _node_json_sql("OLD"), "NULL")),
        ("amalfa_history_edge_insert",
         ("INSERT", "edges", "edge", "insert", _EDGE_ID_NEW, "NULL", _edge_json_sql("NEW"))),
        ("amalfa_history_edge_update",
         ("UPDATE", "edges", "edge", "update", _EDGE_ID_NEW, _edge_json_sql("OLD"),
          _edge_json_sql("NEW"))),
        ("amalfa_history_edge_delete",
         ("DELETE", "edges", "edge", "delete", _EDGE_ID_OLD, _edge_json_sql("OLD"), "NULL")),
    )
)


class HistoryLog:
    """``history_enabled`` and ``get_history`` for :class:`~amalfa.db.ResonanceDB`."""

    _conn: Connection
    _readonly: bool
    _history: bool

    @property
    def history_enabled(self) -> bool:
        """Whether this connection writes audit rows. Settable: False drops the triggers."""
        return self._history

    @history_enabled.setter
    def history_enabled(self, enabled: bool) -> None:
        if enabled and self._readonly:
            raise MisuseError("a read-only database writes no history")
        for name, create_sql in HISTORY_TRIGGERS:
            self._conn.execute(create_sql if enabled else f"DROP TRIGGER IF EXISTS temp.{name}")
        self._history = bool(enabled)

    @refuses_unstorable_text
    def get_history(self, entity_id: str | None = None, *, entity_type: str | None = None,
                    limit: int | None = None) -> list[HistoryEntry]:
        """Audit rows, oldest first, for one entity id and/or entity type (``node``/``edge``)."""
        params: list[Any] = []
        if entity_id is not None:
            params.append(entity_id)
        if entity_type is not None:
            params.append(entity_type)
        params.append(-1 if limit is None else check_count(limit, "limit"))
        sql = _GET_HISTORY_SQL[(entity_id is not None, entity_type is not None)]
        rows = self._conn.prepare(sql).execute(params)
        return [
            HistoryEntry(row_id, kind, ident, action,
                         None if old is None else load_json(old, ident, "old_value"),
                         None if new is None else load_json(new, ident, "new_value"), stamp)
            for row_id, kind, ident, action, old, new, stamp in rows
        ]

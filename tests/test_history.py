"""The audit history: which writes leave rows, what the rows hold, and that they are atomic
with the change they describe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amalfa.db import Node, ResonanceDB
from amalfa.errors import ConstraintError
from amalfa.factory import DatabaseFactory

NODE_KEYS = {"id", "type", "label", "domain", "layer", "summary", "hash", "meta", "date"}


@pytest.fixture
def db(tmp_path: Path):
    with ResonanceDB.create(tmp_path / "history.db") as database:
        yield database


def rows(db: ResonanceDB) -> list[tuple]:
    return db.raw.execute(
        "SELECT entity_type, entity_id, action, old_value, new_value FROM history ORDER BY id")


def test_node_insert_and_update_rows_hold_the_node_without_its_embedding(db: ResonanceDB) -> None:
    db.insert_node(Node("a", "note", "A", embedding=np.ones(4, np.float32), meta={"k": 1},
                        summary="s", hash="h", date="2024-01-01"))
    db.insert_node(Node("a", "note", "A2", embedding=np.ones(4, np.float32)))
    (first, second) = db.get_history("a")
    assert (first.entity_type, first.action, first.old_value) == ("node", "insert", None)
    assert first.new_value == {"id": "a", "type": "note", "label": "A", "domain": "knowledge",
                               "layer": "experience", "summary": "s", "hash": "h",
                               "meta": {"k": 1}, "date": "2024-01-01"}
    assert second.action == "update"
    assert second.old_value == first.new_value
    assert second.new_value["label"] == "A2" and second.new_value["meta"] is None
    assert set(second.old_value) == NODE_KEYS  # no embedding
    assert first.timestamp
    assert all("embedding" not in (old or "") + (new or "") for *_, old, new in rows(db))


def test_meta_update_keeps_the_old_and_the_new_meta(db: ResonanceDB) -> None:
    db.insert_node(Node("a", "note", meta={"v": 1}))
    db.update_node_meta("a", {"v": 2, "w": [1]})
    entry = db.get_history("a")[-1]
    assert entry.action == "update"
    assert entry.old_value["meta"] == {"v": 1}
    assert entry.new_value["meta"] == {"v": 2, "w": [1]}
    assert not db.update_node_meta("missing", {"x": 1})
    assert db.get_history("missing") == []


def test_date_update_and_delete_are_recorded(db: ResonanceDB) -> None:
    db.insert_node(Node("a", "note", date="old"))
    db.insert_node(Node("b", "note"))
    db.insert_edge("a", "b")
    db.insert_edge("b", "a", "cites")
    db.update_node_date("a", "new")
    date_entry = db.get_history("a")[-1]
    assert (date_entry.old_value["date"], date_entry.new_value["date"]) == ("old", "new")
    db.delete_node("a")
    node_delete = db.get_history("a")[-1]
    assert (node_delete.action, node_delete.old_value["id"], node_delete.new_value) == (
        "delete", "a", None)
    edge_deletes = [e for e in db.get_history(entity_type="edge") if e.action == "delete"]
    assert sorted(e.entity_id for e in edge_deletes) == ["a-b-related_to", "b-a-cites"]


def test_edge_rows(db: ResonanceDB) -> None:
    assert db.insert_edge("a", "b")
    assert not db.insert_edge("a", "b")  # a duplicate is ignored and leaves no row
    db.insert_semantic_edge("a", "c", "supports", 0.5, 0.75, "doc.md")
    db.insert_semantic_edge("a", "c", "supports", 0.9)
    entries = db.get_history(entity_type="edge")
    assert [(e.entity_id, e.action) for e in entries] == [
        ("a-b-related_to", "insert"), ("a-c-supports", "insert"), ("a-c-supports", "update")]
    assert entries[0].new_value == {"source": "a", "target": "b", "type": "related_to",
                                    "confidence": 1.0, "veracity": 1.0, "context_source": None}
    assert entries[2].old_value["confidence"] == 0.5
    assert entries[2].new_value == {"source": "a", "target": "c", "type": "supports",
                                    "confidence": 0.9, "veracity": 1.0, "context_source": None}


def test_bulk_insert_writes_one_row_per_node(db: ResonanceDB) -> None:
    db.insert_nodes(Node(f"n{i}", "note", embedding=np.ones(3, np.float32)) for i in range(700))
    assert db.raw.execute("SELECT count(*), min(action), max(action) FROM history") == [
        (700, "insert", "insert")]
    assert db.get_history(limit=2)[1].entity_id == "n1"


def test_history_off_writes_no_rows(tmp_path: Path) -> None:
    with ResonanceDB.create(tmp_path / "quiet.db", history=False) as db:
        assert not db.history_enabled
        db.insert_node(Node("a", "note"))
        db.insert_nodes([Node("b", "note")])
        db.update_node_meta("a", {"x": 1})
        db.insert_edge("a", "b")
        db.delete_node("b")
        assert rows(db) == []
        db.history_enabled = True
        db.insert_node(Node("c", "note"))
        assert [r[1] for r in rows(db)] == ["c"]
        db.history_enabled = False
        db.insert_node(Node("d", "note"))
        assert len(rows(db)) == 1


def test_history_belongs_to_the_connection(db: ResonanceDB) -> None:
    with ResonanceDB(db.path, history=False) as quiet:
        quiet.insert_node(Node("from-quiet", "note"))
    # another program writing the file (amalfa's library, not the stdlib's: two copies of SQLite
    # must not share a file inside one process)
    other = DatabaseFactory.connect(db.path)
    other.execute("INSERT INTO nodes (id, type) VALUES ('from-other', 'note')")
    other.close()
    db.insert_node(Node("from-db", "note"))
    assert [r[1] for r in rows(db)] == ["from-db"]


def test_a_failed_history_row_undoes_the_change(db: ResonanceDB) -> None:
    db.raw.execute("CREATE TEMP TRIGGER refuse BEFORE INSERT ON main.history "
                   "BEGIN SELECT RAISE(ABORT, 'history refused'); END")
    with pytest.raises(ConstraintError, match="history refused"):
        db.insert_node(Node("a", "note"))
    with pytest.raises(ConstraintError, match="history refused"):
        db.insert_nodes([Node("b", "note"), Node("c", "note")])
    with pytest.raises(ConstraintError, match="history refused"):
        db.insert_edge("a", "b")
    db.raw.execute("DROP TRIGGER temp.refuse")
    assert db.get_stats().nodes == 0 and db.get_stats().edges == 0
    assert rows(db) == []


def test_rolled_back_changes_leave_no_history(db: ResonanceDB) -> None:
    with pytest.raises(RuntimeError), db.transaction():
        db.insert_node(Node("a", "note"))
        db.insert_edge("a", "b")
        raise RuntimeError("undo")
    assert rows(db) == []


def test_meta_that_other_tools_stored_as_plain_text_is_kept_as_text(db: ResonanceDB) -> None:
    db.insert_node(Node("a", "note"))
    db.raw.execute("UPDATE nodes SET meta = 'not json' WHERE id = 'a'")
    db.update_node_date("a", "2024")
    (old_json,) = db.raw.execute(
        "SELECT old_value FROM history WHERE action = 'update' ORDER BY id DESC LIMIT 1")[0]
    assert json.loads(old_json)["meta"] == "not json"

"""Transactions: begin/commit/rollback, `with db.transaction()`, nesting through savepoints,
and the write lock taken up front."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amalfa.db import Node, ResonanceDB
from amalfa.errors import BusyError, DatabaseError, MisuseError
from amalfa.factory import DatabaseFactory


@pytest.fixture
def db(tmp_path: Path):
    with ResonanceDB.create(tmp_path / "tx.db") as database:
        yield database


def ids(db: ResonanceDB) -> list[str]:
    return [row[0] for row in db.raw.execute("SELECT id FROM nodes ORDER BY id")]


def seen_by_another_connection(db: ResonanceDB) -> list[str]:
    # amalfa's own library: a second copy of SQLite (the stdlib's) must not open the same file
    # while this process has it open
    conn = DatabaseFactory.connect(db.path)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM nodes ORDER BY id")]
    finally:
        conn.close()


def test_begin_commit(db: ResonanceDB) -> None:
    db.begin()
    assert db.in_transaction
    db.insert_node(Node("a", "note"))
    db.insert_edge("a", "b")
    assert seen_by_another_connection(db) == []
    db.commit()
    assert not db.in_transaction
    assert seen_by_another_connection(db) == ["a"]


def test_begin_rollback(db: ResonanceDB) -> None:
    db.insert_node(Node("kept", "note"))
    db.begin()
    db.insert_node(Node("a", "note"))
    db.delete_node("kept")
    db.rollback()
    assert ids(db) == ["kept"]
    assert db.get_edges("kept") == []


def test_begin_twice_and_commit_without_begin(db: ResonanceDB) -> None:
    db.begin()
    with pytest.raises(MisuseError, match="already open"):
        db.begin()
    db.rollback()
    with pytest.raises(DatabaseError, match="no transaction"):
        db.commit()


def test_begin_takes_the_write_lock_at_once(db: ResonanceDB) -> None:
    # BEGIN IMMEDIATE: a second writer waits (here: gives up) before either has written
    with ResonanceDB(db.path) as other:
        other.raw.set_busy_timeout(50)
        db.begin()
        with pytest.raises(BusyError):
            other.begin()
        with pytest.raises(BusyError):
            other.insert_node(Node("x", "note"))
        db.rollback()
        other.begin()
        other.rollback()


def test_with_transaction_commits(db: ResonanceDB) -> None:
    with db.transaction() as same:
        assert same is db
        db.insert_node(Node("a", "note"))
        db.insert_node(Node("b", "note"))
        assert seen_by_another_connection(db) == []
    assert seen_by_another_connection(db) == ["a", "b"]
    assert not db.in_transaction


def test_with_transaction_rolls_back_on_exception(db: ResonanceDB) -> None:
    db.insert_node(Node("before", "note"))
    with pytest.raises(KeyError), db.transaction():
        db.insert_node(Node("a", "note"))
        db.update_node_meta("before", {"changed": True})
        raise KeyError("boom")
    assert ids(db) == ["before"]
    assert db.get_node("before").meta == {}
    assert not db.in_transaction


def test_base_exceptions_roll_back_too(db: ResonanceDB) -> None:
    with pytest.raises(KeyboardInterrupt), db.transaction():
        db.insert_node(Node("a", "note"))
        raise KeyboardInterrupt
    assert ids(db) == []


def test_nesting_rolls_back_only_the_inner_block(db: ResonanceDB) -> None:
    with db.transaction():
        db.insert_node(Node("outer", "note"))
        with pytest.raises(ValueError), db.transaction():
            db.insert_node(Node("inner", "note"))
            with db.transaction():
                db.insert_node(Node("innermost", "note"))
            raise ValueError("inner fails")
        with db.transaction():
            db.insert_node(Node("second-inner", "note"))
        assert seen_by_another_connection(db) == []
    assert ids(db) == ["outer", "second-inner"]


def test_inner_failure_propagating_undoes_everything(db: ResonanceDB) -> None:
    with pytest.raises(ValueError), db.transaction():
        db.insert_node(Node("outer", "note"))
        with db.transaction():
            db.insert_node(Node("inner", "note"))
            raise ValueError
    assert ids(db) == []


def test_transaction_inside_begin_is_a_savepoint(db: ResonanceDB) -> None:
    db.begin()
    db.insert_node(Node("a", "note"))
    with pytest.raises(RuntimeError), db.transaction():
        db.insert_node(Node("b", "note"))
        raise RuntimeError
    assert db.in_transaction  # the caller's transaction is still open
    db.commit()
    assert ids(db) == ["a"]


def test_bulk_insert_failing_inside_a_transaction_undoes_only_itself(db: ResonanceDB) -> None:
    with db.transaction():
        db.insert_node(Node("first", "note", embedding=np.ones(4, np.float32)))
        with pytest.raises(ValueError, match="dimension"):
            db.insert_nodes([Node("ok", "note", embedding=np.ones(4, np.float32)),
                             Node("bad", "note", embedding=np.ones(5, np.float32))])
        db.insert_node(Node("last", "note"))
    assert ids(db) == ["first", "last"]


def test_single_writes_outside_a_transaction_commit_at_once(db: ResonanceDB) -> None:
    db.insert_node(Node("a", "note"))
    assert not db.in_transaction
    assert seen_by_another_connection(db) == ["a"]
    db.insert_node(Node("b", "note", embedding=np.ones(3, np.float32)))  # records the dimension
    assert not db.in_transaction
    assert seen_by_another_connection(db) == ["a", "b"]

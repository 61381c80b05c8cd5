"""ResonanceDB.insert_nodes_matrix: bulk upserts from one (N, d) matrix, and the C loop under it
(Statement.executemany_rows)."""

from __future__ import annotations

import numpy as np
import pytest

from amalfa import Node, ResonanceDB, VectorEngine
from amalfa._core.connection import Connection
from amalfa.errors import RangeError

DIM = 24


def nodes(n, prefix="m"):
    return [Node(id=f"{prefix}{i}", type="note", label=f"Title {i}", domain="knowledge",
                 meta={"source": f"docs/{i}.md"}, date="2026-11-29") for i in range(n)]


@pytest.fixture
def db(tmp_path):
    database = ResonanceDB.create(tmp_path / "bulk.db")
    yield database
    database.close()


def test_matrix_insert_writes_what_insert_nodes_writes(db, tmp_path):
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((300, DIM)) * 3  # float64, not unit length
    before = matrix.copy()
    assert db.insert_nodes_matrix(nodes(300), matrix) == 300
    np.testing.assert_array_equal(matrix, before)  # the caller's array is not touched
    other = ResonanceDB.create(tmp_path / "ref.db")
    other.insert_nodes(Node(id=n.id, type=n.type, label=n.label, domain=n.domain, meta=n.meta,
                            date=n.date, embedding=row) for n, row in zip(nodes(300), matrix))
    for i in (0, 7, 299):
        assert db.get_node(f"m{i}") == other.get_node(f"m{i}")
    other.close()
    assert db.dimensions == DIM
    assert len(db.get_history(entity_type="node")) == 300  # history as insert_nodes writes it
    hits = VectorEngine(db).search_by_vector(matrix[42] / np.linalg.norm(matrix[42]), 1)
    assert hits[0].id == "m42" and hits[0].score == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda m: m[:-1], r"\(5, d\) matrix"),
    (lambda m: m[:, :0], r"\(5, d\) matrix"),
    (lambda m: np.where(np.arange(5)[:, None] == 3, np.nan, m), "node 'm3'.*NaN"),
])
def test_bad_matrices_are_clear_errors_and_write_nothing(db, make, message):
    matrix = np.random.default_rng(2).standard_normal((5, DIM))
    with pytest.raises(ValueError, match=message):
        db.insert_nodes_matrix(nodes(5), make(matrix))
    assert db.get_stats().nodes == 0


def test_dimension_and_own_embeddings_are_refused(db):
    db.insert_nodes_matrix(nodes(2), np.ones((2, DIM)))
    with pytest.raises(ValueError, match=f"dimension {DIM + 1}; this database holds {DIM}-d"):
        db.insert_nodes_matrix(nodes(2, "x"), np.ones((2, DIM + 1)))
    own = [Node(id="own", type="note", label="o", embedding=np.ones(DIM))]
    with pytest.raises(ValueError, match="'own' has its own embedding"):
        db.insert_nodes_matrix(own, np.ones((1, DIM)))
    with pytest.raises(TypeError, match="expected a Node"):
        db.insert_nodes_matrix([{"id": "dict"}], np.ones((1, DIM)))
    assert db.get_stats().nodes == 2


def test_a_failing_row_rolls_the_whole_call_back(db):
    db.raw.execute("CREATE TRIGGER refuse BEFORE INSERT ON nodes WHEN NEW.id = 'm3' "
                   "BEGIN SELECT RAISE(ABORT, 'no m3'); END")
    with pytest.raises(Exception, match="no m3"):
        db.insert_nodes_matrix(nodes(5), np.ones((5, DIM)))
    assert db.get_stats().nodes == 0


def test_executemany_rows_binds_rows_in_place_and_clears_after(tmp_path):
    conn = Connection(tmp_path / "rows.db")
    conn.execute("CREATE TABLE t (name TEXT, n INTEGER, blob BLOB)")
    stmt = conn.prepare("INSERT INTO t VALUES (?, ?, ?)")
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert stmt.executemany_rows([("a", 1), ("b", 2), ("c", 3)], data.view(np.uint8)) == 3
    rows = conn.execute("SELECT name, n, blob FROM t ORDER BY n")
    assert [(r[0], r[1], np.frombuffer(r[2], np.float32).tolist()) for r in rows] == [
        ("a", 1, [0, 1, 2, 3]), ("b", 2, [4, 5, 6, 7]), ("c", 3, [8, 9, 10, 11])]
    assert conn.prepare("SELECT ?, ?, ?").execute((1, 2, 3)) == [(1, 2, 3)]
    assert stmt.step() is False  # runs with every parameter cleared: a row of NULLs
    assert conn.execute("SELECT count(*) FROM t WHERE blob IS NULL") == [(1,)]
    with pytest.raises(RangeError, match="row 1: statement takes 2 parameter"):
        stmt.executemany_rows([("d", 4), ("e",)], data[:2].view(np.uint8))
    with pytest.raises(ValueError, match="2 parameter rows for 3 BLOB rows"):
        stmt.executemany_rows([("f", 5), ("g", 6)], data.view(np.uint8))
    conn.close()

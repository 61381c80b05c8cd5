"""The database methods other modules use instead of their own SQL: ``amalfa_meta`` (recorded
model, any key), edge deletion and edges by type, and the nodes ingest wrote. Real files, read
back through a second connection where it matters (what another process would see)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amalfa.db import Edge, IngestedNode, Node, ResonanceDB
from amalfa.db.inspect import node_counts, recorded_model_of
from amalfa.errors import ReadOnlyError
from amalfa.factory import DatabaseFactory

DIM = 8


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "resonance.db"


@pytest.fixture
def db(db_path: Path):
    with ResonanceDB.create(db_path) as database:
        yield database


# -- amalfa_meta ----------------------------------------------------------------------------------


def test_recorded_model_round_trip_and_is_seen_by_other_connections(db: ResonanceDB,
                                                                    db_path: Path) -> None:
    assert db.recorded_model() is None and db.recorded_precision() is None
    with db.transaction():
        db.record_model("sentence-transformers/all-MiniLM-L6-v2", "int8")
    assert db.recorded_model() == "sentence-transformers/all-MiniLM-L6-v2"
    assert db.recorded_precision() == "int8"
    db.record_model("BAAI/bge-small-en-v1.5")  # a new model; the precision is left as it was
    with ResonanceDB(db_path, readonly=True) as other:
        assert other.recorded_model() == "BAAI/bge-small-en-v1.5"
        assert other.recorded_precision() == "int8"
    conn = DatabaseFactory.connect(db_path, readonly=True)
    try:
        assert recorded_model_of(conn) == "BAAI/bge-small-en-v1.5"
    finally:
        conn.close()


def test_record_model_refuses_bad_names_and_writes_nothing(db: ResonanceDB) -> None:
    for bad in ("", "   ", None, 3):
        with pytest.raises(ValueError, match="model name"):
            db.record_model(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision"):
        db.record_model("m", "")
    assert db.recorded_model() is None


def test_a_rolled_back_transaction_records_no_model(db: ResonanceDB) -> None:
    with pytest.raises(RuntimeError), db.transaction():
        db.record_model("m")
        raise RuntimeError("the batch failed")
    assert db.recorded_model() is None


def test_get_and_set_meta(db: ResonanceDB) -> None:
    assert db.get_meta("nothing") is None
    db.set_meta("answer", 42)
    db.set_meta("label", "x")
    db.set_meta("answer", 43)
    assert (db.get_meta("answer"), db.get_meta("label")) == (43, "x")
    with pytest.raises(ValueError, match="meta key"):
        db.set_meta("", 1)
    with pytest.raises(TypeError, match="str, int, float or None"):
        db.set_meta("k", [1, 2])  # type: ignore[arg-type]
    assert db.get_meta("k") is None


def test_the_dimension_lives_in_meta(db: ResonanceDB, db_path: Path) -> None:
    db.insert_node(Node("a", "note", embedding=vec(1)))
    assert db.get_meta("embedding_dimensions") == DIM
    with pytest.raises(ValueError, match=f"holds {DIM}-d"):
        db.record_dimensions(DIM + 1)
    with ResonanceDB(db_path) as again:
        assert again.dimensions == DIM


def test_a_readonly_database_refuses_meta_writes(db: ResonanceDB, db_path: Path) -> None:
    db.record_model("m")
    with ResonanceDB(db_path, readonly=True) as ro, pytest.raises(ReadOnlyError):
        ro.record_model("other")
    assert db.recorded_model() == "m"


def test_bare_connection_reads_on_a_file_without_graph_tables(tmp_path: Path) -> None:
    conn = DatabaseFactory.connect(tmp_path / "empty.db", create=True)
    try:
        assert recorded_model_of(conn) is None
        assert node_counts(conn) == (0, 0)
    finally:
        conn.close()


def test_node_counts(db: ResonanceDB, db_path: Path) -> None:
    db.insert_nodes([Node("a", "note", embedding=vec(1)), Node("b", "note")])
    conn = DatabaseFactory.connect(db_path, readonly=True)
    try:
        assert node_counts(conn) == (2, 1)
    finally:
        conn.close()


# -- edges ----------------------------------------------------------------------------------------


@pytest.fixture
def linked(db: ResonanceDB) -> ResonanceDB:
    db.insert_nodes([Node(name, "note") for name in ("a", "b", "c")])
    db.insert_edge("a", "b", "links_to")
    db.insert_edge("b", "a", "wikilink")
    db.insert_edge("a", "c", "related_to")
    db.insert_edge("c", "b", "links_to")
    return db


def test_get_edges_by_type(linked: ResonanceDB) -> None:
    assert linked.get_edges_by_type("links_to") == [Edge("a", "b", "links_to"),
                                                    Edge("c", "b", "links_to")]
    assert {(e.source, e.target) for e in linked.get_edges_by_type(["links_to", "wikilink"])} \
        == {("a", "b"), ("b", "a"), ("c", "b")}
    assert linked.get_edges_by_type([]) == []
    assert linked.get_edges_by_type("nothing") == []
    with pytest.raises(ValueError, match="type"):
        linked.get_edges_by_type(["links_to", ""])


def test_delete_edge_is_audited(linked: ResonanceDB) -> None:
    assert linked.delete_edge("a", "b", "links_to") is True
    assert linked.delete_edge("a", "b", "links_to") is False
    assert linked.get_edges("a") == [Edge("a", "c", "related_to")]
    deleted = linked.get_history("a-b-links_to", entity_type="edge")
    assert [h.action for h in deleted] == ["insert", "delete"]


def test_delete_edges_in_one_transaction(linked: ResonanceDB) -> None:
    removed = linked.delete_edges([("a", "b", "links_to"), Edge("c", "b", "links_to"),
                                   ("a", "b", "links_to"), ("x", "y", "z")])
    assert removed == 2
    assert linked.get_edges_by_type("links_to") == []
    assert linked.delete_edges([]) == 0


def test_a_bad_key_deletes_nothing(linked: ResonanceDB) -> None:
    before = linked.get_edges_by_type(["links_to", "wikilink", "related_to"])
    with pytest.raises(ValueError, match="target"):
        linked.delete_edges([("a", "b", "links_to"), ("a", "", "links_to")])
    with pytest.raises(ValueError, match="edge key"):
        linked.delete_edges([("a", "b")])  # type: ignore[list-item]
    assert linked.get_edges_by_type(["links_to", "wikilink", "related_to"]) == before


# -- nodes ingest wrote ---------------------------------------------------------------------------


def test_ingested_nodes_are_the_ones_with_a_source(db: ResonanceDB) -> None:
    db.insert_nodes([
        Node("doc-a", "document", hash="h1", meta={"source": "docs/a.md"}, embedding=vec(1)),
        Node("doc-b", "document", hash="h2", meta={"source": "docs/b.md", "tags": ["x"]}),
        Node("concept", "concept", meta={"aliases": ["c"]}),
        Node("empty-source", "document", meta={"source": ""}),
        Node("odd", "document", meta={"note": 'mentions "source" in text'}),
    ])
    db.raw.execute("UPDATE nodes SET meta = 'not json \"source\"' WHERE id = 'concept'")
    assert db.ingested_nodes() == {
        "doc-a": IngestedNode("doc-a", "h1", "docs/a.md", True),
        "doc-b": IngestedNode("doc-b", "h2", "docs/b.md", False),
    }

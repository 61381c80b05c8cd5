"""ResonanceDB: opening, typed CRUD on nodes and edges, stats, validation, and the file itself."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

import amalfa
from amalfa.db import (
    DatabaseNotFoundError,
    DatabaseStats,
    Edge,
    Node,
    ResonanceDB,
    generate_id,
)
from amalfa.errors import (
    CantOpenError,
    ConnectionClosedError,
    DatabaseError,
    ReadOnlyError,
)
from amalfa.factory import DatabaseFactory
from amalfa.migrations import latest_version

DIM = 8


def vec(seed: int, dim: int = DIM) -> np.ndarray:
    """A deterministic, non-normalised float32 vector."""
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32) * 3


def dump(path: Path) -> list[object]:
    """The schema and every row of the database file, read by a separate connection.

    The connection is amalfa's own, not the stdlib module's: two copies of SQLite in one process
    must not have the same file open at once (closing one drops the other's POSIX locks).
    """
    conn = DatabaseFactory.connect(path, readonly=True)
    try:
        out: list[object] = []
        for kind, name, sql in conn.execute(
                "SELECT type, name, sql FROM sqlite_schema ORDER BY type, name"):
            out.append(sql)
            if kind == "table":  # sorted here: FTS5's shadow tables have no rowid
                out.extend(sorted(conn.execute(f'SELECT * FROM "{name}"'), key=repr))
        return out
    finally:
        conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "graph" / "resonance.db"


@pytest.fixture
def db(db_path: Path):
    with ResonanceDB.create(db_path) as database:
        yield database


@pytest.fixture
def populated(db: ResonanceDB) -> ResonanceDB:
    db.insert_nodes([
        Node("alpha", "note", "Alpha", embedding=vec(1), hash="h-alpha", meta={"tags": ["a"]},
             date="2024-01-01", summary="First."),
        Node("beta", "note", "Beta", domain="persona", embedding=vec(2)),
        Node("gamma", "concept", "Gamma", domain="lexicon", summary="A third thing.",
             meta={"aliases": ["g", "γ"], "semantic_tokens": 4}),
        Node("delta", "concept", "Delta", domain="lexicon"),
    ])
    db.insert_edge("alpha", "beta")
    db.insert_edge("alpha", "gamma", "cites")
    db.insert_edge("gamma", "alpha")
    return db


# -- opening ----------------------------------------------------------------------------------------


def test_public_names_are_exported() -> None:
    assert amalfa.ResonanceDB is ResonanceDB
    assert amalfa.Node is Node
    assert amalfa.Edge is Edge
    assert amalfa.generate_id is generate_id


def test_missing_file_is_an_error_naming_the_path_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "resonance.db"
    with pytest.raises(DatabaseNotFoundError) as caught:
        ResonanceDB(path)
    assert str(path) in str(caught.value)
    assert "create" in str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert isinstance(caught.value, CantOpenError)
    assert caught.value.filename == str(path)
    assert not path.parent.exists()


def test_create_makes_folders_and_the_schema(db_path: Path) -> None:
    with ResonanceDB.create(db_path) as db:
        assert db.path == db_path
        assert db.migration_report.applied == tuple(range(1, latest_version() + 1))
    assert db_path.exists()
    tables = {row[0] for row in sqlite3.connect(db_path).execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table'")}
    assert {"nodes", "edges", "ember_state", "history", "amalfa_migrations", "amalfa_meta"} <= tables


def test_create_flag_and_reopening_an_existing_file(db_path: Path) -> None:
    with ResonanceDB(db_path, create=True) as db:
        db.insert_node(Node("a", "note"))
    with ResonanceDB(db_path) as db:
        assert db.get_node("a") is not None
        assert db.migration_report.applied == ()


def test_create_and_readonly_together_are_refused(db_path: Path) -> None:
    with pytest.raises(ValueError, match="contradict"):
        ResonanceDB(db_path, create=True, readonly=True)


def test_readonly_reads_but_refuses_writes(populated: ResonanceDB) -> None:
    path = populated.path
    with ResonanceDB(path, readonly=True) as ro:
        assert ro.readonly
        assert ro.get_node("alpha").label == "Alpha"
        assert not ro.history_enabled
        before = dump(path)
        with pytest.raises(ReadOnlyError):
            ro.insert_node(Node("zeta", "note"))
        assert dump(path) == before


def test_in_memory_database() -> None:
    with ResonanceDB(":memory:") as db:
        db.insert_node(Node("a", "note", embedding=vec(0)))
        assert db.get_node("a").embedding.shape == (DIM,)


def test_properties_and_context_manager(db_path: Path) -> None:
    db = ResonanceDB.create(db_path)
    assert isinstance(db.raw, amalfa.factory.Connection)
    assert db.raw.execute("PRAGMA journal_mode") == [("wal",)]
    assert db.dimensions is None
    with db as same:
        assert same is db
    assert db.closed
    db.close()  # idempotent
    with pytest.raises(ConnectionClosedError):
        db.get_node("a")


def test_close_runs_pragma_optimize(db_path: Path) -> None:
    # PRAGMA optimize analyses the tables whose indexes the connection used: the statistics
    # tables appear only through it (nothing else here runs ANALYZE)
    db = ResonanceDB.create(db_path)
    db.insert_nodes(Node(f"n{i}", "note") for i in range(2000))
    for i in range(2000):
        db.insert_edge(f"n{i}", f"n{(i + 1) % 2000}")
    db.get_edges("n1")
    db.get_incoming_edges("n1")
    assert db.raw.execute("SELECT name FROM sqlite_schema WHERE name = 'sqlite_stat1'") == []
    db.close()
    with ResonanceDB(db_path) as again:
        stats = again.raw.execute("SELECT tbl, idx FROM sqlite_stat1")
    assert ("edges", "idx_edges_source") in stats


def test_close_rolls_back_an_open_transaction(db_path: Path) -> None:
    db = ResonanceDB.create(db_path)
    db.begin()
    db.insert_node(Node("a", "note"))
    db.close()
    with ResonanceDB(db_path) as again:
        assert again.get_node("a") is None


# -- nodes ------------------------------------------------------------------------------------------


def test_node_is_a_slotted_record_with_the_original_defaults() -> None:
    node = Node("x", "note")
    assert (node.label, node.domain, node.layer, node.summary, node.embedding, node.hash,
            node.meta, node.date) == (None, "knowledge", "experience", None, None, None, {}, None)
    assert not hasattr(node, "__dict__")
    assert Node("y", "note").meta is not node.meta  # no shared mutable default
    with pytest.raises(TypeError):
        hash(node)


def test_node_equality_compares_embeddings_by_value() -> None:
    a = Node("x", "note", embedding=np.ones(3, np.float32))
    assert a == Node("x", "note", embedding=np.ones(3, np.float32))
    assert a != Node("x", "note", embedding=np.zeros(3, np.float32))
    assert a != Node("x", "note")
    assert "shape (3,)" in repr(a)


def test_insert_and_get_node_round_trip(db: ResonanceDB) -> None:
    raw = vec(7)
    db.insert_node(Node("n1", "note", "Title One", domain="persona", layer="raw", summary="S",
                        embedding=raw, hash="abc", meta={"k": [1, 2], "é": "ü"},
                        date="2024-05-06"))
    node = db.get_node("n1")
    assert node is not None
    assert (node.id, node.type, node.label, node.domain, node.layer, node.summary, node.hash,
            node.meta, node.date) == ("n1", "note", "Title One", "persona", "raw", "S", "abc",
                                      {"k": [1, 2], "é": "ü"}, "2024-05-06")
    assert node.embedding.dtype == np.float32
    assert not node.embedding.flags.writeable  # a view over the BLOB's bytes
    np.testing.assert_allclose(node.embedding, raw / np.linalg.norm(raw), rtol=1e-6)
    assert np.linalg.norm(node.embedding) == pytest.approx(1.0, abs=1e-6)
    # label is stored in the title column, the embedding as raw float32 bytes
    title, blob = db.raw.execute("SELECT title, embedding FROM nodes WHERE id = 'n1'")[0]
    assert title == "Title One"
    assert len(blob) == DIM * 4
    assert db.dimensions == DIM


def test_the_caller_s_embedding_is_not_modified(db: ResonanceDB) -> None:
    raw = vec(3)
    copy = raw.copy()
    db.insert_node(Node("a", "note", embedding=raw))
    db.insert_nodes([Node("b", "note", embedding=raw)])
    np.testing.assert_array_equal(raw, copy)


def test_nodes_read_back_can_be_written_again(populated: ResonanceDB) -> None:
    # read-only embedding views from the database go back in without complaint
    alpha = populated.get_node("alpha")
    alpha.label = "Alpha again"
    populated.insert_node(alpha)
    assert populated.insert_nodes(populated.get_nodes()) == 4
    again = populated.get_node("alpha")
    assert again.to_dict() == alpha.to_dict()
    np.testing.assert_allclose(again.embedding, alpha.embedding, rtol=1e-6)


def test_zero_embedding_stays_zero(db: ResonanceDB) -> None:
    db.insert_node(Node("z", "note", embedding=np.zeros(DIM, np.float32)))
    db.insert_nodes([Node("z2", "note", embedding=np.zeros(DIM))])
    assert not db.get_node("z").embedding.any()
    assert not db.get_node("z2").embedding.any()


def test_embedding_accepts_lists_and_other_float_types(db: ResonanceDB) -> None:
    db.insert_node(Node("a", "note", embedding=[3.0, 4.0] + [0.0] * (DIM - 2)))
    db.insert_node(Node("b", "note", embedding=np.arange(DIM, dtype=np.float64)))
    db.insert_node(Node("c", "note", embedding=np.arange(DIM, dtype=">f4")))  # big-endian
    assert db.get_node("a").embedding[:2].tolist() == pytest.approx([0.6, 0.8])
    np.testing.assert_allclose(db.get_node("b").embedding, db.get_node("c").embedding)


def test_empty_meta_is_stored_as_null_and_read_back_as_a_dict(db: ResonanceDB) -> None:
    db.insert_node(Node("a", "note"))
    assert db.raw.execute("SELECT meta FROM nodes WHERE id = 'a'") == [(None,)]
    assert db.get_node("a").meta == {}


def test_empty_domain_and_layer_fall_back_to_the_defaults(db: ResonanceDB) -> None:
    db.insert_node(Node("a", "note", domain="", layer=""))
    node = db.get_node("a")
    assert (node.domain, node.layer) == ("knowledge", "experience")


def test_upsert_replaces_every_field(db: ResonanceDB) -> None:
    db.insert_node(Node("a", "note", "Old", summary="old summary", embedding=vec(1),
                        meta={"v": 1}, hash="h1"))
    (rowid,) = db.raw.execute("SELECT rowid FROM nodes WHERE id = 'a'")[0]
    db.insert_node(Node("a", "concept", "New"))
    node = db.get_node("a")
    assert (node.type, node.label, node.summary, node.embedding, node.meta, node.hash) == (
        "concept", "New", None, None, {}, None)
    assert db.raw.execute("SELECT count(*) FROM nodes") == [(1,)]
    # updated in place: the rowid the vector cache keys on does not change
    assert db.raw.execute("SELECT rowid FROM nodes WHERE id = 'a'") == [(rowid,)]


def test_get_node_missing_and_bad_ids(db: ResonanceDB) -> None:
    assert db.get_node("nope") is None
    assert db.get_node("") is None
    with pytest.raises(ValueError, match="id"):
        db.get_node(5)  # type: ignore[arg-type]


def test_date_accepts_dates_and_datetimes(db: ResonanceDB) -> None:
    db.insert_node(Node("a", "note", date=dt.date(2024, 2, 3)))  # type: ignore[arg-type]
    assert db.get_node("a").date == "2024-02-03"
    assert db.update_node_date("a", dt.datetime(2024, 2, 3, 4, 5, 6))
    assert db.get_node("a").date == "2024-02-03T04:05:06"
    assert db.update_node_date("a", "yesterday")
    assert db.get_node("a").date == "yesterday"
    assert db.update_node_date("a", None)
    assert db.get_node("a").date is None
    assert not db.update_node_date("missing", "2024-01-01")


def test_insert_nodes_bulk(db: ResonanceDB) -> None:
    def generate():
        for i in range(1300):  # more than one chunk, from a generator
            yield Node(f"n{i}", "note", f"N {i}", embedding=vec(i) if i % 3 else None,
                       meta={"i": i} if i % 2 else {})

    assert db.insert_nodes(generate()) == 1300
    stats = db.get_stats()
    assert (stats.nodes, stats.vectors) == (1300, 866)
    node = db.get_node("n1001")
    assert node.meta == {"i": 1001}
    np.testing.assert_allclose(node.embedding, vec(1001) / np.linalg.norm(vec(1001)), rtol=1e-6)
    assert db.get_node("n999").embedding is None
    assert db.insert_nodes([]) == 0


def test_insert_nodes_is_one_transaction(db: ResonanceDB) -> None:
    # while the generator is producing node 1000 the first two chunks have been written, but
    # inside one open transaction: another connection sees none of them until the end
    other = DatabaseFactory.connect(db.path)
    seen_during: list[tuple[bool, list[tuple[int]]]] = []

    def generate():
        for i in range(1200):
            if i == 1000:
                seen_during.append((db.in_transaction,
                                    other.execute("SELECT count(*) FROM nodes")))
            yield Node(f"n{i}", "note")

    db.insert_nodes(generate())
    assert seen_during == [(True, [(0,)])]
    assert not db.in_transaction
    assert other.execute("SELECT count(*) FROM nodes") == [(1200,)]
    other.close()


def test_get_nodes_filters_paging_and_order(populated: ResonanceDB) -> None:
    db = populated
    assert [n.id for n in db.get_nodes()] == ["alpha", "beta", "gamma", "delta"]
    assert [n.id for n in db.get_nodes(domain="lexicon")] == ["gamma", "delta"]
    assert [n.id for n in db.get_nodes(type="note")] == ["alpha", "beta"]
    assert [n.id for n in db.get_nodes(domain="lexicon", type="concept")] == ["gamma", "delta"]
    assert [n.id for n in db.get_nodes(domain="persona", type="concept")] == []
    assert [n.id for n in db.get_nodes(limit=2)] == ["alpha", "beta"]
    assert [n.id for n in db.get_nodes(limit=2, offset=1)] == ["beta", "gamma"]
    assert [n.id for n in db.get_nodes(offset=3)] == ["delta"]  # offset without limit
    assert db.get_nodes(limit=0) == []
    assert [n.id for n in db.get_nodes_by_type("concept")] == ["gamma", "delta"]


def test_get_nodes_binds_filters(populated: ResonanceDB) -> None:
    assert populated.get_nodes(domain="x' OR '1'='1") == []
    assert populated.get_nodes(type="note' --") == []


def test_get_nodes_rejects_bad_arguments(populated: ResonanceDB) -> None:
    with pytest.raises(ValueError, match="limit"):
        populated.get_nodes(limit=-1)
    with pytest.raises(ValueError, match="offset"):
        populated.get_nodes(offset=-5)
    with pytest.raises(TypeError, match="limit"):
        populated.get_nodes(limit="10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="domain"):
        populated.get_nodes(domain=3)  # type: ignore[arg-type]


def test_exclude_content_never_reads_the_embedding(populated: ResonanceDB) -> None:
    db = populated
    full = db.get_nodes()
    light = db.get_nodes(exclude_content=True)
    assert [n.embedding for n in light] == [None] * 4
    assert [(n.id, n.label, n.meta, n.summary) for n in light] == [
        (n.id, n.label, n.meta, n.summary) for n in full]
    # a BLOB that is not whole float32 values breaks full reads but not light ones
    db.raw.execute("UPDATE nodes SET embedding = x'010203' WHERE id = 'beta'")
    with pytest.raises(DatabaseError, match="beta"):
        db.get_nodes()
    assert len(db.get_nodes(exclude_content=True)) == 4


def test_get_node_hash(populated: ResonanceDB) -> None:
    assert populated.get_node_hash("alpha") == "h-alpha"
    assert populated.get_node_hash("beta") is None
    assert populated.get_node_hash("missing") is None


def test_get_lexicon(populated: ResonanceDB) -> None:
    lexicon = populated.get_lexicon()
    assert lexicon == [
        {"id": "gamma", "label": "Gamma", "aliases": ["g", "γ"], "definition": "A third thing.",
         "semantic_tokens": 4},
        {"id": "delta", "label": "Delta", "aliases": [], "definition": None},
    ]


def test_update_node_meta(populated: ResonanceDB) -> None:
    db = populated
    assert db.update_node_meta("alpha", {"tags": ["b"], "n": 2})
    assert db.get_node("alpha").meta == {"tags": ["b"], "n": 2}
    assert db.get_node("alpha").embedding is not None  # nothing else touched
    assert db.update_node_meta("alpha", {})
    assert db.get_node("alpha").meta == {}
    assert not db.update_node_meta("missing", {"a": 1})
    assert db.get_node("missing") is None


def test_delete_node_takes_its_edges(populated: ResonanceDB) -> None:
    db = populated
    assert db.delete_node("alpha")
    assert db.get_node("alpha") is None
    assert db.get_edges("alpha") == []
    assert db.get_incoming_edges("alpha") == []
    assert db.get_incoming_edges("beta") == []
    assert db.get_edges("gamma") == []
    assert db.get_stats().edges == 0
    assert not db.delete_node("alpha")


# -- edges ------------------------------------------------------------------------------------------


def test_insert_edge_ignores_duplicates(db: ResonanceDB) -> None:
    assert db.insert_edge("a", "b")
    assert not db.insert_edge("a", "b")
    assert db.insert_edge("a", "b", "cites")
    assert db.get_edges("a") == [Edge("a", "b", "related_to"), Edge("a", "b", "cites")]


def test_edges_in_each_direction(populated: ResonanceDB) -> None:
    db = populated
    assert {(e.target, e.type) for e in db.get_edges("alpha")} == {
        ("beta", "related_to"), ("gamma", "cites")}
    assert db.get_incoming_edges("alpha") == [Edge("gamma", "alpha", "related_to")]
    assert db.get_edges("alpha", direction="incoming") == db.get_incoming_edges("alpha")
    assert len(db.get_edges("alpha", direction="both")) == 3
    db.insert_edge("alpha", "alpha", "self")
    both = db.get_edges("alpha", direction="both")
    assert both.count(Edge("alpha", "alpha", "self")) == 1  # a self-loop once
    with pytest.raises(ValueError, match="direction"):
        db.get_edges("alpha", direction="sideways")


def test_insert_semantic_edge_upserts(db: ResonanceDB) -> None:
    db.insert_semantic_edge("a", "b", "supports", 0.4, 0.7, "doc-1")
    assert db.get_edges("a") == [Edge("a", "b", "supports", 0.4, 0.7, "doc-1")]
    db.insert_semantic_edge("a", "b", "supports", confidence=0.9)
    assert db.get_edges("a") == [Edge("a", "b", "supports", 0.9, 1.0, None)]
    db.insert_edge("a", "b", "supports")  # ignored: the semantic edge stays
    assert db.get_edges("a")[0].confidence == 0.9
    db.insert_semantic_edge("a", "c", "supports", np.float32(0.5), 1)
    assert db.get_edges("a")[1] == Edge("a", "c", "supports", 0.5, 1.0, None)


# -- stats ------------------------------------------------------------------------------------------


def test_get_stats(populated: ResonanceDB) -> None:
    stats = populated.get_stats()
    assert isinstance(stats, DatabaseStats)
    assert (stats.nodes, stats.edges, stats.vectors, stats.semantic_tokens) == (4, 3, 2, 1)
    assert stats["nodes"] == 4
    assert stats.embeddings == 2
    assert stats.to_dict()["semantic_tokens"] == 1
    (pages,) = populated.raw.execute("PRAGMA page_count")[0]
    (page_size,) = populated.raw.execute("PRAGMA page_size")[0]
    wal = Path(f"{populated.path}-wal")
    assert stats.db_size_bytes == pages * page_size + (wal.stat().st_size if wal.exists() else 0)
    assert stats.db_size_mb == pytest.approx(stats.db_size_bytes / 2**20)


def test_stats_of_an_empty_database(db: ResonanceDB) -> None:
    stats = db.get_stats()
    assert (stats.nodes, stats.edges, stats.vectors, stats.semantic_tokens) == (0, 0, 0, 0)
    assert stats.db_size_bytes > 0


def test_checkpoint_truncates_the_wal(populated: ResonanceDB) -> None:
    wal = Path(f"{populated.path}-wal")
    assert wal.stat().st_size > 0
    log_frames, checkpointed = populated.checkpoint()
    assert log_frames == checkpointed == 0  # TRUNCATE: the log is emptied
    assert wal.stat().st_size == 0
    assert populated.get_node("alpha") is not None


# -- embedding dimension ----------------------------------------------------------------------------


def test_dimension_is_recorded_on_first_write(db: ResonanceDB) -> None:
    db.insert_node(Node("a", "note"))
    assert db.dimensions is None
    db.insert_node(Node("b", "note", embedding=vec(1, 5)))
    assert db.dimensions == 5
    assert db.raw.execute("SELECT value FROM amalfa_meta WHERE key = 'embedding_dimensions'") == [(5,)]
    with ResonanceDB(db.path) as again:
        assert again.dimensions == 5


def test_dimension_recorded_by_a_bulk_insert(db: ResonanceDB) -> None:
    db.insert_nodes([Node("a", "note"), Node("b", "note", embedding=vec(1, 6))])
    assert db.dimensions == 6
    with ResonanceDB(db.path) as again:
        assert again.dimensions == 6


def test_dimensions_option_records_and_enforces(db_path: Path) -> None:
    with ResonanceDB.create(db_path, dimensions=4) as db:
        assert db.dimensions == 4
        with pytest.raises(ValueError, match="dimension 5"):
            db.insert_node(Node("a", "note", embedding=vec(1, 5)))
    with ResonanceDB(db_path) as db:
        assert db.dimensions == 4
    with pytest.raises(ValueError, match="4-d"):
        ResonanceDB(db_path, dimensions=384)
    with pytest.raises(ValueError, match="dimensions"):
        ResonanceDB(db_path, dimensions=0)


def test_two_connections_cannot_record_different_dimensions(db_path: Path) -> None:
    with ResonanceDB.create(db_path) as first, ResonanceDB(db_path) as second:
        first.insert_node(Node("a", "note", embedding=vec(1, 4)))
        before = dump(db_path)
        with pytest.raises(ValueError, match="4-d"):
            second.insert_node(Node("b", "note", embedding=vec(1, 3)))
        with pytest.raises(ValueError, match="4-d"):
            second.insert_nodes([Node("c", "note", embedding=vec(1, 3))])
        assert dump(db_path) == before


def test_record_dimensions(db: ResonanceDB) -> None:
    db.record_dimensions(12)
    assert db.dimensions == 12
    db.record_dimensions(12)
    with pytest.raises(ValueError, match="12-d"):
        db.record_dimensions(13)
    with pytest.raises(ValueError, match="positive"):
        db.record_dimensions(0)


# -- bad input leaves the database unchanged --------------------------------------------------------

BAD_NODES = [
    pytest.param(Node("", "note"), ValueError, "id", id="empty id"),
    pytest.param(Node(5, "note"), ValueError, "id", id="int id"),  # type: ignore[arg-type]
    pytest.param(Node(None, "note"), ValueError, "id", id="None id"),  # type: ignore[arg-type]
    pytest.param(Node("x", ""), ValueError, "type", id="empty type"),
    pytest.param(Node("x", None), TypeError, "type", id="None type"),  # type: ignore[arg-type]
    pytest.param(Node("x", "note", label=3), TypeError, "label", id="int label"),  # type: ignore[arg-type]
    pytest.param(Node("x", "note", summary=b"s"), TypeError, "summary", id="bytes summary"),  # type: ignore[arg-type]
    pytest.param(Node("x", "note", hash=1), TypeError, "hash", id="int hash"),  # type: ignore[arg-type]
    pytest.param(Node("x", "note", date=20240101), TypeError, "date", id="int date"),  # type: ignore[arg-type]
    pytest.param(Node("x", "note", meta={"f": object()}), TypeError, "meta", id="object in meta"),
    pytest.param(Node("x", "note", meta={"f": float("nan")}), TypeError, "meta", id="NaN in meta"),
    pytest.param(Node("x", "note", meta=["a"]), TypeError, "meta", id="list meta"),  # type: ignore[arg-type]
    pytest.param(Node("x", "note", embedding=np.ones((2, DIM), np.float32)), ValueError,
                 "1-D", id="2-D embedding"),
    pytest.param(Node("x", "note", embedding=np.float32(1.0)), ValueError, "1-D",
                 id="scalar embedding"),
    pytest.param(Node("x", "note", embedding=["a"] * DIM), TypeError, "numbers",
                 id="text embedding"),
    pytest.param(Node("x", "note", embedding=[[1.0], [1.0, 2.0]]), ValueError, "embedding",
                 id="ragged embedding"),
    pytest.param(Node("x", "note", embedding=np.ones(DIM, np.complex64)), TypeError, "numbers",
                 id="complex embedding"),
    pytest.param(Node("x", "note", embedding=np.zeros(0, np.float32)), ValueError, "empty",
                 id="empty embedding"),
    pytest.param(Node("x", "note", embedding=np.ones(DIM + 1, np.float32)), ValueError,
                 "dimension", id="wrong dimension"),
    pytest.param(Node("x", "note", embedding=np.full(DIM, np.nan, np.float32)), ValueError,
                 "NaN", id="NaN embedding"),
    pytest.param(Node("x", "note", embedding=np.full(DIM, np.inf)), ValueError, "inf",
                 id="inf embedding"),
    pytest.param(Node("x", "note", embedding=np.full(DIM, 1e300)), ValueError, "finite",
                 id="float64 beyond float32"),
]


@pytest.fixture
def recorded(db: ResonanceDB) -> ResonanceDB:
    db.insert_node(Node("existing", "note", "Existing", embedding=vec(0), meta={"keep": True}))
    db.insert_edge("existing", "other")
    return db


@pytest.mark.parametrize(("node", "error", "field"), BAD_NODES)
def test_bad_node_is_rejected_and_nothing_is_written(
        recorded: ResonanceDB, node: Node, error: type[Exception], field: str) -> None:
    before = dump(recorded.path)
    with pytest.raises(error, match=field):
        recorded.insert_node(node)
    assert dump(recorded.path) == before


@pytest.mark.parametrize(("node", "error", "field"), BAD_NODES)
def test_bad_node_in_a_bulk_insert_rolls_back_the_whole_call(
        recorded: ResonanceDB, node: Node, error: type[Exception], field: str) -> None:
    before = dump(recorded.path)
    good = [Node(f"good{i}", "note", embedding=vec(i)) for i in range(600)]  # past one chunk
    with pytest.raises(error, match=field):
        recorded.insert_nodes([*good, node, Node("after", "note")])
    assert dump(recorded.path) == before
    assert recorded.get_node("good1") is None


def test_bulk_error_names_the_bad_node(recorded: ResonanceDB) -> None:
    nodes = [Node(f"n{i}", "note", embedding=vec(i)) for i in range(5)]
    nodes[3].embedding = np.full(DIM, np.nan, np.float32)
    with pytest.raises(ValueError, match="'n3'.*NaN"):
        recorded.insert_nodes(nodes)


def test_non_node_is_rejected(recorded: ResonanceDB) -> None:
    before = dump(recorded.path)
    with pytest.raises(TypeError, match="Node"):
        recorded.insert_node({"id": "x", "type": "note"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Node"):
        recorded.insert_nodes([Node("y", "note"), "z"])  # type: ignore[list-item]
    assert dump(recorded.path) == before


@pytest.mark.parametrize(("call", "error", "field"), [
    pytest.param(lambda db: db.update_node_meta("existing", {"x": {1, 2}}), TypeError, "meta",
                 id="meta with a set"),
    pytest.param(lambda db: db.update_node_meta("existing", "text"), TypeError, "meta",
                 id="meta not a dict"),
    pytest.param(lambda db: db.update_node_meta("", {}), ValueError, "id", id="meta empty id"),
    pytest.param(lambda db: db.update_node_date("existing", 5), TypeError, "date",
                 id="int date"),
    pytest.param(lambda db: db.update_node_date(None, "x"), ValueError, "id", id="date None id"),
    pytest.param(lambda db: db.delete_node(""), ValueError, "id", id="delete empty id"),
    pytest.param(lambda db: db.insert_edge("", "b"), ValueError, "source", id="edge source"),
    pytest.param(lambda db: db.insert_edge("a", 7), ValueError, "target", id="edge target"),
    pytest.param(lambda db: db.insert_edge("a", "b", ""), ValueError, "type", id="edge type"),
    pytest.param(lambda db: db.insert_semantic_edge("a", "b", "t", "high"), TypeError,
                 "confidence", id="confidence text"),
    pytest.param(lambda db: db.insert_semantic_edge("a", "b", "t", 1.0, float("nan")),
                 ValueError, "veracity", id="veracity NaN"),
    pytest.param(lambda db: db.insert_semantic_edge("a", "b", "t", True), TypeError,
                 "confidence", id="confidence bool"),
    pytest.param(lambda db: db.insert_semantic_edge("a", "b", "t", 1, 1, 5), TypeError,
                 "context_source", id="context_source int"),
])
def test_bad_arguments_leave_the_database_unchanged(
        recorded: ResonanceDB, call, error: type[Exception], field: str) -> None:
    before = dump(recorded.path)
    with pytest.raises(error, match=field):
        call(recorded)
    assert dump(recorded.path) == before


def test_stored_meta_that_is_not_json_is_a_clear_error(db: ResonanceDB) -> None:
    db.insert_node(Node("a", "note"))
    db.raw.execute("UPDATE nodes SET meta = '{broken' WHERE id = 'a'")
    with pytest.raises(DatabaseError, match="'a'.*meta"):
        db.get_node("a")


# -- generate_id ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "expected"), [
    ("./Docs/My File.md", "docs-my-file"),
    ("/abs/Path.ts", "abs-path"),
    ("notes/a.js", "notes-a"),
    ("data/config.json", "data-config"),
    ("README.MD", "readme-md"),  # the extension match is case-sensitive
    ("notes.md.md", "notes-md"),  # one extension only
    ("x.mdx", "x-mdx"),
    ("a//b--c.json", "a-b-c"),
    ("../up/x.js", "up-x"),
    ("--A--", "a"),
    ("café notes.md", "caf-notes"),
    ("docs/2024/Q1 Report (final).md", "docs-2024-q1-report-final"),
    ("a.md\n", "a-md"),  # JavaScript's $ is the very end, not before a final newline
    ("İstanbul.md", "i-stanbul"),  # lowercases to i + combining dot, as in JavaScript
    ("\u212aelvin", "kelvin"),  # KELVIN SIGN lowercases to ASCII k in both languages
    ("already-an-id", "already-an-id"),
    (Path("docs/Sub Dir/B.md"), "docs-sub-dir-b"),
])
def test_generate_id_follows_the_original_rules(path, expected: str) -> None:
    assert generate_id(path) == expected
    assert generate_id(expected) == expected  # ids are fixed points


@pytest.mark.parametrize("path", ["", "./", "/", ".md", "---", "./.json", "é"])
def test_generate_id_refuses_an_empty_result(path: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        generate_id(path)


@pytest.mark.parametrize("path", [5, None, b"docs/a.md", ["a"]])
def test_generate_id_refuses_non_strings(path) -> None:
    with pytest.raises(ValueError, match="string"):
        generate_id(path)


# -- the file in other tools ------------------------------------------------------------------------


def test_the_file_opens_in_the_stdlib_sqlite3_module(populated: ResonanceDB) -> None:
    populated.insert_semantic_edge("beta", "delta", "supports", 0.5)
    path = populated.path
    populated.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT count(*) FROM nodes").fetchone() == (4,)
        blob, title = conn.execute("SELECT embedding, title FROM nodes WHERE id = 'alpha'").fetchone()
        assert title == "Alpha"
        assert np.linalg.norm(np.frombuffer(blob, np.float32)) == pytest.approx(1.0, abs=1e-6)
        assert conn.execute("SELECT confidence FROM edges WHERE type = 'supports'").fetchone() == (0.5,)
    finally:
        conn.close()


def test_the_file_opens_in_the_sqlite3_shell(populated: ResonanceDB) -> None:
    shell = shutil.which("sqlite3")
    if shell is None:
        pytest.skip("the sqlite3 command-line shell is not installed (apt-get install sqlite3)")
    path = populated.path
    populated.close()
    result = subprocess.run(
        [shell, str(path), "PRAGMA integrity_check;", "SELECT count(*) FROM nodes;",
         "SELECT id FROM nodes WHERE domain = 'lexicon' ORDER BY id;"],
        capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["ok", "4", "delta", "gamma"]

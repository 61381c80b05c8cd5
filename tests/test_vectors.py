"""VectorEngine on a real ResonanceDB: cached and direct scans, refresh, hydration, bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from amalfa import Node, ResonanceDB, VectorEngine, to_fafcas

DIM = 32
RNG = np.random.default_rng(11)


def unit(n, d=DIM):
    return to_fafcas(RNG.standard_normal((n, d)).astype(np.float32))


@pytest.fixture
def graph(tmp_path):
    db = ResonanceDB.create(tmp_path / "g.db")
    vectors = unit(200)
    db.insert_nodes(
        Node(id=f"n{i:03d}", type="note" if i % 2 else "document", label=f"Title {i}",
             domain="persona" if i % 3 == 0 else "knowledge", embedding=vectors[i],
             meta={"source": f"docs/n{i}.md"}, date="2026-11-27")
        for i in range(200))
    yield db, vectors
    db.close()


def reference(vectors, query, k, keep=None):
    scores = vectors.astype(np.float64) @ query.astype(np.float64)
    order = [i for i in np.argsort(-scores, kind="stable") if keep is None or keep(i)]
    return [f"n{i:03d}" for i in order[:k]], scores[order[:k]]


@pytest.mark.parametrize("use_cache", [True, False])
def test_search_matches_float64_reference(graph, use_cache):
    db, vectors = graph
    engine = VectorEngine(db)
    query = unit(1)[0]
    results = engine.search_by_vector(query, limit=10, threshold=-1.0, use_cache=use_cache)
    ids, scores = reference(vectors, query, 10)
    assert [r.id for r in results] == ids
    np.testing.assert_allclose([r.score for r in results], scores, atol=1e-5)
    top = results[0]
    assert top.title == f"Title {int(top.id[1:])}"
    assert top.content == f"[Hollow Node: docs/{top.id[0]}{int(top.id[1:])}.md]"
    assert top.date == "2026-11-27" and top.meta["source"].startswith("docs/")


def test_filters_are_bound_and_exact(graph):
    db, vectors = graph
    engine = VectorEngine(db)
    query = vectors[9]
    results = engine.search_by_vector(query, limit=200, domain="persona", type="note",
                                      threshold=-1.0)
    keep = lambda i: i % 3 == 0 and i % 2 == 1  # noqa: E731
    assert [r.id for r in results] == reference(vectors, query, 200, keep)[0]
    assert results[0].id == "n009"
    hostile = "knowledge' OR '1'='1"
    assert engine.search_by_vector(query, domain=hostile, threshold=-1.0) == []


def test_threshold_zero_query_and_limit(graph):
    db, vectors = graph
    engine = VectorEngine(db)
    assert engine.search_by_vector(np.zeros(DIM), limit=5) == []
    hits = engine.search_by_vector(vectors[0], limit=200, threshold=0.2)
    assert hits and all(h.score > 0.2 for h in hits)
    assert len(engine.search_by_vector(vectors[0], limit=3)) <= 3


@pytest.mark.parametrize("bad, error, message", [
    (np.ones(DIM + 1), ValueError, f"dimension {DIM + 1}; the index holds {DIM}-d"),
    (np.full(DIM, np.nan), ValueError, "NaN"),
    (np.full(DIM, np.inf), ValueError, "inf"),
    (np.ones((2, DIM)), ValueError, "1-D"),
])
def test_bad_queries_are_clear_errors(graph, bad, error, message):
    db, _ = graph
    with pytest.raises(error, match=message):
        VectorEngine(db).search_by_vector(bad)


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_below_one_is_an_error(graph, limit):
    db, vectors = graph
    with pytest.raises(ValueError, match="limit must be at least 1"):
        VectorEngine(db).search_by_vector(vectors[0], limit=limit)


def test_empty_database_returns_empty_list(tmp_path):
    db = ResonanceDB.create(tmp_path / "empty.db")
    engine = VectorEngine(db)
    assert engine.search_by_vector(np.ones(384)) == []
    db.insert_node(Node(id="no-vector", type="note", label="x"))
    assert engine.search_by_vector(np.ones(384)) == []
    db.close()


def test_ties_break_by_insertion_order(tmp_path):
    db = ResonanceDB.create(tmp_path / "ties.db")
    v = np.zeros(8, dtype=np.float32)
    v[0] = 1
    for name in ["c", "a", "b"]:
        db.insert_node(Node(id=name, type="note", label=name, embedding=v))
    for use_cache in (True, False):
        hits = VectorEngine(db).search_by_vector(v, limit=3, use_cache=use_cache)
        assert [h.id for h in hits] == ["c", "a", "b"]
    db.close()


def test_cache_refreshes_after_own_writes(graph):
    db, vectors = graph
    engine = VectorEngine(db)
    target = unit(1)[0]
    assert engine.search_by_vector(target, limit=1)[0].score < 0.99
    engine.save_embedding("n050", target)
    hit = engine.search_by_vector(target, limit=1)[0]
    assert hit.id == "n050" and hit.score == pytest.approx(1.0, abs=1e-6)
    db.delete_node("n050")
    assert engine.search_by_vector(target, limit=1)[0].id != "n050"


def test_cache_refreshes_after_another_connection_writes(graph):
    db, _ = graph
    engine = VectorEngine(db)
    target = unit(1)[0]
    engine.search_by_vector(target)  # load the cache
    other = ResonanceDB(db.path)
    other.insert_node(Node(id="fresh", type="note", label="Fresh", embedding=target))
    other.close()
    assert engine.search_by_vector(target, limit=1)[0].id == "fresh"


def test_cache_refreshes_after_another_process_writes(graph):
    db, _ = graph
    engine = VectorEngine(db)
    target = unit(1)[0]
    engine.search_by_vector(target)
    script = textwrap.dedent(f"""
        import numpy as np
        from amalfa import ResonanceDB, Node
        db = ResonanceDB({str(db.path)!r})
        db.insert_node(Node(id="from-process", type="note", label="P",
                            embedding=np.array({target.tolist()!r}, dtype=np.float32)))
        db.close()
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    assert engine.search_by_vector(target, limit=1)[0].id == "from-process"


def test_wrong_length_blobs_from_another_client_are_skipped(graph):
    db, vectors = graph
    # another client, in another process (two SQLite copies must not share a file in one process)
    script = textwrap.dedent(f"""
        import sqlite3
        other = sqlite3.connect({str(db.path)!r})
        other.execute("UPDATE nodes SET embedding = x'00010203' WHERE id = 'n001'")
        other.execute("UPDATE nodes SET embedding = 'not a blob' WHERE id = 'n002'")
        other.commit()
        other.close()
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    engine = VectorEngine(db)
    for use_cache in (True, False):
        hits = engine.search_by_vector(vectors[1], limit=200, threshold=-1.0, use_cache=use_cache)
        assert {"n001", "n002"}.isdisjoint(h.id for h in hits)
        assert len(hits) == 198 and engine.last_skipped == 2


def test_batch_search_matches_single_searches(graph):
    db, vectors = graph
    engine = VectorEngine(db)
    queries = unit(5)
    batch = engine.search_batch(queries, limit=7, threshold=-1.0)
    for q, hits in zip(queries, batch):
        assert [h.id for h in hits] == [h.id for h in engine.search_by_vector(q, 7, threshold=-1.0)]


def test_save_embedding_validates_and_writes_nothing_on_error(graph):
    db, vectors = graph
    engine = VectorEngine(db)
    before = db.get_node("n010").embedding.copy()
    with pytest.raises(ValueError, match="dimension"):
        engine.save_embedding("n010", np.ones(DIM + 2))
    with pytest.raises(ValueError, match="NaN"):
        engine.save_embedding("n010", np.full(DIM, np.nan))
    with pytest.raises(KeyError, match="nope"):
        engine.save_embedding("nope", np.ones(DIM))
    np.testing.assert_array_equal(db.get_node("n010").embedding, before)
    engine.save_embedding("n010", np.arange(DIM, dtype=np.float64))
    stored = db.get_node("n010").embedding
    assert stored.dtype == np.float32 and abs(np.linalg.norm(stored) - 1) < 1e-6


def test_matrix_view_is_read_only(graph):
    db, _ = graph
    m = VectorEngine(db).matrix
    assert m.shape == (200, DIM)
    with pytest.raises(ValueError):
        m[0, 0] = 2.0

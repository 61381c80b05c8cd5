"""The vector change log (migration 0004) and VectorEngine's incremental refresh.

Every writer is real: amalfa in this process, amalfa and the stdlib ``sqlite3`` module in other
processes (two SQLite libraries never open one file in one process). Every query after a write is
compared with a brute-force reference computed from what is committed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from amalfa import Node, ResonanceDB, VectorEngine, to_fafcas

DIM = 16


def unit(rng, n, d=DIM):
    return to_fafcas(rng.standard_normal((n, d)).astype(np.float32))


@pytest.fixture
def graph(tmp_path):
    rng = np.random.default_rng(5)
    db = ResonanceDB.create(tmp_path / "g.db", history=False)
    vectors = unit(rng, 300)
    db.insert_nodes(Node(id=f"n{i}", type="note", label=f"T{i}", embedding=vectors[i])
                    for i in range(300))
    yield db
    db.close()


def run_other(script: str) -> None:
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True)


def committed(db) -> tuple[np.ndarray, np.ndarray]:
    """(rowids, matrix) of every node with a well-formed embedding, read row by row."""
    rows = db.raw.execute("SELECT rowid, embedding FROM nodes WHERE embedding IS NOT NULL "
                          "ORDER BY rowid")
    rows = [(r, b) for r, b in rows if isinstance(b, bytes) and len(b) == 4 * DIM]
    ids = np.array([r for r, _ in rows], np.int64)
    mat = np.frombuffer(b"".join(b for _, b in rows), np.float32).reshape(-1, DIM)
    return ids, mat


def assert_matches_reference(db, engine, rng, queries=5, k=10):
    ids, mat = committed(db)
    for query in unit(rng, queries):
        rowids, scores = engine.top_k(query, k)
        exact = mat.astype(np.float64) @ query.astype(np.float64)
        order = np.lexsort((ids, -exact))[:k]
        assert rowids.tolist() == ids[order].tolist()
        np.testing.assert_allclose(scores, exact[order], atol=1e-5)
    assert sorted(engine.rowids.tolist()) == ids.tolist()


def log_rows(db, after=0):
    return db.raw.execute("SELECT source, row_id, deleted FROM vector_changes WHERE seq > ? "
                          "ORDER BY seq", (after,))


def head(db):
    return db.vector_log_position()[0]


def test_every_kind_of_write_by_a_foreign_client_is_logged(graph):
    db = graph
    (rowid5,) = db.raw.execute("SELECT rowid FROM nodes WHERE id = 'n5'")[0]
    (rowid6,) = db.raw.execute("SELECT rowid FROM nodes WHERE id = 'n6'")[0]
    (rowid7,) = db.raw.execute("SELECT rowid FROM nodes WHERE id = 'n7'")[0]
    start = head(db)
    blob = np.ones(DIM, np.float32).tobytes().hex()
    run_other(f"""
        import sqlite3
        c = sqlite3.connect({str(db.path)!r})
        c.execute("UPDATE nodes SET title = 'only a title' WHERE id = 'n1'")  # not logged
        c.execute("UPDATE nodes SET embedding = x'{blob}' WHERE id = 'n5'")
        c.execute("UPDATE nodes SET embedding = NULL WHERE id = 'n6'")
        c.execute("DELETE FROM nodes WHERE id = 'n7'")
        c.execute("INSERT INTO nodes (id, embedding) VALUES ('new', x'{blob}')")
        c.execute("INSERT INTO nodes (id) VALUES ('hollow')")  # no vector: not logged
        c.execute("INSERT OR REPLACE INTO nodes (id, embedding) VALUES ('n5', x'{blob}')")
        c.commit()
    """)
    rows = log_rows(db, start)
    (new,) = db.raw.execute("SELECT rowid FROM nodes WHERE id = 'new'")[0]
    (replaced,) = db.raw.execute("SELECT rowid FROM nodes WHERE id = 'n5'")[0]
    assert rows == [("nodes", rowid5, 0), ("nodes", rowid6, 1), ("nodes", rowid7, 1),
                    ("nodes", new, 0), ("nodes", rowid5, 1), ("nodes", replaced, 0)]
    assert replaced != rowid5  # REPLACE moved the row: the old rowid was logged as gone


def test_one_foreign_update_is_applied_without_a_reload(graph):
    db = graph
    rng = np.random.default_rng(1)
    engine = VectorEngine(db)
    target = unit(rng, 1)[0]
    engine.top_k(target, 1)
    assert engine.full_reloads == 1
    run_other(f"""
        import numpy as np
        from amalfa import ResonanceDB
        db = ResonanceDB({str(db.path)!r})
        from amalfa import VectorEngine
        VectorEngine(db).save_embedding("n42", np.array({target.tolist()!r}, np.float32))
        db.close()
    """)
    rowids, scores = engine.top_k(target, 1)
    (rowid42,) = db.raw.execute("SELECT rowid FROM nodes WHERE id = 'n42'")[0]
    assert rowids.tolist() == [rowid42] and scores[0] == pytest.approx(1.0, abs=1e-6)
    assert engine.full_reloads == 1 and engine.seq == head(db)
    assert_matches_reference(db, engine, rng)


def test_many_changes_reload_fully(graph):
    db = graph
    rng = np.random.default_rng(2)
    engine = VectorEngine(db)
    engine.refresh()
    vectors = unit(rng, 300)
    db.insert_nodes(Node(id=f"n{i}", type="note", label="x", embedding=vectors[i])
                    for i in range(300))
    assert engine.refresh() and engine.full_reloads == 2
    assert_matches_reference(db, engine, rng)


def test_interleaved_foreign_writers_never_leave_the_cache_stale(graph):
    """Random inserts, updates, deletes and NULLed embeddings from another process (stdlib
    sqlite3 and amalfa alternately), a query after every commit."""
    db = graph
    rng = np.random.default_rng(3)
    engine = VectorEngine(db)
    engine.refresh()
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        path, seed, use_stdlib = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
        rng = np.random.default_rng(seed)
        def vec():
            v = rng.standard_normal(%d).astype(np.float32)
            return (v / np.linalg.norm(v)).astype(np.float32).tobytes()
        if use_stdlib:
            import sqlite3
            conn = sqlite3.connect(path)
            run = lambda sql, p=(): conn.execute(sql, p).fetchall()
        else:
            from amalfa import ResonanceDB
            db = ResonanceDB(path, history=False)
            conn = db.raw
            conn.execute("BEGIN IMMEDIATE")
            run = lambda sql, p=(): conn.execute(sql, p)
        ids = [r[0] for r in run("SELECT id FROM nodes")]
        for _ in range(int(rng.integers(1, 12))):
            op = rng.integers(0, 4)
            pick = ids[int(rng.integers(0, len(ids)))]
            if op == 0:
                run("INSERT INTO nodes (id, embedding) VALUES (?, ?)",
                    ("w%%d" %% rng.integers(1 << 40), vec()))
            elif op == 1:
                run("UPDATE nodes SET embedding = ? WHERE id = ?", (vec(), pick))
            elif op == 2:
                run("DELETE FROM nodes WHERE id = ?", (pick,))
            else:
                run("UPDATE nodes SET embedding = NULL WHERE id = ?", (pick,))
        if use_stdlib:
            conn.commit()
        else:
            conn.execute("COMMIT")
            db.close()
    """ % DIM)
    for round_ in range(12):
        subprocess.run([sys.executable, "-c", script, str(db.path), str(round_),
                        str(round_ % 2)], check=True)
        assert_matches_reference(db, engine, rng, queries=3)
    assert engine.full_reloads == 1  # every round was applied incrementally


def test_own_writes_are_seen_and_a_rollback_is_undone(graph):
    db = graph
    rng = np.random.default_rng(4)
    engine = VectorEngine(db)
    target = unit(rng, 1)[0]
    (rowid9,) = db.raw.execute("SELECT rowid FROM nodes WHERE id = 'n9'")[0]
    with pytest.raises(RuntimeError):
        with db.transaction():
            engine.save_embedding("n9", target)
            assert engine.top_k(target, 1)[0].tolist() == [rowid9]  # uncommitted, our own
            db.delete_node("n10")
            engine.top_k(target, 1)
            raise RuntimeError("roll back")
    assert engine.top_k(target, 1)[0].tolist() != [rowid9]
    assert_matches_reference(db, engine, rng)
    with db.transaction():
        engine.save_embedding("n9", target)
        engine.top_k(target, 1)
    assert engine.top_k(target, 1)[0].tolist() == [rowid9]
    assert_matches_reference(db, engine, rng)


def test_reused_rowids_and_deletes_of_the_last_row(graph):
    db = graph
    rng = np.random.default_rng(6)
    engine = VectorEngine(db)
    engine.refresh()
    (last,) = db.raw.execute("SELECT max(rowid) FROM nodes")[0]
    (last_id,) = db.raw.execute("SELECT id FROM nodes WHERE rowid = ?", (last,))[0]
    db.delete_node(last_id)
    assert_matches_reference(db, engine, rng)
    v = unit(rng, 1)[0]
    db.insert_node(Node(id="again", type="note", label="x", embedding=v))  # gets `last` again
    assert db.raw.execute("SELECT rowid FROM nodes WHERE id = 'again'")[0][0] == last
    assert engine.top_k(v, 1)[0].tolist() == [last]
    db.raw.execute("INSERT INTO nodes (rowid, id, embedding) VALUES (-5, 'low', ?)",
                   (unit(rng, 1)[0],))  # below every rowid: appended out of order
    assert_matches_reference(db, engine, rng)
    db.raw.execute("UPDATE nodes SET embedding = ? WHERE id = 'low'", (v,))
    assert_matches_reference(db, engine, rng)
    assert engine.full_reloads == 1


def test_the_log_is_pruned_and_a_reader_behind_the_gap_reloads(graph):
    db = graph
    rng = np.random.default_rng(7)
    engine = VectorEngine(db)
    engine.refresh()
    db.raw.execute(f"""
        WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 70000)
        INSERT INTO nodes (id, embedding) SELECT 'bulk' || i, zeroblob({4 * DIM}) FROM c""")
    (kept,) = db.raw.execute("SELECT count(*) FROM vector_changes")[0]
    position, oldest = db.vector_log_position()
    assert kept <= 65536 + 4096 and oldest > 1 and position >= 70000
    assert engine.refresh() and engine.full_reloads == 2
    assert engine.matrix.shape == (70300, DIM)
    assert_matches_reference(db, engine, rng, queries=2)


def test_wrong_length_foreign_blobs_are_counted_until_fixed(graph):
    db = graph
    engine = VectorEngine(db)
    engine.refresh()
    run_other(f"""
        import sqlite3
        c = sqlite3.connect({str(db.path)!r})
        c.execute("UPDATE nodes SET embedding = x'0001' WHERE id IN ('n1', 'n2')")
        c.commit()
    """)
    engine.refresh()
    assert engine.last_skipped == 2 and len(engine.rowids) == 298
    db.insert_node(Node(id="n1", type="note", label="fixed", embedding=np.ones(DIM)))
    engine.refresh()
    assert engine.last_skipped == 1 and len(engine.rowids) == 299
    assert engine.full_reloads == 1


def test_passages_source_follows_its_own_table(graph):
    db = graph
    rng = np.random.default_rng(8)
    conn = db.raw
    if not db.has_vector_source("passages"):  # before migration 0005: a table of its shape
        conn.executescript("""
            CREATE TABLE passages (id INTEGER PRIMARY KEY, node_id TEXT NOT NULL, embedding BLOB);
            CREATE TRIGGER p_ins AFTER INSERT ON passages WHEN NEW.embedding IS NOT NULL BEGIN
              INSERT INTO vector_changes (source, row_id) VALUES ('passages', NEW.id); END;
            CREATE TRIGGER p_upd AFTER UPDATE ON passages BEGIN
              INSERT INTO vector_changes (source, row_id, deleted)
              VALUES ('passages', NEW.id, NEW.embedding IS NULL); END;
            CREATE TRIGGER p_del AFTER DELETE ON passages BEGIN
              INSERT INTO vector_changes (source, row_id, deleted) VALUES ('passages', OLD.id, 1);
            END;""")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(passages)")}
    extra = {c: 0 for c in ("ordinal", "line_start", "line_end")} | {"hash": "h"}
    extra = {c: v for c, v in extra.items() if c in columns}
    names = ", ".join(["id", "node_id", "embedding", *extra])
    marks = ", ".join("?" * (3 + len(extra)))

    def add(pid, vector):
        conn.execute(f"INSERT INTO passages ({names}) VALUES ({marks})",
                     (pid, "n1", vector, *extra.values()))

    vectors = unit(rng, 50)
    for i in range(50):
        add(i + 1, vectors[i])
    engine = VectorEngine(db, source="passages")
    rowids, scores = engine.top_k(vectors[7], 3)
    assert rowids[0] == 8 and scores[0] == pytest.approx(1.0, abs=1e-6)
    conn.execute("DELETE FROM passages WHERE id = 8")
    add(51, vectors[7])
    assert engine.top_k(vectors[7], 1)[0].tolist() == [51]
    assert engine.full_reloads == 1
    nodes = VectorEngine(db)  # the nodes engine is not disturbed by passage changes
    assert len(nodes.rowids) == 300
    with pytest.raises(ValueError, match="top_k"):
        engine.search_by_vector(vectors[0])
    with pytest.raises(ValueError, match="source must be one of"):
        VectorEngine(db, source="edges")


def test_a_database_without_the_passages_table_says_so(tmp_path):
    db = ResonanceDB.create(tmp_path / "p.db")
    try:
        if db.has_vector_source("passages"):
            pytest.skip("migration 0005 has landed: passages always exist")
        with pytest.raises(ValueError, match="no passages table"):
            VectorEngine(db, source="passages")
    finally:
        db.close()


def test_batch_of_many_queries_runs_as_gemm_and_matches_single_queries(graph):
    db = graph
    rng = np.random.default_rng(9)
    engine = VectorEngine(db)
    db.delete_node("n3")  # a tombstone in the matrix must never rank
    queries = unit(rng, 40)
    batch = engine.top_k_batch(queries, 7)
    for q, (rowids, scores) in zip(queries, batch):
        single_ids, single_scores = engine.top_k(q, 7)
        assert rowids.tolist() == single_ids.tolist()
        np.testing.assert_allclose(scores, single_scores, atol=1e-5)
    hits = engine.search_batch(queries[:20], limit=3, threshold=0.2)
    assert all(h.score > 0.2 for hits_ in hits for h in hits_)
    assert json.dumps([len(h) for h in hits])  # shapes are plain lists


# -- the snapshot a cold process starts from ------------------------------------------------------


def snapshot_engine(db):
    engine = VectorEngine(db)
    engine.snapshot_min_rows = 0  # the fixture is small; production writes from 10k rows
    return engine


def reopen(path):
    db = ResonanceDB(path, history=False)
    return db, snapshot_engine(db)


def cold_start(path, rng):
    """Open ``path`` afresh, check a query against the reference: (snapshot loads, reloads)."""
    other, cold = reopen(path)
    try:
        assert_matches_reference(other, cold, rng)
        return cold.snapshot_loads, cold.full_reloads
    finally:
        other.close()


def test_a_cold_engine_starts_from_the_snapshot_and_catches_up_from_the_log(graph):
    db = graph
    rng = np.random.default_rng(10)
    first = snapshot_engine(db)
    first.refresh()
    assert first.snapshot_file.exists() and first.full_reloads == 1
    db.insert_node(Node(id="after", type="note", label="x", embedding=unit(rng, 1)[0]))
    db.delete_node("n4")
    assert cold_start(db.path, rng) == (1, 0)


def test_a_snapshot_of_a_replaced_database_is_rejected(graph, tmp_path):
    db = graph
    rng = np.random.default_rng(11)
    snapshot_engine(db).refresh()
    path = db.path
    db.close()
    stranger = ResonanceDB.create(tmp_path / "stranger.db", history=False)
    vectors = unit(rng, 300)  # the same shape, other vectors
    stranger.insert_nodes(Node(id=f"n{i}", type="note", label="s", embedding=vectors[i])
                          for i in range(300))
    stranger.close()
    path.unlink()
    (tmp_path / "stranger.db").rename(path)
    assert cold_start(path, rng) == (0, 1)  # rejected: rebuilt from SQLite
    assert cold_start(path, rng) == (1, 0)  # ... and the snapshot rewritten from what it read


def test_a_snapshot_newer_than_a_restored_copy_is_rejected(graph, tmp_path):
    db = graph
    rng = np.random.default_rng(12)
    db.raw.backup_to(tmp_path / "old-copy.db")
    vectors = unit(rng, 300)
    db.insert_nodes(Node(id=f"n{i}", type="note", label="x", embedding=vectors[i])
                    for i in range(300))
    snapshot_engine(db).refresh()
    path = db.path
    db.close()
    path.unlink()
    (tmp_path / "old-copy.db").rename(path)
    assert cold_start(path, rng) == (0, 1)  # rejected: rebuilt from SQLite
    assert cold_start(path, rng) == (1, 0)  # ... and the snapshot rewritten from what it read


def test_a_database_edited_behind_the_logs_back_while_closed_is_caught(graph):
    db = graph
    rng = np.random.default_rng(13)
    snapshot_engine(db).refresh()
    path = db.path
    db.close()
    vectors = unit(rng, 300)
    run_other(f"""
        import sqlite3
        c = sqlite3.connect({str(path)!r})
        c.execute("DROP TRIGGER nodes_vector_update")  # a writer that bypasses the log
        rows = c.execute("SELECT rowid FROM nodes ORDER BY rowid").fetchall()
        blobs = {[v.tobytes() for v in vectors]!r}
        for (rowid,), blob in zip(rows, blobs):
            c.execute("UPDATE nodes SET embedding = ? WHERE rowid = ?", (blob, rowid))
        c.commit()
    """)
    assert cold_start(path, rng) == (0, 1)  # rejected: rebuilt from SQLite
    assert cold_start(path, rng) == (1, 0)  # ... and the snapshot rewritten from what it read


def test_a_truncated_or_deleted_snapshot_is_only_a_missing_cache(graph):
    db = graph
    rng = np.random.default_rng(14)
    engine = snapshot_engine(db)
    engine.refresh()
    data = engine.snapshot_file.read_bytes()
    engine.snapshot_file.write_bytes(data[:-100])
    other, cold = reopen(db.path)
    try:
        assert_matches_reference(other, cold, rng)
        assert (cold.snapshot_loads, cold.full_reloads) == (0, 1)
        assert cold.snapshot_file.stat().st_size == len(data)  # rewritten whole
        cold.snapshot_file.unlink()
        fresh = snapshot_engine(other)
        assert_matches_reference(other, fresh, rng)
        assert (fresh.snapshot_loads, fresh.full_reloads) == (0, 1)
    finally:
        other.close()


# -- precision="int8" -----------------------------------------------------------------------------


def test_int8_scan_rescored_matches_fp32_on_real_minilm_vectors(tmp_path):
    """200 real MiniLM embeddings of real notes (tests/data/minilm): every one as a query,
    recall@10 of the int8 scan + exact rescoring against the exact fp32 scan."""
    from pathlib import Path

    real = np.load(Path(__file__).parent / "data" / "minilm" / "vectors_fp32.npy")
    db = ResonanceDB.create(tmp_path / "real.db", history=False)
    try:
        db.insert_nodes(Node(id=f"t{i}", type="note", label="x", embedding=v)
                        for i, v in enumerate(real))
        exact, quick = VectorEngine(db, precision="fp32"), VectorEngine(db, precision="int8")
        found = 0
        for query in real:
            want_ids, want_scores = exact.top_k(query, 10)
            got_ids, got_scores = quick.top_k(query, 10)
            found += len(set(want_ids.tolist()) & set(got_ids.tolist()))
            same = got_ids == want_ids
            np.testing.assert_array_equal(got_scores[same], want_scores[same])  # exact, not approx
        assert found / (10 * len(real)) >= 0.99
        # it follows writes like the fp32 cache: an update, a delete, an insert
        rng = np.random.default_rng(15)
        target = unit(rng, 1, d=384)[0]
        VectorEngine(db).save_embedding("t5", target)
        db.delete_node("t6")
        db.insert_node(Node(id="late", type="note", label="x", embedding=-target))
        ids, scores = quick.top_k(target, 3)
        assert ids.tolist() == exact.top_k(target, 3)[0].tolist()
        assert scores[0] == pytest.approx(1.0, abs=1e-6)
        (rowid6,) = db.raw.execute("SELECT count(*) FROM nodes WHERE id = 't6'")[0]
        assert rowid6 == 0 and quick.full_reloads == 1
        assert quick.top_k(-target, 1)[0].tolist() == exact.top_k(-target, 1)[0].tolist()
    finally:
        db.close()


def test_int8_threshold_and_bad_precision(graph):
    db = graph
    with pytest.raises(ValueError, match="precision must be"):
        VectorEngine(db, precision="fp16")
    engine = VectorEngine(db, precision="int8")
    rng = np.random.default_rng(16)
    q = unit(rng, 1)[0]
    ids, scores = engine.top_k(q, 50, threshold=0.3)
    assert (scores > 0.3).all()
    exact_ids, _ = VectorEngine(db, precision="fp32").top_k(q, 50, threshold=0.3)
    assert ids.tolist() == exact_ids.tolist()


def test_a_mapped_snapshot_takes_updates_privately_and_moves_out_to_grow(graph, monkeypatch):
    from amalfa import vector_snapshot

    monkeypatch.setattr(vector_snapshot, "MAP_MIN_BYTES", 0)  # map even this small matrix
    db = graph
    rng = np.random.default_rng(17)
    first = snapshot_engine(db)
    first.refresh()
    on_disk = first.snapshot_file.read_bytes()
    other, cold = reopen(db.path)
    try:
        cold.refresh()
        assert cold.snapshot_loads == 1 and not cold._matrix.flags.owndata  # mapped
        VectorEngine(db).save_embedding("n3", unit(rng, 1)[0])  # another connection writes
        db.delete_node("n4")
        assert_matches_reference(other, cold, rng)  # updated in place: private pages
        assert not cold._matrix.flags.owndata
        assert cold.snapshot_file.read_bytes() == on_disk  # never written back
        db.insert_nodes(Node(id=f"g{i}", type="note", label="g", embedding=v)
                        for i, v in enumerate(unit(rng, 40)))
        assert_matches_reference(other, cold, rng)  # grown: moved into its own memory
        assert cold._matrix.flags.owndata and cold.full_reloads == 0
    finally:
        other.close()


def test_a_cold_int8_engine_maps_the_stored_codes_and_never_reads_the_floats_to_scan(graph):
    """The snapshot carries the int8 codes: a cold int8 engine maps them (no quantising pass over
    the floats, whatever the size), updates them privately, and moves codes and floats out
    together to grow."""
    db = graph
    rng = np.random.default_rng(18)
    writer = VectorEngine(db, precision="fp32")  # an fp32 engine's snapshot carries codes too
    writer.snapshot_min_rows = 0
    writer.refresh()
    other, cold = reopen(db.path)
    try:
        cold.refresh()
        assert cold.precision == "int8" and cold.snapshot_loads == 1
        assert not cold._codes.flags.owndata and not cold._matrix.flags.owndata
        warm = VectorEngine(other, precision="int8", snapshot=False)
        warm.refresh()
        n = cold._n
        np.testing.assert_array_equal(cold._codes[:n], warm._codes[:n])  # the kernel's codes
        np.testing.assert_array_equal(cold._scales[:n], warm._scales[:n])
        VectorEngine(db).save_embedding("n3", unit(rng, 1)[0])
        db.delete_node("n4")
        assert_matches_reference(other, cold, rng)
        db.insert_nodes(Node(id=f"g{i}", type="note", label="g", embedding=v)
                        for i, v in enumerate(unit(rng, 40)))
        assert_matches_reference(other, cold, rng)
        assert cold._codes.flags.owndata and cold._scales.flags.owndata
        assert cold.full_reloads == 0
    finally:
        other.close()


def test_a_snapshot_whose_codes_disagree_with_its_floats_is_not_trusted(graph):
    db = graph
    rng = np.random.default_rng(19)
    first = snapshot_engine(db)
    first.refresh()
    data = bytearray(first.snapshot_file.read_bytes())
    n = first._n
    codes_at = len(data) - n * DIM
    data[codes_at:codes_at + DIM] = bytes((b ^ 0x55) for b in data[codes_at:codes_at + DIM])
    first.snapshot_file.write_bytes(bytes(data))  # sample slot 0's codes damaged
    other, cold = reopen(db.path)
    try:
        assert_matches_reference(other, cold, rng)
        assert (cold.snapshot_loads, cold.full_reloads) == (0, 1)
    finally:
        other.close()
    assert cold_start(db.path, rng) == (1, 0)  # the rejected file was rewritten whole


def test_a_format_1_snapshot_is_rebuilt_not_read(graph):
    import struct

    db = graph
    rng = np.random.default_rng(20)
    first = snapshot_engine(db)
    first.refresh()
    data = bytearray(first.snapshot_file.read_bytes())
    struct.pack_into("<I", data, 8, 1)  # the format field of the header
    first.snapshot_file.write_bytes(bytes(data))
    assert cold_start(db.path, rng) == (0, 1)
    assert cold_start(db.path, rng) == (1, 0)  # rewritten in today's format

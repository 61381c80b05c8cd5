"""The compiled binding: amalfa._core.connection on real database files."""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys
import threading
import weakref

import numpy as np
import pytest

import amalfa
from amalfa import errors
from amalfa._core.connection import Connection, compile_options, sqlite_version


@pytest.fixture
def conn(tmp_path):
    c = Connection(tmp_path / "t.db")
    c.executescript(
        "CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER, f REAL, b BLOB);"
        "CREATE TABLE child (pid TEXT REFERENCES t(id));"
    )
    yield c
    c.close()


def test_version_is_the_pinned_amalgamation_not_the_system_library():
    assert sqlite_version() == "3.50.4"
    assert amalfa.sqlite_version() == "3.50.4"
    options = compile_options()
    assert "DQS=0" in options and "THREADSAFE=1" in options
    assert "ENABLE_FTS5" in options and "OMIT_LOAD_EXTENSION" in options


def test_sqlite_symbols_do_not_leak_from_the_extension():
    import amalfa._core.connection as module

    out = subprocess.run(["nm", "-D", "--defined-only", module.__file__],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("nm is not available")
    exported = [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]
    assert not [name for name in exported if name.startswith("sqlite3")]


def test_coexists_with_stdlib_sqlite3_in_one_process(tmp_path):
    # Each library on its own file: two SQLite copies in one process do not share POSIX lock
    # state, so they must never open the same file at once (see docs/concepts/wal-and-pragmas.md).
    ours = Connection(tmp_path / "ours.db")
    theirs = sqlite3.connect(tmp_path / "theirs.db")
    ours.executescript("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
    theirs.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
    for i in range(100):
        ours.execute("INSERT INTO kv VALUES (?, ?)", (f"k{i}", "ours"))
        theirs.execute("INSERT INTO kv VALUES (?, ?)", (f"k{i}", "stdlib"))
    theirs.commit()
    assert ours.execute("SELECT sqlite_version()") == [("3.50.4",)]
    assert theirs.execute("SELECT sqlite_version()").fetchone()[0] == sqlite3.sqlite_version
    assert ours.execute("SELECT count(*), min(v) FROM kv") == [(100, "ours")]
    assert theirs.execute("SELECT count(*), min(v) FROM kv").fetchone() == (100, "stdlib")
    theirs.close()
    ours.close()


def test_file_written_by_amalfa_reads_in_the_stdlib_module(tmp_path):
    path = tmp_path / "shared.db"
    with Connection(path) as ours:
        ours.executescript("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB)")
        ours.execute("INSERT INTO kv VALUES (?, ?)", ("a", np.arange(3, dtype=np.float32)))
    theirs = sqlite3.connect(path)
    (blob,) = theirs.execute("SELECT v FROM kv").fetchone()
    assert np.frombuffer(blob, dtype=np.float32).tolist() == [0.0, 1.0, 2.0]
    assert theirs.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    theirs.close()


def test_bind_and_read_back_every_type(conn):
    conn.execute("INSERT INTO t VALUES (?, ?, ?, ?)", ("a", 2**62, 1.5, b"\x00\x01"))
    conn.execute("INSERT INTO t VALUES (:id, :n, :f, :b)", {"id": "b", "n": None, "f": None, "b": None})
    conn.execute("INSERT INTO t VALUES (?, ?, ?, ?)", ("c", True, np.float32(0.25), bytearray(b"xy")))
    assert conn.execute("SELECT * FROM t ORDER BY id") == [
        ("a", 2**62, 1.5, b"\x00\x01"),
        ("b", None, None, None),
        ("c", 1, 0.25, b"xy"),
    ]
    assert conn.execute("SELECT ?", ("héllo ☃",)) == [("héllo ☃",)]
    assert conn.execute("SELECT ?", (np.int32(-7),)) == [(-7,)]


def test_bound_array_stays_alive_until_the_statement_is_done(conn):
    vec = np.linspace(-1, 1, 384, dtype=np.float32)
    expected = vec.copy()
    stmt = conn.prepare("SELECT ?")
    stmt.bind((vec,))
    ref = weakref.ref(vec) if hasattr(vec, "__weakref__") else None
    del vec
    gc.collect()
    assert stmt.step()  # SQLite reads memory the statement keeps exported
    assert np.array_equal(np.frombuffer(stmt.column(0), dtype=np.float32), expected)
    stmt.reset()
    stmt.clear_bindings()
    gc.collect()
    if ref is not None:
        assert ref() is None  # and lets go of it afterwards


def test_numpy_array_binds_without_a_copy(conn):
    # SQLITE_STATIC binding: a change to the array after bind() and before the step is what gets
    # stored, which proves the bytes were not copied at bind time
    vec = np.zeros(4, dtype=np.float32)
    stmt = conn.prepare("INSERT INTO t (id, b) VALUES ('v', ?)")
    stmt.bind((vec,))
    vec[:] = [1, 2, 3, 4]
    assert not stmt.step()
    stored = conn.execute("SELECT b FROM t WHERE id = 'v'")[0][0]
    assert np.array_equal(np.frombuffer(stored, dtype=np.float32), [1, 2, 3, 4])


def test_non_contiguous_and_unbindable_values_are_clear_errors(conn):
    arr = np.zeros((4, 4), dtype=np.float32)[:, 1]
    with pytest.raises(ValueError, match="parameter 1.*C-contiguous"):
        conn.execute("SELECT ?", (arr,))
    with pytest.raises(TypeError, match="parameter 1: cannot bind dict"):
        conn.execute("SELECT ?", ({"a": 1},))
    with pytest.raises(OverflowError, match="64 bits"):
        conn.execute("SELECT ?", (2**70,))
    with pytest.raises(errors.RangeError, match="takes 2 parameter"):
        conn.execute("SELECT ?, ?", (1,))
    with pytest.raises(errors.RangeError, match="missing named parameter 'x'"):
        conn.execute("SELECT :x", {"y": 1})


def test_prepared_statement_cache_reuses_statements(conn):
    sql = "SELECT n FROM t WHERE id = ?"
    first = conn.prepare(sql)
    hits = conn.cache_hits
    assert conn.prepare(sql) is first
    assert conn.cache_hits == hits + 1
    conn.execute("INSERT INTO t (id, n) VALUES ('a', 1), ('b', 2)")
    assert [first.first((key,)) for key in "ab"] == [(1,), (2,)]


def test_an_active_cached_statement_is_not_handed_out_twice(conn):
    conn.execute("INSERT INTO t (id, n) VALUES ('a', 1), ('b', 2)")
    sql = "SELECT id FROM t ORDER BY id"
    outer = conn.prepare(sql)
    assert outer.step()
    inner = conn.prepare(sql)
    assert inner is not outer
    assert inner.execute() == [("a",), ("b",)]
    assert outer.row() == ("a",)  # the outer iteration was not disturbed
    assert outer.step() and outer.row() == ("b",)


def test_cache_evicts_the_oldest_statement(tmp_path):
    c = Connection(tmp_path / "c.db", cache_size=2)
    a = c.prepare("SELECT 1")
    c.prepare("SELECT 2")
    c.prepare("SELECT 3")  # evicts SELECT 1
    assert c.prepare("SELECT 1") is not a
    assert a.execute() == [(1,)]  # an evicted statement still works for its holder
    c.close()


def test_step_and_typed_columns(conn):
    conn.execute("INSERT INTO t VALUES ('a', 5, 2.5, x'0102')")
    stmt = conn.prepare("SELECT id, n, f, b, NULL FROM t")
    with pytest.raises(errors.MisuseError, match="call step"):
        stmt.column(0)
    assert stmt.step()
    assert stmt.columns == ["id", "n", "f", "b", "NULL"]
    assert [stmt.column_type(i) for i in range(5)] == [3, 1, 2, 4, 5]
    assert stmt.column_text(0) == "a"
    assert stmt.column_int(1) == 5
    assert stmt.column_double(2) == 2.5
    assert stmt.column_blob(3) == b"\x01\x02"
    assert stmt.column_blob(4) is None
    with pytest.raises(IndexError):
        stmt.column(5)
    assert not stmt.step()
    stmt.reset()
    assert list(stmt) == [("a", 5, 2.5, b"\x01\x02", None)]


def test_changes_rowid_and_transaction_state(conn):
    assert not conn.in_transaction
    conn.execute("BEGIN")
    assert conn.in_transaction
    conn.execute("INSERT INTO t (id) VALUES ('a')")
    assert conn.last_insert_rowid == 1
    conn.execute("INSERT INTO t (id) VALUES ('b')")
    assert conn.execute("UPDATE t SET n = 1") == []
    assert conn.changes == 2
    conn.execute("COMMIT")
    assert not conn.in_transaction
    assert conn.total_changes == 4
    assert conn.executemany("INSERT INTO t (id) VALUES (?)", [("c",), ("d",)]) == 2


def test_error_mapping_carries_codes_and_messages(conn, tmp_path):
    conn.execute("INSERT INTO t (id) VALUES ('a')")
    with pytest.raises(errors.ConstraintError) as info:
        conn.execute("INSERT INTO t (id) VALUES ('a')")
    assert info.value.result == 19 and info.value.extended_result == 1555
    assert "UNIQUE constraint failed: t.id" in str(info.value)
    assert isinstance(info.value, errors.DatabaseError)
    with pytest.raises(errors.ConstraintError, match="FOREIGN KEY"):
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("INSERT INTO child VALUES ('nope')")
    with pytest.raises(errors.DatabaseError, match="no such table: missing"):
        conn.execute("SELECT * FROM missing")
    with pytest.raises(errors.MisuseError, match="executescript"):
        conn.execute("SELECT 1; SELECT 2")
    with pytest.raises(errors.DatabaseError, match="syntax error"):
        conn.executescript("CREATE TABLE x (; ")
    with pytest.raises(errors.CantOpenError, match="missing-dir"):
        Connection(tmp_path / "missing-dir" / "x.db")
    with pytest.raises(errors.CantOpenError):
        Connection(tmp_path / "absent.db", create=False)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(errors.NotADatabaseError):
        Connection(junk).execute("SELECT * FROM sqlite_schema")


def test_readonly_connection_refuses_writes(tmp_path):
    path = tmp_path / "ro.db"
    Connection(path).executescript("CREATE TABLE t (x)")
    ro = Connection(path, readonly=True)
    assert ro.readonly
    with pytest.raises(errors.ReadOnlyError) as info:
        ro.execute("INSERT INTO t VALUES (1)")
    assert info.value.result == 8
    assert ro.execute("SELECT count(*) FROM t") == [(0,)]
    ro.close()


def test_use_after_close_is_an_error_not_a_crash(tmp_path):
    c = Connection(tmp_path / "x.db")
    stmt = c.prepare("SELECT 1")
    c.close()
    c.close()  # idempotent
    assert c.closed
    with pytest.raises(errors.ConnectionClosedError):
        c.execute("SELECT 1")
    with pytest.raises(errors.ConnectionClosedError):
        stmt.execute()
    with pytest.raises(errors.ConnectionClosedError):
        stmt.step()
    with pytest.raises(errors.ConnectionClosedError):
        _ = c.changes
    with pytest.raises(errors.ConnectionClosedError):
        with c:
            pass


def test_use_after_finalize_is_an_error(conn):
    stmt = conn.prepare("SELECT 1")
    stmt.finalize()
    assert stmt.finalized
    with pytest.raises(errors.StatementFinalizedError):
        stmt.execute()
    assert conn.prepare("SELECT 1") is not stmt  # the cache dropped it
    with pytest.raises(TypeError):
        from amalfa._core.connection import Statement

        Statement()


def test_connection_is_a_context_manager_and_is_collected(tmp_path):
    with Connection(tmp_path / "x.db") as c:
        c.prepare("SELECT 1").execute()
    assert c.closed
    ref = weakref.ref(Connection(tmp_path / "y.db"))
    gc.collect()
    assert ref() is None


def test_step_releases_the_gil(tmp_path):
    # A long recursive query runs in one thread while another thread keeps counting: if step()
    # held the GIL the counter could not advance while the query runs.
    c = Connection(tmp_path / "g.db")
    done = threading.Event()
    ticks = []

    def count():
        while not done.is_set():
            ticks.append(1)

    sql = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 3000000) "
           "SELECT count(*) FROM r")
    counter = threading.Thread(target=count)
    counter.start()
    before = len(ticks)
    assert c.execute(sql) == [(3000000,)]
    during = len(ticks) - before
    done.set()
    counter.join()
    c.close()
    assert during > 1000


def test_interrupt_from_another_thread(tmp_path):
    c = Connection(tmp_path / "i.db")
    sql = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"
    timer = threading.Timer(0.2, c.interrupt)
    timer.start()
    with pytest.raises(errors.InterruptError):
        c.execute(sql)
    timer.join()
    assert c.execute("SELECT 1") == [(1,)]
    c.close()


def test_checkpoint_and_backup(tmp_path):
    from amalfa import DatabaseFactory

    c = DatabaseFactory.connect(tmp_path / "w.db")
    c.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);")
    log, done = c.checkpoint("TRUNCATE")
    assert log == 0 and done == 0  # TRUNCATE leaves an empty log
    with pytest.raises(ValueError, match="checkpoint mode"):
        c.checkpoint("SOMETIMES")
    c.backup_to(tmp_path / "copy.db")
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
    copy.close()
    c.close()


def test_statement_cannot_be_rebound_while_another_thread_steps_it(tmp_path):
    c = Connection(tmp_path / "busy.db")
    stmt = c.prepare(
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 20000000) "
        "SELECT count(*) FROM r")
    errors_seen = []
    started = threading.Event()

    def run():
        started.set()
        with pytest.raises(errors.InterruptError):
            stmt.execute()

    worker = threading.Thread(target=run)
    worker.start()
    started.wait()
    for _ in range(2000):
        try:
            stmt.reset()
        except errors.MisuseError as exc:
            errors_seen.append(str(exc))
            break
    c.interrupt()
    worker.join()
    assert errors_seen and "in use by another thread" in errors_seen[0]


def test_main_module_imports_lazily():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, amalfa; print('numpy' in sys.modules)"],
        capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- issue 12: core safety ------------------------------------------------------------------------


def test_a_failing_bind_leaves_no_pointer_to_released_buffers(conn):
    """bind() used to drop the buffers it held before rebinding: when a later parameter failed,
    the earlier bindings still pointed (SQLITE_STATIC) at freed memory."""
    stmt = conn.prepare("SELECT ?, ?")
    stmt.bind((b"A" * 4096, bytearray(b"B" * 4096)))
    with pytest.raises(TypeError, match="parameter 2"):
        stmt.bind((b"C" * 4096, object()))
    gc.collect()
    for _ in range(50):  # reuse the freed memory
        bytearray(b"Z" * 4096)
    assert stmt.step()
    assert stmt.row() == (None, None)  # the failed bind cleared every parameter
    stmt.reset()
    stmt.bind((b"ok", b"fine"))
    assert stmt.execute((b"ok", b"fine")) == [(b"ok", b"fine")]


def test_an_error_message_is_the_failing_calls_own_under_threads(tmp_path):
    """The message was read after the GIL was taken back, when another thread could already
    have used the shared connection and replaced it with its own."""
    conn = Connection(tmp_path / "shared.db")
    wrong: list[str] = []

    def hammer(table: str) -> None:
        for _ in range(3000):
            try:
                conn.execute(f"SELECT * FROM {table}")
            except errors.DatabaseError as exc:
                if table not in str(exc):
                    wrong.append(str(exc))
            try:
                conn.execute(f"INSERT INTO {table} VALUES (1)")
            except errors.DatabaseError as exc:
                if table not in str(exc):
                    wrong.append(str(exc))

    threads = [threading.Thread(target=hammer, args=(f"missing_{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    conn.close()
    assert wrong == []


def test_sqlite_abort_is_not_an_interrupt(conn):
    """SQLITE_ABORT (here SQLITE_ABORT_ROLLBACK: a read cut off by a ROLLBACK that undid a schema
    change) used to map to InterruptError, which callers treat as 'someone asked us to stop'."""
    conn.execute("CREATE TABLE guarded (x)")
    conn.executemany("INSERT INTO guarded VALUES (?)", [(1,), (2,), (3,)])
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE scratch (y)")
    reading = conn.prepare_uncached("SELECT x FROM guarded")
    assert reading.step()
    conn.execute("ROLLBACK")
    with pytest.raises(errors.AbortError) as caught:
        reading.step()
    assert not isinstance(caught.value, errors.InterruptError)
    assert caught.value.result == 4 and caught.value.extended_result == 4 | (2 << 8)


def test_backup_onto_a_locked_target_raises_and_leaves_the_target_whole(tmp_path):
    source = Connection(tmp_path / "src.db")
    source.execute("CREATE TABLE t (x)")
    source.execute("INSERT INTO t VALUES (1)")
    target = tmp_path / "target.db"
    holder = Connection(target)
    holder.execute("CREATE TABLE keep (y)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(errors.BusyError, match="target.db"):
            source.backup_to(target)
    finally:
        holder.execute("COMMIT")
    assert holder.execute("SELECT name FROM sqlite_schema") == [("keep",)]
    holder.close()
    source.close()


def test_exception_table_maps_abort_and_nomem_to_their_own_classes():
    """The Python-side table agrees with the compiled core: code 4 (and its extended codes) is an
    AbortError, code 7 a NoMemError, and code 9 stays the interrupt."""
    assert type(errors.exception_for(4, "x")) is errors.AbortError
    assert type(errors.exception_for(4 | (2 << 8), "x")) is errors.AbortError  # ABORT_ROLLBACK
    assert isinstance(errors.exception_for(7, "x"), MemoryError)
    assert type(errors.exception_for(9, "x")) is errors.InterruptError

"""pytest-benchmark: the binding against the stdlib sqlite3 module (run: pytest benchmarks/bench_core.py).

The side-by-side table with ratios comes from benchmarks/compare_core.py.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from amalfa import DatabaseFactory

ROWS = 20_000
PRAGMAS = ("busy_timeout = 5000", "journal_mode = WAL", "synchronous = NORMAL", "mmap_size = 0",
           "temp_store = MEMORY", "foreign_keys = ON")
SCHEMA = "CREATE TABLE items (id TEXT PRIMARY KEY, n INTEGER, f REAL, embedding BLOB)"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((ROWS, 384)).astype(np.float32)
    return [(f"item-{i:07d}", i, i * 0.5, vectors[i]) for i in range(ROWS)]


@pytest.fixture
def ours(tmp_path, data):
    conn = DatabaseFactory.connect(tmp_path / "ours.db")
    conn.executescript(SCHEMA)
    yield conn
    conn.close()


@pytest.fixture
def stdlib(tmp_path):
    conn = sqlite3.connect(tmp_path / "std.db", isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    conn.executescript(SCHEMA)
    yield conn
    conn.close()


def _fill(conn, rows, to_blob):
    conn.execute("DELETE FROM items")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?)",
                     [(k, n, f, to_blob(v)) for k, n, f, v in rows])
    conn.execute("COMMIT")


@pytest.mark.benchmark(group="insert 20k rows with 384-d BLOBs")
def test_insert_amalfa(benchmark, ours, data):
    benchmark.pedantic(_fill, args=(ours, data, lambda v: v), rounds=5)
    assert ours.execute("SELECT count(*) FROM items") == [(ROWS,)]


@pytest.mark.benchmark(group="insert 20k rows with 384-d BLOBs")
def test_insert_stdlib(benchmark, stdlib, data):
    benchmark.pedantic(_fill, args=(stdlib, data, lambda v: v.tobytes()), rounds=5)
    assert stdlib.execute("SELECT count(*) FROM items").fetchone() == (ROWS,)


@pytest.mark.benchmark(group="point reads (1000 keys)")
def test_point_reads_amalfa(benchmark, ours, data):
    _fill(ours, data, lambda v: v)
    keys = [(data[i][0],) for i in range(0, ROWS, ROWS // 1000)]
    first = ours.prepare("SELECT id, n, f FROM items WHERE id = ?").first
    rows = benchmark(lambda: [first(k) for k in keys])
    assert rows[0] == (data[0][0], 0, 0.0)


@pytest.mark.benchmark(group="point reads (1000 keys)")
def test_point_reads_stdlib(benchmark, stdlib, data):
    _fill(stdlib, data, lambda v: v.tobytes())
    keys = [(data[i][0],) for i in range(0, ROWS, ROWS // 1000)]
    sql = "SELECT id, n, f FROM items WHERE id = ?"
    rows = benchmark(lambda: [stdlib.execute(sql, k).fetchone() for k in keys])
    assert rows[0] == (data[0][0], 0, 0.0)

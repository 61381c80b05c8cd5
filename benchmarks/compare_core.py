"""The compiled binding against the stdlib sqlite3 module, side by side in one process.

Same schema, same pragmas (the factory's six), same data. Two workloads:

  point reads   a prepared SELECT by primary key, one row back as a tuple
  inserts       100k rows (text key, integer, real, 384-d float32 BLOB) in one transaction

amalfa binds the float32 array without copying it; the stdlib needs ``arr.tobytes()``.
Ratios are stdlib time / amalfa time (higher means amalfa is faster). Medians of --repeat runs.
Run: python benchmarks/compare_core.py [--rows 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import amalfa
from amalfa import DatabaseFactory

SCHEMA = "CREATE TABLE items (id TEXT PRIMARY KEY, n INTEGER, f REAL, embedding BLOB)"
PRAGMAS = ("busy_timeout = 5000", "journal_mode = WAL", "synchronous = NORMAL", "mmap_size = 0",
           "temp_store = MEMORY", "foreign_keys = ON")


def median_seconds(fn: Callable[[], object], repeat: int, setup: Callable[[], object] = lambda: None) -> float:
    times = []
    for _ in range(repeat):
        setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stdlib_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    return conn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="amalfa-core-bench-"))
    rng = np.random.default_rng(3)
    vectors = amalfa.to_fafcas(rng.standard_normal((args.rows, 384)).astype(np.float32))
    keys = [f"item-{i:07d}" for i in range(args.rows)]
    ours_rows = [(k, i, i * 0.5, vectors[i]) for i, k in enumerate(keys)]
    std_rows = [(k, i, i * 0.5, vectors[i].tobytes()) for i, k in enumerate(keys)]
    sql_insert = "INSERT INTO items VALUES (?, ?, ?, ?)"

    ours = DatabaseFactory.connect(workdir / "ours.db")
    std = stdlib_connect(workdir / "stdlib.db")

    def reset_ours():
        ours.executescript(f"DROP TABLE IF EXISTS items; {SCHEMA}")

    def reset_std():
        std.executescript(f"DROP TABLE IF EXISTS items; {SCHEMA}")

    def insert_ours():
        ours.execute("BEGIN")
        ours.executemany(sql_insert, ours_rows)
        ours.execute("COMMIT")

    def insert_std():
        # the stdlib must copy each vector into bytes first; that copy is part of its cost
        rows = [(k, i, f, v.tobytes()) for k, i, f, v in ours_rows]
        std.execute("BEGIN")
        std.executemany(sql_insert, rows)
        std.execute("COMMIT")

    results = {
        "inserts amalfa": median_seconds(insert_ours, args.repeat, reset_ours),
        "inserts stdlib": median_seconds(insert_std, args.repeat, reset_std),
    }
    del std_rows

    probe = [keys[i] for i in rng.integers(0, args.rows, args.reads)]
    sql_read = "SELECT id, n, f FROM items WHERE id = ?"
    stmt = ours.prepare(sql_read)
    first = stmt.first

    def reads_ours():
        for key in probe:
            first((key,))

    def reads_std():
        execute = std.execute
        for key in probe:
            execute(sql_read, (key,)).fetchone()

    assert stmt.first((keys[7],)) == std.execute(sql_read, (keys[7],)).fetchone()
    results["point reads amalfa"] = median_seconds(reads_ours, args.repeat)
    results["point reads stdlib"] = median_seconds(reads_std, args.repeat)

    # the same reads on a small table that fits SQLite's page cache: what is left is the cost
    # of the binding itself (bind, step, build the tuple, reset)
    hot_sql = "SELECT id, n, f FROM hot WHERE id = ?"
    for conn in (ours, std):
        conn.executescript("DROP TABLE IF EXISTS hot; "
                           "CREATE TABLE hot (id TEXT PRIMARY KEY, n INTEGER, f REAL)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO hot VALUES (?, ?, ?)",
                         [(k, i, i * 0.5) for i, k in enumerate(keys[:10_000])])
        conn.execute("COMMIT")
    hot_probe = [keys[i] for i in rng.integers(0, min(10_000, args.rows), args.reads)]
    hot_first = ours.prepare(hot_sql).first

    def hot_ours():
        for key in hot_probe:
            hot_first((key,))

    def hot_std():
        execute = std.execute
        for key in hot_probe:
            execute(hot_sql, (key,)).fetchone()

    results["hot point reads amalfa"] = median_seconds(hot_ours, args.repeat)
    results["hot point reads stdlib"] = median_seconds(hot_std, args.repeat)

    print(f"amalfa {amalfa.__version__} (SQLite {amalfa.sqlite_version()}) vs stdlib sqlite3 "
          f"(SQLite {sqlite3.sqlite_version}); medians of {args.repeat} runs")
    print(f"{'workload':<22}{'amalfa':>16}{'stdlib':>16}{'ratio':>9}")
    for name, count in (("inserts", args.rows), ("point reads", args.reads),
                        ("hot point reads", args.reads)):
        a, s = results[f"{name} amalfa"], results[f"{name} stdlib"]
        print(f"{name:<22}{count / a:>12,.0f} /s{count / s:>12,.0f} /s{s / a:>8.2f}x")
    ours.close()
    std.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

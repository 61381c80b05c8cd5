"""Vector search, side by side in one process: amalfa's scans against the peers.

For each N (default 10k and 100k; add 1000000 with --sizes) a database of N hollow nodes with
384-d FAFCAS embeddings is built once, then every contender answers the same top-10 queries:

  amalfa sqlite scan     VectorEngine.scan_sqlite: step the rows, score each BLOB in C
  stdlib + numpy         sqlite3 fetch of every BLOB, np.frombuffer + vstack, matmul, argpartition
  sqlite-vec             vec_distance_cosine(...) ORDER BY LIMIT 10, through apsw
  amalfa cached          VectorEngine.search_by_vector over the cached matrix (top-k in C)
  amalfa cached batch    16 queries in one pass (time per query)
  numpy cached           matmul + argpartition over the same in-memory matrix
  faiss IndexFlatIP      exact inner-product index over the same matrix, one query

Medians of repeated runs; ratios are peer time / amalfa time (higher means amalfa is faster).
Peers that are not installed are listed as unavailable (pip install ".[bench]").
Run: python benchmarks/compare_vectors.py [--sizes 10000 100000 1000000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import amalfa

DIM = 384
TOP_K = 10


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm caches (page cache, matrix load, thread pool)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_database(path: Path, n: int, rng: np.random.Generator) -> None:
    from amalfa.db import Node, ResonanceDB

    summary = "A hollow node's lead paragraph, about two hundred characters long, " * 3
    with ResonanceDB.create(path, history=False) as db:
        batch = 20000
        for start in range(0, n, batch):
            m = rng.standard_normal((min(batch, n - start), DIM)).astype(np.float32)
            db.insert_nodes(
                Node(id=f"node-{i:07d}", type="document", label=f"Title {i}",
                     domain="knowledge" if i % 4 else "persona", embedding=row,
                     hash=f"{i:064x}", summary=summary, meta={"source": f"docs/note-{i}.md"},
                     date="2026-11-27")
                for i, row in enumerate(m, start))
        db.checkpoint()


def contenders(path: Path, queries: np.ndarray):
    from amalfa.db import ResonanceDB
    from amalfa.vectors import VectorEngine

    db = ResonanceDB(path)
    engine = VectorEngine(db)
    engine.refresh()
    matrix = engine.matrix
    q = queries[0]
    out: dict[str, Callable[[], object] | str] = {}

    out["amalfa sqlite scan"] = lambda: engine.scan_sqlite(q, TOP_K)

    std = sqlite3.connect(path)
    for pragma in ("busy_timeout = 5000", "synchronous = NORMAL", "mmap_size = 0",
                   "temp_store = MEMORY", "foreign_keys = ON"):
        std.execute(f"PRAGMA {pragma}")

    def stdlib_numpy():
        rows = std.execute("SELECT id, embedding FROM nodes WHERE embedding IS NOT NULL").fetchall()
        m = np.vstack([np.frombuffer(blob, dtype=np.float32) for _, blob in rows])
        scores = m @ q
        top = np.argpartition(-scores, TOP_K)[:TOP_K]
        return [rows[i][0] for i in top[np.argsort(-scores[top])]]

    out["stdlib + numpy"] = stdlib_numpy

    try:
        import apsw
        import sqlite_vec

        vec = apsw.Connection(str(path))
        vec.enable_load_extension(True)
        vec.load_extension(sqlite_vec.loadable_path())
        qblob = q.tobytes()
        sql = ("SELECT id, vec_distance_cosine(embedding, ?) AS d FROM nodes "
               "WHERE embedding IS NOT NULL ORDER BY d LIMIT 10")
        out["sqlite-vec"] = lambda: vec.execute(sql, (qblob,)).fetchall()
    except ImportError as exc:
        out["sqlite-vec"] = f"unavailable ({exc.name})"

    out["amalfa cached"] = lambda: engine.search_by_vector(q, TOP_K, threshold=-1.0)
    batch = queries[:16]
    out["amalfa cached batch/q"] = (lambda: engine.search_batch(batch, TOP_K, threshold=-1.0), 16)

    def numpy_cached():
        scores = matrix @ q
        top = np.argpartition(-scores, TOP_K)[:TOP_K]
        return top[np.argsort(-scores[top])]

    out["numpy cached"] = numpy_cached

    try:
        import faiss

        index = faiss.IndexFlatIP(DIM)
        index.add(np.ascontiguousarray(matrix))
        q2 = q.reshape(1, -1)
        out["faiss IndexFlatIP"] = lambda: index.search(q2, TOP_K)
    except ImportError:
        out["faiss IndexFlatIP"] = "unavailable (faiss-cpu)"
    return out, db


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the benchmark databases go (default: a temporary folder)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(7)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="amalfa-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"amalfa {amalfa.__version__}, SQLite {amalfa.sqlite_version()}, numpy {np.__version__}, "
          f"{os.cpu_count()} cores; top-{TOP_K}, d={DIM}; medians of {args.repeat} runs")
    for n in args.sizes:
        path = workdir / f"vectors-{n}.db"
        if not path.exists():
            t0 = time.perf_counter()
            build_database(path, n, rng)
            print(f"\nbuilt {n:,} nodes in {time.perf_counter() - t0:.1f} s "
                  f"({path.stat().st_size / 1e6:.0f} MB)")
        queries = amalfa.to_fafcas(rng.standard_normal((16, DIM)).astype(np.float32))
        table, db = contenders(path, queries)
        gb = n * DIM * 4 / 1e9
        results: dict[str, float] = {}
        print(f"\nN = {n:,} ({gb * 1000:.0f} MB of vectors)")
        print(f"{'contender':<24}{'median ms':>12}{'GB/s':>9}")
        for name, entry in table.items():
            if isinstance(entry, str):
                print(f"{name:<24}{entry:>21}")
                continue
            fn, per = entry if isinstance(entry, tuple) else (entry, 1)
            repeat = args.repeat if n <= 100_000 or "cached" in name or "faiss" in name else 3
            seconds = median_seconds(fn, repeat) / per
            results[name] = seconds
            print(f"{name:<24}{seconds * 1000:>12.2f}{gb / seconds:>9.2f}")
        db.close()
        print("ratios (peer / amalfa, higher is better for amalfa):")
        scan, cached = results.get("amalfa sqlite scan"), results.get("amalfa cached")
        for peer, ours in (("stdlib + numpy", scan), ("sqlite-vec", scan),
                           ("numpy cached", cached), ("faiss IndexFlatIP", cached)):
            if peer in results and ours:
                kind = "sqlite scan" if ours is scan else "cached"
                print(f"  {peer:<20} / amalfa {kind:<12} = {results[peer] / ours:6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

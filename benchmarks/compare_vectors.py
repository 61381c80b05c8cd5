"""Vector search, side by side in one run: amalfa's cached matrix against the peers, warm, right
after other processes write, and cold.

For each N (default 100k; add 1000000 with --sizes) a database of N hollow nodes with 384-d FAFCAS
embeddings is built once, plus a sqlite-vec ``vec0`` table of the same vectors in its own file.

  amalfa cached          VectorEngine(db).top_k, the default: int8 scan, pool rescored in fp32
  amalfa cached fp32     VectorEngine(db, precision="fp32").top_k: the float scan (top-k in C)
  numpy cached           matmul + argpartition over the same matrix
  faiss IndexFlatIP      exact inner-product index over the same matrix, one query
  amalfa sqlite scan     VectorEngine.scan_sqlite: step the rows, score each BLOB in C
  vec0 KNN               sqlite-vec 0.1.x ``vec0`` MATCH ... AND k = 10     (apsw, subprocess)
  vec_distance_cosine    sqlite-vec brute force over ``nodes``             (apsw, subprocess)
  after 1 update         another process (stdlib sqlite3) updates 1 row, then amalfa queries
                         (the default engine, then the fp32 one: each its first query after it)
  after 1% updated       another process updates 1% of the rows in one transaction, then a query
  cold (snapshot)        a fresh process: open the database, one top_k (imports excluded)
  cold (no snapshot)     the same with the snapshot file deleted: the B-tree walk
  cold vec0 KNN          a fresh process: open, load sqlite-vec, one vec0 KNN
  batch 64 (GEMM)        VectorEngine.top_k_batch of 64 queries / numpy M @ Q.T + argpartition

SQLite libraries never share a file in one process: sqlite-vec (apsw) and the writer (stdlib)
run in subprocesses. Medians of repeated runs; ratios are peer time / amalfa time (higher means
amalfa is faster). Run: python benchmarks/compare_vectors.py [--sizes 100000 1000000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

DIM = 384
TOP_K = 10
SETTLE_S = 0.5  # pause before each contender's turn
HERE = Path(__file__).resolve()


def median_seconds(fn: Callable[[], object], repeat: int, warm: bool = True) -> float:
    if warm:
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def medians_in_turn(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each call over ``rounds`` back-to-back runs, one contender after the
    other, with a pause before each so the previous one's thread pool has gone to sleep.

    Not interleaved call by call: the contenders keep thread pools (OpenBLAS, faiss's and
    amalfa's OpenMP) whose workers spin for a while after each call, so on a 2-core machine
    whoever ran just before takes the second core from whoever runs next."""
    out = {}
    for name, call in calls.items():
        time.sleep(SETTLE_S)
        out[name] = median_seconds(call, rounds)
    return out


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    m = rng.standard_normal((n, DIM)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def build_database(path: Path, n: int, rng: np.random.Generator) -> None:
    from amalfa.db import Node, ResonanceDB

    summary = "A hollow node's lead paragraph, about two hundred characters long, " * 3
    with ResonanceDB.create(path, history=False) as db:
        batch = 20000
        for start in range(0, n, batch):
            m = unit_rows(rng, min(batch, n - start))
            db.insert_nodes(
                Node(id=f"node-{i:07d}", type="document", label=f"Title {i}",
                     domain="knowledge" if i % 4 else "persona", embedding=row,
                     hash=f"{i:064x}", summary=summary, meta={"source": f"docs/note-{i}.md"},
                     date="2026-11-27")
                for i, row in enumerate(m, start))
        db.checkpoint()


# -- subprocess workers ---------------------------------------------------------------------------


def worker_vec(args: argparse.Namespace) -> None:
    """sqlite-vec through apsw: build the vec0 file if missing, then time KNN and the brute force
    over nodes; or, with --cold, time one open-to-results KNN in this fresh process."""
    import apsw
    import sqlite_vec

    queries = np.load(args.queries)
    q = queries[0].tobytes()
    knn = "SELECT rowid, distance FROM vec_nodes WHERE embedding MATCH ? AND k = 10"
    if args.cold:
        start = time.perf_counter()
        vec = apsw.Connection(args.vecdb)
        vec.enable_load_extension(True)
        vec.load_extension(sqlite_vec.loadable_path())
        rows = vec.execute(knn, (q,)).fetchall()
        print(json.dumps({"cold_ms": (time.perf_counter() - start) * 1e3, "rows": len(rows),
                          "rss_mb": peak_rss_mb()}))
        return
    vec = apsw.Connection(args.vecdb)
    vec.enable_load_extension(True)
    vec.load_extension(sqlite_vec.loadable_path())
    if not vec.execute("SELECT 1 FROM sqlite_schema WHERE name = 'vec_nodes'").fetchall():
        src = apsw.Connection(args.db, flags=apsw.SQLITE_OPEN_READONLY)
        vec.execute(f"CREATE VIRTUAL TABLE vec_nodes USING vec0(embedding float[{DIM}] "
                    "distance_metric=cosine)")
        with vec:
            vec.executemany("INSERT INTO vec_nodes (rowid, embedding) VALUES (?, ?)",
                            src.execute("SELECT rowid, embedding FROM nodes"))
        src.close()
    nodes = apsw.Connection(args.db, flags=apsw.SQLITE_OPEN_READONLY)
    nodes.enable_load_extension(True)
    nodes.load_extension(sqlite_vec.loadable_path())
    brute = ("SELECT rowid, vec_distance_cosine(embedding, ?) AS d FROM nodes "
             "WHERE embedding IS NOT NULL ORDER BY d LIMIT 10")
    out = {"knn_ms": median_seconds(lambda: vec.execute(knn, (q,)).fetchall(), args.repeat) * 1e3,
           "cosine_ms": median_seconds(lambda: nodes.execute(brute, (q,)).fetchall(),
                                       max(3, args.repeat // 2)) * 1e3}
    print(json.dumps(out))


def worker_cold(args: argparse.Namespace) -> None:
    """A fresh process: open the database and answer one query; imports are not timed."""
    from amalfa.db import ResonanceDB
    from amalfa.vectors import VectorEngine

    q = np.load(args.queries)[0]
    start = time.perf_counter()
    db = ResonanceDB(args.db)
    engine = VectorEngine(db, snapshot=not args.no_snapshot, precision=args.precision)
    rowids, _ = engine.top_k(q, TOP_K)
    elapsed = time.perf_counter() - start
    print(json.dumps({"cold_ms": elapsed * 1e3, "rows": len(rowids),
                      "from_snapshot": engine.snapshot_loads,
                      "rss_mb": peak_rss_mb()}))
    db.close()


def worker_writer(args: argparse.Namespace) -> None:
    """Another client (stdlib sqlite3): on each line 'K', update K random rows' embeddings in
    one transaction, commit, answer 'ok'."""
    import sqlite3

    conn = sqlite3.connect(args.db, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    (low, high) = conn.execute("SELECT min(rowid), max(rowid) FROM nodes").fetchone()
    rng = np.random.default_rng(99)
    for line in sys.stdin:
        k = int(line)
        rows = rng.integers(low, high + 1, size=k)
        vectors = unit_rows(rng, k)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("UPDATE nodes SET embedding = ? WHERE rowid = ?",
                         [(v.tobytes(), int(r)) for v, r in zip(vectors, rows)])
        conn.execute("COMMIT")
        print("ok", flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss carries the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(kind: str, *extra: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, str(HERE), "--worker", kind, *extra],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the comparison -------------------------------------------------------------------------------


def compare(path: Path, vecdb: Path, n: int, repeat: int, rng: np.random.Generator) -> None:
    from amalfa.db import ResonanceDB
    from amalfa.vectors import VectorEngine

    queries = unit_rows(rng, 64)
    qfile = path.with_suffix(".queries.npy")
    np.save(qfile, queries)
    q = queries[0]
    results: dict[str, float] = {}
    notes: dict[str, str] = {}

    def record(name: str, seconds: float, note: str = "") -> None:
        results[name] = seconds
        notes[name] = note
        print(f"  {name:<28}{seconds * 1e3:>10.2f} ms  {note}", flush=True)

    common = ["--db", str(path), "--vecdb", str(vecdb), "--queries", str(qfile),
              "--repeat", str(repeat)]
    try:
        peer = run_worker("vec", *common)
        record("vec0 KNN", peer["knn_ms"] / 1e3, "(subprocess, apsw + sqlite-vec)")
        record("vec_distance_cosine", peer["cosine_ms"] / 1e3, "(subprocess)")
    except (subprocess.CalledProcessError, ImportError) as exc:
        print(f"  sqlite-vec unavailable: {exc}")

    db = ResonanceDB(path)
    exact = VectorEngine(db, precision="fp32")
    start = time.perf_counter()
    exact.refresh(force=True)
    record("full reload (B-tree walk)", time.perf_counter() - start,
           f"(writes the snapshot: {exact.snapshot_file.name})")
    matrix = exact.matrix
    engine = VectorEngine(db)  # the default: int8 scan, rescored (starts from the snapshot)
    engine.refresh()

    def numpy_cached() -> object:
        scores = matrix @ q
        top = np.argpartition(-scores, TOP_K)[:TOP_K]
        return top[np.argsort(-scores[top])]

    def warm_default() -> object:
        return engine.top_k(q, TOP_K)

    def warm_fp32() -> object:
        return exact.top_k(q, TOP_K)

    warm = {"amalfa cached": warm_default, "amalfa cached fp32": warm_fp32,
            "numpy cached": numpy_cached}
    try:
        import faiss

        index = faiss.IndexFlatIP(DIM)
        index.add(np.ascontiguousarray(matrix))
        warm["faiss IndexFlatIP"] = lambda: index.search(q.reshape(1, -1), TOP_K)
    except ImportError:
        print("  faiss unavailable")
    rounds = max(15, 3 * repeat)
    for name, seconds in medians_in_turn(warm, rounds).items():
        note = f"({rounds} back-to-back runs)"
        if name == "amalfa cached":
            note = f"(default, precision={engine.precision!r}: int8 scan, pool rescored in fp32)"
        record(name, seconds, note)
    warm.clear()
    index = None
    # one thread each: the scans' own work, steadier than two threads on a shared 2-core VM
    engine.n_threads = exact.n_threads = 1
    for name, seconds in medians_in_turn({"amalfa cached, 1 thread": warm_default,
                                          "amalfa cached fp32, 1 thread": warm_fp32},
                                         rounds).items():
        record(name, seconds)
    engine.n_threads = exact.n_threads = 0
    found = sum(len(set(engine.top_k(x, TOP_K)[0].tolist())
                    & set(exact.top_k(x, TOP_K)[0].tolist())) for x in queries[:32])
    print(f"  int8 recall@{TOP_K} against fp32 on 32 random queries: {found / (32 * TOP_K):.4f}")
    record("amalfa sqlite scan", median_seconds(lambda: engine.scan_sqlite(q, TOP_K),
                                                max(3, repeat // 2)))

    writer = subprocess.Popen([sys.executable, str(HERE), "--worker", "writer", "--db", str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def after_write(rows: int) -> tuple[float, float]:
        """Median time of each engine's first query after another process wrote ``rows``."""
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(repeat):
            assert writer.stdin is not None and writer.stdout is not None
            writer.stdin.write(f"{rows}\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "ok"
            for each, timed in zip((engine, exact), times):
                start = time.perf_counter()
                each.top_k(q, TOP_K)
                timed.append(time.perf_counter() - start)
        return statistics.median(times[0]), statistics.median(times[1])

    reloads = engine.full_reloads + exact.full_reloads
    ours, fp32 = after_write(1)
    record("after 1 update (other proc)", ours, "(default engine)")
    record("after 1 update, fp32", fp32)
    ours, fp32 = after_write(max(1, n // 100))
    record("after 1% updated", ours,
           f"(full reloads during these: {engine.full_reloads + exact.full_reloads - reloads})")
    record("after 1% updated, fp32", fp32)
    assert writer.stdin is not None
    writer.stdin.close()
    writer.wait()
    engine.refresh()
    engine.save_snapshot()
    del engine

    batch = queries[:64]

    def numpy_batch() -> object:
        scores = matrix @ batch.T
        top = np.argpartition(-scores, TOP_K, axis=0)[:TOP_K]
        return np.take_along_axis(scores, top, axis=0)

    for name, seconds in medians_in_turn(
            {"amalfa batch 64 (GEMM)": lambda: exact.top_k_batch(batch, TOP_K),
             "numpy batch 64": numpy_batch}, repeat).items():
        record(name, seconds)
    main_rss = peak_rss_mb()
    db.close()

    for precision, name in (("int8", "cold (snapshot)"), ("fp32", "cold (snapshot), fp32")):
        colds = [run_worker("cold", *common, "--precision", precision) for _ in range(repeat)]
        rss = max(c["rss_mb"] for c in colds)
        record(name, statistics.median(c["cold_ms"] for c in colds) / 1e3,
               f"(fresh process; from snapshot {sum(c['from_snapshot'] for c in colds)}/"
               f"{len(colds)}; peak RSS {rss:.0f} MB)")
    colds = [run_worker("cold", *common, "--no-snapshot") for _ in range(max(3, repeat // 2))]
    record("cold (no snapshot)", statistics.median(c["cold_ms"] for c in colds) / 1e3,
           "(fresh process, B-tree walk)")
    try:
        colds = [run_worker("vec", *common, "--cold") for _ in range(repeat)]
        record("cold vec0 KNN", statistics.median(c["cold_ms"] for c in colds) / 1e3,
               f"(fresh process; peak RSS {max(c['rss_mb'] for c in colds):.0f} MB)")
    except subprocess.CalledProcessError as exc:
        print(f"  cold vec0 unavailable: {exc.stderr[-300:]}")

    print(f"  matrix {n * DIM * 4 / 2**20:.0f} MB; this process's peak RSS {main_rss:.0f} MB")
    print("ratios (peer / amalfa, higher is better for amalfa; budgets from issue 12):")
    cached = results["amalfa cached"]
    cached_fp32 = results["amalfa cached fp32"]

    def ratio(label: str, peer: str, ours: str, goal: str) -> None:
        if peer in results and ours in results:
            print(f"  {label:<44}{results[peer] / results[ours]:8.2f}x   goal {goal}")

    ratio("numpy cached / amalfa cached fp32", "numpy cached", "amalfa cached fp32", ">= 1.0x")
    ratio("faiss / amalfa cached fp32", "faiss IndexFlatIP", "amalfa cached fp32", ">= 2x")
    ratio("amalfa fp32 cached / amalfa int8 cached", "amalfa cached fp32", "amalfa cached",
          ">= 2.5x at 1M")
    ratio("... the same, one thread each", "amalfa cached fp32, 1 thread",
          "amalfa cached, 1 thread", ">= 2.5x at 1M")
    ratio("vec0 KNN / amalfa after 1 update", "vec0 KNN", "after 1 update (other proc)", ">= 8x")
    ratio("vec0 KNN / amalfa fp32 after 1 update", "vec0 KNN", "after 1 update, fp32", "-")
    print(f"  {'amalfa after 1 update / amalfa cached':<44}"
          f"{results['after 1 update (other proc)'] / cached:8.2f}x   goal <= 1.5x")
    print(f"  {'amalfa after 1% updated / amalfa cached':<44}"
          f"{results['after 1% updated'] / cached:8.2f}x   goal <= 4x")
    print(f"  {'... fp32: after 1 update / cached':<44}"
          f"{results['after 1 update, fp32'] / cached_fp32:8.2f}x   goal <= 1.5x")
    print(f"  {'... fp32: after 1% updated / cached':<44}"
          f"{results['after 1% updated, fp32'] / cached_fp32:8.2f}x   goal <= 4x")
    ratio("cold vec0 KNN / amalfa cold (snapshot)", "cold vec0 KNN", "cold (snapshot)",
          ">= 2x (amalfa <= 0.5x)")
    ratio("cold vec0 KNN / amalfa fp32 cold (snapshot)", "cold vec0 KNN", "cold (snapshot), fp32",
          ">= 2x")
    ratio("cold vec0 KNN / amalfa cold (no snapshot)", "cold vec0 KNN", "cold (no snapshot)", "-")
    ratio("numpy batch 64 / amalfa batch 64", "numpy batch 64", "amalfa batch 64 (GEMM)",
          ">= 0.8x")
    ratio("vec_distance_cosine / amalfa sqlite scan", "vec_distance_cosine", "amalfa sqlite scan",
          "-")
    ratio("vec0 KNN / amalfa sqlite scan", "vec0 KNN", "amalfa sqlite scan", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the benchmark databases go (default: a temporary folder)")
    parser.add_argument("--worker", choices=["vec", "cold", "writer"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--vecdb", help=argparse.SUPPRESS)
    parser.add_argument("--queries", help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-snapshot", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="int8", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        {"vec": worker_vec, "cold": worker_cold, "writer": worker_writer}[args.worker](args)
        return 0
    import amalfa

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
        print(f"\nN = {n:,}")
        compare(path, workdir / f"vec0-{n}.db", n, args.repeat, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())

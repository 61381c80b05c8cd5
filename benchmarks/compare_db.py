"""ResonanceDB beside the stdlib sqlite3 module: bulk inserts and point reads.

    python benchmarks/compare_db.py [--nodes 100000] [--dim 384] [--reads 20000] [--repeat 5]

Both sides run in this process on the same schema (made by amalfa's migrations), the same six
pragmas (DatabaseFactory's, applied to the stdlib connection by hand), the same SQL and, for the
"history on" rows, the same temporary audit triggers. What differs is only the binding:

- **insert**: ``ResonanceDB.insert_nodes(nodes)`` (validation, FAFCAS normalisation, one
  transaction) against ``executemany`` in one ``BEGIN IMMEDIATE`` transaction binding
  ``vec.tobytes()`` per row. Each repetition writes a fresh file; the time includes COMMIT (and
  the WAL auto-checkpoint it triggers).
- **get_node**: ``ResonanceDB.get_node(id)`` against ``cursor.execute(SELECT ...)`` +
  ``fetchone()`` + building the same ``Node`` with the same function, over the same random ids.

Medians of ``--repeat`` runs are printed with the ratio amalfa/stdlib (above 1 = amalfa faster).

The two sides never open the same file at the same time: amalfa links its own copy of SQLite, and
two copies of SQLite in one process must not share a database file (closing a file in one drops
the POSIX locks the other holds on it). The read benchmark gives the stdlib a byte copy.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import amalfa
from amalfa.db import history as db_history
from amalfa.db import nodes as db_nodes
from amalfa.db import validation as db_validation
from amalfa.db import Node, ResonanceDB

# DatabaseFactory's canonical pragmas, in its order
PRAGMAS = (
    "PRAGMA busy_timeout = 5000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA mmap_size = 0",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA foreign_keys = ON",
)
META_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def make_nodes(count: int, dim: int, *, seed: int = 0) -> list[Node]:
    """Nodes shaped like ingested documents, with unit float32 embeddings."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        Node(id=f"docs-note-{i:07d}", type="document", label=f"Note {i}",
             summary=f"The summary of note {i}.", embedding=vectors[i], hash=f"{i:064x}",
             meta={"tags": ["bench"], "words": i % 977}, date="2026-01-01")
        for i in range(count)
    ]


def fresh_path(folder: Path, name: str) -> Path:
    path = folder / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def stdlib_connect(path: Path, *, history: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    if history:
        for _name, create_sql in db_history.HISTORY_TRIGGERS:
            conn.execute(create_sql)
    return conn


def stdlib_params(nodes: list[Node]):  # the peer's equivalent of insert_nodes' binding
    for n in nodes:
        yield (n.id, n.type, n.label, n.domain, n.layer, n.summary, n.hash,
               META_ENCODER.encode(n.meta) if n.meta else None, n.date,
               None if n.embedding is None else n.embedding.tobytes())


def time_call(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def prebuilt_params(nodes: list[Node]) -> list[tuple]:
    """insert_nodes' bindings for every node, built ahead (validated, normalised)."""
    params: list[tuple] = []
    dimensions = None
    for chunk in db_validation.chunks(nodes, db_nodes.BULK_CHUNK):
        chunk_params, dimensions = db_validation.bulk_params(chunk, dimensions)
        params.extend(chunk_params)
    return params


def bench_insert(folder: Path, nodes: list[Node], *, history: bool, repeat: int
                 ) -> tuple[list[float], list[float], list[float]]:
    """Times of amalfa, the stdlib and the floor, one of each per repetition, interleaved so a
    busy machine slows all three alike. The floor is SQLite's own work: insert_nodes' bindings
    prebuilt, one executemany + COMMIT on amalfa's connection, no Python per row."""
    params = prebuilt_params(nodes)
    ours, theirs, floor = [], [], []
    for _ in range(repeat):
        path = fresh_path(folder, "amalfa.db")
        db = ResonanceDB.create(path, history=history)
        ours.append(time_call(lambda db=db: db.insert_nodes(nodes)))
        db.close()

        path = fresh_path(folder, "stdlib.db")
        ResonanceDB.create(path).close()  # the same schema, made by the same migrations
        conn = stdlib_connect(path, history=history)

        def peer(conn: sqlite3.Connection = conn) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(db_nodes._UPSERT_NODE, stdlib_params(nodes))
            conn.execute("COMMIT")

        theirs.append(time_call(peer))
        conn.close()

        path = fresh_path(folder, "floor.db")
        with ResonanceDB.create(path, history=history) as db:
            raw, statement = db.raw, db.raw.prepare(db_nodes._UPSERT_NODE)

            def bare(raw=raw, statement=statement) -> None:
                raw.execute("BEGIN IMMEDIATE")
                statement.executemany(params)
                raw.execute("COMMIT")

            floor.append(time_call(bare))
    return ours, theirs, floor


def bench_matrix_insert(folder: Path, nodes: list[Node], *, history: bool, repeat: int
                        ) -> dict[str, list[float]]:
    """``insert_nodes_matrix`` (the fields as Nodes without embeddings, the vectors as one (N, d)
    matrix) against apsw's and the stdlib's ``executemany`` binding ``vec.tobytes()`` per row, on
    the same schema, pragmas, SQL and (history on) triggers; interleaved per repetition."""
    import dataclasses

    heads = [dataclasses.replace(node, embedding=None) for node in nodes]
    matrix = np.stack([node.embedding for node in nodes])
    times: dict[str, list[float]] = {"amalfa matrix": [], "apsw": [], "stdlib": []}
    try:
        import apsw
    except ImportError:
        apsw = None
        del times["apsw"]
    for _ in range(repeat):
        path = fresh_path(folder, "amalfa.db")
        db = ResonanceDB.create(path, history=history)
        times["amalfa matrix"].append(time_call(lambda db=db: db.insert_nodes_matrix(heads, matrix)))
        db.close()
        for peer in list(times)[1:]:
            path = fresh_path(folder, f"{peer}.db")
            ResonanceDB.create(path).close()  # the same schema, made by the same migrations
            if peer == "apsw":
                conn = apsw.Connection(str(path))
                for pragma in PRAGMAS:
                    conn.execute(pragma).fetchall()
                if history:
                    for _name, create_sql in db_history.HISTORY_TRIGGERS:
                        conn.execute(create_sql)
            else:
                conn = stdlib_connect(path, history=history)

            def run(conn=conn) -> None:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(db_nodes._UPSERT_NODE, stdlib_params(nodes))
                conn.execute("COMMIT")

            times[peer].append(time_call(run))
            conn.close()
    return times


def bench_reads(path: Path, peer_path: Path, ids: list[str], *, repeat: int
                ) -> tuple[list[float], list[float], list[float]]:
    """get_node against the stdlib, and the floor: the cached statement's first() plus building
    the Node (which both sides pay), with nothing else in between."""
    db = ResonanceDB(path, history=False)
    conn = stdlib_connect(peer_path, history=False)
    cursor = conn.cursor()
    sql = db_nodes._SELECT_NODE
    build = db_validation.node_from_row
    first = db.raw.prepare(sql).first

    def ours() -> None:
        get = db.get_node
        for node_id in ids:
            get(node_id)

    def theirs() -> None:
        for node_id in ids:
            cursor.execute(sql, (node_id,))
            row = cursor.fetchone()
            if row is not None:
                build(row)

    def bare() -> None:
        for node_id in ids:
            build(first((node_id,)))

    assert db.get_node(ids[0]) == build(cursor.execute(sql, (ids[0],)).fetchone())
    ours(), theirs(), bare()  # warm the page caches and the statement caches
    a, b, c = [], [], []
    for _ in range(repeat):
        a.append(time_call(ours))
        b.append(time_call(theirs))
        c.append(time_call(bare))
    db.close()
    conn.close()
    return a, b, c


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder for the database files (default: a temporary folder)")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="amalfa-bench-", dir=args.dir))
    try:
        print(f"amalfa {amalfa.__version__} (SQLite {amalfa.sqlite_version()}) vs stdlib sqlite3 "
              f"(SQLite {sqlite3.sqlite_version}); Python {sys.version.split()[0]}; "
              f"{args.nodes} nodes x {args.dim}-d; files in {folder}")
        nodes = make_nodes(args.nodes, args.dim)
        rows = []
        floors: dict[str, float] = {}
        for history in (False, True):
            name = f"insert_nodes, history {'on' if history else 'off'}"
            ours, theirs, floor = bench_insert(folder, nodes, history=history, repeat=args.repeat)
            rows.append((name, "rows/s", args.nodes / statistics.median(ours),
                         args.nodes / statistics.median(theirs)))
            floors[name] = args.nodes / statistics.median(floor)
        matrix_rows = []
        for history in (False, True):
            times = bench_matrix_insert(folder, nodes, history=history, repeat=args.repeat)
            matrix_rows.append((history, {name: args.nodes / statistics.median(t)
                                          for name, t in times.items()}))
        rng = random.Random(1)
        ids = [nodes[rng.randrange(len(nodes))].id for _ in range(args.reads)]
        path = fresh_path(folder, "amalfa.db")
        with ResonanceDB.create(path, history=False) as db:
            db.insert_nodes(nodes)
            db.checkpoint()
        peer_path = fresh_path(folder, "stdlib.db")
        shutil.copyfile(path, peer_path)  # closed and checkpointed: the file is the whole database
        ours, theirs, floor = bench_reads(path, peer_path, ids, repeat=args.repeat)
        rows.append(("get_node (random ids)", "reads/s", args.reads / statistics.median(ours),
                     args.reads / statistics.median(theirs)))
        floors["get_node (random ids)"] = args.reads / statistics.median(floor)

        print()
        print(f"{'benchmark':30} {'unit':8} {'amalfa':>10} {'stdlib':>10} {'ratio':>6}"
              f" {'floor':>10} {'best ratio':>10}")
        for name, unit, a, b in rows:
            best = floors[name]
            print(f"{name:30} {unit:8} {a:10,.0f} {b:10,.0f} {a / b:5.2f}x {best:10,.0f}"
                  f" {best / b:9.2f}x")
        print("\nfloor: the same SQLite work with no binding layer (insert: insert_nodes' bindings "
              "prebuilt, one executemany; get_node: first() + building the Node); best ratio: "
              "what a zero-cost binding layer would reach against the stdlib")
        print("\nbulk insert from one matrix (insert_nodes_matrix) against executemany, rows/s:")
        for history, rates in matrix_rows:
            ours = rates["amalfa matrix"]
            peers = "  ".join(f"{peer} {rate:,.0f} (ratio {ours / rate:.2f}x)"
                              for peer, rate in rates.items() if peer != "amalfa matrix")
            print(f"  history {'on ' if history else 'off'}: amalfa {ours:,.0f}  {peers}")
        off, on = rows[0][2], rows[1][2]
        print(f"\nhistory logging costs amalfa {100 * (1 - on / off):.0f}% of its insert rate "
              f"({1e6 / off:.2f} -> {1e6 / on:.2f} us/row)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

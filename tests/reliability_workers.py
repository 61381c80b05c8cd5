"""Worker programs for the reliability tests, run as separate processes, and helpers to run them.

Not a test module (pytest collects only ``test_*.py``): the tests import the helpers below and
start the workers with ``python tests/reliability_workers.py <role> <json options>``. Each role
is one small program:

* ``writer`` / ``reader``: the concurrency test's processes (ResonanceDB and VectorEngine);
* ``bulk``: bulk inserts until killed, reporting each committed batch after its commit;
* ``migrate``: opens (and so migrates) a database, timing the open;
* ``foreign``: "another client": the stdlib ``sqlite3`` module writing the file directly. It
  never imports amalfa, because two copies of SQLite in one process must not open the same file
  (their POSIX locks are not shared: closing one connection drops the other's locks);
* ``build_original``: builds an original-system database (stdlib sqlite3 as well);
* ``create_race``: opens a database that does not exist yet, at the same moment as its peers;
* ``kernels``: the scan kernels on a small database, for the valgrind run.

Reports go to files named by the caller. A committed transaction is reported *after* its commit
with one ``os.write`` on an ``O_APPEND`` descriptor: a process killed with SIGKILL loses only
what it had not written yet, never a line the kernel accepted, so "reported" implies "committed".
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]

# Sizes of the bulk worker's batches, chosen by batch number: some span several of
# ResonanceDB's 512-node validation chunks, so a batch is more than one executemany.
BULK_SIZES = (5, 60, 700, 1300)
BULK_DIM = 16
BULK_TYPE = "bulk"


def bulk_size(batch: int) -> int:
    return BULK_SIZES[batch % len(BULK_SIZES)]


# -- helpers for the tests ------------------------------------------------------------------------


def worker_command(role: str, **options: Any) -> list[str]:
    """The argv that runs ``role`` with ``options`` in a fresh interpreter."""
    return [sys.executable, str(HERE), role, json.dumps(options)]


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a worker: this one, without the variables that would change its model,
    its settings or make it talk to a daemon."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("AMALFA_MODEL_PATH", "EMBEDDING_MODEL", "AMALFA_RERANKER_PATH",
                        "RERANKER_MODEL", "VECTOR_PORT", "AMALFA_SETTINGS")}
    env.update(extra)
    return env


def read_lines(path: Path) -> list[str]:
    """The complete lines of a report file (a torn last line, if any, is left out)."""
    try:
        data = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = data.split("\n")
    return [line for line in lines[:-1] if line]  # the part after the last newline is torn


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by the nearest-rank method; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def record_figures(section: str, values: dict[str, Any], *, base: Path,
                   record_property: Any = None) -> Path:
    """Keep the measured figures of one test: printed (visible with ``-s``), attached to the
    test report (``record_property``), and merged into a JSON file, ``$AMALFA_RELIABILITY_FIGURES``
    or ``reliability-figures.json`` in pytest's base temporary folder."""
    target = Path(os.environ.get("AMALFA_RELIABILITY_FIGURES") or base / "reliability-figures.json")
    try:
        figures = json.loads(target.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        figures = {}
    figures[section] = values
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    print(f"\n[reliability] {section}: {json.dumps(values, sort_keys=True)}  (-> {target})")
    if record_property is not None:
        for key, value in values.items():
            record_property(f"{section}.{key}", value)
    return target


# -- shared by the workers -------------------------------------------------------------------------


class _Report:
    """Append-only report lines, one ``os.write`` per line."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def line(self, text: str) -> None:
        os.write(self.fd, (text + "\n").encode("utf-8"))


def _write_json(path: str, value: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(value, handle)
    os.replace(tmp, path)


def _is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text or type(exc).__name__ in ("BusyError", "LockedError")


# -- concurrency ------------------------------------------------------------------------------------

CONC_TYPE = "conc"
COUNTER_TYPE = "counter"
EDGE_TYPE = "owns"


def role_writer(opts: dict[str, Any]) -> None:
    """Small transactions until the deadline: node X (with an embedding and meta), edges X->X-a
    and X->X-b, and this writer's counter node's meta set to its number of live nodes; every
    seventh transaction also deletes one of its older nodes (with its edges). History triggers
    add the audit rows in the same transaction. Reports ``+id`` / ``-id`` after each commit."""
    import numpy as np

    from amalfa.db import Node, ResonanceDB
    from amalfa.errors import DatabaseError

    wid, dim = opts["worker"], opts["dim"]
    report = _Report(opts["report"])
    rng = np.random.default_rng(1000 + wid)
    errors: list[str] = []
    latencies: list[float] = []
    live: list[str] = []
    counter = f"counter-w{wid}"
    start_at = opts["start_at"]
    think = opts.get("think_ms", 0) / 1000
    db = ResonanceDB(opts["db"])
    while time.time() < start_at:  # every process begins together, after its imports
        time.sleep(0.002)
    deadline = time.monotonic() + opts["seconds"]
    n = 0
    while time.monotonic() < deadline:
        node_id = f"w{wid}-{n}"
        vector = rng.standard_normal(dim).astype(np.float32)
        doomed = live[len(live) // 2] if n % 7 == 6 and len(live) > 4 else None
        began = time.perf_counter()
        try:
            with db.transaction():
                db.insert_node(Node(node_id, CONC_TYPE, label=f"node {n} of writer {wid}",
                                    domain=f"w{wid}", embedding=vector,
                                    meta={"writer": wid, "seq": n}))
                db.insert_edge(node_id, f"{node_id}-a", EDGE_TYPE)
                db.insert_edge(node_id, f"{node_id}-b", EDGE_TYPE)
                if doomed is not None:
                    db.delete_node(doomed)
                remaining = len(live) + 1 - (doomed is not None)
                db.update_node_meta(counter, {"live": remaining, "seq": n})
        except DatabaseError as exc:  # must not happen: counted, and the test fails on it
            errors.append(f"{type(exc).__name__}: {exc}")
            n += 1
            continue
        latencies.append(time.perf_counter() - began)
        live.append(node_id)
        report.line(f"+{node_id}")
        if doomed is not None:
            live.remove(doomed)
            report.line(f"-{doomed}")
        n += 1
        if think:
            time.sleep(rng.uniform(0, think))  # the work a real tool does between its writes
    db.close()
    latencies.sort()
    _write_json(opts["summary"], {
        "transactions": len(latencies), "errors": errors,
        "latency_p50_ms": 1000 * percentile(latencies, 50),
        "latency_p99_ms": 1000 * percentile(latencies, 99),
        "latency_max_ms": 1000 * (latencies[-1] if latencies else float("nan")),
        "over_1s": sum(1 for latency in latencies if latency > 1.0),
    })


def role_reader(opts: dict[str, Any]) -> None:
    """Read transactions until the deadline, checking invariants that half a transaction breaks.

    Inside one snapshot (``BEGIN`` ... ``COMMIT`` on the connection: ResonanceDB has no read
    transaction of its own), for every writer: each of its nodes has exactly its two edges, no
    edge is left from a deleted node, its counter equals its live nodes, every node has its
    history row; and the cached matrix, the direct scan and get_stats agree on the vectors.
    """
    import numpy as np

    from amalfa.db import ResonanceDB
    from amalfa.errors import DatabaseError
    from amalfa.vectors import VectorEngine

    wid, dim, writers = opts["worker"], opts["dim"], opts["writers"]
    rng = np.random.default_rng(2000 + wid)
    violations: list[str] = []
    errors: list[str] = []
    counts = {"transactions": 0, "get_nodes": 0, "get_stats": 0, "cached_searches": 0,
              "sqlite_scans": 0, "max_nodes_seen": 0}
    db = ResonanceDB(opts["db"], readonly=opts["readonly"])
    engine = VectorEngine(db, cache=True)
    conn = db.raw
    start_at = opts["start_at"]
    while time.time() < start_at:
        time.sleep(0.002)
    deadline = time.monotonic() + opts["seconds"]

    def violation(text: str) -> None:
        if len(violations) < 50:
            violations.append(text)

    while time.monotonic() < deadline:
        query = rng.standard_normal(dim).astype(np.float32)
        try:
            conn.execute("BEGIN")
            try:
                full = counts["transactions"] % 3 == 0  # every third pass reads the BLOBs too
                nodes = db.get_nodes(type=CONC_TYPE, exclude_content=not full)
                counters = {node.id: node.meta for node in db.get_nodes(type=COUNTER_TYPE)}
                counts["get_nodes"] += 2
                stats = db.get_stats()
                counts["get_stats"] += 1
                edges: dict[str, set[str]] = {}
                for source, target in conn.prepare(
                        "SELECT source, target FROM edges WHERE type = ?").execute((EDGE_TYPE,)):
                    edges.setdefault(source, set()).add(target)
                hits = engine.search_by_vector(query, 10)
                counts["cached_searches"] += 1
                scores, rowids = engine.scan_sqlite(query, 10, threshold=0.0)
                counts["sqlite_scans"] += 1
                id_of = conn.prepare("SELECT id FROM nodes WHERE rowid = ?")
                scan_ids = [id_of.first((int(rowid),))[0] for rowid in rowids]
                matrix_rows = engine.matrix.shape[0]
                (history_rows,) = conn.prepare(
                    "SELECT count(*) FROM history WHERE entity_type = 'node' "
                    "AND action = 'insert' AND entity_id LIKE 'w%'").first()
            finally:
                conn.execute("COMMIT")
        except DatabaseError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        counts["transactions"] += 1
        counts["max_nodes_seen"] = max(counts["max_nodes_seen"], len(nodes))
        ids = {node.id for node in nodes}
        per_writer = {w: 0 for w in range(writers)}
        for node in nodes:
            want = {f"{node.id}-a", f"{node.id}-b"}
            if edges.get(node.id) != want:
                violation(f"node {node.id} has edges {sorted(edges.get(node.id, ()))}")
            if full and (node.embedding is None or node.embedding.shape != (dim,)):
                violation(f"node {node.id} lacks its embedding")
            per_writer[node.meta["writer"]] += 1
        for source in edges.keys() - ids:
            violation(f"edges {sorted(edges[source])} outlive their deleted node {source}")
        for w in range(writers):
            meta = counters.get(f"counter-w{w}")
            live = meta.get("live", 0) if meta else 0
            if live != per_writer[w]:
                violation(f"writer {w}: counter says {live} live nodes, {per_writer[w]} visible")
        if history_rows < len(nodes):
            violation(f"{len(nodes)} nodes but only {history_rows} node-insert history rows")
        if not (stats.vectors == matrix_rows == len(nodes)):
            violation(f"vectors: stats {stats.vectors}, cached matrix {matrix_rows}, "
                      f"nodes {len(nodes)}")
        if scan_ids != [hit.id for hit in hits] or not np.allclose(
                scores, [hit.score for hit in hits], atol=1e-6):
            violation(f"the cached search found {[hit.id for hit in hits]}, "
                      f"the direct scan {scan_ids}")
    db.close()
    _write_json(opts["summary"], {**counts, "violations": violations, "errors": errors})


# -- crashes ----------------------------------------------------------------------------------------


def role_bulk(opts: dict[str, Any]) -> None:
    """Bulk inserts until killed (or ``seconds`` pass): batch k is the nodes ``batch-<k>-<i>``
    (i < bulk_size(k)) plus one edge from its first to its last node, in one transaction.
    Writes the ready file once the database is open; reports k after each commit."""
    import numpy as np

    from amalfa.db import Node, ResonanceDB

    db = ResonanceDB(opts["db"], create=True)
    report = _Report(opts["report"])
    Path(opts["ready"]).write_text("ready", encoding="utf-8")
    rng = np.random.default_rng(opts["first_batch"])
    deadline = time.monotonic() + opts["seconds"]
    batch = opts["first_batch"]
    while time.monotonic() < deadline:
        size = bulk_size(batch)
        vectors = rng.standard_normal((size, BULK_DIM)).astype(np.float32)
        nodes = [Node(f"batch-{batch}-{i}", BULK_TYPE, label=f"{i} of {size}",
                      summary="s" * (i % 50), embedding=vectors[i], meta={"batch": batch})
                 for i in range(size)]
        with db.transaction():
            db.insert_nodes(nodes)
            db.insert_edge(f"batch-{batch}-0", f"batch-{batch}-{size - 1}", "spans")
        report.line(str(batch))
        batch += 1
        if batch % 9 == 0:
            db.checkpoint()  # a kill may also land in a TRUNCATE checkpoint
    db.close()


def role_migrate(opts: dict[str, Any]) -> None:
    """Open (and so migrate) the database; print the seconds the open took."""
    from amalfa.db import ResonanceDB

    Path(opts["ready"]).write_text("ready", encoding="utf-8")  # imports done: opening now
    began = time.perf_counter()
    db = ResonanceDB(opts["db"])
    elapsed = time.perf_counter() - began
    report = db.migration_report
    db.close()
    print(json.dumps({"seconds": elapsed, "applied": list(report.applied),
                      "backup": str(report.backup) if report.backup else None}))


def role_build_original(opts: dict[str, Any]) -> None:
    """An original-system database at its second step (drizzle's bookkeeping, nodes without the
    summary column, edges, ember_state, history), with many rows. stdlib sqlite3 only."""
    import random
    import sqlite3

    rows, dim = opts["rows"], opts["dim"]
    rnd = random.Random(7)
    conn = sqlite3.connect(opts["db"])
    conn.executescript("""
        PRAGMA journal_mode = WAL;
        CREATE TABLE __drizzle_migrations (id SERIAL PRIMARY KEY, hash text NOT NULL,
                                           created_at numeric);
        CREATE TABLE edges (source text NOT NULL, target text NOT NULL, type text NOT NULL,
            confidence real DEFAULT 1, veracity real DEFAULT 1, context_source text,
            PRIMARY KEY (source, target, type));
        CREATE INDEX idx_edges_source ON edges (source);
        CREATE INDEX idx_edges_target ON edges (target);
        CREATE TABLE ember_state (file_path text PRIMARY KEY NOT NULL, last_analyzed text,
            sidecar_created integer, confidence real);
        CREATE TABLE nodes (id text PRIMARY KEY NOT NULL, type text, title text, domain text,
            layer text, embedding blob, hash text, meta text, date text);
        CREATE TABLE history (id integer PRIMARY KEY AUTOINCREMENT NOT NULL,
            entity_type text NOT NULL, entity_id text NOT NULL, action text NOT NULL,
            old_value text, new_value text, timestamp text DEFAULT (CURRENT_TIMESTAMP));
    """)
    conn.executemany("INSERT INTO __drizzle_migrations (hash, created_at) VALUES (?, ?)",
                     [("a" * 64, 1767000000000),
                      ("7b30e2bf86221fedb429141261731220b2b2616a8bb09d3f5fbadccb55f41b16",
                       1768308220948)])
    conn.executemany(
        "INSERT INTO nodes VALUES (?, 'document', ?, 'knowledge', 'experience', ?, ?, ?, "
        "'2024-01-01')",
        ((f"doc-{i}", f"Document {i}", rnd.randbytes(4 * dim), f"{i:08x}",
          json.dumps({"source": f"docs/doc-{i}.md", "n": i})) for i in range(rows)))
    conn.executemany("INSERT INTO edges (source, target, type) VALUES (?, ?, 'links_to')",
                     ((f"doc-{i}", f"doc-{(i * 7 + 1) % rows}") for i in range(rows)))
    conn.executemany("INSERT INTO history (entity_type, entity_id, action, new_value) "
                     "VALUES ('node', ?, 'insert', ?)",
                     ((f"doc-{i}", json.dumps({"id": f"doc-{i}"})) for i in range(0, rows, 2)))
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def role_foreign(opts: dict[str, Any]) -> None:
    """Another client: run statements through the stdlib sqlite3 module, one transaction.

    Parameters are JSON; ``{"hex": "..."}`` stands for a BLOB (use ``CAST(? AS TEXT)`` for text
    of arbitrary, not necessarily UTF-8, bytes). The statement ``__sleep__`` with ``[seconds]``
    keeps the transaction (and its locks) open that long, after printing ``holding``.
    """
    import sqlite3

    def param(value: Any) -> Any:
        if isinstance(value, dict) and "hex" in value:
            return bytes.fromhex(value["hex"])
        return value

    conn = sqlite3.connect(opts["db"], timeout=10)
    with conn:
        for sql, params in opts["statements"]:
            if sql == "__sleep__":  # hold whatever lock the transaction has
                print("holding", flush=True)
                time.sleep(params[0])
                continue
            conn.execute(sql, [param(p) for p in params])
    conn.close()


def role_create_race(opts: dict[str, Any]) -> None:
    """Wait for the common start time, then create-or-open the database and write one node."""
    from amalfa.db import Node, ResonanceDB

    while time.time() < opts["start_at"]:
        time.sleep(0.0005)
    db = ResonanceDB(opts["db"], create=True)
    with db.transaction():
        db.insert_node(Node(f"racer-{opts['worker']}", "racer"))
    db.close()
    print("ok")


def role_kernels(opts: dict[str, Any]) -> None:
    """Every scan kernel once on a small database, with skipped rows and unaligned BLOBs.

    Uses amalfa's own connection only (this role runs under valgrind)."""
    import numpy as np
    from amalfa._core.connection import Connection

    from amalfa._core import fafcas as kernels

    dim, n = 24, 300
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((n, dim)).astype(np.float32)
    kernels.normalize_rows_inplace(matrix)
    conn = Connection(opts["db"])
    conn.execute("CREATE TABLE v (id INTEGER PRIMARY KEY, embedding BLOB, pad TEXT)")
    insert = conn.prepare("INSERT INTO v (id, embedding, pad) VALUES (?, ?, ?)")
    conn.execute("BEGIN")
    for i in range(n):
        insert.run((i, matrix[i].tobytes(), "x" * (i % 7)))
    # rows the scans must skip: short, long, odd-length BLOBs, text, integers, NULL
    for i, value in enumerate([b"", b"\x01\x02\x03", matrix[0].tobytes()[:-1],
                               matrix[0].tobytes() + b"\x00", "x" * (4 * dim), 12345, None]):
        insert.run((n + i, value, ""))
    conn.execute("COMMIT")
    query = matrix[5].copy()
    scores, ids, skipped = kernels.scan_statement(
        conn.prepare("SELECT id, embedding FROM v ORDER BY id"), query, 10)
    assert ids[0] == 5 and skipped == 7 and scores[0] > 0.99, (ids, skipped)
    scores, ids, skipped = kernels.scan_statement(
        conn.prepare("SELECT id, embedding FROM v WHERE id % 3 = 1"), query, 1000)
    assert len(ids) == len(scores) == n // 3
    out = np.empty((n, dim), dtype=np.float32)
    rowids = np.empty(n, dtype=np.int64)
    filled, skipped, pending = kernels.load_matrix(
        conn.prepare("SELECT id, embedding FROM v ORDER BY id"), out, rowids)
    assert filled == n and skipped == 7 and not pending, (filled, skipped, pending)
    noted = np.full(4, -1, np.int64)  # room for fewer skipped ids than there are
    filled, skipped, pending = kernels.load_matrix(
        conn.prepare("SELECT id, embedding FROM v ORDER BY id"), out, rowids, skipped_ids=noted)
    assert skipped == 7 and noted.tolist() == [n, n + 1, n + 2, n + 3], noted
    small = np.empty((10, dim), dtype=np.float32)
    filled, skipped, pending = kernels.load_matrix(
        conn.prepare("SELECT id, embedding FROM v ORDER BY id"), small, np.empty(10, np.int64))
    assert filled == 10 and pending
    top_scores, top_index = kernels.topk_matrix(out, query, 7)
    assert top_index[0] == 5 and top_scores[0] > 0.99
    kernels.topk_matrix(out, query, 10_000)  # k beyond n
    kernels.topk_matrix(out[:0], query, 3)  # no rows
    kernels.topk_matrix(out, query, 7, 0.5, 2)  # two threads
    kernels.topk_matrix_batch(out, matrix[:4].copy(), 5)
    kernels.topk_matrix_batch(out, matrix[:4].copy(), 5, -1.0, 2)
    kernels.scores_matrix(out, query)
    codes, scales = np.empty((n, dim), np.int8), np.empty(n, np.float32)
    kernels.quantize_rows(out, codes, scales)
    query_codes, query_scale = kernels.quantize_query(query)
    _, near = kernels.topk_int8(codes, scales, query_codes, query_scale, 7)
    assert near[0] == 5, near
    kernels.topk_int8(codes, scales, query_codes, query_scale, 7, -1.0, 2)  # two threads
    vec = rng.standard_normal(37).astype(np.float32)
    kernels.normalize_inplace(vec)
    kernels.normalize_inplace(np.zeros(5, np.float32))
    kernels.normalize_inplace(np.full(9, 1e-45, np.float32))
    kernels.normalize_rows_inplace(rng.standard_normal((17, 33)).astype(np.float32))
    kernels.normalize_rows_inplace(rng.standard_normal((17, 33)).astype(np.float32), 2)
    kernels.dot(vec, vec)
    conn.close()
    print("KERNELS-OK", flush=True)
    if opts.get("control"):
        # a deliberate out-of-bounds read (dot trusts its caller to pass equal lengths: a 64-d
        # vector with an 8-d one reads past the shorter; the matrix kernels check the query's
        # dimension now), so the test can see that memcheck reports ours; on a thread named for
        # it, so its reports are told apart from any real ones
        import ctypes
        import threading

        def control() -> None:
            ctypes.CDLL(None).prctl(15, b"amalfa-control", 0, 0, 0)  # PR_SET_NAME
            kernels.dot(np.ones(64, np.float32), np.ones(8, np.float32))

        thread = threading.Thread(target=control)
        thread.start()
        thread.join()
        print("CONTROL-DONE", flush=True)


ROLES = {
    "writer": role_writer,
    "reader": role_reader,
    "bulk": role_bulk,
    "migrate": role_migrate,
    "build_original": role_build_original,
    "foreign": role_foreign,
    "create_race": role_create_race,
    "kernels": role_kernels,
}


if __name__ == "__main__":
    ROLES[sys.argv[1]](json.loads(sys.argv[2]))

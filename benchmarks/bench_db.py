"""pytest-benchmark suite for ResonanceDB, each case beside its stdlib sqlite3 peer.

    python -m pytest benchmarks/bench_db.py --benchmark-group-by=group

``AMALFA_BENCH_NODES`` (default 20000) sets the bulk-insert size and ``AMALFA_BENCH_READS``
(default 5000) the number of point reads per round; ``benchmarks/compare_db.py`` runs the full
100k-node comparison and prints the ratios. Both sides use the same schema (amalfa's migrations),
the same six pragmas, the same SQL and, for "history on", the same temporary audit triggers; they
never open the same file at once (two copies of SQLite in one process must not share a file).
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from compare_db import fresh_path, make_nodes, stdlib_connect, stdlib_params

from amalfa._core.connection import Connection
from amalfa.db import Node, ResonanceDB
from amalfa.db import nodes as db_nodes
from amalfa.db import validation as db_validation
from amalfa.factory import DatabaseFactory

NODES = int(os.environ.get("AMALFA_BENCH_NODES", "20000"))
READS = int(os.environ.get("AMALFA_BENCH_READS", "5000"))
DIM = 384
ROUNDS = 5


@pytest.fixture(scope="module")
def nodes() -> list[Node]:
    return make_nodes(NODES, DIM)


@pytest.fixture(scope="module")
def read_files(tmp_path_factory: pytest.TempPathFactory, nodes: list[Node]) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("reads")
    ours = folder / "amalfa.db"
    with ResonanceDB.create(ours, history=False) as db:
        db.insert_nodes(nodes)
        db.checkpoint()
    theirs = folder / "stdlib.db"
    shutil.copyfile(ours, theirs)
    return ours, theirs


@pytest.fixture(scope="module")
def read_ids(nodes: list[Node]) -> list[str]:
    rng = random.Random(1)
    return [nodes[rng.randrange(len(nodes))].id for _ in range(READS)]


# -- bulk insert ------------------------------------------------------------------------------------


@pytest.mark.parametrize("history", [False, True], ids=["history-off", "history-on"])
def test_insert_nodes_amalfa(benchmark, tmp_path: Path, nodes: list[Node], history: bool) -> None:
    benchmark.group = f"insert {NODES} nodes, {'history on' if history else 'history off'}"
    state: dict[str, ResonanceDB] = {}

    def setup():
        if "db" in state:
            state["db"].close()
        state["db"] = ResonanceDB.create(fresh_path(tmp_path, "amalfa.db"), history=history)
        return (state["db"],), {}

    benchmark.pedantic(lambda db: db.insert_nodes(nodes), setup=setup, rounds=ROUNDS)
    assert state["db"].get_stats().nodes == NODES
    state["db"].close()
    benchmark.extra_info["rows_per_s"] = NODES / benchmark.stats.stats.median


@pytest.mark.parametrize("history", [False, True], ids=["history-off", "history-on"])
def test_insert_nodes_stdlib(benchmark, tmp_path: Path, nodes: list[Node], history: bool) -> None:
    benchmark.group = f"insert {NODES} nodes, {'history on' if history else 'history off'}"
    state: dict[str, sqlite3.Connection] = {}

    def setup():
        if "conn" in state:
            state["conn"].close()
        path = fresh_path(tmp_path, "stdlib.db")
        ResonanceDB.create(path).close()  # the same schema
        state["conn"] = stdlib_connect(path, history=history)
        return (state["conn"],), {}

    def insert(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(db_nodes._UPSERT_NODE, stdlib_params(nodes))
        conn.execute("COMMIT")

    benchmark.pedantic(insert, setup=setup, rounds=ROUNDS)
    assert state["conn"].execute("SELECT count(*) FROM nodes").fetchone() == (NODES,)
    state["conn"].close()
    benchmark.extra_info["rows_per_s"] = NODES / benchmark.stats.stats.median


# -- point reads ------------------------------------------------------------------------------------


def test_get_node_amalfa(benchmark, read_files: tuple[Path, Path], read_ids: list[str]) -> None:
    benchmark.group = f"get_node x {READS}"
    with ResonanceDB(read_files[0], history=False) as db:
        get = db.get_node

        def reads() -> None:
            for node_id in read_ids:
                get(node_id)

        benchmark.pedantic(reads, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info["reads_per_s"] = READS / benchmark.stats.stats.median


def test_get_node_stdlib(benchmark, read_files: tuple[Path, Path], read_ids: list[str]) -> None:
    benchmark.group = f"get_node x {READS}"
    conn = stdlib_connect(read_files[1], history=False)
    cursor = conn.cursor()
    sql, build = db_nodes._SELECT_NODE, db_validation.node_from_row

    def reads() -> None:
        for node_id in read_ids:
            cursor.execute(sql, (node_id,))
            row = cursor.fetchone()
            if row is not None:
                build(row)

    benchmark.pedantic(reads, rounds=ROUNDS, warmup_rounds=1)
    conn.close()
    benchmark.extra_info["reads_per_s"] = READS / benchmark.stats.stats.median


# -- other paths (amalfa only) ----------------------------------------------------------------------


def test_insert_node_one_at_a_time(benchmark, tmp_path: Path, nodes: list[Node]) -> None:
    benchmark.group = "single writes x 1000 (autocommit)"
    with ResonanceDB.create(tmp_path / "single.db") as db:
        batch = nodes[:1000]

        def writes() -> None:
            for node in batch:
                db.insert_node(node)

        benchmark.pedantic(writes, rounds=ROUNDS)


def test_get_nodes_exclude_content(benchmark, read_files: tuple[Path, Path]) -> None:
    benchmark.group = "get_nodes metadata scan"
    with ResonanceDB(read_files[0], history=False) as db:
        result = benchmark.pedantic(lambda: db.get_nodes(exclude_content=True), rounds=ROUNDS)
    assert len(result) == NODES and result[0].embedding is None


# -- waiting for a lock ---------------------------------------------------------------------------
# How long a writer waits for a write lock another connection holds for 50 ms. amalfa's busy
# handler polls every 1-3 ms (with jitter), so the wait should stay near 50 ms; the stdlib's
# default handler backs off (1, 2, 5, 10 ... 100 ms sleeps). Each side on its own file.

LOCK_HELD_S = 0.05


def _wait_for_a_held_lock(blocker_execute, writer_execute) -> None:
    blocker_execute("BEGIN IMMEDIATE")
    release = threading.Timer(LOCK_HELD_S, lambda: blocker_execute("COMMIT"))
    release.start()
    writer_execute("INSERT INTO t VALUES (1)")
    release.join()


def _bench_busy_wait(benchmark, writer, blocker) -> None:
    try:
        writer.execute("CREATE TABLE t (x)")
        benchmark.pedantic(_wait_for_a_held_lock, args=(blocker.execute, writer.execute),
                           rounds=ROUNDS * 4)
    finally:
        blocker.close()
        writer.close()


@pytest.mark.benchmark(group="busy-wait-50ms")
def test_busy_wait_amalfa(benchmark, tmp_path: Path) -> None:
    path = tmp_path / "busy-amalfa.db"
    writer = DatabaseFactory.connect(path)
    _bench_busy_wait(benchmark, writer, Connection(path))


@pytest.mark.benchmark(group="busy-wait-50ms")
def test_busy_wait_stdlib(benchmark, tmp_path: Path) -> None:
    path = tmp_path / "busy-stdlib.db"
    writer = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode = WAL")
    blocker = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    _bench_busy_wait(benchmark, writer, blocker)

"""Concurrent processes on one database file: nothing is lost, nothing is seen half-done.

Four writer processes and four reader processes share one file for 22 seconds (see
``reliability_workers.role_writer`` / ``role_reader`` for what each transaction holds and which
invariants the readers check inside every read transaction). Then every transaction a writer
reported committed must be present, every deletion it reported must be absent, and the file must
pass ``PRAGMA integrity_check``. No BusyError or "database is locked" may reach a caller.

Where SQLite needs a retry that the library cannot make for the caller (a read transaction the
caller opened and then wrote in: SQLITE_BUSY_SNAPSHOT), a test pins the behaviour down so the
documentation can name it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from reliability_workers import (
    CONC_TYPE,
    COUNTER_TYPE,
    EDGE_TYPE,
    read_lines,
    record_figures,
    worker_command,
    worker_env,
)

from amalfa.db import Node, ResonanceDB
from amalfa.errors import BusyError
from amalfa.migrations import latest_version

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

WRITERS = 4
READERS = 4
SECONDS = 22.0
DIM = 32
THINK_MS = 2.0
SQLITE_BUSY_SNAPSHOT = 5 | (2 << 8)  # 517


def _wait_all(processes: list[subprocess.Popen[str]], timeout: float, *,
              every: Callable[[], None] | None = None) -> list[tuple[int, str]]:
    """Wait for every process within ``timeout`` seconds in total (calling ``every`` four times
    a second meanwhile); kill the ones still running then."""
    deadline = time.monotonic() + timeout
    while any(process.poll() is None for process in processes) and time.monotonic() < deadline:
        if every is not None:
            every()
        time.sleep(0.25)
    results = []
    for process in processes:
        note = ""
        if process.poll() is None:
            process.kill()
            note = f"(killed: still running after {timeout:g} s)\n"
        _, err = process.communicate(timeout=30)
        results.append((process.returncode, note + err))
    return results


def _spawn(path: Path, folder: Path, *, writers: int, readers: int, seconds: float,
           think_ms: float) -> list[subprocess.Popen[str]]:
    """Start the writer and reader processes; they begin together once all have imported."""
    start_at = time.time() + 4.0
    processes = []
    for w in range(writers):
        processes.append(subprocess.Popen(
            worker_command("writer", db=str(path), worker=w, dim=DIM, seconds=seconds,
                           start_at=start_at, think_ms=think_ms,
                           report=str(folder / f"writer-{w}.log"),
                           summary=str(folder / f"writer-{w}.json")),
            env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for r in range(readers):
        processes.append(subprocess.Popen(
            worker_command("reader", db=str(path), worker=r, dim=DIM, seconds=seconds,
                           start_at=start_at, writers=writers, readonly=r % 2 == 1,
                           summary=str(folder / f"reader-{r}.json")),
            env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    return processes


def _wal_meter(path: Path) -> tuple[list[int], Callable[[], None]]:
    """A list of -wal file sizes and the function that appends the current one."""
    wal = path.with_name(path.name + "-wal")
    sizes = [0]

    def measure() -> None:
        try:
            sizes.append(wal.stat().st_size)
        except FileNotFoundError:
            pass

    return sizes, measure


def _new_database(path: Path, writers: int) -> None:
    with ResonanceDB.create(path, dimensions=DIM) as db:
        for w in range(writers):
            db.insert_node(Node(f"counter-w{w}", COUNTER_TYPE, meta={"live": 0}))


def _remove_database(path: Path) -> None:
    """The files are large (the WAL reaches gigabytes); pytest keeps three runs of tmp_path."""
    for file in path.parent.glob(path.name + "*"):
        file.unlink()


@pytest.mark.timeout(180)
def test_four_writers_and_four_readers_lose_nothing(tmp_path: Path, tmp_path_factory,
                                                    record_property) -> None:
    path = tmp_path / "shared.db"
    _new_database(path, WRITERS)
    processes = _spawn(path, tmp_path, writers=WRITERS, readers=READERS, seconds=SECONDS,
                       think_ms=THINK_MS)
    wal_sizes, measure_wal = _wal_meter(path)
    results = _wait_all(processes, timeout=SECONDS + 90, every=measure_wal)
    for index, (code, err) in enumerate(results):
        assert code == 0, f"worker {index} exited with {code}:\n{err[-3000:]}"

    writers = [json.loads((tmp_path / f"writer-{w}.json").read_text()) for w in range(WRITERS)]
    readers = [json.loads((tmp_path / f"reader-{r}.json").read_text()) for r in range(READERS)]
    for w, summary in enumerate(writers):
        assert summary["errors"] == [], f"writer {w} saw errors: {summary['errors'][:5]}"
        assert summary["transactions"] > 0
    for r, summary in enumerate(readers):
        assert summary["errors"] == [], f"reader {r} saw errors: {summary['errors'][:5]}"
        assert summary["violations"] == [], f"reader {r} saw: {summary['violations'][:10]}"
        assert summary["transactions"] > 0

    # every reported commit is there, every reported deletion is gone
    added: set[str] = set()
    deleted: set[str] = set()
    for w in range(WRITERS):
        for line in read_lines(tmp_path / f"writer-{w}.log"):
            (added if line[0] == "+" else deleted).add(line[1:])
    expected = added - deleted
    with ResonanceDB(path) as db:
        assert db.raw.execute("PRAGMA integrity_check") == [("ok",)]
        present = {node.id for node in db.get_nodes(type=CONC_TYPE, exclude_content=True)}
        assert expected - present == set(), "reported commits are missing"
        assert present & deleted == set(), "reported deletions are back"
        assert present == expected  # and nothing unreported committed: each writer ran to its end
        edges = db.raw.execute("SELECT source, target FROM edges WHERE type = ?", (EDGE_TYPE,))
        assert sorted(edges) == sorted(
            (node_id, f"{node_id}-{end}") for node_id in expected for end in "ab")
        inserted = {row[0] for row in db.raw.execute(
            "SELECT entity_id FROM history WHERE entity_type = 'node' AND action = 'insert'")}
        assert added <= inserted, "a committed node has no history row"
        removed = {row[0] for row in db.raw.execute(
            "SELECT entity_id FROM history WHERE entity_type = 'node' AND action = 'delete'")}
        assert removed == deleted
        for w in range(WRITERS):
            live = db.get_node(f"counter-w{w}").meta["live"]
            assert live == sum(1 for node_id in expected if node_id.startswith(f"w{w}-"))
        stats = db.get_stats()
        (pages,) = db.raw.execute("PRAGMA page_count")[0]
        (page_size,) = db.raw.execute("PRAGMA page_size")[0]
    _remove_database(path)

    transactions = sum(summary["transactions"] for summary in writers)
    record_figures("concurrency", {
        "writers": WRITERS, "readers": READERS, "seconds": SECONDS,
        "write_transactions": transactions,
        "write_transactions_per_second": round(transactions / SECONDS, 1),
        "writer_latency_p50_ms": round(float(np.median(
            [s["latency_p50_ms"] for s in writers])), 2),
        "writer_latency_p99_ms": round(max(s["latency_p99_ms"] for s in writers), 2),
        "writer_latency_max_ms": round(max(s["latency_max_ms"] for s in writers), 2),
        "writer_transactions_over_1s": sum(s["over_1s"] for s in writers),
        "read_transactions": sum(s["transactions"] for s in readers),
        "read_transactions_per_second": round(
            sum(s["transactions"] for s in readers) / SECONDS, 1),
        "reader_calls": {key: sum(s[key] for s in readers)
                         for key in ("get_nodes", "get_stats", "cached_searches", "sqlite_scans")},
        "nodes_at_end": len(present), "deleted": len(deleted),
        "busy_errors": 0, "invariant_violations": 0,
        "db_file_mb": round(pages * page_size / 2**20, 1),
        "wal_peak_mb": round(max(wal_sizes) / 2**20, 1),
        "db_size_mb_with_wal_at_end": round(stats.db_size_mb, 1),
    }, base=tmp_path_factory.getbasetemp(), record_property=record_property)


@pytest.mark.timeout(120)
def test_processes_creating_the_same_new_database_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "new" / "race.db"
    start_at = time.time() + 2.5
    processes = [subprocess.Popen(
        worker_command("create_race", db=str(path), worker=w, start_at=start_at),
        env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(8)]
    results = _wait_all(processes, timeout=90)
    for index, (code, err) in enumerate(results):
        assert code == 0, f"racer {index} exited with {code}:\n{err[-3000:]}"
    with ResonanceDB(path) as db:
        assert db.raw.execute("PRAGMA integrity_check") == [("ok",)]
        assert sorted(n.id for n in db.get_nodes(type="racer")) == sorted(
            f"racer-{w}" for w in range(8))
        versions = db.raw.execute("SELECT version FROM amalfa_migrations ORDER BY version")
        # each migration recorded exactly once
        assert versions == [(v,) for v in range(1, latest_version() + 1)]


def _foreign_write(path: Path, node_id: str) -> None:
    """Commit a node from another process (the stdlib sqlite3 module)."""
    subprocess.run(worker_command("foreign", db=str(path), statements=[
        ["INSERT INTO nodes (id, type) VALUES (?, 'foreign')", [node_id]]]),
        env=worker_env(), check=True, timeout=60)


@pytest.mark.timeout(120)
def test_a_read_transaction_that_writes_after_another_commit_gets_busy_snapshot(
        tmp_path: Path) -> None:
    """The one place a caller must retry: SQLite cannot upgrade a read snapshot that another
    process has moved past, and waiting cannot help, so it answers SQLITE_BUSY_SNAPSHOT at once.
    ResonanceDB's own writes never read first inside a deferred transaction (``transaction()``
    and ``begin()`` take the write lock with BEGIN IMMEDIATE), so they never see it; a caller who
    opens ``BEGIN`` on ``db.raw`` to read and then writes must roll back and retry."""
    path = tmp_path / "snapshot.db"
    with ResonanceDB.create(path) as db:
        db.insert_node(Node("first", "doc"))
        db.raw.execute("BEGIN")  # a deferred (read) transaction, opened by the caller
        assert len(db.get_nodes()) == 1  # the snapshot starts here
        _foreign_write(path, "from-another-process")
        with pytest.raises(BusyError) as caught:
            db.insert_node(Node("second", "doc"))
        assert caught.value.extended_result == SQLITE_BUSY_SNAPSHOT
        db.raw.execute("ROLLBACK")
        # the retry: a write transaction (BEGIN IMMEDIATE) sees the other commit and succeeds
        with db.transaction():
            db.insert_node(Node("second", "doc"))
        assert sorted(n.id for n in db.get_nodes()) == ["first", "from-another-process",
                                                        "second"]
        # and ResonanceDB's transactions, even while another process keeps committing, never
        # meet the error: the write lock is taken before anything is read
        for i in range(5):
            _foreign_write(path, f"foreign-{i}")
            with db.transaction():
                assert db.get_node(f"foreign-{i}") is not None
                db.insert_node(Node(f"mine-{i}", "doc"))


@pytest.mark.timeout(120)
def test_a_lock_held_past_the_busy_timeout_raises_busy_error_instead_of_hanging(
        tmp_path: Path) -> None:
    """busy_timeout bounds the wait: a writer that keeps the lock longer than 5 s makes the
    others fail with BusyError (naming the lock), the database unchanged, rather than hang."""
    path = tmp_path / "held.db"
    with ResonanceDB.create(path) as db:
        db.insert_node(Node("before", "doc"))
    holder = subprocess.Popen(
        worker_command("foreign", db=str(path), statements=[
            ["INSERT INTO nodes (id, type) VALUES ('held', 'doc')", []],
            ["__sleep__", [8]],  # the write lock is held for 8 s, longer than busy_timeout
        ]), env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"  # blocks until the lock is held
        with ResonanceDB(path) as db:
            with pytest.raises(BusyError, match="locked"), db.transaction():
                db.insert_node(Node("blocked", "doc"))
            assert db.get_node("blocked") is None
        assert holder.wait(timeout=60) == 0, holder.stderr.read()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
    with ResonanceDB(path) as db:
        assert sorted(n.id for n in db.get_nodes()) == ["before", "held"]


@pytest.mark.timeout(120)
def test_the_wal_stays_bounded_under_continuous_readers(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    _new_database(path, 1)
    processes = _spawn(path, tmp_path, writers=1, readers=2, seconds=8.0, think_ms=0)
    wal_sizes, measure_wal = _wal_meter(path)
    try:
        results = _wait_all(processes, timeout=60, every=measure_wal)
        for index, (code, err) in enumerate(results):
            assert code == 0, f"worker {index} exited with {code}:\n{err[-3000:]}"
        assert json.loads((tmp_path / "writer-0.json").read_text())["transactions"] > 0
        peak_mb = max(wal_sizes) / 2**20
        assert peak_mb < 128, f"the WAL reached {peak_mb:.0f} MB"
    finally:
        _remove_database(path)

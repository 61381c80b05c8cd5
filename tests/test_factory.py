"""DatabaseFactory: canonical pragmas, the journal-mode check and the health probe."""

from __future__ import annotations

import sqlite3

import pytest

from amalfa import DatabaseFactory, errors
from amalfa._core.connection import Connection


def test_every_canonical_pragma_on_a_new_connection(tmp_path):
    conn = DatabaseFactory.connect(tmp_path / "p.db")
    assert DatabaseFactory.read_pragmas(conn) == {
        "busy_timeout": 5000,
        "journal_mode": "wal",
        "synchronous": 1,  # NORMAL
        "mmap_size": 0,
        "temp_store": 2,  # MEMORY
        "foreign_keys": 1,
    }
    conn.close()


def test_wal_database_is_not_switched_again(tmp_path):
    path = tmp_path / "wal.db"
    DatabaseFactory.connect(path).close()
    # Hold a read transaction open in another connection: switching the journal mode would need
    # an exclusive lock and fail with "database is locked"; a factory that only reads the mode
    # and sees WAL already opens without trying.
    reader = Connection(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM sqlite_schema")
    conn = DatabaseFactory.connect(path)
    assert conn.execute("PRAGMA journal_mode") == [("wal",)]
    reader.execute("ROLLBACK")
    reader.close()
    conn.close()


def test_rollback_journal_database_is_switched_to_wal(tmp_path):
    path = tmp_path / "delete.db"
    plain = sqlite3.connect(path)
    plain.execute("PRAGMA journal_mode = DELETE")
    plain.execute("CREATE TABLE t (x)")
    plain.commit()
    plain.close()
    conn = DatabaseFactory.connect(path)
    assert conn.execute("PRAGMA journal_mode") == [("wal",)]
    conn.close()


def test_readonly_refuses_writes_and_never_changes_the_journal(tmp_path):
    path = tmp_path / "ro.db"
    plain = sqlite3.connect(path)
    plain.execute("CREATE TABLE t (x)")
    plain.commit()
    plain.close()
    ro = DatabaseFactory.connect(path, readonly=True)
    assert ro.execute("PRAGMA journal_mode") == [("delete",)]
    with pytest.raises(errors.ReadOnlyError):
        ro.execute("INSERT INTO t VALUES (1)")
    report = DatabaseFactory.perform_health_check(ro)
    assert report.status == "degraded"
    assert "journal_mode is delete, not wal" in report.warnings
    assert "read-only connection: write probe skipped" in report.warnings
    ro.close()


def test_missing_file_without_create_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(errors.CantOpenError, match="does not exist.*nope.db"):
        DatabaseFactory.connect(missing, create=False)
    with pytest.raises(errors.CantOpenError):
        DatabaseFactory.connect_to_resonance(missing, readonly=True)
    assert not missing.exists()


def test_connect_to_resonance_creates_its_folder(tmp_path):
    path = tmp_path / ".amalfa" / "runtime" / "resonance.db"
    conn = DatabaseFactory.connect_to_resonance(path)
    assert path.exists()
    assert DatabaseFactory.perform_health_check(conn).healthy
    conn.close()


def test_health_check_probe_keeps_ten_rows(tmp_path):
    conn = DatabaseFactory.connect(tmp_path / "h.db")
    for _ in range(25):
        report = DatabaseFactory.perform_health_check(conn)
        assert report.status == "healthy" and report.warnings == []
    ids = [row[0] for row in conn.execute("SELECT id FROM _health ORDER BY id")]
    assert ids == list(range(16, 26))  # the 10 newest
    conn.close()


def test_health_check_reports_drift(tmp_path):
    conn = DatabaseFactory.connect(tmp_path / "d.db")
    conn.execute("PRAGMA busy_timeout = 100")
    conn.execute("PRAGMA mmap_size = 1048576")
    conn.execute("PRAGMA foreign_keys = OFF")
    report = DatabaseFactory.perform_health_check(conn)
    assert report.status == "degraded"
    assert "busy_timeout is 100 ms, under 5000" in report.warnings
    assert "mmap_size is 1048576, not 0" in report.warnings
    assert "foreign_keys is off" in report.warnings
    conn.close()


def test_health_check_inside_a_transaction_rides_a_savepoint(tmp_path):
    conn = DatabaseFactory.connect(tmp_path / "s.db")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (1)")
    DatabaseFactory.perform_health_check(conn)
    assert conn.in_transaction
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM t") == [(0,)]
    conn.close()


def test_failing_probe_raises(tmp_path):
    conn = DatabaseFactory.connect(tmp_path / "f.db")
    # a trigger that rejects the probe's insert makes the probe fail
    conn.executescript(
        "CREATE TABLE _health (id INTEGER PRIMARY KEY AUTOINCREMENT, token TEXT NOT NULL,"
        " checked_at TEXT);"
        "CREATE TRIGGER no_probe BEFORE INSERT ON _health BEGIN SELECT RAISE(ABORT, 'disk says no'); END;")
    with pytest.raises(errors.HealthCheckError, match="disk says no"):
        DatabaseFactory.perform_health_check(conn)
    assert not conn.in_transaction
    conn.close()


def test_busy_timeout_waits_for_a_competing_writer(tmp_path):
    import threading

    path = tmp_path / "b.db"
    conn = DatabaseFactory.connect(path)
    conn.execute("CREATE TABLE t (x)")
    blocker = Connection(path)
    blocker.execute("BEGIN IMMEDIATE")
    blocker.execute("INSERT INTO t VALUES (1)")
    threading.Timer(0.3, lambda: blocker.execute("COMMIT")).start()
    conn.execute("INSERT INTO t VALUES (2)")  # waits instead of raising BusyError
    assert conn.execute("SELECT count(*) FROM t") == [(2,)]
    blocker.close()
    conn.close()


def test_fair_busy_handler_keeps_the_timeout_and_gives_up_at_it(tmp_path):
    import time

    path = tmp_path / "t.db"
    conn = DatabaseFactory.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.set_busy_timeout(200)
    assert conn.execute("PRAGMA busy_timeout") == [(200,)]
    blocker = Connection(path)
    blocker.execute("BEGIN IMMEDIATE")
    start = time.monotonic()
    with pytest.raises(errors.BusyError):
        conn.execute("INSERT INTO t VALUES (1)")
    assert time.monotonic() - start >= 0.19
    blocker.execute("ROLLBACK")
    blocker.close()
    conn.close()

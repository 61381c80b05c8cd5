"""Migrations: fresh and repeated opens, concurrent openers, backups, newer schemas, and the
adoption of databases built by the original system at each of its three steps."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from amalfa import migrations
from amalfa.db import Node, ResonanceDB
from amalfa.errors import DatabaseError, ReadOnlyError, SchemaVersionError
from amalfa.factory import DatabaseFactory

# -- the original system's SQL, step by step (drizzle's migration files, verbatim in substance) ----

ORIGINAL_STEPS = [
    """
    CREATE TABLE `edges` (
        `source` text NOT NULL,
        `target` text NOT NULL,
        `type` text NOT NULL,
        `confidence` real DEFAULT 1,
        `veracity` real DEFAULT 1,
        `context_source` text,
        PRIMARY KEY(`source`, `target`, `type`)
    );
    CREATE INDEX `idx_edges_source` ON `edges` (`source`);
    CREATE INDEX `idx_edges_target` ON `edges` (`target`);
    CREATE TABLE `ember_state` (
        `file_path` text PRIMARY KEY NOT NULL,
        `last_analyzed` text,
        `sidecar_created` integer,
        `confidence` real
    );
    CREATE TABLE `nodes` (
        `id` text PRIMARY KEY NOT NULL,
        `type` text,
        `title` text,
        `domain` text,
        `layer` text,
        `embedding` blob,
        `hash` text,
        `meta` text,
        `date` text
    );
    """,
    """
    CREATE TABLE `history` (
        `id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
        `entity_type` text NOT NULL,
        `entity_id` text NOT NULL,
        `action` text NOT NULL,
        `old_value` text,
        `new_value` text,
        `timestamp` text DEFAULT (CURRENT_TIMESTAMP)
    );
    """,
    "ALTER TABLE `nodes` ADD `summary` text;",
]
DRIZZLE_WHEN = [1767981411501, 1768308220948, 1769588665479]
DIM = 6
# every shipped migration (later issues add their own after the original three)
LATEST = migrations.latest_version()
ALL = tuple(range(1, LATEST + 1))


def original_vector(i: int) -> bytes:
    v = np.arange(1, DIM + 1, dtype=np.float32) * (i + 1)
    return (v / np.linalg.norm(v)).astype(np.float32).tobytes()


def build_original(path: Path, steps: int, *, drizzle: bool = True, rows: bool = True) -> None:
    """A database as the original system left it after ``steps`` of its migrations."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    if drizzle:
        conn.execute('CREATE TABLE IF NOT EXISTS "__drizzle_migrations" '
                     "(id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric)")
    for step in range(steps):
        conn.execute("BEGIN")
        for statement in ORIGINAL_STEPS[step].split(";"):
            if statement.strip():
                conn.execute(statement)
        if drizzle:
            conn.execute("INSERT INTO __drizzle_migrations (hash, created_at) VALUES (?, ?)",
                         (f"hash-{step}", DRIZZLE_WHEN[step]))
        conn.execute("COMMIT")
    if rows:
        for i in range(5):
            conn.execute(
                "INSERT INTO nodes (id, type, title, domain, layer, embedding, hash, meta, date) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (f"doc-{i}", "document", f"Doc {i}", "knowledge", "experience",
                 original_vector(i) if i % 2 == 0 else None, f"h{i}",
                 json.dumps({"tags": [str(i)]}) if i else None, "2025-12-0" + str(i + 1)))
        conn.executemany("INSERT INTO edges (source, target, type) VALUES (?, ?, ?)",
                         [("doc-0", "doc-1", "related_to"), ("doc-1", "doc-2", "cites")])
        conn.execute("INSERT INTO edges VALUES ('doc-2', 'doc-0', 'supports', 0.5, 0.25, 'x.md')")
        conn.execute("INSERT INTO ember_state VALUES ('docs/a.md', '2025-12-01', 1, 0.9)")
        if steps >= 2:
            conn.execute("INSERT INTO history (entity_type, entity_id, action, new_value) "
                         "VALUES ('node', 'doc-0', 'upsert', '{\"id\":\"doc-0\"}')")
        if steps >= 3:
            conn.execute("UPDATE nodes SET summary = 'Summary of doc 3' WHERE id = 'doc-3'")
    conn.close()


def table_rows(path: Path, table: str, columns: str = "*") -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT {columns} FROM {table} ORDER BY rowid").fetchall()
    finally:
        conn.close()


def other_programs_database(path: Path, *statements: str) -> None:
    """A database some other program made: ``statements`` run by the stdlib module."""
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def tables(path: Path) -> set[str]:
    return {row[0] for row in table_rows(path, "sqlite_schema WHERE type = 'table'", "name")}


def dump(path: Path) -> list[str]:
    """The schema and every row, read with amalfa's own SQLite (the stdlib's may be too old to
    parse the FTS5 options of later migrations)."""
    conn = DatabaseFactory.connect(path, readonly=True)
    try:
        out: list[str] = []
        for kind, name, sql in conn.execute(
                "SELECT type, name, sql FROM sqlite_schema ORDER BY type, name"):
            out.append(str(sql))
            if kind == "table":  # sorted here: FTS5's shadow tables have no rowid
                out.extend(sorted(repr(row) for row in conn.execute(f'SELECT * FROM "{name}"')))
        return out
    finally:
        conn.close()


ORIGINAL_NODE_COLUMNS = "id, type, title, domain, layer, embedding, hash, meta, date"

# -- the shipped migrations -------------------------------------------------------------------------


def test_the_shipped_migrations_load_in_order() -> None:
    shipped = migrations.load_migrations()
    # later issues add migrations after these three; the numbers have no gaps
    assert [m.version for m in shipped] == list(range(1, len(shipped) + 1))
    assert migrations.latest_version() == len(shipped) >= 3
    assert [m.name for m in shipped[:3]] == ["0001_initial", "0002_history",
                                             "0003_node_summary"]
    assert "CREATE TABLE IF NOT EXISTS nodes" in shipped[0].sql
    assert "history" in shipped[1].sql
    assert "ADD summary" in shipped[2].sql
    assert all(len(m.checksum) == 64 for m in shipped)


def test_fresh_database_gets_every_migration(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    with ResonanceDB.create(path) as db:
        report = db.migration_report
    assert (report.from_version, report.to_version, report.applied) == (0, LATEST, ALL)
    assert not report.adopted
    assert report.backup is None  # nothing to back up in a new database
    assert not (tmp_path / "backups").exists()
    recorded = table_rows(path, "amalfa_migrations", "version, name, checksum, applied_at")
    shipped = migrations.load_migrations()
    assert [r[:3] for r in recorded] == [(m.version, m.name, m.checksum) for m in shipped]
    assert all(r[3] for r in recorded)
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(nodes)")]
    assert columns == ["id", "type", "title", "domain", "layer", "embedding", "hash", "meta",
                       "date", "summary"]  # the original's column order
    indexes = {row[0] for row in table_rows(path, "sqlite_schema WHERE type = 'index'", "name")}
    assert {"idx_edges_source", "idx_edges_target"} <= indexes
    assert "__drizzle_migrations" not in tables(path)


def test_reopening_applies_nothing_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "again.db"
    with ResonanceDB.create(path) as db:
        db.insert_node(Node("a", "note"))
    before = dump(path)
    for _ in range(3):
        with ResonanceDB(path) as db:
            assert db.migration_report.applied == ()
            assert db.migration_report.backup is None
    assert dump(path) == before
    assert not (tmp_path / "backups").exists()


# -- concurrent openers -----------------------------------------------------------------------------

OPENER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from amalfa.db import Node, ResonanceDB
    db_path, ready, go, name = sys.argv[1:5]
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.001)
    with ResonanceDB.create(db_path) as db:
        db.insert_node(Node(name, "note"))
        print(json.dumps(list(db.migration_report.applied)))
""")


@pytest.mark.parametrize("round_", range(int(os.environ.get("AMALFA_OPEN_RACE_ROUNDS", "3"))))
def test_processes_opening_a_new_database_at_once(tmp_path: Path, round_: int) -> None:
    path = tmp_path / "shared" / "resonance.db"
    go = tmp_path / "go"
    count = 4
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", OPENER, str(path), str(tmp_path / f"ready{i}"),
                          str(go), f"p{i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
        for i in range(count)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(count)):
        assert time.monotonic() < deadline, "openers did not start"
        time.sleep(0.005)
    go.touch()
    applied: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        applied += json.loads(out)
    assert sorted(applied) == list(ALL)  # each migration applied by exactly one process
    assert [r[0] for r in table_rows(path, "amalfa_migrations", "version")] == list(ALL)
    assert sorted(r[0] for r in table_rows(path, "nodes", "id")) == ["p0", "p1", "p2", "p3"]
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# -- backups ----------------------------------------------------------------------------------------


def test_backup_before_migrating_a_database_with_rows(tmp_path: Path) -> None:
    folder = tmp_path / "project" / ".amalfa" / "runtime"
    folder.mkdir(parents=True)
    path = folder / "resonance.db"
    build_original(path, 1)
    before = table_rows(path, "nodes")
    with ResonanceDB(path) as db:
        backup = db.migration_report.backup
    assert backup is not None
    assert backup.parent == tmp_path / "project" / ".amalfa" / "backups"
    assert backup.name.startswith("resonance.v1.")
    # the copy is the database as it was before migrating: rows, and no summary column yet
    assert table_rows(backup, "nodes") == before
    assert "history" not in tables(backup)
    conn = sqlite3.connect(backup)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


def test_backup_dir_option_and_default_beside_the_file(tmp_path: Path) -> None:
    elsewhere = tmp_path / "data" / "graph.db"
    elsewhere.parent.mkdir()
    build_original(elsewhere, 2)
    with ResonanceDB(elsewhere) as db:
        assert db.migration_report.backup.parent == tmp_path / "data" / "backups"

    chosen = tmp_path / "chosen"
    other = tmp_path / "other.db"
    build_original(other, 2)
    with ResonanceDB(other, backup_dir=chosen) as db:
        backup = db.migration_report.backup
    assert backup.parent == chosen
    assert len(table_rows(backup, "history")) == 1


def test_backup_of_an_older_amalfa_database(tmp_path: Path) -> None:
    # a database an older amalfa left at schema version 2, holding a row
    path = tmp_path / "old.db"
    conn = DatabaseFactory.connect(path, create=True)
    shipped = migrations.load_migrations()
    migrations._bootstrap(conn, shipped, "at test")
    for migration in shipped[:2]:
        migrations._apply(conn, migration, 2, "at test")
    conn.execute("INSERT INTO nodes (id, type) VALUES ('a', 'note')")
    conn.close()
    with ResonanceDB(path) as db:
        report = db.migration_report
        assert (report.from_version, report.applied, report.adopted) == (
            2, tuple(range(3, LATEST + 1)), False)
        assert report.backup is not None and report.backup.exists()
        assert db.get_node("a").summary is None
    assert table_rows(report.backup, "nodes", "id") == [("a",)]


def test_default_backup_dir() -> None:
    assert migrations.default_backup_dir("/p/.amalfa/runtime/resonance.db") == Path(
        "/p/.amalfa/backups")
    assert migrations.default_backup_dir("/p/.amalfa/resonance.db") == Path("/p/.amalfa/backups")
    assert migrations.default_backup_dir("/p/data/x.db") == Path("/p/data/backups")


# -- newer schemas ----------------------------------------------------------------------------------


def test_a_newer_schema_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    ResonanceDB.create(path).close()
    other_programs_database(
        path, "INSERT INTO amalfa_migrations (version, name, checksum) VALUES (7, 'x', 'y')")
    before = dump(path)
    for readonly in (False, True):
        with pytest.raises(SchemaVersionError) as caught:
            ResonanceDB(path, readonly=readonly)
        message = str(caught.value)
        assert "version 7" in message and f"version {LATEST}" in message
        assert str(path) in message
    assert dump(path) == before
    assert not (tmp_path / "backups").exists()


def test_an_edited_migration_warns(tmp_path: Path) -> None:
    path = tmp_path / "edited.db"
    ResonanceDB.create(path).close()
    other_programs_database(
        path, "UPDATE amalfa_migrations SET checksum = 'other' WHERE version = 2")
    with pytest.warns(UserWarning, match="0002_history"):
        ResonanceDB(path).close()


def test_a_failing_migration_rolls_back_entirely(tmp_path: Path) -> None:
    path = tmp_path / "fail.db"
    ResonanceDB.create(path).close()
    conn = DatabaseFactory.connect(path)
    bad = migrations.Migration(LATEST + 1, "9999_bad",
                               "CREATE TABLE half (a); INSERT INTO nowhere VALUES (1);", "c" * 64)
    with pytest.raises(DatabaseError, match="nowhere"):
        migrations._apply(conn, bad, LATEST + 1, "at test")
    assert not conn.in_transaction
    assert conn.execute("SELECT max(version) FROM amalfa_migrations") == [(LATEST,)]
    assert conn.execute("SELECT name FROM sqlite_schema WHERE name = 'half'") == []
    conn.close()


# -- adopting the original system's databases -------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_an_original_database_is_adopted_without_losing_a_row(tmp_path: Path, steps: int) -> None:
    path = tmp_path / "resonance.db"
    build_original(path, steps)
    nodes_before = table_rows(path, "nodes", ORIGINAL_NODE_COLUMNS)
    edges_before = table_rows(path, "edges")
    ember_before = table_rows(path, "ember_state")
    history_before = table_rows(path, "history") if steps >= 2 else []

    with ResonanceDB(path) as db:
        report = db.migration_report
        assert report.adopted
        assert (report.from_version, report.to_version) == (steps, LATEST)
        assert report.applied == tuple(range(steps + 1, LATEST + 1))
        assert db.dimensions == DIM  # inferred from the stored vectors
        node = db.get_node("doc-2")
        assert node.label == "Doc 2" and node.meta == {"tags": ["2"]}
        np.testing.assert_array_equal(node.embedding, np.frombuffer(original_vector(2), np.float32))
        assert db.get_node("doc-3").summary == ("Summary of doc 3" if steps == 3 else None)
        assert len(db.get_edges("doc-2")) == 1
        # and it works as a database of ours
        db.insert_node(Node("new", "note", embedding=np.ones(DIM, np.float32)))
        db.insert_edge("new", "doc-0")

    assert table_rows(path, "nodes", ORIGINAL_NODE_COLUMNS)[:5] == nodes_before
    assert table_rows(path, "edges")[:3] == edges_before
    assert table_rows(path, "ember_state") == ember_before
    assert table_rows(path, "history")[:len(history_before)] == history_before
    assert [r[0] for r in table_rows(path, "amalfa_migrations", "version")] == list(ALL)
    (adopted_from,) = table_rows(path, "amalfa_meta WHERE key = 'adopted_from'", "value")[0]
    assert f"step {steps}" in adopted_from and "drizzle" in adopted_from
    # the original's bookkeeping is kept and told about the steps we applied, so the original
    # system would not try to apply them again
    drizzle = table_rows(path, "__drizzle_migrations", "created_at")
    assert [int(r[0]) for r in drizzle] == DRIZZLE_WHEN
    assert report.backup is not None  # it held rows
    with ResonanceDB(path) as again:
        assert again.migration_report.applied == ()
        assert not again.migration_report.adopted


def test_original_tables_without_drizzle_bookkeeping_are_adopted(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    build_original(path, 2, drizzle=False)
    with ResonanceDB(path) as db:
        assert db.migration_report.adopted
        assert db.migration_report.applied == tuple(range(3, LATEST + 1))
        assert db.get_node("doc-1").label == "Doc 1"
    assert "__drizzle_migrations" not in tables(path)


def test_an_empty_original_database_is_adopted_without_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "empty-original.db"
    build_original(path, 3, rows=False)
    with ResonanceDB(path) as db:
        assert db.migration_report.adopted
        assert db.migration_report.applied == tuple(range(4, LATEST + 1))  # amalfa's own steps
        assert db.migration_report.backup is None


def test_readonly_opens_a_final_step_original_only_when_nothing_is_pending(
        tmp_path: Path) -> None:
    # The original system's last step is our step 3; amalfa's own later steps (the vector change
    # log, passages) cannot be applied read-only, so the database is refused, unchanged, with a
    # message saying what to do. Once migrated, read-only opening works.
    path = tmp_path / "ro.db"
    build_original(path, 3)
    before = dump(path)
    if LATEST > 3:
        with pytest.raises(ReadOnlyError, match=f"version 3.*4..{LATEST}.*read-write once"):
            ResonanceDB(path, readonly=True)
        assert dump(path) == before
        assert "amalfa_migrations" not in tables(path)
        ResonanceDB(path).close()
    with ResonanceDB(path, readonly=True) as db:
        assert db.get_node("doc-3").summary == "Summary of doc 3"
        assert db.dimensions == DIM


def test_readonly_cannot_migrate_an_earlier_step(tmp_path: Path) -> None:
    path = tmp_path / "ro1.db"
    build_original(path, 1)
    before = dump(path)
    with pytest.raises(ReadOnlyError, match=f"version 1.*2..{LATEST}"):
        ResonanceDB(path, readonly=True)
    assert dump(path) == before


def test_a_foreign_nodes_table_is_not_adopted(tmp_path: Path) -> None:
    path = tmp_path / "foreign.db"
    other_programs_database(path, "CREATE TABLE nodes (id INTEGER PRIMARY KEY, name TEXT)",
                            "INSERT INTO nodes (name) VALUES ('x')")
    before = dump(path)
    with pytest.raises(DatabaseError, match="cannot adopt.*title"):
        ResonanceDB(path)
    assert dump(path) == before


def test_a_database_with_only_unrelated_tables_gets_ours_beside_them(tmp_path: Path) -> None:
    path = tmp_path / "mixed.db"
    other_programs_database(path, "CREATE TABLE notes (body TEXT)",
                            "INSERT INTO notes VALUES ('keep me')")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ResonanceDB(path) as db:
            assert db.migration_report.applied == ALL
            assert db.migration_report.backup is not None  # it held rows
    assert table_rows(path, "notes") == [("keep me",)]

"""SIGKILL at random moments: during bulk inserts, during a migration, during ``amalfa init``.

After every kill the file must pass ``PRAGMA integrity_check``, everything the killed process
reported committed must be there, and no transaction may be visible in part. A process killed
with SIGKILL gets no chance to clean up, so this is what a crash of the program (not of the
machine: the page cache survives a killed process) leaves behind.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from amalfa._core.connection import Connection
from reliability_workers import (
    BULK_DIM,
    BULK_TYPE,
    bulk_size,
    read_lines,
    record_figures,
    worker_command,
    worker_env,
)

from amalfa.db import Node, ResonanceDB
from amalfa.errors import DatabaseError
from amalfa.migrations import inspect_schema, latest_version

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

KILLS = 24
EARLY_KILLS = 4  # of which this many land at a random moment from the start of the process
RUN_BATCHES = 100_000  # batch numbers per run: run r writes batches r*RUN_BATCHES, +1, ...
DRIZZLE_STEP3 = "b6400314b4a5187a3a058a5d35c3cb6031eadd86fff72403accdc73495d69e78"


def _wait_for(path: Path, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until ``path`` exists; False when the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.002)
    raise AssertionError(f"{path} did not appear within {timeout:g} s")


def _kill(process: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the process; True when it was still running (the kill interrupted it)."""
    running = process.poll() is None
    if running:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return running and process.returncode == -signal.SIGKILL


def _check_bulk(path: Path, reported: dict[int, set[int]]) -> tuple[int, int]:
    """Integrity, every reported batch whole, no partial batch, history and edges in step.

    Returns (batches present, nodes present)."""
    with ResonanceDB(path) as db:
        conn = db.raw
        assert conn.execute("PRAGMA integrity_check") == [("ok",)]
        members: dict[int, set[int]] = {}
        for (node_id,) in conn.execute("SELECT id FROM nodes WHERE type = ?", (BULK_TYPE,)):
            _, batch, index = node_id.split("-")
            members.setdefault(int(batch), set()).add(int(index))
        for batch, indices in members.items():
            assert indices == set(range(bulk_size(batch))), (
                f"batch {batch} is partial: {len(indices)} of {bulk_size(batch)} nodes")
        for run, batches in reported.items():
            missing = batches - members.keys()
            assert not missing, f"run {run}: reported batches {sorted(missing)} are missing"
            # batches commit in order: what is there is a prefix, at most one past the reports
            present = sorted(b for b in members if b // RUN_BATCHES == run)
            first = run * RUN_BATCHES
            assert present == list(range(first, first + len(present)))
            assert len(present) - len(batches) in (0, 1)
        spans = conn.execute("SELECT source, target FROM edges WHERE type = 'spans'")
        assert sorted(spans) == sorted(
            (f"batch-{b}-0", f"batch-{b}-{bulk_size(b) - 1}") for b in members)
        (history,) = conn.execute("SELECT count(*) FROM history WHERE entity_type = 'node' "
                                  "AND action = 'insert'")[0]
        nodes = sum(len(indices) for indices in members.values())
        assert history == nodes, "the audit rows and the nodes they describe disagree"
        if members:
            vectors = db.get_nodes(type=BULK_TYPE, limit=50)
            assert all(node.embedding is not None and node.embedding.shape == (BULK_DIM,)
                       for node in vectors)
    return len(members), nodes


@pytest.mark.timeout(300)
def test_bulk_writer_killed_at_random_moments(tmp_path: Path, tmp_path_factory,
                                              record_property) -> None:
    path = tmp_path / "bulk.db"
    rnd = random.Random(20240601)
    reported: dict[int, set[int]] = {}
    interrupted = mid_write = 0
    batches = nodes = 0
    for run in range(KILLS):
        report = tmp_path / f"run-{run}.log"
        ready = tmp_path / f"run-{run}.ready"
        process = subprocess.Popen(
            worker_command("bulk", db=str(path), report=str(report), ready=str(ready),
                           first_batch=run * RUN_BATCHES, seconds=60),
            env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if run < EARLY_KILLS:
                time.sleep(rnd.uniform(0.05, 0.6))  # during start-up, opening or the first batch
            else:
                assert _wait_for(ready, process, timeout=60), process.stderr.read()
                time.sleep(rnd.uniform(0.0, 0.5))
            interrupted += _kill(process)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        stderr = process.stderr.read().decode(errors="replace")
        assert "Traceback" not in stderr, stderr
        reported[run] = {int(line) for line in read_lines(report)}
        mid_write += bool(reported[run])
        if path.exists():
            batches, nodes = _check_bulk(path, reported)
    assert interrupted >= 20, f"only {interrupted} of {KILLS} kills interrupted a running writer"
    assert mid_write >= 15, f"only {mid_write} kills came after a committed batch"
    size_mb = path.stat().st_size / 2**20
    for file in tmp_path.glob("bulk.db*"):  # hundreds of MB; pytest keeps three runs' tmp_path
        file.unlink()
    record_figures("crash_bulk", {
        "kills": KILLS, "kills_interrupting_the_writer": interrupted,
        "kills_after_a_commit": mid_write,
        "batches_reported": sum(len(b) for b in reported.values()),
        "batches_present": batches, "nodes_present": nodes, "partial_batches": 0,
        "integrity_failures": 0,
        "db_size_mb": round(size_mb, 1),
    }, base=tmp_path_factory.getbasetemp(), record_property=record_property)


# -- migration --------------------------------------------------------------------------------------

MIGRATION_ROWS = 60_000
MIGRATION_DIM = 256
MIGRATION_KILLS = 8


def _content_digest(path: Path) -> tuple[int, str]:
    """Row count and digest of the user data (nodes, edges, history rows the original wrote)."""
    digest = hashlib.sha256()
    conn = Connection(str(path), readonly=True)
    try:
        count = 0
        for row in conn.prepare("SELECT id, type, title, domain, layer, embedding, hash, meta, "
                                "date FROM nodes ORDER BY id"):
            digest.update(repr(row).encode())
            count += 1
        for row in conn.prepare("SELECT source, target, type FROM edges ORDER BY 1, 2, 3"):
            digest.update(repr(row).encode())
        history = conn.prepare("SELECT id, entity_id, action, new_value FROM history "
                               "WHERE entity_id LIKE 'doc-%' ORDER BY id")
        for row in history:
            digest.update(repr(row).encode())
    finally:
        conn.close()
    return count, digest.hexdigest()


def _migrate_process(path: Path, ready: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(worker_command("migrate", db=str(path), ready=str(ready)),
                            env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture(scope="module")
def original_template(tmp_path_factory) -> Iterator[tuple[Path, int, str]]:
    """A large original-system database at step 2 (no summary column), its rows and digest."""
    template = tmp_path_factory.mktemp("original") / "original.db"
    subprocess.run(worker_command("build_original", db=str(template), rows=MIGRATION_ROWS,
                                  dim=MIGRATION_DIM), env=worker_env(), check=True, timeout=180)
    rows, digest = _content_digest(template)
    assert rows == MIGRATION_ROWS
    yield template, rows, digest
    shutil.rmtree(template.parent)  # ~90 MB


@pytest.mark.timeout(300)
def test_kill_during_migration_of_a_large_original_database(
        original_template: tuple[Path, int, str], tmp_path: Path, tmp_path_factory,
        record_property) -> None:
    template, rows, digest = original_template

    # one undisturbed migration, to time it
    timed = tmp_path / "timed.db"
    shutil.copy(template, timed)
    process = _migrate_process(timed, tmp_path / "timed.ready")
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    undisturbed = json.loads(out)
    assert undisturbed["applied"] == list(range(3, latest_version() + 1)) and undisturbed["backup"]
    shutil.rmtree(tmp_path / "backups")
    timed.unlink()

    rnd = random.Random(99)
    window = undisturbed["seconds"] * 1.2
    phases: dict[str, int] = {}
    interrupted = attempts = trial = 0
    # A kill that came after the open had finished (the machine got quieter than when the open
    # was timed) proves nothing: the window shrinks and the trial runs again, a bounded number
    # of times, so the kills keep landing inside the open whatever the load does.
    while trial < MIGRATION_KILLS and attempts < 3 * MIGRATION_KILLS:
        attempts += 1
        path = tmp_path / f"trial-{attempts}.db"
        shutil.copy(template, path)
        ready = tmp_path / f"trial-{attempts}.ready"
        process = _migrate_process(path, ready)
        try:
            assert _wait_for(ready, process, timeout=60), process.stderr.read()
            # spread the kills over the whole open: connect, backup, bootstrap, ALTER TABLE
            time.sleep(window * (trial + rnd.random()) / MIGRATION_KILLS)
            hit = _kill(process)
            interrupted += hit
            if hit:
                trial += 1
            else:
                window *= 0.6
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)

        # what the kill left: consistent, at the old or the new version, not a row lost
        conn = Connection(str(path))
        try:
            assert conn.execute("PRAGMA integrity_check") == [("ok",)]
            state = inspect_schema(conn)
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table'")}
        finally:
            conn.close()
        assert 2 <= state.version <= latest_version()  # each step commits on its own
        phase = ("not started" if "amalfa_migrations" not in tables
                 else "bootstrapped" if state.version == 2
                 else "migrated" if state.version == latest_version() else "partly migrated")
        phases[phase] = phases.get(phase, 0) + 1
        assert _content_digest(path) == (rows, digest)

        # opening again finishes the job
        with ResonanceDB(path) as db:
            assert db.migration_report.to_version == latest_version()
            conn = db.raw
            assert conn.execute("PRAGMA integrity_check") == [("ok",)]
            assert "summary" in {row[1] for row in conn.execute("PRAGMA table_info(nodes)")}
            assert conn.execute("SELECT version FROM amalfa_migrations ORDER BY version") == [
                (version,) for version in range(1, latest_version() + 1)]
            assert conn.execute("SELECT count(*) FROM __drizzle_migrations WHERE hash = ?",
                                (DRIZZLE_STEP3,)) == [(1,)]
            db.insert_node(Node("after-migration", "doc", summary="it works"))
            assert db.get_history("after-migration")[0].action == "insert"
            db.delete_node("after-migration")
        assert _content_digest(path) == (rows, digest)
        path.unlink()
        for leftover in tmp_path.glob(f"{path.name}-*"):
            leftover.unlink()
        shutil.rmtree(tmp_path / "backups", ignore_errors=True)
    assert interrupted >= MIGRATION_KILLS - 2, f"only {interrupted} kills interrupted the open"
    record_figures("crash_migration", {
        "rows": MIGRATION_ROWS, "db_size_mb": round(template.stat().st_size / 2**20, 1),
        "undisturbed_open_seconds": round(undisturbed["seconds"], 3),
        "kills": attempts, "kills_interrupting_the_open": interrupted,
        "state_after_kill": phases, "rows_lost": 0,
    }, base=tmp_path_factory.getbasetemp(), record_property=record_property)


@pytest.mark.timeout(120)
def test_a_kill_during_the_backup_leaves_no_unusable_backup(
        original_template: tuple[Path, int, str], tmp_path: Path) -> None:
    template, rows, _ = original_template
    path = tmp_path / "graph.db"
    shutil.copy(template, path)
    try:
        _kill_during_backup_and_check(path, rows)
    finally:  # about 200 MB of copies
        for leftover in tmp_path.iterdir():
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def _kill_during_backup_and_check(path: Path, rows: int) -> None:
    backups = path.parent / "backups"
    ready = path.parent / "ready"
    process = _migrate_process(path, ready)
    try:
        assert _wait_for(ready, process, timeout=60), process.stderr.read()
        deadline = time.monotonic() + 60
        while not list(backups.glob("*.db-journal")):  # the copy is under way
            if process.poll() is not None:
                pytest.skip("the backup finished before the kill could land in it")
            assert time.monotonic() < deadline
            time.sleep(0.0005)
        assert _kill(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    # the database itself is untouched and migrates on the next open
    with ResonanceDB(path) as db:
        assert db.raw.execute("SELECT count(*) FROM nodes") == [(rows,)]
    # every file that looks like a backup must be one: complete, on its own
    assert list(backups.glob("graph.v2.*.db")), "the kill left no backup file to check"
    for backup in sorted(backups.glob("graph.v2.*.db")):
        alone = path.parent / "alone" / backup.name
        alone.parent.mkdir(exist_ok=True)
        shutil.copy(backup, alone)  # what a user restoring "the backup" would take
        conn = Connection(str(alone), readonly=True)
        try:
            assert conn.execute("PRAGMA integrity_check") == [("ok",)]
            assert conn.execute("SELECT count(*) FROM nodes") == [(rows,)]
        finally:
            conn.close()


# -- amalfa init ------------------------------------------------------------------------------------

INIT_FILES = 240
INIT_BATCH = 16
INIT_KILLS = 4


def _write_corpus(docs: Path) -> None:
    docs.mkdir(parents=True)
    words = ("graph", "vector", "sqlite", "crash", "journal", "index", "query", "node", "edge",
             "daemon", "model", "embedding", "summary", "history", "migration", "lock")
    for i in range(INIT_FILES):
        body = " ".join(words[(i * 7 + k) % len(words)] for k in range(8 + i % 40))
        (docs / f"note-{i:03d}.md").write_text(
            f"# Note {i}\n\n{body.capitalize()}.\n\n"
            f"See [the next note](note-{(i + 1) % INIT_FILES:03d}.md).\n", encoding="utf-8")


def _init(root: Path, db: Path, *extra: str) -> subprocess.Popen[str]:
    env = worker_env(HF_HUB_CACHE=str(root / "empty-hub-cache"))
    return subprocess.Popen(
        [sys.executable, "-m", "amalfa", "--db", str(db), *extra, "init",
         "--batch-size", str(INIT_BATCH), "docs"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _count_nodes(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = Connection(str(db), readonly=True)
    except DatabaseError:  # the file is there but SQLite cannot open it yet
        return 0
    try:
        conn.set_busy_timeout(1000)
        return conn.execute("SELECT count(*) FROM nodes")[0][0]
    except DatabaseError:  # no nodes table yet: the first migration has not committed
        return 0
    finally:
        conn.close()


def _check_init(db: Path) -> int:
    """Integrity; every node whole (its embedding, hash, source and history row) or absent."""
    with ResonanceDB(db) as rdb:
        conn = rdb.raw
        assert conn.execute("PRAGMA integrity_check") == [("ok",)]
        nodes = rdb.get_nodes()
        for node in nodes:
            assert node.embedding is not None and node.embedding.shape == (384,), node.id
            assert abs(float(np.linalg.norm(node.embedding)) - 1) < 1e-3, node.id
            assert node.hash and node.meta.get("source", "").startswith("docs/"), node.id
        (history,) = conn.execute("SELECT count(DISTINCT entity_id) FROM history "
                                  "WHERE entity_type = 'node' AND action = 'insert'")[0]
        assert history == len(nodes)
        # nodes are written a batch of 16 files per transaction: whole batches only, until the
        # last (short) batch of the run
        assert len(nodes) % INIT_BATCH == 0 or len(nodes) == INIT_FILES, len(nodes)
    history_file = db.parents[1] / "stats-history.json"
    if history_file.exists():
        json.loads(history_file.read_text(encoding="utf-8"))  # replaced whole, never torn
    return len(nodes)


@pytest.mark.timeout(300)
def test_kill_during_amalfa_init(tmp_path: Path, tmp_path_factory, record_property) -> None:
    root = tmp_path / "project"
    _write_corpus(root / "docs")
    (root / "empty-hub-cache").mkdir()
    db = root / ".amalfa" / "runtime" / "resonance.db"
    rnd = random.Random(5)
    counts = []
    interrupted = 0
    for _ in range(INIT_KILLS):
        before = _count_nodes(db)
        target = before + INIT_BATCH * rnd.randint(1, 2)
        process = _init(root, db)
        try:
            deadline = time.monotonic() + 120
            while _count_nodes(db) < target and process.poll() is None:
                assert time.monotonic() < deadline, "amalfa init made no progress"
                time.sleep(0.01)
            time.sleep(rnd.uniform(0.0, 0.05))  # at most about one batch more
            interrupted += _kill(process)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        counts.append(_check_init(db))
    assert interrupted >= 2, f"only {interrupted} kills interrupted amalfa init"
    assert counts[-1] < INIT_FILES, "the kills came too late to interrupt the node writes"

    process = _init(root, db, "--json")
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    assert _check_init(db) == INIT_FILES
    with ResonanceDB(db) as rdb:
        links = rdb.raw.execute("SELECT source, target FROM edges WHERE type = 'links_to'")
        assert sorted(links) == sorted((f"docs-note-{i:03d}", f"docs-note-{(i + 1) % 240:03d}")
                                       for i in range(INIT_FILES))
    first = json.loads(out)
    assert len(first["added"]) == INIT_FILES - counts[-1]

    process = _init(root, db, "--json")  # and a run after that has nothing left to do
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    again = json.loads(out)
    assert again["added"] == [] and again["updated"] == [] and again["unchanged"] == INIT_FILES
    record_figures("crash_init", {
        "files": INIT_FILES, "batch_size": INIT_BATCH, "kills": INIT_KILLS,
        "kills_interrupting_init": interrupted, "nodes_after_each_kill": counts,
        "nodes_after_rerun": INIT_FILES, "partial_nodes": 0,
    }, base=tmp_path_factory.getbasetemp(), record_property=record_property)

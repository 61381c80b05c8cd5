"""``amalfa.doctor.diagnose``, the library behind ``amalfa doctor``: real settings files, a real
database, the embedded model (found and checked, not loaded) and no daemon."""

from __future__ import annotations

import json
import socket
from contextlib import closing
from pathlib import Path

import pytest

from amalfa.db import Node, ResonanceDB
from amalfa.doctor import diagnose


@pytest.fixture(autouse=True)
def no_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("VECTOR_PORT", str(port))
    for name in ("AMALFA_SETTINGS", "AMALFA_MODEL_PATH", "EMBEDDING_MODEL"):
        monkeypatch.delenv(name, raising=False)


def write_settings(root: Path, data: object) -> Path:
    path = root / "amalfa.settings.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def statuses(report) -> dict[str, str]:
    return {check.name: check.status for check in report.checks}


def test_a_healthy_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the settings' root: "graph.db" is found from here
    settings = write_settings(tmp_path, {"database": "graph.db"})
    with ResonanceDB.create(tmp_path / "graph.db") as db:
        db.insert_node(Node("a", "note", embedding=[1.0] + [0.0] * 383))
        db.record_model("sentence-transformers/all-MiniLM-L6-v2")
    report = diagnose(settings_file=settings)
    assert report.ok, report.to_json()
    assert statuses(report) == {"settings": "ok", "sqlite": "ok", "pragmas": "ok",
                                "integrity": "ok", "schema": "ok", "database": "ok",
                                "model": "ok", "model graph": "ok", "daemon": "ok"}
    database = next(c for c in report.checks if c.name == "database")
    assert (database.data["nodes"], database.data["embeddings"]) == (1, 1)
    model = next(c for c in report.checks if c.name == "model")
    assert model.data["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    as_json = report.to_json()
    assert as_json["ok"] is True and as_json["checks"][0]["check"] == "settings"


def test_bad_settings_fail_and_the_daemon_is_still_checked(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, {"scratchpad": {"enabled": "yes"}})
    report = diagnose(settings_file=settings)
    assert not report.ok and report.failed("settings")
    assert statuses(report) == {"settings": "fail", "daemon": "ok"}
    assert "scratchpad.enabled" in report.checks[0].detail


def test_no_database_yet_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, {})
    report = diagnose(settings_file=settings, database=tmp_path / "absent.db")
    assert report.ok
    assert statuses(report)["database"] == "warn"
    assert not (tmp_path / "absent.db").exists()  # the doctor creates nothing


def test_a_file_that_is_not_a_database_fails(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, {})
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not SQLite" * 100)
    report = diagnose(settings_file=settings, database=bogus)
    assert not report.ok
    assert bogus.read_bytes() == b"this is not SQLite" * 100


def test_the_doctor_does_not_migrate_what_it_reports_on(tmp_path: Path) -> None:
    from amalfa.factory import DatabaseFactory
    from amalfa.migrations import latest_version

    settings = write_settings(tmp_path, {})
    old = tmp_path / "old.db"
    conn = DatabaseFactory.connect(old, create=True)
    conn.executescript((Path(__file__).resolve().parents[1]
                        / "src/amalfa/migrations/0001_initial.sql").read_text())
    conn.close()
    report = diagnose(settings_file=settings, database=old)
    schema = next(c for c in report.checks if c.name == "schema")
    assert schema.status == "warn" and schema.data["latest"] == latest_version()
    assert "the next write migrates it" in schema.detail
    report_again = diagnose(settings_file=settings, database=old)
    assert next(c for c in report_again.checks if c.name == "schema").status == "warn"

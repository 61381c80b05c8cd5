"""End-to-end tests of the ``amalfa`` command: the real command in a subprocess, on a folder of
Markdown written here, with the real embedded ONNX model.

Each run gets an isolated environment: HOME, the Hugging Face cache and the settings file point
into the test's folder, and VECTOR_PORT names a port nothing listens on, so no daemon answers.
The database is read back with the stdlib sqlite3 module (safe here: amalfa itself only ever
runs in the subprocesses, never in this process).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pty
import re
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from amalfa.cli import build_parser

REPO = Path(__file__).resolve().parents[1]

CORPUS = {
    "notes/sourdough.md": (
        "---\ntitle: Sourdough\ntags: [baking]\ndate: 2024-02-10\n---\n"
        "# Sourdough\n\n"
        "A starter of wild yeast and lactobacilli leavens the loaf. Feed the starter flour and "
        "water every day, let the dough ferment slowly overnight, and bake it in a very hot "
        "cast-iron pot. See [oven care](kitchen/oven.md).\n"
    ),
    "notes/kitchen/oven.md": (
        "# Oven care\n\nWipe the racks with soda after baking and descale the steam tray "
        "monthly. Back to [[sourdough]].\n"
    ),
    "notes/meteors.md": (
        "# Meteors\n\nThe Perseids peak in mid-August, when Earth crosses the debris trail of "
        "comet Swift-Tuttle. Find a dark site away from city lights, lie back, and let your eyes "
        "adapt for twenty minutes. Related: [[tyres]].\n"
    ),
    "notes/tyres.md": (
        "# Tyres\n\nTo mend a punctured inner tube, lever the tyre off the rim, find the hole by "
        "listening for hissing air, roughen the rubber, glue a patch over it and pump it up "
        "again.\n"
    ),
    "notes/mortgage.md": (
        "---\ndomain: money\n---\n# Mortgage\n\nOverpaying the principal each month shortens "
        "the loan term and lowers the total interest owed to the lender.\n"
    ),
}
IDS = ["notes-kitchen-oven", "notes-meteors", "notes-mortgage", "notes-sourdough", "notes-tyres"]
EDGES = {
    ("notes-sourdough", "notes-kitchen-oven", "links_to"),
    ("notes-kitchen-oven", "notes-sourdough", "wikilink"),
    ("notes-meteors", "notes-tyres", "wikilink"),
}
DB = ".amalfa/runtime/resonance.db"


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


def unused_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_corpus(root: Path) -> None:
    for rel, text in CORPUS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    settings = tmp_path / "project" / "amalfa.settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"sources": ["notes"]}), encoding="utf-8")
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("AMALFA_MODEL_PATH", "EMBEDDING_MODEL", "AMALFA_DEBUG",
                                "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "COLUMNS")}
    environment.update(HOME=str(home), AMALFA_SETTINGS=str(settings),
                       VECTOR_PORT=str(unused_port()), HF_HOME=str(home / "hf"),
                       HF_HUB_OFFLINE="1")
    return environment


@pytest.fixture
def project(tmp_path: Path, env: dict[str, str]) -> Path:
    root = tmp_path / "project"
    write_corpus(root)
    return root


def amalfa(cwd: Path, env: dict[str, str], *args: str,
           expect: int | None = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "amalfa", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    if expect is not None:
        assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def amalfa_json(cwd: Path, env: dict[str, str], *args: str, expect: int = 0) -> object:
    proc = amalfa(cwd, env, *args, "--json", expect=expect)
    return json.loads(proc.stdout)


def read_nodes(root: Path) -> dict[str, tuple]:
    with closing(sqlite3.connect(root / DB)) as conn:
        return {row[0]: row[1:] for row in conn.execute(
            "SELECT id, title, hash, summary, meta, date, domain, layer, type, embedding "
            "FROM nodes ORDER BY id")}


def read_edges(root: Path) -> set[tuple[str, str, str]]:
    with closing(sqlite3.connect(root / DB)) as conn:
        return set(conn.execute("SELECT source, target, type FROM edges"))


@pytest.fixture
def ingested(project: Path, env: dict[str, str]) -> Path:
    amalfa(project, env, "init")
    return project


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int,
                          pattern: str) -> None:
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("amalfa: error:")]
    assert len(errors) == 1, proc.stderr
    assert re.search(pattern, errors[0]), errors[0]
    lines = [line for line in proc.stderr.splitlines()
             if not line.startswith("amalfa: warning:")]
    assert len(lines) == 2 and lines[1].startswith("hint: "), proc.stderr
    assert proc.stdout == ""


# --------------------------------------------------------------------------------------------
# init
# --------------------------------------------------------------------------------------------


def test_first_init_writes_hollow_nodes_and_link_edges(project: Path, env: dict[str, str]) -> None:
    proc = amalfa(project, env, "init")
    assert proc.stdout.startswith(f"Created {DB} from 5 Markdown files")
    nodes = read_nodes(project)
    assert sorted(nodes) == IDS
    title, digest, summary, meta, date, domain, layer, kind, embedding = nodes["notes-sourdough"]
    assert title == "Sourdough"
    assert digest == hashlib.sha256((project / "notes/sourdough.md").read_bytes()).hexdigest()
    assert summary.startswith("A starter of wild yeast and lactobacilli leavens the loaf.")
    assert json.loads(meta) == {"source": "notes/sourdough.md", "tags": ["baking"]}
    assert (date, domain, layer, kind) == ("2024-02-10", "knowledge", "experience", "document")
    assert len(embedding) == 384 * 4
    assert nodes["notes-mortgage"][5] == "money"
    assert all(row[8] is not None for row in nodes.values())
    assert read_edges(project) == EDGES

    # the run record, the snapshot and the summary
    runs = [json.loads(line) for line in
            (project / ".amalfa/runs.jsonl").read_text().splitlines()]
    assert runs[-1]["operation"] == "init" and runs[-1]["nodes"] == 5 and runs[-1]["edges"] == 3
    history = json.loads((project / ".amalfa/stats-history.json").read_text())
    assert history["snapshots"][-1]["nodes"] == 5
    assert history["snapshots"][-1]["embeddings"] == 5
    assert "Ingestion summary" in proc.stdout and "wikilink: 2" in proc.stdout


def test_init_json_reports_what_changed(project: Path, env: dict[str, str]) -> None:
    first = amalfa_json(project, env, "init")
    assert first["created"] is True and sorted(first["added"]) == IDS
    assert first["links"] == {"links_to": 1, "wikilink": 2}
    assert first["stats"]["nodes"] == 5 and first["stats"]["vectors"] == 5
    second = amalfa_json(project, env, "init")
    assert second["created"] is False
    assert second["added"] == second["updated"] == second["removed"] == []
    assert second["unchanged"] == 5 and second["edges_added"] == second["edges_removed"] == 0


def test_init_takes_paths_and_the_settings_sources(project: Path, env: dict[str, str]) -> None:
    result = amalfa_json(project, env, "init", "notes/kitchen")
    assert result["added"] == ["notes-kitchen-oven"]
    result = amalfa_json(project, env, "init")  # the settings' sources: notes
    assert sorted(result["added"]) == [i for i in IDS if i != "notes-kitchen-oven"]


def test_an_edit_changes_only_that_node(ingested: Path, env: dict[str, str]) -> None:
    before = read_nodes(ingested)
    path = ingested / "notes/tyres.md"
    path.write_text("# Tyres\n\nKeep the pressure at the value printed on the sidewall.\n")
    result = amalfa_json(ingested, env, "init")
    assert result["updated"] == ["notes-tyres"] and result["added"] == []
    after = read_nodes(ingested)
    assert sorted(after) == IDS
    for node_id in IDS:
        if node_id != "notes-tyres":
            assert after[node_id] == before[node_id], node_id  # hash and embedding bytes too
    assert after["notes-tyres"][1] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert after["notes-tyres"][8] != before["notes-tyres"][8]
    assert after["notes-tyres"][2] == "Keep the pressure at the value printed on the sidewall."


def test_a_deletion_removes_its_node_and_edges(ingested: Path, env: dict[str, str]) -> None:
    (ingested / "notes/sourdough.md").unlink()
    result = amalfa_json(ingested, env, "init")
    assert result["removed"] == ["notes-sourdough"]
    assert sorted(read_nodes(ingested)) == [i for i in IDS if i != "notes-sourdough"]
    assert read_edges(ingested) == {("notes-meteors", "notes-tyres", "wikilink")}


def test_progress_bar_only_on_a_terminal(project: Path, env: dict[str, str]) -> None:
    piped = amalfa(project, env, "init")
    assert "\r" not in piped.stderr and "embedding [" not in piped.stderr

    (project / "notes/new.md").write_text("# New\n\nA fresh note.\n")
    main_fd, child_fd = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "amalfa", "init"], cwd=project, env=env,
                              stdout=subprocess.PIPE, stderr=child_fd, text=True, timeout=300,
                              check=False)
        os.close(child_fd)
        shown = b""
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(main_fd)
    assert proc.returncode == 0, shown
    assert re.search(rb"\rembedding \[#+\] 1/1 ", shown), shown


# --------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4}


@pytest.mark.parametrize(("query", "expected"), [
    ("homemade naturally leavened bread", "notes-sourdough"),
    ("spotting shooting stars on summer nights", "notes-meteors"),
    ("repairing a flat on my bike", "notes-tyres"),
])
def test_search_finds_a_document_by_a_paraphrase(ingested: Path, env: dict[str, str],
                                                 query: str, expected: str) -> None:
    document = next(text for rel, text in CORPUS.items() if expected.endswith(Path(rel).stem))
    assert not content_words(query) & content_words(document), "not a paraphrase"
    results = amalfa_json(ingested, env, "search", query, "-k", "3")
    assert results[0]["id"] == expected


def test_search_json_is_a_ranked_list_of_objects(ingested: Path, env: dict[str, str]) -> None:
    results = amalfa_json(ingested, env, "search", "paying back a house loan", "-k", "2")
    assert isinstance(results, list) and len(results) == 2
    for result in results:
        assert {"id", "score", "title", "source"} <= set(result)
        assert isinstance(result["score"], float)
    assert results[0]["score"] >= results[1]["score"]
    assert results[0] == {**results[0], "id": "notes-mortgage", "title": "Mortgage",
                          "source": "notes/mortgage.md"}


def test_search_prints_a_table(ingested: Path, env: dict[str, str]) -> None:
    proc = amalfa(ingested, env, "search", "paying back a house loan", "-k", "1")
    first = proc.stdout.splitlines()[0].split()  # rank, score, title, [id], source:line
    assert first[0] == "1" and float(first[1]) > 0
    assert first[2:4] == ["Mortgage", "[notes-mortgage]"]
    assert first[4].startswith("notes/mortgage.md")


def test_search_filters_by_domain_and_type(ingested: Path, env: dict[str, str]) -> None:
    query = "money owed to a bank"
    results = amalfa_json(ingested, env, "search", query, "--domain", "money")
    assert [r["id"] for r in results] == ["notes-mortgage"]
    assert len(amalfa_json(ingested, env, "search", query, "--type", "document")) > 1
    assert amalfa_json(ingested, env, "search", query, "--type", "concept") == []


# --------------------------------------------------------------------------------------------
# stats, validate, doctor, checkpoint
# --------------------------------------------------------------------------------------------


def test_stats(ingested: Path, env: dict[str, str]) -> None:
    stats = amalfa_json(ingested, env, "stats")
    assert stats["nodes"] == 5 and stats["edges"] == 3 and stats["vectors"] == 5
    assert stats["embedding_coverage"] == 1.0 and stats["dimensions"] == 384
    assert stats["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert stats["snapshots"] == 1 and stats["db_size_bytes"] > 0
    text = amalfa(ingested, env, "stats").stdout
    assert re.search(r"embeddings\s+5 \(100% of nodes\)", text)
    assert "Database growth summary" in text


def test_validate_passes_a_healthy_graph_and_fails_an_empty_one(
        ingested: Path, env: dict[str, str], tmp_path: Path) -> None:
    result = amalfa_json(ingested, env, "validate")
    assert result["valid"] is True and result["errors"] == []
    empty = tmp_path / "empty.db"
    create = "import sys; from amalfa.db import ResonanceDB; ResonanceDB.create(sys.argv[1]).close()"
    subprocess.run([sys.executable, "-c", create, str(empty)], env=env, check=True)
    proc = amalfa(ingested, env, "validate", "--db", str(empty), expect=1)
    assert "error: Database has 0 nodes" in proc.stdout


def test_doctor_reports_every_check(ingested: Path, env: dict[str, str]) -> None:
    report = amalfa_json(ingested, env, "doctor")
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert report["ok"] is True
    assert {"settings", "sqlite", "pragmas", "integrity", "schema", "database", "model",
            "daemon"} <= set(statuses)
    for name in ("settings", "sqlite", "pragmas", "integrity", "schema", "database", "model"):
        assert statuses[name] == "ok", report
    model = next(c for c in report["checks"] if c["check"] == "model")
    assert model["source"] == "embedded"


def test_doctor_fails_on_bad_settings_and_warns_without_a_database(
        project: Path, env: dict[str, str]) -> None:
    report = amalfa_json(project, env, "doctor")
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert statuses["database"] == "warn" and report["ok"] is True
    Path(env["AMALFA_SETTINGS"]).write_text('{"sources": 3}')
    report = amalfa_json(project, env, "doctor", expect=1)
    settings = next(c for c in report["checks"] if c["check"] == "settings")
    assert settings["status"] == "fail" and "sources" in settings["detail"]


def test_checkpoint_empties_the_wal(ingested: Path, env: dict[str, str]) -> None:
    result = amalfa_json(ingested, env, "checkpoint")
    assert result["wal_frames"] == result["checkpointed"]
    wal = ingested / (DB + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


# --------------------------------------------------------------------------------------------
# scratchpad and daemon
# --------------------------------------------------------------------------------------------


def test_scratchpad_commands(project: Path, env: dict[str, str]) -> None:
    content = json.dumps([{"n": i, "text": "x" * 50} for i in range(200)])
    entry_id = hashlib.sha256(content.encode()).hexdigest()[:12]
    folder = project / ".amalfa/cache/scratchpad"
    folder.mkdir(parents=True)
    entry = folder / f"{entry_id}.json"
    entry.write_text(json.dumps({
        "id": entry_id, "tool": "search", "timestamp": "2025-01-01T00:00:00.000Z",
        "sizeBytes": len(content), "contentType": "json", "preview": "[Array with 200 items]",
        "content": content}))
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(entry, (two_days_ago, two_days_ago))  # pruning goes by the file's age

    listed = amalfa_json(project, env, "scratchpad", "list")
    assert [(e["id"], e["tool"], e["size_bytes"]) for e in listed] == \
        [(entry_id, "search", len(content))]
    assert amalfa(project, env, "scratchpad", "show", entry_id).stdout == content + "\n"
    stats = amalfa_json(project, env, "scratchpad", "stats")
    assert stats["entries"] == 1 and stats["total_size_bytes"] == len(content)
    assert amalfa_json(project, env, "scratchpad", "prune")["deleted"] == 1  # past maxAgeMs
    assert amalfa_json(project, env, "scratchpad", "list") == []
    assert amalfa_json(project, env, "scratchpad", "clear") == {"deleted": 0}


def test_daemon_status_when_none_runs(project: Path, env: dict[str, str]) -> None:
    status = amalfa_json(project, env, "daemon", "status", expect=3)
    assert status["running"] is False and status["stale"] is False
    assert "not running" in amalfa(project, env, "daemon", "status", expect=3).stdout
    assert amalfa_json(project, env, "daemon", "stop")["was_running"] is False


@pytest.mark.slow
def test_daemon_start_status_stop(project: Path, env: dict[str, str]) -> None:
    started = amalfa_json(project, env, "daemon", "start")
    try:
        assert started["running"] is True and started["ready"] is True
        assert started["port"] == int(env["VECTOR_PORT"])
        assert started["model"] == "sentence-transformers/all-MiniLM-L6-v2"
        status = amalfa_json(project, env, "daemon", "status")
        assert status["pid"] == started["pid"]
        again = amalfa_json(project, env, "daemon", "start")
        assert again["already_running"] is True and again["pid"] == started["pid"]
        # with the daemon up, init and search still give the same answers
        amalfa(project, env, "init")
        results = amalfa_json(project, env, "search", "repairing a flat on my bike", "-k", "1")
        assert results[0]["id"] == "notes-tyres"
        doctor = amalfa_json(project, env, "doctor")
        daemon = next(c for c in doctor["checks"] if c["check"] == "daemon")
        assert daemon["status"] == "ok" and "running" in daemon["detail"]
    finally:
        stopped = amalfa_json(project, env, "daemon", "stop")
    assert stopped["stopped"] is True and stopped["pid"] == started["pid"]
    assert amalfa_json(project, env, "daemon", "status", expect=3)["running"] is False


# --------------------------------------------------------------------------------------------
# User errors: one line and a hint, no traceback
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "status", "pattern"), [
    (["search", "anything"], 1, r"no database at \.amalfa/runtime/resonance\.db"),
    (["stats"], 1, r"no database at"),
    (["validate", "--db", "missing.db"], 1, r"no database at .*missing\.db"),
    (["checkpoint"], 1, r"no database at"),
    (["init", "nowhere"], 1, r"no Markdown files found in nowhere"),
    (["search"], 2, r"required: QUERY"),
    (["search", "x", "-k", "0"], 2, r"-k/--limit: must be at least 1"),
    (["search", "   "], 2, r"the query is empty"),
    (["frobnicate"], 2, r"invalid choice: 'frobnicate'"),
    ([], 2, r"required: COMMAND"),
    (["daemon"], 2, r"required: ACTION"),
    (["scratchpad", "show", "../../etc"], 1, r"invalid scratchpad id"),
    (["scratchpad", "show", "0123456789ab"], 1, r"no scratchpad entry 0123456789ab"),
    (["--settings", "absent.json", "stats"], 1, r"settings file .*absent\.json does not exist"),
])
def test_user_errors_print_one_line_and_a_hint(project: Path, env: dict[str, str],
                                               args: list[str], status: int,
                                               pattern: str) -> None:
    assert_one_line_error(amalfa(project, env, *args, expect=None), status, pattern)


def test_reading_commands_do_not_migrate_an_older_schema(project: Path,
                                                         env: dict[str, str]) -> None:
    old = project / "old.db"  # the original system's first schema step, no summary column
    with closing(sqlite3.connect(old)) as conn:
        conn.executescript((REPO / "src/amalfa/migrations/0001_initial.sql").read_text())
    proc = amalfa(project, env, "stats", "--db", str(old), expect=None)
    assert_one_line_error(proc, 1, r"schema version 1 and needs migrations 2\.\.\d+")
    assert "amalfa checkpoint" in proc.stderr
    amalfa(project, env, "checkpoint", "--db", str(old))  # a writing command migrates it
    assert amalfa_json(project, env, "stats", "--db", str(old))["nodes"] == 0


def test_search_before_init_hints_at_init(project: Path, env: dict[str, str]) -> None:
    proc = amalfa(project, env, "search", "anything", expect=1)
    assert proc.stderr.splitlines()[1].startswith("hint: run `amalfa init` first")


@pytest.mark.parametrize("settings_text", ['{"sources": ', '{"scratchpad": {"enabled": 1}}'])
def test_bad_settings_are_one_line(project: Path, env: dict[str, str],
                                   settings_text: str) -> None:
    Path(env["AMALFA_SETTINGS"]).write_text(settings_text)
    proc = amalfa(project, env, "init", expect=None)
    assert_one_line_error(proc, 1, r"amalfa\.settings\.json")


def test_amalfa_debug_shows_the_traceback(project: Path, env: dict[str, str]) -> None:
    proc = amalfa(project, {**env, "AMALFA_DEBUG": "1"}, "search", "x", expect=None)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "CommandError" in proc.stderr


# --------------------------------------------------------------------------------------------
# Help and documentation (in the manner of sqlite-utils: no command without help or docs)
# --------------------------------------------------------------------------------------------


def all_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
                 ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                path = (*prefix, name)
                found.append((path, sub, helps.get(name)))
                found += all_commands(sub, path)
    return found


COMMANDS = all_commands(build_parser())


def test_the_command_list_is_complete() -> None:
    # Other command modules may add commands (each is then held to the help and documentation
    # tests below); these must always be there.
    names = {" ".join(path) for path, _, _ in COMMANDS}
    assert names >= {
        "init", "search", "stats", "validate", "doctor", "checkpoint",
        "daemon", "daemon start", "daemon stop", "daemon status", "daemon serve",
        "scratchpad", "scratchpad list", "scratchpad show", "scratchpad prune",
        "scratchpad clear", "scratchpad stats",
    }


def test_command_modules_register_themselves() -> None:
    from amalfa.cli import command_modules

    modules = command_modules()
    assert modules[0] == "init"  # ORDER puts the first steps first
    assert modules.index("search") < modules.index("stats") < modules.index("scratchpad")
    assert {"doctor", "checkpoint", "daemon", "scratchpad"} <= set(modules)
    assert not [name for name in modules if name.startswith("_")]


@pytest.mark.parametrize(("path", "parser", "help_text"), COMMANDS,
                         ids=[" ".join(path) for path, _, _ in COMMANDS])
def test_every_command_has_help_text(path: tuple[str, ...], parser: argparse.ArgumentParser,
                                     help_text: str | None) -> None:
    assert help_text and help_text.strip(), f"amalfa {' '.join(path)} has no help line"
    assert parser.description and len(parser.description) > len(help_text)
    for action in parser._actions:
        if action.dest != "help" and not isinstance(action, argparse._SubParsersAction):
            assert action.help, f"amalfa {' '.join(path)}: {action.dest} has no help"


@pytest.mark.parametrize("path", [path for path, _, _ in COMMANDS],
                         ids=[" ".join(path) for path, _, _ in COMMANDS])
def test_every_command_is_documented(path: tuple[str, ...]) -> None:
    reference = (REPO / "docs/reference/cli.md").read_text(encoding="utf-8")
    assert f"amalfa {' '.join(path)}" in reference
    if len(path) == 1:  # a section of its own, with an example in a code block
        assert re.search(rf"^## `amalfa {path[0]}", reference, re.MULTILINE), path
        section = reference.split(f"## `amalfa {path[0]}", 1)[1].split("\n## ", 1)[0]
        assert re.search(rf"```(?:bash|console)\n(?:\$ )?amalfa {path[0]}", section), path


def test_help_runs_in_a_subprocess_without_loading_heavy_modules(env: dict[str, str],
                                                                 tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from amalfa.cli import main\n"
        "for argv in (['--help'], ['search', '--help'], ['daemon', 'start', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('numpy', 'onnxruntime', 'tokenizers', 'amalfa._core.connection',"
        " 'amalfa.db', 'amalfa.embedder') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "usage: amalfa search" in proc.stdout
    assert proc.stdout.rstrip().endswith("HEAVY []")


@pytest.mark.parametrize("path", [path for path, _, _ in COMMANDS],
                         ids=[" ".join(path) for path, _, _ in COMMANDS])
def test_help_of_every_command_in_a_subprocess(path: tuple[str, ...], env: dict[str, str],
                                               tmp_path: Path) -> None:
    proc = amalfa(tmp_path, env, *path, "--help")
    assert proc.stdout.startswith(f"usage: amalfa {' '.join(path)}")
    assert proc.stderr == ""


# --------------------------------------------------------------------------------------------
# The model: the one a database recorded wins
# --------------------------------------------------------------------------------------------


def test_the_recorded_model_wins_and_a_missing_one_is_a_clear_error(
        project: Path, env: dict[str, str], tmp_path: Path) -> None:
    from amalfa.embedder import Embedder  # finds the embedded model's files; loads nothing

    files = Embedder(use_daemon=False).files
    folder = tmp_path / "my-model"  # the embedded model under another name: same 384-d vectors
    folder.mkdir()
    (folder / "model.onnx").symlink_to(files.onnx_path)
    (folder / "tokenizer.json").write_text(files.tokenizer_text(), encoding="utf-8")
    settings = Path(env["AMALFA_SETTINGS"])
    settings.write_text(json.dumps({"sources": ["notes"],
                                    "embeddings": {"model": str(folder)}}), encoding="utf-8")
    amalfa(project, env, "init")
    assert amalfa_json(project, env, "stats")["model"] == str(folder.resolve())

    # back to the default model in the settings: queries still use the recorded one
    settings.write_text(json.dumps({"sources": ["notes"]}), encoding="utf-8")
    hits = amalfa_json(project, env, "search", "naturally leavened bread")
    assert hits[0]["id"] == "notes-sourdough"
    doctor = amalfa_json(project, env, "doctor")
    model_check = next(c for c in doctor["checks"] if c["check"] == "model")
    assert model_check["name"] == str(folder.resolve())

    # the recorded model is gone: an error naming it, never a quiet switch to another model
    (folder / "model.onnx").unlink()
    proc = amalfa(project, env, "search", "naturally leavened bread", expect=None)
    assert_one_line_error(proc, 1, re.escape(str(folder.resolve())))
    assert "AMALFA_MODEL_PATH" in proc.stderr.splitlines()[1]


# --------------------------------------------------------------------------------------------
# Hints are chosen by class
# --------------------------------------------------------------------------------------------


def test_hints_are_chosen_by_class_not_by_name() -> None:
    from amalfa import errors
    from amalfa.cli._errors import describe

    class CustomDaemonFailure(errors.DaemonError):
        pass

    message, hint, status = describe(CustomDaemonFailure("could not bind\nlog line 1\nline 2"))
    assert (message, status) == ("could not bind", 1)  # the log's lines stay out of the message
    assert hint is not None and "vector-daemon.log" in hint

    DaemonError = type("DaemonError", (Exception,), {})  # the name alone earns no daemon hint
    assert "vector-daemon.log" not in (describe(DaemonError("x"))[1] or "")

    assert "init --force" in (describe(errors.ModelMismatchError("other model"))[1] or "")
    assert "amalfa[model]" in (describe(errors.ModelError("no model"))[1] or "")
    assert "another process" in (describe(errors.BusyError("busy", 5))[1] or "")
    assert describe(errors.CommandError("bad", hint="do this", status=2)) == ("bad", "do this", 2)

"""End-to-end tests of ``amalfa search`` and the passage side of ``amalfa init``: the real command
in a subprocess, on Markdown written here (and on the repository's own docs, the README's first
command), with the real embedded model. Each run gets an isolated HOME, Hugging Face cache and
settings file, and a VECTOR_PORT nothing listens on.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = {
    "notes/boiler.md": (
        "# Boiler\n\nHow the heating works.\n\n## Pressure\n\nThe gauge should read between one "
        "and two bar; top it up with the filling loop when it drops.\n"
    ),
    "notes/bread.md": (
        "---\ndomain: kitchen\n---\n# Bread\n\nA sourdough starter is flour and water left to "
        "ferment for a week.\n"
    ),
}


def unused_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("AMALFA_MODEL_PATH", "EMBEDDING_MODEL", "AMALFA_DEBUG",
                                "AMALFA_SETTINGS", "AMALFA_RERANKER_PATH", "RERANKER_MODEL",
                                "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "COLUMNS")}
    environment.update(HOME=str(home), VECTOR_PORT=str(unused_port()),
                       HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="1")
    return environment


def amalfa(cwd: Path, env: dict[str, str], *args: str, expect: int | None = 0,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "amalfa", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, input=stdin, timeout=300)
    if expect is not None:
        assert proc.returncode == expect, proc.stderr
    return proc


@pytest.fixture
def project(tmp_path: Path, env: dict[str, str]) -> Path:
    root = tmp_path / "project"
    for rel, text in CORPUS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    amalfa(root, env, "init", "notes")
    return root


def test_json_hits_carry_the_passage(project: Path, env: dict[str, str]) -> None:
    proc = amalfa(project, env, "search", "what should the pressure gauge read", "-k", "2",
                  "--json")
    hits = json.loads(proc.stdout)
    assert len(hits) == 2
    assert {"id", "score", "title", "source", "snippet", "heading", "line"} <= set(hits[0])
    top = hits[0]
    assert (top["id"], top["title"], top["source"]) == ("notes-boiler", "Boiler",
                                                        "notes/boiler.md")
    assert top["heading"] == "Boiler > Pressure" and top["line"] == 7
    assert "filling loop" in top["snippet"] and top["stale"] is False


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_every_mode_answers(project: Path, env: dict[str, str], mode: str) -> None:
    proc = amalfa(project, env, "search", "sourdough starter", "--mode", mode, "--json")
    assert json.loads(proc.stdout)[0]["id"] == "notes-bread"


def test_the_text_output_shows_the_heading_and_the_snippet(project: Path,
                                                           env: dict[str, str]) -> None:
    out = amalfa(project, env, "search", "pressure gauge", "-k", "1").stdout.splitlines()
    assert out[0].split()[:3] == ["1", out[0].split()[1], "Boiler"]
    assert out[0].endswith("notes/boiler.md:7")
    assert out[1].strip() == "in Boiler > Pressure"
    assert "filling loop" in out[2]


def test_batch_prints_one_array_per_line_in_order(project: Path, env: dict[str, str]) -> None:
    queries = project / "queries.txt"
    queries.write_text("sourdough starter\n\npressure gauge\nflour and water\n",
                       encoding="utf-8")
    lines = amalfa(project, env, "search", "--batch", str(queries), "-k", "1")
    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [[hit["id"] for hit in row] for row in rows] == [
        ["notes-bread"], [], ["notes-boiler"], ["notes-bread"]]
    from_stdin = amalfa(project, env, "search", "--batch", "-", "-k", "1",
                        stdin="pressure gauge\n")
    assert [json.loads(line)[0]["id"] for line in from_stdin.stdout.splitlines()] == [
        "notes-boiler"]


@pytest.mark.parametrize(("args", "status", "message"), [
    (["search", "--batch", "missing.txt"], 1, "cannot read the batch file missing.txt"),
    (["search", "x", "--batch", "q.txt"], 2, "either QUERY or --batch"),
    (["search", "--batch", "bad.txt", "--raw"], 2, "line 2: the FTS5 query"),
    (["search", "--batch", "latin1.txt"], 1, "is not UTF-8"),
    (["search"], 2, "required: QUERY"),
    (["search", "x", "--mode", "fuzzy"], 2, "invalid choice: 'fuzzy'"),
    (["search", "x", "--rerank"], 1, "AMALFA_RERANKER_PATH"),
])
def test_search_errors(project: Path, env: dict[str, str], args: list[str], status: int,
                       message: str) -> None:
    (project / "q.txt").write_text("x\n", encoding="utf-8")
    (project / "bad.txt").write_text('sourdough\nNEAR("open\n', encoding="utf-8")
    (project / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    proc = amalfa(project, env, *args, expect=status)
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_init_reports_passages_and_a_second_run_embeds_nothing(project: Path,
                                                               env: dict[str, str]) -> None:
    again = json.loads(amalfa(project, env, "init", "notes", "--json").stdout)
    assert again["passages"]["embedded"] == 0 and again["passages"]["total"] >= 2
    (project / "notes/boiler.md").write_text(
        CORPUS["notes/boiler.md"].replace("two bar", "2.5 bar"), encoding="utf-8")
    edited = json.loads(amalfa(project, env, "init", "notes", "--json").stdout)
    assert edited["passages"]["embedded"] == 1 and edited["passages"]["removed"] == 1


def test_the_readme_command_shows_passages(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", root / "docs")
    amalfa(root, env, "init", "docs")
    proc = amalfa(root, env, "search", "how are vectors normalised", "--json")
    top = json.loads(proc.stdout)[0]
    assert top["id"] == "docs-concepts-fafcas"
    assert top["heading"] and top["line"] and "normalis" in top["snippet"].lower()

"""`amalfa read`, `explore` and `related` as a user runs them: real processes on a corpus that
`amalfa init` ingested with the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = {
    "a.md": "---\ntitle: Alpha\ntags: [x]\n---\n# Alpha\n\nAlpha talks about sailing boats.\n"
            "See [Beta](b.md).\n",
    "b.md": "# Beta\n\nBeta is about sailing ships at sea. See [Gamma](c.md).\n",
    "c.md": "# Gamma\n\nGamma closes the loop back to [Alpha](a.md).\n",
    "d.md": "# Delta\n\nA recipe for sourdough bread.\n",
}


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AMALFA_MODEL_PATH", "EMBEDDING_MODEL", "AMALFA_DEBUG", "AMALFA_SETTINGS")}
    env.update(HOME=str(home), HF_HUB_OFFLINE="1")
    return env


def amalfa(root: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "amalfa", *args], cwd=root, env=_env(root),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr)
    return proc


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("graph-cli")
    (folder / "docs").mkdir()
    for name, text in DOCS.items():
        (folder / "docs" / name).write_text(text, encoding="utf-8")
    amalfa(folder, "init")
    return folder


def test_read_prints_the_body_raw_and_lines(root: Path) -> None:
    body = amalfa(root, "read", "docs-a").stdout
    assert body.startswith("# Alpha") and "title: Alpha" not in body
    assert amalfa(root, "read", "docs-a", "--raw").stdout == DOCS["a.md"]
    assert amalfa(root, "read", "docs-a", "--lines", "8:8").stdout == "See [Beta](b.md).\n"
    as_json = json.loads(amalfa(root, "read", "docs-a", "--json").stdout)
    assert as_json["source"] == "docs/a.md" and as_json["line_start"] == 5


def test_read_errors_are_one_line_with_a_hint(root: Path) -> None:
    proc = amalfa(root, "read", "docs-nope", expect=1)
    assert proc.stderr.splitlines()[0] == "amalfa: error: no node with id 'docs-nope' in the graph"
    assert proc.stderr.splitlines()[1].startswith("hint:")
    assert "ends before it starts" in amalfa(root, "read", "docs-a", "--lines", "5:1",
                                             expect=2).stderr
    (root / "docs" / "d.md").write_text("# Delta\n\nEdited after ingest.\n")
    assert "changed since it was ingested" in amalfa(root, "read", "docs-d", expect=1).stderr


def test_explore_tree_and_json(root: Path) -> None:
    tree = amalfa(root, "explore", "docs-a", "--depth", "2").stdout.splitlines()
    assert tree[0] == "docs-a  Alpha"
    assert any("-> links_to  docs-b  Beta" in line for line in tree)
    assert any("<- links_to  docs-c  Gamma" in line for line in tree)
    assert len(tree) == 3  # the cycle a -> b -> c -> a lists each node once
    graph = json.loads(amalfa(root, "explore", "docs-a", "--depth", "5", "--direction",
                              "outgoing", "--json").stdout)
    assert {n["id"]: n["depth"] for n in graph["nodes"]} == {"docs-a": 0, "docs-b": 1,
                                                             "docs-c": 2}
    assert {(e["source"], e["target"], e["type"]) for e in graph["edges"]} == {
        ("docs-a", "docs-b", "links_to"), ("docs-b", "docs-c", "links_to"),
        ("docs-c", "docs-a", "links_to")}
    assert amalfa(root, "explore", "docs-a", "--depth", "0").stdout.splitlines() == ["docs-a  Alpha"]
    assert "must be 0 or more" in amalfa(root, "explore", "docs-a", "--depth", "-1",
                                         expect=2).stderr
    assert "no node with id" in amalfa(root, "explore", "zzz", expect=1).stderr


def test_related_leaves_the_node_out_and_ranks_by_meaning(root: Path) -> None:
    rows = json.loads(amalfa(root, "related", "docs-a", "-k", "3", "--json").stdout)
    ids = [row["id"] for row in rows]
    assert "docs-a" not in ids and len(ids) == 3
    assert ids[0] == "docs-b"  # sailing boats ~ sailing ships
    assert [row["score"] for row in rows] == sorted((row["score"] for row in rows), reverse=True)
    assert "no node with id" in amalfa(root, "related", "zzz", expect=1).stderr


def test_search_expand_adds_linked_documents_marked_and_decayed(root: Path) -> None:
    rows = json.loads(amalfa(root, "search", "Alpha talks about sailing boats", "-k", "1",
                             "--expand", "1", "--json").stdout)
    hits = [row for row in rows if not row.get("expansion")]
    expansions = [row for row in rows if row.get("expansion")]
    assert [hit["id"] for hit in hits] == ["docs-a"]
    assert {row["id"] for row in expansions} == {"docs-b", "docs-c"}  # a -> b and c -> a
    for row in expansions:
        assert row["expanded_from"] == "docs-a" and row["hops"] == 1
        assert row["score"] == pytest.approx(hits[0]["score"] * 0.5, abs=1e-3)
    text = amalfa(root, "search", "Alpha talks about sailing boats", "-k", "1",
                  "--expand", "1").stdout
    assert "Linked to the hits" in text and "(1 link from docs-a)" in text
    plain = json.loads(amalfa(root, "search", "Alpha talks about sailing boats", "-k", "1",
                              "--json").stdout)
    assert not any(row.get("expansion") for row in plain)
    assert "at most 10 links" in amalfa(root, "search", "x", "--expand", "11", expect=2).stderr

"""Tests for amalfa.ingest.ingest: Markdown files -> a ResonanceDB, with the real ONNX model.

Real files in tmp_path, a real database file, the embedded all-MiniLM-L6-v2 model. The database
is inspected through ResonanceDB and its raw connection.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from amalfa.db import Node, ResonanceDB
from amalfa.embedder import Embedder
from amalfa.ingest import (
    EDGE_LINKS_TO,
    EDGE_WIKILINK,
    MODEL_META_KEY,
    IngestWarning,
    ModelMismatchError,
    ingest,
    recorded_model,
)
from amalfa.stats import IngestionStats

CORPUS = {
    "docs/bread.md": (
        "---\ntitle: Sourdough\ntags: [baking, food]\ndate: 2024-03-01\nauthor: Ann\n---\n"
        "# Sourdough\n\nA starter of wild yeast leavens the loaf. See [the oven](oven.md) and "
        "[[Garden]].\n"
    ),
    "docs/oven.md": "# Oven care\n\nClean the oven racks with soda after baking.\n",
    "docs/garden.md": "# Garden\n\nTomatoes need sun and water every day. Back to [[bread]].\n",
    "notes/stars.md": "# Meteors\n\nThe Perseids peak in August. Compare [[oven]].\n",
}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    # use_daemon=False: a daemon someone runs on this machine must not answer for the test
    return Embedder(use_daemon=False)


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for rel, text in CORPUS.items():
        write(tmp_path, rel, text)
    return tmp_path


@pytest.fixture
def db(project: Path):
    with ResonanceDB.create(project / "graph.db") as database:
        yield database


def run(db: ResonanceDB, embedder: Embedder, root: Path, sources=("docs", "notes"), **options):
    return ingest(list(sources), db=db, embedder=embedder, root=root, **options)


# Rows are read through the database's own connection. Never open the file with the stdlib
# sqlite3 module in this process as well: two SQLite libraries in one process do not see each
# other's POSIX locks, and the stdlib one closing its connection deletes the WAL file under
# amalfa's (SQLite's "multiple copies of SQLite in one process" hazard). test_cli.py reads
# with the stdlib module from the test process while amalfa runs in subprocesses, which is safe.


def rows(db: ResonanceDB) -> dict[str, tuple]:
    """Every node row as stored (embedding bytes included), by id."""
    return {r[0]: tuple(bytes(v) if isinstance(v, memoryview) else v for v in r[1:])
            for r in db.raw.execute(
                "SELECT id, type, title, domain, layer, summary, embedding, hash, meta, date "
                "FROM nodes ORDER BY id")}


def edges(db: ResonanceDB) -> set[tuple[str, str, str]]:
    return {tuple(r) for r in db.raw.execute("SELECT source, target, type FROM edges")}


def test_first_run_writes_hollow_nodes_with_embeddings(project: Path, db: ResonanceDB,
                                                       embedder: Embedder) -> None:
    result = run(db, embedder, project)
    assert result.files == 4 and result.documents == 4
    assert sorted(result.added) == ["docs-bread", "docs-garden", "docs-oven", "notes-stars"]
    assert result.updated == result.unchanged == result.removed == []

    bread = db.get_node("docs-bread")
    assert bread is not None
    assert bread.label == "Sourdough"
    assert bread.type == "document" and bread.domain == "knowledge" and bread.layer == "experience"
    assert bread.hash == hashlib.sha256((project / "docs/bread.md").read_bytes()).hexdigest()
    assert bread.summary.startswith("A starter of wild yeast leavens the loaf.")
    assert bread.meta == {"source": "docs/bread.md", "tags": ["baking", "food"], "author": "Ann"}
    assert bread.date == "2024-03-01"
    assert bread.embedding is not None and bread.embedding.shape == (384,)
    assert np.linalg.norm(bread.embedding) == pytest.approx(1.0, abs=1e-5)
    # the stored vector is the model's vector of the document's text
    expected = embedder.embed("Sourdough\n\n" + "A starter of wild yeast leavens the loaf. See "
                              "[the oven](oven.md) and [[Garden]].")
    assert float(np.dot(bread.embedding, expected)) > 0.9
    assert recorded_model(db) == embedder.model_name


def test_links_and_wikilinks_between_ingested_files_become_edges(
        project: Path, db: ResonanceDB, embedder: Embedder) -> None:
    result = run(db, embedder, project)
    expected = {
        ("docs-bread", "docs-oven", EDGE_LINKS_TO),
        ("docs-bread", "docs-garden", EDGE_WIKILINK),
        ("docs-garden", "docs-bread", EDGE_WIKILINK),
        ("notes-stars", "docs-oven", EDGE_WIKILINK),
    }
    assert edges(db) == expected
    assert set(result.links) == expected and result.edges_added == 4


def test_unchanged_files_are_not_rewritten(project: Path, db: ResonanceDB,
                                           embedder: Embedder) -> None:
    run(db, embedder, project)
    before, history = rows(db), len(db.get_history())
    result = run(db, embedder, project)
    assert result.added == result.updated == result.removed == []
    assert sorted(result.unchanged) == sorted(before)
    assert result.edges_added == result.edges_removed == 0
    assert rows(db) == before
    assert len(db.get_history()) == history  # not even an identical upsert was written


def test_an_edit_changes_only_that_node(project: Path, db: ResonanceDB,
                                        embedder: Embedder) -> None:
    run(db, embedder, project)
    before = rows(db)
    write(project, "docs/oven.md", "# Oven care\n\nDescale the steam tray once a month.\n")
    result = run(db, embedder, project)
    assert result.updated == ["docs-oven"] and result.added == []
    after = rows(db)
    assert {k: v for k, v in after.items() if k != "docs-oven"} == \
        {k: v for k, v in before.items() if k != "docs-oven"}
    old, new = before["docs-oven"], after["docs-oven"]
    assert new[6] != old[6] and new[5] != old[5]  # embedding and hash changed
    assert new[4] == "Descale the steam tray once a month."


def test_a_deleted_file_loses_its_node_and_edges(project: Path, db: ResonanceDB,
                                                 embedder: Embedder) -> None:
    run(db, embedder, project)
    (project / "docs/oven.md").unlink()
    result = run(db, embedder, project)
    assert result.removed == ["docs-oven"]
    assert db.get_node("docs-oven") is None
    assert all("docs-oven" not in (s, t) for s, t, _ in edges(db))
    assert ("docs-garden", "docs-bread", EDGE_WIKILINK) in edges(db)


def test_removal_is_limited_to_the_run_and_to_ingested_nodes(
        project: Path, db: ResonanceDB, embedder: Embedder) -> None:
    run(db, embedder, project)
    db.insert_node(Node(id="notes-handmade", type="concept", label="Made by another tool",
                        embedding=embedder.embed("anything")))
    (project / "notes/stars.md").unlink()

    # A run over docs/ only: the deleted notes file is outside it, its node stays.
    result = run(db, embedder, project, sources=["docs"])
    assert result.removed == []
    assert db.get_node("notes-stars") is not None

    # A run over notes/ removes it; the node no file ever made is never touched.
    with pytest.warns(IngestWarning, match="notes: no Markdown files found"):
        result = run(db, embedder, project, sources=["notes"])
    assert result.removed == ["notes-stars"]
    assert db.get_node("notes-stars") is None
    assert db.get_node("notes-handmade") is not None


def test_newly_excluded_files_lose_their_nodes(project: Path, db: ResonanceDB,
                                               embedder: Embedder) -> None:
    run(db, embedder, project)
    result = run(db, embedder, project, exclude_patterns=["garden.md"])
    assert result.removed == ["docs-garden"]
    assert db.get_node("docs-garden") is None


def test_a_glob_source_bounds_removal_like_a_folder(project: Path, db: ResonanceDB,
                                                    embedder: Embedder) -> None:
    run(db, embedder, project)
    (project / "docs/garden.md").unlink()
    (project / "notes/stars.md").unlink()
    result = run(db, embedder, project, sources=["docs/*.md"])
    assert result.removed == ["docs-garden"]
    assert db.get_node("notes-stars") is not None


def test_links_to_nodes_outside_the_run_survive(project: Path, db: ResonanceDB,
                                                embedder: Embedder) -> None:
    run(db, embedder, project)
    write(project, "notes/stars.md", "# Meteors\n\nThe Leonids come in November. [[oven]]\n")
    result = run(db, embedder, project, sources=["notes"])
    assert result.updated == ["notes-stars"]
    # docs/oven.md is not part of this run, but the wikilink still resolves to its node
    assert ("notes-stars", "docs-oven", EDGE_WIKILINK) in edges(db)
    assert result.edges_removed == 0


def test_a_removed_link_removes_its_edge_but_not_other_tools_edges(
        project: Path, db: ResonanceDB, embedder: Embedder) -> None:
    run(db, embedder, project)
    db.insert_edge("docs-bread", "docs-oven", "related_to")
    write(project, "docs/bread.md", "# Sourdough\n\nNo links any more.\n")
    result = run(db, embedder, project)
    assert result.edges_removed == 2
    stored = edges(db)
    assert ("docs-bread", "docs-oven", EDGE_LINKS_TO) not in stored
    assert ("docs-bread", "docs-garden", EDGE_WIKILINK) not in stored
    assert ("docs-bread", "docs-oven", "related_to") in stored
    deleted = [h for h in db.get_history(entity_type="edge") if h.action == "delete"]
    assert len(deleted) == 2  # the deletions are audited like every other change


def test_a_new_target_gains_the_edges_of_unchanged_files(project: Path, db: ResonanceDB,
                                                         embedder: Embedder) -> None:
    write(project, "docs/bread.md", CORPUS["docs/bread.md"] + "Also [[pizza]].\n")
    run(db, embedder, project)
    write(project, "docs/pizza.md", "# Pizza\n\nA flat bread baked very hot.\n")
    result = run(db, embedder, project)
    assert result.added == ["docs-pizza"] and result.updated == []
    assert ("docs-bread", "docs-pizza", EDGE_WIKILINK) in edges(db)


def test_an_interrupted_run_keeps_whole_batches_and_the_next_run_finishes(
        project: Path, db: ResonanceDB, embedder: Embedder) -> None:
    for index in range(5):
        write(project, f"docs/extra-{index}.md", f"# Extra {index}\n\nFiller text {index}.\n")

    def stop_after_first_batch(done: int, total: int, passages: int) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(db, embedder, project, batch_size=3, progress=stop_after_first_batch)
    written = rows(db)
    assert len(written) == 3  # one whole batch: three complete nodes, nothing else
    for row in written.values():
        assert row[5] is not None and len(row[5]) == 384 * 4 and row[6]  # embedding, hash
    assert edges(db) == set()  # edges come after the last batch

    result = run(db, embedder, project, batch_size=3)
    assert sorted(result.added) == sorted(set(rows(db)) - set(written))
    assert len(rows(db)) == 9 and result.unchanged and len(result.unchanged) == 3
    assert ("docs-garden", "docs-bread", EDGE_WIKILINK) in edges(db)


def test_progress_counts_up_to_the_files_embedded(project: Path, db: ResonanceDB,
                                                  embedder: Embedder) -> None:
    calls: list[tuple[int, int, int]] = []
    run(db, embedder, project, batch_size=3, progress=lambda d, t, p: calls.append((d, t, p)))
    assert [(d, t) for d, t, _ in calls] == [(0, 4), (3, 4), (4, 4)]
    passages = [p for _, _, p in calls]
    assert passages[0] == 0 and passages == sorted(passages)
    assert passages[-1] == db.count_passages()[0] >= 4  # every file has at least one passage
    calls.clear()
    run(db, embedder, project, progress=lambda d, t, p: calls.append((d, t, p)))
    assert calls == []  # nothing to embed, nothing to report


def test_force_embeds_every_file_again(project: Path, db: ResonanceDB,
                                       embedder: Embedder) -> None:
    run(db, embedder, project)
    result = run(db, embedder, project, force=True)
    assert sorted(result.updated) == ["docs-bread", "docs-garden", "docs-oven", "notes-stars"]
    assert result.unchanged == []


def test_embeddings_of_another_model_are_not_mixed_in(project: Path, db: ResonanceDB,
                                                      embedder: Embedder) -> None:
    run(db, embedder, project)
    db.raw.execute("UPDATE amalfa_meta SET value = 'example/other-model' WHERE key = ?",
                   (MODEL_META_KEY,))
    write(project, "docs/oven.md", "# Oven care\n\nSomething new.\n")
    before = rows(db)
    with pytest.raises(ModelMismatchError, match="example/other-model"):
        run(db, embedder, project)
    assert rows(db) == before
    result = run(db, embedder, project, force=True)
    assert len(result.updated) == 4
    assert recorded_model(db) == embedder.model_name


def test_embeddings_of_another_precision_are_not_mixed_in(project: Path, db: ResonanceDB,
                                                          embedder: Embedder) -> None:
    """The precision is recorded beside the model; the library pipeline (not only `amalfa
    init`) refuses to add vectors of another precision, and force replaces the pair."""
    run(db, embedder, project)
    assert (db.recorded_model(), db.recorded_precision()) == (embedder.model_name,
                                                              embedder.precision)
    other = "int8" if embedder.precision != "int8" else "fp32"
    with db.transaction():
        db.record_model(embedder.model_name, other)  # as if an earlier run used the other one
    write(project, "docs/oven.md", "# Oven care\n\nSomething else again.\n")
    before = rows(db)
    with pytest.raises(ModelMismatchError, match=f"\\({other}\\)"):
        run(db, embedder, project)
    assert rows(db) == before
    run(db, embedder, project, force=True)
    assert db.recorded_precision() == embedder.precision


def test_a_database_of_another_dimension_is_refused_before_writing(
        project: Path, embedder: Embedder) -> None:
    with ResonanceDB.create(project / "wide.db", dimensions=768) as db:
        with pytest.raises(ValueError, match="768-d"):
            run(db, embedder, project)
        assert db.get_stats().nodes == 0


def test_batch_size_must_be_positive(project: Path, db: ResonanceDB,
                                     embedder: Embedder) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        run(db, embedder, project, batch_size=0)


def test_the_result_counts_the_corpus_per_domain(project: Path, db: ResonanceDB,
                                                 embedder: Embedder) -> None:
    write(project, "notes/stars.md", "---\ndomain: sky\n---\n# Meteors\n\nSee [[oven]].\n")
    result = run(db, embedder, project)
    run(db, embedder, project)  # unchanged files still count: the stats describe the state
    stats = IngestionStats()
    result.record(stats)
    metrics = stats.metrics()
    assert metrics["knowledge"].nodes == 3 and metrics["knowledge"].vectors == 3
    assert metrics["knowledge"].edges == {EDGE_LINKS_TO: 1, EDGE_WIKILINK: 2}
    assert metrics["sky"].nodes == 1 and metrics["sky"].edges == {EDGE_WIKILINK: 1}
    assert set(result.seconds) >= {"discover", "parse", "embed", "write", "link", "total"}


def test_meta_source_is_what_marks_a_node_as_ingested(project: Path, db: ResonanceDB,
                                                      embedder: Embedder) -> None:
    # meta that is not JSON (written by another client) must not break the scan
    run(db, embedder, project)
    db.raw.execute("INSERT INTO nodes (id, type, meta) VALUES ('odd', 'x', 'not json \"source\"')")
    (project / "docs/oven.md").unlink()
    result = run(db, embedder, project)
    assert result.removed == ["docs-oven"]
    assert db.raw.execute("SELECT count(*) FROM nodes WHERE id = 'odd'") == [(1,)]

"""Tests for amalfa.search and the passage side of ingest: real files, a real database file and
the embedded ONNX model.

Covered: the three modes on a small corpus, hit fields (heading, line, snippet), FTS5 query
escaping against hostile strings (hypothesis), incremental re-embedding counts, stale files,
filters, batches, the passages table's change log and keyword index in step with deletions.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from amalfa.db import ResonanceDB
from amalfa.embedder import Embedder
from amalfa.errors import ModelError
from amalfa.ingest import ingest
from amalfa.search import SearchEngine, keyword_query, snippet

FILLER = ("Paragraph {i} of the appendix lists routine maintenance: oil the hinges, sweep the "
          "floor, check the smoke alarm battery and note the date in the house log book.")
CORPUS = {
    "garden/tomatoes.md": (
        "---\ndomain: garden\n---\n# Tomatoes\n\nTomatoes want full sun and deep watering.\n\n"
        "## Pests\n\nAphids cluster under the leaves; a jet of water knocks them off.\n"
    ),
    "kitchen/bread.md": (
        "# Bread\n\nA sourdough starter is flour and water left to ferment.\n\n"
        "## Baking\n\nBake the loaf in a preheated cast-iron pot at a high heat.\n"
    ),
    "house/manual.md": (
        "# House manual\n\nHow this house works.\n\n## Appendix\n\n"
        + "\n\n".join(FILLER.format(i=i) for i in range(40))
        + "\n\n## Boiler\n\nThe boiler's pressure gauge should read between one and two bar; "
          "top it up with the filling loop under the tank when it drops.\n"
    ),
}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(use_daemon=False)


def write_corpus(root: Path) -> Path:
    for rel, text in CORPUS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "project")


@pytest.fixture(scope="module")
def shared_engine(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder):
    """One ingested corpus for the tests that only read (the hypothesis test among them)."""
    folder = tmp_path_factory.mktemp("shared")
    root = write_corpus(folder / "project")
    with ResonanceDB(folder / "search.db", create=True) as database:
        ingest(["."], db=database, embedder=embedder, root=root)
        yield SearchEngine(database, embedder=embedder)


@pytest.fixture
def db(tmp_path: Path):
    with ResonanceDB(tmp_path / "search.db", create=True) as database:
        yield database


@pytest.fixture
def engine(project: Path, db: ResonanceDB, embedder: Embedder) -> SearchEngine:
    ingest(["."], db=db, embedder=embedder, root=project)
    return SearchEngine(db, embedder=embedder)


def file_lines(project: Path, source: str) -> list[str]:
    return (project / source).read_text(encoding="utf-8").split("\n")


# ---------------------------------------------------------------------------------------------
# modes and hits
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_a_sentence_deep_in_a_long_file_is_found_in_every_mode(
        engine: SearchEngine, project: Path, mode: str) -> None:
    hits = engine.search("what should the boiler pressure gauge read", 3, mode=mode)
    top = hits[0]
    assert top.id == "house-manual" and top.title == "House manual"
    assert top.source == "house/manual.md" and top.heading == "House manual > Boiler"
    lines = file_lines(project, "house/manual.md")
    assert top.line is not None and top.line_end is not None
    assert "pressure gauge" in " ".join(lines[top.line - 1:top.line_end])
    assert "pressure gauge" in top.snippet and not top.stale


def test_the_document_vector_alone_misses_what_passages_find(engine: SearchEngine,
                                                             db: ResonanceDB) -> None:
    """The seed's one vector per file still answers, and reads only the file's opening."""
    from amalfa.vectors import VectorEngine

    query = engine.embedder.embed("filling loop under the boiler tank")
    documents = VectorEngine(db).search_by_vector(query, 3, threshold=-1.0)
    assert {r.id for r in documents} == {"house-manual", "kitchen-bread", "garden-tomatoes"}
    passage_hits = engine.search("filling loop under the boiler tank", 1, mode="vector")
    assert passage_hits[0].heading == "House manual > Boiler"


def test_keyword_mode_needs_the_words_and_vector_mode_the_meaning(engine: SearchEngine) -> None:
    assert engine.search("aphids", 5, mode="keyword")[0].id == "garden-tomatoes"
    assert engine.search("zymurgy", 5, mode="keyword") == []
    paraphrase = engine.search("little green insects eating my plants", 1, mode="vector")
    assert paraphrase[0].id == "garden-tomatoes" and paraphrase[0].heading == "Tomatoes > Pests"


def test_common_words_do_not_outvote_the_meaning(engine: SearchEngine) -> None:
    # "with" is the only word this shares with any passage (the boiler's); it is not a vote
    hits = engine.search("letting dough rise with wild yeast", 3)
    assert hits[0].id == "kitchen-bread"


def test_hybrid_returns_each_document_once_best_first(engine: SearchEngine) -> None:
    hits = engine.search("water", 10)
    ids = [h.id for h in hits]
    assert len(ids) == len(set(ids)) == 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(0 < h.score <= 3 / 61 for h in hits)  # RRF: at most 1/(60+1) per list


# A sentence several READMEs paraphrase, and one document that says it word for word: the
# vector list ranks the paraphrases first, and plain RRF put the exact document third.
SPONSOR = ("Support this project and its continued development by sponsoring us on the funding "
           "page.")
PARAPHRASES = [
    "Sponsoring keeps this project alive: please consider funding its development.",
    "If you like this project, become a sponsor and support its ongoing development.",
    "Development of this project is supported by sponsors; you can help fund it too.",
    "Support the maintainers: sponsorship pays for continued work on the project.",
    "Donations and sponsorships support the continued development of this library.",
    "Please support our development work by sponsoring the project on its funding page.",
]


@pytest.fixture(scope="module")
def sponsor_engine(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder):
    folder = tmp_path_factory.mktemp("sponsor")
    root = folder / "project"
    root.mkdir()
    (root / "exact.md").write_text(
        "# Release notes\n\nVersion 4 changes the configuration loader and drops Python 3.8."
        f"\n\n{SPONSOR}\n\nThe test suite now runs on three operating systems.\n",
        encoding="utf-8")
    for i, text in enumerate(PARAPHRASES):
        (root / f"p{i}.md").write_text(f"# Package {i}\n\n{text}\n", encoding="utf-8")
    with ResonanceDB(folder / "search.db", create=True) as database:
        ingest(["."], db=database, embedder=embedder, root=root)
        yield SearchEngine(database, embedder=embedder)


def test_a_passage_with_every_word_of_the_query_ranks_first_in_hybrid(
        sponsor_engine: SearchEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    import amalfa.search

    vector = sponsor_engine.search(SPONSOR, 7, mode="vector")
    assert vector[0].id != "exact" and vector[-1].id == "exact"  # the meaning favours the others
    hits = sponsor_engine.search(SPONSOR, 7)
    assert hits[0].id == "exact" and hits[0].heading == "Release notes"
    assert hits[0].score > amalfa.search.FULL_MATCH_BONUS  # RRF + the bonus
    assert all(h.score <= 2 / 61 for h in hits[1:])  # no paraphrase holds every word
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # without the full-match rule, plain RRF lets the vector list outvote the exact hit
    monkeypatch.setattr(amalfa.search, "FULL_MATCH_TERMS", 10**6)
    assert sponsor_engine.search(SPONSOR, 7)[0].id != "exact"


def test_the_full_match_rule_needs_three_words_and_plain_keyword_queries(
        sponsor_engine: SearchEngine) -> None:
    # two words ("funding page") in every passage of one document: plain RRF
    assert all(h.score <= 2 / 61 for h in sponsor_engine.search("funding page", 7))
    # FTS5 syntax is not a list of words: plain RRF
    raw = sponsor_engine.search('"continued development" sponsoring funding', 7, raw_query=True)
    assert raw and all(h.score <= 2 / 61 for h in raw)
    # the keyword and vector modes are untouched: their own scores
    keyword = sponsor_engine.search(SPONSOR, 7, mode="keyword")
    assert keyword[0].id == "exact"


def test_filters_keep_only_matching_documents(engine: SearchEngine) -> None:
    assert [h.id for h in engine.search("water", 10, domain="garden")] == ["garden-tomatoes"]
    assert engine.search("water", 10, type="concept") == []


def test_search_many_keeps_the_order_and_the_answers(engine: SearchEngine) -> None:
    queries = ["boiler pressure", "sourdough starter", "aphids on leaves"]
    together = engine.search_many(queries, 2)
    assert [hits[0].id for hits in together] == ["house-manual", "kitchen-bread",
                                                 "garden-tomatoes"]
    assert together == [engine.search(q, 2) for q in queries]


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"mode": "fuzzy"}, ValueError), ({"text": "  "}, ValueError), ({"limit": 0}, ValueError),
    ({"limit": 2.5}, TypeError), ({"text": 5}, TypeError),
])
def test_bad_arguments_are_refused(engine: SearchEngine, kwargs: dict, error: type) -> None:
    arguments = {"text": "water", "limit": 3, **kwargs}
    with pytest.raises(error):
        engine.search(arguments.pop("text"), arguments.pop("limit"), **arguments)


def test_rerank_without_a_model_says_how_to_get_one(engine: SearchEngine, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMALFA_RERANKER_PATH", raising=False)
    monkeypatch.setenv("RERANKER_MODEL", "nobody/no-such-reranker")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelError, match="AMALFA_RERANKER_PATH"):
        engine.search("water", 3, rerank=True)


# ---------------------------------------------------------------------------------------------
# keyword queries are escaped
# ---------------------------------------------------------------------------------------------


def test_operators_in_user_text_are_plain_words(engine: SearchEngine) -> None:
    assert keyword_query('NEAR(boiler "tank") AND col:umn* ^x -y') == (
        '"near" OR "boiler" OR "tank" OR "col" OR "umn" OR "x" OR "y"')
    # common words are dropped, unless nothing else is left
    assert keyword_query("what is the boiler for") == '"boiler"'
    assert keyword_query("to be or not to be") == '"to" OR "be" OR "or" OR "not"'
    assert keyword_query("\"\" ( ) * : ^ - +") == ""
    hits = engine.search('boiler" OR NOT (tank', 3, mode="keyword")
    assert hits[0].id == "house-manual"


def test_raw_queries_use_fts5_syntax_and_report_its_errors(engine: SearchEngine) -> None:
    hits = engine.search('"pressure gauge" NOT aphids', 3, mode="keyword", raw_query=True)
    assert [h.id for h in hits] == ["house-manual"]
    assert engine.search('"gauge pressure"', 3, mode="keyword", raw_query=True) == []
    with pytest.raises(ValueError, match="FTS5 query .* is not valid"):
        engine.search('NEAR("unterminated', 3, mode="keyword", raw_query=True)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('abc "*:^()-+{}[],.NEARORANDT\\\'\x00é')),
               max_size=60) | st.text(max_size=40))
@example('"')
@example("NEAR(")
@example("a:b")
@example("*")
@example("(((")
@example("col:")
@example("NOT")
@example("a\x00b")
def test_hostile_text_never_reaches_fts5_as_syntax(shared_engine: SearchEngine,
                                                    text: str) -> None:
    match = keyword_query(text)
    if match:  # every term is one quoted string: nothing else can appear between them
        for term in match.split(" OR "):
            assert term.startswith('"') and term.endswith('"') and '"' not in term[1:-1]
        hits, _ = shared_engine.db.keyword_passages(match, 5)  # FTS5 accepts it
        assert len(hits) <= 5
    if text.strip():
        for hit in shared_engine.search(text, 3, mode="keyword"):
            assert hit.id in {"house-manual", "kitchen-bread", "garden-tomatoes"}


# ---------------------------------------------------------------------------------------------
# incremental ingest, staleness, the tables in step
# ---------------------------------------------------------------------------------------------


def test_editing_one_paragraph_re_embeds_only_its_passage(project: Path, db: ResonanceDB,
                                                          embedder: Embedder) -> None:
    first = ingest(["."], db=db, embedder=embedder, root=project)
    stored, _ = db.count_passages()
    assert first.passages_embedded == stored > 6
    again = ingest(["."], db=db, embedder=embedder, root=project)
    assert (again.texts_embedded, again.passages_embedded) == (0, 0)  # nothing changed

    manual = project / "house/manual.md"
    text = manual.read_text(encoding="utf-8")
    manual.write_text(text.replace("between one and two bar", "between 1.2 and 1.8 bar"),
                      encoding="utf-8")
    edited = ingest(["."], db=db, embedder=embedder, root=project)
    assert edited.updated == ["house-manual"]
    assert edited.passages_embedded == 1 and edited.passages_removed == 1
    assert edited.texts_embedded == 2  # that passage and the document vector
    assert edited.passages_kept == len(db.get_passages("house-manual")) - 1
    assert db.count_passages()[0] == stored

    # a paragraph inserted near the top moves the passages below it without re-embedding them
    manual.write_text(manual.read_text(encoding="utf-8").replace(
        "How this house works.", "How this house works.\n\nRead this first."), encoding="utf-8")
    moved = ingest(["."], db=db, embedder=embedder, root=project)
    assert moved.passages_embedded == 1
    hit = SearchEngine(db, embedder=embedder).search("boiler pressure gauge", 1)[0]
    lines = file_lines(project, "house/manual.md")
    assert "1.2 and 1.8 bar" in " ".join(lines[hit.line - 1:hit.line_end])


def test_documents_ingested_before_passages_get_them_without_a_new_node_vector(
        project: Path, db: ResonanceDB, embedder: Embedder) -> None:
    ingest(["."], db=db, embedder=embedder, root=project)
    count = len(db.get_passages("house-manual"))
    vector = db.get_node("house-manual").embedding.copy()
    with db.transaction():
        db.delete_node_passages("house-manual")  # as a database from before migration 0005
    result = ingest(["."], db=db, embedder=embedder, root=project)
    assert "house-manual" in result.unchanged
    assert result.passages_embedded == result.texts_embedded == count
    assert (db.get_node("house-manual").embedding == vector).all()


def test_force_embeds_every_passage_again(project: Path, db: ResonanceDB,
                                          embedder: Embedder) -> None:
    first = ingest(["."], db=db, embedder=embedder, root=project)
    forced = ingest(["."], db=db, embedder=embedder, root=project, force=True)
    assert forced.passages_embedded == first.passages_embedded
    assert db.count_passages()[0] == first.passages_embedded


def test_a_changed_or_deleted_file_makes_its_hits_stale(engine: SearchEngine,
                                                        project: Path) -> None:
    manual = project / "house/manual.md"
    manual.write_text("# House manual\n\nRewritten.\n", encoding="utf-8")
    hit = engine.search("boiler pressure gauge", 1)[0]
    assert hit.id == "house-manual" and hit.stale
    assert hit.line is None and hit.line_end is None
    assert "pressure gauge" in hit.snippet  # the text as it was indexed
    (project / "kitchen/bread.md").unlink()
    bread = engine.search("sourdough starter", 1)[0]
    assert bread.id == "kitchen-bread" and bread.stale
    fresh = engine.search("aphids", 1)[0]
    assert fresh.id == "garden-tomatoes" and not fresh.stale and fresh.line == 10


def test_a_stored_source_outside_the_root_is_never_read(engine: SearchEngine,
                                                        db: ResonanceDB) -> None:
    with db.transaction():
        db.update_node_meta("kitchen-bread", {"source": "../../etc/passwd"})
    hit = engine.search("sourdough starter", 1)[0]
    assert hit.id == "kitchen-bread" and hit.stale and hit.line is None


def test_deleting_a_file_removes_its_passages_index_entries_and_vectors(
        project: Path, db: ResonanceDB, embedder: Embedder) -> None:
    ingest(["."], db=db, embedder=embedder, root=project)
    engine = SearchEngine(db, embedder=embedder)
    assert engine.search("aphids", 3, mode="keyword")
    ids = [row.id for row in db.get_passages("garden-tomatoes")]
    seq_before = db.raw.execute("SELECT max(seq) FROM vector_changes")[0][0]
    os.remove(project / "garden/tomatoes.md")
    result = ingest(["."], db=db, embedder=embedder, root=project)
    assert result.removed == ["garden-tomatoes"]
    assert db.get_passages("garden-tomatoes") == []
    assert engine.search("aphids", 3, mode="keyword") == []
    logged = db.raw.execute(
        "SELECT row_id, deleted FROM vector_changes WHERE seq > ? AND source = 'passages'",
        (seq_before,))
    assert sorted(logged) == sorted((i, 1) for i in ids)  # the change-log contract
    assert all(h.id != "garden-tomatoes" for h in engine.search("tomatoes aphids", 5))


def test_the_recorded_root_lets_search_find_files_from_elsewhere(
        engine: SearchEngine, db: ResonanceDB, project: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    elsewhere = SearchEngine(db, embedder=engine.embedder)
    assert elsewhere.root == project
    assert not elsewhere.search("aphids", 1)[0].stale


def test_snippets_are_cut_around_the_match() -> None:
    text = " ".join(f"word{i}" for i in range(200)) + " the boiler gauge " + \
        " ".join(f"tail{i}" for i in range(200))
    cut = snippet(text, "boiler gauge", 120)
    assert "boiler gauge" in cut and cut.startswith("\u2026") and cut.endswith("\u2026")
    assert len(cut) <= 122
    assert snippet("short text", "x") == "short text"


OTHER_CLIENT = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA foreign_keys = ON")
conn.execute("DELETE FROM nodes WHERE id = 'kitchen-bread'")
conn.execute("UPDATE passages SET text = 'the stdlib rewrote this passage about gauges' "
             "WHERE node_id = 'house-manual' AND heading = 'House manual > Boiler'")
conn.execute("INSERT INTO passages_fts (passages_fts) VALUES ('integrity-check')")
print(sqlite3.sqlite_version)
"""


def test_another_sqlite_client_keeps_the_index_in_step(project: Path, tmp_path: Path,
                                                       embedder: Embedder) -> None:
    """Python's own sqlite3 (an older SQLite) deletes and updates passages through the schema's
    triggers; run in a subprocess, since two SQLite libraries must not share a file in one
    process."""
    import subprocess
    import sys

    path = tmp_path / "shared.db"
    with ResonanceDB(path, create=True) as db:
        ingest(["."], db=db, embedder=embedder, root=project)
    done = subprocess.run([sys.executable, "-c", OTHER_CLIENT, str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with ResonanceDB(path) as db:
        db.raw.execute("INSERT INTO passages_fts (passages_fts) VALUES ('integrity-check')")
        assert db.get_passages("kitchen-bread") == []  # the cascade reached the passages
        engine = SearchEngine(db, embedder=embedder)
        assert all(h.id != "kitchen-bread"
                   for h in engine.search("sourdough starter flour", 5, mode="keyword"))
        rewritten = engine.search("stdlib rewrote", 1, mode="keyword")
        assert rewritten[0].heading == "House manual > Boiler"
        assert engine.search("filling", 5, mode="keyword") == []  # the old text left the index


def test_queries_use_the_model_and_precision_the_database_recorded(tmp_path: Path) -> None:
    """A database built at int8 is queried at int8 (the embedder is only chosen here: its files
    are found, nothing is loaded or built)."""
    with ResonanceDB.create(tmp_path / "int8.db") as db:
        with db.transaction():
            db.record_model(Embedder().model_name, "int8")
        chosen = SearchEngine(db).embedder
        assert (chosen.model_name, chosen.precision) == (Embedder().model_name, "int8")


def test_an_embedder_of_another_model_or_precision_is_refused(tmp_path: Path,
                                                              embedder: Embedder) -> None:
    """Same dimension, another model (or precision): the Python API refuses to compare its
    vectors with the database's, in SearchEngine and in the seed's VectorEngine.search."""
    from amalfa.errors import ModelMismatchError
    from amalfa.vectors import VectorEngine

    with ResonanceDB.create(tmp_path / "other.db") as db:
        with db.transaction():
            db.record_model("example/another-384-d-model", embedder.precision)
        with pytest.raises(ModelMismatchError, match="example/another-384-d-model"):
            SearchEngine(db, embedder=embedder).search("a question", mode="vector")
        with pytest.raises(ModelMismatchError, match="example/another-384-d-model"):
            VectorEngine(db, embedder=embedder).search("a question")
        assert SearchEngine(db, embedder=embedder).search("a question", mode="keyword") == []

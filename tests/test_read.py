"""Reading a node's text from its source file: front matter, line ranges, refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from amalfa.db import Node, ResonanceDB
from amalfa.errors import NodeNotFoundError, SourceReadError
from amalfa.reader import parse_line_range, read_node, source_allowed

DOC = "---\ntitle: Alpha\ntags: [a]\n---\n# Alpha\n\nFirst line.\nSecond line.\n"


def _node(db: ResonanceDB, node_id: str, source: str | None, data: bytes | None) -> None:
    meta = {} if source is None else {"source": source}
    digest = None if data is None else hashlib.sha256(data).hexdigest()
    db.insert_node(Node(node_id, "document", label=node_id, meta=meta, hash=digest))


@pytest.fixture
def project(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "alpha.md").write_text(DOC)
    (tmp_path / "secret.md").write_text("not for agents\n")
    db = ResonanceDB.create(tmp_path / "g.db")
    _node(db, "docs-alpha", "docs/alpha.md", DOC.encode())
    yield tmp_path, db
    db.close()


def _read(project, node_id: str, **options):
    root, db = project
    return read_node(db, node_id, root=root, sources=["docs"], **options)


def test_reads_body_without_front_matter(project) -> None:
    text = _read(project, "docs-alpha")
    assert text.text == "# Alpha\n\nFirst line.\nSecond line.\n"
    assert (text.line_start, text.line_end) == (5, 8)
    assert text.source == "docs/alpha.md"


def test_raw_keeps_front_matter(project) -> None:
    assert _read(project, "docs-alpha", raw=True).text == DOC


def test_line_range_is_file_lines(project) -> None:
    passage = _read(project, "docs-alpha", lines="7:8")
    assert passage.text == "First line.\nSecond line.\n"
    assert _read(project, "docs-alpha", lines="7:").text == "First line.\nSecond line.\n"
    assert _read(project, "docs-alpha", lines=":1").text == "---\n"
    assert _read(project, "docs-alpha", lines="8:100").line_end == 8  # clamped to the file
    with pytest.raises(ValueError, match="outside docs/alpha.md, which has 8 lines"):
        _read(project, "docs-alpha", lines="20:30")


@pytest.mark.parametrize(("spec", "words"), [
    ("0:3", "start at 1"), ("9:2", "ends before it starts"), ("a:b", "not a range"),
    ("12", "not a range")])
def test_bad_line_ranges(spec: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_line_range(spec)


def test_unknown_node(project) -> None:
    with pytest.raises(NodeNotFoundError, match="'nope'"):
        _read(project, "nope")


def test_changed_file_is_refused_then_readable_without_the_check(project) -> None:
    root, _ = project
    (root / "docs" / "alpha.md").write_text(DOC + "More.\n")
    with pytest.raises(SourceReadError, match="changed since it was ingested"):
        _read(project, "docs-alpha")
    assert _read(project, "docs-alpha", check_hash=False).text.endswith("More.\n")


def test_gone_file(project) -> None:
    root, _ = project
    (root / "docs" / "alpha.md").unlink()
    with pytest.raises(SourceReadError, match="is gone"):
        _read(project, "docs-alpha")


@pytest.mark.parametrize("source", ["../etc/passwd", "/etc/passwd", "secret.md",
                                    "docs/../secret.md", "docs/../../x.md"])
def test_paths_outside_the_sources_are_refused(project, source: str) -> None:
    root, db = project
    _node(db, "evil", source, b"not for agents\n")
    with pytest.raises(SourceReadError, match="outside the configured sources"):
        _read(project, "evil")


def test_node_without_source(project) -> None:
    _, db = project
    _node(db, "bare", None, None)
    with pytest.raises(SourceReadError, match="has no source file"):
        _read(project, "bare")


def test_source_allowed_follows_globs_and_files() -> None:
    assert source_allowed("notes/a/b.md", ["notes/**/*.md"])
    assert source_allowed("README.md", ["README.md"])
    assert not source_allowed("READMEX.md", ["README.md"])
    assert source_allowed("anything.md", ["."])
    assert not source_allowed("../x.md", ["."])
    assert not source_allowed("docsx/a.md", ["docs"])

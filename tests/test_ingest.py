"""Tests for amalfa.ingest: Markdown files -> node and edge records, on real files in tmp_path."""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from amalfa.ingest import (
    EDGE_LINKS_TO,
    EDGE_WIKILINK,
    SUMMARY_MAX_CHARS,
    DocumentIdError,
    DocumentTooLargeError,
    IngestWarning,
    ParsedDocument,
    discover,
    generate_id,
    parse_document,
    parse_documents,
    parse_front_matter,
    resolve_links,
)

ID_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def write(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def parse(root: Path, rel: str, content: str | bytes) -> ParsedDocument:
    return parse_document(write(root, rel, content), root=root)


def rels(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ---------------------------------------------------------------------------------------------
# generate_id
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("./Docs/My File.md", "docs-my-file"),
        ("/a//b.ts", "a-b"),
        ("docs/guide/getting-started.md", "docs-guide-getting-started"),
        ("notes/2024/Q1 Plan.json", "notes-2024-q1-plan"),
        ("src/index.js", "src-index"),
        # The extension match is case-sensitive, as in the original system.
        ("README.MD", "readme-md"),
        ("notes.markdown", "notes-markdown"),
        # Only one final extension is dropped.
        ("a.md.md", "a-md"),
        ("src/app.tsx", "src-app-tsx"),
        ("../up/x.md", "up-x"),
        ("--a__b--", "a-b"),
        ("Café Notes.md", "caf-notes"),
        ("a\\b.md", "a-b"),
        # "$" in the original's regex is end of input only; a trailing newline keeps ".md".
        ("x.md\n", "x-md"),
        ("ALLCAPS", "allcaps"),
        ("v1.2.3", "v1-2-3"),
    ],
)
def test_generate_id_examples(path: str, expected: str) -> None:
    assert generate_id(path) == expected


@pytest.mark.parametrize("path", ["", "./", "/", ".md", "./.json", "---", "日本語.md", "   "])
def test_generate_id_rejects_paths_without_letters_or_digits(path: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        generate_id(path)


@pytest.mark.parametrize("value", [None, 3, b"a.md", ["a"]])
def test_generate_id_rejects_non_strings(value: object) -> None:
    with pytest.raises(ValueError, match="path string"):
        generate_id(value)  # type: ignore[arg-type]


def test_generate_id_is_the_database_one_and_takes_path_objects() -> None:
    import amalfa.db

    assert generate_id is amalfa.db.generate_id
    assert generate_id(Path("Docs/My File.md")) == generate_id("Docs/My File.md") == "docs-my-file"


def original_generate_id(path: str) -> str:
    """The original TypeScript, transliterated: strips any run of dots before a slash."""
    value = re.sub(r"^\.*/", "", path)
    value = re.sub(r"\.(md|ts|js|json)\Z", "", value)
    value = value.lower()
    value = re.sub(r"[^a-z0-9/]", "-", value)
    value = re.sub(r"/+", "-", value)
    value = re.sub(r"-+", "-", value)
    return re.sub(r"^-|-\Z", "", value)


path_text = st.text(alphabet=st.sampled_from(list("./-_ aZ09.mdtsjon\\#é")), max_size=30)


@settings(max_examples=400)
@given(st.one_of(st.text(max_size=40), path_text))
@example("./.md")
@example("../../x.md")
def test_generate_id_output_is_a_slug_or_raises(path: str) -> None:
    try:
        result = generate_id(path)
    except ValueError:
        assert original_generate_id(path) == ""
        return
    assert ID_RE.match(result)
    assert generate_id(result) == result
    # "strip a leading ./ or /" gives the same ids as the original's "^\.*/".
    assert result == original_generate_id(path)


# ---------------------------------------------------------------------------------------------
# front matter
# ---------------------------------------------------------------------------------------------


def test_front_matter_absent_returns_text_unchanged(no_warnings) -> None:
    text = "# Title\n\nBody\n"
    assert parse_front_matter(text) == ({}, text)


def test_front_matter_must_start_on_the_first_line(no_warnings) -> None:
    text = "\n---\ntitle: x\n---\nbody"
    assert parse_front_matter(text) == ({}, text)
    text = "----\ntitle: x\n----\nbody"
    assert parse_front_matter(text) == ({}, text)


def test_front_matter_scalars(no_warnings) -> None:
    fields, body = parse_front_matter(
        "---\n"
        "title: \"Plain title: with colon\"\n"
        'quoted: "tab\\there \\"q\\" \\u00e9 # not a comment"\n'
        "single: 'it''s'\n"
        "count: 42\n"
        "negative: -7\n"
        "ratio: 0.5\n"
        "exp: 1e3\n"
        "version: 1.10\n"
        "zip: 007\n"
        "huge: 1e999\n"
        "yes_flag: true\n"
        "no_flag: False\n"
        "yaml11: yes\n"
        "nothing: null\n"
        "tilde: ~\n"
        "empty:\n"
        "date: 2024-01-05\n"
        "when: 2024-01-05 10:30:00\n"
        "hashy: C#sharp\n"
        "commented: value # a comment\n"
        "url: https://example.com/a#b\n"
        "clé: unicode key\n"
        '"quoted key": 1\n'
        "---\n"
        "Body\n"
    )
    assert fields == {
        "title": "Plain title: with colon",
        "quoted": 'tab\there "q" é # not a comment',
        "single": "it's",
        "count": 42,
        "negative": -7,
        "ratio": 0.5,
        "exp": 1000.0,
        "version": 1.1,
        "zip": "007",
        "huge": "1e999",
        "yes_flag": True,
        "no_flag": False,
        "yaml11": "yes",
        "nothing": None,
        "tilde": None,
        "empty": None,
        "date": "2024-01-05",
        "when": "2024-01-05 10:30:00",
        "hashy": "C#sharp",
        "commented": "value",
        "url": "https://example.com/a#b",
        "clé": "unicode key",
        "quoted key": 1,
    }
    assert body == "Body\n"
    assert type(fields["count"]) is int and type(fields["yes_flag"]) is bool


def test_front_matter_lists_and_mappings(no_warnings) -> None:
    fields, _ = parse_front_matter(
        "---\n"
        "inline: [a, 'b, c', 3, true, [x, y]]\n"
        "empty_list: []\n"
        "flow_map: {k: v, n: 2, bare}\n"
        "multi_line: [one,\n"
        "  two]\n"
        "block:\n"
        "  - first\n"
        "  - 'second'  # comment\n"
        "  -\n"
        "unindented:\n"
        "- a\n"
        "- b\n"
        "people:\n"
        "  - name: Ann\n"
        "    role: lead\n"
        "  - name: Bo\n"
        "nested:\n"
        "  inner:\n"
        "    deep: 1\n"
        "  other: two\n"
        "# a comment line\n"
        "after: done\n"
        "---\n"
    )
    assert fields == {
        "inline": ["a", "b, c", 3, True, ["x", "y"]],
        "empty_list": [],
        "flow_map": {"k": "v", "n": 2, "bare": None},
        "multi_line": ["one", "two"],
        "block": ["first", "second", None],
        "unindented": ["a", "b"],
        "people": [{"name": "Ann", "role": "lead"}, {"name": "Bo"}],
        "nested": {"inner": {"deep": 1}, "other": "two"},
        "after": "done",
    }


def test_front_matter_multi_line_scalars(no_warnings) -> None:
    fields, body = parse_front_matter(
        "---\n"
        "literal: |\n"
        "  line one\n"
        "    indented\n"
        "  line three\n"
        "folded: >\n"
        "  folded\n"
        "  text\n"
        "\n"
        "  second paragraph\n"
        "stripped: |-\n"
        "  no newline\n"
        "kept: |+\n"
        "  keep\n"
        "\n"
        "plain: a long\n"
        "  continued value\n"
        "below:\n"
        "  written under the key\n"
        "...\n"
        "rest"
    )
    assert fields == {
        "literal": "line one\n  indented\nline three\n",
        "folded": "folded text\nsecond paragraph\n",
        "stripped": "no newline",
        "kept": "keep\n\n",
        "plain": "a long continued value",
        "below": "written under the key",
    }
    assert body == "rest"


def test_front_matter_bom_crlf_and_empty_block(no_warnings) -> None:
    fields, body = parse_front_matter("\ufeff---\r\ntitle: T\r\n---\r\nBody\r\n")
    assert fields == {"title": "T"}
    assert body == "Body\n"
    assert parse_front_matter("---\n---\nBody") == ({}, "Body")
    assert parse_front_matter("---\n# only a comment\n\n---\nBody") == ({}, "Body")


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        ("title: x\n\tindented: y", "tabs"),
        ("title:\n    a: 1\n  b: 2", "unexpected indentation"),
        ('title: "unterminated', "unterminated"),
        ("- a\n- b", "mapping"),
        ("just a sentence", "mapping"),
        ("title:Foo", "mapping"),
        ('title: "a" b', "text after a value"),
        ("tags: [a, b", "unclosed"),
        ("tags: [a,, b]", "empty entry"),
        ('title: "bad \\q escape"', "escape"),
        ("a: 1\nb: 2\n- c", "list item"),
        ("a: >4\n  x", "unexpected indentation"),
        ("title: Plain title: with colon", "quote the value"),
        ("a: &anchor 1\nb: *anchor", "anchors"),
        ("b: *anchor", "aliases"),
        ("a: !!python/object:os.system x", "tag"),
        ("a: !!binary aGVsbG8=", "tag"),
        ("? [a, b]\n: c", "plain text"),
    ],
)
def test_malformed_front_matter_is_body_text_with_a_warning(block: str, reason: str) -> None:
    text = f"---\n{block}\n---\n# Heading\n"
    with pytest.warns(IngestWarning, match=rf"notes\.md: malformed front matter.*{reason}"):
        fields, body = parse_front_matter(text, source="notes.md")
    assert fields == {}
    assert body == text


yaml_text = st.text(alphabet=st.sampled_from(list("ab:-#'\"[]{},|>  \n\t\\0.~!&*")), max_size=80)


@settings(max_examples=500)
@given(yaml_text)
@example("a: |\n")
@example("- a: [\n")
@example("a:\n  - b: 'x\n")
def test_front_matter_never_raises(block: str) -> None:
    """Any front matter gives fields or a warning; no exception escapes to stop an ingest."""
    assume(not any(line.rstrip() in ("---", "...") for line in block.split("\n")))
    text = f"---\n{block}\n---\nbody"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fields, body = parse_front_matter(text, source="f.md")
    assert isinstance(fields, dict)
    if record:
        assert all(issubclass(w.category, IngestWarning) for w in record)
        assert (fields, body) == ({}, text)
    else:
        assert body == "body"


markdown_text = st.text(
    alphabet=st.sampled_from(list("ab #*_`~[]()!<>|-=:/.\n\\md")), max_size=120)


@settings(max_examples=300, deadline=None)
@given(markdown_text)
def test_markdown_parsing_never_raises(tmp_path_factory: pytest.TempPathFactory, body: str) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IngestWarning)
        doc = parse_document(root / "doc.md", root=root, text=body)
    assert doc.title
    assert doc.summary is None or 0 < len(doc.summary) <= SUMMARY_MAX_CHARS
    assert all(ID_RE.match(link) for link in doc.links)
    assert resolve_links([doc]) == []  # one document: nothing to link to but itself


def test_unclosed_front_matter_is_body_text_with_a_warning() -> None:
    text = "---\ntitle: x\n\nNo closing line.\n"
    with pytest.warns(IngestWarning, match="no closing"):
        assert parse_front_matter(text) == ({}, text)


def test_malformed_front_matter_file_is_still_ingested(tmp_path: Path) -> None:
    with pytest.warns(IngestWarning, match="line 3"):
        doc = parse(tmp_path, "bad.md", "---\ntitle: ok\ntags: [a\n---\n# Real Title\n\nText.\n")
    assert doc.title == "Real Title"
    assert doc.meta["tags"] == []
    assert "tags: [a" in doc.text


# ---------------------------------------------------------------------------------------------
# parse_document: fields
# ---------------------------------------------------------------------------------------------


def test_parse_document_fields(tmp_path: Path, no_warnings) -> None:
    content = (
        "---\n"
        "title: Front Title\n"
        "tags: [alpha, beta]\n"
        "date: 2023-06-01\n"
        "domain: persona\n"
        "layer: ontology\n"
        "type: concept\n"
        "author: Ann\n"
        "draft: true\n"
        "---\n"
        "# Heading Title\n"
        "\n"
        "The lead paragraph.\n"
    )
    doc = parse(tmp_path, "Docs/My File.md", content)
    assert doc.id == "docs-my-file"
    assert doc.source == "Docs/My File.md"
    assert doc.path == tmp_path / "Docs/My File.md"
    assert doc.title == "Front Title"
    assert doc.hash == hashlib.sha256(content.encode()).hexdigest()
    assert doc.summary == "The lead paragraph."
    assert doc.meta == {
        "source": "Docs/My File.md",
        "tags": ["alpha", "beta"],
        "author": "Ann",
        "draft": True,
    }
    assert (doc.date, doc.domain, doc.layer, doc.type) == (
        "2023-06-01", "persona", "ontology", "concept")
    assert doc.text == "Front Title\n\n# Heading Title\n\nThe lead paragraph."
    assert doc.node_fields() == {
        "id": "docs-my-file",
        "type": "concept",
        "label": "Front Title",
        "domain": "persona",
        "layer": "ontology",
        "summary": "The lead paragraph.",
        "hash": doc.hash,
        "meta": doc.meta,
        "date": "2023-06-01",
    }


def test_defaults_without_front_matter(tmp_path: Path, no_warnings) -> None:
    path = write(tmp_path, "notes/plain.md", "Just text.\n")
    stamp = datetime(2021, 3, 4, 12, 0, tzinfo=timezone.utc).timestamp()
    os.utime(path, (stamp, stamp))
    doc = parse_document(path, root=tmp_path)
    assert doc.title == "plain"
    assert doc.date == "2021-03-04"
    assert (doc.domain, doc.layer, doc.type) == ("knowledge", "experience", "document")
    assert doc.meta == {"source": "notes/plain.md", "tags": []}
    assert doc.text == "plain\n\nJust text."
    assert doc.links == [] and doc.wikilinks == []


def test_relative_path_is_taken_relative_to_root(tmp_path: Path) -> None:
    write(tmp_path, "a/b.md", "x")
    assert parse_document(Path("a/b.md"), root=tmp_path).id == "a-b"
    assert parse_document("a/b.md", root=str(tmp_path)).source == "a/b.md"


def test_path_outside_root_is_an_error(tmp_path: Path) -> None:
    outside = write(tmp_path, "outside.md", "x")
    (tmp_path / "root").mkdir()
    with pytest.raises(ValueError, match="not inside the project root"):
        parse_document(outside, root=tmp_path / "root")


@pytest.mark.parametrize(
    ("content", "title"),
    [
        ("# First *Heading*\n\n# Second\n", "First Heading"),
        ("Setext Title\n============\n\ntext\n", "Setext Title"),
        ("## Only level two\n\ntext\n", "stem-name"),
        ("```\n# Not a heading\n```\n\n# Real\n", "Real"),
        ("<!--\n# Hidden\n-->\n# Shown #\n", "Shown"),
        ("#NoSpace is not a heading\n", "stem-name"),
        ("---\ntitle: ''\n---\n# From Heading\n", "From Heading"),
        ("---\ntitle: 2024\n---\n", "2024"),
        ("# [Linked](x.md) `code` title\n", "Linked code title"),
    ],
)
def test_title_precedence(tmp_path: Path, content: str, title: str) -> None:
    assert parse(tmp_path, "stem-name.md", content).title == title


def test_non_text_front_matter_fields_warn_and_fall_back(tmp_path: Path) -> None:
    with pytest.warns(IngestWarning) as record:
        doc = parse(tmp_path, "x.md", "---\ndomain: [a, b]\ntitle: [x]\n---\n# H\n")
    messages = sorted(str(w.message) for w in record)
    assert messages == [
        "x.md: front-matter 'domain' should be text, got list; ignored",
        "x.md: front-matter 'title' should be text, got list; ignored",
    ]
    assert doc.domain == "knowledge"
    assert doc.title == "H"


def test_date_from_front_matter_number_and_mtime(tmp_path: Path, no_warnings) -> None:
    assert parse(tmp_path, "a.md", "---\ndate: 2020\n---\n").date == "2020"
    path = write(tmp_path, "b.md", "---\ndate:\n---\n")
    stamp = datetime(1999, 12, 31, 23, 0, tzinfo=timezone.utc).timestamp()
    os.utime(path, (stamp, stamp))
    assert parse_document(path, root=tmp_path).date == "1999-12-31"


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ("tags: solo", ["solo"]),
        ("tags: a, b ,, c", ["a", "b", "c"]),
        ("tags: [x, 2, x, '', null]", ["x", "2"]),
        ("tags:\n  - one\n  - two", ["one", "two"]),
        ("tags: 7", ["7"]),
        ("tags:", []),
    ],
)
def test_tags_are_normalised_to_a_list(tmp_path: Path, tags: str, expected: list[str]) -> None:
    assert parse(tmp_path, "t.md", f"---\n{tags}\n---\n").meta["tags"] == expected


def test_front_matter_source_is_reserved(tmp_path: Path) -> None:
    with pytest.warns(IngestWarning, match="'source' is reserved"):
        doc = parse(tmp_path, "s.md", "---\nsource: elsewhere\n---\n")
    assert doc.meta["source"] == "s.md"


def test_text_removes_front_matter_and_does_not_repeat_the_title(tmp_path: Path) -> None:
    doc = parse(tmp_path, "t.md", "---\ntitle: Same\n---\n\n# Same\n\nBody <!-- hidden -->.\n")
    assert doc.text == "# Same\n\nBody ."
    doc = parse(tmp_path, "u.md", "---\ntitle: Other\n---\n# Heading\n\nBody\n")
    assert doc.text == "Other\n\n# Heading\n\nBody"


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------


def test_summary_skips_non_prose_blocks(tmp_path: Path) -> None:
    content = (
        "# Title\n"
        "## Sub\n"
        "<!-- a comment\n\nover paragraphs -->\n"
        "[![build](https://ci/badge.svg)](https://ci)\n"
        "\n"
        "```python\n"
        "not = 'the summary'\n"
        "\n"
        "still code\n"
        "```\n"
        "- a list\n"
        "- only\n"
        "\n"
        "1. numbered\n"
        "\n"
        "> a quote\n"
        "\n"
        "| a | b |\n"
        "|---|---|\n"
        "| 1 | 2 |\n"
        "\n"
        "<div>html</div>\n"
        "\n"
        "    indented code\n"
        "\n"
        "Setext heading\n"
        "--------------\n"
        "\n"
        "***\n"
        "\n"
        "The **real** _lead_ paragraph with [a link](x.md), [[Target|an alias]], [[Plain]],\n"
        "`inline code`, ~~old~~, ![img](i.png) and &amp; an entity.\n"
        "\n"
        "Second paragraph.\n"
    )
    doc = parse(tmp_path, "s.md", content)
    assert doc.summary == (
        "The real lead paragraph with a link, an alias, Plain, inline code, old, and & an entity."
    )


def test_summary_keeps_snake_case_and_arithmetic(tmp_path: Path) -> None:
    doc = parse(tmp_path, "s.md", "Use my_var_name and 2 * 3 * 4 and `__init__`.\n")
    assert doc.summary == "Use my_var_name and 2 * 3 * 4 and __init__."


def test_summary_paragraph_right_under_a_heading(tmp_path: Path) -> None:
    doc = parse(tmp_path, "s.md", "# Title\nLine one\nline two.\n## Next\nOther.\n")
    assert doc.summary == "Line one line two."


def test_summary_is_none_without_prose(tmp_path: Path) -> None:
    assert parse(tmp_path, "s.md", "# Only a heading\n\n- and\n- a list\n").summary is None
    assert parse(tmp_path, "e.md", "").summary is None


def test_summary_is_cut_at_a_word_boundary(tmp_path: Path) -> None:
    words = " ".join(f"word{i:03d}" for i in range(200))  # 1,599 characters
    doc = parse(tmp_path, "long.md", words + "\n")
    assert doc.summary is not None
    assert len(doc.summary) <= SUMMARY_MAX_CHARS
    assert doc.summary.endswith("\u2026")
    kept = doc.summary[:-1]
    assert words.startswith(kept + " ")
    assert len(kept) > SUMMARY_MAX_CHARS - len("word000 ") - 1


def test_summary_of_exactly_the_limit_is_not_cut(tmp_path: Path) -> None:
    text = ("abcd " * 100)[: SUMMARY_MAX_CHARS - 1] + "z"
    assert len(text) == SUMMARY_MAX_CHARS
    assert parse(tmp_path, "exact.md", text).summary == text
    longer = text + "y"
    summary = parse(tmp_path, "over.md", longer).summary
    assert summary is not None and len(summary) <= SUMMARY_MAX_CHARS
    assert summary.endswith("\u2026") and not summary[:-1].endswith(" ")


def test_summary_of_one_giant_word_is_hard_cut(tmp_path: Path) -> None:
    summary = parse(tmp_path, "giant.md", "x" * 2000).summary
    assert summary == "x" * (SUMMARY_MAX_CHARS - 1) + "\u2026"


def test_summary_cut_drops_trailing_punctuation(tmp_path: Path) -> None:
    text = "a" * 490 + " bbbbbbb, ccccccccccccccc"
    summary = parse(tmp_path, "p.md", text).summary
    assert summary == "a" * 490 + " bbbbbbb\u2026"


# ---------------------------------------------------------------------------------------------
# reading: encodings, size cap, text=
# ---------------------------------------------------------------------------------------------


def test_non_utf8_file_is_read_with_replacement(tmp_path: Path) -> None:
    raw = b"# Caf\xe9\n\nLatin-1 bytes: \xe9t\xe9.\n"
    with pytest.warns(IngestWarning, match="not valid UTF-8"):
        doc = parse(tmp_path, "latin.md", raw)
    assert doc.title == "Caf\ufffd"
    assert doc.summary == "Latin-1 bytes: \ufffdt\ufffd."
    assert doc.hash == hashlib.sha256(raw).hexdigest()


def test_bom_is_stripped_and_hash_covers_raw_bytes(tmp_path: Path, no_warnings) -> None:
    raw = "\ufeff---\r\ntitle: Bom\r\n---\r\nText\r\n".encode()
    doc = parse(tmp_path, "bom.md", raw)
    assert doc.title == "Bom"
    assert "\ufeff" not in doc.text and "\r" not in doc.text
    assert doc.hash == hashlib.sha256(raw).hexdigest()


def test_too_large_file_raises_and_is_skipped_in_batches(tmp_path: Path) -> None:
    big = write(tmp_path, "big.md", "x" * 2048)
    small = write(tmp_path, "small.md", "small")
    with pytest.raises(DocumentTooLargeError, match="2048 bytes"):
        parse_document(big, root=tmp_path, max_bytes=1024)
    with pytest.warns(IngestWarning, match="big.md"):
        report = parse_documents([big, small], root=tmp_path, max_bytes=1024)
    assert [d.source for d in report.documents] == ["small.md"]
    assert [p for p, _ in report.skipped] == [big]


def test_unreadable_and_unnamed_files_are_skipped(tmp_path: Path) -> None:
    gone = tmp_path / "gone.md"
    nameless = write(tmp_path, "_.md", "x")
    good = write(tmp_path, "good.md", "x")
    with pytest.raises(DocumentIdError):
        parse_document(nameless, root=tmp_path)
    with pytest.warns(IngestWarning):
        report = parse_documents([gone, nameless, good], root=tmp_path)
    assert [d.id for d in report.documents] == ["good"]
    assert [p for p, _ in report.skipped] == [gone, nameless]
    assert "cannot read" in report.skipped[0][1]


def test_colliding_ids_keep_the_first_file(tmp_path: Path) -> None:
    first = write(tmp_path, "My File.md", "one")
    second = write(tmp_path, "my-file.md", "two")
    with pytest.warns(IngestWarning, match="already used by My File.md"):
        report = parse_documents([first, second], root=tmp_path)
    assert [d.source for d in report.documents] == ["My File.md"]
    assert report.skipped[0][0] == second


def test_text_argument_skips_reading(tmp_path: Path) -> None:
    doc = parse_document(tmp_path / "virtual.md", root=tmp_path, text="# Virtual\n\nBody.")
    assert doc.title == "Virtual"
    assert doc.hash == hashlib.sha256(b"# Virtual\n\nBody.").hexdigest()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", doc.date)


# ---------------------------------------------------------------------------------------------
# links
# ---------------------------------------------------------------------------------------------


def test_markdown_links_are_resolved_relative_to_the_file(tmp_path: Path) -> None:
    content = (
        "[same folder](other.md) [up](../x/other.md#section) [angle](<with spaces.md>)\n"
        "[encoded](with%20spaces.md) [titled](other.md \"Title\") [root](/top.md)\n"
        "[query](q.markdown?plain=1) [ref-style][r] [nested ![i](i.png) text](deep/n.md)\n"
        "\n"
        "[r]: ./ref.md\n"
    )
    doc = parse(tmp_path, "docs/guide/page.md", content)
    assert doc.links == [
        "docs-guide-other",
        "docs-x-other",
        "docs-guide-with-spaces",
        "top",
        "docs-guide-q-markdown",
        "docs-guide-deep-n",
        "docs-guide-ref",
    ]


def test_ignored_links(tmp_path: Path) -> None:
    content = (
        "[web](https://example.com/a.md) [mail](mailto:a@b.md) [proto](//cdn/x.md)\n"
        "![image](pic.md) [anchor](#section) [code](script.py) [dir](folder/)\n"
        "[outside](../../../outside.md) \\[escaped](esc.md)\n"
        "`[inline](inline.md)` ``[double](dbl.md)``\n"
        "<!-- [comment](comment.md) -->\n"
        "```\n"
        "[fenced](fenced.md) [[FencedWiki]]\n"
        "```\n"
        "~~~~\n"
        "[tilde](tilde.md)\n"
        "~~~~\n"
        "`[[InlineWiki]]` ![[Embedded]] [[#only-heading]]\n"
    )
    doc = parse(tmp_path, "a/b.md", content)
    assert doc.links == []
    assert doc.wikilinks == []


def test_wikilink_forms(tmp_path: Path) -> None:
    doc = parse(
        tmp_path,
        "w.md",
        "[[Target]] [[target|Alias]] [[Other#Heading]] [[dir/Deep Note.md|x]] [[Target]]\n",
    )
    assert doc.wikilinks == ["Target", "target", "Other", "dir/Deep Note.md"]


def make_corpus(root: Path, files: dict[str, str]) -> list[ParsedDocument]:
    for rel, content in files.items():
        write(root, rel, content)
    return parse_documents(discover(["."], root=root), root=root).documents


def test_resolve_links_builds_unique_edges_between_ingested_docs(tmp_path: Path) -> None:
    docs = make_corpus(
        tmp_path,
        {
            "docs/index.md": (
                "[guide](guide/start.md) [again](guide/start.md#top) [missing](gone.md)\n"
                "[self](index.md) [[index]] [[Start]] [[start|alias]] [[Nowhere]]\n"
                "[[guide/start#Install]] [[FAFCAS]] [[Getting Started]] [out](../README.md)\n"
            ),
            "docs/guide/start.md": "Back to [[Index]] and [index](../index.md).\n",
            "docs/concepts/fafcas.md": "# FAFCAS\n",
            "docs/concepts/getting-started.md": "x\n",
            "README.md": "not linked as an edge from docs: [readme](docs/index.md)\n",
        },
    )
    ids = {d.id for d in docs}
    assert ids == {
        "docs-index", "docs-guide-start", "docs-concepts-fafcas",
        "docs-concepts-getting-started", "readme",
    }
    edges = resolve_links(docs)
    assert len(edges) == len(set(edges))
    assert set(edges) == {
        ("readme", "docs-index", EDGE_LINKS_TO),
        ("docs-index", "docs-guide-start", EDGE_LINKS_TO),
        ("docs-index", "docs-guide-start", EDGE_WIKILINK),
        ("docs-index", "docs-concepts-fafcas", EDGE_WIKILINK),
        ("docs-index", "docs-concepts-getting-started", EDGE_WIKILINK),
        ("docs-index", "readme", EDGE_LINKS_TO),
        ("docs-guide-start", "docs-index", EDGE_WIKILINK),
        ("docs-guide-start", "docs-index", EDGE_LINKS_TO),
    }
    assert all(source != target for source, target, _ in edges)


def test_ambiguous_wikilink_prefers_the_same_folder_then_the_shallowest(tmp_path: Path) -> None:
    docs = make_corpus(
        tmp_path,
        {
            "a/note.md": "x",
            "b/note.md": "x",
            "b/deep/er/note.md": "x",
            "b/linker.md": "[[Note]] [[er/note]]",
            "c/linker.md": "[[note]]",
        },
    )
    edges = set(resolve_links(docs))
    assert ("b-linker", "b-note", EDGE_WIKILINK) in edges
    assert ("b-linker", "b-deep-er-note", EDGE_WIKILINK) in edges
    assert ("c-linker", "a-note", EDGE_WIKILINK) in edges
    assert len(edges) == 3


def test_wikilink_to_a_markdown_suffix_file(tmp_path: Path) -> None:
    docs = make_corpus(tmp_path, {"x.markdown": "[[y]]", "y.md": "[x](x.markdown)"})
    assert set(resolve_links(docs)) == {
        ("x-markdown", "y", EDGE_WIKILINK),
        ("y", "x-markdown", EDGE_LINKS_TO),
    }


# ---------------------------------------------------------------------------------------------
# discover
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in [
        "docs/index.md",
        "docs/guide/start.md",
        "docs/guide/notes.markdown",
        "docs/guide/UPPER.MD",
        "docs/guide/image.png",
        "docs/guide/script.py",
        "docs/internals/contract.md",
        "docs/drafts/idea.md",
        "docs/post.draft.md",
        "docs/node_modules/pkg/readme.md",
        "node_modules/top.md",
        "README.md",
        "notes.txt",
    ]:
        write(tmp_path, rel, f"# {rel}\n")
    return tmp_path


def test_discover_recurses_folders_for_markdown(tree: Path, no_warnings) -> None:
    assert rels(discover(["docs"], root=tree), tree) == [
        "docs/drafts/idea.md",
        "docs/guide/UPPER.MD",
        "docs/guide/notes.markdown",
        "docs/guide/start.md",
        "docs/index.md",
        "docs/internals/contract.md",
        "docs/node_modules/pkg/readme.md",
        "docs/post.draft.md",
    ]


def test_discover_globs(tree: Path, no_warnings) -> None:
    assert rels(discover(["docs/**/*.md"], root=tree), tree) == [
        "docs/drafts/idea.md",
        "docs/guide/start.md",
        "docs/index.md",
        "docs/internals/contract.md",
        "docs/node_modules/pkg/readme.md",
        "docs/post.draft.md",
    ]
    assert rels(discover(["docs/*.md"], root=tree), tree) == ["docs/index.md", "docs/post.draft.md"]
    assert rels(discover(["*.md"], root=tree), tree) == ["README.md"]
    # A glob that matches folders takes the Markdown beneath them.
    assert rels(discover(["docs/[dg]*"], root=tree), tree) == [
        "docs/drafts/idea.md",
        "docs/guide/UPPER.MD",
        "docs/guide/notes.markdown",
        "docs/guide/start.md",
    ]
    assert rels(discover(["**/start.md"], root=tree), tree) == ["docs/guide/start.md"]


def test_discover_single_files_sorted_and_deduplicated(tree: Path, no_warnings) -> None:
    found = discover(
        ["notes.txt", "docs/guide", "./docs/guide/start.md", "docs/guide/*.md", "README.md"],
        root=tree,
    )
    assert rels(found, tree) == [
        "README.md",
        "docs/guide/UPPER.MD",
        "docs/guide/notes.markdown",
        "docs/guide/start.md",
        "notes.txt",
    ]
    assert all(p.is_absolute() for p in found)


def test_discover_absolute_and_dotted_sources(tree: Path, no_warnings) -> None:
    assert rels(discover([str(tree / "docs/guide/start.md")], root=tree), tree) == [
        "docs/guide/start.md"
    ]
    assert rels(discover([str(tree / "docs") + "/*.md"], root=tree), tree) == [
        "docs/index.md", "docs/post.draft.md"]
    assert rels(discover(["docs/guide/../index.md"], root=tree), tree) == ["docs/index.md"]
    assert len(discover(["."], root=tree)) == 10


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["node_modules"], ["README.md", "docs/drafts/idea.md", "docs/guide/start.md",
                            "docs/index.md", "docs/internals/contract.md", "docs/post.draft.md"]),
        (["node_modules", "docs/internals", "*.draft.md", "**/drafts/*"],
         ["README.md", "docs/guide/start.md", "docs/index.md"]),
        (["docs/internals/"], ["README.md", "docs/drafts/idea.md", "docs/guide/start.md",
                               "docs/index.md", "docs/node_modules/pkg/readme.md",
                               "docs/post.draft.md", "node_modules/top.md"]),
        (["docs"], ["README.md", "node_modules/top.md"]),
    ],
)
def test_discover_exclude_patterns(tree: Path, patterns: list[str], expected: list[str]) -> None:
    found = discover(["**/*.md"], root=tree, exclude_patterns=patterns)
    assert rels(found, tree) == expected


def test_exclude_applies_to_files_named_outright(tree: Path) -> None:
    with pytest.warns(IngestWarning, match="no Markdown files"):
        found = discover(["docs/internals/contract.md"], root=tree,
                         exclude_patterns=["docs/internals"])
    assert found == []


def test_discover_warns_about_missing_and_outside_sources(tree: Path) -> None:
    inner = tree / "inner"
    inner.mkdir()
    write(inner, "a.md", "x")
    with pytest.warns(IngestWarning) as record:
        found = discover(["a.md", "missing", "../docs", str(tree / "README.md"), "nope/*.md"],
                         root=inner)
    assert rels(found, inner) == ["a.md"]
    messages = [str(w.message) for w in record]
    assert any("missing: no Markdown files" in m for m in messages)
    assert any("../docs: outside the project root" in m for m in messages)
    assert any("README.md: outside the project root" in m for m in messages)
    assert any("nope/*.md: no Markdown files" in m for m in messages)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_discover_survives_symlink_loops_and_deduplicates_links(tmp_path: Path) -> None:
    write(tmp_path, "docs/a.md", "x")
    write(tmp_path, "docs/sub/b.md", "x")
    (tmp_path / "docs/sub/loop").symlink_to(tmp_path / "docs", target_is_directory=True)
    (tmp_path / "docs/alias.md").symlink_to(tmp_path / "docs/a.md")
    (tmp_path / "docs/broken.md").symlink_to(tmp_path / "nowhere.md")
    found = rels(discover(["docs", "docs/**/*.md"], root=tmp_path), tmp_path)
    # Each real file once, under the path that sorts first; the loop is entered at most once.
    assert found == ["docs/a.md", "docs/sub/b.md"]


def test_discover_rejects_non_string_sources(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        discover([b"docs"], root=tmp_path)  # type: ignore[list-item]


def test_end_to_end_on_a_small_corpus(tmp_path: Path, no_warnings) -> None:
    docs = make_corpus(
        tmp_path,
        {
            "docs/a.md": "---\ntitle: A\ntags: one\n---\nSee [b](b.md).\n",
            "docs/b.md": "# B\n\nBack to [[a]].\n",
        },
    )
    assert [(d.id, d.title, d.summary) for d in docs] == [
        ("docs-a", "A", "See b."),
        ("docs-b", "B", "Back to a."),
    ]
    assert resolve_links(docs) == [
        ("docs-a", "docs-b", EDGE_LINKS_TO),
        ("docs-b", "docs-a", EDGE_WIKILINK),
    ]

"""Tests for cutting documents into passages (amalfa.ingest.markdown and amalfa.ingest.passages)
and for the strict front-matter loader's refusals, with the embedded model's real tokenizer.

Passages are checked against the files they came from: every passage's line range must hold its
text, and no passage may need more tokens than the model reads.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amalfa.embedder import Embedder
from amalfa.ingest import (
    IngestWarning,
    Passage,
    TokenCounter,
    parse_blocks,
    parse_document,
    parse_front_matter,
    split_passages,
)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(use_daemon=False)


@pytest.fixture(scope="module")
def counter(embedder: Embedder) -> TokenCounter:
    return TokenCounter.for_embedder(embedder)


@pytest.fixture(scope="module")
def small(embedder: Embedder) -> TokenCounter:
    """The same tokenizer with room for 64 tokens, so short texts already need splitting."""
    counter = TokenCounter.for_embedder(embedder)
    counter.limit = 64
    return counter


def cut(tmp_path: Path, text: str | bytes, counter: TokenCounter,
        name: str = "doc.md") -> tuple[list[Passage], list[str]]:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    doc = parse_document(path, root=tmp_path)
    lines = path.read_bytes().decode("utf-8").replace("\r\n", "\n").split("\n")
    return split_passages(doc, counter), lines


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def assert_located(passages: list[Passage], lines: list[str]) -> None:
    """Each passage's first and last words are on the lines its range names."""
    for passage in passages:
        assert 1 <= passage.line_start <= passage.line_end <= len(lines)
        window = " ".join(lines[passage.line_start - 1:passage.line_end])
        shown = words(window)
        body = words(passage.text)
        assert body, passage
        assert body[0] in shown and body[-1] in shown, (passage, window)


def token_count(counter: TokenCounter, text: str) -> int:
    return counter.count([text])[0] + 2  # + [CLS] and [SEP]


# ---------------------------------------------------------------------------------------------
# headings and structure
# ---------------------------------------------------------------------------------------------


GUIDE = """# Guide

Intro paragraph about the guide.

## Install

Run the installer.

### Offline

Copy the wheel first.
Then install it without an index.

## Use

```python
# this is code, not a heading
print("hello")
```

| column | value |
|--------|-------|
| a      | 1     |
| b      | 2     |
"""


def test_passages_follow_headings_and_keep_their_path(tmp_path: Path,
                                                      counter: TokenCounter) -> None:
    passages, lines = cut(tmp_path, GUIDE, counter)
    assert [p.heading for p in passages] == [
        "Guide", "Guide > Install", "Guide > Install > Offline", "Guide > Use"]
    assert [p.ordinal for p in passages] == [0, 1, 2, 3]
    offline = passages[2]
    assert (offline.line_start, offline.line_end) == (11, 12)
    assert offline.text == "Copy the wheel first.\nThen install it without an index."
    # the context the model reads starts with the heading path (it already names the title)
    assert offline.embed_text.startswith("Guide > Install > Offline\n\n")
    # a code comment is not a heading, and the fence and the table stay whole in one passage
    use = passages[3]
    assert "# this is code, not a heading" in use.text and "| b      | 2     |" in use.text
    assert (use.line_start, use.line_end) == (16, 24)
    assert_located(passages, lines)


def test_the_title_is_added_to_the_context_when_the_headings_lack_it(
        tmp_path: Path, counter: TokenCounter) -> None:
    text = "---\ntitle: Field Notes\n---\nFirst words before any heading.\n\n## Birds\n\nA wren.\n"
    passages, lines = cut(tmp_path, text, counter)
    assert [(p.heading, p.context) for p in passages] == [
        (None, "Field Notes"), ("Birds", "Field Notes > Birds")]
    # line numbers count the front matter lines
    assert [(p.line_start, p.line_end) for p in passages] == [(4, 4), (8, 8)]
    assert_located(passages, lines)


def test_a_fence_that_fits_is_never_split(tmp_path: Path, small: TokenCounter) -> None:
    prose = "Some words before the code sample to fill the passage a little. " * 2
    fence = "```\n" + "\n".join(f"x{i} = {i}" for i in range(8)) + "\n```"
    assert token_count(small, fence) < small.limit - 8
    passages, lines = cut(tmp_path, f"# T\n\n{prose}\n\n{fence}\n\nAfter.\n", small)
    holding = [p for p in passages if "x0 = 0" in p.text or "x7 = 7" in p.text]
    assert len(holding) == 1 and "x0 = 0" in holding[0].text and "x7 = 7" in holding[0].text
    assert_located(passages, lines)


def test_a_fence_longer_than_a_passage_is_split_at_line_ends(tmp_path: Path,
                                                           small: TokenCounter) -> None:
    fence = "```\n" + "\n".join(f"value_{i} = compute({i})" for i in range(60)) + "\n```"
    passages, lines = cut(tmp_path, f"# T\n\n{fence}\n", small)
    assert len(passages) > 2
    for passage in passages:
        assert token_count(small, passage.embed_text) <= small.limit
        for line in passage.text.split("\n"):  # whole lines only
            assert line == "```" or line.startswith("value_")
            assert not line.startswith("value_") or line.endswith(")")
    shown = "\n".join(p.text for p in passages)
    assert all(f"compute({i})" in shown for i in range(60))
    assert_located(passages, lines)


def test_a_long_paragraph_is_split_with_overlap_and_no_passage_is_truncated(
        tmp_path: Path, counter: TokenCounter) -> None:
    sentences = [f"Sentence number {i} talks about topic {i * 7} in some detail."
                 for i in range(120)]
    text = "# Long\n\n" + "\n".join(sentences) + "\n"
    passages, lines = cut(tmp_path, text, counter)
    assert len(passages) >= 3
    for passage in passages:
        assert token_count(counter, passage.embed_text) <= counter.limit
    joined = " ".join(p.text for p in passages)
    assert all(s in joined for s in sentences)  # nothing lost
    # consecutive pieces share a little text, and cuts fall at sentence ends
    for first, second in zip(passages, passages[1:]):
        assert first.text.rstrip().endswith(".")
        assert set(first.text.split()[-6:]) & set(second.text.split()[:12])
    assert_located(passages, lines)


def test_short_blocks_are_packed_together(tmp_path: Path, counter: TokenCounter) -> None:
    text = "# Notes\n\n" + "\n\n".join(f"Point {i} is short." for i in range(10)) + "\n"
    passages, _ = cut(tmp_path, text, counter)
    assert len(passages) == 1 and passages[0].text.count("Point") == 10


def test_crlf_and_a_missing_final_newline_give_the_same_passages(
        tmp_path: Path, counter: TokenCounter) -> None:
    unix, lines = cut(tmp_path, GUIDE, counter, "unix.md")
    windows, _ = cut(tmp_path, GUIDE.replace("\n", "\r\n").encode(), counter, "windows.md")
    bare, bare_lines = cut(tmp_path, GUIDE.rstrip("\n"), counter, "bare.md")
    assert windows == unix
    assert bare == unix
    assert bare[-1].line_end == len(bare_lines)  # the last line counts although nothing ends it


def test_empty_and_heading_only_documents_have_no_passages(tmp_path: Path,
                                                           counter: TokenCounter) -> None:
    assert cut(tmp_path, "", counter, "empty.md")[0] == []
    assert cut(tmp_path, "# Only\n\n## Headings\n", counter, "headings.md")[0] == []
    assert cut(tmp_path, "---\ntitle: x\n---\n", counter, "front.md")[0] == []


def test_html_comments_are_not_searchable_text(tmp_path: Path, counter: TokenCounter) -> None:
    passages, _ = cut(tmp_path, "# T\n\n<!--\nsecret plan\n-->\n\nVisible words.\n", counter)
    assert "secret" not in " ".join(p.text for p in passages)
    assert "Visible words." in passages[0].text


def test_hashes_change_with_the_text_and_the_heading_only(tmp_path: Path,
                                                          counter: TokenCounter) -> None:
    before, _ = cut(tmp_path, "# A\n\nOne.\n\n## B\n\nTwo.\n", counter, "a.md")
    moved, _ = cut(tmp_path, "# A\n\n\n\nOne.\n\n## B\n\nTwo.\n", counter, "b.md")
    renamed, _ = cut(tmp_path, "# A\n\nOne.\n\n## C\n\nTwo.\n", counter, "c.md")
    assert [p.hash for p in moved] == [p.hash for p in before]  # only the lines moved
    assert moved[0].line_start != before[0].line_start
    assert renamed[0].hash == before[0].hash and renamed[1].hash != before[1].hash


markdown = st.lists(st.sampled_from([
    "# Title", "## Section", "### Sub", "Plain words in a paragraph.", "- item one\n- item two",
    "```\ncode line\n```", "| a | b |\n|---|---|\n| 1 | 2 |", "> quoted text", "",
    "A much longer sentence that keeps going with many words to fill tokens quickly and more.",
    "<!-- hidden -->", "Setext heading\n---", "    indented code",
]), max_size=40).map("\n\n".join)


@settings(max_examples=60, deadline=None)
@given(markdown)
def test_any_document_gives_located_passages_within_the_limit(
        tmp_path_factory: pytest.TempPathFactory, small: TokenCounter, text: str) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IngestWarning)
        passages, lines = cut(folder, text, small)
    for passage in passages:
        assert token_count(small, passage.embed_text) <= small.limit
    assert [p.ordinal for p in passages] == list(range(len(passages)))
    assert_located(passages, lines)


def test_blocks_map_offsets_to_lines() -> None:
    blocks = parse_blocks("Para line one\nline two\n\n- a\n- b\n")
    assert [(b.kind, b.start, b.end) for b in blocks] == [("paragraph", 0, 2), ("list", 3, 5)]
    assert blocks[0].line_of(blocks[0].text.index("two")) == 1


# ---------------------------------------------------------------------------------------------
# front matter: the strict loader's refusals
# ---------------------------------------------------------------------------------------------

ALIAS_BOMB = """---
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
---
# Body
"""


def test_an_alias_bomb_is_refused_not_expanded() -> None:
    with pytest.warns(IngestWarning, match=r"bomb\.md: malformed front matter \(line 2: "
                                           r"anchors \(&a\) are not allowed"):
        fields, body = parse_front_matter(ALIAS_BOMB, source="bomb.md")
    assert fields == {} and body == ALIAS_BOMB


def test_an_alias_bomb_file_is_ingested_as_text(tmp_path: Path, counter: TokenCounter) -> None:
    text = ALIAS_BOMB + "\nThe text under the heading.\n"
    with pytest.warns(IngestWarning, match="anchors"):
        passages, _ = cut(tmp_path, text, counter)
    # the block is read as Markdown (a setext heading), never expanded
    assert [p.text for p in passages] == ["The text under the heading."]
    assert passages[0].heading == "Body"


@pytest.mark.parametrize(("block", "expected"), [
    ("when: 2024-01-05\nat: 2024-01-05T10:00:00Z", {"when": "2024-01-05",
                                                     "at": "2024-01-05T10:00:00Z"}),
    ("flag: yes\nswitch: on\noctal: 0o17\nzero: 010", {"flag": "yes", "switch": "on",
                                                      "octal": "0o17", "zero": "010"}),
    ("1: one\nnull: x\ntrue: y", {"1": "one", "null": "x", "true": "y"}),
    ("inf: .inf\nnan: .nan\nbig: 1e400", {"inf": ".inf", "nan": ".nan", "big": "1e400"}),
    ("merge: {<<: x}", {"merge": {"<<": "x"}}),
])
def test_only_safe_json_shaped_values(block: str, expected: dict[str, object]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fields, _ = parse_front_matter(f"---\n{block}\n---\n")
    assert fields == expected


@pytest.mark.parametrize("block", [
    "a: !!set {x, y}", "a: !!binary aGk=", "a: !!timestamp 2024-01-01", "a: !custom x",
    "a: !!python/name:os.system", "? [k]\n: v", "a: &x 1", "a: *x",
])
def test_tags_anchors_aliases_and_complex_keys_are_refused(block: str) -> None:
    with pytest.warns(IngestWarning, match=r"doc\.md: malformed front matter \(line \d+: "):
        fields, _ = parse_front_matter(f"---\n{block}\n---\n", source="doc.md")
    assert fields == {}


def test_very_deep_nesting_is_refused_not_a_crash() -> None:
    block = "a: " + "[" * 5000 + "]" * 5000
    with pytest.warns(IngestWarning, match="malformed front matter"):
        fields, _ = parse_front_matter(f"---\n{block}\n---\n", source="deep.md")
    assert fields == {}

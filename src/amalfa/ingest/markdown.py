"""Markdown -> blocks: the structure passages are cut from, parsed by markdown-it-py.

A CommonMark parser (with GitHub tables) finds the top-level blocks of a document: headings,
paragraphs, lists, block quotes, fenced and indented code, tables and HTML blocks, each with
its line range. Only top-level blocks are kept (a list is one block with its nested items), so
a passage boundary can never fall inside a list item's paragraph or a fenced code block.

Each block's ``text`` has exactly one line per source line it spans, so a character position in
the text always maps back to a file line (:meth:`Block.line_of`); prose lines are reduced to
reading text (emphasis, link targets, images and tags removed, see
:func:`amalfa.ingest.text.plain_text`), code and tables keep their characters, HTML comments
become blank lines (a reader never sees them, so a search should not find them).
"""

from __future__ import annotations

from dataclasses import dataclass

from markdown_it import MarkdownIt

from amalfa.ingest.text import blank_comments, plain_text

__all__ = ["Block", "parse_blocks"]


# token type -> block kind; the *_open tokens carry the map of the whole container
_KINDS = {
    "heading_open": "heading",
    "paragraph_open": "paragraph",
    "bullet_list_open": "list",
    "ordered_list_open": "list",
    "blockquote_open": "quote",
    "fence": "code",
    "code_block": "code",
    "table_open": "table",
    "html_block": "html",
}
_VERBATIM = frozenset({"code", "table"})

_parser: MarkdownIt | None = None


def _markdown() -> MarkdownIt:
    global _parser  # noqa: PLW0603 - one parser per process; building it costs ~1 ms
    if _parser is None:
        _parser = MarkdownIt("commonmark", {"html": True}).enable("table")
    return _parser


@dataclass(frozen=True, slots=True)
class Block:
    """One top-level block. ``start``/``end`` are 0-based body lines, ``end`` exclusive;
    ``level`` is the heading level (1-6), 0 for other kinds."""

    kind: str
    text: str
    start: int
    end: int
    level: int = 0

    def line_of(self, offset: int) -> int:
        """The 0-based body line of the character at ``offset`` in :attr:`text`."""
        return self.start + self.text.count("\n", 0, max(0, offset))


def parse_blocks(body: str) -> list[Block]:
    """The top-level blocks of ``body`` in order (thematic breaks and link definitions are
    dropped; blocks with no visible text are dropped)."""
    lines = body.split("\n")
    tokens = _markdown().parse(body)
    blocks: list[Block] = []
    for index, token in enumerate(tokens):
        if token.level != 0 or token.map is None:
            continue
        kind = _KINDS.get(token.type)
        if kind is None:
            continue
        start, end = token.map
        end = min(end, len(lines))
        # a container's map runs to the blank line after it; trailing blanks carry no text
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        if kind == "heading":
            inline = tokens[index + 1] if index + 1 < len(tokens) else None
            title = plain_text(inline.content if inline is not None else "")
            if title:
                blocks.append(Block("heading", title, start, end, int(token.tag[1:])))
            continue
        raw = lines[start:end]
        if kind in _VERBATIM:
            text = "\n".join(line.rstrip() for line in raw)
        elif kind == "html":
            unmasked = blank_comments("\n".join(raw))
            text = "\n".join(plain_text(line) for line in unmasked.split("\n"))
        else:
            text = "\n".join(plain_text(line) for line in raw)
        if text.strip():
            blocks.append(Block(kind, text, start, end))
    return blocks

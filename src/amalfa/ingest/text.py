"""Markdown as reading text: titles, lead paragraphs and inline markup removed.

These are line-and-regex helpers, kept deliberately small: they answer a few questions about a
document (its first level-1 heading, its lead paragraph, the text of a line without emphasis,
links and code marks) that the database stores as node columns, and they never fail on odd
input. The block structure used for passages comes from a real CommonMark parser
(:mod:`amalfa.ingest.markdown`); mixing the two is safe because these helpers only ever see
text with fenced code and HTML comments masked out (:func:`mask_fences_and_comments`), so
titles, summaries and links can never come from a code sample or a hidden comment.
"""

from __future__ import annotations

import html
import re

__all__ = ["blank_comments", "embedding_text", "first_h1", "lead_paragraph", "mask_fences_and_comments",
           "mask_inline_code", "plain_text", "truncate_words"]

_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ATX_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_RE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_HR_RE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_LIST_ITEM_RE = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)")
_HTML_BLOCK_RE = re.compile(r"^ {0,3}<(?:[A-Za-z][A-Za-z0-9-]*(?:[\s/>]|$)|/|!|\?)")
REF_DEF_RE = re.compile(r"^ {0,3}\[((?:[^\[\]\\]|\\.)+)\]:[ \t]*(<[^<>\n]*>|\S+)", re.M)
_TABLE_DELIMITER_RE = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_HTML_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
_PARAGRAPH_SPLIT_RE = re.compile(r"(\n[ \t]*\n)")
_INLINE_CODE_RE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def mask_fences_and_comments(body: str) -> str:
    """``body`` with fenced code and HTML comments blanked, keeping the line count.

    Titles, summaries and links must never come from code samples or hidden comments.
    """
    out: list[str] = []
    fence: str | None = None
    for line in body.split("\n"):
        match = _FENCE_RE.match(line)
        if fence is None:
            if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
                fence = match.group(1)
                out.append("")
            else:
                out.append(line)
        else:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                    and not match.group(2).strip():
                fence = None
            out.append("")
    return blank_comments("\n".join(out))


def blank_comments(text: str) -> str:
    """``text`` with every HTML comment replaced by the newlines it held (lines keep their
    numbers)."""
    return _HTML_COMMENT_RE.sub(lambda m: "\n" * m.group().count("\n"), text)


def mask_inline_code(text: str) -> str:
    """Blank out code spans paragraph by paragraph (a span never crosses a blank line)."""
    pieces = _PARAGRAPH_SPLIT_RE.split(text)
    for index in range(0, len(pieces), 2):
        if "`" in pieces[index]:
            pieces[index] = _INLINE_CODE_RE.sub(
                lambda m: re.sub(r"[^\n]", " ", m.group()), pieces[index]
            )
    return "".join(pieces)


def first_h1(visible: str) -> str | None:
    """The text of the first level-1 heading (ATX ``# x`` or setext ``x\\n===``)."""
    lines = visible.split("\n")
    for index, line in enumerate(lines):
        match = _ATX_RE.match(line)
        if match and len(match.group(1)) == 1:
            title = plain_text(match.group(2) or "")
            if title:
                return title
        elif (
            index + 1 < len(lines)
            and line.strip()
            and not match
            and re.match(r"^ {0,3}=+[ \t]*$", lines[index + 1])
        ):
            title = plain_text(line)
            if title:
                return title
    return None


def lead_paragraph(visible: str) -> str | None:
    """The first prose paragraph as plain text (headings, lists, quotes, tables, HTML skipped)."""
    block: list[str] = []
    for line in [*visible.split("\n"), ""]:
        if not line.strip():
            text = _paragraph_text(block)
            block = []
            if text:
                return text
            continue
        if block and _SETEXT_RE.match(line):  # the block was a setext heading
            block = []
            continue
        if _ATX_RE.match(line) or _HR_RE.match(line):
            text = _paragraph_text(block)
            block = []
            if text:
                return text
            continue
        block.append(line)
    return None


def _paragraph_text(block: list[str]) -> str | None:
    if not block:
        return None
    first = block[0]
    if (
        _LIST_ITEM_RE.match(first)
        or first.lstrip().startswith((">", "|"))
        or first.startswith(("    ", "\t"))  # indented code
        or _HTML_BLOCK_RE.match(first)
        or (len(block) > 1 and _TABLE_DELIMITER_RE.match(block[1]) and "|" in block[1])
        or all(REF_DEF_RE.match(line) for line in block)
    ):
        return None
    joined = " ".join(line.strip().removesuffix("\\") for line in block)
    return plain_text(joined) or None


_IMAGE_RE = re.compile(r"!\[(?:[^\[\]]|\[[^\[\]]*\])*\](?:\([^)]*\)|\[[^\]]*\])")
_WIKI_EMBED_RE = re.compile(r"!\[\[[^\[\]\n]*\]\]")
WIKILINK_RE = re.compile(r"(!?)\[\[([^\[\]\n]+?)\]\]")
_INLINE_LINK_TEXT_RE = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)")
_REF_LINK_TEXT_RE = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])+)\]\[[^\]]*\]")
_AUTOLINK_RE = re.compile(r"<((?:[A-Za-z][A-Za-z0-9+.-]*:|mailto:)[^<>\s]*)>")
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_EMPHASIS_RES = (
    re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"),
    re.compile(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)"),
    re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"),
    re.compile(r"\*(?=\S)(.+?)(?<=\S)\*"),
    re.compile(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)"),
)
_ESCAPE_RE = re.compile(r"\\([!-/:-@\[-`{-~])")
_CODE_SLOT_RE = re.compile(r"\x00(\d+)\x00")


def plain_text(markdown: str) -> str:
    """Inline Markdown as reading text: emphasis, links, images, code marks and tags removed."""
    codes: list[str] = []

    def keep_code(match: re.Match[str]) -> str:
        codes.append(match.group(2).strip())
        return f"\x00{len(codes) - 1}\x00"

    text = _INLINE_CODE_RE.sub(keep_code, markdown.replace("\x00", ""))
    text = _WIKI_EMBED_RE.sub("", text)
    text = _IMAGE_RE.sub("", text)  # badges and pictures say nothing in a summary
    text = WIKILINK_RE.sub(lambda m: _wikilink_label(m.group(2)), text)
    text = _INLINE_LINK_TEXT_RE.sub(r"\1", text)
    text = _REF_LINK_TEXT_RE.sub(r"\1", text)
    text = _AUTOLINK_RE.sub(r"\1", text)
    text = _HTML_TAG_RE.sub("", text)
    for pattern in _EMPHASIS_RES:
        text = pattern.sub(r"\1", text)
    text = _ESCAPE_RE.sub(r"\1", text)
    text = html.unescape(text)
    text = _CODE_SLOT_RE.sub(lambda m: codes[int(m.group(1))], text)
    return " ".join(text.split())


def truncate_words(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word boundary, ending with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if not text[limit - 1].isspace():
        space = cut.rfind(" ")
        if space > 0:
            cut = cut[:space]
    return (cut.rstrip(" ,;:.-\u2013\u2014") or cut) + "\u2026"


def embedding_text(title: str, body: str, visible: str) -> str:
    """Title and body, without repeating the title when the body opens with it as its heading.

    HTML comments are dropped: a reader never sees them, so a search should not match them.
    """
    body = _HTML_COMMENT_RE.sub("", body).strip()
    for line in visible.split("\n"):
        if not line.strip():
            continue
        match = _ATX_RE.match(line)
        if match and len(match.group(1)) == 1 and plain_text(match.group(2) or "") == title:
            return body
        break
    return f"{title}\n\n{body}".strip()


def _wikilink_label(inner: str) -> str:
    target, _, alias = inner.partition("|")
    if alias.strip():
        return alias.strip()
    name, _, heading = target.partition("#")
    return name.strip() or heading.strip()

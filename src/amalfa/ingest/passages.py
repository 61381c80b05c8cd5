"""Blocks -> passages: heading-aware chunks sized by the embedding model's own tokenizer.

A document is cut at its headings first, so a passage never mixes two sections, and each
section's blocks are packed in order into passages of at most the model's ``max_length``
tokens (counted with the model's own tokenizer, so no passage is truncated when embedded):

* A block that fits is never split: a fenced code block, a table or a list stays whole.
* A block longer than one passage (a long paragraph, a huge code sample) is split at token
  positions, preferring a sentence end, then a line end, then a space; a code block is split at
  line ends only. Consecutive pieces overlap by :data:`OVERLAP_TOKENS` tokens.
* When a passage is full, the next one starts with the previous passage's last block if that
  block is short (at most :data:`OVERLAP_TOKENS` tokens): a small overlap that keeps a lead-in
  sentence with what it introduces.
* Every passage knows its heading path (``"Guide > Install > Offline"``, None before the first
  heading), its 1-based line range in the file and the sha256 of the text that is embedded (the
  heading context and the passage text), which is what incremental ingest compares.

The embedded text starts with the context (the document title, unless the heading path already
starts with it, then the heading path), so a passage about "Offline" under "Install" is found
by a question about installing offline.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from amalfa.ingest.markdown import Block, parse_blocks

if TYPE_CHECKING:
    from amalfa.embedder import Embedder
    from amalfa.ingest.documents import ParsedDocument

__all__ = ["OVERLAP_TOKENS", "HEADING_SEPARATOR", "Passage", "TokenCounter", "split_passages"]

#: tokens two pieces of a split block share, and the longest block carried into the next passage
OVERLAP_TOKENS = 32
HEADING_SEPARATOR = " > "
# room left for the [CLS]/[SEP] pair and the separator between context and text
_SPECIAL_TOKENS = 3
# never plan passages smaller than this, whatever the heading context costs
_MIN_BUDGET = 48
# the context may take at most this share of a passage
_MAX_CONTEXT_SHARE = 4


@dataclass(frozen=True, slots=True)
class Passage:
    """One chunk of a document, as stored in the ``passages`` table."""

    ordinal: int
    heading: str | None
    line_start: int
    line_end: int
    text: str
    context: str
    hash: str

    @property
    def embed_text(self) -> str:
        """What the model reads: the heading context, a blank line, the passage text."""
        return f"{self.context}\n\n{self.text}" if self.context else self.text


def passage_hash(context: str, text: str) -> str:
    """sha256 of what is embedded: a passage with the same hash needs no new embedding."""
    return hashlib.sha256(f"{context}\x00{text}".encode()).hexdigest()


class TokenCounter:
    """Counts tokens with a model's tokenizer, without truncation or special tokens.

    ``limit`` is the model's ``max_length``: the most tokens one passage may have including the
    special tokens the model adds.
    """

    def __init__(self, tokenizer: Any, limit: int) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.tokenizer = tokenizer
        self.limit = int(limit)

    @classmethod
    def for_embedder(cls, embedder: Embedder) -> TokenCounter:
        """A counter with the embedder's own tokenizer and ``max_length`` (a separate instance,
        so the embedder's truncation and padding settings are left alone)."""
        from amalfa.embedder import load_tokenizer

        files = embedder.files
        tokenizer = load_tokenizer(json_text=files.tokenizer_text(),
                                   path=files.tokenizer_path or files.tokenizer_archive,
                                   max_length=embedder.max_length)
        return cls(tokenizer, embedder.max_length)

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        fast = getattr(self.tokenizer, "encode_batch_fast", None)
        encode = fast if fast is not None else self.tokenizer.encode_batch
        return [len(e.ids) for e in encode(list(texts), add_special_tokens=False)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character span of each token of ``text``."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).offsets)


@dataclass(slots=True)
class _Piece:
    text: str
    start: int  # 0-based body lines, inclusive
    end: int
    tokens: int


def split_passages(doc: ParsedDocument, counter: TokenCounter) -> list[Passage]:
    """The passages of ``doc`` (see the module docstring); [] for a document with no text."""
    blocks = parse_blocks(doc.body)
    if not blocks:
        return []
    sections = _sections(blocks, doc.title)
    contexts = [context for context, _, _ in sections]
    context_tokens = dict(zip(contexts, counter.count(contexts)))
    prose = [block.text for _, _, section in sections for block in section]
    block_tokens = iter(counter.count(prose))

    passages: list[Passage] = []
    for context, heading, section in sections:
        room = counter.limit - _SPECIAL_TOKENS
        context_cost = context_tokens[context]
        if context_cost > room // _MAX_CONTEXT_SHARE:
            context = _shorten(context, counter, room // _MAX_CONTEXT_SHARE)
            context_cost = counter.count([context])[0]
        budget = max(_MIN_BUDGET, room - context_cost)
        pieces: list[_Piece] = []
        for block in section:
            tokens = next(block_tokens)
            if tokens <= budget:
                pieces.append(_Piece(block.text, block.start, block.end - 1, tokens))
            else:
                pieces.extend(_split_block(block, counter, budget))
        for group in _pack(pieces, budget):
            text = "\n".join(piece.text for piece in group).strip()
            if not text:
                continue
            passages.append(Passage(
                ordinal=len(passages), heading=heading,
                line_start=doc.body_line + group[0].start,
                line_end=doc.body_line + max(piece.end for piece in group),
                text=text, context=context, hash=passage_hash(context, text)))
    return passages


def _sections(blocks: list[Block], title: str) -> list[tuple[str, str | None, list[Block]]]:
    """(context, heading path, content blocks) per section; sections without content dropped."""
    out: list[tuple[str, str | None, list[Block]]] = []
    stack: list[tuple[int, str]] = []
    current: list[Block] = []

    def close() -> None:
        if current:
            names = [name for _, name in stack]
            heading = HEADING_SEPARATOR.join(names) if names else None
            if names and names[0] == title:
                context = heading or ""
            else:
                context = HEADING_SEPARATOR.join([title, *names]) if title else (heading or "")
            out.append((context, heading, list(current)))
            current.clear()

    for block in blocks:
        if block.kind == "heading":
            close()
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            stack.append((block.level, block.text))
        else:
            current.append(block)
    close()
    return out


def _shorten(context: str, counter: TokenCounter, most: int) -> str:
    spans = counter.offsets(context)
    return context[:spans[most - 1][1]] if len(spans) > most else context


def _pack(pieces: list[_Piece], budget: int) -> list[list[_Piece]]:
    """Greedy packing in order; a short last piece is repeated at the head of the next group."""
    groups: list[list[_Piece]] = []
    current: list[_Piece] = []
    used = 0
    for piece in pieces:
        if current and used + piece.tokens > budget:
            groups.append(current)
            carry = current[-1]
            if len(current) > 1 and carry.tokens <= OVERLAP_TOKENS \
                    and carry.tokens + piece.tokens <= budget:
                current, used = [carry], carry.tokens
            else:
                current, used = [], 0
        current.append(piece)
        used += piece.tokens
    if current:
        groups.append(current)
    return groups


def _split_block(block: Block, counter: TokenCounter, budget: int) -> list[_Piece]:
    """Cut a block longer than ``budget`` tokens into overlapping pieces at good boundaries."""
    text = block.text
    spans = counter.offsets(text)
    code = block.kind == "code"
    overlap = 0 if code else min(OVERLAP_TOKENS, budget // 8)
    pieces: list[_Piece] = []
    starts = [start for start, _ in spans]  # token offsets never decrease: bisect, not scan
    begin = spans[0][0] if spans else 0
    while True:
        first = bisect_left(starts, begin)
        if first >= len(spans):
            break
        last = min(first + budget, len(spans))  # exclusive
        if last == len(spans):
            end = len(text)
        else:
            end = _cut(text, begin, spans[last - 1][1], spans[first + budget // 2][0], code)
            if end <= begin:  # no boundary anywhere: cut at the token itself
                end = spans[last - 1][1]
        piece_text = text[begin:end].strip("\n")
        if piece_text.strip():
            tokens = sum(1 for s, e in spans[first:last] if e <= end)
            pieces.append(_Piece(piece_text, block.line_of(begin + _leading_newlines(
                text, begin)), block.line_of(max(begin, end - 1)), max(1, tokens)))
        if end >= len(text):
            break
        following = bisect_left(starts, end, first)
        if following >= len(spans):
            break
        restart = max(first + 1, following - overlap)
        begin = _word_start(text, spans[restart][0]) if overlap else spans[restart][0]
        if begin <= spans[first][0]:  # a single word longer than the overlap: move on
            begin = spans[restart][0]
    return pieces


def _leading_newlines(text: str, offset: int) -> int:
    count = 0
    while offset + count < len(text) and text[offset + count] == "\n":
        count += 1
    return count


def _cut(text: str, begin: int, limit: int, floor: int, code: bool) -> int:
    """The best end (exclusive) for a piece starting at ``begin`` that may run to ``limit``:
    after a sentence end or a line end past ``floor``, else at a space; -1 when none."""
    window = text[begin:limit]
    base = begin
    if code:
        cut = window.rfind("\n")
        return base + cut + 1 if cut > 0 else -1
    for marks in ((". ", "? ", "! ", ".\n", "?\n", "!\n"), ("\n",)):
        best = max(window.rfind(mark) for mark in marks)
        if best >= 0 and base + best >= floor:
            return base + best + 1
    cut = max(window.rfind(" "), window.rfind("\n"))
    return base + cut if cut > 0 else -1


def _word_start(text: str, offset: int) -> int:
    """``offset`` moved back to the start of the word it falls in."""
    while offset > 0 and not text[offset - 1].isspace():
        offset -= 1
    return offset

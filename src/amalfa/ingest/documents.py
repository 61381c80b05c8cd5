"""One Markdown file -> a :class:`ParsedDocument`: the record a hollow node is made from.

Nothing here touches the database or the model, so the rules of ingestion (ids, titles,
summaries, dates, tags, links) can be tested on their own and reused by a watcher without
loading anything heavy.

* Ids come from :func:`amalfa.db.generate_id` of the path relative to the project root, exactly
  as the original system made them, so databases it built keep matching.
* The title is the front matter's ``title``, else the first level-1 heading, else the file name.
* The summary is the lead paragraph as plain text, at most :data:`SUMMARY_MAX_CHARS` characters.
* The hash is the sha256 of the file's bytes: the pipeline's "did it change" test.
* Files over :data:`MAX_FILE_BYTES` are refused before they are read (generated dumps and logs).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from amalfa.db import generate_id
from amalfa.errors import DocumentIdError, DocumentTooLargeError, IngestError
from amalfa.ingest.notices import IngestWarning
from amalfa.ingest.discover import absolute, relative_posix
from amalfa.ingest.frontmatter import normalise_text, split_front_matter
from amalfa.ingest.links import markdown_link_ids, wikilink_targets
from amalfa.ingest.text import (
    embedding_text,
    first_h1,
    lead_paragraph,
    mask_fences_and_comments,
    truncate_words,
)

__all__ = ["DEFAULT_DOMAIN", "DEFAULT_LAYER", "DEFAULT_TYPE", "MAX_FILE_BYTES",
           "SUMMARY_MAX_CHARS", "ParseReport", "ParsedDocument", "parse_document",
           "parse_documents"]

# Larger files are almost always generated dumps or logs; embedding them would only cost time.
MAX_FILE_BYTES = 10 * 1024 * 1024
# The original system's summary column holds the lead paragraph, at most this many characters.
SUMMARY_MAX_CHARS = 500

DEFAULT_DOMAIN = "knowledge"
DEFAULT_LAYER = "experience"
DEFAULT_TYPE = "document"

# Front-matter fields that become node columns; the rest go to ``meta``.
_COLUMN_FIELDS = frozenset({"title", "date", "domain", "layer", "type"})


@dataclass(slots=True)
class ParsedDocument:
    """One Markdown file, ready to become a hollow node.

    ``links`` holds the ids of Markdown files this one links to with ``[text](path)`` (whether or
    not they were ingested); ``wikilinks`` holds the raw ``[[target]]`` names, which can only be
    resolved against the whole set of documents (see :func:`resolve_links`). ``text`` is what
    the document-level embedding reads; ``body`` and ``body_line`` are what passages are cut
    from (:func:`amalfa.ingest.passages.split_passages`).
    """

    id: str
    title: str
    hash: str
    summary: str | None
    meta: dict[str, Any]
    date: str
    domain: str
    layer: str
    type: str
    text: str
    source: str
    path: Path
    links: list[str] = field(default_factory=list)
    wikilinks: list[str] = field(default_factory=list)
    body: str = ""  # the text after the front matter, line ends normalised to "\n"
    body_line: int = 1  # the 1-based line of the file on which ``body`` starts

    def node_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``amalfa.Node`` (it calls the title ``label``); no embedding."""
        return {
            "id": self.id,
            "type": self.type,
            "label": self.title,
            "domain": self.domain,
            "layer": self.layer,
            "summary": self.summary,
            "hash": self.hash,
            "meta": self.meta,
            "date": self.date,
        }


@dataclass(slots=True)
class ParseReport:
    """What :func:`parse_documents` made: the documents and the files it skipped, with why."""

    documents: list[ParsedDocument] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def parse_documents(
    paths: Iterable[Path | str],
    *,
    root: Path | str,
    max_bytes: int = MAX_FILE_BYTES,
) -> ParseReport:
    """Parse many files, skipping (with an :class:`IngestWarning`) those that cannot be ingested.

    Skipped: files over ``max_bytes``, unreadable or vanished files, names without a usable id,
    and a file whose id another file already took (``My File.md`` and ``my-file.md`` share
    ``my-file``; the first in order wins, so repeated runs keep the same node).
    """
    report = ParseReport()
    owner_of_id: dict[str, str] = {}
    for path in paths:
        try:
            doc = parse_document(Path(path), root=root, max_bytes=max_bytes)
        except IngestError as exc:
            reason = str(exc)
        except OSError as exc:
            reason = f"{path}: cannot read: {exc.strerror or exc}"
        else:
            if doc.id not in owner_of_id:
                owner_of_id[doc.id] = doc.source
                report.documents.append(doc)
                continue
            reason = f"{doc.source}: id {doc.id!r} is already used by {owner_of_id[doc.id]}"
        warnings.warn(f"skipped {reason}", IngestWarning, stacklevel=2)
        report.skipped.append((Path(path), reason))
    return report


def parse_document(
    path: Path | str,
    *,
    root: Path | str,
    text: str | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> ParsedDocument:
    """Read one Markdown file (a relative ``path`` is taken relative to ``root``).

    With ``text`` the file is not read: ``text`` is the content, the hash is over its UTF-8
    bytes, and the date falls back to the file's mtime if it exists, else today (UTC).
    Raises :class:`DocumentTooLargeError`, :class:`DocumentIdError`, ``OSError`` or
    ``ValueError`` (a path outside ``root``).
    """
    root_path = absolute(root)
    path = Path(path)
    if not path.is_absolute():
        path = root_path / path
    source = relative_posix(path, root_path)
    try:
        doc_id = generate_id(source)
    except ValueError:
        raise DocumentIdError(f"{source}: the file name gives an empty id") from None

    if text is None:
        data, mtime = _read_capped(path, max_bytes)
        content = _decode(data, source)
    else:
        data = text.encode("utf-8")
        content = normalise_text(text)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = None

    front, body, body_offset = split_front_matter(content, source=source)
    visible = mask_fences_and_comments(body)
    title = _front_matter_text(front, "title", source) or first_h1(visible) or path.stem

    summary = lead_paragraph(visible)
    return ParsedDocument(
        id=doc_id,
        title=title,
        hash=hashlib.sha256(data).hexdigest(),
        summary=truncate_words(summary, SUMMARY_MAX_CHARS) if summary else None,
        meta=_meta(front, source),
        date=_front_matter_text(front, "date", source) or _iso_date(mtime),
        domain=_front_matter_text(front, "domain", source) or DEFAULT_DOMAIN,
        layer=_front_matter_text(front, "layer", source) or DEFAULT_LAYER,
        type=_front_matter_text(front, "type", source) or DEFAULT_TYPE,
        text=embedding_text(title, body, visible),
        source=source,
        path=path,
        links=markdown_link_ids(visible, source),
        wikilinks=wikilink_targets(visible),
        body=body,
        body_line=body_offset + 1,
    )


# ---- reading ---------------------------------------------------------------------------------


def _read_capped(path: Path, max_bytes: int) -> tuple[bytes, float]:
    """The file's bytes and mtime, refusing files over the cap before reading them."""
    with open(path, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_size > max_bytes:
            raise DocumentTooLargeError(
                f"{path}: {info.st_size} bytes is over the {max_bytes}-byte limit"
            )
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while we looked
        raise DocumentTooLargeError(f"{path}: over the {max_bytes}-byte limit")
    return data, info.st_mtime


def _decode(data: bytes, source: str) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        warnings.warn(
            f"{source}: not valid UTF-8 (byte {exc.start}); undecodable bytes read as U+FFFD",
            IngestWarning,
            stacklevel=3,
        )
        text = data.decode("utf-8-sig", errors="replace")
    return normalise_text(text)


def _iso_date(mtime: float | None) -> str:
    # UTC, so the same file gives the same date on every machine.
    moment = datetime.now(timezone.utc) if mtime is None else datetime.fromtimestamp(
        mtime, timezone.utc)
    return moment.date().isoformat()


def _front_matter_text(front: dict[str, Any], key: str, source: str) -> str | None:
    """A front-matter field that must be text; numbers are accepted, other values warned."""
    value = front.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        warnings.warn(
            f"{source}: front-matter {key!r} should be text, got {type(value).__name__}; ignored",
            IngestWarning,
            stacklevel=3,
        )
        return None
    text = str(value).strip()
    return text or None


def _meta(front: dict[str, Any], source: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": source, "tags": _normalise_tags(front.get("tags"), source)}
    for key, value in front.items():
        if key in _COLUMN_FIELDS or key == "tags":
            continue
        if key == "source":
            warnings.warn(
                f"{source}: front-matter 'source' is reserved for the file path; ignored",
                IngestWarning,
                stacklevel=3,
            )
            continue
        meta[key] = value
    return meta


def _normalise_tags(value: Any, source: str) -> list[str]:
    """Tags as a list of strings: ``"a, b"`` and ``[a, b]`` both give ``["a", "b"]``."""
    if value is None:
        return []
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        items = [value]
    else:
        warnings.warn(
            f"{source}: front-matter 'tags' should be a list or text, got {type(value).__name__};"
            " ignored",
            IngestWarning,
            stacklevel=4,
        )
        return []
    tags: dict[str, None] = {}
    for item in items:
        if item is None or isinstance(item, (bool, list, dict)):
            continue
        tag = str(item).strip()
        if tag:
            tags[tag] = None
    return list(tags)



"""Links between documents: Markdown links and ``[[wikilinks]]`` -> typed edges.

* Markdown links become ``links_to`` edges and ``[[wikilinks]]`` become ``wikilink`` edges, so
  a reader of the graph can tell a path written by hand from a name resolved by lookup.
* Only links to Markdown files (``.md``/``.markdown``) among the ingested documents become
  edges; links into code, images, other sites or to files outside the root are dropped.
* Links are read from text with fenced code, HTML comments and inline code masked, so a code
  sample that shows a link never becomes an edge.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING
from pathlib import PurePosixPath
from urllib.parse import unquote

from amalfa.db import generate_id
from amalfa.ingest.discover import is_markdown, strip_markdown_suffix
from amalfa.ingest.text import REF_DEF_RE, WIKILINK_RE, mask_inline_code

if TYPE_CHECKING:
    from amalfa.ingest.documents import ParsedDocument

__all__ = ["EDGE_LINKS_TO", "EDGE_WIKILINK", "INGESTED_EDGE_TYPES", "markdown_link_ids",
           "resolve_links", "wikilink_targets"]

EDGE_LINKS_TO = "links_to"
EDGE_WIKILINK = "wikilink"
# Edge types ingestion owns: it adds and removes only these, never edges other tools wrote.
INGESTED_EDGE_TYPES = (EDGE_LINKS_TO, EDGE_WIKILINK)


def resolve_links(docs: Sequence[ParsedDocument]) -> list[tuple[str, str, str]]:
    """Unique ``(source_id, target_id, edge_type)`` triples for links between ``docs``.

    Markdown links give ``links_to`` edges when their target id is among ``docs``. A wikilink
    ``[[name]]``/``[[folder/name]]`` is matched case-insensitively against file names with or
    without suffix (``name`` ending a path, for the folder form), then by slug (``[[Getting
    Started]]`` finds ``getting-started.md``); when several files match, the one in the linking
    file's folder wins, then the shallowest, then the first by path. No self-loops.
    """
    ids = {doc.id for doc in docs}
    by_stem: dict[str, list[ParsedDocument]] = {}
    by_slug: dict[str, list[ParsedDocument]] = {}
    for doc in docs:
        stem = strip_markdown_suffix(PurePosixPath(doc.source).name)
        by_stem.setdefault(stem.casefold(), []).append(doc)
        slug = _slug(stem)
        if slug:
            by_slug.setdefault(slug, []).append(doc)

    edges: dict[tuple[str, str, str], None] = {}
    for doc in docs:
        for target in doc.links:
            if target in ids and target != doc.id:
                edges[(doc.id, target, EDGE_LINKS_TO)] = None
        for name in doc.wikilinks:
            target_doc = _match_wikilink(name, doc, by_stem, by_slug)
            if target_doc is not None and target_doc.id != doc.id:
                edges[(doc.id, target_doc.id, EDGE_WIKILINK)] = None
    return list(edges)


_INLINE_LINK_RE = re.compile(
    r"(?<!\\)(!?)\[((?:[^\[\]\\]|\\.|\[[^\[\]]*\])*)\]"
    r"\(\s*(<[^<>\n]*>|[^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*)"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*\)"
)
_URL_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def markdown_link_ids(visible: str, source: str) -> list[str]:
    """Ids of the Markdown files that inline links and reference definitions point to."""
    text = WIKILINK_RE.sub(lambda m: " " * len(m.group()), mask_inline_code(visible))
    targets: dict[str, None] = {}
    destinations = [m.group(3) for m in _INLINE_LINK_RE.finditer(text) if not m.group(1)]
    destinations += [m.group(2) for m in REF_DEF_RE.finditer(text)]
    for destination in destinations:
        rel = _resolve_link_path(destination, source)
        if rel is None:
            continue
        try:
            targets[generate_id(rel)] = None
        except ValueError:
            continue
    return list(targets)


def _resolve_link_path(destination: str, source: str) -> str | None:
    """The root-relative POSIX path a link points to, or None for what is not a local Markdown
    file inside the root (URLs, ``#anchors``, images, code, ``../`` beyond the root)."""
    dest = destination.strip()
    if dest.startswith("<") and dest.endswith(">"):
        dest = dest[1:-1].strip()
    if not dest or dest.startswith(("#", "//")) or _URL_SCHEME_RE.match(dest):
        return None
    dest = unquote(dest.split("#", 1)[0].split("?", 1)[0])
    if not dest or not is_markdown(dest):
        return None
    # A leading "/" means the project root, as on the sites that render these docs.
    joined = dest.lstrip("/") if dest.startswith("/") else posixpath.join(
        posixpath.dirname(source), dest)
    rel = posixpath.normpath(joined)
    if rel == ".." or rel.startswith("../") or rel.startswith("/"):
        return None
    return rel


def wikilink_targets(visible: str) -> list[str]:
    """The targets of ``[[target]]``, ``[[target|alias]]`` and ``[[target#heading]]``.

    ``![[embeds]]`` are ignored like images; ``[[#heading]]`` points into the same file.
    """
    targets: dict[str, None] = {}
    for match in WIKILINK_RE.finditer(mask_inline_code(visible)):
        if match.group(1):
            continue
        target = match.group(2).split("|", 1)[0].split("#", 1)[0].strip()
        if target:
            targets[target] = None
    return list(targets)




def _slug(name: str) -> str | None:
    try:
        return generate_id(name)
    except ValueError:
        return None


def _match_wikilink(
    name: str,
    doc: ParsedDocument,
    by_stem: dict[str, list[ParsedDocument]],
    by_slug: dict[str, list[ParsedDocument]],
) -> ParsedDocument | None:
    wanted = name.strip().removeprefix("./").lstrip("/")
    wanted = strip_markdown_suffix(wanted).casefold()
    last = wanted.rsplit("/", 1)[-1]
    candidates = by_stem.get(last) or by_slug.get(_slug(last) or "", [])
    if "/" in wanted:
        candidates = [
            c for c in candidates
            if ("/" + strip_markdown_suffix(c.source).casefold()).endswith("/" + wanted)
        ]
    if not candidates:
        return None
    folder = posixpath.dirname(doc.source)
    return min(
        candidates,
        key=lambda c: (posixpath.dirname(c.source) != folder, c.source.count("/"), c.source),
    )


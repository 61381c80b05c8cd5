"""Markdown files -> hollow nodes, passages and edges: everything behind ``amalfa init``.

One module per step, each usable on its own:

* :mod:`~amalfa.ingest.discover` finds the files (folders, globs, excludes);
* :mod:`~amalfa.ingest.frontmatter` reads the ``---`` block with a strict YAML loader;
* :mod:`~amalfa.ingest.documents` turns one file into a :class:`ParsedDocument` (id, title,
  summary, meta), with :mod:`~amalfa.ingest.text` for titles and lead paragraphs (and
  :mod:`~amalfa.ingest.notices` for the warning every step gives);
* :mod:`~amalfa.ingest.markdown` parses the body into blocks (markdown-it-py) and
  :mod:`~amalfa.ingest.passages` packs them into heading-aware, token-sized passages;
* :mod:`~amalfa.ingest.links` resolves Markdown links and wikilinks into edges;
* :mod:`~amalfa.ingest.pipeline` runs them all against a database and an embedder (what a
  run leaves is recorded by :func:`amalfa.stats.record_ingest_run`).

The parse layer touches neither the database nor the model, so the rules of ingestion can be
tested on their own. Every public name is re-exported here: ``from amalfa.ingest import ingest``.
"""

from __future__ import annotations

from amalfa.db import generate_id
from amalfa.errors import (
    DocumentIdError,
    DocumentTooLargeError,
    FrontMatterError,
    IngestError,
    ModelMismatchError,
)
from amalfa.ingest.discover import MARKDOWN_SUFFIXES, discover
from amalfa.ingest.documents import (
    DEFAULT_DOMAIN,
    DEFAULT_LAYER,
    DEFAULT_TYPE,
    MAX_FILE_BYTES,
    SUMMARY_MAX_CHARS,
    ParsedDocument,
    ParseReport,
    parse_document,
    parse_documents,
)
from amalfa.ingest.frontmatter import load_front_matter, parse_front_matter
from amalfa.ingest.links import EDGE_LINKS_TO, EDGE_WIKILINK, INGESTED_EDGE_TYPES, resolve_links
from amalfa.ingest.markdown import Block, parse_blocks
from amalfa.ingest.notices import IngestWarning
from amalfa.ingest.passages import Passage, TokenCounter, split_passages
from amalfa.ingest.pipeline import (
    DEFAULT_BATCH_SIZE,
    MODEL_META_KEY,
    ROOT_META_KEY,
    IngestResult,
    ProgressCallback,
    ingest,
    recorded_model,
    recorded_root,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_DOMAIN",
    "DEFAULT_LAYER",
    "DEFAULT_TYPE",
    "EDGE_LINKS_TO",
    "EDGE_WIKILINK",
    "INGESTED_EDGE_TYPES",
    "MARKDOWN_SUFFIXES",
    "MAX_FILE_BYTES",
    "MODEL_META_KEY",
    "ROOT_META_KEY",
    "SUMMARY_MAX_CHARS",
    "Block",
    "DocumentIdError",
    "DocumentTooLargeError",
    "FrontMatterError",
    "IngestError",
    "IngestResult",
    "IngestWarning",
    "ModelMismatchError",
    "ParseReport",
    "ParsedDocument",
    "Passage",
    "ProgressCallback",
    "TokenCounter",
    "discover",
    "generate_id",
    "ingest",
    "load_front_matter",
    "parse_blocks",
    "parse_document",
    "parse_documents",
    "parse_front_matter",
    "recorded_model",
    "recorded_root",
    "resolve_links",
    "split_passages",
]

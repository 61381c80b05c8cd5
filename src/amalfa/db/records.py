"""The records the database layer reads and writes: nodes, edges, history rows, counts and the
ingest bookkeeping of a node. (``DatabaseNotFoundError`` lives in :mod:`amalfa.errors` with
every other exception; it is re-exported here and from :mod:`amalfa.db`.)

Plain dataclasses with the original system's fields and defaults; they hold no SQL (the stores
in :mod:`amalfa.db.nodes`, :mod:`amalfa.db.edges` and :mod:`amalfa.db.history` do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from amalfa.errors import DatabaseNotFoundError

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_EDGE_TYPE",
    "DEFAULT_LAYER",
    "DatabaseNotFoundError",
    "DatabaseStats",
    "Edge",
    "HistoryEntry",
    "IngestedNode",
    "Node",
]

DEFAULT_DOMAIN = "knowledge"
DEFAULT_LAYER = "experience"
DEFAULT_EDGE_TYPE = "related_to"


@dataclass(slots=True, eq=False, repr=False)
class Node:
    """A node of the graph, with the original system's fields and defaults.

    ``label`` is stored in the ``title`` column. ``embedding`` comes back from the database as a
    read-only float32 array viewing the stored bytes (FAFCAS: unit length, or all zeros).
    ``meta`` is a JSON object; an empty one is stored as NULL and read back as ``{}``.
    """

    id: str
    type: str
    label: str | None = None
    domain: str = DEFAULT_DOMAIN
    layer: str = DEFAULT_LAYER
    summary: str | None = None
    embedding: npt.NDArray[np.float32] | None = None
    hash: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    date: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The node's JSON form, as history stores it (every field but the embedding)."""
        return {"id": self.id, "type": self.type, "label": self.label, "domain": self.domain,
                "layer": self.layer, "summary": self.summary, "hash": self.hash,
                "meta": self.meta, "date": self.date}

    def __eq__(self, other: object) -> bool:
        # the generated __eq__ would compare embeddings with ==, which is ambiguous for arrays
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Node)
        if self.to_dict() != other.to_dict():
            return False
        if self.embedding is None or other.embedding is None:
            return self.embedding is None and other.embedding is None
        return bool(np.array_equal(self.embedding, other.embedding))

    __hash__ = None  # type: ignore[assignment]  # mutable record with an array inside

    def __repr__(self) -> str:
        embedding = ("None" if self.embedding is None
                     else f"<{self.embedding.dtype} array, shape {self.embedding.shape}>")
        return (f"Node(id={self.id!r}, type={self.type!r}, label={self.label!r}, "
                f"domain={self.domain!r}, layer={self.layer!r}, summary={self.summary!r}, "
                f"embedding={embedding}, hash={self.hash!r}, meta={self.meta!r}, "
                f"date={self.date!r})")


@dataclass(frozen=True, slots=True)
class Edge:
    """A typed, directed edge. ``confidence`` and ``veracity`` default to 1 as in the schema."""

    source: str
    target: str
    type: str = DEFAULT_EDGE_TYPE
    confidence: float | None = 1.0
    veracity: float | None = 1.0
    context_source: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One audit row. ``old_value``/``new_value`` are the parsed JSON (None when absent)."""

    id: int
    entity_type: str
    entity_id: str
    action: str
    old_value: Any
    new_value: Any
    timestamp: str | None


@dataclass(frozen=True, slots=True)
class DatabaseStats:
    """Counts and size, with the original ``getStats()`` meanings.

    ``vectors`` counts nodes with an embedding. ``semantic_tokens`` counts nodes whose meta
    mentions ``semantic_tokens`` (the original's ``meta LIKE '%semantic_tokens%'``).
    ``db_size_bytes`` is page_count x page_size plus the current ``-wal`` file, so it does not
    drop when a checkpoint moves pages from the log into the file.
    """

    nodes: int
    edges: int
    vectors: int
    semantic_tokens: int
    db_size_bytes: int

    @property
    def embeddings(self) -> int:
        """The same as ``vectors`` (the name StatsTracker's snapshots use)."""
        return self.vectors

    @property
    def db_size_mb(self) -> float:
        return self.db_size_bytes / (1024 * 1024)

    def to_dict(self) -> dict[str, int]:
        return {"nodes": self.nodes, "edges": self.edges, "vectors": self.vectors,
                "semantic_tokens": self.semantic_tokens, "db_size_bytes": self.db_size_bytes}

    def __getitem__(self, key: str) -> int:
        """``stats["nodes"]``, for callers written against the original's plain object."""
        return self.to_dict()[key]


@dataclass(frozen=True, slots=True)
class IngestedNode:
    """What ingest needs to know of a node it wrote: the source file (from the node's meta,
    relative to the project root), the content hash and whether it has an embedding."""

    id: str
    hash: str | None
    source: str
    has_embedding: bool

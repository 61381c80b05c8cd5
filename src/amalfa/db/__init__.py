"""The database layer: the only code that writes SQL on the graph's tables.

``ResonanceDB`` (in :mod:`amalfa.db.resonance`) owns ``nodes``, ``edges``, ``history``,
``amalfa_meta`` and every table later migrations add; the records it reads and writes
(``Node``, ``Edge`` ...) are re-exported here, so ``from amalfa.db import ResonanceDB, Node``
is the import users write. The package's modules are listed in :mod:`amalfa.db.resonance`.
"""

from __future__ import annotations

from amalfa.db.graph import DEFAULT_GRAPH_LIMIT, GraphEdge, GraphNode, GraphPath, Subgraph
from amalfa.db.ids import generate_id
from amalfa.db.records import (
    DEFAULT_DOMAIN,
    DEFAULT_EDGE_TYPE,
    DEFAULT_LAYER,
    DatabaseNotFoundError,
    DatabaseStats,
    Edge,
    HistoryEntry,
    IngestedNode,
    Node,
)
from amalfa.db.resonance import ResonanceDB

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_EDGE_TYPE",
    "DEFAULT_GRAPH_LIMIT",
    "DEFAULT_LAYER",
    "DatabaseNotFoundError",
    "DatabaseStats",
    "Edge",
    "GraphEdge",
    "GraphNode",
    "GraphPath",
    "HistoryEntry",
    "IngestedNode",
    "Node",
    "ResonanceDB",
    "Subgraph",
    "generate_id",
]

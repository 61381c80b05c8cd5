"""From one hit to what is around it: nodes near a node's own vector, and search hits widened
through the links between documents.

- :func:`related_nodes` ("more like this") scores every node against the stored embedding of a
  given node (no model run: the vector is already in the database) and drops the node itself.
- :func:`expand_hits` adds the linked neighbours of the top search hits (``--expand N``): a
  neighbour ``h`` hops from a hit scores ``hit score x EXPANSION_DECAY ** h``, so a direct link
  of a strong hit ranks beside weaker direct hits and far links fade; a node reached from
  several hits keeps its best score, and hits themselves are never repeated as expansions.
  Links are followed both ways (a document and the ones that cite it are equally "around").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from amalfa.errors import NodeNotFoundError
from amalfa.limits import RESULTS

if TYPE_CHECKING:
    from amalfa.db import ResonanceDB
    from amalfa.vectors import SearchResult, VectorEngine

__all__ = ["EXPANSION_DECAY", "MAX_EXPAND_HOPS", "Expansion", "expand_hits", "related_nodes"]

#: the factor a score is multiplied by for every hop away from the hit it came from
EXPANSION_DECAY = 0.5
#: the most hops --expand follows (scores are below 1/1000 of the hit's beyond 10)
MAX_EXPAND_HOPS = 10
#: how many neighbours one hit may add at most (a hub document must not flood the results)
NEIGHBOURS_PER_HIT = 50


@dataclass(frozen=True, slots=True)
class Expansion:
    """A node added by :func:`expand_hits`: reached ``hops`` links from hit ``expanded_from``."""

    id: str
    score: float
    hops: int
    expanded_from: str
    title: str | None
    source: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": round(self.score, 4), "title": self.title,
                "source": self.source, "expanded_from": self.expanded_from, "hops": self.hops,
                "expansion": True}


def related_nodes(db: ResonanceDB, node_id: str, k: int = 10, *,
                  engine: VectorEngine | None = None) -> list[SearchResult]:
    """The ``k`` nodes whose embeddings are nearest to node ``node_id``'s own, best first.

    Raises NodeNotFoundError for an unknown id and ValueError when the node has no embedding or
    ``k`` is not a positive int.
    """
    from amalfa.vectors import VectorEngine

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if type(node_id) is not str or not node_id:
        raise ValueError(f"node id must be a non-empty str, got {node_id!r}")
    node = db.get_node(node_id)
    if node is None:
        raise NodeNotFoundError([node_id])
    if node.embedding is None:
        raise ValueError(f"node {node_id!r} has no embedding to compare with (it was stored "
                         "without one)")
    engine = engine if engine is not None else VectorEngine(db)
    hits = engine.search_by_vector(node.embedding, min(k + 1, RESULTS.high))  # + the node
    return [hit for hit in hits if hit.id != node_id][:k]


def expand_hits(db: ResonanceDB, hits: Sequence[tuple[str, float]], hops: int, *,
                decay: float = EXPANSION_DECAY,
                edge_types: Iterable[str] | None = None) -> list[Expansion]:
    """The neighbours within ``hops`` links of each ``(id, score)`` hit, best score first.

    ``hops=0`` adds nothing. Hits whose id has no node (deleted since the search) are skipped.
    """
    if isinstance(hops, bool) or not isinstance(hops, int) or not 0 <= hops <= MAX_EXPAND_HOPS:
        raise ValueError(f"expand must be an int from 0 to {MAX_EXPAND_HOPS}, got {hops!r}")
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay!r}")
    seen = {hit_id for hit_id, _ in hits}
    best: dict[str, Expansion] = {}
    if hops == 0:
        return []
    types = list(edge_types) if edge_types is not None else None
    for hit_id, score in hits:
        try:
            around = db.neighbours(hit_id, depth=hops, direction="both", edge_types=types,
                                   limit=NEIGHBOURS_PER_HIT + 1)
        except NodeNotFoundError:
            continue
        for node in around.nodes:
            if node.id in seen or not node.exists:
                continue
            value = float(score) * decay ** node.depth
            known = best.get(node.id)
            if known is None or value > known.score:
                best[node.id] = Expansion(node.id, value, node.depth, hit_id, node.title,
                                          node.source)
    return sorted(best.values(), key=lambda item: (-item.score, item.id))

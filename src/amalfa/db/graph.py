"""Graph queries on ``nodes`` and ``edges``: neighbourhoods, shortest paths, subgraphs.

:class:`GraphQueries` is a mixin of :class:`~amalfa.db.ResonanceDB`; its methods run on the
database's own connection (``self._conn``) and are the only code that walks ``edges``.

How a walk runs, and why:

- **Breadth first, one statement per level.** Each level is one set query: the frontier's ids go
  in as one JSON array (``json_each``) joined to ``edges`` through the index on ``source``
  (or ``target`` for incoming edges), with the edge-type filter bound the same way. So a
  two-hop neighbourhood is two index-driven statements, whatever the degree.
- **Not a single recursive CTE.** SQLite's ``WITH RECURSIVE ... UNION`` removes duplicate
  *rows*, so a walk that carries its depth revisits a node once per depth it can be reached at,
  and the recursive step may not look at the rows already found; on a cyclic graph the work
  grows with depth x edges and a "huge" depth never ends early. Level by level, the visited
  set lives beside the loop: every node and edge is read at most once, cycles cost nothing, and
  the walk stops as soon as a level finds nothing new (so ``depth=10**9`` is safe).
  ``benchmarks/compare_graph.py`` measures the recursive CTE beside this walk.
- **A node limit.** A walk returns at most ``limit`` nodes (the start nodes included),
  nearest first; a level that would pass the limit is cut in id order, so the answer is the same
  on every run, and the result says it was truncated.
- **Edges whose end has no node row** (a link to a document not ingested) are walked like any
  other: the graph is its edges. Such nodes come back with ``exists=False`` and no title.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from amalfa.errors import NodeNotFoundError

if TYPE_CHECKING:
    from amalfa._core.connection import Connection

__all__ = [
    "DEFAULT_GRAPH_LIMIT",
    "DIRECTIONS",
    "GraphEdge",
    "GraphNode",
    "GraphPath",
    "GraphQueries",
    "Subgraph",
]

#: how many nodes a walk returns when no limit is given
DEFAULT_GRAPH_LIMIT = 1000
#: the directions a walk may follow edges in
DIRECTIONS = ("outgoing", "incoming", "both")

# -- SQL -----------------------------------------------------------------------------------------

# One level of a walk: every edge leaving (or entering) the frontier, bound as a JSON array.
# ``?2`` is a JSON array of edge types in the typed variants.
_OUT = ("SELECT e.source, e.target, e.type FROM json_each(?1) AS f "
        "JOIN edges AS e ON e.source = f.value")
_IN = ("SELECT e.source, e.target, e.type FROM json_each(?1) AS f "
       "JOIN edges AS e ON e.target = f.value")
_TYPED = " WHERE e.type IN (SELECT value FROM json_each(?2))"
_LEVEL_SQL = {
    ("outgoing", False): _OUT,
    ("incoming", False): _IN,
    ("both", False): f"{_OUT} UNION ALL {_IN}",
    ("outgoing", True): _OUT + _TYPED,
    ("incoming", True): _IN + _TYPED,
    ("both", True): f"{_OUT}{_TYPED} UNION ALL {_IN}{_TYPED}",
}
_NODE_INFO = ("SELECT id, title, type, domain, meta FROM nodes "
              "WHERE id IN (SELECT value FROM json_each(?1))")
_KNOWN_IDS = "SELECT id FROM nodes WHERE id IN (SELECT value FROM json_each(?1))"


# -- records ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GraphEdge:
    """An edge followed by a walk (always in its stored direction: ``source -> target``)."""

    source: str
    target: str
    type: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "target": self.target, "type": self.type}


@dataclass(frozen=True, slots=True)
class GraphNode:
    """A node reached by a walk, ``depth`` hops from the nearest start node.

    ``source`` is the file the node was ingested from (its meta's ``source``), when known.
    ``exists`` is False for the end of an edge that has no row in ``nodes``.
    """

    id: str
    depth: int
    title: str | None = None
    type: str | None = None
    domain: str | None = None
    source: str | None = None
    exists: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "type": self.type, "domain": self.domain,
                "source": self.source, "depth": self.depth, "exists": self.exists}


@dataclass(frozen=True, slots=True)
class Subgraph:
    """The nodes a walk reached (nearest first) and the edges it followed to reach them.

    ``truncated`` is True when the node limit cut the walk short.
    """

    roots: tuple[str, ...]
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)
    truncated: bool = False

    @property
    def ids(self) -> list[str]:
        return [node.id for node in self.nodes]

    def node(self, node_id: str) -> GraphNode | None:
        """The reached node with this id, or None."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"roots": list(self.roots), "truncated": self.truncated,
                "nodes": [node.to_dict() for node in self.nodes],
                "edges": [edge.to_dict() for edge in self.edges]}


@dataclass(frozen=True, slots=True)
class GraphPath:
    """A shortest path: its node ids in order and the edge taken at each step."""

    nodes: list[str]
    edges: list[GraphEdge]

    @property
    def length(self) -> int:
        """The number of hops (0 when start and end are the same node)."""
        return len(self.edges)

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "edges": [edge.to_dict() for edge in self.edges],
                "length": self.length}


# -- validation ------------------------------------------------------------------------------------


def _check_id(value: Any, what: str = "node id") -> str:
    if type(value) is not str or not value:
        shown = type(value).__name__ if not isinstance(value, str) else "''"
        raise ValueError(f"{what} must be a non-empty str, got {shown}")
    return value


def _check_depth(depth: Any, name: str = "depth") -> int:
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise TypeError(f"{name} must be an int, not {type(depth).__name__}")
    if depth < 0:
        raise ValueError(f"{name} must be >= 0, got {depth}")
    return depth


def _check_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1 (or None for no limit), got {limit}")
    return limit


def _check_direction(direction: Any) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(map(repr, DIRECTIONS))}, "
                         f"not {direction!r}")
    return str(direction)


def _edge_types_json(edge_types: Iterable[str] | str | None) -> str | None:
    """The type filter as a JSON array (None: every type). A lone str is one type."""
    if edge_types is None:
        return None
    types = [edge_types] if isinstance(edge_types, str) else list(edge_types)
    for value in types:
        _check_id(value, "edge type")
    if not types:
        raise ValueError("edge_types is empty: give None to follow every type")
    return json.dumps(types)


def _seed_ids(node_ids: Any) -> list[str]:
    if isinstance(node_ids, str):
        raise TypeError("node_ids must be a list of ids, not a str (use neighbours() for one)")
    seeds = list(dict.fromkeys(_check_id(value) for value in node_ids))
    if not seeds:
        raise ValueError("node_ids is empty: give at least one node id")
    return seeds


def _source_of(meta_text: Any) -> str | None:
    if not meta_text:
        return None
    try:
        meta = json.loads(meta_text)
    except (TypeError, ValueError, RecursionError):
        return None  # meta another tool stored as plain text: no source to show
    source = meta.get("source") if isinstance(meta, dict) else None
    return source if isinstance(source, str) else None


# -- the queries ---------------------------------------------------------------------------------


class GraphQueries:
    """Graph walks over ``edges``; mixed into :class:`~amalfa.db.ResonanceDB`."""

    _conn: Connection

    def _require_nodes(self, node_ids: Sequence[str]) -> None:
        """Raise NodeNotFoundError naming every id that has no row in ``nodes``."""
        rows = self._conn.prepare(_KNOWN_IDS).execute((json.dumps(list(node_ids)),))
        known = {row[0] for row in rows}
        missing = [node_id for node_id in node_ids if node_id not in known]
        if missing:
            raise NodeNotFoundError(missing)

    def _level(self, frontier: Iterable[str], direction: str,
               types_json: str | None) -> list[tuple[str, str, str]]:
        """Every edge leaving (``outgoing``), entering or touching the frontier."""
        sql = _LEVEL_SQL[(direction, types_json is not None)]
        params: tuple[str, ...] = (json.dumps(list(frontier)),)
        if types_json is not None:
            params += (types_json,)
        return self._conn.prepare(sql).execute(params)

    def _walk(self, seeds: list[str], depth: int, direction: str, types_json: str | None,
              limit: int | None) -> Subgraph:
        depths = dict.fromkeys(seeds, 0)
        truncated = limit is not None and len(seeds) > limit
        if truncated:
            depths = dict.fromkeys(seeds[:limit], 0)
        edges: list[GraphEdge] = []
        frontier = list(depths)
        level = 0
        while frontier and level < depth and not truncated:
            level += 1
            members = set(frontier)
            found: dict[str, list[GraphEdge]] = {}
            level_edges: list[GraphEdge] = []
            for source, target, kind in self._level(frontier, direction, types_json):
                edge = GraphEdge(source, target, kind)
                # the far end: the target of an edge out of the frontier, else its source
                if direction == "incoming" or (direction == "both" and source not in members):
                    far = source
                else:
                    far = target
                if far in depths:  # an edge back into what is known: cycles end here
                    level_edges.append(edge)
                    continue
                found.setdefault(far, []).append(edge)
            new_ids = list(found)
            if limit is not None and len(depths) + len(new_ids) > limit:
                new_ids = sorted(new_ids)[:limit - len(depths)]
                truncated = True
            for node_id in new_ids:
                depths[node_id] = level
                edges.extend(found[node_id])
            edges.extend(level_edges)
            frontier = new_ids
        return Subgraph(tuple(seeds), self._graph_nodes(depths), _unique(edges), truncated)

    def _graph_nodes(self, depths: dict[str, int]) -> list[GraphNode]:
        info = {row[0]: row for row in
                self._conn.prepare(_NODE_INFO).execute((json.dumps(list(depths)),))}
        nodes = []
        for node_id, depth in depths.items():
            row = info.get(node_id)
            if row is None:
                nodes.append(GraphNode(node_id, depth, exists=False))
            else:
                nodes.append(GraphNode(node_id, depth, row[1], row[2], row[3], _source_of(row[4])))
        return nodes

    def neighbours(self, node_id: str, *, depth: int = 1, direction: str = "outgoing",
                   edge_types: Iterable[str] | str | None = None,
                   limit: int | None = DEFAULT_GRAPH_LIMIT) -> Subgraph:
        """The nodes within ``depth`` hops of ``node_id``, nearest first, the node itself at 0.

        ``direction`` is ``"outgoing"`` (follow edges source -> target), ``"incoming"`` or
        ``"both"``; ``edge_types`` keeps only edges of those types. At most ``limit`` nodes come
        back (None: no limit). ``depth=0`` is the node alone; any larger depth is safe, the walk
        ends when nothing new is reachable. Raises NodeNotFoundError for an unknown id.
        """
        return self.subgraph([_check_id(node_id)], depth=depth, direction=direction,
                             edge_types=edge_types, limit=limit)

    def subgraph(self, node_ids: Iterable[str], *, depth: int = 1, direction: str = "both",
                 edge_types: Iterable[str] | str | None = None,
                 limit: int | None = DEFAULT_GRAPH_LIMIT) -> Subgraph:
        """The neighbourhood of a set of nodes: everything within ``depth`` hops of any of them
        (each node at its distance from the nearest), and the edges followed.

        Direction, edge types and limit as :meth:`neighbours`; the direction defaults to
        ``"both"`` (the surroundings of a set of documents). Raises NodeNotFoundError naming every
        unknown id.
        """
        seeds = _seed_ids(node_ids)
        depth = _check_depth(depth)
        direction = _check_direction(direction)
        types_json = _edge_types_json(edge_types)
        limit = _check_limit(limit)
        self._require_nodes(seeds)
        return self._walk(seeds, depth, direction, types_json, limit)

    def shortest_path(self, start: str, end: str, *, direction: str = "outgoing",
                      edge_types: Iterable[str] | str | None = None,
                      max_depth: int | None = None) -> GraphPath | None:
        """The shortest path from ``start`` to ``end`` (fewest hops), or None when there is none
        within ``max_depth`` hops (None: any length).

        ``direction="outgoing"`` follows edges as stored, ``"incoming"`` against them, ``"both"``
        either way. Searched from both ends at once, a level at a time, the smaller frontier
        first. Among paths of equal length the one found first is returned. Raises
        NodeNotFoundError for an unknown id.
        """
        start, end = _check_id(start, "start"), _check_id(end, "end")
        direction = _check_direction(direction)
        types_json = _edge_types_json(edge_types)
        if max_depth is not None:
            _check_depth(max_depth, "max_depth")
        self._require_nodes(list(dict.fromkeys((start, end))))
        if start == end:
            return GraphPath([start], [])
        backward_direction = {"outgoing": "incoming", "incoming": "outgoing",
                              "both": "both"}[direction]
        # node -> (the node one step nearer its side's end, the edge between), or None at the end
        forward: dict[str, tuple[str, GraphEdge] | None] = {start: None}
        backward: dict[str, tuple[str, GraphEdge] | None] = {end: None}
        forward_frontier, backward_frontier = [start], [end]
        hops = 0
        while forward_frontier and backward_frontier:
            if max_depth is not None and hops >= max_depth:
                return None
            hops += 1
            from_start = len(forward_frontier) <= len(backward_frontier)
            if from_start:
                frontier, seen, other, way = forward_frontier, forward, backward, direction
            else:
                frontier, seen, other, way = (backward_frontier, backward, forward,
                                              backward_direction)
            members = set(frontier)
            next_frontier = []
            for source, target, kind in self._level(frontier, way, types_json):
                edge = GraphEdge(source, target, kind)
                if way == "incoming" or (way == "both" and source not in members):
                    near, far = target, source
                else:
                    near, far = source, target
                if far in seen:
                    continue
                seen[far] = (near, edge)
                if far in other:
                    return _join_path(far, forward, backward)
                next_frontier.append(far)
            if from_start:
                forward_frontier = next_frontier
            else:
                backward_frontier = next_frontier
        return None


def _join_path(meeting: str, forward: dict[str, tuple[str, GraphEdge] | None],
               backward: dict[str, tuple[str, GraphEdge] | None]) -> GraphPath:
    """The path through ``meeting``: back to the start along ``forward``, on to the end along
    ``backward``."""
    nodes, edges = [meeting], []
    step = forward[meeting]
    while step is not None:
        nodes.append(step[0])
        edges.append(step[1])
        step = forward[step[0]]
    nodes.reverse()
    edges.reverse()
    step = backward[meeting]
    while step is not None:
        nodes.append(step[0])
        edges.append(step[1])
        step = backward[step[0]]
    return GraphPath(nodes, edges)


def _unique(edges: list[GraphEdge]) -> list[GraphEdge]:
    return list(dict.fromkeys(edges))

"""Graph walks on a real SQLite file: neighbourhoods, subgraphs, shortest paths.

Each walk is checked against a plain breadth-first search over the same edges in Python.
"""

from __future__ import annotations

import random
from collections import deque
from pathlib import Path

import pytest

from amalfa.db import GraphEdge, Node, ResonanceDB
from amalfa.errors import AmalfaError, NodeNotFoundError


def _db(tmp_path: Path, nodes: list[str], edges: list[tuple[str, str, str]]) -> ResonanceDB:
    db = ResonanceDB.create(tmp_path / "graph.db", history=False)
    db.insert_nodes(Node(node_id, "document", label=f"Title {node_id}",
                         meta={"source": f"docs/{node_id}.md"}) for node_id in nodes)
    with db.transaction():
        for source, target, kind in edges:
            db.insert_edge(source, target, kind)
    return db


# a -> b -> c -> a (a cycle), c -> d, b -> e (cites), f alone, d -> ghost (no node row)
EDGES = [("a", "b", "links"), ("b", "c", "links"), ("c", "a", "links"), ("c", "d", "links"),
         ("b", "e", "cites"), ("d", "ghost", "links")]


@pytest.fixture
def db(tmp_path: Path) -> ResonanceDB:
    database = _db(tmp_path, ["a", "b", "c", "d", "e", "f"], EDGES)
    yield database
    database.close()


def _reference_depths(edges, roots, depth, direction="outgoing", types=None):
    adjacency: dict[str, set[str]] = {}
    for source, target, kind in edges:
        if types is not None and kind not in types:
            continue
        if direction in ("outgoing", "both"):
            adjacency.setdefault(source, set()).add(target)
        if direction in ("incoming", "both"):
            adjacency.setdefault(target, set()).add(source)
    depths = dict.fromkeys(roots, 0)
    queue = deque(roots)
    while queue:
        node = queue.popleft()
        if depths[node] == depth:
            continue
        for far in adjacency.get(node, ()):
            if far not in depths:
                depths[far] = depths[node] + 1
                queue.append(far)
    return depths


def test_neighbours_depth_one_and_two(db: ResonanceDB) -> None:
    one = db.neighbours("a")
    assert {n.id: n.depth for n in one.nodes} == {"a": 0, "b": 1}
    assert one.edges == [GraphEdge("a", "b", "links")]
    two = db.neighbours("a", depth=2)
    assert {n.id: n.depth for n in two.nodes} == {"a": 0, "b": 1, "c": 2, "e": 2}
    assert two.ids[0] == "a"  # nearest first
    assert [n.depth for n in two.nodes] == sorted(n.depth for n in two.nodes)
    b = two.node("b")
    assert b is not None and b.title == "Title b" and b.source == "docs/b.md" and b.exists
    assert not two.truncated


def test_cycle_ends_and_huge_depth_is_safe(db: ResonanceDB) -> None:
    whole = db.neighbours("a", depth=10**9)
    assert {n.id: n.depth for n in whole.nodes} == {
        "a": 0, "b": 1, "c": 2, "e": 2, "d": 3, "ghost": 4}
    # the edge closing the cycle is reported once, and every edge is listed once
    assert GraphEdge("c", "a", "links") in whole.edges
    assert len(whole.edges) == len(set(whole.edges)) == 6


def test_dangling_edge_end_is_marked(db: ResonanceDB) -> None:
    ghost = db.neighbours("d").node("ghost")
    assert ghost is not None and not ghost.exists and ghost.title is None


def test_depth_zero_is_the_node_alone(db: ResonanceDB) -> None:
    alone = db.neighbours("a", depth=0)
    assert alone.ids == ["a"] and alone.edges == []
    assert db.neighbours("f", depth=5).ids == ["f"]  # no edges at all


def test_direction_and_type_filters(db: ResonanceDB) -> None:
    incoming = db.neighbours("a", direction="incoming", depth=2)
    assert {n.id: n.depth for n in incoming.nodes} == {"a": 0, "c": 1, "b": 2}
    both = db.neighbours("d", direction="both")
    assert set(both.ids) == {"d", "c", "ghost"}
    cites = db.neighbours("b", edge_types=["cites"], depth=3)
    assert set(cites.ids) == {"b", "e"}
    assert db.neighbours("b", edge_types="links", depth=1).ids == ["b", "c"]
    assert db.neighbours("b", edge_types=["nothing"], depth=3).ids == ["b"]


def test_limit_cuts_nearest_first_and_says_so(db: ResonanceDB) -> None:
    cut = db.neighbours("a", depth=5, limit=3)
    assert cut.truncated
    assert cut.ids == ["a", "b", "c"]  # level 2 is cut in id order: c before e
    for edge in cut.edges:  # no edge leads out of what came back
        assert {edge.source, edge.target} <= set(cut.ids)
    assert db.neighbours("a", depth=5, limit=1).ids == ["a"]
    assert len(db.neighbours("a", depth=5, limit=None).nodes) == 6


def test_subgraph_around_a_set(db: ResonanceDB) -> None:
    around = db.subgraph(["e", "d"], depth=1)
    assert {n.id: n.depth for n in around.nodes} == {"e": 0, "d": 0, "b": 1, "c": 1, "ghost": 1}
    assert around.roots == ("e", "d")
    as_dict = around.to_dict()
    assert {edge["type"] for edge in as_dict["edges"]} == {"links", "cites"}
    assert all({"id", "title", "source", "depth"} <= set(n) for n in as_dict["nodes"])


def test_shortest_path(db: ResonanceDB) -> None:
    path = db.shortest_path("a", "d")
    assert path is not None
    assert path.nodes == ["a", "b", "c", "d"] and path.length == 3
    assert path.edges[0] == GraphEdge("a", "b", "links")
    assert db.shortest_path("d", "a") is None  # d leads only to ghost
    back = db.shortest_path("d", "a", direction="both")
    assert back is not None and back.nodes == ["d", "c", "a"]
    against = db.shortest_path("d", "a", direction="incoming")
    assert against is not None and against.nodes == ["d", "c", "b", "a"]
    assert db.shortest_path("a", "a").nodes == ["a"]
    assert db.shortest_path("a", "f") is None
    assert db.shortest_path("a", "d", max_depth=2) is None
    assert db.shortest_path("a", "d", max_depth=3) is not None
    assert db.shortest_path("a", "e", edge_types=["links"]) is None


def test_unknown_ids_raise_and_name_them(db: ResonanceDB) -> None:
    with pytest.raises(NodeNotFoundError, match="'nope'") as caught:
        db.neighbours("nope")
    assert caught.value.node_ids == ["nope"]
    assert isinstance(caught.value, AmalfaError) and isinstance(caught.value, LookupError)
    with pytest.raises(NodeNotFoundError) as caught:
        db.subgraph(["a", "x", "y"])
    assert caught.value.node_ids == ["x", "y"]
    with pytest.raises(NodeNotFoundError):
        db.shortest_path("a", "zzz")


@pytest.mark.parametrize(("call", "error", "words"), [
    (lambda db: db.neighbours("a", depth=-1), ValueError, "depth must be >= 0"),
    (lambda db: db.neighbours("a", depth=1.5), TypeError, "depth must be an int"),
    (lambda db: db.neighbours("a", depth=True), TypeError, "depth must be an int"),
    (lambda db: db.neighbours("a", limit=0), ValueError, "limit must be >= 1"),
    (lambda db: db.neighbours("a", direction="up"), ValueError, "direction must be one of"),
    (lambda db: db.neighbours("a", edge_types=[]), ValueError, "edge_types is empty"),
    (lambda db: db.neighbours("a", edge_types=[3]), ValueError, "edge type must be"),
    (lambda db: db.neighbours(""), ValueError, "node id must be a non-empty str"),
    (lambda db: db.neighbours(None), ValueError, "node id must be a non-empty str"),
    (lambda db: db.subgraph("a"), TypeError, "not a str"),
    (lambda db: db.subgraph([]), ValueError, "node_ids is empty"),
    (lambda db: db.shortest_path("a", "b", max_depth=-2), ValueError, "max_depth must be"),
])
def test_bad_arguments_are_named(db: ResonanceDB, call, error, words) -> None:
    with pytest.raises(error, match=words):
        call(db)


def test_walks_write_nothing_and_work_read_only(tmp_path: Path) -> None:
    _db(tmp_path, ["a", "b", "c", "d", "e", "f"], EDGES).close()
    path = tmp_path / "graph.db"
    before = path.read_bytes()
    with ResonanceDB(path, readonly=True) as db:
        assert set(db.neighbours("a", depth=2).ids) == {"a", "b", "c", "e"}
        assert db.shortest_path("a", "d") is not None
    assert path.read_bytes() == before


@pytest.mark.parametrize("direction", ["outgoing", "incoming", "both"])
def test_random_graph_matches_reference_bfs(tmp_path: Path, direction: str) -> None:
    rng = random.Random(7)
    ids = [f"n{i}" for i in range(300)]
    edges = list({(rng.choice(ids), rng.choice(ids), rng.choice(["x", "y"])) for _ in range(900)})
    with _db(tmp_path, ids, edges) as db:
        for root in rng.sample(ids, 10):
            for depth in (1, 2, 4):
                for types in (None, ["x"]):
                    got = db.neighbours(root, depth=depth, direction=direction, edge_types=types,
                                        limit=None)
                    expected = _reference_depths(edges, [root], depth, direction, types)
                    assert {n.id: n.depth for n in got.nodes} == expected
            target = rng.choice(ids)
            reference = _reference_depths(edges, [root], 10**6, direction)
            path = db.shortest_path(root, target, direction=direction)
            if target not in reference:
                assert path is None
                continue
            assert path is not None and path.length == reference[target]
            assert path.nodes[0] == root and path.nodes[-1] == target
            for step, edge in enumerate(path.edges):  # each step is a stored edge
                pair = {path.nodes[step], path.nodes[step + 1]}
                assert {edge.source, edge.target} == pair
                assert (edge.source, edge.target, edge.type) in edges

"""Graph walks: ResonanceDB beside networkx on the same synthetic graph in the same SQLite file.

    python benchmarks/compare_graph.py [--nodes 100000] [--edges 500000] [--queries 30]
                                       [--loads 3] [--keep PATH]

The graph: ``--nodes`` document nodes and ``--edges`` random directed edges of three types
(degree ~10 counting both directions at the defaults), written once with ResonanceDB.

- **amalfa, cold**: open ``ResonanceDB(path, readonly=True)``, run the query, close; a fresh
  connection per query (schema check and statement preparation included), in this process.
- **amalfa, warm**: the same queries on one open database.
- **amalfa, recursive CTE**: the two-hop neighbourhood as one ``WITH RECURSIVE`` statement on the
  same connection, the design :mod:`amalfa.db.graph` explains it does not use.
- **networkx**: in a subprocess (Python's sqlite3 links its own SQLite; two copies in one
  process must not open one file): read ``nodes`` and ``edges`` from the same file into a
  ``DiGraph`` (the load), then the same queries: two-hop = nodes within 2 outgoing hops
  (``single_source_shortest_path_length(cutoff=2)``), shortest path = ``nx.shortest_path`` on
  the directed graph (bidirectional BFS).

Printed: medians (ms) for each side, the load and the query separately, and the ratio
networkx (load + query) / amalfa (cold query) (above 1 = amalfa faster). Every query's answer is
checked against networkx's.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EDGE_TYPES = ("links", "cites", "related_to")

# one statement: the recursive-CTE way to the same two-hop neighbourhood
CTE_TWO_HOP = (
    "WITH RECURSIVE walk(id, depth) AS (SELECT ?1, 0 UNION "
    "SELECT e.target, w.depth + 1 FROM walk AS w JOIN edges AS e ON e.source = w.id "
    "WHERE w.depth < ?2) SELECT id, min(depth) FROM walk GROUP BY id"
)


def build(path: Path, nodes: int, edges: int, seed: int = 1) -> None:
    from amalfa.db import Node, ResonanceDB

    rng = random.Random(seed)
    ids = [f"docs-note-{i:07d}" for i in range(nodes)]
    with ResonanceDB.create(path, history=False) as db:
        # as every ingested database has (recorded with its first embedding); without it each
        # open would scan the nodes table looking for a vector to infer the dimension from
        db.record_dimensions(384)
        db.insert_nodes(Node(node_id, "document", label=f"Note {i}",
                             meta={"source": f"notes/{i}.md"}) for i, node_id in enumerate(ids))
        written = 0
        with db.transaction():
            while written < edges:
                source, target = rng.choice(ids), rng.choice(ids)
                if source != target:
                    written += db.insert_edge(source, target, rng.choice(EDGE_TYPES))
        db.checkpoint()


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def run_peer(path: str, roots: list[str], pairs: list[list[str]], loads: int) -> dict:
    """The networkx side (runs in its own process)."""
    import sqlite3

    import networkx as nx

    load_times, graph = [], None
    for _ in range(loads):
        start = time.perf_counter()
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        graph = nx.DiGraph()
        graph.add_nodes_from(row[0] for row in conn.execute("SELECT id FROM nodes"))
        graph.add_edges_from((s, t, {"type": k}) for s, t, k in
                             conn.execute("SELECT source, target, type FROM edges"))
        conn.close()
        load_times.append(time.perf_counter() - start)
    assert graph is not None
    hop_times, hop_sizes = [], []
    for root in roots:
        start = time.perf_counter()
        reached = nx.single_source_shortest_path_length(graph, root, cutoff=2)
        hop_times.append(time.perf_counter() - start)
        hop_sizes.append(len(reached))
    path_times, path_lengths = [], []
    for source, target in pairs:
        start = time.perf_counter()
        try:
            length = len(nx.shortest_path(graph, source, target)) - 1
        except nx.NetworkXNoPath:
            length = None
        path_times.append(time.perf_counter() - start)
        path_lengths.append(length)
    return {"load": load_times, "two_hop": hop_times, "two_hop_sizes": hop_sizes,
            "path": path_times, "path_lengths": path_lengths, "version": nx.__version__}


def run_ours(path: Path, roots: list[str], pairs: list[list[str]]) -> dict:
    from amalfa.db import ResonanceDB

    cold, cold_sizes = [], []
    for root in roots:
        start = time.perf_counter()
        with ResonanceDB(path, readonly=True) as db:
            size = len(db.neighbours(root, depth=2, limit=None).nodes)
        cold.append(time.perf_counter() - start)
        cold_sizes.append(size)
    cold_path = []
    for source, target in pairs:
        start = time.perf_counter()
        with ResonanceDB(path, readonly=True) as db:
            db.shortest_path(source, target)
        cold_path.append(time.perf_counter() - start)
    warm, warm_path, cte, path_lengths = [], [], [], []
    with ResonanceDB(path, readonly=True) as db:
        for root in roots:
            start = time.perf_counter()
            db.neighbours(root, depth=2, limit=None)
            warm.append(time.perf_counter() - start)
            statement = db.raw.prepare(CTE_TWO_HOP)
            start = time.perf_counter()
            rows = statement.execute((root, 2))
            cte.append(time.perf_counter() - start)
            assert len(rows) == cold_sizes[len(cte) - 1]
        for source, target in pairs:
            start = time.perf_counter()
            found = db.shortest_path(source, target)
            warm_path.append(time.perf_counter() - start)
            path_lengths.append(None if found is None else found.length)
    return {"cold": cold, "cold_sizes": cold_sizes, "cold_path": cold_path, "warm": warm,
            "warm_path": warm_path, "cte": cte, "path_lengths": path_lengths}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--edges", type=int, default=500_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the graph here (reused if it exists)")
    parser.add_argument("--peer", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:  # the networkx side, started by the main run
        spec = json.loads(Path(args.peer[1]).read_text())
        print(json.dumps(run_peer(args.peer[0], spec["roots"], spec["pairs"], spec["loads"])))
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        path = args.keep or Path(scratch) / "graph.db"
        if path.exists():
            from amalfa.db import ResonanceDB

            with ResonanceDB(path) as db:  # a kept graph from an older schema: migrate it once
                if db.dimensions is None:
                    db.record_dimensions(384)
        else:
            start = time.perf_counter()
            build(path, args.nodes, args.edges)
            print(f"built {args.nodes} nodes / {args.edges} edges in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
        rng = random.Random(2)
        ids = [f"docs-note-{i:07d}" for i in range(args.nodes)]
        roots = rng.sample(ids, args.queries)
        pairs = [rng.sample(ids, 2) for _ in range(args.queries)]
        spec_file = Path(scratch) / "spec.json"
        spec_file.write_text(json.dumps({"roots": roots, "pairs": pairs, "loads": args.loads}))
        ours = run_ours(path, roots, pairs)
        peer_run = subprocess.run(
            [sys.executable, __file__, "--peer", str(path), str(spec_file)],
            capture_output=True, text=True, check=True)
        peer = json.loads(peer_run.stdout)

    assert ours["cold_sizes"] == peer["two_hop_sizes"], "two-hop answers differ"
    assert ours["path_lengths"] == peer["path_lengths"], "shortest path lengths differ"
    load = median_ms(peer["load"])
    print(f"\ngraph: {args.nodes} nodes, {args.edges} edges; {args.queries} queries; "
          f"networkx {peer['version']}; two-hop size median "
          f"{statistics.median(ours['cold_sizes']):.0f} nodes")
    print(f"{'query':<14}{'amalfa cold':>13}{'amalfa warm':>13}{'nx load':>11}{'nx query':>11}"
          f"{'nx load+query':>15}{'ratio':>8}")
    for name, cold, warm, theirs in (("2-hop", ours["cold"], ours["warm"], peer["two_hop"]),
                                     ("shortest path", ours["cold_path"], ours["warm_path"],
                                      peer["path"])):
        total = load + median_ms(theirs)
        print(f"{name:<14}{median_ms(cold):>11.2f}ms{median_ms(warm):>11.2f}ms{load:>9.0f}ms"
              f"{median_ms(theirs):>9.3f}ms{total:>13.0f}ms{total / median_ms(cold):>7.0f}x")
    print(f"2-hop as one recursive CTE (warm): {median_ms(ours['cte']):.2f} ms "
          f"(level-by-level walk, warm: {median_ms(ours['warm']):.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

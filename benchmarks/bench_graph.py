"""pytest-benchmark suite for the graph walks, beside networkx on the same edges.

    python -m pytest benchmarks/bench_graph.py --benchmark-group-by=group

``AMALFA_BENCH_GRAPH_NODES`` (default 20000) nodes and five times as many random edges, built
with ResonanceDB (``compare_graph.build``). The networkx side gets the same edges, read through
amalfa's own connection, already in memory: its queries at their fastest, without the load that
``benchmarks/compare_graph.py`` measures (and that dominates a single question).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from compare_graph import build

from amalfa.db import ResonanceDB

NODES = int(os.environ.get("AMALFA_BENCH_GRAPH_NODES", "20000"))
nx = pytest.importorskip("networkx")


@pytest.fixture(scope="module")
def graph_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("graph") / "graph.db"
    build(path, NODES, NODES * 5)
    return path


@pytest.fixture(scope="module")
def db(graph_path: Path):
    with ResonanceDB(graph_path, readonly=True) as database:
        yield database


@pytest.fixture(scope="module")
def nx_graph(db: ResonanceDB):
    graph = nx.DiGraph()
    graph.add_edges_from((s, t) for s, t in db.raw.execute("SELECT source, target FROM edges"))
    return graph


def _ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"docs-note-{rng.randrange(NODES):07d}" for _ in range(count)]


@pytest.mark.benchmark(group="2-hop")
def test_two_hop_warm(benchmark, db: ResonanceDB) -> None:
    roots = iter(_ids(100_000, 1))
    result = benchmark(lambda: db.neighbours(next(roots), depth=2, limit=None))
    assert result.nodes


@pytest.mark.benchmark(group="2-hop")
def test_two_hop_cold(benchmark, graph_path: Path) -> None:
    roots = iter(_ids(100_000, 2))

    def cold() -> int:
        with ResonanceDB(graph_path, readonly=True) as fresh:
            return len(fresh.neighbours(next(roots), depth=2, limit=None).nodes)

    assert benchmark(cold) >= 1


@pytest.mark.benchmark(group="2-hop")
def test_two_hop_networkx_in_memory(benchmark, nx_graph) -> None:
    roots = iter(_ids(100_000, 1))
    assert benchmark(lambda: nx.single_source_shortest_path_length(nx_graph, next(roots),
                                                                   cutoff=2))


@pytest.mark.benchmark(group="shortest path")
def test_shortest_path_warm(benchmark, db: ResonanceDB) -> None:
    pairs = iter(list(zip(_ids(100_000, 3), _ids(100_000, 4))))
    benchmark(lambda: db.shortest_path(*next(pairs)))


@pytest.mark.benchmark(group="shortest path")
def test_shortest_path_networkx_in_memory(benchmark, nx_graph) -> None:
    pairs = iter(list(zip(_ids(100_000, 3), _ids(100_000, 4))))

    def query() -> object:
        source, target = next(pairs)
        try:
            return nx.shortest_path(nx_graph, source, target)
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return None

    benchmark(query)

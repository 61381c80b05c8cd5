"""related_nodes (more like this) and expand_hits (search widened by links) on a real database."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amalfa.db import Node, ResonanceDB
from amalfa.errors import NodeNotFoundError
from amalfa.related import EXPANSION_DECAY, NEIGHBOURS_PER_HIT, expand_hits, related_nodes


def _vector(*values: float) -> np.ndarray:
    vector = np.zeros(8, dtype=np.float32)
    vector[: len(values)] = values
    return vector


@pytest.fixture
def db(tmp_path: Path):
    database = ResonanceDB.create(tmp_path / "r.db", history=False)
    database.insert_nodes([
        Node("a", "document", label="A", embedding=_vector(1, 0)),
        Node("b", "document", label="B", embedding=_vector(0.9, 0.1)),
        Node("c", "document", label="C", embedding=_vector(0, 1)),
        Node("d", "document", label="D", embedding=_vector(0.5, 0.5)),
        Node("bare", "document", label="Bare"),
    ])
    # a -> b -> c, d -> a, and a link to a document never ingested
    for source, target in (("a", "b"), ("b", "c"), ("d", "a"), ("a", "ghost")):
        database.insert_edge(source, target, "links_to")
    yield database
    database.close()


def test_related_ranks_by_the_nodes_own_vector_and_leaves_it_out(db: ResonanceDB) -> None:
    hits = related_nodes(db, "a", 2)
    assert [hit.id for hit in hits] == ["b", "d"]
    assert hits[0].score > hits[1].score


@pytest.mark.parametrize(("call", "error", "words"), [
    (lambda db: related_nodes(db, "zzz"), NodeNotFoundError, "'zzz'"),
    (lambda db: related_nodes(db, "bare"), ValueError, "has no embedding"),
    (lambda db: related_nodes(db, "a", 0), ValueError, "k must be a positive int"),
    (lambda db: expand_hits(db, [("a", 1.0)], 11), ValueError, "from 0 to 10"),
    (lambda db: expand_hits(db, [("a", 1.0)], -1), ValueError, "from 0 to 10"),
    (lambda db: expand_hits(db, [("a", 1.0)], 1, decay=0), ValueError, "decay"),
])
def test_bad_input_is_named(db: ResonanceDB, call, error, words) -> None:
    with pytest.raises(error, match=words):
        call(db)


def test_expansion_scores_decay_per_hop_and_skip_hits_and_missing_nodes(db: ResonanceDB) -> None:
    expanded = expand_hits(db, [("a", 0.8), ("gone", 0.7)], 2)
    by_id = {item.id: item for item in expanded}
    assert set(by_id) == {"b", "d", "c"}  # not the hit itself, not the ghost, not "gone"
    assert by_id["b"].score == pytest.approx(0.8 * EXPANSION_DECAY)
    assert by_id["c"].hops == 2 and by_id["c"].score == pytest.approx(0.8 * EXPANSION_DECAY ** 2)
    assert all(item.expanded_from == "a" for item in expanded)
    assert [item.score for item in expanded] == sorted((i.score for i in expanded), reverse=True)
    assert expand_hits(db, [("a", 0.8)], 0) == []


def test_a_node_reached_from_two_hits_keeps_its_best_score(db: ResonanceDB) -> None:
    expanded = {item.id: item for item in expand_hits(db, [("a", 0.2), ("c", 0.9)], 1)}
    assert expanded["b"].expanded_from == "c"
    assert expanded["b"].score == pytest.approx(0.9 * EXPANSION_DECAY)
    assert "a" not in expanded and "c" not in expanded


def test_a_hub_adds_a_bounded_number_of_neighbours(tmp_path: Path) -> None:
    with ResonanceDB.create(tmp_path / "hub.db", history=False) as db:
        db.insert_nodes(Node(f"n{i}", "document") for i in range(200))
        for i in range(1, 200):
            db.insert_edge("n0", f"n{i}", "links_to")
        assert len(expand_hits(db, [("n0", 1.0)], 1)) == NEIGHBOURS_PER_HIT

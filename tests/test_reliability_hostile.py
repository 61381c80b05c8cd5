"""Hostile input: each gets a clear error or a documented skip, never a crash, a hang or lost data.

Property-based (hypothesis) where the input space is large: ids, vectors, scans, filters, files.
Another client's writes (odd BLOBs, values of the wrong type, text that is not UTF-8) come from a
separate process using the stdlib sqlite3 module, never from this process (two copies of SQLite
must not open one file in one process).

The number of inputs each test tried is kept in ``TRIED`` and recorded with the figures when the
module ends (``hostile_inputs``).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reliability_workers import record_figures, worker_command, worker_env

from amalfa.db import Edge, Node, ResonanceDB, generate_id
from amalfa.errors import DatabaseError, SettingsError
from amalfa.fafcas import to_fafcas
from amalfa.scratchpad import Scratchpad
from amalfa.settings import ScratchpadSettings, Settings, load_settings
from amalfa.stats import StatsLogger, StatsTracker
from amalfa.vectors import VectorEngine

pytestmark = [pytest.mark.reliability]

TRIED: Counter[str] = Counter()
# deadline=None: a slow example on a loaded 2-core machine is not a failure; database=None: no
# .hypothesis folder in the working tree
FAST = settings(deadline=None, max_examples=150, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
THOROUGH = settings(FAST, max_examples=400)

ID_FORM = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
DEEP_JSON = "[" * 100_000  # nesting deeper than the interpreter's recursion limit

# Strings that break naive SQL building, LIKE patterns, shells and paths.
METACHARACTERS = [
    "'", '"', "''", "%", "_", "%%", "\\", "\\'", ";", "--", "/*", "*/", "?", "?1", ":domain",
    "@x", "$1", "[a]", "`", "'; DROP TABLE nodes; --", "knowledge' OR '1'='1", "' OR 1=1 --",
    "%' OR '%'='", "a\x00b", "\x00", "\n", "\r\n", "\t", " ", "NULL", "null", "🙂", "é", "e\u0301",
    "../../etc/passwd", "a/b", "*", "knowledge",
]


@pytest.fixture(scope="module", autouse=True)
def _record_inputs_tried(tmp_path_factory) -> Iterator[None]:
    yield
    record_figures("hostile_inputs", {**dict(sorted(TRIED.items())),
                                      "total": sum(TRIED.values())},
                   base=tmp_path_factory.getbasetemp())


def _foreign(path: Path, statements: list[list[object]]) -> None:
    """Write through the stdlib sqlite3 module in another process."""
    subprocess.run(worker_command("foreign", db=str(path), statements=statements),
                   env=worker_env(), check=True, timeout=60)


# -- generate_id -----------------------------------------------------------------------------------

ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=200)  # surrogates too


@THOROUGH
@given(path=st.one_of(ANY_TEXT, st.sampled_from(METACHARACTERS),
                      st.lists(st.sampled_from(["..", ".", "/", "docs", "A b", ".md", "\\",
                                                "ü", "-", "./", "x.json"]), max_size=12).map(
                          "".join)))
def test_generate_id_gives_a_safe_id_or_a_value_error(path: str) -> None:
    TRIED["generate_id"] += 1
    try:
        node_id = generate_id(path)
    except ValueError as exc:
        assert "empty" in str(exc)
        assert "x" in generate_id(path + "x")  # one letter more is an id
        return
    assert ID_FORM.fullmatch(node_id), node_id  # no '/', '.', '..', spaces or quotes left
    assert generate_id(node_id) == node_id  # an id is its own id


@FAST
@given(value=st.one_of(st.none(), st.integers(), st.floats(), st.binary(), st.lists(st.text()),
                       st.dictionaries(st.text(), st.text())))
def test_generate_id_refuses_what_is_not_a_path(value: object) -> None:
    TRIED["generate_id_non_str"] += 1
    with pytest.raises(ValueError, match="needs a path string"):
        generate_id(value)  # type: ignore[arg-type]


def test_generate_id_of_a_huge_path_is_linear() -> None:
    TRIED["generate_id_huge"] += 1
    path = "./Docs/" + "Aé b/../" * 700_000 + "x.md"  # 5.6 MB
    node_id = generate_id(path)
    assert ID_FORM.fullmatch(node_id) and len(node_id) < len(path)


# -- to_fafcas --------------------------------------------------------------------------------------

def _float_arrays(dtype: type) -> st.SearchStrategy[np.ndarray]:
    width = np.dtype(dtype).itemsize * 8
    return hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=48),
                      elements=st.floats(width=width, allow_nan=True, allow_infinity=True,
                                         allow_subnormal=True))


# float64 values beyond float32's range: numpy warns while casting, then to_fafcas refuses them
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@THOROUGH
@given(arr=st.one_of(_float_arrays(np.float32), _float_arrays(np.float64),
                     _float_arrays(np.float16)))
def test_to_fafcas_gives_unit_rows_or_a_value_error(arr: np.ndarray) -> None:
    TRIED["to_fafcas"] += 1
    before = arr.copy()
    with np.errstate(over="ignore"):
        as32 = arr.astype(np.float32)
    if not np.isfinite(as32).all():
        with pytest.raises(ValueError, match="NaN|inf"):
            to_fafcas(arr)
        return
    out = to_fafcas(arr)
    assert np.array_equal(arr, before, equal_nan=True)  # the input is left alone
    assert out.dtype == np.float32 and out.shape == arr.shape and out.flags.c_contiguous
    assert np.isfinite(out).all()
    rows_in = np.atleast_2d(as32.astype(np.float64))
    for row_in, row_out in zip(rows_in, np.atleast_2d(out)):
        if not row_in.any():
            assert not row_out.any()  # zero stays zero: a failed embedding, not a direction
            continue
        norm = float(np.linalg.norm(row_out.astype(np.float64)))
        assert abs(norm - 1) < 1e-5, norm
        cosine = float(row_in @ row_out) / (float(np.linalg.norm(row_in)) * norm)
        assert cosine > 1 - 1e-5  # the same direction
    if arr.dtype == np.float32:
        inplace = arr.copy()
        assert to_fafcas(inplace, inplace=True) is inplace
        assert np.array_equal(inplace, out)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("value, error", [
    (np.zeros(0, np.float32), ValueError), (np.zeros((3, 0), np.float32), ValueError),
    (np.zeros((2, 2, 2), np.float32), ValueError), (np.float32(1.0), ValueError),
    (np.array(["a", "b"]), TypeError), (np.array([object(), 1], dtype=object), TypeError),
    ([[1.0, 2.0], [3.0]], TypeError), ("1234", TypeError), (None, TypeError),
    (np.array([1e39, 1.0]), ValueError),  # finite in float64, inf in float32
])
def test_to_fafcas_refuses_bad_shapes_and_types(value: object, error: type) -> None:
    TRIED["to_fafcas_bad_shapes"] += 1
    with pytest.raises(error):
        to_fafcas(value)


@pytest.mark.parametrize("shape", [(1 << 22,), (1, 1 << 20), (4096, 256)])
def test_to_fafcas_of_huge_dimensions(shape: tuple[int, ...]) -> None:
    TRIED["to_fafcas_huge"] += 1
    arr = np.full(shape, 3e38, np.float32)  # squares overflow float32: the norm is taken in double
    out = to_fafcas(arr)
    assert np.allclose(np.linalg.norm(np.atleast_2d(out).astype(np.float64), axis=1), 1,
                       atol=1e-5)
    tiny = np.full(shape, 1e-45, np.float32)  # the smallest denormal
    assert np.allclose(np.linalg.norm(np.atleast_2d(to_fafcas(tiny)).astype(np.float64),
                                      axis=1), 1, atol=1e-5)


# -- the scans --------------------------------------------------------------------------------------

SCAN_DIM = 16
SCAN_NODES = 240


@pytest.fixture(scope="module")
def scan_db(tmp_path_factory) -> Iterator[tuple[ResonanceDB, np.ndarray, list[str]]]:
    """A database with random vectors, ten duplicates of one vector (ties) and five zero vectors;
    with the stored matrix (in rowid order) and the ids."""
    path = tmp_path_factory.mktemp("scan") / "scan.db"
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((SCAN_NODES, SCAN_DIM)).astype(np.float32)
    vectors[200:210] = vectors[0]
    vectors[210:215] = 0
    domains = ["alpha", "beta", "'; DROP TABLE nodes; --", "%"]
    db = ResonanceDB.create(path)
    db.insert_nodes(Node(f"scan-{i}", f"type-{i % 3}", domain=domains[i % 4],
                         embedding=vectors[i]) for i in range(SCAN_NODES))
    nodes = db.get_nodes()
    matrix = np.stack([node.embedding for node in nodes]).astype(np.float64)
    yield db, matrix, [node.id for node in nodes]
    db.close()


def _check_hits(hits: list, scores_ref: np.ndarray, tolerance: np.ndarray, ids: list[str],
                limit: int, threshold: float) -> None:
    position = {node_id: i for i, node_id in enumerate(ids)}
    found = [position[hit.id] for hit in hits]
    assert len(found) == len(set(found)) <= limit
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    for rank, (index, score) in enumerate(zip(found, scores)):
        assert score > threshold
        assert abs(score - scores_ref[index]) <= tolerance[index], (score, scores_ref[index])
        if rank and scores[rank - 1] == score:
            assert found[rank - 1] < index  # ties go to the earlier-inserted node
    missed = np.ones(len(ids), bool)
    missed[found] = False
    if len(found) == limit:  # full: nothing left out scores clearly better than the last hit
        bound = scores_ref[found[-1]] + tolerance[found[-1]]
        assert (scores_ref[missed] <= bound + tolerance[missed]).all()
    else:  # not full: everything left out is at or below the threshold
        assert (scores_ref[missed] <= threshold + tolerance[missed]).all()


@FAST
@given(query=hnp.arrays(np.float32, st.integers(0, 24),
                        elements=st.floats(width=32, allow_nan=True, allow_infinity=True,
                                           allow_subnormal=True, min_value=None)),
       limit=st.integers(1, 300),
       threshold=st.one_of(st.just(0.0), st.floats(-3, 3)))
def test_scans_find_the_true_top_k_or_refuse_the_query(scan_db, query: np.ndarray, limit: int,
                                                       threshold: float) -> None:
    TRIED["scans"] += 1
    db, matrix, ids = scan_db
    engine = VectorEngine(db)
    if query.shape[0] != SCAN_DIM or not np.isfinite(query).all():
        for use_cache in (True, False):
            with pytest.raises(ValueError, match="dimension|NaN|inf"):
                engine.search_by_vector(query, limit, threshold=threshold, use_cache=use_cache)
        with pytest.raises(ValueError, match="dimension|NaN|inf"):
            engine.scan_sqlite(query, limit)
        return
    assume(np.abs(query).max() < 1e18)  # beyond, float32 dot products overflow (see below)
    q64 = query.astype(np.float64)
    scores_ref = matrix @ q64
    tolerance = 1e-5 * (np.abs(matrix) @ np.abs(q64)) + 1e-30
    cached = engine.search_by_vector(query, limit, threshold=threshold, use_cache=True)
    direct = engine.search_by_vector(query, limit, threshold=threshold, use_cache=False)
    assert [h.id for h in cached] == [h.id for h in direct]
    _check_hits(cached, scores_ref, tolerance, ids, limit, threshold)
    scores, _ = engine.scan_sqlite(query, limit, threshold=threshold)
    assert np.array_equal(scores, [h.score for h in cached])


def test_scans_of_queries_whose_dot_products_overflow_do_not_crash(scan_db) -> None:
    """A finite query with huge components overflows float32 dot products (inf, or NaN from
    inf - inf). Queries are not normalised, so the ranking is then meaningless; the scans still
    return at most ``limit`` hits and raise nothing."""
    db, _, _ = scan_db
    engine = VectorEngine(db)
    for query in (np.full(SCAN_DIM, 3e38, np.float32), np.tile([3e38, -3e38], SCAN_DIM // 2)):
        TRIED["scans_overflow"] += 1
        for use_cache in (True, False):
            hits = engine.search_by_vector(query.astype(np.float32), 7, use_cache=use_cache,
                                           threshold=-math.inf)
            assert len(hits) <= 7


@pytest.mark.parametrize("limit, error", [(0, ValueError), (-1, ValueError), (True, TypeError),
                                          (1.5, TypeError), ("3", TypeError), (None, TypeError)])
def test_scans_refuse_bad_limits(scan_db, limit: object, error: type) -> None:
    TRIED["scans_bad_limits"] += 1
    engine = VectorEngine(scan_db[0])
    with pytest.raises(error):
        engine.search_by_vector(np.ones(SCAN_DIM), limit)  # type: ignore[arg-type]
    with pytest.raises(error):
        engine.scan_sqlite(np.ones(SCAN_DIM), limit)  # type: ignore[arg-type]


def test_scans_refuse_a_nan_threshold_and_accept_infinite_ones(scan_db) -> None:
    TRIED["scans_thresholds"] += 3
    engine = VectorEngine(scan_db[0])
    with pytest.raises(ValueError, match="NaN"):
        engine.search_by_vector(np.ones(SCAN_DIM), 5, threshold=math.nan)
    assert engine.search_by_vector(np.ones(SCAN_DIM), 5, threshold=math.inf) == []
    assert len(engine.search_by_vector(np.ones(SCAN_DIM), 500, threshold=-math.inf)) == SCAN_NODES


def test_scans_of_a_huge_dimension(tmp_path: Path) -> None:
    TRIED["scans_huge_dimension"] += 2
    dim = 1 << 16
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((12, dim)).astype(np.float32)
    with ResonanceDB.create(tmp_path / "wide.db") as db:
        db.insert_nodes(Node(f"w{i}", "wide", embedding=vectors[i]) for i in range(12))
        engine = VectorEngine(db)
        for use_cache in (True, False):
            hits = engine.search_by_vector(vectors[7], 3, use_cache=use_cache)
            assert hits[0].id == "w7"
        with pytest.raises(ValueError, match="dimension"):
            engine.search_by_vector(np.ones(1 << 20, np.float32), 3)


_HUGE_LIMIT_SCRIPT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # 3 GB of address space
import numpy as np
from amalfa.db import Node, ResonanceDB
from amalfa.vectors import VectorEngine
db = ResonanceDB.create(":memory:")
db.insert_nodes([Node(f"n{i}", "d", embedding=np.arange(1, 9) + i) for i in range(10)])
engine = VectorEngine(db)
for use_cache in (True, False):
    assert len(engine.search_by_vector(np.ones(8), 10**9, use_cache=use_cache)) == 10
print("ok")
"""


@pytest.mark.timeout(120)
def test_a_huge_limit_costs_memory_in_proportion_to_the_rows_not_the_limit() -> None:
    TRIED["scans_huge_limit"] += 2
    result = subprocess.run([sys.executable, "-c", _HUGE_LIMIT_SCRIPT], env=worker_env(),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


# -- another client's BLOBs, values and bytes -------------------------------------------------------

FOREIGN_DIM = 8


@pytest.fixture
def foreign_db(tmp_path: Path) -> Iterator[tuple[Path, ResonanceDB, np.ndarray]]:
    path = tmp_path / "shared.db"
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((30, FOREIGN_DIM)).astype(np.float32)
    db = ResonanceDB.create(path)
    db.insert_nodes(Node(f"good-{i}", "doc", embedding=vectors[i]) for i in range(20))
    db.insert_nodes(Node(f"bad-{i}", "doc", embedding=vectors[20 + i]) for i in range(10))
    yield path, db, vectors
    db.close()


# what another client may leave in the embedding column: wrong lengths and wrong types
ODD_BLOBS = {"bad-0": b"", "bad-1": b"\x01", "bad-2": b"\x01\x02\x03", "bad-3": bytes(31),
             "bad-4": bytes(33), "bad-5": bytes(36), "bad-6": bytes(4 * FOREIGN_DIM - 4)}
NON_BLOBS = {"bad-7": ("CAST(? AS TEXT)", "41" * (4 * FOREIGN_DIM)),  # TEXT of the right length
             "bad-8": ("?", 12345), "bad-9": ("?", 1.5)}


def _spoil_embeddings(path: Path, non_blobs: bool = True) -> None:
    statements: list[list[object]] = [
        ["UPDATE nodes SET embedding = ? WHERE id = ?", [{"hex": blob.hex()}, node_id]]
        for node_id, blob in ODD_BLOBS.items()]
    if non_blobs:
        for node_id, (expression, value) in NON_BLOBS.items():
            bound = {"hex": value} if expression.startswith("CAST") else value
            statements.append([f"UPDATE nodes SET embedding = {expression} WHERE id = ?",
                               [bound, node_id]])
    _foreign(path, statements)


def test_odd_blobs_from_another_client_are_skipped_counted_and_kept(foreign_db) -> None:
    path, db, vectors = foreign_db
    engine = VectorEngine(db)
    assert len(engine.matrix) == 30  # cached before the other client writes
    _spoil_embeddings(path)
    TRIED["foreign_embeddings"] += len(ODD_BLOBS) + len(NON_BLOBS)
    for use_cache in (True, False):
        for i in range(20):  # every good node is still found, first, by its own vector
            hits = engine.search_by_vector(vectors[i], 30, use_cache=use_cache)
            assert hits[0].id == f"good-{i}"
            assert {hit.id for hit in hits} <= {f"good-{j}" for j in range(20)}
            assert engine.last_skipped == 10  # the documented skip: counted, not hidden
    _, rowids = engine.scan_sqlite(vectors[0], 100, threshold=-math.inf)
    assert len(rowids) == 20 and engine.last_skipped == 10
    assert db.get_stats().nodes == 30
    # nothing is lost: every row is listed (without its BLOB), and reads of a wrong-length BLOB
    # name the node
    assert len(db.get_nodes(exclude_content=True)) == 30
    for node_id, blob in ODD_BLOBS.items():
        if len(blob) % 4:
            with pytest.raises(DatabaseError, match=node_id):
                db.get_node(node_id)
        else:  # a whole number of floats, of another dimension: returned as stored
            assert db.get_node(node_id).embedding.shape == (len(blob) // 4,)
    assert db.raw.execute("PRAGMA integrity_check") == [("ok",)]


def test_a_non_blob_embedding_from_another_client_reads_as_a_clear_error(foreign_db) -> None:
    path, db, _ = foreign_db
    _spoil_embeddings(path)
    TRIED["foreign_non_blob_reads"] += len(NON_BLOBS)
    for node_id in NON_BLOBS:
        with pytest.raises(DatabaseError, match=node_id):
            db.get_node(node_id)


def test_a_right_length_blob_of_inf_or_nan_is_skipped_and_counted(foreign_db) -> None:
    path, db, vectors = foreign_db
    engine = VectorEngine(db)
    inf_row = np.zeros(FOREIGN_DIM, np.float32)
    inf_row[0] = np.inf
    _foreign(path, [
        ["UPDATE nodes SET embedding = ? WHERE id = 'bad-0'", [{"hex": inf_row.tobytes().hex()}]],
        ["UPDATE nodes SET embedding = ? WHERE id = 'bad-1'",
         [{"hex": np.full(FOREIGN_DIM, np.nan, np.float32).tobytes().hex()}]]])
    TRIED["foreign_non_finite"] += 2
    query = np.abs(vectors[3]) + 0.1  # positive in the inf column
    for use_cache in (True, False):
        hits = engine.search_by_vector(query, 5, use_cache=use_cache)
        assert {"bad-0", "bad-1"}.isdisjoint(hit.id for hit in hits), [h.id for h in hits]
        assert engine.last_skipped == 2


def test_text_that_is_not_utf8_from_another_client_reads_with_replacement(foreign_db) -> None:
    path, db, vectors = foreign_db
    _foreign(path, [
        [("UPDATE nodes SET title = CAST(? AS TEXT), summary = CAST(? AS TEXT), "
          "domain = CAST(? AS TEXT), hash = CAST(? AS TEXT) WHERE id = 'good-1'"),
         [{"hex": "ff41fe"}, {"hex": "c3"}, {"hex": "80"}, {"hex": "eda080"}]],
        ["UPDATE nodes SET meta = CAST(? AS TEXT) WHERE id = 'good-2'", [{"hex": "7b22ff"}]],
    ])
    TRIED["foreign_text"] += 5
    node = db.get_node("good-1")
    assert node.label == "\ufffdA\ufffd" and node.summary == "\ufffd" and node.domain == "\ufffd"
    assert db.get_nodes(domain="\ufffd") == []  # the stored bytes are not U+FFFD's
    with pytest.raises(DatabaseError, match="good-2.*meta"):
        db.get_node("good-2")  # meta that is not JSON is an error naming the node and field
    assert db.update_node_date("good-1", "2025-01-01")  # the history trigger copes as well
    assert db.get_history("good-1")[-1].new_value["label"] == "\ufffdA\ufffd"
    hits = VectorEngine(db).search_by_vector(vectors[2], 3)  # hydration of bad meta: {} instead
    assert hits[0].id == "good-2" and hits[0].meta == {}
    assert db.raw.execute("PRAGMA integrity_check") == [("ok",)]


# -- text: huge, NUL, surrogates ---------------------------------------------------------------------


def test_five_megabyte_text_fields_round_trip_with_their_history(tmp_path: Path) -> None:
    TRIED["large_text"] += 4
    summary = "ünïcode summary " * (5 * 2**20 // 16)
    meta = {"notes": "x" * (5 * 2**20), "nested": {"list": list(range(1000))}}
    label = "L" * 2**20
    with ResonanceDB.create(tmp_path / "big.db") as db:
        db.insert_node(Node("big", "doc", label=label, summary=summary, meta=meta,
                            embedding=np.ones(4)))
        node = db.get_node("big")
        assert node.summary == summary and node.meta == meta and node.label == label
        db.insert_nodes([Node("big", "doc", summary=summary[::-1], meta=meta,
                              embedding=np.ones(4))])
        history = db.get_history("big")
        assert [h.action for h in history] == ["insert", "update"]
        assert history[1].old_value["summary"] == summary
        assert history[1].new_value["summary"] == summary[::-1]
        hits = VectorEngine(db).search_by_vector(np.ones(4), 1)
        assert hits[0].id == "big" and hits[0].meta == meta
        assert db.raw.execute("PRAGMA integrity_check") == [("ok",)]


@FAST
@given(text=st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60).map(
    lambda s: s + "\x00" + s))
def test_text_with_nul_characters_round_trips_exactly(scan_db, text: str) -> None:
    TRIED["nul_text"] += 1
    db = scan_db[0]
    node = Node(f"nul-{text}", f"t{text}", label=text, domain=f"d{text}", summary=text,
                meta={text: text})
    with db.transaction():
        db.insert_node(node)
        assert db.get_node(node.id) == node
        assert db.get_nodes(domain=node.domain) == [node]
        assert db.delete_node(node.id)


def test_a_lone_surrogate_is_refused_and_the_batch_rolled_back(tmp_path: Path) -> None:
    TRIED["surrogates"] += 3
    with ResonanceDB.create(tmp_path / "s.db") as db:
        db.insert_node(Node("kept", "doc"))
        with pytest.raises(UnicodeEncodeError):
            db.insert_node(Node("x", "doc", summary="bad \udcff byte"))
        nodes = [Node(f"n{i}", "doc") for i in range(1000)]
        nodes[600] = Node("n600", "doc", label="\ud800")
        with pytest.raises(UnicodeEncodeError):
            db.insert_nodes(nodes)
        with pytest.raises(UnicodeEncodeError):
            db.get_nodes(domain="\ud800")
        assert [n.id for n in db.get_nodes()] == ["kept"]  # nothing half-written


# -- SQL metacharacters in every filter ---------------------------------------------------------------


@pytest.fixture(scope="module")
def filter_db(tmp_path_factory) -> Iterator[tuple[ResonanceDB, list[Node], list[Edge]]]:
    path = tmp_path_factory.mktemp("filters") / "filters.db"
    rng = np.random.default_rng(9)
    db = ResonanceDB.create(path)
    nodes = []
    for i, word in enumerate(METACHARACTERS):
        nodes.append(Node(f"{word}#{i}", word, domain=METACHARACTERS[-1 - i], label=word,
                          embedding=rng.standard_normal(8)))
    db.insert_nodes(nodes)
    edges = [Edge(f"{word}#{i}", word, METACHARACTERS[(i + 1) % len(METACHARACTERS)])
             for i, word in enumerate(METACHARACTERS)]
    for edge in edges:
        db.insert_edge(edge.source, edge.target, edge.type)
    yield db, db.get_nodes(), edges
    db.close()


FILTERS = st.one_of(st.sampled_from(METACHARACTERS),
                    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30),
                    st.lists(st.sampled_from(METACHARACTERS), max_size=4).map("".join))


@THOROUGH
@given(domain=st.one_of(st.none(), FILTERS), kind=st.one_of(st.none(), FILTERS), word=FILTERS)
def test_filters_match_exactly_whatever_they_contain(filter_db, domain, kind, word) -> None:
    TRIED["sql_filters"] += 1
    db, stored, edges = filter_db
    expected = [n.id for n in stored if (domain is None or n.domain == domain)
                and (kind is None or n.type == kind)]
    assert [n.id for n in db.get_nodes(domain=domain, type=kind)] == expected
    assert [n.id for n in db.get_nodes(domain=domain, type=kind, exclude_content=True)] == expected
    engine = VectorEngine(db)
    hits = engine.search_by_vector(np.ones(8), 100, domain=domain, type=kind,
                                   threshold=-math.inf)
    assert sorted(h.id for h in hits) == sorted(expected)
    _, rowids = engine.scan_sqlite(np.ones(8), 100, domain=domain, type=kind)
    assert len(rowids) == len(expected)
    if kind is not None:
        assert [n.id for n in db.get_nodes_by_type(kind)] == [
            n.id for n in stored if n.type == kind]
    is_node = any(n.id == word for n in stored)
    assert db.get_node(word) == next((n for n in stored if n.id == word), None)
    assert db.get_node_hash(word) is None
    assert sorted(db.get_edges(word, direction="both"), key=repr) == sorted(
        [e for e in edges if e.source == word]
        + [e for e in edges if e.target == word and e.source != word], key=repr)
    assert [h.action for h in db.get_history(word, entity_type="node")] == (
        ["insert"] if is_node else [])
    assert db.get_stats().nodes == len(stored)


def test_deleting_with_hostile_ids_removes_exactly_that_node(filter_db, tmp_path: Path) -> None:
    db, stored, _ = filter_db
    path = tmp_path / "copy.db"
    db.raw.backup_to(str(path))
    with ResonanceDB(path) as copy:
        for node in stored[::2]:
            TRIED["sql_delete"] += 1
            assert copy.delete_node(node.id)
            assert not copy.delete_node(node.id)
        assert [n.id for n in copy.get_nodes()] == [n.id for n in stored[1::2]]
        assert copy.raw.execute("PRAGMA integrity_check") == [("ok",)]


# -- the scratchpad ---------------------------------------------------------------------------------

HEX12 = re.compile(r"[0-9a-f]{12}")
SCRATCH_IDS = ["../../etc/passwd", "0123456789ab/../x", "/etc/passwd", "..", ".", "",
               "0123456789ab\n", "0123456789AB", "0123456789a", "0123456789abc",
               "0123456789ab.json", "..\\..\\x", "0123456789a/", "victim", "0123456789ab\x00"]


@pytest.fixture
def scratchpad(tmp_path: Path) -> tuple[Scratchpad, Path]:
    folder = tmp_path / "cache" / "scratchpad"
    victim = tmp_path / "victim.json"
    victim.write_text("must survive", encoding="utf-8")
    (tmp_path / "cache" / "victim.json").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache" / "victim.json").write_text("must survive", encoding="utf-8")
    pad = Scratchpad(folder=folder, config=ScratchpadSettings(threshold_bytes=10))
    return pad, tmp_path


@FAST
@given(entry_id=st.one_of(st.sampled_from(SCRATCH_IDS), ANY_TEXT,
                          st.text("0123456789abcdef/.\\", min_size=10, max_size=14)))
def test_scratchpad_ids_never_reach_outside_the_folder(scratchpad, entry_id: str) -> None:
    TRIED["scratchpad_ids"] += 1
    pad, root = scratchpad
    if HEX12.fullmatch(entry_id):
        assert pad.read(entry_id) is None and pad.delete(entry_id) is False
        return
    for call in (pad.read, pad.read_content, pad.delete):
        with pytest.raises(ValueError, match="invalid scratchpad id"):
            call(entry_id)
    assert (root / "victim.json").read_text() == "must survive"
    assert (root / "cache" / "victim.json").read_text() == "must survive"


@pytest.mark.parametrize("entry_id", [None, 123, b"0123456789ab", Path("0123456789ab")])
def test_scratchpad_refuses_ids_that_are_not_strings(scratchpad, entry_id: object) -> None:
    TRIED["scratchpad_ids"] += 1
    with pytest.raises(ValueError, match="invalid scratchpad id"):
        scratchpad[0].read(entry_id)  # type: ignore[arg-type]


def test_damaged_scratchpad_entries_read_as_missing_and_stay_on_disk(scratchpad) -> None:
    pad, _ = scratchpad
    good = pad.maybe_cache("tool", "a large enough output " * 10)
    good_id = re.search(r'read_content\("([0-9a-f]{12})"\)', good).group(1)
    pad.folder.mkdir(parents=True, exist_ok=True)
    damaged = {
        "000000000001": b"\xff\xfe not utf-8",
        "000000000002": b"{not json",
        "000000000003": b"[1, 2, 3]",
        "000000000004": json.dumps({"id": "000000000004", "tool": 1}).encode(),
        "000000000005": json.dumps({"id": "000000000005", "tool": "t", "timestamp": "x",
                                    "sizeBytes": 3, "contentType": "text", "preview": "p",
                                    "content": "not the content of this id"}).encode(),
        "000000000006": b"",
    }
    for entry_id, data in damaged.items():
        (pad.folder / f"{entry_id}.json").write_bytes(data)
    (pad.folder / "000000000007.json").mkdir()  # a folder where an entry should be
    TRIED["scratchpad_damaged"] += len(damaged) + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for entry_id in damaged:
            assert pad.read(entry_id) is None
        assert [info.id for info in pad.list()] == [good_id]
        assert pad.stats().entries == 1
    assert len(caught) >= len(damaged)
    with pytest.raises(IsADirectoryError):  # a folder squatting an entry's name: an OSError
        pad.read("000000000007")                # naming the path (list and prune pass it over)
    for entry_id, data in damaged.items():  # read and list never delete what they cannot read
        assert (pad.folder / f"{entry_id}.json").read_bytes() == data
    pad.prune()
    assert pad.read_content(good_id) == "a large enough output " * 10


def test_a_deeply_nested_scratchpad_entry_reads_as_damaged(scratchpad) -> None:
    pad, _ = scratchpad
    pad.folder.mkdir(parents=True, exist_ok=True)
    (pad.folder / "00000000000a.json").write_text(DEEP_JSON)
    TRIED["scratchpad_deep_json"] += 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pad.read("00000000000a") is None
    assert any("damaged" in str(w.message) for w in caught)


# -- settings, stats history, run log ---------------------------------------------------------------

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
SETTINGS_KEYS = ["sources", "source", "excludePatterns", "database", "embeddings", "scratchpad",
                 "watch", "$schema", "model", "dimensions", "thresholdBytes", "debounce",
                 "debounceMs", "enabled"]
SETTINGS_DOCS = st.recursive(
    st.dictionaries(st.sampled_from(SETTINGS_KEYS), JSON_VALUES, max_size=6),
    lambda inner: st.dictionaries(st.sampled_from(SETTINGS_KEYS),
                                  st.one_of(inner, JSON_VALUES), max_size=6), max_leaves=10)


def _fresh_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="amalfa-hostile-"))


@THOROUGH
@given(content=st.one_of(st.binary(max_size=300), SETTINGS_DOCS.map(lambda d: json.dumps(d)
                                                                    .encode()),
                         JSON_VALUES.map(lambda v: json.dumps(v).encode())))
def test_corrupt_settings_files_give_settings_errors(content: bytes) -> None:
    TRIED["settings_files"] += 1
    folder = _fresh_dir()
    try:
        path = folder / "amalfa.settings.json"
        path.write_bytes(content)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # unknown keys warn, by design
            try:
                loaded = load_settings(path)
            except SettingsError as exc:
                assert str(path) in str(exc)
                return
        assert isinstance(loaded, Settings)
        assert loaded.embeddings.dimensions >= 1 and loaded.database
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("content, message", [
    (b"\xef\xbb\xbf{}", "BOM"), (b"{\"database\": 1e999}", "database must be"),
    (b"{\"embeddings\": {\"dimensions\": 1e400}}", "embeddings.dimensions must be"),
    (b"NaN", "must be a JSON object"), (b"\x00" * 64, "invalid JSON"),
    (b"\xff\xfe{}", "not UTF-8"), (b"{\"scratchpad\": []}", "scratchpad must be an object"),
    (b"{\"sources\": \"docs\"}", "sources must be a list"),
])
def test_odd_settings_files_give_settings_errors(tmp_path: Path, content: bytes,
                                                 message: str) -> None:
    TRIED["settings_files"] += 1
    path = tmp_path / "amalfa.settings.json"
    path.write_bytes(content)
    with pytest.raises(SettingsError, match=message):
        load_settings(path)


def test_a_folder_in_place_of_the_settings_file_is_a_settings_error(tmp_path: Path) -> None:
    TRIED["settings_files"] += 1
    (tmp_path / "amalfa.settings.json").mkdir()
    with pytest.raises(SettingsError, match="cannot be read"):
        load_settings(tmp_path / "amalfa.settings.json")


@THOROUGH
@given(content=st.one_of(st.binary(max_size=300), JSON_VALUES.map(lambda v: json.dumps(v)
                                                                  .encode()),
                         st.builds(lambda snaps: json.dumps({"snapshots": snaps}).encode(),
                                   st.lists(JSON_VALUES, max_size=3))))
def test_a_corrupt_stats_history_is_moved_aside_not_lost(content: bytes) -> None:
    TRIED["stats_history_files"] += 1
    folder = _fresh_dir()
    try:
        path = folder / "stats-history.json"
        path.write_bytes(content)
        tracker = StatsTracker(path=path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            snapshots = tracker.all()
        aside = list(folder.glob("stats-history.json.corrupt-*"))
        if aside:  # unreadable: a fresh history, the old bytes kept beside it, a warning
            assert snapshots == [] and aside[0].read_bytes() == content
            assert any("corrupt" in str(w.message) for w in caught)
        else:  # readable: left as it was
            assert path.read_bytes() == content
        tracker.record({"nodes": 3, "edges": 1, "embeddings": 3, "db_size_mb": 0.1})
        assert tracker.latest().nodes == 3
    finally:
        shutil.rmtree(folder)


@FAST
@given(lines=st.lists(st.one_of(st.binary(max_size=60).filter(lambda b: b"\n" not in b),
                                JSON_VALUES.map(lambda v: json.dumps(v).encode())), max_size=8))
def test_a_garbled_run_log_yields_its_good_lines(lines: list[bytes]) -> None:
    TRIED["run_log_files"] += 1
    folder = _fresh_dir()
    try:
        path = folder / "runs.jsonl"
        logger = StatsLogger(path=path)
        logger.log_run("first", files=1)
        with open(path, "ab") as handle:
            handle.write(b"\n".join(lines) + b"\n")
        logger.log_run("last", files=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            runs = list(logger.runs())
        assert runs[0]["operation"] == "first" and runs[-1]["operation"] == "last"
        assert all(isinstance(run, dict) for run in runs)
    finally:
        shutil.rmtree(folder)


# -- deeply nested JSON: json.loads raises RecursionError (not a JSONDecodeError/ValueError) on JSON
# nested deeper than the recursion limit; every reader of JSON treats it as malformed JSON ----------


def test_deeply_nested_settings_give_a_settings_error(tmp_path: Path) -> None:
    TRIED["deep_json"] += 1
    path = tmp_path / "amalfa.settings.json"
    path.write_text(DEEP_JSON)
    with pytest.raises(SettingsError):
        load_settings(path)


def test_a_deeply_nested_stats_history_is_moved_aside(tmp_path: Path) -> None:
    TRIED["deep_json"] += 1
    path = tmp_path / "stats-history.json"
    path.write_text(DEEP_JSON)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert StatsTracker(path=path).all() == []
    assert any("corrupt" in str(w.message) for w in caught)


def test_a_deeply_nested_run_log_line_is_skipped(tmp_path: Path) -> None:
    TRIED["deep_json"] += 1
    path = tmp_path / "runs.jsonl"
    path.write_text('{"operation": "a"}\n' + DEEP_JSON + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert [run["operation"] for run in StatsLogger(path=path).runs()] == ["a"]


def test_deeply_nested_meta_from_another_client_reads_as_a_clear_error(foreign_db) -> None:
    path, db, vectors = foreign_db
    _foreign(path, [["UPDATE nodes SET meta = ? WHERE id = 'good-4'", [DEEP_JSON]]])
    TRIED["deep_json"] += 2
    hits = VectorEngine(db).search_by_vector(vectors[4], 1)
    assert hits[0].id == "good-4" and hits[0].meta == {}
    with pytest.raises(DatabaseError, match="good-4"):
        db.get_node("good-4")



def test_a_deeply_nested_baseline_gives_a_baseline_error(tmp_path: Path) -> None:
    from amalfa.stats import BaselineError, IngestionStats

    TRIED["deep_json"] += 1
    path = tmp_path / "ingestion-baseline.json"
    path.write_text(DEEP_JSON)
    with pytest.raises(BaselineError):
        IngestionStats(settings=Settings(root=tmp_path)).load_baseline(path)


def test_a_deeply_nested_daemon_pid_file_reads_as_no_daemon(tmp_path: Path) -> None:
    from amalfa import daemon

    TRIED["deep_json"] += 1
    pid_file = tmp_path / ".amalfa" / "runtime" / "vector-daemon.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(DEEP_JSON)
    assert daemon.status(root=tmp_path)["running"] is False

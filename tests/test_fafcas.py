"""FAFCAS kernels against float64 numpy references: normalisation, dot, top-k, SQLite scans."""

from __future__ import annotations

import numpy as np
import pytest

from amalfa import dot, to_fafcas
from amalfa._core import fafcas as kernels
from amalfa._core.connection import Connection
from amalfa.fafcas import as_query, from_blob, to_blob

RNG = np.random.default_rng(20261127)


def reference_topk(matrix, query, k, threshold=-np.inf):
    """Brute force in float64: scores descending, ties to the lower index."""
    scores = matrix.astype(np.float64) @ query.astype(np.float64)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    order = [i for i in order if scores[i] > threshold][:k]
    return scores[order], np.array(order, dtype=np.int64)


def unit_rows(n, d):
    m = RNG.standard_normal((n, d)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


# -- normalisation ----------------------------------------------------------------------------

@pytest.mark.parametrize("d", [1, 3, 16, 17, 384, 4096])
def test_to_fafcas_gives_unit_length_matching_numpy(d):
    v = RNG.standard_normal(d).astype(np.float32) * 7
    out = to_fafcas(v)
    expected = v.astype(np.float64) / np.linalg.norm(v.astype(np.float64))
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
    assert abs(np.linalg.norm(out.astype(np.float64)) - 1) < 1e-6
    assert not np.shares_memory(out, v)  # a new array unless asked


def test_to_fafcas_in_place_and_batch():
    m = RNG.standard_normal((50, 384)).astype(np.float32)
    same = to_fafcas(m, inplace=True)
    assert same is m
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1, rtol=1e-6)
    big = RNG.standard_normal((3000, 384)).astype(np.float32)
    expected = big / np.linalg.norm(big, axis=1, keepdims=True)
    kernels.normalize_rows_inplace(big, 2)  # the threaded path
    np.testing.assert_allclose(big, expected, rtol=1e-5, atol=1e-7)


def test_zero_vector_stays_zero_and_rows_are_independent():
    m = np.zeros((3, 8), dtype=np.float32)
    m[1, 2] = 5
    out = to_fafcas(m)
    assert not out[0].any() and not out[2].any()
    assert out[1, 2] == 1


@pytest.mark.parametrize("scale", [1e-40, 1e-30, 1e30, 6e37])
def test_denormal_and_huge_values_normalise(scale):
    v = np.array([3, 4, 0, 0], dtype=np.float32) * np.float32(scale)
    out = to_fafcas(v)
    np.testing.assert_allclose(out, [0.6, 0.8, 0, 0], rtol=1e-5)
    assert np.isfinite(out).all()


def test_single_denormal_component():
    v = np.zeros(384, dtype=np.float32)
    v[7] = np.float32(1e-45)  # the smallest positive denormal
    out = to_fafcas(v)
    assert out[7] == 1 and np.count_nonzero(out) == 1


@pytest.mark.parametrize("bad, message", [
    (np.array([1, np.nan], dtype=np.float32), "NaN"),
    (np.array([1, np.inf], dtype=np.float32), "inf"),
    (np.zeros((2, 2, 2), dtype=np.float32), "1-D"),
    (np.zeros(0, dtype=np.float32), "dimension 0"),
])
def test_to_fafcas_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        to_fafcas(bad)


def test_to_fafcas_rejects_non_numbers():
    with pytest.raises(TypeError):
        to_fafcas(["a", "b"])
    with pytest.raises(TypeError, match="inplace"):
        to_fafcas(np.ones(4, dtype=np.float64), inplace=True)


def test_blob_round_trip_is_float32_little_endian():
    v = to_fafcas([3.0, 4.0])
    blob = to_blob([3.0, 4.0])
    assert bytes(blob) == np.array([0.6, 0.8], dtype="<f4").tobytes()
    np.testing.assert_array_equal(from_blob(bytes(blob), dim=2), v)
    with pytest.raises(ValueError, match="whole number"):
        from_blob(b"\x00" * 7)
    with pytest.raises(ValueError, match="expected 3-d"):
        from_blob(bytes(blob), dim=3)


# -- dot ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [1, 5, 384, 4096])
def test_dot_matches_float64(d):
    a = RNG.standard_normal(d).astype(np.float32)
    b = RNG.standard_normal(d).astype(np.float32)
    expected = float(a.astype(np.float64) @ b.astype(np.float64))
    assert dot(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_dot_with_huge_values_does_not_overflow():
    a = np.full(16, 1e30, dtype=np.float32)
    assert dot(a, a) == pytest.approx(16 * 1e60, rel=1e-6)


def test_dot_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match=r"dimensions differ \(3 and 4\)"):
        dot(np.ones(3), np.ones(4))


def test_scan_kernel_dot_is_within_1e5_of_float64_for_unit_vectors():
    m = unit_rows(2000, 4096)
    q = unit_rows(1, 4096)[0]
    got = kernels.scores_matrix(m, q)
    expected = m.astype(np.float64) @ q.astype(np.float64)
    assert np.max(np.abs(got - expected)) < 1e-5


# -- top-k over a matrix --------------------------------------------------------------------------

@pytest.mark.parametrize("n, d, k", [(1, 1, 1), (10, 3, 20), (1000, 384, 10), (5000, 384, 50),
                                     (300, 4096, 7)])
def test_topk_matrix_matches_brute_force(n, d, k):
    m = unit_rows(n, d)
    q = unit_rows(1, d)[0]
    scores, index = kernels.topk_matrix(m, q, k)
    ref_scores, ref_index = reference_topk(m, q, k)
    assert len(index) == min(n, k)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    # identical order except where two references are within float error of each other
    for got, want, s in zip(index, ref_index, ref_scores):
        if got != want:
            assert abs(float(m[got] @ q) - s) < 1e-5


def test_topk_threads_do_not_change_the_answer():
    m = unit_rows(40000, 64)  # large enough for the parallel path
    q = unit_rows(1, 64)[0]
    one = kernels.topk_matrix(m, q, 25, n_threads=1)
    many = kernels.topk_matrix(m, q, 25, n_threads=4)
    np.testing.assert_array_equal(one[1], many[1])
    np.testing.assert_array_equal(one[0], many[0])


def test_ties_across_the_parallel_blocks_still_go_to_the_lowest_rows():
    """Blocks of rows go to whichever thread is free: the answer must not depend on which."""
    base = unit_rows(4, 32)
    m = np.ascontiguousarray(np.tile(base, (10000, 1)))  # 40,000 rows, every score tied 10,000x
    q = base[2].copy()
    codes = np.empty(m.shape, np.int8)
    scales = np.empty(len(m), np.float32)
    kernels.quantize_rows(m, codes, scales, 0, len(m))
    q_codes, q_scale = kernels.quantize_query(q)
    want = np.arange(2, 4 * 30, 4)  # the 30 lowest rows holding base[2]
    for threads in (1, 2, 3, 8):
        assert kernels.topk_matrix(m, q, 30, n_threads=threads)[1].tolist() == want.tolist()
        got = kernels.topk_int8(codes, scales, q_codes, q_scale, 30, -np.inf, threads)[1]
        assert got.tolist() == want.tolist()


def test_ties_break_to_the_lower_index():
    m = np.zeros((10, 4), dtype=np.float32)
    m[:, 0] = 1.0
    q = np.array([1, 0, 0, 0], dtype=np.float32)
    for threads in (1, 3):
        scores, index = kernels.topk_matrix(m, q, 4, n_threads=threads)
        assert index.tolist() == [0, 1, 2, 3]


def test_threshold_is_strict_and_zero_query_finds_nothing():
    m = unit_rows(100, 8)
    scores, index = kernels.topk_matrix(m, np.zeros(8, dtype=np.float32), 5, 0.0)
    assert len(index) == 0
    scores, index = kernels.topk_matrix(m, m[3], 100, 0.5)
    assert (scores > 0.5).all() and 3 in index.tolist()


def test_topk_batch_matches_single_queries():
    m = unit_rows(3000, 96)
    queries = unit_rows(6, 96)
    scores, index, counts = kernels.topk_matrix_batch(m, queries, 10)
    assert counts.tolist() == [10] * 6
    for j in range(6):
        s1, i1 = kernels.topk_matrix(m, queries[j], 10)
        np.testing.assert_array_equal(index[j], i1)
        np.testing.assert_allclose(scores[j], s1, atol=1e-6)


def test_topk_on_empty_matrix():
    scores, index = kernels.topk_matrix(np.zeros((0, 4), dtype=np.float32),
                                        np.ones(4, dtype=np.float32), 3)
    assert len(scores) == 0 and len(index) == 0


def test_as_query_names_both_dimensions():
    with pytest.raises(ValueError, match="dimension 3; the index holds 384-d"):
        as_query(np.ones(3), 384)
    with pytest.raises(ValueError, match="NaN"):
        as_query(np.array([np.nan, 1.0]), 2)


# -- scans straight over SQLite -------------------------------------------------------------------

@pytest.fixture
def vector_table(tmp_path):
    conn = Connection(tmp_path / "v.db")
    conn.executescript("CREATE TABLE nodes (id TEXT PRIMARY KEY, domain TEXT, embedding BLOB)")
    m = unit_rows(500, 32)
    conn.execute("BEGIN")
    for i, row in enumerate(m):
        conn.execute("INSERT INTO nodes VALUES (?, ?, ?)", (f"n{i}", "a" if i % 2 else "b", row))
    conn.execute("COMMIT")
    yield conn, m
    conn.close()


def test_scan_statement_matches_brute_force(vector_table):
    conn, m = vector_table
    q = unit_rows(1, 32)[0]
    stmt = conn.prepare("SELECT rowid, embedding FROM nodes WHERE embedding IS NOT NULL")
    scores, rowids, skipped = kernels.scan_statement(stmt, q, 10)
    ref_scores, ref_index = reference_topk(m, q, 10)
    assert skipped == 0
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert (rowids - 1).tolist() == ref_index.tolist()  # rowids start at 1
    assert not stmt.active  # reset afterwards


def test_scan_statement_with_bound_filter(vector_table):
    conn, m = vector_table
    q = m[11]
    stmt = conn.prepare("SELECT rowid, embedding FROM nodes WHERE domain = ?")
    stmt.bind(("a",))
    scores, rowids, _ = kernels.scan_statement(stmt, q, 500)
    assert len(rowids) == 250 and rowids[0] == 12
    assert all((r - 1) % 2 == 1 for r in rowids.tolist())


def test_wrong_length_and_non_blob_rows_are_skipped_and_counted(vector_table):
    conn, m = vector_table
    conn.execute("UPDATE nodes SET embedding = x'0000803f' WHERE id = 'n1'")  # 4 bytes
    conn.execute("UPDATE nodes SET embedding = ? WHERE id = 'n2'", (m[2].tobytes() + b"\x00",))
    conn.execute("UPDATE nodes SET embedding = 'text, not a blob' WHERE id = 'n3'")
    conn.execute("UPDATE nodes SET embedding = 42 WHERE id = 'n4'")
    stmt = conn.prepare("SELECT rowid, embedding FROM nodes WHERE embedding IS NOT NULL")
    scores, rowids, skipped = kernels.scan_statement(stmt, m[2], 500)
    assert skipped == 4
    assert len(rowids) == 496 and not {2, 3, 4, 5} & set(rowids.tolist())


def test_odd_offset_blobs_are_read_correctly(tmp_path):
    # BLOBs land at arbitrary byte offsets inside SQLite's pages; the scan must not assume
    # 4-byte alignment. Varying the length of a text column before the BLOB shifts its offset.
    conn = Connection(tmp_path / "odd.db")
    conn.executescript("CREATE TABLE nodes (pad TEXT, embedding BLOB)")
    m = unit_rows(64, 24)
    for i, row in enumerate(m):
        conn.execute("INSERT INTO nodes VALUES (?, ?)", ("x" * i, row))
    stmt = conn.prepare("SELECT rowid, embedding FROM nodes")
    scores, rowids, skipped = kernels.scan_statement(stmt, m[40], 64)
    ref_scores, ref_index = reference_topk(m, m[40], 64)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert rowids[0] == 41 and skipped == 0
    conn.close()


def test_load_matrix_copies_rows_and_reports_pending(vector_table):
    conn, m = vector_table
    stmt = conn.prepare("SELECT rowid, embedding FROM nodes ORDER BY rowid")
    out = np.empty((500, 32), dtype=np.float32)
    ids = np.empty(500, dtype=np.int64)
    filled, skipped, pending = kernels.load_matrix(stmt, out, ids)
    assert (filled, skipped, pending) == (500, 0, False)
    np.testing.assert_array_equal(out, m)
    small = np.empty((10, 32), dtype=np.float32)
    filled, skipped, pending = kernels.load_matrix(stmt, small, ids[:10].copy())
    assert (filled, pending) == (10, True)


def test_scan_of_a_closed_connection_is_an_error(tmp_path):
    from amalfa import errors

    conn = Connection(tmp_path / "c.db")
    conn.executescript("CREATE TABLE nodes (embedding BLOB)")
    stmt = conn.prepare("SELECT rowid, embedding FROM nodes")
    conn.close()
    with pytest.raises(errors.ConnectionClosedError):
        kernels.scan_statement(stmt, np.ones(4, dtype=np.float32), 3)


def test_non_finite_rows_are_skipped_and_counted(vector_table):
    conn, m = vector_table
    inf_row = np.full(32, np.inf, dtype=np.float32)
    nan_row = np.full(32, np.nan, dtype=np.float32)
    conn.execute("UPDATE nodes SET embedding = ? WHERE id = 'n7'", (inf_row,))
    conn.execute("UPDATE nodes SET embedding = ? WHERE id = 'n8'", (nan_row,))
    stmt = conn.prepare("SELECT rowid, embedding FROM nodes ORDER BY rowid")
    scores, rowids, skipped = kernels.scan_statement(stmt, m[0], 500)
    assert skipped == 2 and not {8, 9} & set(rowids.tolist())
    assert np.isfinite(scores).all()
    out = np.empty((500, 32), dtype=np.float32)
    ids = np.empty(500, dtype=np.int64)
    filled, skipped, _ = kernels.load_matrix(stmt, out, ids)
    assert (filled, skipped) == (498, 2) and np.isfinite(out[:filled]).all()


def test_a_huge_limit_allocates_only_what_the_rows_need(vector_table):
    conn, m = vector_table
    stmt = conn.prepare("SELECT rowid, embedding FROM nodes")
    scores, rowids, _ = kernels.scan_statement(stmt, m[0], 10**12)
    assert len(rowids) == 500  # the heap grew from 1024 slots to fit, no 12 TB request
    s2, i2, counts = kernels.topk_matrix_batch(m, m[:2], 10**12)
    assert s2.shape == (2, 500) and counts.tolist() == [500, 500]


def test_scan_heap_grows_past_its_first_capacity(tmp_path):
    conn = Connection(tmp_path / "grow.db")
    conn.executescript("CREATE TABLE nodes (embedding BLOB)")
    m = unit_rows(3000, 8)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO nodes VALUES (?)", [(row,) for row in m])
    conn.execute("COMMIT")
    stmt = conn.prepare("SELECT rowid, embedding FROM nodes")
    scores, rowids, skipped = kernels.scan_statement(stmt, m[5], 2500)
    ref_scores, ref_index = reference_topk(m, m[5], 2500)
    assert len(rowids) == 2500 and skipped == 0
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    conn.close()


# -- issue 12: core safety ------------------------------------------------------------------------


def test_batch_and_all_scores_kernels_check_the_query_dimension():
    m = unit_rows(10, 16)
    with pytest.raises(ValueError, match="dimension 8; the matrix holds 16-d"):
        kernels.topk_matrix_batch(m, np.ones((2, 8), np.float32), 3)
    with pytest.raises(ValueError, match="dimension 8; the matrix holds 16-d"):
        kernels.topk_matrix(m, np.ones(8, np.float32), 3)
    with pytest.raises(ValueError, match="dimension 32; the matrix holds 16-d"):
        kernels.scores_matrix(m, np.ones(32, np.float32))
    with pytest.raises(ValueError, match="dimension"):  # also when there are no rows
        kernels.topk_matrix_batch(m[:0], np.ones((1, 8), np.float32), 3)


def test_load_matrix_refuses_an_ids_array_shorter_than_the_matrix(vector_table):
    conn, _ = vector_table
    stmt = conn.prepare("SELECT rowid, embedding FROM nodes ORDER BY rowid")
    ids = np.zeros(20, np.int64)
    guard = ids[10:]  # memory just past the 10 ids handed over must stay untouched
    with pytest.raises(ValueError, match="ids holds 10 entries but out has 500 rows"):
        kernels.load_matrix(stmt, np.empty((500, 32), np.float32), ids[:10])
    assert not guard.any()


def test_load_matrix_notes_the_ids_of_skipped_rows(vector_table):
    conn, m = vector_table
    conn.execute("UPDATE nodes SET embedding = x'01' WHERE rowid IN (3, 7)")
    noted = np.full(5, -1, np.int64)
    out = np.empty((500, 32), np.float32)
    filled, skipped, _ = kernels.load_matrix(
        conn.prepare("SELECT rowid, embedding FROM nodes ORDER BY rowid"), out,
        np.empty(500, np.int64), skipped_ids=noted)
    assert (filled, skipped) == (498, 2) and noted[:2].tolist() == [3, 7]


# -- int8 -----------------------------------------------------------------------------------------


def test_int8_codes_round_trip_within_half_a_step_and_scan_ranks_like_fp32():
    m = unit_rows(2000, 64)
    m[7] = 0.0  # a zero row: scale 0, scores 0
    m[9, 3] = np.nan  # a non-finite row: scale NaN, never ranks
    codes, scales = np.empty(m.shape, np.int8), np.empty(len(m), np.float32)
    kernels.quantize_rows(m, codes, scales)
    assert scales[7] == 0 and np.isnan(scales[9]) and not codes[9].any()
    good = np.isfinite(scales) & (scales > 0)
    error = np.abs(codes[good] * scales[good, None] - m[good])
    assert (error <= scales[good, None] * 0.5 + 1e-7).all()
    assert (np.abs(codes).max(axis=1)[good] == 127).all()
    q = m[11].copy()
    q_codes, q_scale = kernels.quantize_query(q)
    scores, index = kernels.topk_int8(codes, scales, q_codes, q_scale, 50)
    assert index[0] == 11 and 9 not in index.tolist()
    exact = np.nan_to_num(m.astype(np.float64) @ q, nan=-9)
    assert len(set(index[:10].tolist()) & set(np.argsort(-exact)[:10].tolist())) >= 9
    assert np.all(np.diff(scores) <= 0)
    two = kernels.topk_int8(codes, scales, q_codes, q_scale, 50, -np.inf, 2)
    np.testing.assert_array_equal(two[1], index)  # threads do not change the answer


def test_int8_kernels_check_their_inputs():
    codes, scales = np.zeros((4, 8), np.int8), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="dimension 6; the matrix holds 8-d"):
        kernels.topk_int8(codes, scales, np.zeros(6, np.int8), 1.0, 2)
    with pytest.raises(ValueError, match="3 scales for 4 rows"):
        kernels.topk_int8(codes, scales[:3], np.zeros(8, np.int8), 1.0, 2)
    with pytest.raises(ValueError, match="do not fit"):
        kernels.quantize_rows(np.ones((4, 8), np.float32), np.zeros((3, 8), np.int8), scales)


def test_a_blob_sqlite_cannot_allocate_ends_both_scans_with_an_error_not_partial_results(tmp_path):
    """``sqlite3_column_blob`` gives NULL when SQLite cannot allocate the BLOB. Here the BLOB is
    a ``zeroblob()`` (stepping to the row allocates nothing; reading it expands it) read under a
    hard heap limit below its size: both C scans must raise NoMemError, never stop as if the rows
    had ended. Once the limit is lifted the same statement reads every row. A fresh process:
    SQLite's memory statistics must be on before it initialises."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import numpy as np
        from amalfa._core import connection as core, fafcas as kernels
        from amalfa.errors import NoMemError

        core.enable_memory_statistics()
        conn = core.Connection({str(tmp_path / "z.db")!r})
        conn.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2), (3), (4), (5)")
        d = 1024
        stmt = conn.prepare(f"SELECT rowid, zeroblob({{4 * d}}) FROM t")
        query = np.full(d, 1 / 32, np.float32)

        def scans():
            out = np.empty((5, d), np.float32)
            return (kernels.scan_statement(stmt, query, 10)[1].tolist(),
                    kernels.load_matrix(stmt, out, np.empty(5, np.int64))[0])

        assert scans() == ([1, 2, 3, 4, 5], 5)
        try:
            core.enable_memory_statistics()
        except RuntimeError as exc:
            print("late:", exc)
        core.hard_heap_limit(core.memory_used() + 1024)
        for which, scan in (("scan", lambda: kernels.scan_statement(stmt, query, 10)),
                            ("load", lambda: kernels.load_matrix(
                                stmt, np.empty((5, d), np.float32), np.empty(5, np.int64)))):
            try:
                print(which, "gave", scan())
            except NoMemError as exc:
                print(which, "raised", type(exc).__name__)
        assert core.hard_heap_limit(0) > 0
        assert scans() == ([1, 2, 3, 4, 5], 5)
        print("recovered")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("late: SQLite's memory statistics can only be turned on before")
    assert lines[1:] == ["scan raised NoMemError", "load raised NoMemError", "recovered"]


def test_hard_heap_limit_refuses_a_negative_limit():
    from amalfa._core import connection as core

    with pytest.raises(ValueError, match="limit must be >= 0"):
        core.hard_heap_limit(-2)
    assert core.hard_heap_limit() == core.hard_heap_limit(-1)

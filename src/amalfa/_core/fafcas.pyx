"""FAFCAS kernels: normalisation, dot products and bounded top-k scans, all without the GIL.

The arithmetic lives in kernels.h (plain C, multiversioned for AVX2/AVX-512); this module adds
typed-memoryview entry points, the thread split for large matrices and the scan straight over
SQLite rows. Callers validate first (amalfa.fafcas, amalfa.vectors): these functions trust
their inputs' dtype, contiguity and shape, and never raise from inside a kernel.
"""

from cython.parallel cimport prange, parallel, threadid
from libc.stdint cimport int8_t, int64_t, uintptr_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy
from libc.math cimport INFINITY, isfinite

from amalfa._core.connection cimport (Statement, row_step, row_int64, row_blob, row_bytes,
                                      row_type, raise_captured)
from amalfa._core.sqlite3 cimport sqlite3_stmt, SQLITE_ROW, SQLITE_DONE, SQLITE_BLOB, SQLITE_NOMEM

import numpy as np

cdef extern from "kernels.h" nogil:
    ctypedef struct amalfa_heap:
        float *scores
        int64_t *ids
        Py_ssize_t size
        Py_ssize_t capacity
    float amalfa_dot_f32(const float *a, const float *b, Py_ssize_t n)
    double amalfa_dot_f64(const float *a, const float *b, Py_ssize_t n)
    double amalfa_normalize(float *v, Py_ssize_t n)
    void amalfa_heap_push(amalfa_heap *h, float score, int64_t id)
    void amalfa_heap_sort(amalfa_heap *h)
    void amalfa_scan_rows(const float *matrix, Py_ssize_t d, Py_ssize_t begin, Py_ssize_t end,
                          const float *query, float threshold, amalfa_heap *h)
    void amalfa_scan_rows_multi(const float *matrix, Py_ssize_t d, Py_ssize_t begin,
                                Py_ssize_t end, const float *queries, Py_ssize_t q,
                                float threshold, amalfa_heap *heaps)
    void amalfa_scan_rows_i8(const int8_t *matrix, const float *scales, Py_ssize_t d,
                             Py_ssize_t begin, Py_ssize_t end, const int8_t *query,
                             float query_scale, float threshold, amalfa_heap *h)
    float amalfa_quantize_row(const float *src, int8_t *dst, Py_ssize_t d)

# The SQLite scan's heap starts at this many entries and grows to k only as rows arrive.
cdef Py_ssize_t INITIAL_SCAN_CAPACITY = 1024

# A scan runs on every core from 64 MB of data (this many floats; an int8 scan counts its bytes
# / 4), about 2 ms of one core's scanning, and on one thread below. Two threads pay a fixed price
# to start, and in a VM a query that arrives after the process idled for 50 ms or more first wakes
# the other vCPU, which costs milliseconds (100k x 384 fp32: 10.8 ms on two threads against 4.8
# ms on one); back to back they win from 20k x 384 up (fp32 4.4 -> 3.4 ms at 100k, as numpy's
# BLAS does with its own threads). So the bound is in time: the fp32 scan at 100k x 384 (146 MB)
# goes parallel, the int8 scan of the same rows (37 MB, 1.4 ms) stays on one core. A search
# embeds its query first, on both cores, so its scan finds them awake. Callers can still ask for
# a thread count.
cdef Py_ssize_t PARALLEL_MIN_FLOATS = 1 << 24

# what a zero-length BLOB (d = 0) points at: sqlite3_column_blob gives NULL for it
cdef float _EMPTY_BLOB = 0


def dot(const float[::1] a, const float[::1] b):
    """Dot product of two equal-length float32 vectors, accumulated in double."""
    cdef double out
    with nogil:
        out = amalfa_dot_f64(&a[0], &b[0], a.shape[0])
    return out


def normalize_inplace(float[::1] v):
    """Scale v to unit length in place (zero stays zero); returns the original norm."""
    cdef double norm
    with nogil:
        norm = amalfa_normalize(&v[0], v.shape[0])
    return norm


def normalize_rows_inplace(float[:, ::1] m, int n_threads=0):
    """Normalise every row of an (n, d) matrix in place, on several threads when it is large."""
    cdef Py_ssize_t n = m.shape[0], d = m.shape[1], r
    cdef int threads = _threads_for(n * d, n_threads)
    if n == 0:
        return
    if threads > 1:
        for r in prange(n, nogil=True, num_threads=threads, schedule="static"):
            amalfa_normalize(&m[r, 0], d)
    else:
        with nogil:
            for r in range(n):
                amalfa_normalize(&m[r, 0], d)


cdef int _threads_for(Py_ssize_t floats, int requested):
    import os
    if requested > 0:
        return requested
    if floats < PARALLEL_MIN_FLOATS:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else (os.cpu_count() or 1), 16))


# The parallel scans hand out blocks of rows (about BLOCKS_PER_THREAD per thread) to whichever
# thread is free, not one fixed slice per thread, so a thread the OS leaves waiting on a shared
# machine does not leave its whole slice to be scanned last (blocks do not cure a VM's slow
# wake-up of an idle vCPU: see PARALLEL_MIN_FLOATS). Each thread fills its own heap; the heap's
# order is total (score, then row), so the answer does not depend on who scanned what.
cdef Py_ssize_t BLOCKS_PER_THREAD = 16
cdef Py_ssize_t MIN_BLOCK_ROWS = 1024


cdef inline Py_ssize_t _block_rows(Py_ssize_t n, int threads) noexcept nogil:
    cdef Py_ssize_t rows = (n + threads * BLOCKS_PER_THREAD - 1) // (threads * BLOCKS_PER_THREAD)
    return max(rows, MIN_BLOCK_ROWS)


cdef inline bint _row_is_finite(const float *row, Py_ssize_t d) noexcept nogil:
    cdef Py_ssize_t i
    cdef float acc = 0
    for i in range(d):
        acc += row[i] * 0.0  # NaN or inf anywhere makes the sum NaN
    return acc == 0


cdef inline void _heap_init(amalfa_heap *h, float *scores, int64_t *ids, Py_ssize_t k) noexcept nogil:
    h.scores = scores
    h.ids = ids
    h.size = 0
    h.capacity = k


# Per-thread heaps of the parallel scans: ``count`` empty heaps of capacity ``cap`` over two
# shared buffers, allocated (and freed) together.
cdef struct _HeapSet:
    amalfa_heap *heaps
    float *scores
    int64_t *ids


cdef void _heap_set_free(_HeapSet *s) noexcept nogil:
    free(s.heaps)
    free(s.scores)
    free(s.ids)
    s.heaps = NULL
    s.scores = NULL
    s.ids = NULL


cdef int _heap_set_alloc(_HeapSet *s, Py_ssize_t count, Py_ssize_t cap) except -1:
    cdef Py_ssize_t t
    s.heaps = <amalfa_heap *>malloc(count * sizeof(amalfa_heap))
    s.scores = <float *>malloc(count * cap * sizeof(float))
    s.ids = <int64_t *>malloc(count * cap * sizeof(int64_t))
    if s.heaps == NULL or s.scores == NULL or s.ids == NULL:
        _heap_set_free(s)
        raise MemoryError()
    for t in range(count):
        _heap_init(&s.heaps[t], s.scores + t * cap, s.ids + t * cap, cap)
    return 0


cdef amalfa_heap *_merge_sorted(amalfa_heap *heaps, int threads, Py_ssize_t stride,
                                Py_ssize_t j) noexcept nogil:
    """Push the hits of heaps[t * stride + j] (t = 1 .. threads - 1) into heaps[j], sort it
    best first and return it: one query's per-thread results made one."""
    cdef Py_ssize_t t, i
    cdef amalfa_heap *merged = &heaps[j]
    cdef amalfa_heap *part
    for t in range(1, threads):
        part = &heaps[t * stride + j]
        for i in range(part.size):
            amalfa_heap_push(merged, part.scores[i], part.ids[i])
    amalfa_heap_sort(merged)
    return merged


def topk_matrix(const float[:, ::1] matrix, const float[::1] query, Py_ssize_t k,
                float threshold=-INFINITY, int n_threads=0):
    """The k rows of ``matrix`` with the largest dot product with ``query`` (score > threshold).

    Returns (scores float32, row indices int64), best first; ties go to the lower row index.
    """
    scores, indices, counts = topk_matrix_batch(matrix, _as_2d(query), k, threshold, n_threads)
    return scores[0, :counts[0]], indices[0, :counts[0]]


cdef _as_2d(const float[::1] query):
    return np.asarray(query).reshape(1, -1)


def topk_matrix_batch(const float[:, ::1] matrix, const float[:, ::1] queries, Py_ssize_t k,
                      float threshold=-INFINITY, int n_threads=0):
    """Top-k for q queries at once; each matrix row is read once for all of them.

    Returns (scores (q, m) float32, indices (q, m) int64, counts (q,) int64) with m = min(k, n);
    row i of the result holds counts[i] hits, best first, padded with -inf / -1. Rows scoring
    NaN or inf never rank.
    """
    cdef Py_ssize_t n = matrix.shape[0], d = matrix.shape[1], q = queries.shape[0]
    cdef Py_ssize_t cap = min(k, n), t, j, i, b, chunk, begin, end
    cdef int threads
    cdef _HeapSet hs
    cdef amalfa_heap *heaps
    cdef amalfa_heap *merged
    # sized by the rows there are, not by k: a huge limit asks for nothing it cannot fill
    out_scores = np.full((q, max(cap, 0)), -np.inf, dtype=np.float32)
    out_ids = np.full((q, max(cap, 0)), -1, dtype=np.int64)
    counts = np.zeros(q, dtype=np.int64)
    cdef float[:, ::1] os_ = out_scores
    cdef int64_t[:, ::1] oi = out_ids
    cdef int64_t[::1] oc = counts
    if queries.shape[1] != d:
        raise ValueError(f"queries have dimension {queries.shape[1]}; the matrix holds {d}-d rows")
    if q == 0 or cap <= 0:
        return out_scores, out_ids, counts
    threads = _threads_for(n * d, n_threads)
    if threads > n:
        threads = <int>n
    _heap_set_alloc(&hs, threads * q, cap)
    heaps = hs.heaps
    try:
        with nogil:
            chunk = _block_rows(n, threads)
            if threads > 1:
                for b in prange((n + chunk - 1) // chunk, num_threads=threads,
                                schedule="dynamic"):
                    begin = b * chunk
                    end = min(n, begin + chunk)
                    t = threadid()
                    if q == 1:
                        amalfa_scan_rows(&matrix[0, 0], d, begin, end, &queries[0, 0],
                                         threshold, &heaps[t])
                    else:
                        amalfa_scan_rows_multi(&matrix[0, 0], d, begin, end, &queries[0, 0],
                                               q, threshold, &heaps[t * q])
            else:
                if q == 1:
                    amalfa_scan_rows(&matrix[0, 0], d, 0, n, &queries[0, 0], threshold, &heaps[0])
                else:
                    amalfa_scan_rows_multi(&matrix[0, 0], d, 0, n, &queries[0, 0], q,
                                           threshold, heaps)
            # merge each query's per-thread heaps into the first one, then sort it
            for j in range(q):
                merged = _merge_sorted(heaps, threads, q, j)
                oc[j] = merged.size
                for i in range(merged.size):
                    os_[j, i] = merged.scores[i]
                    oi[j, i] = merged.ids[i]
    finally:
        _heap_set_free(&hs)
    return out_scores, out_ids, counts


def scores_matrix(const float[:, ::1] matrix, const float[::1] query):
    """Every row's dot product with ``query`` (float32, length n): for callers that need all."""
    cdef Py_ssize_t n = matrix.shape[0], d = matrix.shape[1], r
    if query.shape[0] != d:
        raise ValueError(f"query has dimension {query.shape[0]}; the matrix holds {d}-d rows")
    out = np.empty(n, dtype=np.float32)
    cdef float[::1] o = out
    with nogil:
        for r in range(n):
            o[r] = amalfa_dot_f32(&matrix[r, 0], &query[0], d)
    return out


ctypedef struct _step_error:
    int extended
    char *message   # sqlite3_mprintf'ed by row_step on failure, else NULL


cdef inline const void *_next_blob(sqlite3_stmt *stmt, int blob_column, Py_ssize_t nbytes,
                                   int *rc, Py_ssize_t *skipped, int64_t *skipped_ids,
                                   Py_ssize_t skipped_room, int id_column,
                                   _step_error *error) noexcept nogil:
    """Step to the next row whose ``blob_column`` is a BLOB of exactly ``nbytes``; count the rows
    passed over (and note their ids while ``skipped_ids`` has room). NULL at the end of the rows
    or on an error (``rc`` says which). A NULL pointer for a non-empty BLOB is SQLite failing to
    allocate: that ends the scan with SQLITE_NOMEM, never silently with partial results."""
    cdef const void *blob
    while True:
        rc[0] = row_step(stmt, &error.extended, &error.message)
        if rc[0] != SQLITE_ROW:
            return NULL
        if row_type(stmt, blob_column) == SQLITE_BLOB and row_bytes(stmt, blob_column) == nbytes:
            blob = row_blob(stmt, blob_column)
            if blob != NULL:
                return blob
            if nbytes == 0:
                return <const void *>&_EMPTY_BLOB  # an empty BLOB has no pointer
            rc[0] = SQLITE_NOMEM
            return NULL
        if skipped[0] < skipped_room:
            skipped_ids[skipped[0]] = row_int64(stmt, id_column)
        skipped[0] += 1


cdef int _finish_scan(Statement statement, int rc, _step_error *error) except -1:
    """Reset after a scan; raise the error stepping stopped on (captured when it happened)."""
    if rc != SQLITE_DONE and rc != SQLITE_ROW:
        try:
            raise_captured(rc, error.extended, error.message)
        finally:
            error.message = NULL
            statement.reset()
    statement.reset()
    return 0


def scan_statement(Statement statement, const float[::1] query, Py_ssize_t k,
                   float threshold=-INFINITY, int id_column=0, int blob_column=1):
    """Step a bound statement to the end, scoring each row's BLOB against ``query``.

    The scan reads ``sqlite3_column_blob``'s pointer directly (no Python object per row) with the
    GIL released throughout. Rows whose BLOB is not exactly 4*d bytes, or not a BLOB at all, or
    whose score is not finite (NaN/inf written by another client), are skipped and counted. The
    statement is reset afterwards.

    Returns (scores float32, ids int64 from ``id_column``, skipped count), best first.
    """
    cdef Py_ssize_t d = query.shape[0], skipped = 0, nbytes = d * 4
    cdef Py_ssize_t limit = max(k, 0), cap = min(limit, INITIAL_SCAN_CAPACITY)
    cdef sqlite3_stmt *stmt
    cdef const void *blob
    cdef const float *vec
    cdef float *aligned
    cdef float *grown_scores
    cdef int64_t *grown_ids
    cdef float s
    cdef int rc = SQLITE_DONE
    cdef bint out_of_memory = False
    cdef _step_error error
    cdef amalfa_heap heap
    cdef float[::1] sv
    cdef int64_t[::1] iv
    statement.reset()  # checks the statement is usable; bindings are kept
    stmt = statement.stmt
    error.message = NULL
    if limit == 0:
        return np.empty(0, np.float32), np.empty(0, np.int64), 0
    aligned = <float *>malloc(nbytes if nbytes > 0 else 4)
    # the heap starts small and doubles up to k as rows arrive: a huge limit costs only the
    # rows there are
    _heap_init(&heap, <float *>malloc(cap * sizeof(float)),
               <int64_t *>malloc(cap * sizeof(int64_t)), cap)
    if aligned == NULL or heap.scores == NULL or heap.ids == NULL:
        free(aligned); free(heap.scores); free(heap.ids)
        raise MemoryError()
    statement._in_use = True
    try:
        with nogil:
            while True:
                blob = _next_blob(stmt, blob_column, nbytes, &rc, &skipped, NULL, 0, id_column,
                                  &error)
                if blob == NULL:
                    break
                if (<uintptr_t>blob) & 3:
                    # SQLite gives no alignment guarantee; float loads need 4-byte alignment
                    memcpy(aligned, blob, nbytes)
                    vec = aligned
                else:
                    vec = <const float *>blob
                s = amalfa_dot_f32(vec, &query[0], d)
                if not isfinite(s):
                    skipped += 1
                    continue
                if s > threshold:
                    if heap.size == heap.capacity and heap.capacity < limit:
                        cap = min(limit, heap.capacity * 2)
                        grown_scores = <float *>realloc(heap.scores, cap * sizeof(float))
                        if grown_scores != NULL:
                            heap.scores = grown_scores
                        grown_ids = <int64_t *>realloc(heap.ids, cap * sizeof(int64_t))
                        if grown_ids != NULL:
                            heap.ids = grown_ids
                        if grown_scores == NULL or grown_ids == NULL:
                            out_of_memory = True
                            break
                        heap.capacity = cap
                    amalfa_heap_push(&heap, s, row_int64(stmt, id_column))
            amalfa_heap_sort(&heap)
        scores = np.empty(heap.size, dtype=np.float32)
        ids = np.empty(heap.size, dtype=np.int64)
        if heap.size:
            sv = scores
            iv = ids
            memcpy(&sv[0], heap.scores, heap.size * sizeof(float))
            memcpy(&iv[0], heap.ids, heap.size * sizeof(int64_t))
    finally:
        statement._in_use = False
        free(aligned)
        free(heap.scores)
        free(heap.ids)
    if out_of_memory:
        statement.reset()
        raise MemoryError(f"top-{k} heap could not grow past {heap.capacity} entries")
    _finish_scan(statement, rc, &error)
    return scores, ids, skipped


def load_matrix(Statement statement, float[:, ::1] out, int64_t[::1] ids,
                int id_column=0, int blob_column=1, int64_t[::1] skipped_ids=None):
    """Copy each row's BLOB into the next row of ``out`` (and its id into ``ids``).

    Stops when ``out`` is full or the statement is done; rows whose BLOB is not exactly
    4*d bytes, or holds NaN/inf, are skipped and counted, and the first ``len(skipped_ids)`` of
    their ids are written to ``skipped_ids`` when given. Returns (rows filled, rows skipped,
    more rows pending). The GIL is released for the whole pass.
    """
    cdef Py_ssize_t d = out.shape[1], capacity = out.shape[0], filled = 0, skipped = 0
    cdef Py_ssize_t nbytes = d * 4
    cdef Py_ssize_t skipped_room = 0 if skipped_ids is None else skipped_ids.shape[0]
    cdef int64_t *skipped_out = NULL
    cdef sqlite3_stmt *stmt
    cdef const void *blob
    cdef int rc = SQLITE_DONE
    cdef bint pending = False
    cdef _step_error error
    if ids.shape[0] < capacity:
        raise ValueError(f"ids holds {ids.shape[0]} entries but out has {capacity} rows")
    if skipped_room:
        skipped_out = &skipped_ids[0]
    statement.reset()
    stmt = statement.stmt
    error.message = NULL
    statement._in_use = True
    try:
        with nogil:
            while True:
                blob = _next_blob(stmt, blob_column, nbytes, &rc, &skipped, skipped_out,
                                  skipped_room, id_column, &error)
                if blob == NULL:
                    break
                if filled == capacity:
                    pending = True
                    break
                memcpy(&out[filled, 0], blob, nbytes)
                if not _row_is_finite(&out[filled, 0], d):
                    # NaN/inf written by another client: never ranks
                    if skipped < skipped_room:
                        skipped_out[skipped] = row_int64(stmt, id_column)
                    skipped += 1
                    continue
                ids[filled] = row_int64(stmt, id_column)
                filled += 1
    finally:
        statement._in_use = False
    _finish_scan(statement, rc, &error)
    return filled, skipped, pending


# -- int8 -----------------------------------------------------------------------------------------


def quantize_rows(const float[:, ::1] src, int8_t[:, ::1] dst, float[::1] scales,
                  Py_ssize_t begin=0, Py_ssize_t end=-1):
    """Quantise rows [begin, end) of ``src`` into ``dst`` (int8, symmetric per row) and their
    scales; a row with NaN/inf gets scale NaN (it never ranks), an all-zero row scale 0."""
    cdef Py_ssize_t n = src.shape[0], d = src.shape[1], r
    if end < 0:
        end = n
    if dst.shape[1] != d or dst.shape[0] < end or scales.shape[0] < end or end > n or begin < 0:
        raise ValueError(f"quantize_rows: shapes {src.shape[0]}x{d} -> {dst.shape[0]}x"
                         f"{dst.shape[1]} / {scales.shape[0]} do not fit rows {begin}..{end}")
    with nogil:
        for r in range(begin, end):
            scales[r] = amalfa_quantize_row(&src[r, 0], &dst[r, 0], d)


def quantize_query(const float[::1] query):
    """(int8 codes, scale) of one query, as quantize_rows does it."""
    codes = np.empty(query.shape[0], dtype=np.int8)
    cdef int8_t[::1] c = codes
    cdef float scale
    with nogil:
        scale = amalfa_quantize_row(&query[0], &c[0], query.shape[0])
    return codes, scale


def topk_int8(const int8_t[:, ::1] matrix, const float[::1] scales, const int8_t[::1] query,
              float query_scale, Py_ssize_t k, float threshold=-INFINITY, int n_threads=0):
    """The k rows with the largest approximate (int8) score: (scores, row indices), best first,
    ties to the lower index. The scores are approximations: callers rescore exactly."""
    cdef Py_ssize_t n = matrix.shape[0], d = matrix.shape[1], cap = min(k, n), t, i, chunk
    cdef Py_ssize_t b, begin, end
    cdef int threads
    cdef _HeapSet hs
    cdef amalfa_heap *heaps
    cdef amalfa_heap *merged
    if query.shape[0] != d:
        raise ValueError(f"query has dimension {query.shape[0]}; the matrix holds {d}-d rows")
    if scales.shape[0] < n:
        raise ValueError(f"{scales.shape[0]} scales for {n} rows")
    if cap <= 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    threads = _threads_for(n * d // 4, n_threads)
    if threads > n:
        threads = <int>n
    _heap_set_alloc(&hs, threads, cap)
    heaps = hs.heaps
    try:
        with nogil:
            chunk = _block_rows(n, threads)
            if threads > 1:
                for b in prange((n + chunk - 1) // chunk, num_threads=threads,
                                schedule="dynamic"):
                    begin = b * chunk
                    end = min(n, begin + chunk)
                    t = threadid()
                    amalfa_scan_rows_i8(&matrix[0, 0], &scales[0], d, begin, end, &query[0],
                                        query_scale, threshold, &heaps[t])
            else:
                amalfa_scan_rows_i8(&matrix[0, 0], &scales[0], d, 0, n, &query[0], query_scale,
                                    threshold, &heaps[0])
            merged = _merge_sorted(heaps, threads, 1, 0)
        scores = np.empty(merged.size, dtype=np.float32)
        ids = np.empty(merged.size, dtype=np.int64)
        for i in range(merged.size):
            scores[i] = merged.scores[i]
            ids[i] = merged.ids[i]
    finally:
        _heap_set_free(&hs)
    return scores, ids

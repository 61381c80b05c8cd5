/*
 * FAFCAS vector kernels: plain C over raw pointers and lengths, no Python API, never failing.
 *
 * fafcas.pyx declares these in a `cdef extern` block and calls them with the GIL released; all
 * validation (dtype, shape, contiguity, finiteness) happens once in the Python front functions.
 *
 * The dot products are written with 16 independent accumulators so that the compiler vectorises
 * them without -ffast-math (a single float accumulator is a serial dependency chain). On x86-64
 * Linux with GCC each hot kernel is cloned for AVX2+FMA and AVX-512 and the loader picks the
 * best clone for the running CPU (function multiversioning), so a portable build still runs at
 * the machine's full width.
 */
#ifndef AMALFA_KERNELS_H
#define AMALFA_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(AMALFA_NO_MULTIVERSION)
#define AMALFA_CLONES __attribute__((target_clones("default", "avx2,fma", "avx512f")))
#else
#define AMALFA_CLONES
#endif

/* The int8 scan is cloned by micro-architecture level: x86-64-v3 (AVX2) and v4 (AVX-512 with
 * BW, which byte lanes need; GCC takes it only as an arch= level) widen int8 pairs to int16
 * products summed into int32 (vpmaddwd), 32/64 bytes per instruction. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(AMALFA_NO_MULTIVERSION)
#define AMALFA_CLONES_I8 \
    __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define AMALFA_CLONES_I8
#endif

#define AMALFA_LANES 16

#if defined(__GNUC__)
#define AMALFA_INLINE static inline __attribute__((always_inline))
#else
#define AMALFA_INLINE static inline
#endif

/* Dot product with float accumulation: for unit-length FAFCAS vectors, where the result is
 * bounded by 1 and the lane-wise sums keep the rounding error near sqrt(n) * eps. Always inlined,
 * so that each cloned caller below compiles it for its own instruction set. */
AMALFA_INLINE float amalfa_dot_f32_inline(const float *restrict a, const float *restrict b,
                                          ptrdiff_t n)
{
    float acc[AMALFA_LANES] = {0};
    ptrdiff_t i = 0;
    for (; i + AMALFA_LANES <= n; i += AMALFA_LANES) {
        for (int j = 0; j < AMALFA_LANES; j++) {
            acc[j] += a[i + j] * b[i + j];
        }
    }
    float tail = 0.0f;
    for (; i < n; i++) {
        tail += a[i] * b[i];
    }
    /* pairwise reduction of the lanes */
    for (int width = AMALFA_LANES / 2; width > 0; width /= 2) {
        for (int j = 0; j < width; j++) {
            acc[j] += acc[j + width];
        }
    }
    return acc[0] + tail;
}

AMALFA_CLONES
static float amalfa_dot_f32(const float *restrict a, const float *restrict b, ptrdiff_t n)
{
    return amalfa_dot_f32_inline(a, b, n);
}

/* Dot product with double accumulation: for arbitrary float32 inputs (huge or tiny values),
 * where float products or sums could overflow or lose the small terms. */
AMALFA_CLONES
static double amalfa_dot_f64(const float *restrict a, const float *restrict b, ptrdiff_t n)
{
    double acc[8] = {0};
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; j++) {
            acc[j] += (double)a[i + j] * (double)b[i + j];
        }
    }
    double s = 0.0;
    for (; i < n; i++) {
        s += (double)a[i] * (double)b[i];
    }
    return s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Scale v to unit L2 norm in place. The sum of squares is taken in double, so neither huge
 * values (whose squares overflow float) nor denormals (whose squares underflow it) break it.
 * An all-zero vector stays zero. Returns the original norm. */
static double amalfa_normalize(float *v, ptrdiff_t n)
{
    double ss = amalfa_dot_f64(v, v, n);
    if (ss == 0.0) {
        return 0.0;
    }
    double norm = sqrt(ss);
    double inv = 1.0 / norm;
    if (isfinite(inv)) {
        for (ptrdiff_t i = 0; i < n; i++) {
            v[i] = (float)((double)v[i] * inv);
        }
    } else {
        /* norm so small that 1/norm overflows double: divide instead of multiplying */
        for (ptrdiff_t i = 0; i < n; i++) {
            v[i] = (float)((double)v[i] / norm);
        }
    }
    return norm;
}

/* ---- bounded top-k heap ---------------------------------------------------------------------
 * A min-heap of (score, id) of capacity k: the root is the worst kept candidate. "Worse" means a
 * lower score, or an equal score with a larger id, so that ties resolve to the lower id and the
 * result does not depend on scan order or thread count. */

typedef struct {
    float *scores;
    int64_t *ids;
    ptrdiff_t size;
    ptrdiff_t capacity;
} amalfa_heap;

static inline int amalfa_worse(float sa, int64_t ia, float sb, int64_t ib)
{
    return sa < sb || (sa == sb && ia > ib);
}

static inline void amalfa_heap_sift_down(amalfa_heap *h, ptrdiff_t at)
{
    ptrdiff_t n = h->size;
    float s = h->scores[at];
    int64_t id = h->ids[at];
    for (;;) {
        ptrdiff_t child = 2 * at + 1;
        if (child >= n) break;
        if (child + 1 < n && amalfa_worse(h->scores[child + 1], h->ids[child + 1],
                                          h->scores[child], h->ids[child])) {
            child++;
        }
        if (!amalfa_worse(h->scores[child], h->ids[child], s, id)) break;
        h->scores[at] = h->scores[child];
        h->ids[at] = h->ids[child];
        at = child;
    }
    h->scores[at] = s;
    h->ids[at] = id;
}

/* Offer a candidate; kept only when the heap has room or it beats the worst kept one. */
static inline void amalfa_heap_push(amalfa_heap *h, float score, int64_t id)
{
    if (h->size < h->capacity) {
        ptrdiff_t at = h->size++;
        while (at > 0) {
            ptrdiff_t parent = (at - 1) / 2;
            if (!amalfa_worse(score, id, h->scores[parent], h->ids[parent])) break;
            h->scores[at] = h->scores[parent];
            h->ids[at] = h->ids[parent];
            at = parent;
        }
        h->scores[at] = score;
        h->ids[at] = id;
    } else if (h->capacity > 0 && amalfa_worse(h->scores[0], h->ids[0], score, id)) {
        h->scores[0] = score;
        h->ids[0] = id;
        amalfa_heap_sift_down(h, 0);
    }
}

/* Empty the heap into best-first order (scores descending, ids ascending on ties). */
static inline void amalfa_heap_sort(amalfa_heap *h)
{
    ptrdiff_t n = h->size;
    while (h->size > 1) {
        ptrdiff_t last = --h->size;
        float s = h->scores[0];
        int64_t id = h->ids[0];
        h->scores[0] = h->scores[last];
        h->ids[0] = h->ids[last];
        h->scores[last] = s;
        h->ids[last] = id;
        amalfa_heap_sift_down(h, 0);
    }
    h->size = n;
}

/* Score rows [begin, end) of a row-major (n, d) matrix against one query into a heap. */
AMALFA_CLONES
static void amalfa_scan_rows(const float *restrict matrix, ptrdiff_t d, ptrdiff_t begin,
                             ptrdiff_t end, const float *restrict query, float threshold,
                             amalfa_heap *h)
{
    for (ptrdiff_t r = begin; r < end; r++) {
        float s = amalfa_dot_f32_inline(matrix + r * d, query, d);
        if (s > threshold && s < INFINITY) { /* NaN fails both */
            amalfa_heap_push(h, s, (int64_t)r);
        }
    }
}

/* Score rows [begin, end) against q queries at once (queries row-major (q, d)), one heap per
 * query: each matrix row is read from memory once and stays in L1 while every query uses it. */
AMALFA_CLONES
static void amalfa_scan_rows_multi(const float *restrict matrix, ptrdiff_t d, ptrdiff_t begin,
                                   ptrdiff_t end, const float *restrict queries, ptrdiff_t q,
                                   float threshold, amalfa_heap *heaps)
{
    for (ptrdiff_t r = begin; r < end; r++) {
        const float *row = matrix + r * d;
        for (ptrdiff_t j = 0; j < q; j++) {
            float s = amalfa_dot_f32_inline(row, queries + j * d, d);
            if (s > threshold && s < INFINITY) { /* NaN fails both */
                amalfa_heap_push(&heaps[j], s, (int64_t)r);
            }
        }
    }
}

/* ---- int8 ------------------------------------------------------------------------------------
 * Each row is stored as int8 with its own scale (symmetric: the largest |component| maps to
 * 127), so score ~= scale_row * scale_query * sum(q_row[i] * q_query[i]). A row whose scale is
 * NaN (a tombstone) scores NaN and never ranks. The integer sum is exact: no accumulator order
 * matters, so the compiler vectorises it freely. */

AMALFA_INLINE int32_t amalfa_dot_i8_inline(const int8_t *restrict a, const int8_t *restrict b,
                                           ptrdiff_t n)
{
    int32_t acc = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        acc += (int32_t)((int16_t)a[i] * (int16_t)b[i]);
    }
    return acc;
}

AMALFA_CLONES_I8
static void amalfa_scan_rows_i8(const int8_t *restrict matrix, const float *restrict scales,
                                ptrdiff_t d, ptrdiff_t begin, ptrdiff_t end,
                                const int8_t *restrict query, float query_scale, float threshold,
                                amalfa_heap *h)
{
    for (ptrdiff_t r = begin; r < end; r++) {
        float s = (float)amalfa_dot_i8_inline(matrix + r * d, query, d) * (scales[r] * query_scale);
        if (s > threshold && s < INFINITY) { /* NaN fails both */
            amalfa_heap_push(h, s, (int64_t)r);
        }
    }
}

/* Quantise one row: returns its scale (0 for an all-zero row, NaN for a row holding NaN/inf,
 * whose codes are then zero). */
static float amalfa_quantize_row(const float *restrict src, int8_t *restrict dst, ptrdiff_t d)
{
    float amax = 0.0f, probe = 0.0f;
    for (ptrdiff_t i = 0; i < d; i++) {
        float a = fabsf(src[i]);
        amax = a > amax ? a : amax;
        probe += src[i] * 0.0f; /* NaN or inf anywhere makes the probe NaN */
    }
    if (probe != 0.0f || !isfinite(amax)) {
        for (ptrdiff_t i = 0; i < d; i++) dst[i] = 0;
        return NAN;
    }
    if (amax == 0.0f) {
        for (ptrdiff_t i = 0; i < d; i++) dst[i] = 0;
        return 0.0f;
    }
    float inv = 127.0f / amax;
    for (ptrdiff_t i = 0; i < d; i++) {
        dst[i] = (int8_t)lrintf(src[i] * inv);
    }
    return amax / 127.0f;
}

#endif /* AMALFA_KERNELS_H */

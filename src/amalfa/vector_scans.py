"""The scans over a cached matrix that are more than one C kernel call: a batch of queries as
blocked matrix-matrix products, and the int8 scan with exact fp32 rescoring.

:class:`amalfa.vectors.VectorEngine` keeps the matrix and its rows' bookkeeping; these functions
take plain arrays and return (scores, row indices), best first, ties to the lower index, with the
same meaning of ``threshold`` (strictly above) as :func:`amalfa._core.fafcas.topk_matrix`.

- **Batches at GEMM speed.** For many queries at once the arithmetic is a matrix-matrix product,
  which numpy's BLAS runs blocked for cache and registers far better than q separate scans; a
  block of rows at a time keeps the (q, block) scores to a few MB, and only the best k per query
  of each block are kept (``argpartition`` along a contiguous row).
- **int8 with exact rescoring.** Each row is quantised symmetrically with its own scale (the
  largest |component| maps to 127; per-vector because FAFCAS rows are unit length, so one scale
  per row loses least where it matters, on each row's own large components). The C scan over the
  codes reads a quarter of the bytes; it keeps a pool of candidates larger than k, which are then
  rescored by the same fp32 kernel the fp32 scan uses, so every returned score is exact and the
  only possible loss is a true top-k row missing from the pool.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from amalfa._core import fafcas as kernels

__all__ = ["GEMM_BLOCK_ROWS", "gemm_top_k", "int8_top_k", "quantize"]

#: rows of the matrix per GEMM block: the (q x block) scores are 8 MB for q = 64
GEMM_BLOCK_ROWS = 32768


def gemm_top_k(matrix: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], k: int,
                threshold: float) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]:
    """Per query, the best k (score, row index) of ``queries @ matrix.T``, computed a block of
    rows at a time (each block one sgemm, its (q, block) scores a few MB); ties go to the lower
    row index. NaN scores (tombstones) sort after every number and are dropped at the end."""
    n, q = matrix.shape[0], queries.shape[0]
    keep = min(k, n)
    best_scores = np.full((q, 0), -np.inf, np.float32)
    best_index = np.full((q, 0), -1, np.int64)
    for begin in range(0, n, GEMM_BLOCK_ROWS):
        block = queries @ matrix[begin:begin + GEMM_BLOCK_ROWS].T  # (q, b), contiguous per query
        if block.shape[1] > keep:
            top = np.argpartition(-block, keep - 1, axis=1)[:, :keep]
            top_scores = np.take_along_axis(block, top, axis=1)
        else:
            top = np.broadcast_to(np.arange(block.shape[1]), block.shape)
            top_scores = block
        scores = np.concatenate([best_scores, top_scores], axis=1)
        index = np.concatenate([best_index, top + begin], axis=1)
        # the k best of the kept and the new: by score, then by lower index
        order = np.lexsort((index, -scores), axis=1)[:, :keep]
        best_scores = np.take_along_axis(scores, order, axis=1)
        best_index = np.take_along_axis(index, order, axis=1)
    out = []
    for j in range(q):
        good = best_scores[j] > threshold  # False for NaN
        out.append((best_scores[j, good], best_index[j, good]))
    return out


def quantize(rows: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """The int8 codes and per-row scales of ``rows`` (n, d), in fresh arrays: one kernel call."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    codes = np.empty(rows.shape, np.int8)
    scales = np.empty(len(rows), np.float32)
    kernels.quantize_rows(rows, codes, scales, 0, len(rows))
    return codes, scales


def int8_top_k(codes: npt.NDArray[np.int8], scales: npt.NDArray[np.float32],
               matrix: npt.NDArray[np.float32], query: npt.NDArray[np.float32], k: int,
               pool: int, threshold: float, n_threads: int = 0,
               ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The k best rows: the int8 scan picks ``pool`` candidates, fp32 rescoring ranks them."""
    query_codes, query_scale = kernels.quantize_query(query)
    _, index = kernels.topk_int8(codes, scales, query_codes, query_scale, pool, -math.inf,
                                 n_threads)
    exact = kernels.scores_matrix(np.ascontiguousarray(matrix[index]), query)
    order = np.lexsort((index, -exact))
    order = order[exact[order] > threshold][:k]  # NaN (a tombstone) fails the test
    return exact[order], index[order]

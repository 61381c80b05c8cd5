"""How close two sets of embeddings of the same texts are: the measures amalfa quotes.

A graph rewrite or a precision is judged by two numbers against reference vectors of the same
texts: the least cosine over the texts (:func:`least_cosine`: the worst text, not the average),
and how many of each text's nearest neighbours survive (:func:`knn_overlap`: what retrieval
feels; a small rotation of every vector can keep the cosines high and still swap neighbours).
The builder's parity probe uses the first; the tests and benchmarks quote both.
"""

from __future__ import annotations

import numpy as np

__all__ = ["knn_overlap", "least_cosine"]


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def least_cosine(vectors: np.ndarray, reference: np.ndarray) -> float:
    """The smallest cosine between row i of ``vectors`` and row i of ``reference``; -inf when
    any row is not finite (a broken graph must not pass)."""
    cosines = np.sum(_unit(vectors) * _unit(reference), axis=-1)
    return float(np.min(cosines)) if np.isfinite(cosines).all() else float("-inf")


def knn_overlap(vectors: np.ndarray, reference: np.ndarray, k: int = 10) -> float:
    """The mean share of each text's ``k`` nearest neighbours (by cosine, itself excluded) that
    ``vectors`` and ``reference`` agree on: 1.0 when every neighbour list is the same set."""
    def neighbours(matrix: np.ndarray) -> np.ndarray:
        unit = _unit(matrix)
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1, kind="stable")[:, :k]

    ours, theirs = neighbours(vectors), neighbours(reference)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ours, theirs)]))

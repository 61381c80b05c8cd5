"""FAFCAS vectors: float32 little-endian, unit length, stored as raw BLOBs; similarity is the dot product.

Thin typed wrappers over the compiled kernels in :mod:`amalfa._core.fafcas`. Validation (dtype,
shape, finiteness) happens here, once per call; the kernels never raise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["to_fafcas", "to_blob", "from_blob", "dot", "as_query"]

Vector = npt.NDArray[np.float32]


def _as_float32(vec: Any, name: str) -> Vector:
    try:
        arr = np.asarray(vec)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be a 1-D or 2-D array of numbers: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must hold numbers, not {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (d,) or 2-D (n, d); got shape {arr.shape}")
    if arr.shape[-1] == 0:
        raise ValueError(f"{name} has dimension 0")
    return np.ascontiguousarray(arr, dtype="<f4")


def _check_finite(arr: Vector, name: str) -> None:
    if not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "inf"
        raise ValueError(f"{name} holds {bad}; FAFCAS vectors must be finite")


def to_fafcas(vec: Any, *, inplace: bool = False) -> Vector:
    """Return ``vec`` scaled to unit length as a C-contiguous float32 array.

    A 2-D input is normalised row by row. An all-zero vector (a failed embedding) stays zero.
    With ``inplace=True`` a float32 C-contiguous array is normalised in place and returned.
    Raises ValueError for NaN/inf or a bad shape, TypeError for non-numeric input.
    """
    from amalfa._core import fafcas as kernels

    if inplace:
        if not (isinstance(vec, np.ndarray) and vec.dtype == np.float32 and vec.flags.c_contiguous
                and vec.flags.writeable):
            raise TypeError("inplace=True needs a writeable C-contiguous float32 numpy array")
        arr = vec
        if arr.ndim not in (1, 2) or arr.shape[-1] == 0:
            raise ValueError(f"vector must be 1-D or 2-D with d > 0; got shape {arr.shape}")
    else:
        arr = _as_float32(vec, "vector")
        if arr is vec or (isinstance(vec, np.ndarray) and np.shares_memory(arr, vec)):
            arr = arr.copy()
    _check_finite(arr, "vector")
    if arr.ndim == 1:
        kernels.normalize_inplace(arr)
    else:
        kernels.normalize_rows_inplace(arr)
    return arr


def to_blob(vec: Any) -> memoryview:
    """The FAFCAS BLOB of one vector: normalised float32 little-endian, no header.

    Returns a memoryview over the normalised array (no extra copy); bind it directly.
    """
    arr = to_fafcas(vec)
    if arr.ndim != 1:
        raise ValueError(f"to_blob takes one vector; got shape {arr.shape}")
    return arr.data.cast("B")


def from_blob(blob: bytes | memoryview, dim: int | None = None) -> Vector:
    """View a BLOB as a float32 array (no copy). ``dim`` checks the length when given."""
    if len(blob) % 4:
        raise ValueError(f"BLOB of {len(blob)} bytes is not a whole number of float32 values")
    arr = np.frombuffer(blob, dtype="<f4")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"BLOB holds a {arr.shape[0]}-d vector; expected {dim}-d")
    return arr


def as_query(vec: Any, dim: int | None = None) -> Vector:
    """Validate a query vector: 1-D, finite, of dimension ``dim`` when given; float32 copy."""
    arr = _as_float32(vec, "query vector")
    if arr.ndim != 1:
        raise ValueError(f"query vector must be 1-D; got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"query vector has dimension {arr.shape[0]}; the index holds {dim}-d vectors")
    _check_finite(arr, "query vector")
    return arr


def dot(a: Any, b: Any) -> float:
    """Plain dot product of two 1-D vectors of equal length (float32 in, float accumulated)."""
    from amalfa._core import fafcas as kernels

    x = _as_float32(a, "a")
    y = _as_float32(b, "b")
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"dot takes two 1-D vectors; got shapes {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"dot: dimensions differ ({x.shape[0]} and {y.shape[0]})")
    return kernels.dot(x, y)

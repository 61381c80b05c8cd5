"""The vector snapshot: a cache file beside the database so a cold process loads at file speed.

A process that opens the database and searches once would otherwise walk the whole ``nodes``
B-tree (wide rows: title, meta, summary and a 1.5 KB BLOB each, spread over overflow pages) to
build its matrix. The snapshot holds the same matrix as one contiguous float32 block, followed by
its int8 codes and their per-row scales (so an int8 engine, the default, starts without reading
the floats at all: its scan reads the codes, and rescoring touches only the pool's rows), mapped
copy-on-write (or, when small, read with ``pread`` straight into the engine's own buffers), plus
the change-log position it reflects; the engine then applies the log entries written since,
exactly as a warm refresh does.

Layout after the page-aligned header: rowids (int64 x n), matrix (float32 x n x d), scales
(float32 x n), codes (int8 x n x d); all little-endian, as FAFCAS BLOBs are.

Why a file beside the database and not chunk BLOBs inside it: chunk BLOBs would have to be
rewritten by every writer (the triggers of other clients cannot maintain them), doubling the
database's size and its write volume, and ``sqlite3_blob_read`` still copies page by page through
the pager (4 KB at a time, ~1-2 GB/s); the snapshot costs nothing on the write path, is read at
memory/page-cache speed, and can be deleted at any time: it is only a cache. The database file
stays the one thing a user has to keep.

Never trusted unless it validates (any failure means "rebuild from SQLite"):

- magic, format version, source table and dimension match, and the file's size is exactly what
  its header promises (a torn or truncated write is rejected);
- ``database_id`` (a random id migration 0004 stores in ``amalfa_meta``) matches: a snapshot of
  another database, or of the one this file replaced, is refused;
- its ``seq`` is not ahead of the log's head (a database restored from an older copy) and the
  log still holds every entry after it (not pruned past it);
- sampled rows (:data:`SAMPLES`, spread over the matrix) that the log does not list as changed
  still hold exactly the snapshot's bytes (and their stored int8 codes are what quantising those
  bytes gives): an edit made with the triggers missing, or a copy of the database edited apart,
  is caught unless it spared every sampled row.

Written atomically (a temporary file in the same folder, fsynced, then ``os.replace``), so a
reader sees the old snapshot or the new one, never half of one (nor, after a crash, a file of the
right size whose pages never reached the disk: sampling could not catch that), and a process
that has mapped the old one keeps reading the old file's pages. (Truncating the file in place,
which amalfa never does, would make a process that maps it fail on its next scan: delete or
replace it instead.)
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import numpy.typing as npt

from amalfa._atomic import atomic_writer
from amalfa.limits import available_cores
from amalfa.vector_scans import quantize

__all__ = ["SAMPLES", "Snapshot", "SnapshotArrays", "codes_match", "peek_seq", "read_snapshot",
           "snapshot_path", "write_snapshot"]

_MAGIC = b"AMALFAVS"
_FORMAT = 2  # 1 had no int8 codes: such a file is simply not trusted (rebuilt)
_HEADER = struct.Struct("<8sII")  # magic, format, header JSON length
_ALIGN = 4096  # the data starts page-aligned
_MAX_HEADER = 1 << 20


def _data_offset(header_json_length: int) -> int:
    return -(-(_HEADER.size + header_json_length) // _ALIGN) * _ALIGN


def _row_bytes(dim: int) -> int:
    """Bytes per row after the header: rowid, floats, scale, codes."""
    return 8 + 4 * dim + 4 + dim


#: rows checked against the database when a snapshot is opened
SAMPLES = 16
_WRITE_BLOCK_ROWS = 8192
_READ_THREADS = 4
#: matrices from this size on are memory-mapped rather than read (see read_snapshot)
MAP_MIN_BYTES = 64 << 20


def snapshot_path(db_file: str | os.PathLike[str], source: str) -> Path:
    """Where the snapshot of ``source``'s vectors lives: beside the database file."""
    db_file = Path(db_file)
    return db_file.with_name(f"{db_file.name}-vectors-{source}.cache")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a snapshot's header says: ``n`` rows of ``dim`` floats at log position ``seq``."""

    database_id: str
    source: str
    seq: int
    dim: int
    n: int
    sample_slots: tuple[int, ...]
    skipped: tuple[int, ...]  # rowids the load skipped (wrong length, NaN/inf), for last_skipped
    data_offset: int


def _read_header(handle: object, path: Path) -> Snapshot | None:
    raw = handle.read(_HEADER.size)  # type: ignore[attr-defined]
    if len(raw) != _HEADER.size:
        return None
    magic, fmt, length = _HEADER.unpack(raw)
    if magic != _MAGIC or fmt != _FORMAT or length > _MAX_HEADER:
        return None
    try:
        head = json.loads(handle.read(length))  # type: ignore[attr-defined]
        snap = Snapshot(str(head["database_id"]), str(head["source"]), int(head["seq"]),
                        int(head["dim"]), int(head["n"]), tuple(int(s) for s in head["samples"]),
                        tuple(int(s) for s in head["skipped"]), _data_offset(length))
    except (ValueError, KeyError, TypeError):
        return None
    expected = snap.data_offset + snap.n * _row_bytes(snap.dim)
    if snap.n < 0 or snap.dim <= 0 or os.fstat(handle.fileno()).st_size != expected:  # type: ignore[attr-defined]
        return None
    return snap


@dataclass(frozen=True, slots=True)
class SnapshotArrays:
    """A snapshot's arrays: ``matrix`` always; ``codes`` and ``scales`` when asked for (int8).

    Each has ``spare_rows`` of room past ``n`` when read; mapped ones have none (the engine
    copies them out, once, when it first grows)."""

    rowids: npt.NDArray[np.int64]
    matrix: npt.NDArray[np.float32]
    codes: npt.NDArray[np.int8] | None
    scales: npt.NDArray[np.float32] | None


def read_snapshot(path: Path, *, database_id: str, source: str, dim: int, int8: bool = False,
                  spare_rows: int = 0) -> tuple[Snapshot, SnapshotArrays] | None:
    """The header and arrays of a snapshot that matches; None when it is missing or does not
    match (the caller then rebuilds). The sampled rows are left for the caller to check.

    The rowids are read into a fresh array with ``spare_rows`` of room. The rest is
    memory-mapped copy-on-write (``MAP_PRIVATE``) instead of read: the first scan pulls the pages
    in as it goes, one pass over memory instead of a copy and then a scan (measured at 1M x 384:
    the copy alone cost more than vec0's whole cold query), and rows the engine later changes
    become private pages of this process only, never written back. With ``int8`` it is always
    mapped: the read-ahead goes to the codes (what the scan reads) and the floats fault in row by
    row as rescoring asks for them (reading 29 MB of floats nobody scans was two thirds of a
    cold query at 20k rows). For fp32 a matrix under :data:`MAP_MIN_BYTES` is read into a fresh
    array with ``spare_rows`` of room instead, one reader per core, so appends need no copy."""
    try:
        with open(path, "rb", buffering=0) as handle:
            snap = _read_header(handle, path)
            if (snap is None or snap.database_id != database_id or snap.source != source
                    or snap.dim != dim):
                return None
            n, capacity = snap.n, snap.n + spare_rows
            rowids = np.empty(capacity, np.int64)
            fd = handle.fileno()
            _read_at(fd, rowids[:n].data.cast("B"), snap.data_offset)
            floats_at = snap.data_offset + 8 * n
            scales_at = floats_at + 4 * n * dim
            codes_at = scales_at + 4 * n
            codes = scales = None
            if int8 or n * dim * 4 >= MAP_MIN_BYTES:
                mapped = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE,
                                   prot=mmap.PROT_READ | mmap.PROT_WRITE)
                if int8:
                    _advise(mapped, "MADV_WILLNEED", scales_at, n * (4 + dim))
                    _advise(mapped, "MADV_RANDOM", floats_at, 4 * n * dim)
                    scales = np.frombuffer(mapped, np.float32, count=n, offset=scales_at)
                    codes = np.frombuffer(mapped, np.int8, count=n * dim,
                                          offset=codes_at).reshape(n, dim)
                else:
                    _advise(mapped, "MADV_WILLNEED", floats_at, 4 * n * dim)
                matrix = np.frombuffer(mapped, np.float32, count=n * dim,
                                       offset=floats_at).reshape(n, dim)
            else:
                matrix = np.empty((capacity, dim), np.float32)
                _read_parallel(fd, matrix[:n].data.cast("B"), floats_at)
            return snap, SnapshotArrays(rowids, matrix, codes, scales)
    except (OSError, EOFError):
        return None


def _advise(mapped: mmap.mmap, option: str, start: int, length: int) -> None:
    """madvise a byte range of the mapping (widened to whole pages), where the OS has it."""
    if not hasattr(mmap, option) or length <= 0:
        return
    page = mmap.PAGESIZE
    begin = start // page * page
    mapped.madvise(getattr(mmap, option), begin, min(length + start - begin, len(mapped) - begin))


def codes_match(matrix: npt.NDArray[np.float32], codes: npt.NDArray[np.int8] | None,
                 scales: npt.NDArray[np.float32] | None, slots: list[int]) -> bool:
    """Whether the stored int8 codes and scales of ``slots`` are what quantising their rows
    gives (a snapshot's codes are checked like its floats, on the sampled rows)."""
    if codes is None or scales is None:
        return False
    if not slots:
        return True
    want_codes, want_scales = quantize(matrix[slots])
    return bool(np.array_equal(want_codes, codes[slots])
                and np.array_equal(want_scales, scales[slots], equal_nan=True))


def _read_at(fd: int, view: memoryview, offset: int) -> None:
    while view.nbytes:
        got = os.preadv(fd, [view], offset)
        if not got:
            raise EOFError("the snapshot ended early")
        view, offset = view[got:], offset + got


def _read_parallel(fd: int, view: memoryview, offset: int) -> None:
    """Read a large block with one pread per core: copying out of the page cache is bound by
    one core's memcpy speed, so two cores read 146 MB in about half the time (measured 33 -> 15
    ms on the benchmark machine)."""
    threads = max(1, min(_READ_THREADS, available_cores(), view.nbytes // (8 << 20)))
    if threads == 1:
        _read_at(fd, view, offset)
        return
    step = -(-view.nbytes // threads)
    with ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(_read_at, fd, view[i * step:(i + 1) * step], offset + i * step)
                     for i in range(threads)]:
            done.result()


def peek_seq(path: Path, *, database_id: str, source: str) -> int | None:
    """The log position of the snapshot at ``path`` if it is one of this database's (header only)."""
    try:
        with open(path, "rb", buffering=0) as handle:
            snap = _read_header(handle, path)
    except OSError:
        return None
    if snap is None or snap.database_id != database_id or snap.source != source:
        return None
    return snap.seq


def write_snapshot(path: Path, *, database_id: str, source: str, seq: int,
                   matrix: npt.NDArray[np.float32], rowids: npt.NDArray[np.int64],
                   live: npt.NDArray[np.bool_] | None = None,
                   skipped: list[int] | None = None,
                   codes: npt.NDArray[np.int8] | None = None,
                   scales: npt.NDArray[np.float32] | None = None) -> bool:
    """Write the live rows atomically; False when the folder is not writable (no snapshot then:
    it is only a cache). Rows are written a block at a time, so no second matrix is made; the
    int8 codes are taken from ``codes``/``scales`` when given (slot for slot with ``matrix``),
    else computed a block at a time."""
    n_slots, dim = matrix.shape
    keep = None if live is None or live.all() else live
    n = n_slots if keep is None else int(np.count_nonzero(keep))
    samples = sorted({int(i) for i in np.linspace(0, n - 1, min(SAMPLES, n)).astype(int)}) if n else []
    head = json.dumps({"database_id": database_id, "source": source, "seq": int(seq),
                       "dim": int(dim), "n": n, "samples": samples,
                       "skipped": sorted(skipped or [])}).encode()
    if len(head) > _MAX_HEADER:
        return False
    header = _HEADER.pack(_MAGIC, _FORMAT, len(head)) + head

    def blocks(part: npt.NDArray[Any]) -> Iterator[npt.NDArray[Any]]:
        """The live rows of ``part`` a block at a time, contiguous."""
        for begin in range(0, n_slots, _WRITE_BLOCK_ROWS):
            block = part[begin:begin + _WRITE_BLOCK_ROWS]
            if keep is not None:
                block = block[keep[begin:begin + _WRITE_BLOCK_ROWS]]
            yield np.ascontiguousarray(block)

    try:
        with atomic_writer(path) as out:
            out.write(header.ljust(_data_offset(len(head)), b"\0"))
            parts: list[npt.NDArray[Any]] = [rowids, matrix]
            if codes is not None and scales is not None:
                parts += [scales, codes]
            for part in parts:
                for block in blocks(part):
                    out.write(block.data)
            if len(parts) == 2:
                # the codes follow the scales in the file but give them: quantise each block
                # once, write its codes past the scales' room and the scales at the end
                scales_at = out.tell()
                all_scales = np.empty(n, np.float32)
                out.seek(4 * n, os.SEEK_CUR)
                done = 0
                for block in blocks(matrix):
                    block_codes, all_scales[done:done + len(block)] = quantize(block)
                    out.write(block_codes.data)
                    done += len(block)
                out.seek(scales_at)
                out.write(all_scales.data)
        return True
    except OSError:
        return False

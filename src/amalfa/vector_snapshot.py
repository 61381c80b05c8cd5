"""The vector snapshot: a cache file beside the database so a cold process loads at file speed.

A process that opens the database and searches once would otherwise walk the whole ``nodes``
B-tree (wide rows: title, meta, summary and a 1.5 KB BLOB each, spread over overflow pages) to
build its matrix. The snapshot holds the same matrix as one contiguous float32 block, mapped
copy-on-write (or, when small, read with ``pread`` straight into the engine's own buffer), plus the change-log
position it reflects; the engine then applies the log entries written since, exactly as a warm
refresh does.

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
  still hold exactly the snapshot's bytes: an edit made with the triggers missing, or a copy of
  the database edited apart, is caught unless it spared every sampled row.

Written atomically (a temporary file in the same folder, then ``os.replace``), so a reader sees
the old snapshot or the new one, never half of one, and a process that has mapped the old one
keeps reading the old file's pages. (Truncating the file in place, which amalfa never does,
would make a process that maps it fail on its next scan: delete or replace it instead.)
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from amalfa.limits import available_cores

__all__ = ["SAMPLES", "Snapshot", "peek_seq", "read_snapshot", "snapshot_path", "write_snapshot"]

_MAGIC = b"AMALFAVS"
_FORMAT = 1
_HEADER = struct.Struct("<8sII")  # magic, format, header JSON length
_ALIGN = 4096  # the data starts page-aligned
_MAX_HEADER = 1 << 20


def _data_offset(header_json_length: int) -> int:
    return -(-(_HEADER.size + header_json_length) // _ALIGN) * _ALIGN
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
    expected = snap.data_offset + snap.n * 8 + snap.n * snap.dim * 4
    if snap.n < 0 or snap.dim <= 0 or os.fstat(handle.fileno()).st_size != expected:  # type: ignore[attr-defined]
        return None
    return snap


def read_snapshot(path: Path, *, database_id: str, source: str, dim: int,
                  spare_rows: int = 0) -> tuple[Snapshot, npt.NDArray[np.int64],
                                               npt.NDArray[np.float32]] | None:
    """The header and (rowids, matrix) of a snapshot that matches; None when it is missing or
    does not match (the caller then rebuilds). The sampled rows are left for the caller to check.

    The rowids are read into a fresh array with ``spare_rows`` of room. A matrix of at least
    :data:`MAP_MIN_BYTES` is memory-mapped copy-on-write (``MAP_PRIVATE``) instead of read: the
    first scan pulls the pages in as it goes, one pass over memory instead of a copy and then a
    scan (measured at 1M x 384: the copy alone cost more than vec0's whole cold query), and rows
    the engine later changes become private pages of this process only, never written back.
    A smaller one is read into a fresh array with ``spare_rows`` of room, one reader per core."""
    try:
        with open(path, "rb", buffering=0) as handle:
            snap = _read_header(handle, path)
            if (snap is None or snap.database_id != database_id or snap.source != source
                    or snap.dim != dim):
                return None
            capacity = snap.n + spare_rows
            rowids = np.empty(capacity, np.int64)
            fd = handle.fileno()
            _read_at(fd, rowids[:snap.n].data.cast("B"), snap.data_offset)
            start = snap.data_offset + 8 * snap.n
            if snap.n * dim * 4 >= MAP_MIN_BYTES:
                mapped = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE,
                                   prot=mmap.PROT_READ | mmap.PROT_WRITE)
                if hasattr(mmap, "MADV_WILLNEED"):
                    mapped.madvise(mmap.MADV_WILLNEED)  # start reading ahead of the first scan
                matrix = np.frombuffer(mapped, np.float32, count=snap.n * dim,
                                       offset=start).reshape(snap.n, dim)
            else:
                matrix = np.empty((capacity, dim), np.float32)
                _read_parallel(fd, matrix[:snap.n].data.cast("B"), start)
            return snap, rowids, matrix
    except (OSError, EOFError):
        return None


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
                   skipped: list[int] | None = None) -> bool:
    """Write the live rows atomically; False when the folder is not writable (no snapshot then:
    it is only a cache). Rows are written a block at a time, so no second matrix is made."""
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
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(header.ljust(_data_offset(len(head)), b"\0"))
            for part in (rowids, matrix):
                for begin in range(0, n_slots, _WRITE_BLOCK_ROWS):
                    block = part[begin:begin + _WRITE_BLOCK_ROWS]
                    if keep is not None:
                        block = block[keep[begin:begin + _WRITE_BLOCK_ROWS]]
                    out.write(np.ascontiguousarray(block).data)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False

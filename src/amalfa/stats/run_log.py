"""The run log: one JSON line per pipeline run, appended to ``.amalfa/runs.jsonl``.

Concurrent writers are safe without a lock: each record is one ``os.write`` of one whole line on
an ``O_APPEND`` descriptor, so lines never interleave.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from amalfa._text import parse_json, utc_now_iso
from amalfa.settings import Settings
from amalfa.stats._common import settings_or_load

__all__ = ["COST_PER_CACHE_MISS_USD", "RUNS_FILE_NAME", "StatsLogger"]

RUNS_FILE_NAME = "runs.jsonl"
# The original's rough estimate of what one cache miss (one model call) costs, in US dollars.
COST_PER_CACHE_MISS_USD = 0.001


class StatsLogger:
    """An append-only log of pipeline runs, one JSON object per line (``.amalfa/runs.jsonl``).

    Each record is written with a single ``os.write`` of one whole line on an ``O_APPEND``
    descriptor, so concurrent writers never interleave inside a line. A writer that crashed
    mid-line leaves a torn line: the reader skips it, and the next record starts on a fresh line.
    """

    def __init__(self, *, path: str | Path | None = None, settings: Settings | None = None):
        if path is None:
            path = settings_or_load(settings).folders.base / RUNS_FILE_NAME
        self._path = Path(path)

    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    def log_run(self, operation: str, /, **fields: Any) -> dict[str, Any]:
        """Append a run of ``operation`` with the given fields; returns the record as written.

        ``timestamp`` is filled in unless given. Field values must be JSON-serialisable.
        """
        if not isinstance(operation, str) or not operation:
            raise ValueError(f"operation must be a non-empty string, got {operation!r}")
        if "operation" in fields:
            raise TypeError("operation is given once, as the first argument")
        record: dict[str, Any] = {"timestamp": fields.pop("timestamp", None) or utc_now_iso()}
        record["operation"] = operation
        record.update(fields)
        # allow_nan=False: NaN is not JSON and would make the line unreadable elsewhere.
        line = (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()
        self._append(line)
        return record

    def log_harvest(
        self,
        *,
        files: int,
        hits: int,
        misses: int,
        skipped: int = 0,
        errors: int = 0,
        duration_ms: float,
    ) -> dict[str, Any]:
        """Log a harvest; its estimated cost is 0.001 USD per cache miss (one model call)."""
        return self.log_run(
            "harvest",
            files_processed=files,
            cache_hits=hits,
            cache_misses=misses,
            skipped=skipped,
            errors=errors,
            duration_ms=duration_ms,
            cost_usd=round(misses * COST_PER_CACHE_MISS_USD, 6),
        )

    def log_init(
        self, *, files: int, nodes: int, edges: int, duration_ms: float, errors: int = 0
    ) -> dict[str, Any]:
        """Log an initialisation (ingestion) run."""
        return self.log_run(
            "init",
            files_processed=files,
            nodes=nodes,
            edges=edges,
            duration_ms=duration_ms,
            errors=errors,
        )

    def runs(self) -> Iterator[dict[str, Any]]:
        """Iterate the logged runs, oldest first.

        A last line without its newline is a write in progress or a torn write; it is skipped
        silently. A broken line elsewhere (left by a crashed writer) is skipped with a warning.
        """
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return
        # The last piece is b"" when the file ends with a newline, else the unfinished line.
        complete_lines = data.split(b"\n")[:-1]
        for number, raw in enumerate(complete_lines, start=1):
            if not raw.strip():
                continue
            try:
                record = parse_json(raw)
            except ValueError:  # not JSON, not UTF-8, or nested too deeply
                record = None
            if not isinstance(record, dict):
                warnings.warn(
                    f"{self._path}: line {number} is not a JSON object (a torn write?); skipped",
                    UserWarning,
                    stacklevel=2,
                )
                continue
            yield record

    def _append(self, line: bytes) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            # A crashed writer may have left a line without its newline; start on a fresh line
            # so this record is not glued to the torn one. A race here costs a blank line only.
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            written = os.write(fd, line)
            # A regular file only writes short when the disk is full or a signal interrupted;
            # finish the line rather than leave it torn.
            while written < len(line):
                written += os.write(fd, line[written:])
        finally:
            os.close(fd)


"""What is recorded after an ingest run: a snapshot (validated against the previous one first),
a line in the run log, the per-domain counts and, when a baseline file exists, their check.

Every front end that ingests (``amalfa init``, the watcher, the MCP server) calls
:func:`record_ingest_run` once per run, so the history, the log and the baseline mean the same
thing whoever ran the ingest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from amalfa.stats.baselines import BASELINE_FILE_NAME, IngestionStats, Mismatch
from amalfa.stats.history import Snapshot, StatsTracker, ValidationResult
from amalfa.stats.run_log import StatsLogger

if TYPE_CHECKING:
    from pathlib import Path

    from amalfa.db import DatabaseStats
    from amalfa.settings import Settings

__all__ = ["IngestRecord", "IngestRun", "record_ingest_run"]


class IngestRun(Protocol):
    """What :func:`record_ingest_run` reads of an ingest result (``amalfa.ingest``'s)."""

    @property
    def files(self) -> int: ...

    @property
    def seconds(self) -> dict[str, float]: ...

    @property
    def skipped(self) -> list[tuple[Path, str]]: ...

    def record(self, stats: IngestionStats) -> None: ...


@dataclass(frozen=True, slots=True)
class IngestRecord:
    """What recording a run found: the snapshot taken, its validation against the previous
    one, the per-domain counts, and the baseline mismatches (None when there is no baseline:
    verification is opt-in)."""

    snapshot: Snapshot
    validation: ValidationResult
    ingestion: IngestionStats
    mismatches: list[Mismatch] | None


def record_ingest_run(settings: Settings, run: IngestRun, counts: DatabaseStats, *,
                      version: str | None = None) -> IngestRecord:
    """Record one ingest run of the project ``settings`` describe: ``counts`` are the
    database's counts after it, ``version`` the amalfa version that ran it."""
    snapshot = Snapshot(nodes=counts.nodes, edges=counts.edges, embeddings=counts.vectors,
                        db_size_mb=round(counts.db_size_mb, 4), version=version)
    tracker = StatsTracker(settings=settings)
    validation = tracker.validate(snapshot)  # against the previous run, before recording this
    tracker.record(snapshot)
    StatsLogger(settings=settings).log_init(
        files=run.files, nodes=counts.nodes, edges=counts.edges,
        duration_ms=round(run.seconds["total"] * 1000, 1), errors=len(run.skipped))
    ingestion = IngestionStats(settings=settings)
    run.record(ingestion)
    baseline = settings.folders.base / BASELINE_FILE_NAME
    mismatches = None
    if baseline.is_file():
        ingestion.load_baseline(baseline)
        mismatches = ingestion.verify_against_baseline()
    return IngestRecord(snapshot, validation, ingestion, mismatches)

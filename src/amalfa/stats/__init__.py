"""Keeping the state honest over time: a snapshot history, a run log and ingestion baselines.

Three small record keepers, each with its own file under the project's ``.amalfa`` folder and
its own module:

* :mod:`amalfa.stats.history`: :class:`StatsTracker`, the newest 100 database snapshots and the
  rules a new state must pass;
* :mod:`amalfa.stats.run_log`: :class:`StatsLogger`, one JSON line per pipeline run;
* :mod:`amalfa.stats.baselines`: :class:`IngestionStats`, per-domain counts checked against a
  baseline file within its tolerances;

and :mod:`amalfa.stats.after_ingest`, which runs all three after an ingest
(:func:`record_ingest_run`), so every front end records a run the same way.
"""

from __future__ import annotations

from amalfa.errors import BaselineError
from amalfa.stats.after_ingest import IngestRecord, record_ingest_run
from amalfa.stats.baselines import BASELINE_FILE_NAME, DomainStats, IngestionStats, Mismatch
from amalfa.stats.history import (
    HISTORY_FILE_NAME,
    HISTORY_LIMIT,
    Snapshot,
    StatsTracker,
    ValidationResult,
)
from amalfa.stats.run_log import COST_PER_CACHE_MISS_USD, RUNS_FILE_NAME, StatsLogger

__all__ = [
    "BASELINE_FILE_NAME",
    "COST_PER_CACHE_MISS_USD",
    "HISTORY_FILE_NAME",
    "HISTORY_LIMIT",
    "RUNS_FILE_NAME",
    "BaselineError",
    "DomainStats",
    "IngestRecord",
    "IngestionStats",
    "Mismatch",
    "Snapshot",
    "StatsLogger",
    "StatsTracker",
    "ValidationResult",
    "record_ingest_run",
]

"""Keeping the state honest over time: a snapshot history, a run log and ingestion baselines.

Three small record keepers, each with its own file:

* :class:`StatsTracker` keeps the newest 100 database snapshots in
  ``.amalfa/stats-history.json`` and validates a new state against the latest one, so a run that
  silently lost half the graph is caught before anyone relies on it.
* :class:`StatsLogger` appends one JSON line per pipeline run to ``.amalfa/runs.jsonl``.
* :class:`IngestionStats` counts what one ingestion produced per domain and compares the counts
  with a baseline file within its tolerances.

The files are shared by every process working on the project, so writes are made safe for
concurrent writers: the history is rewritten atomically (temporary file, ``os.replace``) under an
exclusive ``fcntl`` lock on a side file, and the run log is only ever appended to with one
``write`` of one whole line on an ``O_APPEND`` descriptor. History is never thrown away silently:
a history file that cannot be parsed is renamed aside with a warning before a fresh one starts.

Locking uses ``fcntl`` and so needs a POSIX system.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from amalfa._atomic import atomic_write_text as _atomic_write_text
from amalfa.errors import BaselineError
from amalfa.settings import Settings, load_settings

__all__ = [
    "HISTORY_LIMIT",
    "BaselineError",
    "DomainStats",
    "IngestionStats",
    "Mismatch",
    "Snapshot",
    "StatsLogger",
    "StatsTracker",
    "ValidationResult",
]

HISTORY_LIMIT = 100
HISTORY_FILE_NAME = "stats-history.json"
RUNS_FILE_NAME = "runs.jsonl"
BASELINE_FILE_NAME = "ingestion-baseline.json"
# The original's rough estimate of what one cache miss (one model call) costs, in US dollars.
COST_PER_CACHE_MISS_USD = 0.001


def _utc_now() -> str:
    """An ISO 8601 UTC timestamp with milliseconds, as JavaScript's ``toISOString`` writes it."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _settings_or_load(settings: Settings | None) -> Settings:
    return settings if settings is not None else load_settings()


# --------------------------------------------------------------------------------------------
# StatsTracker
# --------------------------------------------------------------------------------------------


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        if isinstance(value, float) and value.is_integer() and value >= 0:
            return int(value)
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def _megabytes(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The size of the database at one moment.

    ``gates`` holds optional named counts (for example how many pre-publish gates passed);
    ``version`` the amalfa or corpus version that produced the state. An empty ``timestamp`` is
    filled in by :meth:`StatsTracker.record`.
    """

    nodes: int
    edges: int
    embeddings: int
    db_size_mb: float = 0.0
    timestamp: str = ""
    gates: dict[str, int] | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        # Validate on construction so a bad count never reaches the history file.
        object.__setattr__(self, "nodes", _count(self.nodes, "nodes"))
        object.__setattr__(self, "edges", _count(self.edges, "edges"))
        object.__setattr__(self, "embeddings", _count(self.embeddings, "embeddings"))
        object.__setattr__(self, "db_size_mb", _megabytes(self.db_size_mb, "db_size_mb"))
        if not isinstance(self.timestamp, str):
            raise ValueError(f"timestamp must be a string, got {self.timestamp!r}")
        if self.gates is not None:
            if not isinstance(self.gates, Mapping):
                raise ValueError(f"gates must be a mapping of names to counts, got {self.gates!r}")
            gates = {str(k): _count(v, f"gates[{k!r}]") for k, v in self.gates.items()}
            object.__setattr__(self, "gates", gates)
        if self.version is not None and not isinstance(self.version, str):
            raise ValueError(f"version must be a string, got {self.version!r}")

    @classmethod
    def coerce(cls, current: Snapshot | Mapping[str, Any] | Any) -> Snapshot:
        """Build a snapshot from a mapping or from any object with the same attributes.

        Mappings may use the snake_case names or the history file's ``dbSizeMB``.
        """
        if isinstance(current, Snapshot):
            return current
        if isinstance(current, Mapping):

            def get(name: str, default: Any = None) -> Any:
                return current.get(name, default)

            size = current.get("db_size_mb", current.get("dbSizeMB", 0.0))
        else:

            def get(name: str, default: Any = None) -> Any:
                return getattr(current, name, default)

            size = getattr(current, "db_size_mb", 0.0)
        missing = [name for name in ("nodes", "edges", "embeddings") if get(name) is None]
        if missing:
            raise ValueError(f"a snapshot needs {', '.join(missing)}; got {current!r}")
        return cls(
            nodes=get("nodes"),
            edges=get("edges"),
            embeddings=get("embeddings"),
            db_size_mb=size,
            timestamp=get("timestamp") or "",
            gates=get("gates"),
            version=get("version"),
        )

    def to_json(self) -> dict[str, Any]:
        """The history file's form of the snapshot (the original camelCase keys)."""
        record: dict[str, Any] = {
            "timestamp": self.timestamp,
            "nodes": self.nodes,
            "edges": self.edges,
            "embeddings": self.embeddings,
            "dbSizeMB": self.db_size_mb,
        }
        if self.version is not None:
            record["version"] = self.version
        if self.gates is not None:
            record["gates"] = dict(self.gates)
        return record


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The outcome of :meth:`StatsTracker.validate`: errors make it invalid, warnings do not."""

    valid: bool
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.valid


class _CorruptHistory(Exception):
    """Internal: the history file could not be understood (the message says why)."""


@dataclass(slots=True)
class _History:
    snapshots: list[Snapshot]
    created: str
    last_updated: str

    @classmethod
    def fresh(cls) -> _History:
        now = _utc_now()
        return cls(snapshots=[], created=now, last_updated=now)

    @classmethod
    def parse(cls, text: str) -> _History:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _CorruptHistory(f"invalid JSON at line {exc.lineno}: {exc.msg}") from None
        except RecursionError:  # json raises it, not JSONDecodeError, for too deep nesting
            raise _CorruptHistory("invalid JSON: nested too deeply") from None
        if not isinstance(data, dict) or not isinstance(data.get("snapshots"), list):
            raise _CorruptHistory("expected an object with a 'snapshots' list")
        snapshots = []
        for index, item in enumerate(data["snapshots"]):
            if not isinstance(item, dict):
                raise _CorruptHistory(f"snapshots[{index}] is not an object")
            try:
                snapshots.append(Snapshot.coerce(item))
            except ValueError as exc:
                raise _CorruptHistory(f"snapshots[{index}]: {exc}") from None
        now = _utc_now()
        created, updated = data.get("created"), data.get("lastUpdated")
        return cls(
            snapshots=snapshots,
            created=created if isinstance(created, str) else now,
            last_updated=updated if isinstance(updated, str) else now,
        )

    def to_text(self) -> str:
        data = {
            "snapshots": [snapshot.to_json() for snapshot in self.snapshots],
            "created": self.created,
            "lastUpdated": self.last_updated,
        }
        return json.dumps(data, indent=2) + "\n"


class StatsTracker:
    """Database snapshots over time (newest :data:`HISTORY_LIMIT` kept) and their validation.

    The history lives in ``.amalfa/stats-history.json`` under the settings' root, or in ``path``.
    Safe to use from several processes at once: :meth:`record` holds an exclusive lock on
    ``<path>.lock`` for its read-modify-write, and readers need no lock because the file is
    only ever replaced whole.
    """

    def __init__(self, *, path: str | Path | None = None, settings: Settings | None = None):
        if path is None:
            path = _settings_or_load(settings).folders.base / HISTORY_FILE_NAME
        self._path = Path(path)
        self._lock_path = self._path.with_name(self._path.name + ".lock")

    @property
    def path(self) -> Path:
        """The history file."""
        return self._path

    # -- reading ----------------------------------------------------------------------------

    def all(self) -> list[Snapshot]:
        """Every kept snapshot, oldest first."""
        return self._load().snapshots

    def latest(self) -> Snapshot | None:
        """The newest snapshot, or None when there is no history yet."""
        snapshots = self._load().snapshots
        return snapshots[-1] if snapshots else None

    def summary(self) -> str:
        """A few lines on growth from the first kept snapshot to the latest."""
        snapshots = self._load().snapshots
        if not snapshots:
            return "No historical data available"
        oldest, latest = snapshots[0], snapshots[-1]
        node_growth = latest.nodes - oldest.nodes
        edge_growth = latest.edges - oldest.edges
        return "\n".join(
            [
                "Database growth summary",
                f"   First snapshot:  {oldest.timestamp}",
                f"   Latest snapshot: {latest.timestamp}",
                f"   Total snapshots: {len(snapshots)}",
                "",
                "Current state:",
                f"   Nodes: {latest.nodes} ({node_growth:+d} from first)",
                f"   Edges: {latest.edges} ({edge_growth:+d} from first)",
                f"   Embeddings: {latest.embeddings}",
                f"   Database size: {latest.db_size_mb:.2f} MB",
            ]
        )

    # -- writing ----------------------------------------------------------------------------

    def record(self, snapshot: Snapshot | Mapping[str, Any] | Any) -> Snapshot:
        """Append a snapshot (its timestamp filled in when empty) and keep the newest 100.

        Returns the snapshot as stored.
        """
        snapshot = Snapshot.coerce(snapshot)
        if not snapshot.timestamp:
            snapshot = Snapshot(
                nodes=snapshot.nodes,
                edges=snapshot.edges,
                embeddings=snapshot.embeddings,
                db_size_mb=snapshot.db_size_mb,
                timestamp=_utc_now(),
                gates=snapshot.gates,
                version=snapshot.version,
            )
        with self._locked():
            history = self._load_locked()
            history.snapshots.append(snapshot)
            del history.snapshots[:-HISTORY_LIMIT]
            history.last_updated = snapshot.timestamp
            _atomic_write_text(self._path, history.to_text())
        return snapshot

    # -- validation -------------------------------------------------------------------------

    def validate(self, current: Snapshot | Mapping[str, Any] | Any) -> ValidationResult:
        """Check a state before it is recorded, by the original rules.

        Errors (the state is unusable): 0 nodes; 0 embeddings.
        Warnings, against the latest snapshot: nodes or edges below 80% of it; no growth at all.
        Warnings on the state itself: fewer than 0.1 edges per node; fewer than 90% of the nodes
        with an embedding.
        """
        current = Snapshot.coerce(current)
        warnings_: list[str] = []
        errors: list[str] = []

        if current.nodes == 0:
            errors.append("Database has 0 nodes - database is empty")
        if current.embeddings == 0:
            errors.append("Database has 0 embeddings - vector search will not work")

        latest = self.latest()
        if latest is not None:
            # The comparisons are false when the latest count is 0, so no division by zero.
            if current.nodes < latest.nodes * 0.8:
                drop = round((latest.nodes - current.nodes) / latest.nodes * 100)
                warnings_.append(
                    f"Node count decreased significantly: {latest.nodes} -> {current.nodes} "
                    f"(-{drop}%)"
                )
            if current.edges < latest.edges * 0.8:
                drop = round((latest.edges - current.edges) / latest.edges * 100)
                warnings_.append(
                    f"Edge count decreased significantly: {latest.edges} -> {current.edges} "
                    f"(-{drop}%)"
                )
            if current.nodes == latest.nodes and current.edges == latest.edges:
                warnings_.append(
                    "No growth in nodes or edges since last snapshot - "
                    "is documentation being updated?"
                )

        density = current.edges / current.nodes if current.nodes > 0 else 0.0
        if density < 0.1:
            warnings_.append(
                f"Low edge density: {density:.2f} edges per node - documents may be poorly linked"
            )

        # False when nodes is 0 (embeddings cannot be negative), so no division by zero.
        if current.embeddings < current.nodes * 0.9:
            coverage = round(current.embeddings / current.nodes * 100)
            warnings_.append(
                f"Only {coverage}% of nodes have embeddings - some nodes may not be searchable"
            )

        return ValidationResult(valid=not errors, warnings=warnings_, errors=errors)

    # -- the file ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the exclusive lock that serialises read-modify-write across processes."""
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        # The lock file is never deleted: deleting it would let two processes lock two
        # different files of the same name.
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _load(self) -> _History:
        """Read without the lock; a corrupt file is dealt with under the lock."""
        try:
            return self._parse(self._path.read_bytes())
        except FileNotFoundError:
            return _History.fresh()
        except _CorruptHistory:
            with self._locked():
                return self._load_locked()

    def _load_locked(self) -> _History:
        """Read with the lock held; a corrupt file is moved aside and a fresh history begins."""
        try:
            return self._parse(self._path.read_bytes())
        except FileNotFoundError:
            return _History.fresh()
        except _CorruptHistory as exc:
            moved_to = self._move_aside()
            warnings.warn(
                f"stats history {self._path} is corrupt ({exc}); moved it to {moved_to} "
                "and started a fresh history",
                UserWarning,
                stacklevel=4,
            )
            return _History.fresh()

    @staticmethod
    def _parse(data: bytes) -> _History:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _CorruptHistory(f"not UTF-8 ({exc.reason})") from None
        return _History.parse(text)

    def _move_aside(self) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        target = self._path.with_name(f"{self._path.name}.corrupt-{stamp}")
        suffix = 1
        while target.exists():
            target = self._path.with_name(f"{self._path.name}.corrupt-{stamp}-{suffix}")
            suffix += 1
        os.replace(self._path, target)
        return target


# --------------------------------------------------------------------------------------------
# StatsLogger
# --------------------------------------------------------------------------------------------


class StatsLogger:
    """An append-only log of pipeline runs, one JSON object per line (``.amalfa/runs.jsonl``).

    Each record is written with a single ``os.write`` of one whole line on an ``O_APPEND``
    descriptor, so concurrent writers never interleave inside a line. A writer that crashed
    mid-line leaves a torn line: the reader skips it, and the next record starts on a fresh line.
    """

    def __init__(self, *, path: str | Path | None = None, settings: Settings | None = None):
        if path is None:
            path = _settings_or_load(settings).folders.base / RUNS_FILE_NAME
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
        record: dict[str, Any] = {"timestamp": fields.pop("timestamp", None) or _utc_now()}
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
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                record = None  # RecursionError: json's answer to too deep nesting
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


# --------------------------------------------------------------------------------------------
# IngestionStats
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class DomainStats:
    """What one ingestion produced in one domain."""

    nodes: int = 0
    edges: dict[str, int] = field(default_factory=dict)  # by edge type
    vectors: int = 0
    semantic_tokens: int = 0

    @property
    def edges_total(self) -> int:
        """All edges of every type."""
        return sum(self.edges.values())

    def metric(self, name: str) -> int:
        """A metric by its baseline name: nodes, vectors, semantic_tokens, edges.total, edges.T."""
        if name == "edges.total":
            return self.edges_total
        if name.startswith("edges."):
            return self.edges.get(name.removeprefix("edges."), 0)
        return int(getattr(self, name))


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A metric outside its tolerance: ``variance = |actual - expected| / expected``.

    When ``expected`` is 0, any other ``actual`` has infinite variance (the original treated it
    as 0 and so never noticed that something appeared from nothing).
    """

    domain: str
    metric: str
    expected: int
    actual: int
    delta: int
    variance: float
    tolerance: float


@dataclass(frozen=True, slots=True)
class _Baseline:
    source: Path
    version: str | None
    domains: dict[str, dict[str, int]]  # domain -> metric name -> expected
    tolerances: dict[str, float]  # metric family (nodes, edges, vectors, semantic_tokens)


_METRIC_FAMILIES = ("nodes", "edges", "vectors", "semantic_tokens")


def _variance(expected: int, actual: int) -> float:
    if expected == 0:
        return 0.0 if actual == 0 else math.inf
    return abs(actual - expected) / expected


class IngestionStats:
    """Per-domain ingestion counters and their verification against a baseline file.

    Domains are any names (``"persona"``, ``"experience"``...); a domain exists once something
    is recorded in it or it is named in the constructor.

    The baseline file (``.amalfa/ingestion-baseline.json`` by default) looks like this::

        {
          "version": "1.0",
          "description": "what this baseline was taken from",
          "domains": {
            "persona":    {"nodes": 185, "edges": {"total": 300, "RELATES_TO": 120},
                           "vectors": 185},
            "experience": {"nodes": 420, "edges": 1700, "vectors": 420,
                           "semantic_tokens": 900}
          },
          "tolerances": {"nodes": 0.05, "edges": 0.1, "vectors": 0.05, "semantic_tokens": 0.2}
        }

    ``nodes`` and ``edges`` are a number or an object with a ``total`` (edge types named next to
    ``total`` are checked too, with the edges tolerance). Only the metrics a domain names are
    checked. A metric family without a tolerance must match exactly. The original layout
    (domains at the top level, ``"tolerance"`` in the singular) is read as well.
    """

    def __init__(
        self,
        domains: Iterable[str] = (),
        *,
        baseline_path: str | Path | None = None,
        settings: Settings | None = None,
    ):
        self._metrics: dict[str, DomainStats] = {}
        for domain in domains:
            self._domain(domain)
        self._default_baseline_path = Path(baseline_path) if baseline_path is not None else None
        self._settings = settings
        self._baseline: _Baseline | None = None

    # -- counting ---------------------------------------------------------------------------

    def record_node(self, domain: str, count: int = 1) -> None:
        """Count ``count`` nodes created in ``domain``."""
        self._domain(domain).nodes += _count(count, "count")

    def record_edge(self, domain: str, edge_type: str, count: int = 1) -> None:
        """Count ``count`` edges of ``edge_type`` created in ``domain``."""
        if not isinstance(edge_type, str) or not edge_type or edge_type == "total":
            raise ValueError(
                f"edge_type must be a non-empty name other than 'total', got {edge_type!r}"
            )
        stats = self._domain(domain)
        stats.edges[edge_type] = stats.edges.get(edge_type, 0) + _count(count, "count")

    def record_vector(self, domain: str, count: int = 1) -> None:
        """Count ``count`` vectors stored in ``domain``."""
        self._domain(domain).vectors += _count(count, "count")

    def record_semantic_tokens(self, domain: str, count: int = 1) -> None:
        """Count ``count`` semantic tokens extracted in ``domain``."""
        self._domain(domain).semantic_tokens += _count(count, "count")

    def metrics(self) -> dict[str, DomainStats]:
        """The counters by domain (live objects: a copy is not made)."""
        return self._metrics

    def _domain(self, domain: str) -> DomainStats:
        if not isinstance(domain, str) or not domain:
            raise ValueError(f"domain must be a non-empty string, got {domain!r}")
        stats = self._metrics.get(domain)
        if stats is None:
            stats = self._metrics[domain] = DomainStats()
        return stats

    # -- the baseline -----------------------------------------------------------------------

    @property
    def has_baseline(self) -> bool:
        """Whether a baseline is loaded (verification is skipped without one)."""
        return self._baseline is not None

    def load_baseline(self, path: str | Path | None = None) -> bool:
        """Load the baseline from ``path`` (default: the constructor's, else the settings').

        A missing file warns and leaves verification off (returns False): a project that never
        took a baseline should still ingest. A file that exists but is malformed raises
        :class:`BaselineError`, because skipping a check the user set up would hide failures.
        """
        if path is None:
            path = self._default_baseline_path
        if path is None:
            path = _settings_or_load(self._settings).folders.base / BASELINE_FILE_NAME
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._baseline = None
            warnings.warn(
                f"no baseline found at {path}; skipping baseline verification",
                UserWarning,
                stacklevel=2,
            )
            return False
        self._baseline = _parse_baseline(path, text)
        return True

    def verify_against_baseline(self) -> list[Mismatch]:
        """Every baseline metric outside its tolerance (an empty list when all are within).

        Without a loaded baseline this warns and returns an empty list.
        """
        baseline = self._baseline
        if baseline is None:
            warnings.warn(
                "no baseline loaded; skipping baseline verification", UserWarning, stacklevel=2
            )
            return []
        mismatches = []
        for domain, expected_metrics in baseline.domains.items():
            actual_stats = self._metrics.get(domain, DomainStats())
            for metric, expected in expected_metrics.items():
                actual = actual_stats.metric(metric)
                tolerance = baseline.tolerances.get(metric.split(".")[0], 0.0)
                variance = _variance(expected, actual)
                if variance > tolerance:
                    mismatches.append(
                        Mismatch(
                            domain, metric, expected, actual, actual - expected, variance, tolerance
                        )
                    )
        return mismatches

    # -- reporting --------------------------------------------------------------------------

    def summary(self) -> str:
        """The counters of every domain as text."""
        rule = "=" * 60
        lines = ["Ingestion summary", rule]
        for domain, stats in self._metrics.items():
            lines += [
                "",
                f"{domain}:",
                f"   Nodes:   {stats.nodes}",
                f"   Edges:   {stats.edges_total}",
            ]
            lines += [f"      {kind}: {n}" for kind, n in sorted(stats.edges.items())]
            lines += [
                f"   Vectors: {stats.vectors}",
                f"   Tokens:  {stats.semantic_tokens}",
            ]
        if not self._metrics:
            lines.append("(nothing recorded)")
        lines += ["", rule]
        return "\n".join(lines)

    def print_summary(self, *, file: IO[str] | None = None) -> None:
        """Print :meth:`summary` (to stdout unless ``file`` is given)."""
        print(self.summary(), file=file or sys.stdout)

    @staticmethod
    def verification_table(mismatches: list[Mismatch]) -> str:
        """The verification result as text: PASSED, or FAILED with one row per mismatch."""
        if not mismatches:
            return "Baseline verification: PASSED"
        header = ("Domain", "Metric", "Expected", "Actual", "Delta", "Variance")
        rows = [header] + [
            (
                m.domain,
                m.metric,
                str(m.expected),
                str(m.actual),
                f"{m.delta:+d}",
                _percent(m.variance),
            )
            for m in mismatches
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        rendered = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        rendered.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(["Baseline verification: FAILED", *rendered])

    def print_verification(
        self, mismatches: list[Mismatch] | None = None, *, file: IO[str] | None = None
    ) -> list[Mismatch]:
        """Print the verification table (verifying now unless ``mismatches`` is given)."""
        if mismatches is None:
            mismatches = self.verify_against_baseline() if self.has_baseline else []
        print(self.verification_table(mismatches), file=file or sys.stdout)
        return mismatches

    def generate_report(self, path: str | Path) -> Path:
        """Write a Markdown report: a table per domain and the baseline violations, if any."""
        path = Path(path)
        baseline = self._baseline
        mismatches = self.verify_against_baseline() if baseline is not None else []
        outside = {(m.domain, m.metric) for m in mismatches}
        today = datetime.now(timezone.utc).date().isoformat()

        lines = [f"# Ingestion report: {today}", ""]
        if baseline is None:
            lines += ["No baseline loaded; counts are not verified.", ""]
        else:
            version = f" (version {baseline.version})" if baseline.version else ""
            lines += [f"Baseline: `{baseline.source}`{version}", ""]

        domains = list(self._metrics)
        if baseline is not None:
            domains += [d for d in baseline.domains if d not in self._metrics]
        for domain in domains:
            stats = self._metrics.get(domain, DomainStats())
            expected_metrics = baseline.domains.get(domain, {}) if baseline else {}
            names = [
                "nodes",
                "edges.total",
                *(f"edges.{t}" for t in sorted(stats.edges)),
                "vectors",
                "semantic_tokens",
            ]
            names += [n for n in expected_metrics if n not in names]
            lines += [
                f"## {domain}",
                "",
                "| Metric | Expected | Actual | Status |",
                "|--------|----------|--------|--------|",
            ]
            for name in names:
                actual = stats.metric(name)
                if name in expected_metrics:
                    status = "❌" if (domain, name) in outside else "✅"
                    expected_cell = str(expected_metrics[name])
                else:
                    status, expected_cell = "-", "-"
                lines.append(f"| {name} | {expected_cell} | {actual} | {status} |")
            lines.append("")

        if mismatches:
            lines += [
                "## Baseline violations",
                "",
                "| Domain | Metric | Expected | Actual | Delta | Variance | Tolerance |",
                "|--------|--------|----------|--------|-------|----------|-----------|",
            ]
            lines += [
                f"| {m.domain} | {m.metric} | {m.expected} | {m.actual} | {m.delta:+d} | "
                f"{_percent(m.variance)} | {_percent(m.tolerance)} |"
                for m in mismatches
            ]
            lines.append("")
        elif baseline is not None:
            lines += ["All baseline metrics are within tolerance.", ""]

        _atomic_write_text(path, "\n".join(lines))
        return path


def _percent(fraction: float) -> str:
    return "inf" if math.isinf(fraction) else f"{fraction * 100:.1f}%"


def _parse_baseline(path: Path, text: str) -> _Baseline:
    """Validate a baseline file (see :class:`IngestionStats` for the layout)."""

    def fail(message: str) -> BaselineError:
        return BaselineError(f"baseline {path}: {message}")

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:  # json raises it, not JSONDecodeError, for too deep nesting
        raise fail("invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise fail("expected a JSON object")

    def expect_count(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise fail(f"{key} must be an integer >= 0, got {json.dumps(value)}")
        return value

    if "domains" in data:
        raw_domains = data["domains"]
        if not isinstance(raw_domains, dict):
            raise fail("domains must be an object of domain name -> expected counts")
    else:  # the original layout: domains beside "tolerance" at the top level
        raw_domains = {k: v for k, v in data.items() if isinstance(v, dict) and "nodes" in v}
        if not raw_domains:
            raise fail("no domains found (expected a 'domains' object)")

    domains: dict[str, dict[str, int]] = {}
    for domain, raw in raw_domains.items():
        if not isinstance(raw, dict):
            raise fail(f"domains.{domain} must be an object")
        expected: dict[str, int] = {}
        for family in _METRIC_FAMILIES:
            if family not in raw:
                continue
            value, key = raw[family], f"domains.{domain}.{family}"
            if family in ("nodes", "edges") and isinstance(value, dict):
                if "total" not in value:
                    raise fail(f"{key} must have a 'total'")
                expected[f"{family}.total" if family == "edges" else "nodes"] = expect_count(
                    value["total"], f"{key}.total"
                )
                if family == "edges":  # node kinds are informational; edge types are checked
                    for kind, n in value.items():
                        if kind != "total":
                            expected[f"edges.{kind}"] = expect_count(n, f"{key}.{kind}")
            else:
                name = "edges.total" if family == "edges" else family
                expected[name] = expect_count(value, key)
        domains[domain] = expected

    raw_tolerances = data.get("tolerances", data.get("tolerance", {}))
    if not isinstance(raw_tolerances, dict):
        raise fail("tolerances must be an object of metric -> fraction")
    tolerances: dict[str, float] = {}
    for family, value in raw_tolerances.items():
        if family not in _METRIC_FAMILIES:
            continue  # e.g. the original's "description"
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value >= 0)
        ):
            raise fail(f"tolerances.{family} must be a number >= 0, got {json.dumps(value)}")
        tolerances[family] = float(value)

    version = data.get("version")
    return _Baseline(
        source=path,
        version=str(version) if version is not None else None,
        domains=domains,
        tolerances=tolerances,
    )

"""The snapshot history: the database's size over time, and the rules a new state must pass.

:class:`StatsTracker` keeps the newest :data:`HISTORY_LIMIT` snapshots in
``.amalfa/stats-history.json`` and validates a new state against the latest one, so a run that
silently lost half the graph is caught before anyone relies on it. The file is shared by every
process working on the project: it is rewritten atomically (temporary file, ``os.replace``)
under an exclusive ``fcntl`` lock on a side file, so readers need no lock. History is never
thrown away silently: a file that cannot be parsed is renamed aside with a warning before a
fresh one starts. Locking uses ``fcntl`` and so needs a POSIX system.
"""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amalfa._atomic import atomic_write_text
from amalfa._text import file_stamp, parse_json, utc_now_iso
from amalfa.settings import Settings
from amalfa.stats._common import count_value, megabytes_value, settings_or_load

__all__ = ["HISTORY_FILE_NAME", "HISTORY_LIMIT", "Snapshot", "StatsTracker", "ValidationResult"]

HISTORY_LIMIT = 100
HISTORY_FILE_NAME = "stats-history.json"


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
        object.__setattr__(self, "nodes", count_value(self.nodes, "nodes"))
        object.__setattr__(self, "edges", count_value(self.edges, "edges"))
        object.__setattr__(self, "embeddings", count_value(self.embeddings, "embeddings"))
        object.__setattr__(self, "db_size_mb", megabytes_value(self.db_size_mb, "db_size_mb"))
        if not isinstance(self.timestamp, str):
            raise ValueError(f"timestamp must be a string, got {self.timestamp!r}")
        if self.gates is not None:
            if not isinstance(self.gates, Mapping):
                raise ValueError(f"gates must be a mapping of names to counts, got {self.gates!r}")
            gates = {str(k): count_value(v, f"gates[{k!r}]") for k, v in self.gates.items()}
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
        now = utc_now_iso()
        return cls(snapshots=[], created=now, last_updated=now)

    @classmethod
    def parse(cls, text: str) -> _History:
        try:
            data = parse_json(text)
        except ValueError as exc:
            raise _CorruptHistory(str(exc)) from None
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
        now = utc_now_iso()
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
            path = settings_or_load(settings).folders.base / HISTORY_FILE_NAME
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
                timestamp=utc_now_iso(),
                gates=snapshot.gates,
                version=snapshot.version,
            )
        with self._locked():
            history = self._load_locked()
            history.snapshots.append(snapshot)
            del history.snapshots[:-HISTORY_LIMIT]
            history.last_updated = snapshot.timestamp
            atomic_write_text(self._path, history.to_text())
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
        stamp = file_stamp()
        target = self._path.with_name(f"{self._path.name}.corrupt-{stamp}")
        suffix = 1
        while target.exists():
            target = self._path.with_name(f"{self._path.name}.corrupt-{stamp}-{suffix}")
            suffix += 1
        os.replace(self._path, target)
        return target


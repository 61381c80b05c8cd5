"""The health checks behind ``amalfa doctor``: settings, SQLite build, the database's pragmas,
integrity and schema, the embedding model and the vector daemon.

:func:`diagnose` runs every check and returns a :class:`DoctorReport` of :class:`Check` rows
(``ok``, ``warn`` or ``fail``, a one-line detail for people and data for machines). A failed
check never stops the later ones, except that nothing reads a database the settings cannot
name. The database is opened on a bare connection from :class:`~amalfa.factory.DatabaseFactory`,
never through :class:`~amalfa.db.ResonanceDB`: opening it that way would migrate the schema the
doctor is about to report on. What it reads of the graph's tables it asks the database layer for
(:mod:`amalfa.db.inspect`). The model check finds and sha256-checks the model files but loads
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from amalfa._text import format_size, one_line, show_path
from amalfa.errors import DatabaseError, ModelError, SettingsError

if TYPE_CHECKING:
    from amalfa.embedder import Embedder
    from amalfa.settings import Settings

__all__ = ["Check", "DoctorReport", "diagnose"]

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome: its name, ``ok``/``warn``/``fail``, a line for people and data."""

    name: str
    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status, "detail": self.detail, **self.data}


@dataclass(slots=True)
class DoctorReport:
    """Every check, in the order they ran; ``ok`` when none failed (warnings are fine)."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def failed(self, name: str) -> bool:
        return any(c.name == name and c.status == "fail" for c in self.checks)

    def add(self, name: str, status: Status, detail: str, /, **data: Any) -> None:
        self.checks.append(Check(name, status, detail, data))

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.to_json() for c in self.checks]}


def diagnose(*, settings_file: str | Path | None = None,
             database: str | Path | None = None) -> DoctorReport:
    """Run every check. ``settings_file`` as ``--settings`` gives it (default: the usual
    lookup), ``database`` as ``--db`` does (default: the settings' database)."""
    from amalfa.settings import load_settings

    report = DoctorReport()
    settings: Settings | None = None
    try:
        settings = load_settings(settings_file)
    except SettingsError as exc:
        report.add("settings", "fail", one_line(str(exc)))
    else:
        _check_settings(report, settings)
    if settings is not None:
        path = Path(database).expanduser().absolute() if database else settings.database_path
        recorded = _check_database(report, path)
        _check_model(report, settings, recorded)
    _check_daemon(report, settings.root if settings is not None else None)
    return report


def _check_settings(report: DoctorReport, settings: Settings) -> None:
    origin = show_path(settings.settings_file) if settings.settings_file else "defaults"
    report.add("settings", "ok", f"{origin}; sources {', '.join(settings.sources)}; excluded "
               f"{', '.join(settings.exclude_patterns) or 'nothing'}",
               file=str(settings.settings_file) if settings.settings_file else None,
               root=str(settings.root), sources=settings.sources,
               exclude_patterns=settings.exclude_patterns, model=settings.embeddings.model)


def _check_database(report: DoctorReport, path: Path) -> tuple[str | None, str | None]:
    """SQLite build, pragmas and probe, integrity, schema; returns the recorded model and
    precision."""
    from amalfa import migrations
    from amalfa.db.inspect import node_counts, recorded_model_of, recorded_precision_of
    from amalfa.factory import DatabaseFactory, sqlite_version

    report.add("sqlite", "ok", f"SQLite {sqlite_version()} (amalfa's pinned build)")
    if not path.is_file():
        report.add("database", "warn", f"no database at {show_path(path)} yet; run `amalfa init`",
                   path=str(path))
        return None, None
    try:
        conn = DatabaseFactory.connect(path, create=False)
    except DatabaseError as exc:
        report.add("database", "fail",
                   f"{show_path(path)} cannot be opened: {one_line(str(exc))}")
        return None, None
    try:
        try:
            health = DatabaseFactory.perform_health_check(conn)
        except DatabaseError as exc:
            report.add("pragmas", "fail", one_line(str(exc)))
        else:
            pragmas = ", ".join(f"{k}={v}" for k, v in health.pragmas.items())
            report.add("pragmas", "ok" if health.healthy else "warn",
                       "; ".join(health.warnings) or f"{pragmas}; write/read probe ok",
                       pragmas=health.pragmas)
        try:
            integrity = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        except DatabaseError as exc:
            integrity = [one_line(str(exc))]
        report.add("integrity", "ok" if integrity == ["ok"] else "fail",
                   "PRAGMA integrity_check: " + "; ".join(integrity[:3])
                   + (" ..." if len(integrity) > 3 else ""))
        try:
            state = migrations.inspect_schema(conn)
        except DatabaseError as exc:
            report.add("schema", "fail", one_line(str(exc)))
        else:
            latest = migrations.latest_version()
            status: Status = "ok" if state.version == latest else (
                "fail" if state.version > latest else "warn")
            detail = f"version {state.version} of {latest} ({state.source})"
            if state.version < latest:
                detail += "; the next write migrates it"
            report.add("schema", status, detail, version=state.version, latest=latest)
        recorded = recorded_model_of(conn), recorded_precision_of(conn)
        nodes, vectors = node_counts(conn)
        report.add("database", "ok", f"{show_path(path)}: {nodes} nodes, {vectors} embeddings, "
                   f"{format_size(path.stat().st_size)}", path=str(path), nodes=nodes,
                   embeddings=vectors)
    finally:
        conn.close()
    return recorded


def _check_model(report: DoctorReport, settings: Settings,
                 recorded: tuple[str | None, str | None]) -> None:
    from amalfa._model_choice import embedder_for

    try:
        # The model queries will use (the recorded one wins); finding it loads nothing.
        embedder = embedder_for(settings, *recorded)
    except ModelError as exc:
        report.add("model", "fail", one_line(str(exc)))
        return
    files = embedder.files
    detail = (f"{embedder.model_name} ({files.source}, {files.spec.pooling} pooling, "
              f"{files.spec.dimensions or '?'}-d, max {files.spec.max_length} tokens)")
    report.add("model", "ok", detail, name=embedder.model_name, source=files.source,
               onnx=str(files.onnx_path))
    _check_model_graph(report, embedder)
    wanted = settings.embeddings.dimensions
    if files.spec.dimensions and files.spec.dimensions != wanted:
        report.add("dimensions", "warn", f"the model makes {files.spec.dimensions}-d vectors; "
                   f"the settings say embeddings.dimensions = {wanted}")


def _check_model_graph(report: DoctorReport, embedder: Embedder) -> None:
    """The optimised graph amalfa builds on this machine at first use, as the cache holds it."""
    try:
        status = embedder.graph_status()  # hashes the source; builds and loads nothing
    except ModelError as exc:
        report.add("model graph", "fail", one_line(str(exc)))
        return
    state, precision = status["state"], status["precision"]
    details = {
        "built": (f"{precision} graph built and probed (least cosine "
                  f"{status.get('probe_min_cosine', 0):.5f}; fused {status.get('fused')})"),
        "not built": f"{precision} graph not built yet: it is built at first use (offline)",
        "probe failed": (f"the {precision} graph failed its parity probe; the source graph "
                         "runs instead"),
        "corrupt": f"the cached {precision} graph is corrupt; it is built again at next use",
        "off": "optimisation off: the source graph runs",
    }
    level: Status = "warn" if state in ("probe failed", "corrupt") else "ok"
    report.add("model graph", level, details.get(state, state), **status)


def _check_daemon(report: DoctorReport, root: Path | None) -> None:
    from amalfa import daemon

    try:
        status = daemon.status(root=root)
    except OSError as exc:
        report.add("daemon", "warn", f"cannot read the daemon's status: {one_line(str(exc))}")
        return
    if status.get("stale"):
        report.add("daemon", "warn", f"stale pid file {status.get('pid_file')} (pid "
                   f"{status.get('pid')} is gone); `amalfa daemon stop` removes it",
                   daemon=status)
    elif status.get("running") and not status.get("ready"):
        report.add("daemon", "warn", daemon.describe_status(status), daemon=status)
    else:
        report.add("daemon", "ok", daemon.describe_status(status), daemon=status)

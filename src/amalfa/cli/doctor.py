"""``amalfa doctor``: print the checks of :func:`amalfa.doctor.diagnose`."""

from __future__ import annotations

from amalfa.cli._context import Context
from amalfa.cli._errors import EXIT_ERROR, EXIT_OK
from amalfa.cli._output import render_table
from amalfa.cli._parsing import Commands

ORDER = 40


def register(commands: Commands) -> None:
    commands.add(
        "doctor", "check settings, database, pragmas, integrity, model and daemon",
        "Check everything amalfa depends on: the settings, the SQLite build, the database's "
        "pragmas, a write/read probe, PRAGMA integrity_check, the schema version, the embedding "
        "model (found and verified, not loaded) and the vector daemon. Exits 1 when a check "
        "fails.", cmd_doctor)


def cmd_doctor(ctx: Context) -> int:
    from amalfa.doctor import diagnose

    report = diagnose(settings_file=ctx.settings_file, database=getattr(ctx.args, "db", None))
    if ctx.json:
        ctx.emit_json(report.to_json())
    else:
        ctx.print(render_table(["check", "status", "detail"],
                               [[c.name, c.status, c.detail] for c in report.checks], flex=2))
        ctx.print()
        ctx.print("All checks passed." if report.ok else "Some checks failed.")
    return EXIT_OK if report.ok else EXIT_ERROR

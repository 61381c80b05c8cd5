"""``amalfa checkpoint``: fold the write-ahead log into the database file."""

from __future__ import annotations

from amalfa.cli._context import Context
from amalfa.cli._errors import EXIT_OK
from amalfa.cli._output import show_path
from amalfa.cli._parsing import Commands

ORDER = 50


def register(commands: Commands) -> None:
    commands.add(
        "checkpoint", "fold the write-ahead log into the database file",
        "Run a WAL checkpoint (TRUNCATE): copy the write-ahead log into the database file and "
        "empty it. Useful before copying the file elsewhere.", cmd_checkpoint)


def cmd_checkpoint(ctx: Context) -> int:
    with ctx.open_db() as db:
        log_frames, checkpointed = db.checkpoint()
    if ctx.json:
        ctx.emit_json({"database": str(ctx.db_path), "wal_frames": log_frames,
                       "checkpointed": checkpointed})
    else:
        ctx.print(f"Checkpointed {checkpointed} of {log_frames} WAL frames into "
                  f"{show_path(ctx.db_path)}; the log is truncated.")
    return EXIT_OK


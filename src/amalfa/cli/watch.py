"""``amalfa watch``: keep the database in step with the sources while files change."""

from __future__ import annotations

from typing import Any

from amalfa.cli._context import Context
from amalfa.cli._errors import EXIT_OK, EXIT_USAGE
from amalfa.cli._output import show_path
from amalfa.cli._parsing import Commands
from amalfa.errors import CommandError
from amalfa.limits import DEBOUNCE_MS
from amalfa.settings import WATCH_EVENTS as _EVENTS

ORDER = 15


def register(commands: Commands) -> None:
    watch = commands.add(
        "watch", "re-ingest files as they change, until Ctrl-C",
        "Watch the configured sources and answer every batch of changes with the same "
        "incremental ingest as `amalfa init`: new and edited files are embedded (only the "
        "passages that changed), deleted files lose their nodes, excluded paths are ignored, "
        "and an editor's save-by-rename counts as one update. Each batch is logged in "
        ".amalfa/runs.jsonl. One watcher per database: a second one says the first is "
        "running. Stops cleanly on Ctrl-C or SIGTERM.", cmd_watch)
    watch.add_argument("--debounce", type=DEBOUNCE_MS.argparse(), default=None, metavar="MS",
                       help="group changes over at most MS milliseconds (default: the "
                            "settings' watch.debounce, 1000)")
    watch.add_argument("--events", default=None, metavar="KINDS",
                       help="which changes to answer, comma-separated (default: the "
                            "settings' watch.events, added,modified,deleted)")


def cmd_watch(ctx: Context) -> int:
    import json
    import sys
    from pathlib import Path

    from amalfa.watch import Watcher, WatchBatch

    args = ctx.args
    events = (None if args.events is None
              else [kind.strip() for kind in args.events.split(",") if kind.strip()])
    unknown = [kind for kind in events or () if kind not in _EVENTS]
    if unknown or events == []:
        raise CommandError(f"--events {args.events!r}: unknown kind(s) {', '.join(unknown)}"
                           if unknown else "--events is empty",
                           hint="use some of added,modified,deleted", status=EXIT_USAGE)

    def report(batch: WatchBatch) -> None:
        if ctx.json:
            result = batch.result
            line: dict[str, Any] = {"changes": [{"kind": k, "path": p} for k, p in batch.changes],
                    "error": batch.error, "seconds": round(batch.seconds, 3)}
            if result is not None:
                line.update(added=result.added, updated=result.updated, removed=result.removed,
                            passages_embedded=result.passages_embedded)
            ctx.out.write(json.dumps(line) + "\n")
        else:
            ctx.print(("caught up: " if not batch.changes else "") + batch.summary())
        ctx.out.flush()

    def started(paths: list[Path]) -> None:
        watched = ", ".join(show_path(path) for path in paths)
        print(f"watching {watched} for {show_path(ctx.db_path)} (Ctrl-C to stop)",
              file=sys.stderr, flush=True)

    watcher = Watcher(ctx.settings, db_path=ctx.db_path, debounce_ms=args.debounce,
                      events=events, on_batch=report, on_start=started)
    watcher.run()
    print(f"stopped after {watcher.batches} run(s)", file=sys.stderr)
    return EXIT_OK

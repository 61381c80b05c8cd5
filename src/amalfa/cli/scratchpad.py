"""``amalfa scratchpad list|show|prune|clear|stats``: inspect the cache of large tool outputs."""

from __future__ import annotations

from typing import Any

from amalfa.cli._context import Context
from amalfa.cli._errors import EXIT_OK
from amalfa.cli._output import format_size, one_line, render_pairs, render_table, show_path
from amalfa.cli._parsing import Commands
from amalfa.errors import CommandError

ORDER = 70


def register(commands: Commands) -> None:
    actions = commands.group(
        "scratchpad", "inspect the cache of large tool outputs",
        "The scratchpad keeps large tool outputs on disk under .amalfa/cache/scratchpad and "
        "hands out short references to them.", dest="pad_command")
    actions.add("list", "list the entries, newest first",
                "List every entry's id, tool, size, content type, time and preview.",
                cmd_scratchpad)
    show = actions.add("show", "print one entry's content",
                       "Print the content of an entry (with --json: the entry and its metadata).",
                       cmd_scratchpad)
    show.add_argument("id", metavar="ID", help="the entry id: 12 hex digits, as `list` shows")
    actions.add("prune", "delete entries past the age limit, then the oldest over the size cap",
                "Delete entries older than scratchpad.maxAgeMs, then the oldest ones until the "
                "folder is under scratchpad.maxCacheSizeBytes.", cmd_scratchpad)
    actions.add("clear", "delete every entry", "Delete every scratchpad entry.", cmd_scratchpad)
    actions.add("stats", "count the entries and their size",
                "Show how many entries there are, their total size and their time span.",
                cmd_scratchpad)


def cmd_scratchpad(ctx: Context) -> int:
    from amalfa.scratchpad import Scratchpad

    pad = Scratchpad(settings=ctx.settings)
    action = ctx.args.pad_command
    if action == "list":
        entries = pad.list()
        if ctx.json:
            ctx.emit_json([_entry_json(e) for e in entries])
        elif not entries:
            ctx.print(f"The scratchpad is empty ({show_path(pad.folder)}).")
        else:
            ctx.print(render_table(
                ["id", "tool", "size", "type", "time", "preview"],
                [[e.id, e.tool, format_size(e.size_bytes), e.content_type, e.timestamp,
                  one_line(e.preview)] for e in entries], flex=5))
    elif action == "show":
        try:
            entry = pad.read(ctx.args.id)
        except ValueError as exc:  # not 12 hex digits: refused before any path is built
            raise CommandError(one_line(str(exc)),
                               hint="`amalfa scratchpad list` shows the ids") from None
        if entry is None:
            raise CommandError(f"no scratchpad entry {ctx.args.id}",
                               hint="`amalfa scratchpad list` shows the ids")
        if ctx.json:
            ctx.emit_json({**_entry_json(entry), "content": entry.content})
        else:
            ctx.out.write(entry.content if entry.content.endswith("\n")
                          else entry.content + "\n")
    elif action == "prune":
        pruned = pad.prune()
        if ctx.json:
            ctx.emit_json({"deleted": pruned.deleted, "freed_bytes": pruned.freed_bytes})
        else:
            ctx.print(f"Pruned {pruned.deleted} entries, freed {format_size(pruned.freed_bytes)}.")
    elif action == "clear":
        deleted = pad.clear()
        if ctx.json:
            ctx.emit_json({"deleted": deleted})
        else:
            ctx.print(f"Deleted {deleted} entries.")
    else:  # stats
        stats = pad.stats()
        if ctx.json:
            ctx.emit_json({"folder": str(pad.folder), "entries": stats.entries,
                           "total_size_bytes": stats.total_size_bytes,
                           "oldest": stats.oldest_timestamp, "newest": stats.newest_timestamp})
        else:
            ctx.print(render_pairs([
                ("folder", show_path(pad.folder)),
                ("entries", stats.entries),
                ("total size", format_size(stats.total_size_bytes)),
                ("oldest", stats.oldest_timestamp or "-"),
                ("newest", stats.newest_timestamp or "-"),
            ]))
    return EXIT_OK


def _entry_json(entry: Any) -> dict[str, Any]:
    return {"id": entry.id, "tool": entry.tool, "timestamp": entry.timestamp,
            "size_bytes": entry.size_bytes, "content_type": entry.content_type,
            "preview": entry.preview}

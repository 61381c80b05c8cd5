"""``amalfa serve``: the graph served to AI agents over the Model Context Protocol (stdio)."""

from __future__ import annotations

from amalfa.cli._context import Context
from amalfa.cli._errors import EXIT_OK
from amalfa.cli._parsing import Commands

ORDER = 65


def register(commands: Commands) -> None:
    serve = commands.add(
        "serve", "serve the graph to AI agents over MCP (stdio)",
        "Speak the Model Context Protocol on stdin/stdout, with tools for search, read, "
        "explore, related, stats and the scratchpad; large outputs come back as scratchpad "
        "references. The database is opened read-only (with --watch, a watcher thread keeps it in "
        "step with the files, as `amalfa watch`). Register this command with an MCP client "
        "(see docs/guide/mcp.md); it is not meant to be typed at a terminal.", cmd_serve)
    serve.add_argument("--watch", action="store_true",
                       help="also re-ingest the sources as files change (one watcher per "
                            "database)")


def cmd_serve(ctx: Context) -> int:
    from amalfa.mcp_server import serve

    serve(ctx.settings, db_path=ctx.db_path, watch=ctx.args.watch)
    return EXIT_OK

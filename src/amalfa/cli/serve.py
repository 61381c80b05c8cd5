"""``amalfa serve``: the graph served to AI agents over the Model Context Protocol (stdio)."""

from __future__ import annotations

from amalfa.cli._context import Context
from amalfa.cli._errors import EXIT_OK
from amalfa.cli._parsing import Commands

ORDER = 65


def register(commands: Commands) -> None:
    commands.add(
        "serve", "serve the graph to AI agents over MCP (stdio)",
        "Speak the Model Context Protocol on stdin/stdout, with tools for search, read, "
        "explore, related, stats and the scratchpad; large outputs come back as scratchpad "
        "references. The database is opened read-only. Register this command with an MCP "
        "client (see docs/guide/mcp.md); it is not meant to be typed at a terminal.", cmd_serve)


def cmd_serve(ctx: Context) -> int:
    from amalfa.mcp_server import serve

    serve(ctx.settings, db_path=ctx.db_path)
    return EXIT_OK

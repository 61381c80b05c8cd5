"""``amalfa serve``: the graph served to AI agents over the Model Context Protocol (stdio).

Built on the official ``mcp`` SDK's :class:`~mcp.server.mcpserver.MCPServer`. Two layers:

- :class:`GraphTools` holds the work of each tool as a plain method over the library (search,
  read, explore, related, stats, scratchpad reads): JSON text in, JSON text out, amalfa errors
  raised. It knows nothing of MCP, so it is tested and reused without a protocol in between.
- :func:`build_server` registers one MCP tool per method. Arguments are typed, so the SDK's own
  schema check turns a malformed call (a string for ``depth``, a missing ``query``) into an
  error result naming the field; an amalfa error (unknown id, depth out of range, a file changed
  since ingest) becomes an error result carrying its message, never a crash of the server.

**The scratchpad.** An agent's context is small; every tool's output goes through
:meth:`~amalfa.scratchpad.Scratchpad.maybe_cache`: small outputs come back as they are, large
ones are stored and a short reference (size, preview, entry id) comes back instead, which the
agent reads with the ``scratchpad_read`` tool when it needs the whole.

**One writer.** The server opens the database read-only: another process (``amalfa watch`` or
``amalfa init``) may write while it serves, and it sees their commits on its next call. With
``watch=True`` (``amalfa serve --watch``) that writer is a watcher thread of the server itself. SDK tool
functions run in worker threads; one lock keeps the connection to one call at a time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amalfa.errors import AmalfaError, CommandError

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from amalfa.db import ResonanceDB
    from amalfa.embedder import Embedder
    from amalfa.scratchpad import Scratchpad
    from amalfa.settings import Settings

__all__ = ["SERVER_NAME", "TOOL_NAMES", "GraphTools", "build_server", "serve"]

SERVER_NAME = "amalfa"
#: the tools the server exposes, in the order it lists them
TOOL_NAMES = ("search", "read", "explore", "related", "stats", "scratchpad_read",
              "scratchpad_list")
_INSTRUCTIONS = (
    "A knowledge graph of Markdown documents. `search` finds documents by meaning; `read` prints "
    "one (or a line range from a search hit); `explore` walks its links; `related` lists "
    "documents like it. Large outputs come back as a scratchpad reference: read them with "
    "`scratchpad_read`."
)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=1, default=str)


class GraphTools:
    """What each MCP tool does, over one open database (see the module notes).

    ``embedder`` is loaded on the first search (the model the database recorded wins over the
    settings'); pass one to share it.
    """

    def __init__(self, db: ResonanceDB, settings: Settings, *, scratchpad: Scratchpad,
                 embedder: Embedder | None = None) -> None:
        self.db = db
        self.settings = settings
        self.scratchpad = scratchpad
        self._embedder = embedder
        self._engine: Any = None
        self._search: Any = None
        self._lock = threading.Lock()

    def _vectors(self) -> Any:
        from amalfa.vectors import VectorEngine

        if self._engine is None:
            self._engine = VectorEngine(self.db)
        return self._engine

    def _searcher(self) -> Any:
        from amalfa.search import SearchEngine

        if self._search is None:
            self._search = SearchEngine(self.db, embedder=self._embedding_model(),
                                        root=self.settings.root)
        return self._search

    def _embedding_model(self) -> Embedder:
        if self._embedder is None:
            from amalfa._model_choice import embedder_for_database

            self._embedder = embedder_for_database(self.settings, self.db)
        return self._embedder

    def _cached(self, tool: str, content: str) -> str:
        """The output itself, or the scratchpad's reference with how to read it over MCP."""
        text, entry_id = self.scratchpad.cache(tool, content)
        if entry_id is None:
            return text
        return (f"{text}\n\nOver MCP: call the `scratchpad_read` tool with "
                f'{{"entry_id": "{entry_id}"}}.')

    def run(self, tool: str, work: Callable[[], Any]) -> str:
        """Run one tool's work under the lock and return its output: through the scratchpad,
        except for ``scratchpad_read``, whose whole point is the full content the agent asked
        for (caching it again would hand back a reference to itself)."""
        with self._lock:
            value = work()
        text = value if isinstance(value, str) else _json(value)
        return text if tool == "scratchpad_read" else self._cached(tool, text)

    # -- the tools ------------------------------------------------------------------------------

    def search(self, query: str, limit: int = 10, mode: str = "hybrid",
               expand: int = 0) -> list[dict[str, Any]]:
        from amalfa.related import expand_hits

        if not isinstance(query, str) or not query.strip():
            raise ValueError("query is empty: ask in plain words")
        _check_positive(limit, "limit", 100)
        hits = self._searcher().search(query.strip(), limit, mode=mode)
        rows = [{**hit.to_dict(), "score": round(float(hit.score), 4)} for hit in hits]
        expanded = expand_hits(self.db, [(hit.id, float(hit.score)) for hit in hits], expand)
        return rows + [item.to_dict() for item in expanded]

    def read(self, node_id: str, lines: str | None = None, raw: bool = False) -> str:
        from amalfa.reader import read_node

        settings = self.settings
        return read_node(self.db, node_id, root=settings.root, sources=settings.sources,
                         raw=raw, lines=lines).text

    def explore(self, node_id: str, depth: int = 1, direction: str = "both",
                limit: int = 200) -> dict[str, Any]:
        return self.db.neighbours(node_id, depth=depth, direction=direction,
                                  limit=limit).to_dict()

    def related(self, node_id: str, k: int = 10) -> list[dict[str, Any]]:
        from amalfa.related import related_nodes

        _check_positive(k, "k", 100)
        hits = related_nodes(self.db, node_id, k, engine=self._vectors())
        return [{"id": hit.id, "score": round(float(hit.score), 4), "title": hit.title,
                 "source": hit.meta.get("source")} for hit in hits]

    def stats(self) -> dict[str, Any]:
        return {"database": str(self.db.path), **self.db.get_stats().to_dict()}

    def scratchpad_read(self, entry_id: str) -> str:
        content = self.scratchpad.read_content(entry_id)
        if content is None:
            raise LookupError(f"no scratchpad entry {entry_id!r} (pruned, or never stored)")
        return content

    def scratchpad_list(self) -> list[dict[str, Any]]:
        return [{"id": entry.id, "tool": entry.tool, "timestamp": entry.timestamp,
                 "size_bytes": entry.size_bytes, "preview": entry.preview}
                for entry in self.scratchpad.list()]


def _check_positive(value: int, name: str, most: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"{name} must be an int from 1 to {most}, got {value!r}")


def build_server(tools: GraphTools) -> MCPServer:
    """An MCPServer exposing ``tools`` (see the module notes); run it with ``.run("stdio")``."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp_types import ToolAnnotations

    from amalfa import __version__

    server: MCPServer = MCPServer(SERVER_NAME, version=__version__, instructions=_INSTRUCTIONS,
                                  log_level="WARNING")
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    def call(tool: str, work: Callable[[], Any]) -> str:
        try:
            return tools.run(tool, work)
        except (AmalfaError, ValueError, TypeError, LookupError) as exc:
            # the agent reads the message and can correct its call; the server keeps serving
            raise ToolError(f"{tool}: {exc}") from None

    def search(query: str, limit: int = 10, mode: str = "hybrid", expand: int = 0) -> str:
        """Find the documents that answer a question: the best `limit`, each with its best
        passage (heading, line, snippet; `read` with lines="A:B" prints it). `mode`: hybrid
        (meaning and keywords), vector or keyword. `expand` N also lists the documents up to N
        links from the hits (score x 0.5 per link), marked "expansion": true."""
        return call("search", lambda: tools.search(query, limit, mode, expand))

    def read(node_id: str, lines: str | None = None, raw: bool = False) -> str:
        """A document's text from its source file. `lines` "A:B" gives file lines A to B (as a
        search hit's passage); `raw` keeps the front matter."""
        return call("read", lambda: tools.read(node_id, lines, raw))

    def explore(node_id: str, depth: int = 1, direction: str = "both", limit: int = 200) -> str:
        """The documents linked to one, to `depth` hops: nodes (id, title, source, depth) and
        the edges with their types. `direction`: outgoing, incoming or both."""
        return call("explore", lambda: tools.explore(node_id, depth, direction, limit))

    def related(node_id: str, k: int = 10) -> str:
        """The `k` documents nearest in meaning to this one (more like this)."""
        return call("related", lambda: tools.related(node_id, k))

    def stats() -> str:
        """Counts of documents, links and vectors, and the database's size."""
        return call("stats", tools.stats)

    def scratchpad_read(entry_id: str) -> str:
        """The full content of a large output stored in the scratchpad (by its 12-hex id)."""
        return call("scratchpad_read", lambda: tools.scratchpad_read(entry_id))

    def scratchpad_list() -> str:
        """The scratchpad's stored outputs: id, tool, time, size and preview."""
        return call("scratchpad_list", tools.scratchpad_list)

    for function in (search, read, explore, related, stats, scratchpad_read, scratchpad_list):
        server.add_tool(function, annotations=read_only, structured_output=False)
    return server


def serve(settings: Settings, *, db_path: str | Path | None = None, watch: bool = False) -> None:
    """Serve the database over stdio until the client closes the connection.

    Opens ``db_path`` (default: the settings' database) read-only; a missing database is a
    CommandError with the ``amalfa init`` hint, raised before the protocol starts. With
    ``watch=True`` a :class:`~amalfa.watch.Watcher` keeps the database in step with the sources
    from a thread of this process (its own read-write connection, the watcher lock held; a
    second watcher is refused before the protocol starts); the tools keep reading through the
    read-only connection and see each batch once it is committed.
    """
    from amalfa.db import ResonanceDB
    from amalfa.scratchpad import Scratchpad

    path = Path(db_path) if db_path is not None else settings.database_path
    watcher = _start_watcher(settings, path) if watch else None
    try:
        if not path.is_file():
            raise CommandError(f"no database at {path}", hint="run `amalfa init` first")
        with ResonanceDB(path, readonly=True) as db:
            tools = GraphTools(db, settings, scratchpad=Scratchpad(settings=settings))
            _make_stdin_valid()
            build_server(tools).run("stdio")
    finally:
        if watcher is not None:
            watcher.stop()


def _make_stdin_valid() -> None:
    """Put a pipe on fd 0 that a thread fills with this process's stdin, line by line, each
    JSON-RPC message made valid text first (:func:`amalfa.text_rules.json_for_model`).

    The SDK parses messages with pydantic, which refuses a lone surrogate escape
    (``"\\ud800"``, valid JSON) and then drops the request without an answer; made valid
    (U+FFFD), the request is answered like any other: a query still searches, an id matches
    nothing. Lines without a surrogate escape pass through as they are. The client closing
    stdin closes the pipe, so the server ends as before.
    """
    import os

    from amalfa.text_rules import json_for_model

    source = os.fdopen(os.dup(0), "rb")
    read_end, write_end = os.pipe()
    os.dup2(read_end, 0)
    os.close(read_end)

    def pump() -> None:
        with source, open(write_end, "wb", buffering=0) as sink:
            for line in source:
                if b"\\u" in line:
                    line = json_for_model(line.decode("utf-8", "replace")).encode("utf-8")
                    line = line if line.endswith(b"\n") else line + b"\n"
                sink.write(line)

    threading.Thread(target=pump, name="amalfa-mcp-stdin", daemon=True).start()


class _WatchThread:
    """A Watcher on a daemon thread; :meth:`stop` asks it to finish its batch and waits."""

    def __init__(self, watcher: Any, thread: threading.Thread) -> None:
        self.watcher = watcher
        self.thread = thread

    def stop(self) -> None:
        self.watcher.stop()
        self.thread.join(timeout=60)


def _start_watcher(settings: Settings, path: Path) -> _WatchThread:
    """Start watching and return once the catch-up run is written (so the database exists), or
    raise what stopped the watcher (another one running, no sources)."""
    import sys

    from amalfa.watch import Watcher

    caught_up = threading.Event()
    failure: list[BaseException] = []

    def report(batch: Any) -> None:
        if batch.changes or batch.error:  # stdout is the protocol's: log on stderr
            print(f"amalfa watch: {batch.summary()}", file=sys.stderr, flush=True)
        caught_up.set()

    watcher = Watcher(settings, db_path=path, on_batch=report)

    def run() -> None:
        try:
            watcher.run()
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)
        finally:
            caught_up.set()

    thread = threading.Thread(target=run, name="amalfa-watch", daemon=True)
    thread.start()
    caught_up.wait()
    if failure:
        raise failure[0]
    return _WatchThread(watcher, thread)

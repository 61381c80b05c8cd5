"""The ``amalfa`` command line (also ``python -m amalfa``).

One function per command, each reading the parsed arguments and a :class:`Context` that loads
the settings, opens the database and builds the embedder on demand. Heavy modules (numpy,
onnxruntime, the compiled core) are imported inside the commands that need them, so ``amalfa
--help`` and every ``--help`` below it answer at once.

Output: readable tables on stdout for people, or one JSON document on stdout with ``--json``;
warnings, progress and errors go to stderr, so stdout stays machine-readable.

Errors and exit status:

* ``0`` success; ``1`` an error the user can fix (no database yet, bad settings, unknown id,
  a failed validation or health check); ``2`` a command line that does not parse; ``130``
  interrupted (Ctrl-C); ``70`` a bug in amalfa.
* A user error prints exactly two lines on stderr, ``amalfa: error: ...`` and ``hint: ...``, and
  never a traceback: :class:`~amalfa.errors.AmalfaError`, ``ValueError`` and ``OSError`` are
  reported that way.
* Anything else is a bug: one ``amalfa: internal error: ...`` line and a hint. Set
  ``AMALFA_DEBUG=1`` to let every exception, user errors included, end in its full traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from amalfa import __version__
from amalfa.errors import AmalfaError

if TYPE_CHECKING:
    from amalfa.db import ResonanceDB
    from amalfa.embedder import Embedder
    from amalfa.settings import Settings

__all__ = ["CommandError", "build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUG = 70  # sysexits.h EX_SOFTWARE
EXIT_INTERRUPTED = 130
DAEMON_NOT_RUNNING = 3  # `amalfa daemon status`, as LSB init scripts report "not running"
DEBUG_ENV_VAR = "AMALFA_DEBUG"

HINT_INIT = "run `amalfa init` first (or point --db at an existing database)"


class CommandError(AmalfaError):
    """A mistake the user can fix: a one-line message, a one-line hint and an exit status."""

    def __init__(self, message: str, *, hint: str | None = None, status: int = EXIT_ERROR):
        super().__init__(message)
        self.hint = hint
        self.status = status


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors end here
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = os.environ.get(DEBUG_ENV_VAR, "").strip() not in ("", "0")
    ctx = Context(args)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.handler(ctx)
        except BrokenPipeError:
            # The reader went away (`amalfa search x | head -1`): not an error worth a message.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_ERROR
        except KeyboardInterrupt:
            if debug:
                raise
            _print_error("interrupted", ctx.interrupt_hint)
            return EXIT_INTERRUPTED
        except (AmalfaError, ValueError, OSError) as exc:
            if debug:
                raise
            message, hint, status = _describe(exc)
            _print_error(message, hint)
            return status
        except Exception as exc:
            if debug:
                raise
            _print_error(f"internal error: {type(exc).__name__}: {_one_line(str(exc))}",
                         f"this is a bug in amalfa; rerun with {DEBUG_ENV_VAR}=1 to see the "
                         "traceback and report it")
            return EXIT_BUG


def _describe(exc: BaseException) -> tuple[str, str | None, int]:
    """The message, hint and exit status for an error a user can act on."""
    from amalfa import errors

    message = _one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, CommandError):
        return message, exc.hint, exc.status
    if isinstance(exc, errors.SettingsError):
        return message, ("fix the settings file (keys are listed in docs/reference/settings.md) "
                         "or pass another with --settings PATH"), EXIT_ERROR
    if isinstance(exc, errors.ModelError):
        return message, ("install the embedded model with `pip install 'amalfa[model]'`, or set "
                         "AMALFA_MODEL_PATH to a folder with model.onnx and tokenizer.json"), \
            EXIT_ERROR
    if type(exc).__name__ == "DaemonError":  # its message may end with the log's last lines
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else message
        return first_line, ("the daemon's log is .amalfa/logs/vector-daemon.log; "
                            "`amalfa daemon status` shows its state"), EXIT_ERROR
    if type(exc).__name__ == "ModelMismatchError":
        return message, ("run `amalfa init --force` to embed every file with the current model, "
                         "or set embeddings.model back"), EXIT_ERROR
    if isinstance(exc, errors.BusyError):
        return message, "another process holds the database; try again in a moment", EXIT_ERROR
    if isinstance(exc, errors.SchemaVersionError):
        return message, "this database was written by a newer amalfa; upgrade amalfa", EXIT_ERROR
    if isinstance(exc, (errors.CorruptError, errors.NotADatabaseError)):
        return message, ("run `amalfa doctor`; restore a copy from .amalfa/backups or move the "
                         "file aside and run `amalfa init` again"), EXIT_ERROR
    if isinstance(exc, errors.DatabaseError):
        return message, "run `amalfa doctor` to check the database", EXIT_ERROR
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}", "check the path and its permissions", EXIT_ERROR
    return message, f"rerun with {DEBUG_ENV_VAR}=1 for the full traceback", EXIT_ERROR


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _print_error(message: str, hint: str | None) -> None:
    print(f"amalfa: error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: IO[str] | None = None, line: str | None = None) -> None:
    """Warnings as one readable line each (no source file and line of amalfa's code)."""
    print(f"amalfa: warning: {_one_line(str(message))}", file=file or sys.stderr)


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line plus a hint, like every other error."""

    def error(self, message: str) -> NoReturn:
        _print_error(message, f"run `{self.prog} --help` for usage")
        raise SystemExit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {value}")
    return value


def _common_options(*, suppress: bool) -> argparse.ArgumentParser:
    """--db, --settings and --json, accepted before and after the command name.

    The copies on the subcommands default to SUPPRESS, so an option given before the command is
    not reset by the subcommand's default.
    """
    default: Any = argparse.SUPPRESS if suppress else None
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument("--db", metavar="PATH", default=default,
                       help="the database file (default: the settings' database, "
                            ".amalfa/runtime/resonance.db)")
    group.add_argument("--settings", metavar="PATH", default=default,
                       help="the settings file (default: $AMALFA_SETTINGS, else "
                            "./amalfa.settings.json when present)")
    group.add_argument("--json", action="store_true",
                       default=argparse.SUPPRESS if suppress else False,
                       help="print JSON for machines instead of tables")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The whole command line. Every command and subcommand has a help line and a description."""
    parser = _Parser(
        prog="amalfa",
        description="amalfa: ingest a folder of Markdown into a local knowledge graph (SQLite, "
                    "FAFCAS vectors, ONNX embeddings) and search it by meaning.",
        epilog="Start with `amalfa init docs` and `amalfa search \"a question\"`. "
               "Each command has its own --help.",
        parents=[_common_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"amalfa {__version__}")
    common = [_common_options(suppress=True)]
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND",
                                     required=True, parser_class=_Parser)

    def add(name: str, help_text: str, description: str, handler: Callable[[Context], int],
            into: Any = commands) -> argparse.ArgumentParser:
        sub = into.add_parser(name, help=help_text, description=description, parents=common)
        sub.set_defaults(handler=handler)
        return sub

    init = add("init", "ingest Markdown files into the database",
               "Ingest Markdown files: each file becomes a node (id, title, summary, hash, date, "
               "meta, embedding) and links between the files become edges. Runs again update "
               "only what changed: new and edited files are embedded, deleted files lose their "
               "nodes and edges, unchanged files are not touched.", cmd_init)
    init.add_argument("paths", nargs="*", metavar="PATH",
                      help="folders, files or globs relative to the project folder (default: "
                           "the settings' sources, ./docs)")
    init.add_argument("--force", action="store_true",
                      help="embed every file again, changed or not (after changing the model)")
    init.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                      help="files embedded and written per transaction (default: 64)")

    search = add("search", "find documents by meaning",
                 "Embed the query with the database's model and list the closest documents: "
                 "rank, score (cosine similarity), id, title and source file.", cmd_search)
    search.add_argument("query", metavar="QUERY", help="the question or phrase, in plain words")
    search.add_argument("-k", "--limit", type=_positive_int, default=10, metavar="N",
                        help="how many results (default: 10)")
    search.add_argument("--domain", metavar="D", help="only nodes of this domain")
    search.add_argument("--type", metavar="T", dest="node_type", help="only nodes of this type")

    add("stats", "counts, size, embedding coverage and growth",
        "Show the database's counts (nodes, edges, embeddings), its size, the share of nodes "
        "with an embedding, the model, and the growth recorded in the stats history.", cmd_stats)

    add("validate", "check the graph against the health rules (exit 1 on errors)",
        "Check the current counts with the StatsTracker rules: no nodes or no embeddings are "
        "errors; a drop of over 20% since the last snapshot, no growth, fewer than 0.1 edges per "
        "node or under 90% embedding coverage are warnings. Exits 1 when there are errors.",
        cmd_validate)

    add("doctor", "check settings, database, pragmas, integrity, model and daemon",
        "Check everything amalfa depends on: the settings, the SQLite build, the database's "
        "pragmas, a write/read probe, PRAGMA integrity_check, the schema version, the embedding "
        "model (found and verified, not loaded) and the vector daemon. Exits 1 when a check "
        "fails.", cmd_doctor)

    add("checkpoint", "fold the write-ahead log into the database file",
        "Run a WAL checkpoint (TRUNCATE): copy the write-ahead log into the database file and "
        "empty it. Useful before copying the file elsewhere.", cmd_checkpoint)

    daemon = add("daemon", "run the embedding daemon (start, stop, status, serve)",
                 "The vector daemon keeps the embedding model loaded and answers embedding "
                 "requests on 127.0.0.1 ($VECTOR_PORT, default 3010); amalfa asks it first and "
                 "falls back to the local model.", cmd_help)
    daemon_commands = daemon.add_subparsers(title="daemon commands", dest="daemon_command",
                                            metavar="ACTION", required=True,
                                            parser_class=_Parser)
    for name, help_text, description in (
        ("start", "start the daemon in the background",
         ("Start the daemon as a background process (a running daemon or a stale pid file is "
          "detected).")),
        ("stop", "stop the running daemon", "Stop the daemon with SIGTERM and wait for it."),
        ("status", "show whether the daemon runs, and its model",
         ("Show the daemon's pid, port, model and readiness. Exits 0 when it runs and 3 when it "
          "does not (as LSB init scripts do).")),
        ("serve", "run the daemon in the foreground",
         "Run the daemon in this process until Ctrl-C or SIGTERM (for service managers)."),
    ):
        action = add(name, help_text, description, cmd_daemon, into=daemon_commands)
        if name in ("start", "serve"):
            action.add_argument("--port", type=_port, default=None,
                                help="the TCP port on 127.0.0.1 (default: $VECTOR_PORT or 3010)")

    pad = add("scratchpad", "inspect the cache of large tool outputs",
              "The scratchpad keeps large tool outputs on disk under .amalfa/cache/scratchpad and "
              "hands out short references to them.", cmd_help)
    pad_commands = pad.add_subparsers(title="scratchpad commands", dest="pad_command",
                                      metavar="ACTION", required=True, parser_class=_Parser)
    add("list", "list the entries, newest first",
        "List every entry's id, tool, size, content type, time and preview.", cmd_scratchpad,
        into=pad_commands)
    show = add("show", "print one entry's content",
               "Print the content of an entry (with --json: the entry and its metadata).",
               cmd_scratchpad, into=pad_commands)
    show.add_argument("id", metavar="ID", help="the entry id: 12 hex digits, as `list` shows")
    add("prune", "delete entries past the age limit, then the oldest over the size cap",
        "Delete entries older than scratchpad.maxAgeMs, then the oldest ones until the folder "
        "is under scratchpad.maxCacheSizeBytes.", cmd_scratchpad, into=pad_commands)
    add("clear", "delete every entry", "Delete every scratchpad entry.", cmd_scratchpad,
        into=pad_commands)
    add("stats", "count the entries and their size",
        "Show how many entries there are, their total size and their time span.",
        cmd_scratchpad, into=pad_commands)
    return parser


def cmd_help(ctx: Context) -> int:  # pragma: no cover - argparse requires an action first
    raise CommandError("choose an action", hint=f"run `amalfa {ctx.args.command} --help`",
                       status=EXIT_USAGE)


# --------------------------------------------------------------------------------------------
# The context every command works in
# --------------------------------------------------------------------------------------------


class Context:
    """Lazily loaded settings, database path and embedder, plus output helpers."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json: bool = bool(getattr(args, "json", False))
        self.out = sys.stdout
        self.interrupt_hint: str | None = None

    @cached_property
    def settings(self) -> Settings:
        from amalfa.settings import load_settings

        return load_settings(getattr(self.args, "settings", None))

    @property
    def db_path(self) -> Path:
        given = getattr(self.args, "db", None)
        return Path(given).expanduser().absolute() if given else self.settings.database_path

    def open_db(self, *, readonly: bool = False) -> ResonanceDB:
        """The existing database; a missing one is a user error with the `amalfa init` hint."""
        from amalfa.db import ResonanceDB
        from amalfa.errors import ReadOnlyError

        path = self.db_path
        if not path.is_file():
            raise CommandError(f"no database at {_show_path(path)}", hint=HINT_INIT)
        try:
            return ResonanceDB(path, readonly=readonly)
        except ReadOnlyError as exc:  # an older schema: reading commands do not migrate
            if not readonly:
                raise
            raise CommandError(_one_line(str(exc)).split(";")[0],
                               hint="run `amalfa checkpoint` (or `amalfa init`) once to migrate "
                                    "it; a backup is taken first") from None

    def embedder(self, recorded: str | None = None) -> Embedder:
        """The embedder: the model a database was built with when it recorded one, else the
        settings' model when it can be found, else the default resolution (AMALFA_MODEL_PATH,
        EMBEDDING_MODEL, the hub cache, the embedded default)."""
        from amalfa.embedder import Embedder
        from amalfa.errors import ModelError
        from amalfa.settings import EmbeddingSettings

        if recorded:
            return Embedder(recorded)
        if os.environ.get("AMALFA_MODEL_PATH", "").strip() or \
                os.environ.get("EMBEDDING_MODEL", "").strip():
            return Embedder()
        model = self.settings.embeddings.model
        if model == EmbeddingSettings().model:
            # The default setting means "this model when it is available": without it in the
            # hub cache (nothing is downloaded unasked) the embedded default serves.
            try:
                return Embedder(model)
            except ModelError:
                return Embedder()
        return Embedder(model)

    def emit_json(self, value: Any) -> None:
        json.dump(value, self.out, indent=2, ensure_ascii=False, default=str)
        self.out.write("\n")

    def print(self, text: str = "") -> None:
        print(text, file=self.out)


# --------------------------------------------------------------------------------------------
# init
# --------------------------------------------------------------------------------------------


def cmd_init(ctx: Context) -> int:
    from amalfa.db import ResonanceDB
    from amalfa.ingest import DEFAULT_BATCH_SIZE, discover, ingest
    from amalfa.stats import (
        BASELINE_FILE_NAME,
        IngestionStats,
        Snapshot,
        StatsLogger,
        StatsTracker,
    )

    args = ctx.args
    settings = ctx.settings
    sources = list(args.paths) or list(settings.sources)
    root = settings.root
    files = discover(sources, root=root, exclude_patterns=settings.exclude_patterns)
    path = ctx.db_path
    nothing_found = CommandError(
        f"no Markdown files found in {', '.join(sources)}",
        hint="pass folders, files or globs (`amalfa init docs`) or set \"sources\" in "
             "amalfa.settings.json")
    if not files and not path.exists():
        raise nothing_found

    fresh = not path.exists()
    embedder = ctx.embedder()
    bar = _ProgressBar("embedding", sys.stderr) if sys.stderr.isatty() else None
    ctx.interrupt_hint = ("every batch written so far is kept; run `amalfa init` again to "
                          "finish")
    with ResonanceDB(path, create=True) as db:
        try:
            result = ingest(sources, db=db, embedder=embedder, root=root,
                            exclude_patterns=settings.exclude_patterns, files=files,
                            batch_size=args.batch_size or DEFAULT_BATCH_SIZE, force=args.force,
                            progress=bar)
        finally:
            if bar is not None:
                bar.close()
        counts = db.get_stats()
    ctx.interrupt_hint = None
    if not result.files and not result.removed:  # a mistyped path: nothing to record
        raise nothing_found

    snapshot = Snapshot(nodes=counts.nodes, edges=counts.edges, embeddings=counts.vectors,
                        db_size_mb=round(counts.db_size_mb, 4), version=__version__)
    tracker = StatsTracker(settings=settings)
    validation = tracker.validate(snapshot)  # against the previous run, before recording this one
    tracker.record(snapshot)
    StatsLogger(settings=settings).log_init(
        files=result.files, nodes=counts.nodes, edges=counts.edges,
        duration_ms=round(result.seconds["total"] * 1000, 1), errors=len(result.skipped))
    ingestion = IngestionStats(settings=settings)
    result.record(ingestion)
    baseline = settings.folders.base / BASELINE_FILE_NAME
    mismatches = None
    if baseline.is_file():  # no baseline is the normal case: verification is opt-in
        ingestion.load_baseline(baseline)
        mismatches = ingestion.verify_against_baseline()

    if ctx.json:
        ctx.emit_json({
            "database": str(path), "created": fresh, "model": result.model,
            "files": result.files, "documents": result.documents,
            "added": result.added, "updated": result.updated,
            "unchanged": len(result.unchanged), "removed": result.removed,
            "skipped": [{"path": str(p), "reason": reason} for p, reason in result.skipped],
            "links": result.links_by_type(), "edges_added": result.edges_added,
            "edges_removed": result.edges_removed,
            "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
            "stats": counts.to_dict(),
            "validation": {"valid": validation.valid, "warnings": validation.warnings,
                           "errors": validation.errors},
            "baseline": None if mismatches is None else [
                {"domain": m.domain, "metric": m.metric, "expected": m.expected,
                 "actual": m.actual} for m in mismatches],
        })
    else:
        verb = "Created" if fresh else "Updated"
        ctx.print(f"{verb} {_show_path(path)} from {result.files} Markdown files in "
                  f"{result.seconds['total']:.1f} s ({result.model})")
        ctx.print(_render_table(
            ["added", "updated", "unchanged", "removed", "skipped", "edges +", "edges -"],
            [[len(result.added), len(result.updated), len(result.unchanged),
              len(result.removed), len(result.skipped), result.edges_added,
              result.edges_removed]]))
        ctx.print()
        ctx.print(f"Database: {counts.nodes} nodes, {counts.edges} edges, {counts.vectors} "
                  f"embeddings, {_human_size(counts.db_size_bytes)}")
        for message in [*validation.errors, *validation.warnings]:
            ctx.print(f"  note: {message}")
        ctx.print()
        ctx.print(ingestion.summary())
        if mismatches is not None:
            ctx.print(ingestion.verification_table(mismatches))
    return EXIT_ERROR if mismatches else EXIT_OK


class _ProgressBar:
    """``embedding [#########.........] 120/400  31.2 files/s`` on stderr, redrawn in place at
    most ten times a second. Only used when stderr is a terminal."""

    def __init__(self, label: str, stream: IO[str]) -> None:
        self.label = label
        self.stream = stream
        self.started = time.perf_counter()
        self.last_draw = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        rate = done / (now - self.started) if now > self.started and done else 0.0
        tail = f" {done}/{total}  {rate:.1f} files/s"
        width = max(10, min(40, shutil.get_terminal_size((80, 24)).columns
                            - len(self.label) - len(tail) - 4))
        filled = width * done // total if total else width
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}]{tail}")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------


def cmd_search(ctx: Context) -> int:
    from amalfa.ingest import recorded_model
    from amalfa.vectors import VectorEngine

    args = ctx.args
    query = args.query.strip()
    if not query:
        raise CommandError("the query is empty",
                           hint='ask in plain words: amalfa search "how are vectors normalised"',
                           status=EXIT_USAGE)
    with ctx.open_db(readonly=True) as db:
        if db.get_stats().vectors == 0:
            raise CommandError(f"the database at {_show_path(db.path)} holds no embeddings yet",
                               hint="run `amalfa init` to ingest some Markdown")
        embedder = ctx.embedder(recorded_model(db))
        engine = VectorEngine(db, embedder=embedder)
        results = engine.search(query, args.limit, domain=args.domain, type=args.node_type)
    rows = [{"id": r.id, "score": round(float(r.score), 4), "title": r.title,
             "source": r.meta.get("source"), "domain": r.domain, "type": r.type,
             "date": r.date} for r in results]
    if ctx.json:
        ctx.emit_json(rows)
        return EXIT_OK
    if not rows:
        ctx.print("No matches.")
        return EXIT_OK
    ctx.print(_render_table(
        ["#", "score", "id", "title", "source"],
        [[rank, f"{row['score']:.3f}", row["id"], row["title"] or "", row["source"] or ""]
         for rank, row in enumerate(rows, start=1)],
        flex=3))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# stats, validate, checkpoint
# --------------------------------------------------------------------------------------------


def cmd_stats(ctx: Context) -> int:
    from amalfa.ingest import recorded_model
    from amalfa.stats import StatsTracker

    with ctx.open_db(readonly=True) as db:
        counts = db.get_stats()
        model = recorded_model(db)
        dimensions = db.dimensions
    tracker = StatsTracker(settings=ctx.settings)
    history = tracker.all()
    coverage = counts.vectors / counts.nodes if counts.nodes else 0.0
    if ctx.json:
        ctx.emit_json({
            "database": str(ctx.db_path), **counts.to_dict(),
            "embedding_coverage": round(coverage, 4), "model": model, "dimensions": dimensions,
            "edge_density": round(counts.edges / counts.nodes, 4) if counts.nodes else 0.0,
            "snapshots": len(history),
            "latest_snapshot": history[-1].to_json() if history else None,
        })
        return EXIT_OK
    ctx.print(_render_pairs([
        ("database", _show_path(ctx.db_path)),
        ("size", _human_size(counts.db_size_bytes)),
        ("nodes", counts.nodes),
        ("edges", counts.edges),
        ("embeddings", f"{counts.vectors} ({coverage:.0%} of nodes)"),
        ("semantic tokens", counts.semantic_tokens),
        ("model", f"{model or 'not recorded'}" + (f" ({dimensions}-d)" if dimensions else "")),
    ]))
    ctx.print()
    ctx.print(tracker.summary())
    return EXIT_OK


def cmd_validate(ctx: Context) -> int:
    from amalfa.stats import Snapshot, StatsTracker

    with ctx.open_db(readonly=True) as db:
        counts = db.get_stats()
    current = Snapshot(nodes=counts.nodes, edges=counts.edges, embeddings=counts.vectors,
                       db_size_mb=counts.db_size_mb)
    result = StatsTracker(settings=ctx.settings).validate(current)
    if ctx.json:
        ctx.emit_json({"valid": result.valid, "errors": result.errors,
                       "warnings": result.warnings,
                       "current": {"nodes": current.nodes, "edges": current.edges,
                                   "embeddings": current.embeddings}})
    else:
        ctx.print(f"Validation {'passed' if result.valid else 'FAILED'}: {current.nodes} nodes, "
                  f"{current.edges} edges, {current.embeddings} embeddings")
        for message in result.errors:
            ctx.print(f"  error: {message}")
        for message in result.warnings:
            ctx.print(f"  warning: {message}")
    return EXIT_OK if result.valid else EXIT_ERROR


def cmd_checkpoint(ctx: Context) -> int:
    with ctx.open_db() as db:
        log_frames, checkpointed = db.checkpoint()
    if ctx.json:
        ctx.emit_json({"database": str(ctx.db_path), "wal_frames": log_frames,
                       "checkpointed": checkpointed})
    else:
        ctx.print(f"Checkpointed {checkpointed} of {log_frames} WAL frames into "
                  f"{_show_path(ctx.db_path)}; the log is truncated.")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# doctor
# --------------------------------------------------------------------------------------------


def cmd_doctor(ctx: Context) -> int:
    checks: list[dict[str, Any]] = []

    def check(name: str, status: str, detail: str, /, **data: Any) -> None:
        checks.append({"check": name, "status": status, "detail": detail, **data})

    _doctor_settings(ctx, check)
    recorded = _doctor_database(ctx, check) if "settings" not in _failed(checks) else None
    if "settings" not in _failed(checks):
        _doctor_model(ctx, check, recorded)
    _doctor_daemon(ctx, check)

    failed = any(c["status"] == "fail" for c in checks)
    if ctx.json:
        ctx.emit_json({"ok": not failed, "checks": checks})
    else:
        ctx.print(_render_table(["check", "status", "detail"],
                                [[c["check"], c["status"], c["detail"]] for c in checks],
                                flex=2))
        ctx.print()
        ctx.print("Some checks failed." if failed else "All checks passed.")
    return EXIT_ERROR if failed else EXIT_OK


def _failed(checks: list[dict[str, Any]]) -> set[str]:
    return {c["check"] for c in checks if c["status"] == "fail"}


def _doctor_settings(ctx: Context, check: Callable[..., None]) -> None:
    from amalfa.errors import SettingsError

    try:
        settings = ctx.settings
    except SettingsError as exc:
        check("settings", "fail", _one_line(str(exc)))
        return
    origin = _show_path(settings.settings_file) if settings.settings_file else "defaults"
    check("settings", "ok", f"{origin}; sources {', '.join(settings.sources)}; excluded "
          f"{', '.join(settings.exclude_patterns) or 'nothing'}",
          file=str(settings.settings_file) if settings.settings_file else None,
          root=str(settings.root), sources=settings.sources,
          exclude_patterns=settings.exclude_patterns, model=settings.embeddings.model)


def _doctor_database(ctx: Context, check: Callable[..., None]) -> str | None:
    """SQLite build, pragmas and probe, integrity, schema; returns the recorded model."""
    from amalfa import migrations
    from amalfa.errors import DatabaseError
    from amalfa.factory import DatabaseFactory, sqlite_version

    check("sqlite", "ok", f"SQLite {sqlite_version()} (amalfa's pinned build)")
    path = ctx.db_path
    if not path.is_file():
        check("database", "warn", f"no database at {_show_path(path)} yet; run `amalfa init`",
              path=str(path))
        return None
    recorded = None
    try:
        conn = DatabaseFactory.connect(path, create=False)
    except DatabaseError as exc:
        check("database", "fail", f"{_show_path(path)} cannot be opened: {_one_line(str(exc))}")
        return None
    try:
        try:
            health = DatabaseFactory.perform_health_check(conn)
        except DatabaseError as exc:
            check("pragmas", "fail", _one_line(str(exc)))
        else:
            pragmas = ", ".join(f"{k}={v}" for k, v in health.pragmas.items())
            check("pragmas", "ok" if health.healthy else "warn",
                  "; ".join(health.warnings) or f"{pragmas}; write/read probe ok",
                  pragmas=health.pragmas)
        try:
            integrity = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        except DatabaseError as exc:
            integrity = [_one_line(str(exc))]
        check("integrity", "ok" if integrity == ["ok"] else "fail",
              "PRAGMA integrity_check: " + "; ".join(integrity[:3])
              + (" ..." if len(integrity) > 3 else ""))
        try:
            state = migrations.inspect_schema(conn)
        except DatabaseError as exc:
            check("schema", "fail", _one_line(str(exc)))
        else:
            latest = migrations.latest_version()
            status = "ok" if state.version == latest else ("fail" if state.version > latest
                                                           else "warn")
            detail = f"version {state.version} of {latest} ({state.source})"
            if state.version < latest:
                detail += "; the next write migrates it"
            check("schema", status, detail, version=state.version, latest=latest)
        recorded = _recorded_model(conn)
        nodes = vectors = 0
        if conn.execute(_HAS_NODES_TABLE):
            nodes, vectors = conn.execute(_COUNT_NODES)[0]
        size = path.stat().st_size
        check("database", "ok", f"{_show_path(path)}: {nodes} nodes, {vectors} embeddings, "
              f"{_human_size(size)}", path=str(path), nodes=nodes, embeddings=vectors)
    finally:
        conn.close()
    return recorded


_HAS_NODES_TABLE = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'nodes'"
_COUNT_NODES = "SELECT count(*), count(embedding) FROM nodes"


def _recorded_model(conn: Any) -> str | None:
    """The model ``amalfa init`` recorded, read on a bare connection (doctor opens no
    ResonanceDB: that would migrate the schema it is about to report on)."""
    from amalfa.ingest import MODEL_META_KEY

    if not conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' "
                        "AND name = 'amalfa_meta'"):
        return None
    rows = conn.execute("SELECT value FROM amalfa_meta WHERE key = ?", (MODEL_META_KEY,))
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


def _doctor_model(ctx: Context, check: Callable[..., None], recorded: str | None) -> None:
    from amalfa.errors import ModelError

    try:
        embedder = ctx.embedder(recorded)  # finds and sha256-checks the files; loads nothing
    except ModelError as exc:
        check("model", "fail", _one_line(str(exc)))
        return
    files = embedder.files
    detail = (f"{embedder.model_name} ({files.source}, {files.spec.pooling} pooling, "
              f"{files.spec.dimensions or '?'}-d, max {files.spec.max_length} tokens)")
    check("model", "ok", detail, name=embedder.model_name, source=files.source,
          onnx=str(files.onnx_path))
    wanted = ctx.settings.embeddings.dimensions
    if files.spec.dimensions and files.spec.dimensions != wanted:
        check("dimensions", "warn", f"the model makes {files.spec.dimensions}-d vectors; the "
              f"settings say embeddings.dimensions = {wanted}")


def _doctor_daemon(ctx: Context, check: Callable[..., None]) -> None:
    from amalfa.errors import SettingsError

    try:
        root = ctx.settings.root
    except SettingsError:
        root = None  # reported by the settings check; the daemon's files are still found
    try:
        status = _daemon_module().status(root=root)
    except OSError as exc:
        check("daemon", "warn", f"cannot read the daemon's status: {_one_line(str(exc))}")
        return
    if status.get("stale"):
        check("daemon", "warn", f"stale pid file {status.get('pid_file')} (pid {status.get('pid')} "
              "is gone); `amalfa daemon stop` removes it", daemon=status)
    elif status.get("running") and not status.get("ready"):
        check("daemon", "warn", _daemon_summary(status), daemon=status)
    else:
        check("daemon", "ok", _daemon_summary(status), daemon=status)


# --------------------------------------------------------------------------------------------
# daemon
# --------------------------------------------------------------------------------------------


def _daemon_module() -> Any:
    import amalfa.daemon

    return amalfa.daemon


def _daemon_summary(status: dict[str, Any]) -> str:
    if not status.get("running"):
        return "not running (optional: without it amalfa embeds in process)"
    parts = [f"running, pid {status.get('pid')}", f"port {status.get('port')}"]
    if status.get("model"):
        parts.append(f"model {status['model']}")
    if "ready" in status:
        parts.append("ready" if status["ready"] else "loading")
    return ", ".join(parts)


def cmd_daemon(ctx: Context) -> int:
    """Delegate to :mod:`amalfa.daemon`; its pid and log files live under the project's
    ``.amalfa`` folder (the settings' root)."""
    daemon = _daemon_module()
    action = ctx.args.daemon_command
    root = ctx.settings.root
    if action == "serve":
        return int(daemon.serve(port=ctx.args.port, root=root))
    if action == "start":
        report = daemon.start(port=ctx.args.port, root=root)
        text = ("already running: " if report.get("already_running") else "started: ") + \
            _daemon_summary(report)
        status = EXIT_OK
    elif action == "stop":
        report = daemon.stop(root=root)
        text = (f"stopped (pid {report['pid']})" if report.get("stopped")
                else "was not running")
        if report.get("removed_stale_pid_file"):
            text += "; removed a stale pid file"
        status = EXIT_OK
    else:
        report = daemon.status(root=root)
        text = _daemon_summary(report)
        status = EXIT_OK if report.get("running") else DAEMON_NOT_RUNNING
    if ctx.json:
        ctx.emit_json(report)
    else:
        ctx.print(f"daemon {text}")
    return status


# --------------------------------------------------------------------------------------------
# scratchpad
# --------------------------------------------------------------------------------------------


def cmd_scratchpad(ctx: Context) -> int:
    from amalfa.scratchpad import Scratchpad, format_size

    pad = Scratchpad(settings=ctx.settings)
    action = ctx.args.pad_command
    if action == "list":
        entries = pad.list()
        if ctx.json:
            ctx.emit_json([_entry_json(e) for e in entries])
        elif not entries:
            ctx.print(f"The scratchpad is empty ({_show_path(pad.folder)}).")
        else:
            ctx.print(_render_table(
                ["id", "tool", "size", "type", "time", "preview"],
                [[e.id, e.tool, format_size(e.size_bytes), e.content_type, e.timestamp,
                  _one_line(e.preview)] for e in entries], flex=5))
    elif action == "show":
        try:
            entry = pad.read(ctx.args.id)
        except ValueError as exc:  # not 12 hex digits: refused before any path is built
            raise CommandError(_one_line(str(exc)),
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
            ctx.print(_render_pairs([
                ("folder", _show_path(pad.folder)),
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


# --------------------------------------------------------------------------------------------
# Text output
# --------------------------------------------------------------------------------------------


def _render_table(headers: list[str], rows: list[list[Any]], *, flex: int | None = None) -> str:
    """Left-aligned columns. On a terminal the ``flex`` column is cut (with an ellipsis) to fit
    its width; piped output keeps every character, for grep and friends."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    if flex is not None and sys.stdout.isatty():
        columns = shutil.get_terminal_size().columns
        others = sum(w for i, w in enumerate(widths) if i != flex) + 2 * (len(widths) - 1)
        room = max(len(headers[flex]), 12, columns - others - 1)
        if widths[flex] > room:
            widths[flex] = room
            for row in cells:
                if len(row[flex]) > room:
                    row[flex] = row[flex][:room - 1] + "\u2026"
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _render_pairs(pairs: list[tuple[str, Any]]) -> str:
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in pairs)


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover


def _show_path(path: Path | str) -> str:
    """A path relative to the current folder when it is inside it (shorter to read)."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

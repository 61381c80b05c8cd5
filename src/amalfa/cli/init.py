"""``amalfa init``: ingest Markdown files into the database, then record the run's statistics."""

from __future__ import annotations

import sys

from amalfa import __version__

from amalfa.cli._context import Context
from amalfa.cli._errors import EXIT_ERROR, EXIT_OK
from amalfa.cli._output import ProgressBar, format_size, render_table, show_path
from amalfa.cli._parsing import Commands, positive_int
from amalfa.errors import CommandError

ORDER = 10


def register(commands: Commands) -> None:
    init = commands.add(
        "init", "ingest Markdown files into the database",
        "Ingest Markdown files: each file becomes a node (id, title, summary, hash, date, "
        "meta, embedding) and links between the files become edges. Runs again update "
        "only what changed: new and edited files are embedded, deleted files lose their "
        "nodes and edges, unchanged files are not touched.", cmd_init)
    init.add_argument("paths", nargs="*", metavar="PATH",
                      help="folders, files or globs relative to the project folder (default: "
                           "the settings' sources, ./docs)")
    init.add_argument("--force", action="store_true",
                      help="embed every file again, changed or not (after changing the model)")
    init.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                      help="files embedded and written per transaction (default: 64)")
    init.add_argument("--precision", choices=("fp32", "int8"), default=None,
                      help="embedding precision: fp32 (default; parity with "
                           "sentence-transformers) or int8 (faster, a measured loss of quality; "
                           "docs/concepts/embeddings.md); changing it needs --force")


def cmd_init(ctx: Context) -> int:
    from amalfa.db import ResonanceDB
    from amalfa.ingest import DEFAULT_BATCH_SIZE, discover, ingest
    from amalfa.stats import record_ingest_run

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
    if args.precision and args.precision != embedder.precision:
        from amalfa.embedder import Embedder

        embedder = Embedder.for_settings(settings, precision=args.precision)
    # files and passages on a terminal; nothing when stderr is piped or the output is JSON
    bar = _IngestProgress("embedding", sys.stderr) if sys.stderr.isatty() and not ctx.json \
        else None
    ctx.interrupt_hint = ("every batch written so far is kept; run `amalfa init` again to "
                          "finish")
    with ResonanceDB(path, create=True) as db:
        try:  # ingest refuses another model or precision and records the one it embeds with
            result = ingest(sources, db=db, embedder=embedder, root=root,
                            exclude_patterns=settings.exclude_patterns, files=files,
                            batch_size=args.batch_size or DEFAULT_BATCH_SIZE, force=args.force,
                            progress=bar)
        finally:
            if bar is not None:
                bar.close()
        counts = db.get_stats()
        passages, _ = db.count_passages()
    ctx.interrupt_hint = None
    if not result.files and not result.removed:  # a mistyped path: nothing to record
        raise nothing_found

    run = record_ingest_run(settings, result, counts, version=__version__)
    validation, ingestion, mismatches = run.validation, run.ingestion, run.mismatches

    if ctx.json:
        ctx.emit_json({
            "database": str(path), "created": fresh, "model": result.model,
            "files": result.files, "documents": result.documents,
            "added": result.added, "updated": result.updated,
            "unchanged": len(result.unchanged), "removed": result.removed,
            "skipped": [{"path": str(p), "reason": reason} for p, reason in result.skipped],
            "links": result.links_by_type(), "edges_added": result.edges_added,
            "edges_removed": result.edges_removed,
            "passages": {"total": passages, "embedded": result.passages_embedded,
                         "kept": result.passages_kept, "removed": result.passages_removed},
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
        ctx.print(f"{verb} {show_path(path)} from {result.files} Markdown files in "
                  f"{result.seconds['total']:.1f} s ({result.model})")
        ctx.print(render_table(
            ["added", "updated", "unchanged", "removed", "skipped", "edges +", "edges -"],
            [[len(result.added), len(result.updated), len(result.unchanged),
              len(result.removed), len(result.skipped), result.edges_added,
              result.edges_removed]]))
        ctx.print()
        ctx.print(f"Passages: {result.passages_embedded} embedded, {result.passages_kept} kept, "
                  f"{result.passages_removed} removed")
        ctx.print(f"Database: {counts.nodes} nodes, {passages} passages, {counts.edges} edges, "
                  f"{counts.vectors} embeddings, {format_size(counts.db_size_bytes)}")
        for message in [*validation.errors, *validation.warnings]:
            ctx.print(f"  note: {message}")
        ctx.print()
        ctx.print(ingestion.summary())
        if mismatches is not None:
            ctx.print(ingestion.verification_table(mismatches))
    return EXIT_ERROR if mismatches else EXIT_OK


class _IngestProgress(ProgressBar):
    """The progress bar with the passages embedded so far after the file count:
    ``embedding [####....] 12/40  3.1 files/s  310 passages``."""

    def __call__(self, done: int, total: int, passages: int = 0) -> None:
        drawn_at = self.last_draw
        super().__call__(done, total)
        if self.last_draw != drawn_at:  # the bar was redrawn: add the passages to its line
            self.stream.write(f"  {passages} passages")
            self.stream.flush()

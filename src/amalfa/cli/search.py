"""``amalfa search``: find the passages that answer a question, with the database's own model.

One query (``amalfa search QUERY``) prints a ranked list of documents with the heading path,
the line and a snippet of each best passage, or a JSON list with ``--json``. ``--batch FILE``
reads one query per line (``-`` for stdin) and prints one JSON array per line, in order, with the
model loaded once: the form benchmark suites and other tools call. The searching itself is
:class:`amalfa.search.SearchEngine`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from amalfa.cli._context import Context
from amalfa.cli._errors import EXIT_OK, EXIT_USAGE
from amalfa.cli.graph import add_expand_option, expansion_rows, render_expansions
from amalfa.cli._output import show_path
from amalfa.cli._parsing import Commands, positive_int
from amalfa.errors import CommandError

ORDER = 20

_QUERY_HINT = 'ask in plain words: amalfa search "how are vectors normalised"'


def register(commands: Commands) -> None:
    search = commands.add(
        "search", "find the passages that answer a question",
        "Rank documents by their best passage: by meaning (the query's embedding against every "
        "passage's), by keywords (SQLite FTS5, BM25) or both fused (the default). Each hit "
        "shows the document, the heading path and line of its best passage and a snippet.",
        cmd_search)
    search.add_argument("query", metavar="QUERY", nargs="?",
                        help="the question or phrase, in plain words")
    search.add_argument("-k", "--limit", type=positive_int, default=10, metavar="N",
                        help="how many documents (default: 10)")
    search.add_argument("--mode", choices=("hybrid", "vector", "keyword"), default="hybrid",
                        help="hybrid (default): meaning and keywords fused; vector: meaning "
                             "only; keyword: words only")
    search.add_argument("--rerank", action="store_true",
                        help="score the best hits again with a cross-encoder (needs a reranker "
                             "model: set AMALFA_RERANKER_PATH)")
    search.add_argument("--raw", action="store_true",
                        help="pass the query to FTS5 as its own query syntax (AND, OR, NEAR, "
                             "\"phrases\", prefix*) instead of plain words")
    search.add_argument("--batch", metavar="FILE",
                        help="read one query per line from FILE (- for stdin) and print one "
                             "JSON array of hits per line, in order")
    search.add_argument("--domain", metavar="D", help="only documents of this domain")
    search.add_argument("--type", metavar="T", dest="node_type",
                        help="only documents of this type")
    add_expand_option(search)


def cmd_search(ctx: Context) -> int:
    from amalfa.search import SearchEngine

    args = ctx.args
    if args.batch is not None:
        if args.query is not None:
            raise CommandError("give either QUERY or --batch FILE, not both", status=EXIT_USAGE)
        queries = _read_batch(args.batch)
    else:
        if args.query is None:
            raise CommandError("the following arguments are required: QUERY",
                               hint=_QUERY_HINT, status=EXIT_USAGE)
        if not args.query.strip():
            raise CommandError("the query is empty", hint=_QUERY_HINT, status=EXIT_USAGE)
        queries = [args.query.strip()]

    if args.rerank:
        from amalfa.reranker import Reranker

        if not Reranker.available():
            raise CommandError(
                "--rerank needs a cross-encoder model and none was found",
                hint="set AMALFA_RERANKER_PATH to a folder with a cross-encoder's model.onnx and "
                     "tokenizer.json, or cache RERANKER_MODEL (default BAAI/bge-reranker-base) "
                     "with huggingface-cli download")
    with ctx.open_db(readonly=True) as db:
        if db.get_stats().vectors == 0:
            raise CommandError(f"the database at {show_path(db.path)} holds no embeddings yet",
                               hint="run `amalfa init` to ingest some Markdown")
        if db.count_passages()[0] == 0:
            raise CommandError(f"the database at {show_path(db.path)} has no passages yet "
                               "(it was built before search read passages)",
                               hint="run `amalfa init` once to cut the documents into passages")
        embedder = None if args.mode == "keyword" else ctx.embedder_for(db)
        engine = SearchEngine(db, embedder=embedder, root=ctx.settings.root)
        options: dict[str, Any] = {"mode": args.mode, "rerank": args.rerank,
                                   "raw_query": args.raw, "domain": args.domain,
                                   "type": args.node_type}
        if args.batch is not None:
            return _run_batch(ctx, engine, queries, args.limit, options)
        try:
            hits = engine.search(queries[0], args.limit, **options)
        except ValueError as exc:
            raise CommandError(str(exc), hint=_QUERY_HINT, status=EXIT_USAGE) from None
        expanded = expansion_rows(db, hits, args.expand)
    rows = [_row(hit) for hit in hits]
    if ctx.json:
        ctx.emit_json(rows + expanded)
        return EXIT_OK
    if not rows:
        ctx.print("No matches.")
        return EXIT_OK
    ctx.print(_render_hits(rows) + render_expansions(expanded))
    return EXIT_OK


def _read_batch(name: str) -> list[str]:
    try:
        if name == "-":
            text = sys.stdin.read()
        else:
            with open(name, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        raise CommandError(f"cannot read the batch file {name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CommandError(f"the batch file {name} is not UTF-8 (byte {exc.start})") from None
    return text.splitlines()


def _run_batch(ctx: Context, engine: Any, queries: list[str], limit: int,
               options: dict[str, Any]) -> int:
    """One JSON array per input line, in order; a blank line gives ``[]``. Queries are embedded
    in one batch; a query the engine refuses stops the run with the line number."""
    wanted = [(index, query.strip()) for index, query in enumerate(queries) if query.strip()]
    try:
        found = engine.search_many([query for _, query in wanted], limit, **options)
    except ValueError as exc:
        line = _failing_line(engine, wanted, limit, options)
        where = f"line {line}: " if line is not None else ""
        raise CommandError(f"{where}{exc}", status=EXIT_USAGE) from None
    by_line = {index: hits for (index, _), hits in zip(wanted, found)}
    for index in range(len(queries)):
        rows = [_row(hit) for hit in by_line.get(index, [])]
        ctx.out.write(json.dumps(rows, ensure_ascii=False) + "\n")
    ctx.out.flush()
    return EXIT_OK


def _failing_line(engine: Any, wanted: list[tuple[int, str]], limit: int,
                  options: dict[str, Any]) -> int | None:
    """The 1-based line of the first query the engine refuses on its own."""
    for index, query in wanted:
        try:
            engine.search_many([query], limit, **{**options, "mode": "keyword"})
        except ValueError:
            return index + 1
    return None


def _row(hit: Any) -> dict[str, Any]:
    row = hit.to_dict()
    row["score"] = round(float(hit.score), 4)
    return row


def _render_hits(rows: list[dict[str, Any]]) -> str:
    """``1  0.049  Title  (source:line)`` then the heading path and the snippet, indented."""
    blocks = []
    width = len(str(len(rows)))
    for rank, row in enumerate(rows, start=1):
        where = row["source"] or row["id"]
        if row["line"] is not None:
            where += f":{row['line']}"
        elif row["stale"]:
            where += " (changed since ingest: run `amalfa init`)"
        lines = [f"{str(rank).rjust(width)}  {row['score']:.3f}  {row['title'] or row['id']}  "
                 f"[{row['id']}]  {where}"]
        indent = " " * (width + 2)
        if row["heading"]:
            lines.append(f"{indent}in {row['heading']}")
        if row["snippet"]:
            lines.append(f"{indent}{row['snippet']}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)

"""``amalfa search``: find documents by meaning, with the model the database was built with."""

from __future__ import annotations

from amalfa.cli._context import Context
from amalfa.cli._errors import EXIT_OK, EXIT_USAGE
from amalfa.cli._output import render_table, show_path
from amalfa.cli._parsing import Commands, positive_int
from amalfa.errors import CommandError

ORDER = 20


def register(commands: Commands) -> None:
    search = commands.add(
        "search", "find documents by meaning",
        "Embed the query with the database's model and list the closest documents: "
        "rank, score (cosine similarity), id, title and source file.", cmd_search)
    search.add_argument("query", metavar="QUERY", help="the question or phrase, in plain words")
    search.add_argument("-k", "--limit", type=positive_int, default=10, metavar="N",
                        help="how many results (default: 10)")
    search.add_argument("--domain", metavar="D", help="only nodes of this domain")
    search.add_argument("--type", metavar="T", dest="node_type", help="only nodes of this type")


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
            raise CommandError(f"the database at {show_path(db.path)} holds no embeddings yet",
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
    ctx.print(render_table(
        ["#", "score", "id", "title", "source"],
        [[rank, f"{row['score']:.3f}", row["id"], row["title"] or "", row["source"] or ""]
         for rank, row in enumerate(rows, start=1)],
        flex=3))
    return EXIT_OK


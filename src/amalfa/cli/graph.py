"""``amalfa read``, ``amalfa explore`` and ``amalfa related``: from a search hit to the document,
its links and the documents like it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from amalfa.cli._context import Context
from amalfa.cli._errors import EXIT_OK, EXIT_USAGE
from amalfa.cli._output import render_table
from amalfa.cli._parsing import Commands, positive_int
from amalfa.errors import CommandError
from amalfa.limits import DEPTH

if TYPE_CHECKING:
    from amalfa.db import Subgraph

ORDER = 25



def _depth(text: str) -> int:
    """An argument type: a whole number of hops, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (range {DEPTH}), got {value}")
    return DEPTH.argparse()(text)  # amalfa.limits: the upper bound, with the range


def add_expand_option(parser: argparse.ArgumentParser) -> None:
    """``--expand N`` for ``amalfa search`` (whose module calls this)."""
    parser.add_argument("--expand", type=_depth, default=0, metavar="N",
                        help="also list the documents linked to the hits, up to N links away "
                             "(score x 0.5 per link), marked as expansions")


def expansion_rows(db: Any, hits: list[Any], hops: int) -> list[dict[str, Any]]:
    """The linked neighbours of search ``hits`` as rows (none when ``hops`` is 0)."""
    from amalfa.related import MAX_EXPAND_HOPS, expand_hits

    if hops > MAX_EXPAND_HOPS:
        raise CommandError(f"--expand {hops} is too far: at most {MAX_EXPAND_HOPS} links",
                           hint="--expand 1 adds the documents linked to each hit",
                           status=EXIT_USAGE)
    return [item.to_dict() for item in
            expand_hits(db, [(hit.id, float(hit.score)) for hit in hits], hops)]


def render_expansions(rows: list[dict[str, Any]]) -> str:
    """The expansions under the hits: score, title, id, source and the hit they came from."""
    if not rows:
        return ""
    lines = ["", "", "Linked to the hits (expansions; score x 0.5 per link):"]
    for row in rows:
        links = "link" if row["hops"] == 1 else "links"
        lines.append(f"+  {row['score']:.3f}  {row['title'] or row['id']}  [{row['id']}]  "
                     f"{row['source'] or ''}  ({row['hops']} {links} from {row['expanded_from']})")
    return "\n".join(lines)


def register(commands: Commands) -> None:
    read = commands.add(
        "read", "print a document's text from its source file",
        "Print the text of the document a node was ingested from: the file as it is on disk, "
        "without its front matter unless --raw, or only lines A to B with --lines (the line "
        "range of a search hit's passage). Refused when the file is gone, has changed since "
        "ingest, or lies outside the configured sources.", cmd_read)
    read.add_argument("id", metavar="ID", help="the node id (as `amalfa search` lists it)")
    read.add_argument("--raw", action="store_true", help="keep the YAML front matter")
    read.add_argument("--lines", metavar="A:B",
                      help="only file lines A to B (1-based, inclusive; 'A:' or ':B' allowed)")

    explore = commands.add(
        "explore", "show the documents linked to one, as a tree",
        "Walk the links around a node to --depth hops and show them as a tree: each line is a "
        "node with the type of the link that reached it (-> outgoing, <- incoming). A node "
        "reached again (a cycle) is not expanded twice. --json gives the nodes (id, title, "
        "source, depth) and the edges with their types.", cmd_explore)
    explore.add_argument("id", metavar="ID", help="the node id to start from")
    explore.add_argument("--depth", type=_depth, default=1, metavar="N",
                         help="how many hops (default: 1; 0 is the node alone)")
    explore.add_argument("--direction", choices=("outgoing", "incoming", "both"), default="both",
                         help="which links to follow (default: both)")
    explore.add_argument("--type", dest="edge_types", action="append", metavar="T",
                         help="only links of this type (repeat for several)")
    explore.add_argument("--limit", type=positive_int, default=200, metavar="N",
                         help="at most N nodes (default: 200)")

    related = commands.add(
        "related", "list the documents nearest in meaning to one",
        "Score every document against the stored embedding of the given one (no model is run) "
        "and list the closest, the document itself left out.", cmd_related)
    related.add_argument("id", metavar="ID", help="the node id to compare with")
    related.add_argument("-k", "--limit", type=positive_int, default=10, metavar="N",
                         help="how many results (default: 10)")


def cmd_read(ctx: Context) -> int:
    from amalfa.reader import parse_line_range, read_node

    args = ctx.args
    lines = None
    if args.lines is not None:
        try:
            lines = parse_line_range(args.lines)
        except ValueError as exc:
            raise CommandError(str(exc), hint="--lines 10:20 prints lines 10 to 20",
                               status=EXIT_USAGE) from None
    settings = ctx.settings
    with ctx.open_db(readonly=True) as db:
        # an unknown id is a NodeNotFoundError: cli._errors gives it its hint
        text = read_node(db, args.id, root=settings.root, sources=settings.sources,
                         raw=args.raw, lines=lines)
    if ctx.json:
        ctx.emit_json(text.to_dict())
    else:
        ctx.out.write(text.text if not text.text or text.text.endswith("\n")
                      else text.text + "\n")
    return EXIT_OK


def _tree_lines(graph: Subgraph) -> list[str]:
    """The walk as an indented tree: each node under the node it was first reached from."""
    titles = {node.id: node.title for node in graph.nodes}
    depths = {node.id: node.depth for node in graph.nodes}
    children: dict[str, list[tuple[str, str]]] = {}
    placed = set(graph.roots)
    for edge in graph.edges:
        for near, far, arrow in ((edge.source, edge.target, "->"),
                                 (edge.target, edge.source, "<-")):
            if far not in placed and depths.get(far) == depths.get(near, -2) + 1:
                children.setdefault(near, []).append((far, f"{arrow} {edge.type}"))
                placed.add(far)

    def label(node_id: str) -> str:
        title = titles.get(node_id)
        return f"{node_id}  {title}" if title else node_id

    lines: list[str] = []

    def walk(node_id: str, prefix: str) -> None:
        kids = children.get(node_id, [])
        for index, (child, via) in enumerate(kids):
            last = index == len(kids) - 1
            lines.append(f"{prefix}{'└─' if last else '├─'} {via}  {label(child)}")
            walk(child, prefix + ("   " if last else "│  "))

    for root in graph.roots:
        lines.append(label(root))
        walk(root, "")
    return lines


def cmd_explore(ctx: Context) -> int:
    args = ctx.args
    with ctx.open_db(readonly=True) as db:
        graph = db.neighbours(args.id, depth=args.depth, direction=args.direction,
                              edge_types=args.edge_types, limit=args.limit)
    if ctx.json:
        ctx.emit_json(graph.to_dict())
        return EXIT_OK
    ctx.print("\n".join(_tree_lines(graph)))
    if graph.truncated:
        ctx.print(f"(stopped at {args.limit} nodes: raise --limit to see more)")
    return EXIT_OK


def cmd_related(ctx: Context) -> int:
    from amalfa.related import related_nodes

    args = ctx.args
    with ctx.open_db(readonly=True) as db:
        hits = related_nodes(db, args.id, args.limit)
    rows: list[dict[str, Any]] = [
        {"id": hit.id, "score": round(float(hit.score), 4), "title": hit.title,
         "source": hit.meta.get("source")} for hit in hits]
    if ctx.json:
        ctx.emit_json(rows)
    elif not rows:
        ctx.print("No other documents have embeddings.")
    else:
        ctx.print(render_table(
            ["#", "score", "id", "title", "source"],
            [[rank, f"{row['score']:.3f}", row["id"], row["title"] or "", row["source"] or ""]
             for rank, row in enumerate(rows, start=1)], flex=3))
    return EXIT_OK

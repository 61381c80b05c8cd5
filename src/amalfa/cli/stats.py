"""``amalfa stats`` and ``amalfa validate``: the database's counts and growth, and the health
rules checked against them."""

from __future__ import annotations

from amalfa.cli._context import Context
from amalfa.cli._errors import EXIT_ERROR, EXIT_OK
from amalfa.cli._output import format_size, render_pairs, show_path
from amalfa.cli._parsing import Commands

ORDER = 30


def register(commands: Commands) -> None:
    commands.add(
        "stats", "counts, size, embedding coverage and growth",
        "Show the database's counts (nodes, edges, embeddings), its size, the share of nodes "
        "with an embedding, the model, and the growth recorded in the stats history.", cmd_stats)
    commands.add(
        "validate", "check the graph against the health rules (exit 1 on errors)",
        "Check the current counts with the StatsTracker rules: no nodes or no embeddings are "
        "errors; a drop of over 20% since the last snapshot, no growth, fewer than 0.1 edges per "
        "node or under 90% embedding coverage are warnings. Exits 1 when there are errors.",
        cmd_validate)


def cmd_stats(ctx: Context) -> int:
    from amalfa.stats import StatsTracker

    with ctx.open_db(readonly=True) as db:
        counts = db.get_stats()
        model = db.recorded_model()
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
    ctx.print(render_pairs([
        ("database", show_path(ctx.db_path)),
        ("size", format_size(counts.db_size_bytes)),
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

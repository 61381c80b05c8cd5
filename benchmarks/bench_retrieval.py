"""Retrieval benchmark: does search find what a document *says*, on Markdown nobody here wrote?

Run: ``python benchmarks/bench_retrieval.py [--model NAME_OR_FOLDER] [--max-docs N]``.

The corpus is obtained at run time and never committed: the Markdown long descriptions in the
``METADATA`` of the packages installed in this Python (numpy, onnxruntime, httpx, mcp ...), each
written as ``<package>.md`` into a temporary project. Nothing is downloaded.

Known-item queries, two kinds:

* **deep**: a prose sentence (8 to 40 words) taken from the second half of a document, up to
  two per document (chosen with a fixed seed), the case the issue measured at 32% recall@5 for
  one vector per file;
* **title**: the document's title as ingest sees it (front matter, first H1, else file name).

Each query is run in every mode of :class:`amalfa.search.SearchEngine` (``hybrid``, ``vector``,
``keyword``) and against the old baseline, one vector per file
(``VectorEngine.search_by_vector`` over the nodes' document-level embeddings). Printed:
recall@5 per mode and kind, and for deep queries whose document is in the top 5, how often the
reported line range contains the query sentence's lines.

Ingest cost is measured on the same corpus: passages per second through :func:`amalfa.ingest.
ingest` against the embedder's raw rate on exactly the same passage texts (same batch size),
the share of ingest time inside the model, and the database size per MB of Markdown.

For the embeddings engineer: ``--model`` takes anything ``Embedder(model)`` takes (a registry
name, a hub id in the cache, a folder with ``model.onnx`` + ``tokenizer.json``), so the same
queries measure another model or precision; :func:`run` does the same from Python and returns
the figures as a dict. ``--json`` prints that dict.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import random
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amalfa.db import ResonanceDB
from amalfa.embedder import Embedder
from amalfa.ingest import (
    IngestWarning,
    TokenCounter,
    parse_blocks,
    parse_document,
    split_passages,
)
from amalfa.ingest import ingest as run_ingest
from amalfa.search import MODES, SearchEngine
from amalfa.vectors import VectorEngine

K = 5
MIN_WORDS = 150  # shorter descriptions are a badge and a sentence: nothing to find deep inside
SENTENCE_WORDS = (8, 40)
DEEP_PER_DOC = 2
SEED = 11
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_NOISE = re.compile(r"https?://|`|\|")


@dataclass(frozen=True, slots=True)
class Query:
    kind: str  # "deep" or "title"
    text: str
    doc_id: str
    first_line: int = 0  # 1-based lines of the sentence in its file (deep queries)
    last_line: int = 0


def collect_corpus(root: Path, max_docs: int | None = None) -> list[Path]:
    """Write the installed packages' Markdown descriptions into ``root``; returns the files."""
    seen: set[str] = set()
    texts: set[str] = set()
    written: list[Path] = []
    dists = sorted(importlib.metadata.distributions(),
                   key=lambda d: (d.metadata.get("Name") or "").lower())
    for dist in dists:
        meta = dist.metadata
        name = (meta.get("Name") or "").strip().lower()
        content_type = (meta.get("Description-Content-Type") or "").lower()
        body = meta.get_payload() or meta.get("Description") or ""
        if not name or name in seen or "markdown" not in content_type:
            continue
        if len(body.split()) < MIN_WORDS or body in texts:
            continue
        seen.add(name)
        texts.add(body)
        path = root / f"{re.sub(r'[^a-z0-9]+', '-', name)}.md"
        path.write_text(body, encoding="utf-8")
        written.append(path)
        if max_docs is not None and len(written) >= max_docs:
            break
    return written


def make_queries(root: Path, files: list[Path]) -> list[Query]:
    rng = random.Random(SEED)
    queries: list[Query] = []
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IngestWarning)
            doc = parse_document(path, root=root)
        queries.append(Query("title", doc.title, doc.id))
        blocks = [b for b in parse_blocks(doc.body) if b.kind == "paragraph"]
        if not blocks:
            continue
        half = doc.body.count("\n") // 2
        sentences = []
        for block in blocks:
            if block.start < half:
                continue
            offset = 0
            for sentence in _SENTENCE_SPLIT.split(block.text):
                begin = block.text.index(sentence, offset)
                offset = begin + len(sentence)
                words = sentence.split()
                if not SENTENCE_WORDS[0] <= len(words) <= SENTENCE_WORDS[1]:
                    continue
                if _NOISE.search(sentence) or sum(c.isalpha() for c in sentence) < 30:
                    continue
                first = doc.body_line + block.line_of(begin)
                last = doc.body_line + block.line_of(offset - 1)
                sentences.append((" ".join(words), first, last))
        for text, first, last in rng.sample(sentences, min(DEEP_PER_DOC, len(sentences))):
            queries.append(Query("deep", text, doc.id, first, last))
    return queries


def measure_ingest(root: Path, db_path: Path, embedder: Embedder) -> dict[str, Any]:
    """Ingest the corpus, then embed the very same passage texts with the bare embedder."""
    with ResonanceDB(db_path, create=True) as db, warnings.catch_warnings():
        warnings.simplefilter("ignore", IngestWarning)
        started = time.perf_counter()
        result = run_ingest(["."], db=db, embedder=embedder, root=root)
        ingest_seconds = time.perf_counter() - started
        passages, _ = db.count_passages()
        db.checkpoint()  # the size is the database file's, with the WAL folded in
    counter = TokenCounter.for_embedder(embedder)
    texts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IngestWarning)
        for path in sorted(root.glob("*.md")):
            doc = parse_document(path, root=root)
            texts.append(doc.text)
            texts += [p.embed_text for p in split_passages(doc, counter)]
    started = time.perf_counter()
    embedder.embed_batch(texts, batch_size=32)
    raw_seconds = time.perf_counter() - started
    markdown_mb = sum(p.stat().st_size for p in root.glob("*.md")) / 2**20
    db_mb = db_path.stat().st_size / 2**20
    return {
        "files": result.files, "passages": passages, "texts_embedded": result.texts_embedded,
        "ingest_seconds": round(ingest_seconds, 2), "raw_embed_seconds": round(raw_seconds, 2),
        "model_seconds_in_ingest": round(result.seconds.get("embed", 0.0), 2),
        "passages_per_second": round(passages / ingest_seconds, 2),
        "texts_per_second_ingest": round(len(texts) / ingest_seconds, 2),
        "texts_per_second_raw": round(len(texts) / raw_seconds, 2),
        "overhead_vs_raw": round(1 - raw_seconds / ingest_seconds, 4),
        "share_in_model": round(result.seconds.get("embed", 0.0) / ingest_seconds, 4),
        "markdown_mb": round(markdown_mb, 3), "db_mb": round(db_mb, 3),
        "db_mb_per_markdown_mb": round(db_mb / markdown_mb, 2) if markdown_mb else None,
    }


def evaluate(db: ResonanceDB, embedder: Embedder, queries: list[Query]) -> dict[str, Any]:
    engine = SearchEngine(db, embedder=embedder)
    figures: dict[str, Any] = {}
    texts = [q.text for q in queries]
    started = time.perf_counter()
    for mode in MODES:
        results = engine.search_many(texts, K, mode=mode)
        figures[mode] = _score(queries, [[(h.id, h.line, h.line_end) for h in hits]
                                         for hits in results])
    figures["seconds_all_modes"] = round(time.perf_counter() - started, 2)
    documents = VectorEngine(db)
    vectors = embedder.embed_batch(texts)
    baseline = [[(r.id, None, None) for r in documents.search_by_vector(v, K, threshold=-1.0)]
                for v in vectors]
    figures["one vector per file"] = _score(queries, baseline)
    figures["int8_scan_recall@10"] = int8_scan_recall(db, vectors)
    return figures


def int8_scan_recall(db: ResonanceDB, query_vectors: Any, k: int = 10) -> dict[str, Any]:
    """How often the default int8 scan (pool rescored in fp32) returns the exact fp32 scan's
    top k over the passages' real MiniLM vectors: every passage as a query, and the queries."""
    exact = VectorEngine(db, source="passages", precision="fp32")
    quick = VectorEngine(db, source="passages", precision="int8")
    passages = exact.matrix
    figures: dict[str, Any] = {"passages": len(passages)}
    for name, vectors in (("passage_queries", passages), ("user_queries", query_vectors)):
        found = sum(len(set(quick.top_k(v, k)[0].tolist()) & set(exact.top_k(v, k)[0].tolist()))
                    for v in vectors)
        figures[name] = round(found / max(1, min(k, len(passages)) * len(vectors)), 5)
    return figures


def _score(queries: list[Query], results: list[list[tuple[str, Any, Any]]]) -> dict[str, Any]:
    found = {"deep": 0, "title": 0}
    total = {"deep": 0, "title": 0}
    lines_hit = lines_checked = 0
    for query, hits in zip(queries, results):
        total[query.kind] += 1
        match = next((h for h in hits[:K] if h[0] == query.doc_id), None)
        if match is None:
            continue
        found[query.kind] += 1
        if query.kind == "deep" and match[1] is not None:
            lines_checked += 1
            lines_hit += match[1] <= query.first_line and query.last_line <= match[2]
    return {
        "deep_recall@5": round(found["deep"] / max(1, total["deep"]), 3),
        "title_recall@5": round(found["title"] / max(1, total["title"]), 3),
        "line_range_contains_sentence": (round(lines_hit / lines_checked, 3)
                                         if lines_checked else None),
    }


def run(model: str | None = None, *, max_docs: int | None = None,
        workdir: Path | None = None) -> dict[str, Any]:
    """Build the corpus, ingest it with ``model`` and return every figure as a dict."""
    embedder = Embedder(model, use_daemon=False)
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        root = Path(folder) / "corpus"
        root.mkdir()
        files = collect_corpus(root, max_docs)
        words = sum(len(p.read_text(encoding="utf-8").split()) for p in files)
        queries = make_queries(root, files)
        db_path = Path(folder) / "retrieval.db"
        embedder.embed("warm up")
        ingest_figures = measure_ingest(root, db_path, embedder)
        with ResonanceDB(db_path) as db:
            retrieval = evaluate(db, embedder, queries)
    return {
        "model": embedder.model_name,
        "documents": len(files),
        "words": words,
        "queries": {"deep": sum(q.kind == "deep" for q in queries),
                    "title": sum(q.kind == "title" for q in queries)},
        "retrieval": retrieval,
        "ingest": ingest_figures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="what Embedder(model) takes (default: the embedded model)")
    parser.add_argument("--max-docs", type=int, default=None, help="use at most N documents")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = run(args.model, max_docs=args.max_docs)
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
        return 0
    print(f"model {figures['model']}: {figures['documents']} documents "
          f"({figures['words']} words), "
          f"{figures['queries']['deep']} deep and {figures['queries']['title']} title queries")
    print(f"{'mode':<22}{'deep R@5':>10}{'title R@5':>11}{'lines ok':>10}")
    for mode in (*MODES, "one vector per file"):
        row = figures["retrieval"][mode]
        lines = row["line_range_contains_sentence"]
        print(f"{mode:<22}{row['deep_recall@5']:>10.3f}{row['title_recall@5']:>11.3f}"
              f"{'-' if lines is None else f'{lines:.3f}':>10}")
    cost = figures["ingest"]
    print(f"ingest: {cost['passages']} passages from {cost['files']} files in "
          f"{cost['ingest_seconds']} s = {cost['texts_per_second_ingest']} texts/s; the bare "
          f"embedder on the same {cost['texts_embedded']} texts: {cost['texts_per_second_raw']} "
          f"texts/s; overhead {cost['overhead_vs_raw']:.1%}, time in the model "
          f"{cost['share_in_model']:.1%}")
    print(f"database {cost['db_mb']} MB for {cost['markdown_mb']} MB of Markdown "
          f"({cost['db_mb_per_markdown_mb']} MB per MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

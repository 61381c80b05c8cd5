"""pytest-benchmark: the ingest pipeline (run: pytest benchmarks/bench_ingest.py).

The parts of ``amalfa init`` that are not the model: discovering and parsing Markdown, cutting
documents into token-sized passages (CommonMark blocks and the model's tokenizer), and a second
run over unchanged files (hashing, the database scan, link resolution). One small full
run with the model is included for scale. The table of files per second and the share of time
outside the model on 1,000 files comes from benchmarks/compare_ingest.py.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from compare_ingest import generate

from amalfa.db import ResonanceDB
from amalfa.embedder import Embedder
from amalfa.ingest import (
    TokenCounter,
    discover,
    ingest,
    parse_documents,
    resolve_links,
    split_passages,
)

FILES = 300


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    generate(root, FILES, 2048)
    return root


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    model = Embedder(use_daemon=False)
    model.embed("warm up")
    return model


def test_discover_and_parse(benchmark, corpus: Path) -> None:
    def parse() -> int:
        docs = parse_documents(discover(["notes"], root=corpus), root=corpus).documents
        return len(resolve_links(docs))

    assert benchmark(parse) > 0


def test_cut_into_passages(benchmark, corpus: Path, embedder: Embedder) -> None:
    docs = parse_documents(discover(["notes"], root=corpus), root=corpus).documents
    counter = TokenCounter.for_embedder(embedder)

    def cut() -> int:
        return sum(len(split_passages(doc, counter)) for doc in docs)

    assert benchmark(cut) >= len(docs)


def test_second_run_without_changes(benchmark, corpus: Path, embedder: Embedder,
                                    tmp_path: Path) -> None:
    with ResonanceDB.create(tmp_path / "bench.db") as db:
        ingest(["notes"], db=db, embedder=embedder, root=corpus)
        result = benchmark(lambda: ingest(["notes"], db=db, embedder=embedder, root=corpus))
    assert result.embedded == 0 and len(result.unchanged) == FILES


def test_first_run_of_twenty_files(benchmark, corpus: Path, embedder: Embedder,
                                   tmp_path: Path) -> None:
    files = discover(["notes"], root=corpus)[:20]
    counter = itertools.count()

    def first_run() -> int:
        with ResonanceDB.create(tmp_path / f"run-{next(counter)}.db") as db:
            return ingest(["notes"], db=db, embedder=embedder, root=corpus, files=files).embedded

    assert benchmark.pedantic(first_run, rounds=3, iterations=1) == 20

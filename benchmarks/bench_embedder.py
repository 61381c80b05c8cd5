"""pytest-benchmark suite for the embedder and the vector daemon.

    pytest benchmarks/bench_embedder.py --benchmark-columns=median,iqr,ops

Texts/s = texts per call / median time. ``test_graphs`` runs the reference texts and the short
sentences through each graph: the source file as shipped, the fp32 graph amalfa builds on this
machine and the int8 one (built into a temporary cache before timing). The side-by-side
comparison with fastembed and sentence-transformers is ``benchmarks/compare_embedder.py``.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from amalfa.daemon import DaemonServer, make_server
from amalfa.embedder import Embedder

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "minilm"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return json.loads((REFERENCE / "texts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def short(texts: list[str]) -> list[str]:
    sentences = [s.strip() for t in texts for s in re.split(r"[.!?]\s+|\n+", t)
                 if 4 <= len(s.split()) <= 12]
    return (sentences * (200 // len(sentences) + 1))[:200]


@pytest.fixture(scope="module")
def embedder(texts: list[str]) -> Embedder:
    local = Embedder(use_daemon=False)
    local.embed_batch(texts)  # load and warm up
    return local


@pytest.fixture(scope="module")
def server(embedder: Embedder) -> Iterator[DaemonServer]:
    with make_server(port=0, embedder=embedder) as srv:
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        yield srv
        srv.shutdown()
        thread.join()


GRAPHS = {"source": {"optimize": False}, "fp32": {}, "int8": {"precision": "int8"}}


@pytest.fixture(scope="module", params=list(GRAPHS))
def graph_embedder(request, texts: list[str], tmp_path_factory) -> Iterator[Embedder]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("model-cache")))
        local = Embedder(use_daemon=False, **GRAPHS[request.param])
        local.embed_batch(texts)  # build, load and warm up
        yield local


@pytest.mark.parametrize("which", ["reference", "short"])
def test_graphs(benchmark, graph_embedder: Embedder, texts: list[str], short: list[str],
                which: str) -> None:
    batch = texts if which == "reference" else short
    benchmark.extra_info["texts"] = len(batch)
    benchmark.pedantic(graph_embedder.embed_batch, args=(batch,), rounds=5, warmup_rounds=1)


def test_reference_texts(benchmark, embedder: Embedder, texts: list[str]) -> None:
    benchmark.extra_info["texts"] = len(texts)
    vectors = benchmark.pedantic(embedder.embed_batch, args=(texts,), rounds=7, warmup_rounds=1)
    assert vectors.shape == (len(texts), 384)


@pytest.mark.parametrize("batch_size", [8, 32, 128])
def test_reference_texts_batch_size(benchmark, embedder: Embedder, texts: list[str],
                                    batch_size: int) -> None:
    benchmark.pedantic(embedder.embed_batch, args=(texts,), kwargs={"batch_size": batch_size},
                       rounds=5, warmup_rounds=1)


def test_short_sentences(benchmark, embedder: Embedder, short: list[str]) -> None:
    benchmark.extra_info["texts"] = len(short)
    benchmark.pedantic(embedder.embed_batch, args=(short,), rounds=7, warmup_rounds=1)


def test_single_text_latency(benchmark, embedder: Embedder, short: list[str]) -> None:
    benchmark(embedder.embed, short[0])


def test_daemon_embed_http(benchmark, server: DaemonServer, short: list[str]) -> None:
    body = json.dumps({"text": short[0]}).encode()

    def post() -> int:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("POST", "/embed", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status

    assert benchmark(post) == 200


def test_daemon_embed_through_client(benchmark, server: DaemonServer, short: list[str],
                                     monkeypatch) -> None:
    monkeypatch.setenv("VECTOR_PORT", str(server.port))
    client = Embedder()
    benchmark(client.embed, short[0])
    assert not client.is_loaded  # every call went through the daemon

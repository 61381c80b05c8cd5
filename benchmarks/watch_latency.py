"""How long from saving a file to finding it with search, while `amalfa watch` runs.

    python benchmarks/watch_latency.py [--writes 10] [--corpus 50] [--debounce 300]

A throwaway project (``--corpus`` small Markdown notes) is ingested by the watcher's catch-up
run; then, ``--writes`` times, a new note with a sentence found nowhere else is written and the
clock runs until a search for that sentence (``amalfa.search.SearchEngine``, hybrid, the same
model, in this process: the watcher is another process) returns the new note first. The watcher
is a real ``amalfa watch --json`` subprocess; its own report of each batch gives the ingest time.

Printed: median and max of write -> found, and of the watcher's run per batch. The goal in the
issue: found within 3 seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WORDS = ("amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbour", "indigo",
         "juniper", "kelp", "lagoon", "marble", "nectar", "obsidian", "pine", "quartz", "reef")


def sentence(index: int) -> str:
    pick = [WORDS[(index * 7 + k * 5) % len(WORDS)] for k in range(4)]
    return f"The {pick[0]} {pick[1]} keeper {index} trades {pick[2]} for {pick[3]} at dawn."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=10)
    parser.add_argument("--corpus", type=int, default=50)
    parser.add_argument("--debounce", type=int, default=300)
    args = parser.parse_args(argv)

    from amalfa.db import ResonanceDB
    from amalfa.embedder import Embedder
    from amalfa.search import SearchEngine

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "docs").mkdir()
        for i in range(args.corpus):
            (root / "docs" / f"note{i}.md").write_text(
                f"# Note {i}\n\nA note about topic {i % 7} and harbour walks.\n")
        (root / "amalfa.settings.json").write_text(json.dumps(
            {"sources": ["docs"], "watch": {"debounce": args.debounce}}))
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("AMALFA_SETTINGS", None)
        watcher = subprocess.Popen([sys.executable, "-m", "amalfa", "watch", "--json"],
                                   cwd=root, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        batches: queue.Queue[dict] = queue.Queue()

        def pump() -> None:
            assert watcher.stdout is not None
            for line in watcher.stdout:
                batches.put(json.loads(line))

        threading.Thread(target=pump, daemon=True).start()
        batches.get(timeout=300)  # the catch-up run
        embedder = Embedder(use_daemon=False)
        found_after, run_seconds = [], []
        with ResonanceDB(root / ".amalfa/runtime/resonance.db", readonly=True) as db:
            engine = SearchEngine(db, embedder=embedder, root=root)
            engine.search("warm up", 1)
            for i in range(args.writes):
                text = sentence(i)
                start = time.perf_counter()
                (root / "docs" / f"new{i}.md").write_text(f"# New {i}\n\n{text}\n")
                while True:
                    hits = engine.search(text, 1)
                    if hits and hits[0].id == f"docs-new{i}":
                        break
                    if time.perf_counter() - start > 60:
                        raise SystemExit(f"write {i}: not found after 60 s")
                    time.sleep(0.02)
                found_after.append(time.perf_counter() - start)
                while True:  # this write's batch report (its run time)
                    batch = batches.get(timeout=60)
                    if any(c["path"] == f"docs/new{i}.md" for c in batch["changes"]):
                        run_seconds.append(batch["seconds"])
                        break
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=60)

    print(f"{args.writes} writes into a {args.corpus}-note project, debounce {args.debounce} ms")
    print(f"write -> found by search: median {statistics.median(found_after):.2f} s, "
          f"max {max(found_after):.2f} s (goal: 3 s)")
    print(f"watcher run per batch:    median {statistics.median(run_seconds):.2f} s, "
          f"max {max(run_seconds):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

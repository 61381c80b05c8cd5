"""Run the side-by-side comparisons: python benchmarks/compare.py [core|db|vectors|embedder|ingest ...]

Each area has its own script (benchmarks/compare_<area>.py, with its own options: run it directly
for those); this one runs the chosen areas, or all of them, with their defaults, one after the
other in this process. Peers come from `python -m pip install ".[bench]"`.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

AREAS = ("core", "db", "vectors", "embedder", "ingest")


def main(argv: list[str] | None = None) -> int:
    chosen = list(argv if argv is not None else sys.argv[1:]) or list(AREAS)
    unknown = [a for a in chosen if a not in AREAS]
    if unknown:
        print(f"unknown area(s) {unknown}; choose from {', '.join(AREAS)}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    status = 0
    for area in chosen:
        print(f"\n=== {area} ===", flush=True)
        start = time.perf_counter()
        status |= importlib.import_module(f"compare_{area}").main([]) or 0
        print(f"({area}: {time.perf_counter() - start:.0f} s)", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

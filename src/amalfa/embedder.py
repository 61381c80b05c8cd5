"""Text to FAFCAS vectors: the :class:`Embedder`, and its client of the vector daemon.

Which model files are used is :mod:`amalfa.models.files`' job (an explicit folder or name,
``$AMALFA_MODEL_PATH``, the hub cache, then the embedded all-MiniLM-L6-v2 from the ``model``
extra); the session, tokenizer and batching are :mod:`amalfa.models._runtime`'s, shared with the
reranker. What runs is not the source graph itself but the graph :mod:`amalfa.models.builder`
makes of it on this machine at first use (constants folded, attention fused, and for
``precision="int8"`` quantised), cached in the user's cache folder and checked by a parity probe;
``optimize=False`` runs the source graph as it is.

Two precisions: ``fp32`` (the default) keeps parity with sentence-transformers (least cosine
>= 0.998 on the reference texts); ``int8`` is faster and loses a measured amount of quality
(docs/concepts/embeddings.md). A database records the model and precision its vectors come from;
:meth:`Embedder.for_database` picks them, and :meth:`Embedder.check_database` refuses another.

Vectors: texts are tokenised together, sorted by token count and run in batches padded to their
own longest text (never to a fixed 128/256), then pooled in numpy (mean or CLS, per the model),
restored to input order and normalised by :func:`amalfa.fafcas.to_fafcas`.

The empty string is embedded as the model embeds it (``[CLS] [SEP]``), exactly as
sentence-transformers does; it is a valid unit vector, not a zero vector. Texts longer than the
model's maximum sequence length are truncated to it.

Remote first: while the local model is not loaded, :meth:`Embedder.embed_batch` asks the vector
daemon on ``127.0.0.1:$VECTOR_PORT`` (default 3010) with a 200 ms timeout (plus 50 ms per further
text of a batch) and falls back to the local model on any failure, including a daemon that serves
another model or precision (logged at debug level, never raised). Once the local model is loaded
it is used directly: asking the daemon then would only add a round trip.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from amalfa.errors import ModelError, ModelMismatchError, SettingsError
from amalfa.limits import BATCH_SIZE, THREADS
from amalfa.models._runtime import (
    MAX_BATCH_TOKENS,
    TOKENIZE_CHUNK,
    build_session,
    default_threads,
    encode_arrays,
    encode_batch,
    graph_inputs,
    length_sorted_batches,
    load_tokenizer,
)
from amalfa.models.builder import BuiltGraph, graph_status, optimized_graph
from amalfa.models.files import (
    EMBEDDED_ONNX_SHA256,
    EMBEDDED_TOKENIZER_SHA256,
    ModelFiles,
    bundled_tokenizer_path,
    embedded_model_files,
    embedded_package_paths,
    resolve_model,
)
from amalfa.models.registry import (
    DEFAULT_MODEL,
    DEFAULT_PRECISION,
    PRECISIONS,
    REGISTRY,
    ModelSpec,
    Pooling,
    Precision,
    check_precision,
    find_spec,
    loose_name,
)
from amalfa.settings import DEFAULT_VECTOR_PORT, vector_port
from amalfa.text_rules import for_model_all

if TYPE_CHECKING:
    from amalfa.db import ResonanceDB
    from amalfa.settings import Settings

# The model helpers once lived here; they are re-exported for the code and tests that import
# them from this module (amalfa.models is where they live now).
__all__ = ["DAEMON_MAX_TEXTS", "DEFAULT_MODEL", "DEFAULT_PORT", "DEFAULT_PRECISION",
           "EMBEDDED_ONNX_SHA256", "EMBEDDED_TOKENIZER_SHA256", "PRECISIONS", "REGISTRY",
           "Embedder", "ModelFiles", "ModelSpec", "bundled_tokenizer_path", "daemon_port",
           "embedded_model_files", "embedded_package_paths", "find_spec", "load_tokenizer",
           "loose_name", "resolve_model"]

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]

DEFAULT_PORT = DEFAULT_VECTOR_PORT
#: How long the embedder waits for the daemon before it falls back to the local model.
DAEMON_TIMEOUT_S = 0.2
#: Extra wait per text of a batch sent to the daemon (a batch takes longer than one text).
DAEMON_TIMEOUT_PER_TEXT_S = 0.05
#: Texts the daemon takes in one request; larger batches are embedded locally.
DAEMON_MAX_TEXTS = 1024


# --- the daemon client --------------------------------------------------------------------------


def daemon_port() -> int | None:
    """``$VECTOR_PORT`` (default 3010, :func:`amalfa.settings.vector_port`); None when it is not
    a valid port number: the client then does not ask a daemon at all."""
    try:
        return vector_port()
    except SettingsError as exc:
        log.debug("%s; not asking the daemon", exc)
        return None


def _ask_daemon(texts: list[str], *, model_name: str, precision: str,
                dimensions: int | None) -> Matrix | None:
    """The daemon's vectors for ``texts``, or None on any failure (logged at debug level).

    The daemon must serve ``model_name`` at ``precision`` (an answer without a precision is
    fp32, as every daemon before precisions was) and, when ``dimensions`` is known, vectors of
    that size.
    """
    port = daemon_port()
    if port is None:
        return None
    timeout = DAEMON_TIMEOUT_S + DAEMON_TIMEOUT_PER_TEXT_S * max(0, len(texts) - 1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/embed", body=json.dumps({"texts": texts}).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
    except (OSError, http.client.HTTPException) as exc:
        log.debug("vector daemon on port %d unavailable (%s); embedding locally", port, exc)
        return None
    finally:
        conn.close()
    if response.status != 200:
        log.debug("vector daemon answered %d; embedding locally", response.status)
        return None
    try:
        answer = json.loads(payload)
        vectors = np.asarray(answer["vectors"], dtype=np.float32)
        model = answer.get("model")
        served = answer.get("precision", DEFAULT_PRECISION)
    except (ValueError, KeyError, TypeError) as exc:
        log.debug("vector daemon sent an unreadable answer (%s); embedding locally", exc)
        return None
    if (model != model_name or served != precision or vectors.ndim != 2
            or vectors.shape[0] != len(texts)
            or not vectors.shape[1] or (dimensions and vectors.shape[1] != dimensions)):
        log.debug("vector daemon serves %s (%s) with shape %s; this embedder needs %s (%s) %s; "
                  "embedding locally", model, served, vectors.shape, model_name, precision,
                  (len(texts), dimensions))
        return None
    return vectors


def _unit_rows(vectors: Matrix) -> Matrix:
    """FAFCAS-normalise each row in place."""
    from amalfa.fafcas import to_fafcas

    return to_fafcas(vectors, inplace=True)


# --- the embedder -------------------------------------------------------------------------------


@dataclass
class _Runner:
    """One onnxruntime session with what running it needs: its inputs and its output."""

    session: Any
    input_names: list[str]
    input_dtype: np.dtype
    output_name: str
    dimensions: int | None


def _runner(session: Any, onnx_path: Path) -> _Runner:
    names, dtype = graph_inputs(session, onnx_path)
    outputs = session.get_outputs()
    by_name = {o.name: o for o in outputs}
    output = by_name.get("last_hidden_state") or by_name.get("token_embeddings") or outputs[0]
    width = output.shape[-1] if output.shape else None
    return _Runner(session, names, dtype, output.name, width if isinstance(width, int) else None)


class Embedder:
    """Text to FAFCAS vectors with an ONNX model; see the module docstring for the details.

    ``model``: a folder, a registry name or a hub id (None: resolve as
    :mod:`amalfa.models.files` says).
    ``precision``: ``"fp32"`` (parity with sentence-transformers) or ``"int8"`` (faster).
    ``threads``: onnxruntime intra-op threads (default: the cores this process may use).
    ``use_daemon``: ask the vector daemon first while the local model is not loaded.
    ``download``: fetch a hub model that is not cached (honours ``HF_HUB_OFFLINE``).
    ``optimize``: run the graph built on this machine (False: the source graph as it is).

    The model files are found when the embedder is built; the graph is built (or found in the
    cache) and the ONNX session created on first local use, then kept.
    """

    _instance: ClassVar[Embedder | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: str | Path | None = None, *, precision: str = DEFAULT_PRECISION,
                 threads: int | None = None, use_daemon: bool = True, download: bool = False,
                 optimize: bool = True) -> None:
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ValueError(f"threads must be a positive integer; got {threads!r}")
        if threads is not None:
            threads = THREADS.check(threads, "threads")  # amalfa.limits: onnxruntime takes an int
        self._precision: Precision = check_precision(precision)
        if self._precision == "int8" and not optimize:
            raise ValueError("precision='int8' needs the built graph; optimize=False runs the "
                             "source graph, which is fp32")
        self.files = resolve_model(model, download=download)
        self.threads = threads or default_threads()
        self.use_daemon = use_daemon
        self.optimize = optimize
        self.graph: BuiltGraph | None = None
        self._run: _Runner | None = None
        self._tokenizer: Any = None
        self._dimensions = self.files.spec.dimensions
        self.max_batch_tokens = MAX_BATCH_TOKENS
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # one inference at a time: the threads are the cores

    # -- other ways to build one --

    @classmethod
    def for_settings(cls, settings: Settings, **options: Any) -> Embedder:
        """The embedder the settings ask for: ``embeddings.model`` (unless ``$AMALFA_MODEL_PATH``
        or ``$EMBEDDING_MODEL`` chooses), ``embeddings.precision`` and ``embeddings.threads``
        when the settings have them. Finds the files; loads nothing."""
        section = settings.embeddings
        model: str | None = section.model
        if os.environ.get("AMALFA_MODEL_PATH", "").strip() or \
                os.environ.get("EMBEDDING_MODEL", "").strip():
            model = None  # the environment's choice, as for Embedder()
        options.setdefault("precision", getattr(section, "precision", None) or DEFAULT_PRECISION)
        threads = getattr(section, "threads", None)
        if threads:
            options.setdefault("threads", threads)
        return cls(model, **options)

    @classmethod
    def for_database(cls, db: ResonanceDB, settings: Settings | None = None,
                     **options: Any) -> Embedder:
        """The embedder for querying ``db``: the model and precision it recorded win; a database
        that recorded none gets the settings' choice (or, with neither settings nor options, the
        shared default of :meth:`get_instance`)."""
        recorded = db.recorded_model()
        precision = db.recorded_precision() or DEFAULT_PRECISION
        if recorded:
            return cls(recorded, precision=precision, **options)
        if settings is not None:
            return cls.for_settings(settings, **options)
        return cls(**options) if options else cls.get_instance()

    # -- the shared instance --

    @classmethod
    def get_instance(cls) -> Embedder:
        """The process-wide embedder (built on first call with no arguments, then reused)."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    @classmethod
    def clear_instance(cls) -> None:
        """Forget the shared embedder (after the environment changed; tests use this)."""
        with cls._instance_lock:
            cls._instance = None

    # -- what it is --

    @property
    def model_name(self) -> str:
        return self.files.spec.name

    @property
    def precision(self) -> Precision:
        """``"fp32"`` or ``"int8"``: recorded beside the model in every database it writes."""
        return self._precision

    @property
    def dimensions(self) -> int:
        if not self._dimensions:
            self._load()
        return self._dimensions

    @property
    def max_length(self) -> int:
        return self.files.spec.max_length

    @property
    def pooling(self) -> Pooling:
        return self.files.spec.pooling

    @property
    def source(self) -> str:
        """Where the model came from: ``path``, ``env``, ``hub`` or ``embedded``."""
        return self.files.source

    @property
    def is_loaded(self) -> bool:
        """Whether the local ONNX session exists (it does after the first local embedding)."""
        return self._run is not None

    @property
    def _session(self) -> Any:
        return None if self._run is None else self._run.session

    def __repr__(self) -> str:
        return (f"Embedder(model={self.model_name!r}, precision={self.precision!r}, "
                f"source={self.source!r}, pooling={self.pooling!r}, "
                f"max_length={self.max_length}, threads={self.threads})")

    def graph_status(self) -> dict[str, Any]:
        """The optimised graph's state in the cache (``built``, ``not built``, ``probe failed``,
        ``corrupt``) without building or loading anything; ``amalfa doctor`` reports it. Hashes
        the source file (the embedded one is checked against its pin on the way)."""
        if not self.optimize:
            return {"precision": self.precision, "state": "off"}
        self.files.verify()
        return graph_status(self.files.onnx_path, self.precision,
                            source_sha256=self.files.onnx_sha256)

    # -- databases --

    def check_database(self, db: ResonanceDB) -> None:
        """Raise :class:`~amalfa.errors.ModelMismatchError` unless ``db`` recorded this model and
        precision (or recorded none): vectors of two models or precisions must not be mixed."""
        recorded = db.recorded_model()
        if recorded is None:
            return
        recorded_precision = db.recorded_precision() or DEFAULT_PRECISION
        if (recorded, recorded_precision) != (self.model_name, self.precision):
            raise ModelMismatchError(
                f"the database at {db.path} was embedded with {recorded} ({recorded_precision}), "
                f"not with {self.model_name} ({self.precision}); use the recorded ones "
                f"(Embedder.for_database(db), or `amalfa init --precision "
                f"{recorded_precision}`), or embed every file again with "
                f"`amalfa init --force --precision {self.precision}`")

    def record_in(self, db: ResonanceDB) -> None:
        """Record this model and precision as the source of ``db``'s vectors (call it in the
        transaction that writes the first ones); refuses a database recorded with others."""
        self.check_database(db)
        db.record_model(self.model_name, self.precision)

    # -- embedding --

    def embed(self, text: str) -> Matrix:
        """One text -> a FAFCAS vector of shape (d,).

        Any str is accepted: lone surrogates become U+FFFD first (:func:`amalfa.text_rules.
        for_model`), so ``embed("\\ud800") == embed("\\ufffd")``.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str; got {type(text).__name__}")
        return self.embed_batch([text])[0]

    def embed_batch(self, texts: Sequence[str], *, batch_size: int = 32) -> Matrix:
        """Texts -> FAFCAS vectors of shape (n, d) in input order; (0, d) for no texts."""
        if isinstance(texts, str):
            raise TypeError("embed_batch takes a sequence of texts; use embed() for one text")
        # amalfa.text_rules: lone surrogates -> U+FFFD (TypeError naming texts[i] for a non-str);
        # amalfa.limits: the batch size in range before it sizes anything
        texts = for_model_all(texts)
        batch_size = BATCH_SIZE.check(batch_size, "batch_size")
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        if self.use_daemon and self._run is None and len(texts) <= DAEMON_MAX_TEXTS:
            remote = _ask_daemon(texts, model_name=self.model_name, precision=self.precision,
                                 dimensions=self._dimensions or None)
            if remote is not None:
                return _unit_rows(remote)
        return self._embed_local(texts, batch_size)

    def _embed_local(self, texts: list[str], batch_size: int) -> Matrix:
        self._load()
        assert self._run is not None
        with self._run_lock:
            out = self._pooled(self._run, texts, batch_size)
        return _unit_rows(out)

    def _pooled(self, run: _Runner, texts: list[str], batch_size: int = 32) -> Matrix:
        """Pooled (not yet normalised) vectors of ``texts`` with ``run``, in input order."""
        width = run.dimensions or self._dimensions
        out = np.empty((len(texts), width), dtype=np.float32)
        for start in range(0, len(texts), TOKENIZE_CHUNK):
            chunk = texts[start:start + TOKENIZE_CHUNK]
            ids, mask, types = encode_arrays(encode_batch(self._tokenizer, chunk),
                                             run.input_dtype)
            lengths = mask.sum(axis=1)
            for rows in length_sorted_batches(lengths, batch_size,
                                              max_tokens=self.max_batch_tokens):
                longest = int(lengths[rows].max())
                feeds = {"input_ids": ids[rows, :longest],
                         "attention_mask": mask[rows, :longest],
                         "token_type_ids": types[rows, :longest]}
                hidden = run.session.run([run.output_name],
                                         {n: feeds[n] for n in run.input_names})[0]
                out[start + rows] = self._pool(hidden, feeds["attention_mask"])
        return out

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> Matrix:
        if hidden.ndim == 2:  # the graph pools itself (a sentence_embedding output)
            return hidden
        if self.pooling == "cls":
            return hidden[:, 0, :]
        weights = mask.astype(np.float32)
        summed = np.matmul(weights[:, None, :], hidden)[:, 0, :]
        return summed / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)

    def _probe_vectors(self, session: Any, texts: list[str]) -> Matrix:
        """The builder's parity probe: this embedder's pipeline run with another session."""
        return self._pooled(_runner(session, self.files.onnx_path), texts)

    def _load(self) -> None:
        if self._run is not None:
            return
        with self._load_lock:
            if self._run is not None:
                return
            files = self.files
            files.verify()
            self._tokenizer = load_tokenizer(json_text=files.tokenizer_text(),
                                             path=files.tokenizer_path or files.tokenizer_archive,
                                             max_length=files.spec.max_length)
            onnx_path = files.onnx_path
            if self.optimize:
                self.graph = optimized_graph(
                    files.onnx_path, self.precision, vectors_of=self._probe_vectors,
                    source_sha256=files.onnx_sha256, threads=self.threads)
                onnx_path = self.graph.path
            run = _runner(build_session(onnx_path, threads=self.threads), onnx_path)
            if run.dimensions is not None:
                if self._dimensions and run.dimensions != self._dimensions:
                    raise ModelError(f"{files.onnx_path} gives {run.dimensions}-d vectors; "
                                     f"{self.model_name} should give {self._dimensions}-d")
                self._dimensions = run.dimensions
            elif not self._dimensions:
                raise ModelError(f"{files.onnx_path}: the output dimension is not fixed in the "
                                 "graph and no config states it")
            self._run = run
            log.debug("loaded %r from %s", self, onnx_path)

"""Cross-encoder reranking: score (query, document) pairs with an ONNX model.

A cross-encoder reads the query and a document together (the tokenizer's pair encoding:
``[CLS] query [SEP] document [SEP]`` with token type 0 then 1) and gives one logit; the score is
its sigmoid, in (0, 1). Results are sorted by score (ties keep input order), then cut by
``threshold`` and ``top_k``.

Which model, first that applies: the ``model`` argument (a folder with ``model.onnx`` or
``onnx/model.onnx`` and ``tokenizer.json``, or a hub id); the folder in
``$AMALFA_RERANKER_PATH``; the hub cache for ``$RERANKER_MODEL`` (default
``BAAI/bge-reranker-base``). There is no embedded reranker: without a model,
:class:`Reranker` raises :class:`~amalfa.errors.ModelError` and never invents scores.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from amalfa.errors import ModelError
from amalfa.models._runtime import (
    MAX_BATCH_TOKENS,
    build_session,
    default_threads,
    encode_arrays,
    encode_batch,
    graph_inputs,
    length_sorted_batches,
    load_tokenizer,
)
from amalfa.models.files import hub_blob_checks, hub_files, locate_model_files, verify_sha256
from amalfa.text_rules import for_model

__all__ = ["DEFAULT_RERANKER", "RerankResult", "Reranker", "resolve_reranker"]

DEFAULT_RERANKER = "BAAI/bge-reranker-base"


@dataclass(frozen=True)
class RerankResult:
    """One scored document: its text, sigmoid score and position in the input."""

    text: str
    score: float
    original_index: int


def resolve_reranker(model: str | Path | None = None, *,
                     download: bool = False) -> tuple[str, Path, Path]:
    """(name, onnx path, tokenizer path) of the reranker; ModelError when there is none."""
    if isinstance(model, Path) or (isinstance(model, str) and Path(model).expanduser().is_dir()):
        folder = Path(model).expanduser()
        return (str(folder.resolve()), *locate_model_files(folder, origin="reranker folder"))
    if model is None:
        env_path = os.environ.get("AMALFA_RERANKER_PATH", "").strip()
        if env_path:
            folder = Path(env_path).expanduser()
            return (str(folder.resolve()),
                    *locate_model_files(folder, origin="AMALFA_RERANKER_PATH"))
        model = os.environ.get("RERANKER_MODEL", "").strip() or DEFAULT_RERANKER
    if not isinstance(model, str) or "/" not in model:
        raise ModelError(f"reranker model must be a folder or a hub id (org/name); got {model!r}")
    found = hub_files(model, download=download, verify=False)  # checked in Reranker.load
    if found is None:
        raise ModelError(f"no reranker model: {model} is not in the Hugging Face cache; set "
                         "AMALFA_RERANKER_PATH to a folder with model.onnx and tokenizer.json, "
                         "or download it with Reranker(download=True)")
    return (model, *found)


def _sigmoid(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """1 / (1 + e^-x), written so a large |x| neither overflows nor rounds the tail to 0."""
    tail = np.exp(-np.abs(logits))
    return np.where(logits >= 0, 1.0 / (1.0 + tail), tail / (1.0 + tail)).astype(np.float32)


class Reranker:
    """Scores documents against a query with a cross-encoder ONNX model.

    ``model``: a folder or hub id (None: resolve as the module docstring says).
    ``max_length``: pair length in tokens, truncating the longer side first.
    The model files are found when the reranker is built (ModelError if there are none); the
    ONNX session is created on first use.
    """

    def __init__(self, model: str | Path | None = None, *, threads: int | None = None,
                 max_length: int = 512, download: bool = False) -> None:
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer; got {threads!r}")
        if not isinstance(max_length, int) or max_length < 8:
            raise ValueError(f"max_length must be an integer >= 8; got {max_length!r}")
        self.model_name, self.onnx_path, self.tokenizer_path = resolve_reranker(
            model, download=download)
        self.threads = threads or default_threads()
        self.max_length = max_length
        self._session: Any = None
        self._tokenizer: Any = None
        self._input_names: list[str] = []
        self._input_dtype = np.dtype(np.int64)
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @classmethod
    def available(cls, model: str | Path | None = None) -> bool:
        """Whether a reranker model can be found without downloading (nothing is loaded)."""
        try:
            resolve_reranker(model)
        except ModelError:
            return False
        return True

    @property
    def is_loaded(self) -> bool:
        return self._session is not None

    def __repr__(self) -> str:
        return f"Reranker(model={self.model_name!r}, max_length={self.max_length})"

    def load(self) -> None:
        """Create the ONNX session now (the daemon does this at start)."""
        if self._session is not None:
            return
        with self._load_lock:
            if self._session is not None:
                return
            for blob, expected in hub_blob_checks(self.onnx_path, self.tokenizer_path):
                verify_sha256(blob, expected, "hub cache blob")
            tokenizer = load_tokenizer(path=self.tokenizer_path, max_length=self.max_length)
            session = build_session(self.onnx_path, threads=self.threads)
            self._input_names, self._input_dtype = graph_inputs(session, self.onnx_path)
            output = session.get_outputs()[0]
            shape = list(output.shape or [])
            # (batch,) or (batch, 1); a symbolic last dimension is checked on each run instead
            if len(shape) not in (1, 2) or (len(shape) == 2 and isinstance(shape[1], int)
                                            and shape[1] != 1):
                raise ModelError(f"{self.onnx_path}: output {output.name} has shape {shape}; "
                                 "a cross-encoder gives one logit per pair, (batch,) or "
                                 "(batch, 1)")
            self._tokenizer = tokenizer
            self._session = session

    def score(self, query: str, documents: Sequence[str], *,
              batch_size: int = 32) -> npt.NDArray[np.float32]:
        """Sigmoid scores of ``documents`` against ``query``, in input order, shape (n,)."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str; got {type(query).__name__}")
        if isinstance(documents, str):
            raise TypeError("documents must be a sequence of str, not one str")
        documents = list(documents)
        for i, doc in enumerate(documents):
            if not isinstance(doc, str):
                raise TypeError(f"documents[{i}] must be a str; got {type(doc).__name__}")
        if not documents:
            return np.zeros(0, dtype=np.float32)
        self.load()
        # lone surrogates become U+FFFD for the tokenizer (amalfa.text_rules); results keep the
        # documents as given
        query = for_model(query, what="query")
        encodings = encode_batch(self._tokenizer, [(query, for_model(doc)) for doc in documents])
        ids, mask, types = encode_arrays(encodings, self._input_dtype)
        lengths = mask.sum(axis=1)
        logits = np.empty(len(documents), dtype=np.float32)
        with self._run_lock:
            for rows in length_sorted_batches(lengths, batch_size, max_tokens=MAX_BATCH_TOKENS):
                width = int(lengths[rows].max())
                feeds = {"input_ids": ids[rows, :width], "attention_mask": mask[rows, :width],
                         "token_type_ids": types[rows, :width]}
                out = self._session.run(None, {n: feeds[n] for n in self._input_names})[0]
                if out.size != len(rows):
                    raise ModelError(f"{self.onnx_path} gave output of shape {out.shape} for "
                                     f"{len(rows)} pairs; expected one logit per pair")
                logits[rows] = out.reshape(len(rows))
        return _sigmoid(logits)

    def rerank(self, query: str, documents: Sequence[str], *, top_k: int | None = None,
               threshold: float | None = None) -> list[RerankResult]:
        """Documents sorted by score (best first), those below ``threshold`` dropped, at most
        ``top_k`` kept."""
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or top_k < 0):
            raise ValueError(f"top_k must be a non-negative integer or None; got {top_k!r}")
        if threshold is not None and (isinstance(threshold, bool)
                                      or not isinstance(threshold, (int, float))
                                      or not 0.0 <= threshold <= 1.0):
            raise ValueError(f"threshold must be a number in [0, 1] or None; got {threshold!r}")
        documents = list(documents) if not isinstance(documents, str) else documents
        scores = self.score(query, documents)
        order = np.argsort(-scores, kind="stable")
        results = [RerankResult(documents[i], float(scores[i]), int(i)) for i in order
                   if threshold is None or scores[i] >= threshold]
        return results if top_k is None else results[:top_k]

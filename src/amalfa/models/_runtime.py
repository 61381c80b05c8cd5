"""The onnxruntime session, the tokenizer and the batching that Embedder and Reranker share.

Private to :mod:`amalfa.models`: both model classes build their session with
:func:`build_session` (explicit options: all graph optimisations, sequential execution, the
given intra-op threads and one inter-op thread), load their tokenizer with
:func:`load_tokenizer` (truncation at the model's length, padding per batch to its longest
text, whatever the ``tokenizer.json`` says), and run texts in :func:`length_sorted_batches`
so one long text does not pad a whole batch. Tokenisation happens for a whole chunk of texts
at once in the tokenizers library (Rust, parallel, off the GIL); the arrays are built per
batch, nothing runs per text in Python but the copy of each encoding's ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amalfa.errors import ModelError
from amalfa.limits import available_cores

__all__ = ["DISABLED_OPTIMIZERS", "MAX_BATCH_TOKENS", "TOKENIZE_CHUNK", "build_session",
           "default_threads", "encode_arrays", "encode_batch", "graph_inputs",
           "length_sorted_batches", "load_tokenizer", "ort_errors"]

#: Padded tokens per onnxruntime run. Measured on a 2-core machine with all-MiniLM-L6-v2: runs
#: of 256-512 tokens are fastest per text; from ~1000 tokens on (32 texts of 30 tokens) each text
#: costs more, as the activations outgrow the caches.
MAX_BATCH_TOKENS = 512
#: Texts tokenised (and length-sorted) together; bounds the memory of one huge call.
TOKENIZE_CHUNK = 4096

_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: onnxruntime fusions the sessions leave out: SkipLayerNormalization's CPU kernel took 22% of the
#: fused MiniLM graph's time where the Add and LayerNormalization it replaces take 4%
#: (onnxruntime 1.32, profiled on the reference texts; see amalfa.models.graph).
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def default_threads() -> int:
    """The cores this process may run on (:func:`amalfa.limits.available_cores`)."""
    return available_cores()


def ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's load errors (they derive from Exception directly, so name them)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidProtobuf", "NoSuchFile", "InvalidArgument", "InvalidGraph",
             "NotImplemented", "RuntimeException")
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


def build_session(onnx_path: Path | bytes, *, threads: int | None = None) -> Any:
    """An onnxruntime CPU session with explicit options over a graph file (or a graph held in
    memory: the builder's parity probe); ModelError when the graph won't load."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only; the cast/fold notices of int8 exports are noise
    source = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
    what = "the built graph" if isinstance(onnx_path, bytes) else onnx_path
    try:
        return ort.InferenceSession(source, sess_options=options,
                                    providers=["CPUExecutionProvider"],
                                    disabled_optimizers=DISABLED_OPTIMIZERS)
    except ort_errors() as exc:
        raise ModelError(f"onnxruntime cannot load {what}: {exc}") from None


def load_tokenizer(*, path: Path | None = None, json_text: str | None = None,
                   max_length: int) -> Any:
    """A tokenizer that truncates at ``max_length`` and pads each batch to its longest text.

    Reads ``json_text`` when given (``path`` then only names its origin in errors), else the file
    ``path``. Whatever padding and truncation the ``tokenizer.json`` carries (the embedded one
    pads to a fixed 128) is replaced.
    """
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_str(json_text) if json_text is not None else \
            Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises bare Exception for bad files
        raise ModelError(f"cannot read tokenizer {path or '(tokenizer.json text)'}: "
                         f"{exc}") from None
    pad_id, pad_token = 0, "[PAD]"
    if tokenizer.padding:
        pad_id, pad_token = tokenizer.padding["pad_id"], tokenizer.padding["pad_token"]
    else:
        for token in ("[PAD]", "<pad>"):
            token_id = tokenizer.token_to_id(token)
            if token_id is not None:
                pad_id, pad_token = token_id, token
                break
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token, length=None)
    return tokenizer


def graph_inputs(session: Any, onnx_path: Path) -> tuple[list[str], np.dtype]:
    """The token inputs the graph declares (a subset of input_ids/attention_mask/token_type_ids)."""
    names = [i.name for i in session.get_inputs()]
    unknown = [n for n in names if n not in _KNOWN_INPUTS]
    if unknown or "input_ids" not in names:
        raise ModelError(f"{onnx_path} takes inputs {names}; expected input_ids and optionally "
                         "attention_mask, token_type_ids")
    dtype = np.int32 if session.get_inputs()[0].type == "tensor(int32)" else np.int64
    return names, np.dtype(dtype)


def encode_arrays(encodings: Sequence[Any], dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """ids, attention mask and type ids of padded encodings as (n, L) arrays."""
    ids = np.array([e.ids for e in encodings], dtype=dtype)
    mask = np.array([e.attention_mask for e in encodings], dtype=dtype)
    types = np.array([e.type_ids for e in encodings], dtype=dtype)
    return ids, mask, types


def length_sorted_batches(lengths: np.ndarray, batch_size: int, *,
                          max_tokens: int | None = None) -> list[np.ndarray]:
    """Row indices in batches of similar token count, so padding per batch stays small.

    A batch holds at most ``batch_size`` rows and, when ``max_tokens`` is given, at most that
    many padded tokens (rows x longest row; a single longer row still gets its own batch).
    """
    order = np.argsort(lengths, kind="stable")
    if max_tokens is None:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        # ascending order: the row just added is the longest of the batch
        full = end - start > batch_size or (end - start) * int(lengths[order[end - 1]]) > max_tokens
        if full and end - 1 > start:
            batches.append(order[start:end - 1])
            start = end - 1
    batches.append(order[start:])
    return batches


def encode_batch(tokenizer: Any, items: list[Any]) -> list[Any]:
    """Encodings of texts or (query, document) pairs, padded to the longest of them."""
    fast = getattr(tokenizer, "encode_batch_fast", None)  # no offsets: we never use them
    return fast(items) if fast is not None else tokenizer.encode_batch(items)

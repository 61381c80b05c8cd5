"""The models behind the embedder and the reranker: which files, how they run, what is built.

- :mod:`amalfa.models.registry`: the models amalfa knows by name (pooling, dimension, maximum
  length) and the two precisions, ``fp32`` and ``int8``;
- :mod:`amalfa.models.files`: where a model's ONNX graph and tokenizer are, and their sha256
  checks;
- :mod:`amalfa.models._runtime` (private): the onnxruntime session, the tokenizer and the
  length-sorted batching that :class:`~amalfa.embedder.Embedder` and
  :class:`~amalfa.reranker.Reranker` share;
- :mod:`amalfa.models.graph`: the graph rewrites (constant folding, attention fusion, int8);
- :mod:`amalfa.models.builder`: the optimised graph built on the user's machine, cached, and
  checked by a parity probe before use;
- :mod:`amalfa.models.quality`: the least cosine and the k-nearest-neighbour overlap between
  two sets of vectors, the measures every precision is judged by.

Nothing here imports onnxruntime, onnx or tokenizers at import time: they load with the first
model.
"""

from __future__ import annotations

from amalfa.models.builder import BuiltGraph, cache_folder, optimized_graph
from amalfa.models.registry import (
    DEFAULT_MODEL,
    DEFAULT_PRECISION,
    PRECISIONS,
    REGISTRY,
    ModelSpec,
    Precision,
)

__all__ = ["DEFAULT_MODEL", "DEFAULT_PRECISION", "PRECISIONS", "REGISTRY", "BuiltGraph",
           "ModelSpec", "Precision", "cache_folder", "optimized_graph"]

"""The models amalfa knows by name: pooling, dimension and maximum length per model.

An ONNX graph does not say how its output is pooled into one vector, nor how long its input may
be; the registry says it for the models amalfa names (``$EMBEDDING_MODEL`` picks one by a loose
name such as ``bgesmallenv15``). :data:`PRECISIONS` are the two ways the embedder runs a model:
``fp32`` (the default: parity with sentence-transformers) and ``int8`` (faster, with a measured
loss; see docs/concepts/embeddings.md).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_MODEL", "DEFAULT_PRECISION", "PRECISIONS", "REGISTRY", "ModelSpec",
           "Pooling", "Precision", "check_precision", "default_spec_from_env", "find_spec",
           "loose_name"]

Pooling = Literal["mean", "cls"]
Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8")
DEFAULT_PRECISION: Precision = "fp32"


def check_precision(precision: object) -> Precision:
    """``precision`` when it is one of :data:`PRECISIONS`; ValueError naming them otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision  # type: ignore[return-value]


@dataclass(frozen=True)
class ModelSpec:
    """What the embedder must know about a model that the ONNX graph does not say."""

    name: str
    pooling: Pooling
    dimensions: int
    max_length: int


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("BAAI/bge-small-en-v1.5", pooling="cls", dimensions=384, max_length=512),
        ModelSpec("sentence-transformers/all-MiniLM-L6-v2", pooling="mean", dimensions=384,
                  max_length=256),
    )
}
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def loose_name(name: str) -> str:
    """Lowercase, alphanumerics only: ``BAAI/bge-small-en-v1.5`` -> ``baaibgesmallenv15``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def find_spec(name: str) -> ModelSpec | None:
    """The registry entry for a hub id or loose name (``bgesmallenv15``, ``allminilml6v2``)."""
    wanted = loose_name(name)
    if not wanted:
        return None
    for spec in REGISTRY.values():
        if wanted in (loose_name(spec.name), loose_name(spec.name.split("/")[-1])):
            return spec
    return None


def default_spec_from_env() -> ModelSpec:
    """The registry model ``$EMBEDDING_MODEL`` names; unknown names warn and keep the default."""
    name = os.environ.get("EMBEDDING_MODEL", "").strip()
    if not name:
        return REGISTRY[DEFAULT_MODEL]
    spec = find_spec(name)
    if spec is None:
        known = ", ".join(sorted(REGISTRY))
        warnings.warn(f"EMBEDDING_MODEL={name!r} is not a known model ({known}); "
                      f"keeping the default {DEFAULT_MODEL}", UserWarning, stacklevel=3)
        return REGISTRY[DEFAULT_MODEL]
    return spec

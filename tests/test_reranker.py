"""The reranker's mechanics on a tiny cross-encoder ONNX graph built here with the onnx helper
API and the real MiniLM tokenizer: pair encoding (token types), padding per batch, sigmoid
scores, sorting, topK and threshold, resolution and clear errors without a model.

The tiny model embeds every token with a fixed random table, sums the query side (token type 0)
and the document side (type 1) over the attention mask, and gives their scaled dot product as
the logit. A numpy reimplementation of the same arithmetic is the reference.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx package builds the test graph (pip install onnx)")
from onnx import TensorProto, helper, numpy_helper

from amalfa.embedder import embedded_model_files, load_tokenizer
from amalfa.errors import ModelError
from amalfa.reranker import Reranker, RerankResult

WIDTH = 8
SCALE = 0.05


def minilm_tokenizer_json() -> str:
    """The real all-MiniLM-L6-v2 tokenizer.json from the embedded model package."""
    return embedded_model_files().tokenizer_text()


def token_table(vocab_size: int) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(vocab_size, WIDTH)).astype(np.float32)


def write_tiny_cross_encoder(folder: Path, *, logits_width: int = 1) -> Path:
    """A folder with ``model.onnx`` (the tiny cross-encoder) and the MiniLM ``tokenizer.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_text = minilm_tokenizer_json()
    (folder / "tokenizer.json").write_text(tokenizer_text, encoding="utf-8")
    vocab_size = len(json.loads(tokenizer_text)["model"]["vocab"])
    table = token_table(vocab_size)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"], axis=0),          # B,L,W
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),  # B,L
        helper.make_node("Cast", ["token_type_ids"], ["doc"], to=TensorProto.FLOAT),   # B,L
        helper.make_node("Sub", ["one", "doc"], ["query"]),
        helper.make_node("Mul", ["mask", "query"], ["qw"]),
        helper.make_node("Mul", ["mask", "doc"], ["dw"]),
        helper.make_node("Unsqueeze", ["qw", "axis1"], ["qw3"]),                       # B,1,L
        helper.make_node("Unsqueeze", ["dw", "axis1"], ["dw3"]),
        helper.make_node("MatMul", ["qw3", "emb"], ["qsum"]),                           # B,1,W
        helper.make_node("MatMul", ["dw3", "emb"], ["dsum"]),
        helper.make_node("Mul", ["qsum", "dsum"], ["prod"]),
        helper.make_node("ReduceSum", ["prod", "axis2"], ["dot"], keepdims=0),          # B,1
        helper.make_node("Mul", ["dot", "scale"], ["scaled"]),
    ]
    if logits_width == 1:
        nodes.append(helper.make_node("Identity", ["scaled"], ["logits"]))
    else:  # a two-class head: the shape a reranker must refuse
        nodes.append(helper.make_node("Concat", ["scaled", "scaled"], ["logits"], axis=1))
    initializers = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(SCALE, np.float32), "scale"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
    ]
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
              for name in ("input_ids", "attention_mask", "token_type_ids")]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", logits_width])
    graph = helper.make_graph(nodes, "tiny_cross_encoder", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    return folder


def reference_scores(query: str, documents: list[str], max_length: int = 512) -> np.ndarray:
    """The tiny model's arithmetic in numpy, one unpadded pair at a time."""
    tokenizer = load_tokenizer(json_text=minilm_tokenizer_json(), max_length=max_length)
    table = token_table(tokenizer.get_vocab_size())
    scores = []
    for doc in documents:
        encoding = tokenizer.encode(query, doc)
        emb = table[np.array(encoding.ids)].astype(np.float64)
        types = np.array(encoding.type_ids)
        logit = SCALE * float(emb[types == 0].sum(0) @ emb[types == 1].sum(0))
        scores.append(1.0 / (1.0 + np.exp(-logit)))
    return np.array(scores)


@pytest.fixture(autouse=True)
def no_reranker_from_the_machine(monkeypatch, tmp_path_factory) -> None:
    for var in ("AMALFA_RERANKER_PATH", "RERANKER_MODEL", "HF_HOME", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub-cache")))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return write_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-reranker"))


@pytest.fixture(scope="module")
def reranker(tiny_folder: Path) -> Reranker:
    return Reranker(tiny_folder)


QUERY = "how does the vector daemon stay warm"
DOCUMENTS = [
    "The daemon keeps the embedding model loaded between requests.",
    "Bananas are yellow.",
    "",
    ("A vector daemon answers on the loopback interface and stays warm by holding the ONNX "
     "session in memory across many, many requests from short-lived command line processes."),
    "warm vector",
    "SQLite in WAL mode lets readers run while one writer commits.",
]


# --- scores -------------------------------------------------------------------------------------


def test_scores_are_sigmoids_of_the_pair_logits(reranker: Reranker) -> None:
    scores = reranker.score(QUERY, DOCUMENTS, batch_size=2)  # several padded batches
    assert scores.shape == (len(DOCUMENTS),) and scores.dtype == np.float32
    assert ((scores > 0) & (scores < 1)).all()
    np.testing.assert_allclose(scores, reference_scores(QUERY, DOCUMENTS), rtol=1e-4, atol=1e-6)


def test_scores_do_not_depend_on_batching(reranker: Reranker) -> None:
    one_by_one = np.array([reranker.score(QUERY, [d])[0] for d in DOCUMENTS])
    for batch_size in (1, 3, 64):
        np.testing.assert_allclose(reranker.score(QUERY, DOCUMENTS, batch_size=batch_size),
                                   one_by_one, rtol=1e-5, atol=1e-7)


def test_pairs_are_truncated_at_max_length(tiny_folder: Path) -> None:
    short = Reranker(tiny_folder, max_length=32)
    long_doc = "memory " * 500
    np.testing.assert_allclose(short.score(QUERY, [long_doc, "warm"]),
                               reference_scores(QUERY, [long_doc, "warm"], max_length=32),
                               rtol=1e-4)


# --- ranking ------------------------------------------------------------------------------------


def test_rerank_sorts_best_first_with_original_indices(reranker: Reranker) -> None:
    results = reranker.rerank(QUERY, DOCUMENTS)
    expected = reference_scores(QUERY, DOCUMENTS)
    assert [r.original_index for r in results] == list(np.argsort(-expected, kind="stable"))
    assert all(isinstance(r, RerankResult) for r in results)
    assert [r.text for r in results] == [DOCUMENTS[r.original_index] for r in results]
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_top_k_and_threshold(reranker: Reranker) -> None:
    everything = reranker.rerank(QUERY, DOCUMENTS)
    assert reranker.rerank(QUERY, DOCUMENTS, top_k=2) == everything[:2]
    assert reranker.rerank(QUERY, DOCUMENTS, top_k=0) == []
    cut = everything[2].score
    kept = reranker.rerank(QUERY, DOCUMENTS, threshold=cut)
    assert kept == [r for r in everything if r.score >= cut] and len(kept) >= 3
    assert reranker.rerank(QUERY, DOCUMENTS, threshold=cut, top_k=1) == everything[:1]
    assert reranker.rerank(QUERY, DOCUMENTS, threshold=1.0) == \
        [r for r in everything if r.score >= 1.0]


def test_no_documents_and_bad_arguments(reranker: Reranker) -> None:
    assert reranker.rerank(QUERY, []) == []
    assert reranker.score(QUERY, []).shape == (0,)
    with pytest.raises(TypeError, match="query"):
        reranker.score(None, ["x"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"documents\[1\]"):
        reranker.score(QUERY, ["x", 2])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="top_k"):
        reranker.rerank(QUERY, ["x"], top_k=-1)
    with pytest.raises(ValueError, match="threshold"):
        reranker.rerank(QUERY, ["x"], threshold=1.5)


# --- finding the model --------------------------------------------------------------------------


def test_no_model_is_a_clear_error_never_invented_scores() -> None:
    assert Reranker.available() is False
    with pytest.raises(ModelError, match="no reranker model: BAAI/bge-reranker-base is not in "
                                         "the Hugging Face cache; set AMALFA_RERANKER_PATH"):
        Reranker()


def test_reranker_path_variable(monkeypatch, tiny_folder: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("AMALFA_RERANKER_PATH", str(tiny_folder))
    assert Reranker.available() is True
    assert Reranker().model_name == str(tiny_folder.resolve())
    monkeypatch.setenv("AMALFA_RERANKER_PATH", str(tmp_path))  # a folder without the files
    assert Reranker.available() is False
    with pytest.raises(ModelError, match="AMALFA_RERANKER_PATH .* holds no model.onnx"):
        Reranker()


def test_reranker_from_the_hub_cache(monkeypatch, tmp_path: Path, tiny_folder: Path) -> None:
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-reranker"
    commit = "c" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name in ("model.onnx", "tokenizer.json"):
        data = (tiny_folder / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("..", "..", "blobs", blob.name))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("RERANKER_MODEL", "acme/tiny-reranker")
    assert Reranker.available()
    hub = Reranker()
    assert hub.model_name == "acme/tiny-reranker"
    np.testing.assert_allclose(hub.score(QUERY, DOCUMENTS[:2]),
                               reference_scores(QUERY, DOCUMENTS[:2]), rtol=1e-4)


def test_a_model_with_two_logits_is_refused(tmp_path: Path) -> None:
    folder = write_tiny_cross_encoder(tmp_path / "two-logits", logits_width=2)
    with pytest.raises(ModelError, match=r"one logit per pair"):
        Reranker(folder).score(QUERY, ["x"])


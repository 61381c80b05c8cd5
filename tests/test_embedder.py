"""The embedder: parity with sentence-transformers, the registry, model resolution, bad model
folders, edge-case texts, batching, and the remote-first daemon client with its local fallback.

Everything runs the real ONNX model (the embedded all-MiniLM-L6-v2 int8 from PyPI) on real files
in tmp_path; hub tests build a real Hugging Face cache layout (refs/, blobs/, snapshots/ with
symlinks) and point HF_HUB_CACHE at it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
import threading
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from amalfa.embedder import (
    DEFAULT_MODEL,
    EMBEDDED_ONNX_SHA256,
    EMBEDDED_TOKENIZER_SHA256,
    REGISTRY,
    Embedder,
    bundled_tokenizer_path,
    embedded_model_files,
    embedded_package_paths,
    find_spec,
    load_tokenizer,
    loose_name,
    resolve_model,
)
from amalfa.errors import ModelError

REFERENCE = Path(__file__).resolve().parent / "data" / "minilm"
DIMENSIONS = 384


# --- fixtures -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
                      ) -> None:
    """No model variables from the machine, an empty hub cache, and a port nobody listens on."""
    for var in ("AMALFA_MODEL_PATH", "EMBEDDING_MODEL", "HF_HUB_OFFLINE", "HF_HOME",
                "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub-cache")))
    monkeypatch.setenv("VECTOR_PORT", str(_free_port()))
    Embedder.clear_instance()


@pytest.fixture(scope="module")
def embedded_paths(minilm_model_zip: Path) -> tuple[Path, Path]:
    onnx_path = embedded_package_paths()[0]
    assert onnx_path is not None, "pip install 'amalfa[model]'"
    return onnx_path, minilm_model_zip


@pytest.fixture(scope="module")
def tokenizer_bytes(embedded_paths: tuple[Path, Path]) -> bytes:
    with zipfile.ZipFile(embedded_paths[1]) as archive:
        return archive.read("tokenizer.json")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory, embedded_paths: tuple[Path, Path],
                 tokenizer_bytes: bytes) -> Path:
    """A plain model folder holding copies of the embedded files (no configs)."""
    folder = tmp_path_factory.mktemp("model-folder")
    shutil.copyfile(embedded_paths[0], folder / "model.onnx")
    (folder / "tokenizer.json").write_bytes(tokenizer_bytes)
    return folder


@pytest.fixture(scope="module")
def local() -> Embedder:
    """The embedded default, local only (module-wide: loading takes a moment)."""
    return Embedder(use_daemon=False)


@pytest.fixture(scope="module")
def reference() -> tuple[list[str], np.ndarray]:
    texts = json.loads((REFERENCE / "texts.json").read_text(encoding="utf-8"))
    vectors = np.load(REFERENCE / "vectors_fp32.npy")
    return texts, vectors


def make_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Lay ``files`` out as huggingface_hub caches them; returns the snapshot folder.

    Large files are LFS blobs named by their sha256, small ones git blobs named by their git
    sha1, as on the hub.
    """
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        if len(data) > 1_000_000:
            blob_name = hashlib.sha256(data).hexdigest()
        else:
            blob_name = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        blob = repo / "blobs" / blob_name
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(Path(name).parts) + 1), "blobs", blob_name))
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def _model_bytes(embedded_paths: tuple[Path, Path], tokenizer_bytes: bytes) -> dict[str, bytes]:
    return {"onnx/model.onnx": embedded_paths[0].read_bytes(), "tokenizer.json": tokenizer_bytes}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)


# --- parity -------------------------------------------------------------------------------------


def test_embedded_default_matches_sentence_transformers(local: Embedder, reference) -> None:
    texts, expected = reference
    vectors = local.embed_batch(texts)
    assert local.source == "embedded"
    assert local.model_name == DEFAULT_MODEL
    assert vectors.shape == (len(texts), DIMENSIONS) and vectors.dtype == np.float32
    assert vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = np.sum(vectors * expected, axis=1)
    worst = int(np.argmin(similarity))
    assert similarity.min() >= 0.998, f"text {worst}: cosine {similarity[worst]:.5f}"


def _fp32_onnx_folder(folder: Path, zip_path: Path) -> Path:
    """An fp32 ONNX of all-MiniLM-L6-v2: from the model package when it holds one, else exported
    with torch from the package's fp32 safetensors weights (read from the zip in memory)."""
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        for member in ("tokenizer.json", "sentence_bert_config.json", "1_Pooling/config.json"):
            (folder / member).parent.mkdir(parents=True, exist_ok=True)
            (folder / member).write_bytes(archive.read(member))
        shipped = next((n for n in ("onnx/model.onnx", "model.onnx") if n in names), None)
        if shipped is not None:
            (folder / "model.onnx").write_bytes(archive.read(shipped))
            return folder
        torch = pytest.importorskip("torch", reason="the model package ships no fp32 ONNX and "
                                    "torch is not installed to export one from its weights")
        transformers = pytest.importorskip("transformers")
        safetensors_torch = pytest.importorskip("safetensors.torch")
        config = transformers.BertConfig.from_dict(json.loads(archive.read("config.json")))
        weights = safetensors_torch.load(archive.read("model.safetensors"))
    config._attn_implementation = "eager"  # a plain graph; SDPA does not trace to ONNX cleanly
    model = transformers.BertModel(config).eval()
    missing, _unexpected = model.load_state_dict(weights, strict=False)
    assert not missing, missing

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones((2, 8), dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHiddenState(), (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                          str(folder / "model.onnx"), input_names=names,
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "sequence"}
                                        for n in [*names, "last_hidden_state"]})
    return folder


@pytest.mark.slow
def test_fp32_onnx_export_matches_sentence_transformers(tmp_path: Path, embedded_paths, reference
                                                        ) -> None:
    texts, expected = reference
    folder = _fp32_onnx_folder(tmp_path, embedded_paths[1])
    fp32 = Embedder(folder, use_daemon=False)
    assert (fp32.pooling, fp32.max_length) == ("mean", 256)  # read from the folder's configs
    similarity = np.sum(fp32.embed_batch(texts) * expected, axis=1)
    assert similarity.min() >= 0.9999, f"worst cosine {similarity.min():.6f}"


# --- texts: empty, long, batches ----------------------------------------------------------------


def test_empty_string_is_embedded_like_the_model_does(local: Embedder) -> None:
    empty = local.embed("")
    assert empty.shape == (DIMENSIONS,) and np.isfinite(empty).all()
    assert np.linalg.norm(empty) == pytest.approx(1.0, abs=1e-5)  # [CLS] [SEP], not a zero vector
    assert cosines(empty, local.embed("a sentence about databases")) < 0.9
    np.testing.assert_allclose(local.embed_batch(["", "x", ""])[[0, 2]], [empty, empty], atol=1e-5)


def test_empty_batch_has_shape_zero_by_d(local: Embedder) -> None:
    for empty in ([], (), iter(())):
        vectors = local.embed_batch(empty)
        assert vectors.shape == (0, DIMENSIONS) and vectors.dtype == np.float32


def test_long_texts_are_truncated_at_the_model_maximum(local: Embedder) -> None:
    words = [f"word{i}" for i in range(2000)]  # several tokens each: far beyond 256 tokens
    tokenizer = load_tokenizer(json_text=local.files.tokenizer_text(), max_length=100_000)

    def words_for(tokens: int) -> int:
        """How many leading words hold about ``tokens`` tokens."""
        return next(n for n in range(1, 2000)
                    if len(tokenizer.encode(" ".join(words[:n])).ids) - 2 >= tokens)

    def tail_changed_after(n_words: int) -> str:
        return " ".join(words[:n_words] + ["zebra"] * (2000 - n_words))

    original = local.embed(" ".join(words))
    assert np.isfinite(original).all()
    beyond = local.embed(tail_changed_after(words_for(260)))
    within = local.embed(tail_changed_after(words_for(180)))  # between 128 and 256 tokens
    np.testing.assert_allclose(beyond, original, atol=1e-6)  # nothing after 256 tokens counts
    assert cosines(within, original) < 0.9999  # tokens between 128 and 256 do count


def test_tokenizer_pads_per_batch_and_truncates_at_the_model_length(tokenizer_bytes) -> None:
    # the packaged tokenizer.json pads everything to 128 and truncates at 128
    packaged = json.loads(tokenizer_bytes)
    assert packaged["padding"]["strategy"] == {"Fixed": 128}
    tokenizer = load_tokenizer(json_text=tokenizer_bytes.decode(), max_length=256)
    assert len(tokenizer.encode("hello").ids) == 3  # [CLS] hello [SEP]
    short, longer = tokenizer.encode_batch(["hello", "hello there my friend"])
    assert len(short.ids) == len(longer.ids) == 6 and short.attention_mask == [1, 1, 1, 0, 0, 0]
    assert len(tokenizer.encode("word " * 1000).ids) == 256


def test_batches_match_single_texts_in_input_order(local: Embedder, reference) -> None:
    texts = reference[0][:24] + ["", "short", "x " * 300]
    singles = np.stack([local.embed(t) for t in texts])
    for batch_size in (1, 5, 32):
        batch = local.embed_batch(texts, batch_size=batch_size)
        assert cosines(batch, singles).min() > 0.99999, batch_size
    reversed_batch = local.embed_batch(texts[::-1])
    assert cosines(reversed_batch[::-1], singles).min() > 0.99999


def test_bad_arguments_raise_clear_errors(local: Embedder) -> None:
    with pytest.raises(TypeError, match="str"):
        local.embed(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sequence of texts"):
        local.embed_batch("one text")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        local.embed_batch(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size"):
        local.embed_batch(["ok"], batch_size=0)
    with pytest.raises(ValueError, match="threads"):
        Embedder(threads=0)


# --- the registry and the environment -----------------------------------------------------------


def test_registry_entries() -> None:
    bge, minilm = REGISTRY["BAAI/bge-small-en-v1.5"], REGISTRY[DEFAULT_MODEL]
    assert (bge.pooling, bge.dimensions, bge.max_length) == ("cls", 384, 512)
    assert (minilm.pooling, minilm.dimensions, minilm.max_length) == ("mean", 384, 256)


@pytest.mark.parametrize(("name", "expected"), [
    ("bgesmallenv15", "BAAI/bge-small-en-v1.5"),
    ("BAAI/bge-small-en-v1.5", "BAAI/bge-small-en-v1.5"),
    ("bge-small-en-v1.5", "BAAI/bge-small-en-v1.5"),
    ("allminilml6v2", DEFAULT_MODEL),
    ("All-MiniLM-L6-v2", DEFAULT_MODEL),
    ("sentence-transformers/all-MiniLM-L6-v2", DEFAULT_MODEL),
    ("minilm", None),
    ("", None),
])
def test_loose_names_find_registry_models(name: str, expected: str | None) -> None:
    spec = find_spec(name)
    assert (spec.name if spec else None) == expected
    assert loose_name("BAAI/bge-small-en-v1.5") == "baaibgesmallenv15"


def test_unknown_embedding_model_warns_and_keeps_the_default(monkeypatch) -> None:
    monkeypatch.setenv("EMBEDDING_MODEL", "no-such-model-v9")
    with pytest.warns(UserWarning, match="no-such-model-v9"):
        chosen = Embedder(use_daemon=False)
    assert chosen.model_name == DEFAULT_MODEL and chosen.source == "embedded"


def test_known_model_missing_from_the_cache_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("EMBEDDING_MODEL", "bgesmallenv15")
    with pytest.raises(ModelError, match=r"BAAI/bge-small-en-v1\.5 is not in the Hugging Face "
                                         r"cache.*download=True.*AMALFA_MODEL_PATH"):
        Embedder(use_daemon=False)


def test_embedding_model_picks_a_cached_hub_model_and_its_pooling(
        monkeypatch, hub_cache: Path, embedded_paths, tokenizer_bytes) -> None:
    # the bge repository here holds the MiniLM files: only the registry entry differs (CLS, 512)
    make_hub_cache(hub_cache, "BAAI/bge-small-en-v1.5",
                   _model_bytes(embedded_paths, tokenizer_bytes))
    monkeypatch.setenv("EMBEDDING_MODEL", "bgesmallenv15")
    bge = Embedder(use_daemon=False)
    assert (bge.model_name, bge.source, bge.pooling, bge.max_length) == (
        "BAAI/bge-small-en-v1.5", "hub", "cls", 512)
    assert hub_cache in bge.files.onnx_path.parents

    import onnxruntime as ort

    text = "CLS pooling takes the first token's hidden state"
    tokenizer = load_tokenizer(json_text=tokenizer_bytes.decode(), max_length=512)
    ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
    hidden = ort.InferenceSession(str(embedded_paths[0])).run(
        None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
               "token_type_ids": np.zeros_like(ids)})[0]
    assert cosines(bge.embed(text), hidden[0, 0]) > 0.99999
    assert cosines(bge.embed(text), hidden[0].mean(axis=0)) < 0.999  # not mean pooling


# --- resolution order ---------------------------------------------------------------------------


def test_explicit_path_beats_environment_and_hub(monkeypatch, hub_cache, model_folder,
                                                 embedded_paths, tokenizer_bytes,
                                                 tmp_path) -> None:
    make_hub_cache(hub_cache, DEFAULT_MODEL, _model_bytes(embedded_paths, tokenizer_bytes))
    other = tmp_path / "other"
    shutil.copytree(model_folder, other)
    monkeypatch.setenv("AMALFA_MODEL_PATH", str(other))
    for given in (model_folder, str(model_folder)):
        chosen = Embedder(given, use_daemon=False)
        assert (chosen.source, chosen.files.onnx_path) == ("path", model_folder / "model.onnx")
        assert chosen.model_name == str(model_folder.resolve())


def test_model_path_variable_beats_hub(monkeypatch, hub_cache, model_folder, embedded_paths,
                                       tokenizer_bytes) -> None:
    make_hub_cache(hub_cache, DEFAULT_MODEL, _model_bytes(embedded_paths, tokenizer_bytes))
    monkeypatch.setenv("AMALFA_MODEL_PATH", str(model_folder))
    chosen = Embedder(use_daemon=False)
    assert (chosen.source, chosen.files.onnx_path) == ("env", model_folder / "model.onnx")
    assert chosen.pooling == "mean" and chosen.max_length == 256  # default spec: no configs


def test_hub_cache_beats_embedded(hub_cache, embedded_paths, tokenizer_bytes, local,
                                  reference) -> None:
    snapshot = make_hub_cache(hub_cache, DEFAULT_MODEL,
                              _model_bytes(embedded_paths, tokenizer_bytes))
    chosen = Embedder(use_daemon=False)
    assert chosen.source == "hub"
    assert chosen.files.onnx_path == snapshot / "onnx" / "model.onnx"
    text = reference[0][0]
    assert cosines(chosen.embed(text), local.embed(text)) > 0.99999


def test_embedded_default_when_nothing_else_applies() -> None:
    files = resolve_model()
    assert files.source == "embedded" and files.spec.name == DEFAULT_MODEL
    # the tokenizer ships inside amalfa's wheel and is hash-checked like the weights
    assert files.tokenizer_path == bundled_tokenizer_path() is not None
    assert files.checks == ((files.onnx_path, EMBEDDED_ONNX_SHA256),
                            (files.tokenizer_path, EMBEDDED_TOKENIZER_SHA256))


def test_explicit_name_skips_the_model_path_variable(monkeypatch, model_folder) -> None:
    monkeypatch.setenv("AMALFA_MODEL_PATH", str(model_folder))
    assert Embedder("allminilml6v2", use_daemon=False).source == "embedded"
    with pytest.raises(ModelError, match="unknown model 'nonsense'"):
        Embedder("nonsense")


def test_download_refuses_when_hub_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        Embedder("BAAI/bge-small-en-v1.5", download=True)


# --- bad model folders and hash checks ----------------------------------------------------------


def test_missing_folder_and_files_name_what_is_missing(tmp_path, monkeypatch, model_folder
                                                       ) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        Embedder(tmp_path / "absent")
    monkeypatch.setenv("AMALFA_MODEL_PATH", str(tmp_path / "absent"))
    with pytest.raises(ModelError, match="AMALFA_MODEL_PATH .*absent does not exist"):
        Embedder()
    monkeypatch.delenv("AMALFA_MODEL_PATH")
    no_onnx = tmp_path / "no-onnx"
    no_onnx.mkdir()
    shutil.copyfile(model_folder / "tokenizer.json", no_onnx / "tokenizer.json")
    with pytest.raises(ModelError, match="holds no model.onnx"):
        Embedder(no_onnx)
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    shutil.copyfile(model_folder / "model.onnx", no_tokenizer / "model.onnx")
    with pytest.raises(ModelError, match="holds no tokenizer.json"):
        Embedder(no_tokenizer)


def test_corrupt_model_files_raise_model_error_on_load(tmp_path, model_folder) -> None:
    bad_graph = tmp_path / "bad-graph"
    shutil.copytree(model_folder, bad_graph)
    (bad_graph / "model.onnx").write_bytes(b"this is not a protobuf" * 100)
    with pytest.raises(ModelError, match=r"cannot read .*bad-graph.*as an ONNX graph"):
        Embedder(bad_graph, use_daemon=False).embed("x")
    bad_tokenizer = tmp_path / "bad-tokenizer"
    shutil.copytree(model_folder, bad_tokenizer)
    (bad_tokenizer / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read tokenizer .*bad-tokenizer"):
        Embedder(bad_tokenizer, use_daemon=False).embed("x")
    bad_config = tmp_path / "bad-config"
    shutil.copytree(model_folder, bad_config)
    (bad_config / "1_Pooling").mkdir()
    (bad_config / "1_Pooling" / "config.json").write_text('{"pooling_mode_max_tokens": true}')
    with pytest.raises(ModelError, match="pooling_mode_max_tokens.*not supported"):
        Embedder(bad_config)


def test_installed_embedded_files_have_the_pinned_hashes(embedded_paths) -> None:
    onnx_path, zip_path = embedded_paths
    assert hashlib.sha256(onnx_path.read_bytes()).hexdigest() == EMBEDDED_ONNX_SHA256
    with zipfile.ZipFile(zip_path) as archive:
        data = archive.read("tokenizer.json")
    assert hashlib.sha256(data).hexdigest() == EMBEDDED_TOKENIZER_SHA256


def test_embedded_hash_mismatch_is_a_clear_error(tmp_path, embedded_paths, tokenizer_bytes
                                                 ) -> None:
    onnx_path, zip_path = embedded_paths
    tampered = tmp_path / "model.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"failed its sha256 check: expected "
                                         f"{EMBEDDED_ONNX_SHA256}, got [0-9a-f]{{64}}"):
        embedded_model_files(onnx_path=tampered, zip_path=zip_path)

    other_tokenizer = tmp_path / "model.zip"
    with zipfile.ZipFile(other_tokenizer, "w") as archive:
        archive.writestr("tokenizer.json", tokenizer_bytes.replace(b"[UNK]", b"[UNKNOWN]"))
    with pytest.raises(ModelError, match="tokenizer.json in .*model.zip failed its sha256"):
        embedded_model_files(onnx_path=onnx_path, zip_path=other_tokenizer)

    empty_zip = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty_zip, "w"):
        pass
    with pytest.raises(ModelError, match="holds no tokenizer.json"):
        embedded_model_files(onnx_path=onnx_path, zip_path=empty_zip)
    with pytest.raises(ModelError, match="amalfa\\[model\\]"):
        embedded_model_files(onnx_path=tmp_path / "absent.onnx", zip_path=zip_path)


def test_corrupt_hub_blob_is_a_clear_error(hub_cache, embedded_paths, tokenizer_bytes) -> None:
    snapshot = make_hub_cache(hub_cache, DEFAULT_MODEL,
                              _model_bytes(embedded_paths, tokenizer_bytes))
    blob = (snapshot / "onnx" / "model.onnx").resolve()
    with blob.open("r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 16)
    chosen = Embedder(use_daemon=False)  # finding the files hashes nothing...
    with pytest.raises(ModelError, match="hub file .*failed its sha256 check"):
        chosen.embed("x")  # ...loading them does


# --- threads and the shared instance ------------------------------------------------------------


def test_thread_count_reaches_the_session() -> None:
    one = Embedder(threads=1, use_daemon=False)
    one.embed("load the session")
    assert one._session.get_session_options().intra_op_num_threads == 1
    assert one._session.get_session_options().inter_op_num_threads == 1


def test_get_instance_is_a_lazy_singleton() -> None:
    first = Embedder.get_instance()
    assert Embedder.get_instance() is first
    assert not first.is_loaded  # built, but the model loads on first use
    Embedder.clear_instance()
    assert Embedder.get_instance() is not first


# --- remote first, local fallback ---------------------------------------------------------------


@pytest.fixture
def silent_server(monkeypatch) -> Iterator[int]:
    """A real server that accepts connections and reads requests but never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    monkeypatch.setenv("VECTOR_PORT", str(port))
    yield port
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_daemon_down_falls_back_silently(local: Embedder, caplog) -> None:
    client = Embedder()  # VECTOR_PORT points at a closed port (autouse fixture)
    with caplog.at_level(logging.DEBUG, logger="amalfa.embedder"):
        vector = client.embed("fallback when nobody listens")
    assert client.is_loaded
    assert cosines(vector, local.embed("fallback when nobody listens")) > 0.99999
    assert any("unavailable" in r.message and r.levelno == logging.DEBUG for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_slow_daemon_times_out_and_falls_back(silent_server: int, local: Embedder,
                                              caplog) -> None:
    client = Embedder()
    with caplog.at_level(logging.DEBUG, logger="amalfa.embedder"):
        vectors = client.embed_batch(["a daemon that never answers", "second"])
    assert client.is_loaded
    assert cosines(vectors, local.embed_batch(["a daemon that never answers", "second"])
                   ).min() > 0.99999
    assert any("timed out" in r.message for r in caplog.records)


def test_invalid_vector_port_means_local(monkeypatch, local: Embedder) -> None:
    monkeypatch.setenv("VECTOR_PORT", "not-a-port")
    client = Embedder()
    assert cosines(client.embed("x"), local.embed("x")) > 0.99999 and client.is_loaded


def test_reachable_daemon_serves_the_embedder(monkeypatch, local: Embedder, model_folder
                                              ) -> None:
    from amalfa.daemon import make_server

    with make_server(port=0, embedder=local) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            monkeypatch.setenv("VECTOR_PORT", str(server.port))
            client = Embedder()
            texts = ["served by the daemon", ""]
            vectors = client.embed_batch(texts)
            assert not client.is_loaded  # answered remotely: no local session was built
            assert vectors.dtype == np.float32 and vectors.shape == (2, DIMENSIONS)
            assert cosines(vectors, local.embed_batch(texts)).min() > 0.99999
            assert client.embed("one").shape == (DIMENSIONS,) and not client.is_loaded

            # a daemon that serves another model is not used
            other = Embedder(model_folder)
            assert cosines(other.embed("x"), local.embed("x")) > 0.99999
            assert other.is_loaded
        finally:
            server.shutdown()
            thread.join()


def test_daemon_serves_a_folder_model_to_clients_of_that_folder(monkeypatch, model_folder,
                                                                local: Embedder) -> None:
    from amalfa.daemon import make_server

    with make_server(port=0, embedder=Embedder(model_folder, use_daemon=False)) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            monkeypatch.setenv("VECTOR_PORT", str(server.port))
            client = Embedder(model_folder)  # same folder: same model name, dimension not yet known
            vector = client.embed("served from a folder model")
            assert not client.is_loaded and vector.shape == (DIMENSIONS,)
            assert cosines(vector, local.embed("served from a folder model")) > 0.99999
        finally:
            server.shutdown()
            thread.join()

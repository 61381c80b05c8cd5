"""The optimised graph built on this machine: what it fuses, its parity, its cache (key,
invalidation, corruption), the parity probe's fallback, offline and deterministic builds, and the
two precisions with the database that records them.

Everything runs the real embedded model (all-MiniLM-L6-v2 from the ``model`` extra) through the
real builder into a cache folder under tmp_path (``XDG_CACHE_HOME``); nothing is mocked but
onnxruntime's version string, to stand for an upgrade.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from amalfa.db import ResonanceDB
from amalfa.embedder import DEFAULT_MODEL, Embedder, bundled_tokenizer_path
from amalfa.errors import ModelMismatchError
from amalfa.models import builder
from amalfa.models.quality import knn_overlap
from amalfa.settings import Settings

REFERENCE = Path(__file__).resolve().parent / "data" / "minilm"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh model cache per test, no model variables, and no daemon."""
    for var in ("AMALFA_MODEL_PATH", "EMBEDDING_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("VECTOR_PORT", str(_free_port()))
    return tmp_path / "xdg" / "amalfa" / "models"


@pytest.fixture(scope="module")
def reference() -> tuple[list[str], np.ndarray]:
    texts = json.loads((REFERENCE / "texts.json").read_text(encoding="utf-8"))
    return texts, np.load(REFERENCE / "vectors_fp32.npy")


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A model folder holding a copy of the embedded graph (so tests may change it)."""
    source = Embedder(use_daemon=False).files.onnx_path
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copyfile(source, folder / "model.onnx")
    tokenizer = bundled_tokenizer_path()
    assert tokenizer is not None
    shutil.copyfile(tokenizer, folder / "tokenizer.json")
    return folder


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


# --- what is built, and its quality ---------------------------------------------------------


def test_default_precision_fuses_attention_and_keeps_parity(own_cache: Path, reference) -> None:
    texts, expected = reference
    embedder = Embedder(use_daemon=False)
    vectors = embedder.embed_batch(texts)
    graph = embedder.graph
    assert graph is not None and graph.optimized and not graph.from_cache
    assert graph.path.parent == own_cache and graph.path.suffix == ".onnx"
    # the 6 attention blocks became Attention operators; GELUs fused with their bias; the 13
    # layer norms stay LayerNormalization (SkipLayerNormalization measured slower)
    assert graph.fused["attention"] == 6 and graph.fused["bias_gelu"] == 6
    assert graph.fused["layer_norm"] == 13
    assert graph.probe_min_cosine >= builder.PROBE_MIN_COSINE["fp32"]
    similarity = np.sum(vectors * expected, axis=1)
    assert similarity.min() >= 0.998, f"worst cosine {similarity.min():.5f}"
    # the same vectors as the source graph run as it is
    plain = Embedder(use_daemon=False, optimize=False).embed_batch(texts)
    assert np.sum(vectors * plain, axis=1).min() > 0.9999


def test_int8_keeps_the_neighbours(reference) -> None:
    texts, expected = reference
    int8 = Embedder(use_daemon=False, precision="int8")
    vectors = int8.embed_batch(texts)
    assert int8.precision == "int8" and int8.graph is not None and int8.graph.optimized
    # every projection is int8: Q, K, V (split out of Attention), output, FFN up and down
    assert int8.graph.fused["int8_matmuls"] == 36 and int8.graph.fused["qkv_split"] == 6
    # the 12 layer-norm outputs read by MatMuls were smoothed with the calibration run
    assert int8.graph.fused["smoothed"] == 12
    similarity = np.sum(vectors * expected, axis=1)
    assert similarity.min() >= 0.995, f"worst cosine {similarity.min():.5f}"
    assert knn_overlap(vectors, expected) >= 0.95
    fp32 = Embedder(use_daemon=False).embed_batch(texts)
    assert np.sum(vectors * fp32, axis=1).min() < 0.9999  # it is another graph, not the fp32 one


def test_bad_precision_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="precision must be one of fp32, int8; got 'fp16'"):
        Embedder(precision="fp16")
    with pytest.raises(ValueError, match="optimize=False"):
        Embedder(precision="int8", optimize=False)


# --- the cache --------------------------------------------------------------------------------


def test_second_load_uses_the_cache(own_cache: Path) -> None:
    first = Embedder(use_daemon=False)
    vector = first.embed("cached graphs")
    assert first.graph is not None and not first.graph.from_cache
    files = cache_files(own_cache)
    assert files == [f"{first.graph.key}.json", f"{first.graph.key}.onnx"]
    mtime = first.graph.path.stat().st_mtime_ns
    second = Embedder(use_daemon=False)
    assert float(second.embed("cached graphs") @ vector) > 0.99999
    assert second.graph is not None and second.graph.from_cache
    assert second.graph.path.stat().st_mtime_ns == mtime  # not written again
    record = json.loads((own_cache / f"{first.graph.key}.json").read_text())
    assert record["probe_passed"] and record["precision"] == "fp32"


def test_precisions_have_their_own_entries(own_cache: Path) -> None:
    fp32, int8 = Embedder(use_daemon=False), Embedder(use_daemon=False, precision="int8")
    fp32.embed("x")
    int8.embed("x")
    assert fp32.graph is not None and int8.graph is not None
    assert fp32.graph.key != int8.graph.key
    assert len(cache_files(own_cache)) == 4


def test_new_onnxruntime_version_builds_again(own_cache: Path, monkeypatch) -> None:
    import onnxruntime

    before = Embedder(use_daemon=False)
    before.embed("x")
    monkeypatch.setattr(onnxruntime, "__version__", onnxruntime.__version__ + ".post1")
    after = Embedder(use_daemon=False)
    after.embed("x")
    assert before.graph is not None and after.graph is not None
    assert after.graph.key != before.graph.key and not after.graph.from_cache
    assert len(cache_files(own_cache)) == 4


def test_changed_source_file_builds_again(model_folder: Path) -> None:
    import onnx

    first = Embedder(model_folder, use_daemon=False)
    vector = first.embed("a changed source")
    model = onnx.load(str(model_folder / "model.onnx"))
    model.doc_string = "the same weights, other bytes"
    onnx.save(model, str(model_folder / "model.onnx"))
    second = Embedder(model_folder, use_daemon=False)
    assert float(second.embed("a changed source") @ vector) > 0.99999
    assert first.graph is not None and second.graph is not None
    assert second.graph.key != first.graph.key and not second.graph.from_cache


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "record"])
def test_corrupted_cache_is_built_again(own_cache: Path, damage: str, caplog) -> None:
    first = Embedder(use_daemon=False)
    vector = first.embed("corruption")
    # damage only a graph in the test's own cache: never the installed source model (a build
    # that fell back runs the source file itself)
    assert first.graph is not None and first.graph.optimized, first.graph
    assert first.graph.path.is_relative_to(own_cache), first.graph.path
    graph_path, record_path = first.graph.path, own_cache / f"{first.graph.key}.json"
    if damage == "flip":
        data = bytearray(graph_path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        graph_path.write_bytes(bytes(data))
    elif damage == "truncate":
        graph_path.write_bytes(graph_path.read_bytes()[:1000])
    elif damage == "delete":
        graph_path.unlink()
    else:
        record_path.write_text("{not json")
    again = Embedder(use_daemon=False)
    assert float(again.embed("corruption") @ vector) > 0.99999
    assert again.graph is not None and not again.graph.from_cache and again.graph.optimized
    record = json.loads(record_path.read_text())
    assert record["sha256"] == builder.sha256_file(graph_path)


def test_builds_are_deterministic(tmp_path: Path, monkeypatch) -> None:
    digests = []
    for name in ("one", "two"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / name))
        embedder = Embedder(use_daemon=False, precision="int8")
        embedder.embed("x")
        assert embedder.graph is not None
        digests.append(builder.sha256_file(embedder.graph.path))
    assert digests[0] == digests[1]


def test_unwritable_cache_still_runs_the_built_graph(tmp_path: Path, monkeypatch) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    embedder = Embedder(use_daemon=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to the source graph
        embedder.embed("x")
    assert embedder.graph is not None and embedder.graph.optimized


# --- the parity probe -------------------------------------------------------------------------


def test_failed_probe_falls_back_to_the_source_graph(own_cache: Path, monkeypatch,
                                                     reference) -> None:
    monkeypatch.setitem(builder.PROBE_MIN_COSINE, "int8", 1.01)  # no graph can pass this
    texts, expected = reference
    embedder = Embedder(use_daemon=False, precision="int8")
    with pytest.warns(RuntimeWarning, match="failed its parity probe.*running the source graph"):
        vectors = embedder.embed_batch(texts[:20])
    assert embedder.graph is not None and not embedder.graph.optimized
    assert embedder.graph.path == embedder.files.onnx_path
    assert np.sum(vectors * expected[:20], axis=1).min() >= 0.998  # the source graph's vectors
    record = json.loads((own_cache / f"{embedder.graph.key}.json").read_text())
    assert record["probe_passed"] is False and record["sha256"] is None
    assert not (own_cache / f"{embedder.graph.key}.onnx").exists()
    # the failure is remembered (not rebuilt at each load), and still said
    again = Embedder(use_daemon=False, precision="int8")
    with pytest.warns(RuntimeWarning, match="failed its parity probe"):
        again.embed("x")
    assert again.graph is not None and again.graph.from_cache and not again.graph.optimized


# --- offline ----------------------------------------------------------------------------------


def test_build_runs_offline(tmp_path: Path) -> None:
    """A fresh process whose every socket connection fails builds both graphs and embeds."""
    code = (
        "import socket\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('network used during the build')\n"
        "socket.socket.connect = refuse\n"
        "socket.socket.connect_ex = refuse\n"
        "socket.create_connection = refuse\n"
        "from amalfa.embedder import Embedder\n"
        "for precision in ('fp32', 'int8'):\n"
        "    e = Embedder(use_daemon=False, precision=precision)\n"
        "    assert e.embed('offline').shape == (384,)\n"
        "    assert e.graph.optimized and not e.graph.from_cache\n"
        "print('ok')\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "offline"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
    assert len(list((tmp_path / "offline" / "amalfa" / "models").glob("*.onnx"))) == 2


# --- settings and databases -------------------------------------------------------------------


def test_settings_and_embedder_default_to_the_same_model() -> None:
    assert Settings().embeddings.model == DEFAULT_MODEL
    chosen = Embedder.for_settings(Settings())
    assert (chosen.model_name, chosen.precision) == (DEFAULT_MODEL, "fp32")
    assert Embedder.for_settings(Settings(), precision="int8").precision == "int8"


def test_database_records_and_enforces_the_precision(tmp_path: Path) -> None:
    int8 = Embedder(use_daemon=False, precision="int8")
    with ResonanceDB(tmp_path / "int8.db", create=True) as db:
        assert Embedder.for_database(db).precision == "fp32"  # nothing recorded yet
        with db.transaction():
            int8.record_in(db)
        assert (db.recorded_model(), db.recorded_precision()) == (DEFAULT_MODEL, "int8")
        int8.check_database(db)  # the same model and precision: fine
        fp32 = Embedder(use_daemon=False)
        with pytest.raises(ModelMismatchError,
                           match=r"embedded with .*all-MiniLM-L6-v2 \(int8\), not with .*"
                                 r"\(fp32\).*for_database.*--precision int8.*--force "
                                 r"--precision fp32"):
            fp32.check_database(db)
        with pytest.raises(ModelMismatchError), db.transaction():
            fp32.record_in(db)
        assert db.recorded_precision() == "int8"  # the refused write changed nothing
        chosen = Embedder.for_database(db, Settings())
        assert (chosen.model_name, chosen.precision) == (DEFAULT_MODEL, "int8")
    with ResonanceDB(tmp_path / "int8.db") as db:  # reopened: the record persists
        assert db.recorded_precision() == "int8"


def test_int8_client_does_not_take_fp32_vectors_from_the_daemon(monkeypatch) -> None:
    import threading

    from amalfa.daemon import make_server

    fp32 = Embedder(use_daemon=False)
    with make_server(port=0, embedder=fp32) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            monkeypatch.setenv("VECTOR_PORT", str(server.port))
            same = Embedder()
            same.embed("served")
            assert not same.is_loaded  # an fp32 client is served
            int8 = Embedder(precision="int8")
            vector = int8.embed("served")
            assert int8.is_loaded  # an int8 client embeds locally
            assert float(vector @ fp32.embed("served")) < 0.99999
        finally:
            server.shutdown()
            thread.join()


def test_graph_status_reports_the_cache_without_building(own_cache: Path) -> None:
    embedder = Embedder(use_daemon=False, precision="int8")
    assert embedder.graph_status()["state"] == "not built"
    assert not own_cache.exists()  # asking built nothing
    embedder.embed("x")
    status = Embedder(use_daemon=False, precision="int8").graph_status()
    assert status["state"] == "built" and status["precision"] == "int8"
    assert status["fused"]["attention"] == 6 and status["probe_min_cosine"] >= 0.99
    assert Path(status["path"]).is_relative_to(own_cache)  # never the installed source model
    Path(status["path"]).write_bytes(b"damaged")
    assert embedder.graph_status()["state"] == "corrupt"
    assert Embedder(use_daemon=False, optimize=False).graph_status()["state"] == "off"


def test_doctor_reports_the_model_graph(tmp_path: Path, monkeypatch) -> None:
    from amalfa.doctor import diagnose

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AMALFA_SETTINGS", raising=False)

    def graph_check() -> dict:
        rows = [c for c in diagnose().checks if c.name == "model graph"]
        assert len(rows) == 1
        return rows[0].to_json()

    before = graph_check()
    assert (before["status"], before["state"]) == ("ok", "not built")
    assert "built at first use" in before["detail"]
    Embedder(use_daemon=False).embed("x")
    after = graph_check()
    assert (after["status"], after["state"]) == ("ok", "built")
    assert Path(after["path"]).is_relative_to(os.environ["XDG_CACHE_HOME"])  # not the source
    Path(after["path"]).write_bytes(b"damaged")
    damaged = graph_check()
    assert (damaged["status"], damaged["state"]) == ("warn", "corrupt")


def test_quality_measures() -> None:
    from amalfa.models.quality import least_cosine

    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(50, 16)).astype(np.float32)
    assert least_cosine(vectors, vectors * 2.0) == pytest.approx(1.0)
    assert knn_overlap(vectors, vectors, k=5) == 1.0
    shuffled = vectors[rng.permutation(50)]  # the same points, other texts: neighbours differ
    assert knn_overlap(vectors, shuffled, k=5) < 0.5
    broken = vectors.copy()
    broken[7, 0] = np.nan
    assert least_cosine(broken, vectors) == float("-inf")
    flipped = vectors.copy()
    flipped[3] *= -1
    assert least_cosine(flipped, vectors) == pytest.approx(-1.0)


def test_a_source_graph_onnxruntime_cannot_run_is_a_clear_error(tmp_path: Path,
                                                                 own_cache: Path) -> None:
    """A valid ONNX file with an operator onnxruntime does not have: the builder rewrites what
    it can (nothing here), and the error names onnxruntime and the file; nothing is cached."""
    import onnx
    from onnx import TensorProto, helper

    from amalfa.errors import ModelError

    folder = tmp_path / "odd"
    folder.mkdir()
    tokenizer = bundled_tokenizer_path()
    assert tokenizer is not None
    shutil.copyfile(tokenizer, folder / "tokenizer.json")
    node = helper.make_node("NoSuchOp", ["input_ids"], ["last_hidden_state"], domain="odd.ops")
    graph = helper.make_graph(
        [node], "odd", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 2])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, 2, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("odd.ops", 1)]),
              str(folder / "model.onnx"))
    with pytest.raises(ModelError, match="onnxruntime cannot load .*odd"):
        Embedder(folder, use_daemon=False).embed("x")
    assert not list(own_cache.glob("*.onnx"))


# --- the int8 rewrites ------------------------------------------------------------------------


def test_int8_exact_rewrites_keep_the_function(reference) -> None:
    """Splitting Q/K/V out of Attention and smoothing the layer-norm outputs with the calibration
    run change no vector (only quantize_int8 rounds): the smoothing's powers of two move each
    channel's size from the activation to the weight."""
    import onnx

    from amalfa.models import graph as rewrites
    from amalfa.models._runtime import build_session

    texts, _ = reference
    embedder = Embedder(use_daemon=False, threads=1)
    embedder.embed("load the tokenizer")
    data, _ = builder.build_graph(embedder.files.onnx_path, "fp32")
    model = onnx.load_from_string(data)
    assert rewrites.separate_qkv(model) == 6
    calibration, names, width = rewrites.calibration_graph(model)
    peaks = embedder._probe_vectors(build_session(calibration, threads=1),
                                    list(builder.PROBE_TEXTS)).max(axis=0)
    assert len(names) == 12 and peaks.shape == (12 * width,) and bool((peaks > 0).all())
    maxima = {name: peaks[i * width:(i + 1) * width] for i, name in enumerate(names)}
    assert rewrites.smooth_activations(model, maxima) == 12
    before = embedder._probe_vectors(build_session(data, threads=1), texts[:40])
    after = embedder._probe_vectors(
        build_session(model.SerializeToString(), threads=1), texts[:40])
    cosines = np.sum(before * after, axis=1) / (np.linalg.norm(before, axis=1)
                                               * np.linalg.norm(after, axis=1))
    assert cosines.min() > 0.99999, f"worst cosine {cosines.min():.7f}"


def test_int8_vector_does_not_depend_on_its_batch(reference) -> None:
    """Activations are quantised per token, so a text embedded alone and padded in a batch with
    much longer texts gets the same vector (one scale per tensor would let the batch's largest
    activation set every text's precision)."""
    texts, _ = reference
    int8 = Embedder(use_daemon=False, precision="int8")
    longest = sorted(texts, key=len)[-4:]
    shortest = sorted(texts, key=len)[:4]
    alone = np.stack([int8.embed(text) for text in shortest])
    int8.max_batch_tokens = 1 << 20  # one padded batch for all eight
    together = int8.embed_batch(shortest + longest)[:4]
    assert np.sum(alone * together, axis=1).min() > 0.99999

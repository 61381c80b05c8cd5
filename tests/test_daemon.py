"""The vector daemon over real HTTP on 127.0.0.1: endpoints, error codes, concurrency, stalled
clients; and its lifecycle with real processes: start, status, stop, stale pid files, SIGTERM.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amalfa import daemon
from amalfa.daemon import MAX_BODY_BYTES, MAX_TEXTS, DaemonError, make_server
from amalfa.embedder import DEFAULT_MODEL, Embedder

DIMENSIONS = 384


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    for var in ("AMALFA_MODEL_PATH", "EMBEDDING_MODEL", "AMALFA_RERANKER_PATH", "RERANKER_MODEL",
                "HF_HOME", "HUGGINGFACE_HUB_CACHE", "VECTOR_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub-cache")))


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(use_daemon=False)


@pytest.fixture(scope="module")
def reranker(tmp_path_factory) -> Any:
    from test_reranker import write_tiny_cross_encoder

    from amalfa.reranker import Reranker

    return Reranker(write_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-reranker")))


def _serving(server: daemon.DaemonServer) -> Iterator[daemon.DaemonServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture(scope="module")
def server(embedder: Embedder, reranker: Any) -> Iterator[daemon.DaemonServer]:
    yield from _serving(make_server(port=0, embedder=embedder, reranker=reranker,
                                    request_timeout=1.0))


def request(port: int, method: str, path: str, body: Any = None, *,
            raw: bytes | None = None, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        payload = json.loads(response.read())
        return response.status, payload, response
    finally:
        conn.close()


# --- endpoints ----------------------------------------------------------------------------------


def test_health(server) -> None:
    status, body, response = request(server.port, "GET", "/health")
    assert status == 200 and response.getheader("Content-Type") == "application/json"
    assert body == {"status": "ok", "model": DEFAULT_MODEL, "precision": "fp32", "ready": True,
                    "reranker_ready": True, "dimensions": DIMENSIONS, "pid": os.getpid(),
                    "port": server.port}


def test_embed_one_text_and_many(server, embedder: Embedder) -> None:
    status, body, _ = request(server.port, "POST", "/embed", {"text": "hello daemon"})
    assert status == 200 and body["dimensions"] == DIMENSIONS and body["model"] == DEFAULT_MODEL
    assert body["precision"] == embedder.precision  # so a client of another precision says no
    np.testing.assert_allclose(body["vector"], embedder.embed("hello daemon"), atol=1e-6)

    texts = ["first", "", "third text, a little longer than the others"]
    status, body, _ = request(server.port, "POST", "/embed", {"texts": texts})
    assert status == 200 and "vector" not in body
    vectors = np.array(body["vectors"], dtype=np.float32)
    np.testing.assert_allclose(vectors, embedder.embed_batch(texts), atol=1e-6)

    status, body, _ = request(server.port, "POST", "/embed", {"texts": []})
    assert (status, body["vectors"], body["dimensions"]) == (200, [], DIMENSIONS)


@pytest.mark.parametrize(("payload", "message"), [
    (b"{not json", "malformed JSON"),
    (b"\xff\xfe", "malformed JSON"),
    (b"[1, 2]", "must be a JSON object, not a list"),
    (b"{}", 'either "text"'),
    (b'{"text": "a", "texts": ["b"]}', 'either "text"'),
    (b'{"text": 5}', '"text" must be a string, not a number'),
    (b'{"text": null}', '"text" must be a string, not null'),
    (b'{"texts": "abc"}', '"texts" must be a list of strings, not a string'),
    (b'{"texts": ["ok", {"x": 1}]}', '"texts"\\[1\\] must be a string, not an object'),
])
def test_embed_rejects_bad_bodies_with_400(server, payload: bytes, message: str) -> None:
    status, body, response = request(server.port, "POST", "/embed", raw=payload)
    assert status == 400 and response.getheader("Content-Type") == "application/json"
    assert set(body) == {"error"}
    assert re.search(message, body["error"]), body["error"]


def test_unknown_path_is_404_and_wrong_method_405(server) -> None:
    for method, path in (("GET", "/nope"), ("POST", "/embed/extra"), ("DELETE", "/")):
        status, body, _ = request(server.port, method, path)
        assert status == 404 and "no endpoint" in body["error"], (method, path)
    for method, path, allowed in (("GET", "/embed", "POST"), ("POST", "/health", "GET"),
                                  ("PUT", "/embed", "POST"), ("DELETE", "/rerank", "POST"),
                                  ("PATCH", "/health", "GET")):
        status, body, response = request(server.port, method, path, {"text": "x"})
        assert status == 405 and response.getheader("Allow") == allowed, (method, path)
        assert f"takes {allowed}" in body["error"]


def test_oversized_bodies_are_413(server) -> None:
    # the server answers from the headers alone, without reading a body it would refuse
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1))
        reply = sock.makefile("rb").read()
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"Connection: close" in head
    assert f"limit is {MAX_BODY_BYTES}" in json.loads(payload)["error"]

    status, body, _ = request(server.port, "POST", "/embed", {"texts": ["a"] * (MAX_TEXTS + 1)})
    assert status == 413 and f"limit is {MAX_TEXTS}" in body["error"]


def test_missing_content_length_is_411(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 411")
    assert "Content-Length" in json.loads(reply.partition(b"\r\n\r\n")[2])["error"]


def test_keep_alive_connection_serves_several_requests(server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for text in ("one", "two", "three"):
            conn.request("POST", "/embed", body=json.dumps({"text": text}))
            response = conn.getresponse()
            assert response.status == 200 and len(json.loads(response.read())["vector"]) == 384
        conn.request("GET", "/missing")
        response = conn.getresponse()
        assert response.status == 404
        response.read()
        conn.request("GET", "/health")  # still usable after an error
        assert conn.getresponse().status == 200
    finally:
        conn.close()


# --- rerank -------------------------------------------------------------------------------------


def test_rerank(server, reranker) -> None:
    documents = ["warm daemon", "bananas", "", "the vector daemon keeps the model warm"]
    expected = reranker.rerank("vector daemon", documents)
    status, body, _ = request(server.port, "POST", "/rerank",
                              {"query": "vector daemon", "documents": documents})
    assert status == 200 and body["count"] == len(documents)
    assert [r["originalIndex"] for r in body["results"]] == [r.original_index for r in expected]
    assert [r["text"] for r in body["results"]] == [r.text for r in expected]
    np.testing.assert_allclose([r["score"] for r in body["results"]],
                               [r.score for r in expected], rtol=1e-6)

    status, body, _ = request(server.port, "POST", "/rerank", {
        "query": "vector daemon", "documents": documents, "topK": 2,
        "threshold": expected[3].score})
    assert status == 200 and body["count"] == 2
    assert [r["originalIndex"] for r in body["results"]] == \
        [r.original_index for r in expected[:2]]


@pytest.mark.parametrize(("payload", "field"), [
    ({"documents": ["a"]}, '"query"'),
    ({"query": "q", "documents": "a"}, '"documents"'),
    ({"query": "q", "documents": ["a", 1]}, '"documents"'),
    ({"query": "q", "documents": ["a"], "topK": -1}, '"topK"'),
    ({"query": "q", "documents": ["a"], "topK": "3"}, '"topK"'),
    ({"query": "q", "documents": ["a"], "threshold": 2}, '"threshold"'),
])
def test_rerank_rejects_bad_fields_with_400(server, payload, field: str) -> None:
    status, body, _ = request(server.port, "POST", "/rerank", payload)
    assert status == 400 and field in body["error"]


def test_rerank_without_a_model_is_503(embedder: Embedder) -> None:
    for no_reranker in _serving(make_server(port=0, embedder=embedder, reranker=None)):
        status, body, _ = request(no_reranker.port, "GET", "/health")
        assert body["ready"] is True and body["reranker_ready"] is False
        status, body, _ = request(no_reranker.port, "POST", "/rerank",
                                  {"query": "q", "documents": ["a"]})
        assert status == 503 and "no reranker model" in body["error"]
        assert "AMALFA_RERANKER_PATH" in body["error"]


def test_loading_model_answers_503_until_ready(embedder: Embedder) -> None:
    for loading in _serving(make_server(port=0, embedder=embedder, load=False)):
        status, body, _ = request(loading.port, "GET", "/health")
        assert (status, body["status"], body["ready"]) == (200, "loading", False)
        status, body, _ = request(loading.port, "POST", "/embed", {"text": "x"})
        assert status == 503 and "loading" in body["error"]
        loading.service.load()
        status, body, _ = request(loading.port, "POST", "/embed", {"text": "x"})
        assert status == 200


# --- concurrency and stalled clients ------------------------------------------------------------


def test_concurrent_clients_are_all_served(server, embedder: Embedder) -> None:
    texts = [f"client {i} asks about topic {i * 7}" for i in range(8)]
    expected = embedder.embed_batch(texts)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            for _ in range(3):
                status, body, _ = request(server.port, "POST", "/embed", {"text": texts[i]})
                assert status == 200
                results[i] = np.array(body["vector"], dtype=np.float32)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(len(texts)):
        np.testing.assert_allclose(results[i], expected[i], atol=1e-5)


def test_stalled_client_is_dropped_and_does_not_block_others(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as stalled:
        stalled.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        status, _, _ = request(server.port, "GET", "/health")  # others are still served
        assert status == 200
        assert stalled.recv(1024) == b""  # the server closed it (request_timeout is 1 s here)


# --- lifecycle with real processes --------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    daemon.stop(root=tmp_path)  # never leave a daemon behind, whatever the test did


def _pid_file(root: Path) -> Path:
    return root / ".amalfa" / "runtime" / "vector-daemon.pid"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.slow
def test_start_status_stop(root: Path) -> None:
    assert daemon.status(root=root)["running"] is False
    started = daemon.start(port=0, root=root)
    assert started["running"] and started["ready"] and not started["already_running"]
    assert started["model"] == DEFAULT_MODEL
    pid, port = started["pid"], started["port"]
    assert pid != os.getpid() and json.loads(_pid_file(root).read_text())["pid"] == pid
    assert (root / ".amalfa" / "logs" / "vector-daemon.log").is_file()

    status, body, _ = request(port, "POST", "/embed", {"text": "from another process"})
    assert status == 200 and len(body["vector"]) == DIMENSIONS

    again = daemon.start(port=0, root=root)
    assert again["already_running"] and again["pid"] == pid

    stopped = daemon.stop(root=root)
    assert stopped == {"stopped": True, "pid": pid, "was_running": True,
                       "removed_stale_pid_file": False}
    assert not _pid_file(root).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert daemon.status(root=root)["running"] is False
    assert daemon.stop(root=root)["was_running"] is False
    log = (root / ".amalfa" / "logs" / "vector-daemon.log").read_text()
    assert "listening on 127.0.0.1" in log and "received SIGTERM" in log and "stopped" in log


@pytest.mark.slow
def test_start_replaces_a_stale_pid_file(root: Path) -> None:
    _pid_file(root).parent.mkdir(parents=True)
    _pid_file(root).write_text(json.dumps({"pid": _dead_pid(), "port": 1}))
    report = daemon.status(root=root)
    assert report["stale"] and not report["running"]
    started = daemon.start(port=0, root=root)
    assert started["removed_stale_pid_file"] and started["running"] and started["ready"]
    assert json.loads(_pid_file(root).read_text())["pid"] == started["pid"]


def test_stop_removes_a_stale_pid_file_and_spares_a_reused_pid(root: Path) -> None:
    dead = _dead_pid()
    _pid_file(root).parent.mkdir(parents=True)
    _pid_file(root).write_text(json.dumps({"pid": dead, "port": 1}))
    assert daemon.stop(root=root) == {"stopped": False, "pid": dead, "was_running": False,
                                      "removed_stale_pid_file": True}
    assert not _pid_file(root).exists()

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _pid_file(root).write_text(json.dumps({"pid": stranger.pid, "port": 1}))
        assert daemon.status(root=root)["stale"] is True  # alive, but not the daemon
        assert daemon.stop(root=root)["stopped"] is False
        assert stranger.poll() is None  # never signalled
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.slow
def test_serve_in_foreground_stops_cleanly_on_sigterm(root: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "amalfa.daemon", "serve", "--port", "0",
                                "--root", str(root)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        record = _wait_for_pid_file(root, process)
        assert record["pid"] == process.pid
        health = _wait_for_ready(record["port"])
        assert health["pid"] == process.pid
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not _pid_file(root).exists()
    assert "stopped" in (root / ".amalfa" / "logs" / "vector-daemon.log").read_text()


def test_start_reports_why_the_daemon_failed(root: Path, monkeypatch) -> None:
    monkeypatch.setenv("AMALFA_MODEL_PATH", str(root / "no-such-model"))
    with pytest.raises(DaemonError, match=r"(?s)exited with code 1.*AMALFA_MODEL_PATH .*no-such-model"
                                          r" does not exist"):
        daemon.start(port=0, root=root, timeout=60)
    assert not _pid_file(root).exists()


def test_start_on_a_busy_port_fails_clearly(root: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(DaemonError, match="Address already in use"):
            daemon.start(port=busy.getsockname()[1], root=root, timeout=60)


def test_command_line(root: Path) -> None:
    # `python -m amalfa.daemon ARGS` is `amalfa daemon ARGS`: one command line, one set of rules
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-m", "amalfa.daemon", "status", "--json",
                             "--root", str(root)],
                            capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 3  # not running
    assert json.loads(result.stdout)["running"] is False
    assert daemon.main(["status", "--root", str(root)]) == 3
    assert daemon.main(["restart"]) == 2  # a usage error
    bad_port = {**env, "VECTOR_PORT": "http"}
    result = subprocess.run([sys.executable, "-m", "amalfa.daemon", "start", "--root", str(root)],
                            capture_output=True, text=True, env=bad_port, timeout=60,
                            check=False)
    assert result.returncode == 1 and "VECTOR_PORT must be a port number" in result.stderr
    assert "Traceback" not in result.stderr


def _wait_for_pid_file(root: Path, process: subprocess.Popen, timeout: float = 60
                       ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        if _pid_file(root).exists():
            return json.loads(_pid_file(root).read_text())
        time.sleep(0.05)
    raise AssertionError("no pid file")


def _wait_for_ready(port: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body, _ = request(port, "GET", "/health")
        if body["ready"]:
            return body
        time.sleep(0.05)
    raise AssertionError("daemon never ready")


def _folder_model(folder: Path, embedder: Embedder) -> Path:
    """The embedded model as a model folder: another model name, the same 384-d vectors."""
    folder.mkdir()
    (folder / "model.onnx").symlink_to(embedder.files.onnx_path)
    (folder / "tokenizer.json").write_text(embedder.files.tokenizer_text(), encoding="utf-8")
    return folder.resolve()


@pytest.mark.slow
def test_the_daemon_serves_the_settings_model_unless_told_otherwise(
        root: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMALFA_SETTINGS", raising=False)
    model = _folder_model(root / "project-model", embedder)
    (root / "amalfa.settings.json").write_text(
        json.dumps({"embeddings": {"model": str(model)}}), encoding="utf-8")
    report = daemon.start(port=0, root=root, timeout=120)
    try:
        assert report["ready"] and report["model"] == str(model)
        # a client of this project embeds with the same model, so it takes the daemon's reply
        _, health, _ = request(report["port"], "GET", "/health")
        assert health["model"] == Embedder(model).model_name
    finally:
        daemon.stop(root=root)

    report = daemon.start(port=0, root=root, model=embedder.model_name, timeout=120)
    try:
        assert report["model"] == embedder.model_name  # --model wins over the settings
    finally:
        daemon.stop(root=root)


def test_a_daemon_with_bad_settings_does_not_start(root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMALFA_SETTINGS", raising=False)
    (root / "amalfa.settings.json").write_text('{"embeddings": {"model": 5}}', encoding="utf-8")
    with pytest.raises(DaemonError, match=r"(?s)exited with code 1.*embeddings\.model"):
        daemon.start(port=0, root=root, timeout=60)
    assert not _pid_file(root).exists()

"""The vector daemon: a loopback HTTP server that keeps the embedding model loaded.

Endpoints (JSON in and out, bound to 127.0.0.1 only):

- ``GET /health`` -> ``{status, model, ready, reranker_ready, dimensions, pid, port}``;
  ``status`` is ``loading`` until the model is loaded, then ``ok``.
- ``POST /embed`` ``{"text": str}`` -> ``{vector, dimensions, model}``;
  ``{"texts": [str, ...]}`` -> ``{vectors, dimensions, model}``.
- ``POST /rerank`` ``{query, documents, topK?, threshold?}`` ->
  ``{results: [{text, score, originalIndex}], count}``; 503 without a reranker model.

Errors answer ``{"error": message}`` with 400 (malformed JSON, missing or wrong-typed fields),
404 (unknown path), 405 (wrong method), 411 (no Content-Length), 413 (body over
:data:`MAX_BODY_BYTES` or more than :data:`MAX_TEXTS` texts) or 503 (model loading or absent).
Each connection has a socket timeout, so a client that stalls cannot hold a thread forever.

Lifecycle: :func:`serve` runs in the foreground, writes ``vector-daemon.pid`` (JSON: pid, port)
under the runtime folder once the port is bound, logs to ``vector-daemon.log`` under the logs
folder, and stops cleanly on SIGTERM or SIGINT. :func:`start` spawns ``python -m amalfa.daemon
serve`` detached and waits until ``/health`` reports ready; :func:`stop` sends SIGTERM and waits;
:func:`status` reports. ``python -m amalfa.daemon start|stop|status|serve [--port N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from amalfa.embedder import DAEMON_MAX_TEXTS, DEFAULT_PORT, Embedder
from amalfa.errors import DaemonError, ModelError, SettingsError

__all__ = [
    "DEFAULT_PORT",
    "MAX_BODY_BYTES",
    "MAX_TEXTS",
    "DaemonError",
    "describe_status",
    "DaemonServer",
    "VectorService",
    "main",
    "make_server",
    "serve",
    "start",
    "status",
    "stop",
]

log = logging.getLogger("amalfa.daemon")  # not __name__: it is "__main__" under -m

HOST = "127.0.0.1"
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_TEXTS = DAEMON_MAX_TEXTS
#: Seconds a connection may sit idle (or dribble a request) before the server drops it.
REQUEST_TIMEOUT_S = 10.0
PID_FILE_NAME = "vector-daemon.pid"
LOG_FILE_NAME = "vector-daemon.log"
#: A log file larger than this is moved to ``vector-daemon.log.1`` when the daemon starts.
LOG_ROTATE_BYTES = 5 * 1024 * 1024


# --- the models the daemon serves ---------------------------------------------------------------


class VectorService:
    """The embedder (required) and reranker (optional) behind the endpoints.

    :meth:`load` creates their ONNX sessions; until it has, ``ready`` is False and the
    endpoints answer 503. A reranker that fails to load is logged and left out.
    """

    def __init__(self, embedder: Embedder, reranker: Any = None) -> None:
        embedder.use_daemon = False  # the daemon must never ask itself
        self.embedder = embedder
        self.reranker = reranker
        self.reranker_error: str | None = None if reranker is not None else _no_reranker_reason()
        self.ready = threading.Event()

    def load(self) -> None:
        """Load the models (raises ModelError if the embedder cannot be loaded)."""
        self.embedder.embed("warm up")  # creates the session and the first buffers
        if self.reranker is not None:
            try:
                self.reranker.load()
            except ModelError as exc:
                log.error("reranker not available: %s", exc)
                self.reranker_error = f"reranker model failed to load: {exc}"
                self.reranker = None
        self.ready.set()

    @property
    def reranker_ready(self) -> bool:
        return self.ready.is_set() and self.reranker is not None


def _no_reranker_reason() -> str:
    return ("no reranker model: set AMALFA_RERANKER_PATH to a folder with model.onnx and "
            "tokenizer.json, or put BAAI/bge-reranker-base (or $RERANKER_MODEL) in the Hugging "
            "Face cache")


def _optional_reranker() -> Any:
    """The reranker when a model is present, else None (the daemon then answers 503)."""
    from amalfa.reranker import Reranker

    if not Reranker.available():
        return None
    return Reranker()


# --- HTTP ---------------------------------------------------------------------------------------


class _RequestError(Exception):
    """Ends a request with an HTTP error status and a JSON message."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_ROUTES: dict[str, str] = {"/health": "GET", "/embed": "POST", "/rerank": "POST"}


class _Handler(BaseHTTPRequestHandler):
    server: DaemonServer
    protocol_version = "HTTP/1.1"  # keep-alive: a client may reuse its connection
    server_version = "amalfa-vector-daemon"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)  # every read and write

    # -- dispatch --

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        try:
            expected = _ROUTES.get(path)
            if expected is None:
                raise _RequestError(HTTPStatus.NOT_FOUND, f"no endpoint {path}; endpoints: "
                                    + ", ".join(f"{m} {p}" for p, m in _ROUTES.items()))
            if method != expected:
                self._discard_body()
                raise _RequestError(HTTPStatus.METHOD_NOT_ALLOWED,
                                    f"{path} takes {expected}, not {method}")
            if path == "/health":
                self._send_json(HTTPStatus.OK, self.server.health())
            elif path == "/embed":
                self._send_json(HTTPStatus.OK, self._embed(self._read_json()))
            else:
                self._send_json(HTTPStatus.OK, self._rerank(self._read_json()))
        except _RequestError as exc:
            self._send_json(exc.status, {"error": exc.message},
                            allow=_ROUTES.get(path) if exc.status == 405 else None)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # -- endpoints --

    def _embed(self, body: dict[str, Any]) -> dict[str, Any]:
        has_text, has_texts = "text" in body, "texts" in body
        if has_text == has_texts:
            raise _RequestError(HTTPStatus.BAD_REQUEST,
                                'send either "text" (a string) or "texts" (a list of strings)')
        if has_text and not isinstance(body["text"], str):
            raise _RequestError(HTTPStatus.BAD_REQUEST, f'"text" must be a string, not '
                                f'{_json_type(body["text"])}')
        texts = [body["text"]] if has_text else body["texts"]
        if not isinstance(texts, list):
            raise _RequestError(HTTPStatus.BAD_REQUEST,
                                f'"texts" must be a list of strings, not {_json_type(texts)}')
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise _RequestError(HTTPStatus.BAD_REQUEST,
                                    f'"texts"[{i}] must be a string, not {_json_type(text)}')
        if len(texts) > MAX_TEXTS:
            raise _RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                f"{len(texts)} texts in one request; the limit is {MAX_TEXTS}")
        service = self.server.ready_service()
        vectors = service.embedder.embed_batch(texts)
        answer: dict[str, Any] = {"dimensions": int(vectors.shape[1]),
                                  "model": service.embedder.model_name}
        if has_text:
            answer["vector"] = vectors[0].tolist()
        else:
            answer["vectors"] = vectors.tolist()
        return answer

    def _rerank(self, body: dict[str, Any]) -> dict[str, Any]:
        query, documents = body.get("query"), body.get("documents")
        if not isinstance(query, str):
            raise _RequestError(HTTPStatus.BAD_REQUEST, f'"query" must be a string, not '
                                f'{_json_type(query)}')
        if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
            raise _RequestError(HTTPStatus.BAD_REQUEST,
                                '"documents" must be a list of strings')
        if len(documents) > MAX_TEXTS:
            raise _RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                f"{len(documents)} documents; the limit is {MAX_TEXTS}")
        top_k, threshold = body.get("topK"), body.get("threshold")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or top_k < 0):
            raise _RequestError(HTTPStatus.BAD_REQUEST,
                                f'"topK" must be a non-negative integer, not {top_k!r}')
        if threshold is not None and (isinstance(threshold, bool)
                                      or not isinstance(threshold, (int, float))
                                      or not 0 <= threshold <= 1):
            raise _RequestError(HTTPStatus.BAD_REQUEST,
                                f'"threshold" must be a number in [0, 1], not {threshold!r}')
        service = self.server.ready_service()
        if service.reranker is None:
            raise _RequestError(HTTPStatus.SERVICE_UNAVAILABLE,
                                service.reranker_error or _no_reranker_reason())
        results = service.reranker.rerank(query, documents, top_k=top_k, threshold=threshold)
        return {"results": [{"text": r.text, "score": r.score, "originalIndex": r.original_index}
                            for r in results],
                "count": len(results)}

    # -- bodies --

    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise _RequestError(HTTPStatus.LENGTH_REQUIRED,
                                "chunked bodies are not accepted; send Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise _RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length header required")
        if not raw.strip().isdigit():
            self.close_connection = True
            raise _RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {raw!r}")
        return int(raw)

    def _discard_body(self) -> None:
        """Read a small unwanted body so the connection stays usable; drop it when large."""
        raw = self.headers.get("Content-Length", "0").strip()
        length = int(raw) if raw.isdigit() else 0
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _read_json(self) -> dict[str, Any]:
        length = self._content_length()
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body makes the connection unusable
            raise _RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                f"body of {length} bytes; the limit is {MAX_BODY_BYTES}")
        raw = self.rfile.read(length)
        if len(raw) < length:
            self.close_connection = True
            raise _RequestError(HTTPStatus.BAD_REQUEST, "body shorter than its Content-Length")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _RequestError(HTTPStatus.BAD_REQUEST, f"malformed JSON: {exc}") from None
        except RecursionError:  # json raises it, not JSONDecodeError, for too deep nesting
            raise _RequestError(HTTPStatus.BAD_REQUEST,
                                "malformed JSON: nested too deeply") from None
        if not isinstance(body, dict):
            raise _RequestError(HTTPStatus.BAD_REQUEST,
                                f"the body must be a JSON object, not {_json_type(body)}")
        return body

    def _send_json(self, status: HTTPStatus, payload: dict[str, Any], *,
                   allow: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if allow:
            self.send_header("Allow", allow)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(value),
                                                                       type(value).__name__)


class DaemonServer(ThreadingHTTPServer):
    """The HTTP server: one thread per connection, bound to 127.0.0.1."""

    daemon_threads = True  # a stalled connection never blocks shutdown
    allow_reuse_address = True  # restart at once on the port a stopped daemon left
    # listen backlog: socketserver's default of 5 overflows under a burst of connects while the
    # accept loop is busy, and the kernel then drops SYNs (clients stall 1, 3, 7 s in retransmits)
    request_queue_size = 128

    def __init__(self, port: int, service: VectorService, *,
                 request_timeout: float = REQUEST_TIMEOUT_S) -> None:
        super().__init__((HOST, port), _Handler)
        self.service = service
        self.request_timeout = request_timeout
        self.load_error: str | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def health(self) -> dict[str, Any]:
        service = self.service
        ready = service.ready.is_set()
        answer: dict[str, Any] = {
            "status": "ok" if ready else ("error" if self.load_error else "loading"),
            "model": service.embedder.model_name,
            "ready": ready,
            "reranker_ready": service.reranker_ready,
            "dimensions": service.embedder.dimensions if ready else None,
            "pid": os.getpid(),
            "port": self.port,
        }
        if self.load_error:
            answer["error"] = self.load_error
        return answer

    def ready_service(self) -> VectorService:
        if not self.service.ready.is_set():
            raise _RequestError(HTTPStatus.SERVICE_UNAVAILABLE,
                                self.load_error or "the model is still loading; retry shortly")
        return self.service


def make_server(*, port: int = 0, embedder: Embedder | None = None, reranker: Any = None,
                load: bool = True, request_timeout: float = REQUEST_TIMEOUT_S) -> DaemonServer:
    """A bound server (not yet serving). ``port=0`` picks a free port (see ``server.port``).

    With ``load`` the models are loaded before returning; otherwise call
    ``server.service.load()`` (``serve`` does, in the background, so /health answers at once).
    ``request_timeout``: seconds a connection may stall before it is dropped.
    """
    service = VectorService(embedder or Embedder(use_daemon=False), reranker)
    server = DaemonServer(port, service, request_timeout=request_timeout)
    if load:
        try:
            service.load()
        except BaseException:
            server.server_close()
            raise
    return server


# --- pid file and processes ---------------------------------------------------------------------


def _resolve_port(port: int | None) -> int:
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise SettingsError(f"port must be an integer in 0..65535; got {port!r}")
        return port
    raw = os.environ.get("VECTOR_PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SettingsError(f"VECTOR_PORT must be a port number (1..65535); got {raw!r}")
    return int(raw)


def _paths(root: str | Path | None) -> tuple[Any, Path, Path]:
    from amalfa.settings import get_folders

    folders = get_folders(root)
    return folders, folders.runtime / PID_FILE_NAME, folders.logs / LOG_FILE_NAME


def _read_pid_file(pid_file: Path) -> dict[str, Any] | None:
    """The pid file's record, or None when absent or unreadable (a half-written file)."""
    try:
        record = json.loads(pid_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None  # RecursionError: json's answer to too deep nesting
    if not (isinstance(record, dict) and isinstance(record.get("pid"), int)
            and isinstance(record.get("port"), int)):
        return None
    return record


def _write_pid_file(pid_file: Path, record: dict[str, Any]) -> None:
    tmp = pid_file.with_name(f"{pid_file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, pid_file)  # readers never see a half-written file


def _remove_own_pid_file(pid_file: Path) -> None:
    record = _read_pid_file(pid_file)
    if record is not None and record["pid"] == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; reaps it first if it is an exited child of this process."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child: ask the kernel below
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def _is_daemon_process(pid: int) -> bool | None:
    """Whether ``pid`` runs ``amalfa.daemon`` (None where /proc cannot tell)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None if not Path("/proc/self").exists() else False
    except OSError:
        return None
    return b"amalfa.daemon" in cmdline


def _get_health(port: int, timeout: float = 1.0) -> dict[str, Any] | None:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return None
        answer = json.loads(body)
        return answer if isinstance(answer, dict) else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def status(*, root: str | Path | None = None) -> dict[str, Any]:
    """The daemon of project ``root`` (default: the current folder), as a dict.

    Keys: ``running``, ``pid``, ``port``, ``ready``, ``model``, ``reranker_ready``, ``stale``
    (a pid file whose process is gone or is not the daemon), ``pid_file``, ``log_file``.
    """
    _, pid_file, log_file = _paths(root)
    report: dict[str, Any] = {"running": False, "pid": None, "port": None, "ready": False,
                              "model": None, "reranker_ready": False, "stale": False,
                              "pid_file": str(pid_file), "log_file": str(log_file)}
    record = _read_pid_file(pid_file)
    if record is None:
        return report
    pid, port = record["pid"], record["port"]
    report.update(pid=pid, port=port)
    if not _pid_alive(pid) or _is_daemon_process(pid) is False:
        report["stale"] = True
        return report
    report["running"] = True
    health = _get_health(port)
    if health is not None and health.get("pid") == pid:
        report.update(ready=bool(health.get("ready")), model=health.get("model"),
                      reranker_ready=bool(health.get("reranker_ready")))
    return report


def describe_status(report: dict[str, Any]) -> str:
    """One line for people about a :func:`status` report: ``running, pid 12, port 3010, ...``."""
    if not report.get("running"):
        return "not running (optional: without it amalfa embeds in process)"
    parts = [f"running, pid {report.get('pid')}", f"port {report.get('port')}"]
    if report.get("model"):
        parts.append(f"model {report['model']}")
    if "ready" in report:
        parts.append("ready" if report["ready"] else "loading")
    return ", ".join(parts)


def start(*, port: int | None = None, root: str | Path | None = None,
          timeout: float = 60.0) -> dict[str, Any]:
    """Start the daemon detached and wait until it is ready; returns :func:`status` plus
    ``already_running`` and ``removed_stale_pid_file``.

    ``port``: default ``$VECTOR_PORT`` or 3010; 0 picks a free port. A daemon already running
    for ``root`` is left alone. Raises DaemonError when the new process exits or is not ready in
    ``timeout`` seconds (the message holds the end of its log).
    """
    port = _resolve_port(port)
    folders, pid_file, log_file = _paths(root)
    deadline = time.monotonic() + timeout
    current = status(root=root)
    while current["running"] and not current["ready"] and time.monotonic() < deadline:
        time.sleep(0.05)  # another start may be loading the model right now
        current = status(root=root)
    if current["running"]:
        if not current["ready"]:
            raise DaemonError(f"a daemon (pid {current['pid']}) is running but not ready on "
                              f"port {current['port']} after {timeout:g} s; stop it first")
        return {**current, "already_running": True, "removed_stale_pid_file": False}
    removed_stale = False
    if current["stale"]:
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        removed_stale = True
        log.info("removed stale pid file %s (pid %s)", pid_file, current["pid"])
    folders.ensure("runtime", "logs")
    _rotate_log(log_file)
    command = [sys.executable, "-m", "amalfa.daemon", "serve", "--port", str(port),
               "--root", str(folders.base.parent)]
    with open(log_file, "ab") as log_stream:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_stream,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   cwd=folders.base.parent)
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise DaemonError(f"the daemon exited with code {code} while starting; end of "
                              f"{log_file}:\n{_log_tail(log_file)}")
        record = _read_pid_file(pid_file)
        if record is not None and record["pid"] == process.pid:
            health = _get_health(record["port"], timeout=0.5)
            if health is not None and health.get("ready"):
                return {**status(root=root), "already_running": False,
                        "removed_stale_pid_file": removed_stale}
        time.sleep(0.05)
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    raise DaemonError(f"the daemon was not ready within {timeout:g} s; end of {log_file}:\n"
                      f"{_log_tail(log_file)}")


def stop(*, root: str | Path | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Stop the daemon of ``root``: SIGTERM, wait up to ``timeout`` s, then SIGKILL.

    Returns ``{stopped, pid, was_running, removed_stale_pid_file}``. A stale pid file is removed;
    a process that is not the daemon (a reused pid) is never signalled.
    """
    _, pid_file, _ = _paths(root)
    current = status(root=root)
    result = {"stopped": False, "pid": current["pid"], "was_running": current["running"],
              "removed_stale_pid_file": False}
    if not current["running"]:
        if current["stale"]:
            with contextlib.suppress(FileNotFoundError):
                pid_file.unlink()
            result["removed_stale_pid_file"] = True
        return result
    pid = current["pid"]
    if _is_daemon_process(pid) is None:  # no /proc: trust only a daemon that names this pid
        health = _get_health(current["port"])
        if health is None or health.get("pid") != pid:
            raise DaemonError(f"pid {pid} in {pid_file} does not answer as the daemon; not "
                              "signalling it")
    os.kill(pid, signal.SIGTERM)
    if not _wait_for_exit(pid, timeout):
        log.warning("daemon pid %d ignored SIGTERM for %g s; killing it", pid, timeout)
        os.kill(pid, signal.SIGKILL)
        _wait_for_exit(pid, 5.0)
    record = _read_pid_file(pid_file)
    if record is not None and record["pid"] == pid:  # it was killed before it could clean up
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
    result["stopped"] = True
    return result


def _wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _rotate_log(log_file: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if log_file.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log_file, log_file.with_name(log_file.name + ".1"))


def _log_tail(log_file: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log_file.read_text(encoding="utf-8", errors="replace")
                         .splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# --- serve (foreground) -------------------------------------------------------------------------


def _configure_logging(log_file: Path) -> logging.Handler:
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_log = logging.getLogger("amalfa")
    package_log.addHandler(handler)
    if sys.stderr.isatty():  # started by hand: show the log too (start() sends stderr to the file)
        package_log.addHandler(logging.StreamHandler())
    package_log.setLevel(logging.INFO)
    return handler


def serve(*, port: int | None = None, root: str | Path | None = None,
          model: str | Path | None = None, reranker_model: str | Path | None = None) -> int:
    """Run the daemon in the foreground until SIGTERM or SIGINT; returns the exit code.

    The port is bound first (port 0: a free one, recorded in the pid file), then the models load
    in the background while /health answers ``loading``. If the embedding model fails to load the
    daemon logs why and exits with code 1.
    """
    port = _resolve_port(port)
    folders, pid_file, log_file = _paths(root)
    folders.ensure("runtime", "logs")
    handler = _configure_logging(log_file)
    try:
        embedder = Embedder(model, use_daemon=False)
        if reranker_model is not None:
            from amalfa.reranker import Reranker

            reranker = Reranker(reranker_model)
        else:
            reranker = _optional_reranker()
        server = make_server(port=port, embedder=embedder, reranker=reranker, load=False)
    except (ModelError, OSError) as exc:
        log.error("daemon not started: %s", exc)
        logging.getLogger("amalfa").removeHandler(handler)
        return 1
    stop_requested = threading.Event()
    exit_code = 0

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop_requested.set()

    def load_models() -> None:
        nonlocal exit_code
        try:
            server.service.load()
        except ModelError as exc:
            server.load_error = str(exc)
            log.error("the embedding model failed to load: %s", exc)
            exit_code = 1
            stop_requested.set()
            return
        log.info("ready: %s (%d-d), reranker %s", embedder.model_name, embedder.dimensions,
                 "ready" if server.service.reranker_ready else "absent")

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    serving = threading.Thread(target=server.serve_forever, name="amalfa-daemon-http",
                               kwargs={"poll_interval": 0.2}, daemon=True)
    try:
        _write_pid_file(pid_file, {"pid": os.getpid(), "port": server.port,
                                   "started": time.time(), "model": embedder.model_name})
        log.info("listening on %s:%d (pid %d)", HOST, server.port, os.getpid())
        serving.start()
        threading.Thread(target=load_models, name="amalfa-daemon-load", daemon=True).start()
        while not stop_requested.wait(1.0):  # a timed wait keeps signal delivery prompt
            pass
    finally:
        if serving.is_alive():
            server.shutdown()
        server.server_close()
        _remove_own_pid_file(pid_file)
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
        log.info("stopped")
        logging.getLogger("amalfa").removeHandler(handler)
        handler.close()
    return exit_code


# --- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m amalfa.daemon start|stop|status|serve [--port N] [--root DIR]``."""
    parser = argparse.ArgumentParser(prog="amalfa daemon",
                                     description="The vector daemon: keeps the embedding model "
                                                 "loaded and serves it on 127.0.0.1.")
    parser.add_argument("command", choices=["start", "stop", "status", "serve"],
                        help="start (detached), stop, status, or serve in the foreground")
    parser.add_argument("--port", type=int, default=None,
                        help=f"port on 127.0.0.1 (default: $VECTOR_PORT or {DEFAULT_PORT})")
    parser.add_argument("--root", default=None,
                        help="project folder whose .amalfa/ holds the pid and log files "
                             "(default: the current folder)")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return serve(port=args.port, root=args.root)
        if args.command == "start":
            report = start(port=args.port, root=args.root)
            state = "already running" if report["already_running"] else "started"
            print(f"vector daemon {state}: pid {report['pid']}, port {report['port']}, "
                  f"model {report['model']}")
            return 0
        if args.command == "stop":
            report = stop(root=args.root)
            print(f"vector daemon stopped (pid {report['pid']})" if report["stopped"]
                  else "vector daemon was not running")
            return 0
        report = status(root=args.root)
        print(json.dumps(report, indent=2))
        return 0 if report["running"] else 3  # 3: "not running", as LSB init scripts say
    except (DaemonError, SettingsError, ModelError) as exc:
        print(f"amalfa daemon {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

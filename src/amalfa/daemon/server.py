"""The daemon's HTTP server: the endpoints, their limits and the models behind them.

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
"""

from __future__ import annotations

import json
import logging
import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from amalfa.embedder import DAEMON_MAX_TEXTS, Embedder
from amalfa.errors import ModelError, OutOfRangeError
from amalfa.limits import INT32_MAX, IntRange, check_fraction
from amalfa.text_rules import printable

__all__ = ["HOST", "MAX_BODY_BYTES", "MAX_TEXTS", "REQUEST_TIMEOUT_S", "DaemonServer",
           "VectorService", "make_server"]

log = logging.getLogger("amalfa.daemon")  # one logger for the package: serve() files its lines

# "topK" of /rerank: how many results, 0 (none) up to the library's 32-bit limit
_TOP_K = IntRange(0, INT32_MAX, "results")

HOST = "127.0.0.1"
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_TEXTS = DAEMON_MAX_TEXTS
#: Seconds a connection may sit idle (or dribble a request) before the server drops it.
REQUEST_TIMEOUT_S = 10.0


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


def optional_reranker() -> Any:
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
        self._answered = False
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
        except Exception as exc:  # noqa: BLE001 - every request read gets an answer
            # A bug in a handler (or below it) must not drop the connection: the client gets a
            # JSON 500 naming the error, the log gets the traceback, the connection closes
            # (the body may be unread).
            log.exception("%s %s failed", method, path)
            self.close_connection = True
            if not self._answered:
                self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {
                    "error": f"internal error in {method} {path}: {type(exc).__name__}: "
                             f"{printable(str(exc))}"})

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
        # the precision too: a client of another precision must not mix these vectors in
        answer: dict[str, Any] = {"dimensions": int(vectors.shape[1]),
                                  "model": service.embedder.model_name,
                                  "precision": service.embedder.precision}
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
        try:  # the library's own ranges, named by the JSON field
            if top_k is not None:
                top_k = _TOP_K.check(top_k, '"topK"')
            if threshold is not None:
                threshold = check_fraction(threshold, '"threshold"')
        except (TypeError, OutOfRangeError) as exc:
            raise _RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
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
        self._answered = True
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
            "precision": service.embedder.precision,
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

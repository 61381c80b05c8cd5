"""The vector daemon under load and abuse, as a real process on 127.0.0.1 with the real model.

Eight well-behaved clients send requests for ten seconds (half on keep-alive connections, half
on a new connection each time) while other threads send garbage bytes, truncated bodies, absurd
Content-Lengths, requests dribbled a byte per second and connections that say nothing at all.
Every well-formed request must be answered 200, the daemon must not crash or print a traceback,
and its resident memory (``VmRSS`` from ``/proc/<pid>/status``) must stay bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability_workers import percentile, record_figures, worker_env

pytestmark = [pytest.mark.reliability, pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                 reason="reads the daemon's memory from /proc")]

HOST = "127.0.0.1"  # loopback only, always
CLIENTS = 8
LOAD_SECONDS = 10.0
RSS_LIMIT_MB = 1536
IDLE_CONNECTIONS = 24


class Daemon:
    def __init__(self, process: subprocess.Popen[bytes], port: int, stderr: Path) -> None:
        self.process = process
        self.port = port
        self.stderr = stderr

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS line")

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def stderr_text(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("daemon-root")
    hub = tmp_path_factory.mktemp("empty-hub-cache")  # the embedded model, nothing downloaded
    stderr = root / "stderr.txt"
    with open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "amalfa.daemon", "serve", "--port", "0", "--root", str(root)],
            cwd=root, env=worker_env(HF_HUB_CACHE=str(hub)), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=err)
    pid_file = root / ".amalfa" / "runtime" / "vector-daemon.pid"
    try:
        deadline = time.monotonic() + 120
        port = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                port = json.loads(pid_file.read_text())["port"]
                status, body = _request(port, "GET", "/health", timeout=2)
                if status == 200 and body["ready"]:
                    break
            except (FileNotFoundError, ValueError, OSError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"the daemon did not become ready:\n{stderr.read_text()}")
        yield Daemon(process, port, stderr)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


def _request(port: int, method: str, path: str, body: Any = None, *, timeout: float = 30,
             conn: http.client.HTTPConnection | None = None) -> tuple[int, Any]:
    own = conn is None
    if conn is None:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        return response.status, json.loads(payload)
    finally:
        if own:
            conn.close()


def _raw(port: int, data: bytes, *, read: bool = True, timeout: float = 15) -> bytes:
    """Send raw bytes, half-close, and return whatever the server answers before closing."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server may close first (it answered 400 to a bad request line)
            pass
        if not read:
            return b""
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def _status_of(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1."):
        return None
    return int(answer.split(b" ", 2)[1])


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.hostile: dict[str, int] = {}
        self.hostile_statuses: dict[str, set[Any]] = {}

    def ok(self, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)

    def fail(self, text: str) -> None:
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(text)

    def attack(self, kind: str, status: Any) -> None:
        with self.lock:
            self.hostile[kind] = self.hostile.get(kind, 0) + 1
            self.hostile_statuses.setdefault(kind, set()).add(status)


def _client(port: int, index: int, deadline: float, record: _Recorder) -> None:
    keep_alive = index < CLIENTS // 2
    conn = http.client.HTTPConnection(HOST, port, timeout=60) if keep_alive else None
    n = 0
    while time.monotonic() < deadline:
        if n % 9 == 8:
            method, path, body = "GET", "/health", None
        elif n % 5 == 4:
            method, path = "POST", "/embed"
            body = {"texts": [f"client {index} batch {n} item {k}" for k in range(4)]}
        else:
            method, path = "POST", "/embed"
            body = {"text": f"client {index} asks question number {n} about the graph"}
        began = time.perf_counter()
        try:
            status, answer = _request(port, method, path, body, conn=conn)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            record.fail(f"client {index} request {n}: {type(exc).__name__}: {exc}")
            if conn is not None:
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=60)
        else:
            if status != 200:
                record.fail(f"client {index} request {n}: status {status}: {answer}")
            elif path == "/embed" and len(answer.get("vector") or answer["vectors"][0]) != 384:
                record.fail(f"client {index} request {n}: a vector of the wrong size")
            else:
                record.ok(time.perf_counter() - began)
        n += 1
    if conn is not None:
        conn.close()


def _garbage(port: int, deadline: float, record: _Recorder) -> None:
    rnd = random.Random(1)
    for _ in range(400):  # bounded in count as well as in time
        if time.monotonic() >= deadline:
            return
        kind = rnd.choice(["random bytes", "bad request line", "binary method", "header flood"])
        if kind == "random bytes":
            data = rnd.randbytes(rnd.randint(1, 4096))
        elif kind == "bad request line":
            data = b"GET /health HTTP/9.9\r\n\r\n" if rnd.random() < 0.5 else b"\x16\x03\x01\x02"
        elif kind == "binary method":
            data = rnd.randbytes(8) + b" /embed HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
        else:
            data = b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n"
        record.attack(kind, _status_of(_raw(port, data)))
        time.sleep(0.005)


def _bad_lengths(port: int, deadline: float, record: _Recorder) -> None:
    cases: list[tuple[str, bytes]] = [
        ("huge Content-Length", (b"POST /embed HTTP/1.1\r\nContent-Length: 1000000000000000"
                                 b"\r\n\r\n{\"text\": \"x\"}")),
        ("negative Content-Length", b"POST /embed HTTP/1.1\r\nContent-Length: -5\r\n\r\n{}"),
        ("text Content-Length", b"POST /embed HTTP/1.1\r\nContent-Length: many\r\n\r\n{}"),
        ("no Content-Length", b"POST /embed HTTP/1.1\r\n\r\n{\"text\": \"x\"}"),
        ("chunked body", (b"POST /embed HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"5\r\n{\"a\":\r\n0\r\n\r\n")),
        ("truncated body", b"POST /embed HTTP/1.1\r\nContent-Length: 400\r\n\r\n{\"text\": \"tr"),
        ("truncated headers", b"POST /embed HTTP/1.1\r\nContent-Len"),
        ("malformed JSON", b"POST /embed HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"text\":}"),
        ("not UTF-8", b"POST /embed HTTP/1.1\r\nContent-Length: 4\r\n\r\n\xff\xfe\xfd\xfc"),
        ("wrong types", b"POST /embed HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"text\": [1]}"),
    ]
    round_ = 0
    while time.monotonic() < deadline and round_ < 20:
        for kind, data in cases:
            record.attack(kind, _status_of(_raw(port, data)))
        round_ += 1
        time.sleep(0.05)


def _slow(port: int, index: int, deadline: float, record: _Recorder) -> None:
    """A well-formed request dribbled a byte per second for 8 s, then the rest: answered 200."""
    body = json.dumps({"text": f"slow client {index}"}).encode()
    if index % 2:
        request = (f"POST /embed HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
                   "Connection: close\r\n\r\n").encode() + body
    else:
        request = f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sent = 0
        while sent < 8 and time.monotonic() < deadline + 5:
            sock.sendall(request[sent:sent + 1])
            sent += 1
            time.sleep(1.0)
        sock.sendall(request[sent:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = _status_of(answer)
    if status != 200:
        record.fail(f"slow client {index}: {answer[:200]!r}")
    else:
        record.attack("slow client answered", status)


def _settled_threads(daemon: Daemon, quiet_s: float = 0.5, timeout_s: float = 30) -> int:
    """The daemon's thread count once it has not changed for ``quiet_s``: right after the model
    is ready, the loading thread and the handlers of the readiness probes are still ending."""
    deadline = time.monotonic() + timeout_s
    count, since = daemon.threads(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, "the daemon's threads never settled"
        time.sleep(0.02)
        now = daemon.threads()
        if now != count:
            count, since = now, time.monotonic()
    return count


def _open_idle(daemon: Daemon) -> list[socket.socket]:
    """Connections that will never send a byte, each accepted (a thread) before the load starts.

    Opened one at a time, so each is accepted (and its thread started) before the next; the
    listen backlog of 128 (see test_a_burst_of_connections_is_queued_not_dropped) would also
    queue a burst."""
    threads = _settled_threads(daemon)
    sockets = []
    for _ in range(IDLE_CONNECTIONS):
        sockets.append(socket.create_connection((HOST, daemon.port), timeout=30))
        deadline = time.monotonic() + 30
        while daemon.threads() < threads + len(sockets):
            assert time.monotonic() < deadline, "the daemon did not accept an idle connection"
            time.sleep(0.005)
    return sockets


def _idle(sockets: list[socket.socket], record: _Recorder) -> None:
    """The server must drop connections that say nothing (request timeout 10 s)."""
    try:
        for sock in sockets:
            try:
                closed = sock.recv(1) == b""
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                closed = False
            record.attack("idle connection dropped", closed)
    finally:
        for sock in sockets:
            sock.close()


def _threads(targets: list[Callable[[], None]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    return threads


@pytest.mark.timeout(240)
def test_daemon_under_load_and_abuse(daemon: Daemon, tmp_path_factory, record_property) -> None:
    port = daemon.port
    rss_start = daemon.rss_mb()
    threads_start = daemon.threads()
    record = _Recorder()
    rss: list[tuple[float, float]] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        began = time.monotonic()
        while not stop_sampling.wait(0.25):
            rss.append((time.monotonic() - began, daemon.rss_mb()))

    idle = _open_idle(daemon)
    sampler = _threads([sample])[0]
    deadline = time.monotonic() + LOAD_SECONDS
    workers = _threads(
        [lambda i=i: _client(port, i, deadline, record) for i in range(CLIENTS)]
        + [lambda: _garbage(port, deadline, record), lambda: _bad_lengths(port, deadline, record),
           lambda: _idle(idle, record)]
        + [lambda i=i: _slow(port, i, deadline, record) for i in range(4)])
    for worker in workers:
        worker.join(timeout=LOAD_SECONDS + 90)
    stop_sampling.set()
    sampler.join(timeout=10)
    assert not any(worker.is_alive() for worker in workers), "a client thread hung"

    assert daemon.process.poll() is None, f"the daemon died:\n{daemon.stderr_text()[-3000:]}"
    assert record.failures == [], record.failures[:10]
    status, health = _request(port, "GET", "/health")
    assert status == 200 and health["ready"] and health["pid"] == daemon.pid
    assert "Traceback" not in daemon.stderr_text(), daemon.stderr_text()[-3000:]

    statuses = record.hostile_statuses
    assert statuses["huge Content-Length"] == {413}
    assert statuses["no Content-Length"] == {411} and statuses["chunked body"] == {411}
    assert statuses["negative Content-Length"] == {400} == statuses["text Content-Length"]
    assert statuses["truncated body"] == {400} == statuses["malformed JSON"]
    assert statuses["not UTF-8"] == {400} == statuses["wrong types"]
    assert statuses["idle connection dropped"] == {True}
    assert record.hostile["slow client answered"] == 4
    assert all(code is None or 400 <= code <= 505 for kind in ("random bytes", "binary method")
               for code in statuses.get(kind, ()))

    peak = max(mb for _, mb in rss)
    half = LOAD_SECONDS / 2
    first_half = max((mb for t, mb in rss if t < half), default=rss_start)
    second_half = max((mb for t, mb in rss if t >= half), default=rss_start)
    assert peak < RSS_LIMIT_MB, f"the daemon's RSS reached {peak:.0f} MB"
    # bounded, not creeping: the second half of the load adds little to the first
    assert second_half <= first_half * 1.2 + 64, (first_half, second_half)
    time.sleep(1.0)  # let dropped connections' threads finish
    threads_after = daemon.threads()
    assert threads_after <= threads_start + 4, (threads_start, threads_after)

    answered = len(record.latencies)
    slow = record.hostile["slow client answered"]
    record_figures("daemon", {
        "clients": CLIENTS, "seconds": LOAD_SECONDS,
        "well_formed_requests": answered + slow, "well_formed_answered_200": answered + slow,
        "slow_clients_answered_200": slow,
        "requests_per_second": round(answered / LOAD_SECONDS, 1),
        "latency_p50_ms": round(1000 * percentile(record.latencies, 50), 1),
        "latency_p99_ms": round(1000 * percentile(record.latencies, 99), 1),
        "latency_max_ms": round(1000 * max(record.latencies), 1),
        "hostile_requests": sum(record.hostile.values()),
        "hostile_by_kind": dict(sorted(record.hostile.items())),
        "rss_mb_before": round(rss_start, 1), "rss_mb_peak": round(peak, 1),
        "rss_mb_first_half_peak": round(first_half, 1),
        "rss_mb_second_half_peak": round(second_half, 1),
        "threads_before": threads_start, "threads_after": threads_after,
    }, base=tmp_path_factory.getbasetemp(), record_property=record_property)


@pytest.mark.timeout(120)
def test_a_deeply_nested_body_is_answered_400(daemon: Daemon) -> None:
    body = b"[" * 100_000
    answer = _raw(daemon.port, b"POST /embed HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
                  + body)
    assert daemon.process.poll() is None
    assert _status_of(answer) == 400, answer[:200]


@pytest.mark.timeout(120)
def test_a_burst_of_connections_is_queued_not_dropped() -> None:
    from amalfa.daemon import make_server
    from amalfa.embedder import Embedder

    server = make_server(port=0, embedder=Embedder(use_daemon=False), load=False)
    sockets = []
    try:  # the server is bound and listening but not accepting yet: a busy moment
        for _ in range(64):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex((HOST, server.port))
            sockets.append(sock)
        deadline = time.monotonic() + 3
        pending = set(sockets)
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], list(pending), [], 0.1)
            pending -= set(writable)
        established = sum(1 for sock in sockets if sock not in pending
                          and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
        assert established == 64, f"{established} of 64 connections completed"
    finally:
        for sock in sockets:
            sock.close()
        server.server_close()


@pytest.mark.timeout(120)
def test_daemon_stops_cleanly_after_the_abuse(daemon: Daemon) -> None:
    """Last in the module: SIGTERM ends the daemon with exit code 0 even after all of the above."""
    status, _ = _request(daemon.port, "POST", "/embed", {"text": "still serving"})
    assert status == 200
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=30) == 0

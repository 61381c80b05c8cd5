"""The daemon as a process: its pid and log files, and starting, stopping, serving and asking
after it.

:func:`serve` runs in the foreground: it binds the port, writes ``vector-daemon.pid`` (JSON: pid,
port, model) under the runtime folder, loads the model in the background while ``/health``
answers ``loading``, logs to ``vector-daemon.log`` under the logs folder, and stops cleanly on
SIGTERM or SIGINT. :func:`start` spawns ``python -m amalfa.daemon serve`` (the ``amalfa daemon``
command line) detached and waits until ``/health`` reports ready; :func:`stop` sends SIGTERM and
waits; :func:`status` reports.

The model served is the ``model`` argument, else the project's settings' model (with
``$AMALFA_MODEL_PATH`` / ``$EMBEDDING_MODEL`` still winning, as for every embedder), so a project
with a non-default model gets a daemon whose replies its clients accept. The port is the
argument, else ``$VECTOR_PORT`` (:func:`amalfa.settings.vector_port`), else 3010.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

from amalfa._atomic import atomic_write_text
from amalfa._text import parse_json
from amalfa.daemon.server import HOST, optional_reranker, make_server
from amalfa.embedder import Embedder
from amalfa.errors import DaemonError, ModelError, SettingsError
from amalfa.settings import vector_port

__all__ = ["LOG_FILE_NAME", "PID_FILE_NAME", "describe_status", "serve", "start", "status",
           "stop"]

log = logging.getLogger("amalfa.daemon")

PID_FILE_NAME = "vector-daemon.pid"
LOG_FILE_NAME = "vector-daemon.log"
#: A log file larger than this is moved to ``vector-daemon.log.1`` when the daemon starts.
LOG_ROTATE_BYTES = 5 * 1024 * 1024


def _resolve_port(port: int | None) -> int:
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise SettingsError(f"port must be an integer in 0..65535; got {port!r}")
        return port
    return vector_port()


def _paths(root: str | Path | None) -> tuple[Any, Path, Path]:
    from amalfa.settings import get_folders

    folders = get_folders(root)
    return folders, folders.runtime / PID_FILE_NAME, folders.logs / LOG_FILE_NAME


def _read_pid_file(pid_file: Path) -> dict[str, Any] | None:
    """The pid file's record, or None when absent or unreadable (a half-written file)."""
    try:
        record = parse_json(pid_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, unreadable, not UTF-8 or not JSON
        return None
    if not (isinstance(record, dict) and isinstance(record.get("pid"), int)
            and isinstance(record.get("port"), int)):
        return None
    return record


def _write_pid_file(pid_file: Path, record: dict[str, Any]) -> None:
    atomic_write_text(pid_file, json.dumps(record))  # readers never see a half-written file


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
    """Whether ``pid`` runs the daemon (``python -m amalfa.daemon ...`` or ``amalfa daemon
    ...``); None where /proc cannot tell."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None if not Path("/proc/self").exists() else False
    except OSError:
        return None
    return b"amalfa.daemon" in cmdline or b"amalfa\0daemon\0" in cmdline


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
          model: str | Path | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Start the daemon detached and wait until it is ready; returns :func:`status` plus
    ``already_running`` and ``removed_stale_pid_file``.

    ``port``: default ``$VECTOR_PORT`` or 3010; 0 picks a free port. ``model``: default the
    settings' model of ``root`` (see :func:`serve`). A daemon already running for ``root`` is
    left alone (``model`` then says what it serves). Raises DaemonError when the new process exits or is not ready in
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
    if model is not None:
        command += ["--model", str(model)]
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


def _embedder(model: str | Path | None, root: str | Path | None) -> Embedder:
    if model is not None:
        return Embedder(model, use_daemon=False)
    from amalfa._model_choice import embedder_for
    from amalfa.settings import load_settings

    return embedder_for(load_settings(root=root))  # VectorService turns its daemon use off


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

    ``model``: a model name or folder; default the settings' model of ``root`` (the settings
    file found from there, or ``$AMALFA_SETTINGS``), through the same choice every embedder
    makes, so clients of this project accept the daemon's replies.

    The port is bound first (port 0: a free one, recorded in the pid file), then the models load
    in the background while /health answers ``loading``. If the embedding model fails to load the
    daemon logs why and exits with code 1.
    """
    port = _resolve_port(port)
    folders, pid_file, log_file = _paths(root)
    folders.ensure("runtime", "logs")
    handler = _configure_logging(log_file)
    try:
        embedder = _embedder(model, root)
        if reranker_model is not None:
            from amalfa.reranker import Reranker

            reranker = Reranker(reranker_model)
        else:
            reranker = optional_reranker()
        server = make_server(port=port, embedder=embedder, reranker=reranker, load=False)
    except (ModelError, SettingsError, OSError) as exc:
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

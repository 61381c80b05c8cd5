"""The vector daemon: a loopback HTTP server that keeps the embedding model loaded.

Two modules: :mod:`amalfa.daemon.server` (the endpoints, their limits, the models behind them)
and :mod:`amalfa.daemon.process` (pid and log files; start, stop, status, serve in the
foreground). Its command line is ``amalfa daemon start|stop|status|serve`` (the one amalfa
command line, :mod:`amalfa.cli.daemon`); ``python -m amalfa.daemon ARGS`` is the same command,
kept because :func:`start` spawns the daemon that way and a process list then names it.
"""

from __future__ import annotations

from collections.abc import Sequence

from amalfa.daemon.process import (
    LOG_FILE_NAME,
    PID_FILE_NAME,
    describe_status,
    serve,
    start,
    status,
    stop,
)
from amalfa.daemon.server import (
    HOST,
    MAX_BODY_BYTES,
    MAX_TEXTS,
    REQUEST_TIMEOUT_S,
    DaemonServer,
    VectorService,
    make_server,
)
from amalfa.errors import DaemonError
from amalfa.settings import DEFAULT_VECTOR_PORT as DEFAULT_PORT

__all__ = [
    "DEFAULT_PORT",
    "HOST",
    "LOG_FILE_NAME",
    "MAX_BODY_BYTES",
    "MAX_TEXTS",
    "PID_FILE_NAME",
    "REQUEST_TIMEOUT_S",
    "DaemonError",
    "DaemonServer",
    "VectorService",
    "describe_status",
    "main",
    "make_server",
    "serve",
    "start",
    "status",
    "stop",
]


def main(argv: Sequence[str] | None = None) -> int:
    """``amalfa daemon ARGS`` (``python -m amalfa.daemon ARGS``); returns the exit status."""
    import sys

    from amalfa.cli import main as amalfa_main

    return amalfa_main(["daemon", *(sys.argv[1:] if argv is None else argv)])

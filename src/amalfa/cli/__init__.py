"""The ``amalfa`` command line (also ``python -m amalfa``): the entry point and the parser.

This package only parses, calls the library and prints. :func:`main` builds the parser, runs
the chosen command and turns errors into the exit statuses below; everything a command does
lives in the library (``amalfa.db``, ``amalfa.doctor``, ``amalfa.stats`` ...).

How a command registers itself
------------------------------
Every public module of this package (a name without a leading underscore) is a *command module*,
found by :func:`build_parser` without being listed anywhere. It defines::

    ORDER = 50  # where its commands appear in `amalfa --help` (smaller first)

    def register(commands: Commands) -> None:
        sub = commands.add("read", "print one node", "A longer description ...", cmd_read)
        sub.add_argument("id", metavar="ID", help="the node id")

    def cmd_read(ctx: Context) -> int:
        with ctx.open_db(readonly=True) as db:
            ...
        return EXIT_OK

``commands.add`` (see :class:`amalfa.cli._parsing.Commands`) gives the new parser the common
options (``--db``, ``--settings``, ``--json``) and a handler; ``commands.group(...)`` adds a
command with actions below it (as ``daemon start``). Handlers take a
:class:`~amalfa.cli._context.Context` (lazy settings, database and embedder, ``print`` and
``emit_json``) and return an exit status. Import heavy modules (numpy, onnxruntime, the compiled
core, ``amalfa.db``) inside the handler, never at the top of a command module: ``amalfa --help``
imports every command module and must stay quick. Raise :class:`~amalfa.errors.CommandError`
(message, ``hint=``, ``status=``) for a mistake the user can fix; give any new exception class a
hint in :mod:`amalfa.cli._errors`. Document the command in ``docs/reference/cli.md`` (a test
checks every command's help text and its section there).

Shared pieces: ``_parsing`` (the parser class, argument types, :class:`Commands`), ``_context``
(:class:`Context`), ``_output`` (tables, pairs, paths, the progress bar) and ``_errors`` (exit
statuses and the hint for each error class).

Output: readable tables on stdout for people, or one JSON document on stdout with ``--json``;
warnings, progress and errors go to stderr, so stdout stays machine-readable.

Errors and exit status:

* ``0`` success; ``1`` an error the user can fix (no database yet, bad settings, unknown id,
  a failed validation or health check); ``2`` a command line that does not parse; ``130``
  interrupted (Ctrl-C); ``70`` a bug in amalfa.
* A user error prints exactly two lines on stderr, ``amalfa: error: ...`` and ``hint: ...``, and
  never a traceback: :class:`~amalfa.errors.AmalfaError`, ``ValueError`` and ``OSError`` are
  reported that way.
* Anything else is a bug: one ``amalfa: internal error: ...`` line and a hint. Set
  ``AMALFA_DEBUG=1`` to let every exception, user errors included, end in its full traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from collections.abc import Sequence

from amalfa import __version__
from amalfa.cli._context import Context
from amalfa.cli._errors import (
    DEBUG_ENV_VAR,
    EXIT_BUG,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    describe,
    print_error,
    show_warning,
)
from amalfa.cli._output import one_line
from amalfa.cli._parsing import Commands, Parser, common_options
from amalfa.errors import AmalfaError, CommandError

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "CommandError", "Commands", "Context",
           "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors end here
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = os.environ.get(DEBUG_ENV_VAR, "").strip() not in ("", "0")
    ctx = Context(args)
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        try:
            status: int = args.handler(ctx)
            return status
        except BrokenPipeError:
            # The reader went away (`amalfa search x | head -1`): not an error worth a message.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_ERROR
        except KeyboardInterrupt:
            if debug:
                raise
            print_error("interrupted", ctx.interrupt_hint)
            return EXIT_INTERRUPTED
        except (AmalfaError, ValueError, OSError) as exc:
            if debug:
                raise
            message, hint, code = describe(exc)
            print_error(message, hint)
            return code
        except Exception as exc:
            if debug:
                raise
            print_error(f"internal error: {type(exc).__name__}: {one_line(str(exc))}",
                        f"this is a bug in amalfa; rerun with {DEBUG_ENV_VAR}=1 to see the "
                        "traceback and report it")
            return EXIT_BUG


def command_modules() -> list[str]:
    """The names of this package's command modules, in ``--help`` order."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.append((getattr(module, "ORDER", 100), info.name))
    return [name for _, name in sorted(found)]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line. Every command and subcommand has a help line and a description."""
    parser = Parser(
        prog="amalfa",
        description="amalfa: ingest a folder of Markdown into a local knowledge graph (SQLite, "
                    "FAFCAS vectors, ONNX embeddings) and search it by meaning.",
        epilog="Start with `amalfa init docs` and `amalfa search \"a question\"`. "
               "Each command has its own --help.",
        parents=[common_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"amalfa {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND",
                                       required=True, parser_class=Parser)
    commands = Commands(subparsers)
    for name in command_modules():
        importlib.import_module(f"{__name__}.{name}").register(commands)
    return parser

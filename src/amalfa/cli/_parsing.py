"""The parser class, the argument types and :class:`Commands`, through which command modules add
their commands (see the package docstring)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from amalfa.cli._errors import EXIT_USAGE, print_error
from amalfa.limits import PORT, RESULTS

if TYPE_CHECKING:
    from amalfa.cli._context import Context

Handler = Callable[["Context"], int]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line plus a hint, like every other error."""

    def error(self, message: str) -> NoReturn:
        print_error(message, f"run `{self.prog} --help` for usage")
        raise SystemExit(EXIT_USAGE)


# Argument types: a whole number in its range (amalfa.limits), checked at parse time so that no
# number reaches C unchecked; a bad one is a usage error stating the range.
#: A count of results or items, 1 to 2**31 - 1.
positive_int = RESULTS.argparse()
#: A TCP port to listen on, 0 to 65535 (0: the system picks a free one).
listen_port = PORT.argparse()


def common_options(*, suppress: bool) -> argparse.ArgumentParser:
    """--db, --settings and --json, accepted before and after the command name.

    The copies on the subcommands default to SUPPRESS, so an option given before the command is
    not reset by the subcommand's default.
    """
    default: Any = argparse.SUPPRESS if suppress else None
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument("--db", metavar="PATH", default=default,
                       help="the database file (default: the settings' database, "
                            ".amalfa/runtime/resonance.db)")
    group.add_argument("--settings", metavar="PATH", default=default,
                       help="the settings file (default: $AMALFA_SETTINGS, else "
                            "./amalfa.settings.json when present)")
    group.add_argument("--json", action="store_true",
                       default=argparse.SUPPRESS if suppress else False,
                       help="print JSON for machines instead of tables")
    return common


class Commands:
    """Adds commands (or the actions of a command group) to the parser, each with the common
    options, a help line, a description and its handler."""

    def __init__(self, subparsers: Any) -> None:
        self._subparsers = subparsers
        self._common = [common_options(suppress=True)]

    def add(self, name: str, help_text: str, description: str,
            handler: Handler) -> argparse.ArgumentParser:
        """A command ``amalfa NAME`` run by ``handler``; returns its parser for arguments."""
        sub: argparse.ArgumentParser = self._subparsers.add_parser(
            name, help=help_text, description=description, parents=self._common)
        sub.set_defaults(handler=handler)
        return sub

    def group(self, name: str, help_text: str, description: str, *, dest: str) -> Commands:
        """A command with actions below it (``amalfa NAME ACTION``); the chosen action's name is
        stored in ``args.<dest>``. Add the actions with the returned object's :meth:`add`."""
        parent = self.add(name, help_text, description, _choose_an_action)
        actions = parent.add_subparsers(title=f"{name} commands", dest=dest, metavar="ACTION",
                                        required=True, parser_class=Parser)
        return Commands(actions)


def _choose_an_action(ctx: Context) -> int:  # pragma: no cover - argparse requires an action
    from amalfa.errors import CommandError

    raise CommandError("choose an action", hint=f"run `amalfa {ctx.args.command} --help`",
                       status=EXIT_USAGE)

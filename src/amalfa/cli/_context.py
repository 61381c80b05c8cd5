"""The :class:`Context` every command handler works in: the parsed arguments, the settings, the
database and the embedder, each loaded only when a command asks for it, plus the two ways of
printing (text for people, one JSON document for machines)."""

from __future__ import annotations

import argparse
import json
import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amalfa._text import one_line, show_path
from amalfa.cli._errors import HINT_INIT
from amalfa.errors import CommandError

if TYPE_CHECKING:
    from amalfa.db import ResonanceDB
    from amalfa.embedder import Embedder
    from amalfa.settings import Settings


class Context:
    """Lazily loaded settings, database path and embedder, plus output helpers."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json: bool = bool(getattr(args, "json", False))
        self.out = sys.stdout
        #: A hint printed when Ctrl-C interrupts the command (set while it matters).
        self.interrupt_hint: str | None = None

    @cached_property
    def settings(self) -> Settings:
        from amalfa.settings import load_settings

        return load_settings(getattr(self.args, "settings", None))

    @property
    def settings_file(self) -> str | None:
        """The settings file given with --settings, if any."""
        value = getattr(self.args, "settings", None)
        return str(value) if value else None

    @property
    def db_path(self) -> Path:
        given = getattr(self.args, "db", None)
        return Path(given).expanduser().absolute() if given else self.settings.database_path

    def open_db(self, *, readonly: bool = False) -> ResonanceDB:
        """The existing database; a missing one is a user error with the `amalfa init` hint."""
        from amalfa.db import ResonanceDB
        from amalfa.errors import ReadOnlyError

        path = self.db_path
        if not path.is_file():
            raise CommandError(f"no database at {show_path(path)}", hint=HINT_INIT)
        try:
            return ResonanceDB(path, readonly=readonly)
        except ReadOnlyError as exc:  # an older schema: reading commands do not migrate
            if not readonly:
                raise
            raise CommandError(one_line(str(exc)).split(";")[0],
                               hint="run `amalfa checkpoint` (or `amalfa init`) once to migrate "
                                    "it; a backup is taken first") from None

    def embedder(self) -> Embedder:
        """The settings' embedder, for writing (``init``): ``Embedder.for_settings``."""
        from amalfa._model_choice import embedder_for

        return embedder_for(self.settings)

    def embedder_for(self, db: ResonanceDB) -> Embedder:
        """The embedder for querying ``db``: the model and precision it recorded win (vectors of
        two models must never be compared), else the settings' model."""
        from amalfa._model_choice import embedder_for_database

        return embedder_for_database(self.settings, db)

    def emit_json(self, value: Any) -> None:
        json.dump(value, self.out, indent=2, ensure_ascii=False, default=str)
        self.out.write("\n")

    def print(self, text: str = "") -> None:
        print(text, file=self.out)


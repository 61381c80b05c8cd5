"""Which embedding model a database is read with: the one it recorded, else the settings' one.

Vectors of two models must never be compared, even when their dimensions agree, so a database
that recorded the model (and precision) its embeddings came from is always queried with that
model; the settings' model (``Embedder.for_settings``: ``embeddings.model`` unless
``$AMALFA_MODEL_PATH`` or ``$EMBEDDING_MODEL`` chooses) serves databases that recorded none,
ingest and the daemon. The command line, the doctor, the watcher and the MCP server all choose
here, so they cannot disagree. When the recorded model cannot be found the embedder raises
:class:`~amalfa.errors.ModelError` naming it and how to get it: never a quiet switch to another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amalfa.db import ResonanceDB
    from amalfa.embedder import Embedder
    from amalfa.settings import Settings

__all__ = ["embedder_for", "embedder_for_database"]


def embedder_for(settings: Settings, recorded: str | None = None,
                 precision: str | None = None) -> Embedder:
    """The embedder for a database that recorded ``recorded`` (and ``precision``) when given,
    else for the settings' model. Finds (and checks) the files; loads nothing."""
    from amalfa.embedder import DEFAULT_PRECISION, Embedder

    if recorded:
        return Embedder(recorded, precision=precision or DEFAULT_PRECISION)
    return Embedder.for_settings(settings)


def embedder_for_database(settings: Settings, db: ResonanceDB) -> Embedder:
    """The embedder for querying ``db``: its recorded model and precision, else the settings'."""
    from amalfa.embedder import Embedder

    return Embedder.for_database(db, settings)

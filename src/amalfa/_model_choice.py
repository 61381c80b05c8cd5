"""Which embedding model a database is read with: the one it recorded, else the settings' one.

Vectors of two models must never be compared, even when their dimensions agree, so a database
that recorded the model its embeddings came from is always queried with that model; the
settings' model (through ``Embedder.for_settings``) serves only databases that recorded none,
and ingest. The command line and the doctor both choose here, so they cannot disagree.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amalfa.embedder import Embedder
    from amalfa.settings import Settings

__all__ = ["embedder_for"]


def embedder_for(settings: Settings, recorded: str | None = None) -> Embedder:
    """The embedder for ``recorded`` when given, else for the settings' model. Finds (and
    checks) the files; loads nothing. Raises :class:`~amalfa.errors.ModelError` when the model
    cannot be found, naming how to get it."""
    from amalfa.embedder import Embedder

    if recorded:
        return Embedder(recorded)
    for_settings = getattr(Embedder, "for_settings", None)
    if for_settings is not None:
        chosen: Embedder = for_settings(settings)
        return chosen
    # Until Embedder.for_settings exists: the environment's choice, else the settings' model.
    if os.environ.get("AMALFA_MODEL_PATH", "").strip() or \
            os.environ.get("EMBEDDING_MODEL", "").strip():
        return Embedder()
    return Embedder(settings.embeddings.model)

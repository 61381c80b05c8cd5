"""IngestWarning: what every step of ingestion says when it skips a file or reads one leniently.

Ingestion never stops for one bad file: a file too large, unreadable, with an unusable name or
with front matter that does not parse gives this warning (its message names the file and the
reason) and the run goes on. It is a warning, not an error, so it lives with ingestion rather
than in :mod:`amalfa.errors`, which holds the exceptions the package raises.
"""

from __future__ import annotations

__all__ = ["IngestWarning"]


class IngestWarning(UserWarning):
    """A file was skipped or read leniently; ingestion went on. The message names the file."""

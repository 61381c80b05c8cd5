"""Node ids from file paths, by the original system's rules (ids must match across both systems,
so none of its quirks is "improved")."""

from __future__ import annotations

import os
import re

__all__ = ["generate_id"]

_ID_PREFIX = re.compile(r"^\.*/")
_ID_EXTENSION = re.compile(r"\.(?:md|ts|js|json)\Z")  # \Z: JavaScript's $, not Python's
_ID_INVALID = re.compile(r"[^a-z0-9/]")
_ID_SLASHES = re.compile(r"/+")
_ID_DASHES = re.compile(r"-+")


def generate_id(path: str | os.PathLike[str]) -> str:
    """The node id of a file path, by the original system's rules: ``"./Docs/My File.md"`` ->
    ``"docs-my-file"``.

    Strip a leading ``./`` or ``/`` (the original's ``^\\.*/``, which also takes ``../``), drop a
    final ``.md``/``.ts``/``.js``/``.json`` (case-sensitive), lowercase, turn every character
    outside ``[a-z0-9/]`` into ``-``, slashes into ``-``, collapse runs of ``-`` and trim one from
    each end. Ids must match across both systems, so none of this is "improved".

    Raises ValueError for a path that is not a str (or os.PathLike of one) and for a path that
    leaves an empty id (no letters or digits).
    """
    if not isinstance(path, str):
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str):
            # ValueError, not TypeError: the contract other modules catch (see the docstring)
            raise ValueError(  # noqa: TRY004
                f"generate_id needs a path string, got {type(path).__name__}")
    value = _ID_PREFIX.sub("", path, count=1)
    value = _ID_EXTENSION.sub("", value, count=1).lower()
    value = _ID_INVALID.sub("-", value)
    value = _ID_SLASHES.sub("-", value)
    value = _ID_DASHES.sub("-", value)
    value = value.removeprefix("-")
    value = value.removesuffix("-")
    if not value:
        raise ValueError(f"generate_id({path!r}) is empty: the path has no letters or digits")
    return value

"""What text amalfa accepts: one rule per kind of input, decided here and nowhere else.

(How amalfa *writes* values as text, sizes and timestamps, is :mod:`amalfa._text`.)

A Python ``str`` can hold one thing that no UTF-8 file, SQLite column, JSON document or tokenizer
can: a *lone surrogate* (a code point in U+D800..U+DFFF). They arrive from ``surrogateescape``
(how POSIX command-line arguments and file names that are not UTF-8 are decoded), from JSON's
``"\\ud800"`` escapes (valid JSON, see RFC 8259 section 8.2), and from UTF-16 data cut in the
middle of a pair. Everything else a ``str`` holds, NUL, the byte order mark U+FEFF and the
noncharacters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF) included, is a Unicode scalar value: it encodes
to UTF-8, SQLite stores it by length (a NUL does not end an SQLite string bound with its length),
JSON escapes it and the tokenizer's normaliser deals with it. So the rules are about surrogates,
plus NUL where the operating system is the reader:

========================  ==================================================================
kind of input             rule
========================  ==================================================================
text for a model          **made valid** (:func:`for_model`), ``errors="replace"`` semantics:
(``Embedder.embed``, the  each lone surrogate becomes U+FFFD REPLACEMENT CHARACTER, one per
daemon's ``/embed`` and   surrogate; a high and a low surrogate written as two code units are
``/rerank``, search and   joined into the character they encode. Nothing is stored, so nothing
FTS queries, the MCP      is lost, and a query never fails because of one bad character.
server's queries)
stored graph text (ids,   **stored exactly or refused** (:func:`check_storable`): NUL, BOM and
types, labels, domains,   noncharacters round-trip exactly; a lone surrogate is refused with
summaries, hashes, meta,  :class:`~amalfa.errors.InvalidTextError` naming the field, the
and lookups and filters   position and the code point. Storing a substitute would change the
on them)                  caller's data behind their back and file it under an id they do not
                          hold; a lookup with text that cannot be stored cannot match anything
                          and is a mistake worth saying so.
paths (``--db``, files    **left to the operating system** (:func:`check_path`): surrogates
to ingest)                from ``surrogateescape`` are how non-UTF-8 file names arrive and
                          ``os.fsencode`` turns them back into the same bytes; a NUL is refused
                          (no file system accepts one).
output (CLI, logs, JSON)  **shown, never a crash** (:func:`printable`): a lone surrogate is
                          written as its backslash escape (``\\udcff``), so echoing back what a
                          user typed cannot raise UnicodeEncodeError on a UTF-8 terminal.
========================  ==================================================================

Settings keys are names the settings schema lists; an unknown key (whatever characters it
holds) is refused by :mod:`amalfa.settings` with its ``repr``, which escapes surrogates.

Checks cost one ``str.isascii()`` (a flag CPython keeps on every string) on the common path and a
regular-expression search over the string otherwise; nothing is copied unless it must change.
"""

from __future__ import annotations

import json
import re
from typing import Any

from amalfa.errors import InputError, InvalidTextError

__all__ = [
    "REPLACEMENT_CHARACTER",
    "check_path",
    "check_storable",
    "first_surrogate",
    "for_model",
    "for_model_all",
    "json_for_model",
    "printable",
]

REPLACEMENT_CHARACTER = "\ufffd"

_SURROGATE = re.compile("[\ud800-\udfff]")


def first_surrogate(text: str) -> int | None:
    """The index of the first lone surrogate in ``text`` (None when there is none)."""
    if text.isascii():
        return None
    match = _SURROGATE.search(text)
    return None if match is None else match.start()


def _describe(text: str, position: int) -> str:
    code = ord(text[position])
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: how Python carries a byte that is not UTF-8
        return (f"character {position} is U+{code:04X}, the byte 0x{code - 0xDC00:02X} of text "
                "that is not UTF-8 (a lone surrogate, which UTF-8 cannot encode)")
    half = "high (first)" if code < 0xDC00 else "low (second)"
    return (f"character {position} is U+{code:04X}, a lone {half} half of a UTF-16 surrogate "
            "pair, which UTF-8 cannot encode")


def _require_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def for_model(text: Any, *, what: str = "text") -> str:
    """``text`` made valid for a model or a query: each lone surrogate becomes U+FFFD.

    A surrogate pair written as two code units (``"\\ud83d\\ude00"``) becomes the one character
    it encodes. The same string comes back when there is nothing to replace. Raises TypeError
    (naming ``what``) for anything but a str.
    """
    text = _require_str(text, what)
    if first_surrogate(text) is None:
        return text
    # UTF-16 is the one codec in which a surrogate is a code unit: written out with
    # surrogatepass and read back with replace, pairs join and each lone half becomes U+FFFD.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def for_model_all(texts: Any, *, what: str = "texts") -> list[str]:
    """:func:`for_model` over a sequence of texts (a list back; ``what[i]`` names a bad item)."""
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a sequence of str, not a single str")
    return [for_model(text, what=f"{what}[{i}]") for i, text in enumerate(texts)]


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _strings_for_model(value: Any) -> Any:
    if isinstance(value, str):
        return for_model(value)
    if isinstance(value, list):
        return [_strings_for_model(item) for item in value]
    if isinstance(value, dict):
        return {for_model(key): _strings_for_model(item) for key, item in value.items()}
    return value


def json_for_model(document: str) -> str:
    """A JSON document with :func:`for_model` applied to every string in it, keys included.

    For protocol layers whose JSON parser refuses a ``"\\ud800"`` escape outright (pydantic's,
    under the MCP SDK, drops such a request without an answer): the document is parsed with
    the standard library (which accepts lone surrogates), made valid and written again. A
    document with no surrogate escape, or one that is not JSON, comes back unchanged, so the
    protocol layer still reports its own parse errors.
    """
    if _SURROGATE_ESCAPE.search(document) is None:
        return document
    try:
        return json.dumps(_strings_for_model(json.loads(document)), ensure_ascii=False)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the interpreter goes
        return document


def check_storable(text: Any, *, what: str) -> str:
    """``text`` unchanged when SQLite can store it exactly; InvalidTextError otherwise.

    The message names ``what`` (``"node 'a': label"``), the position and the code point of the
    first lone surrogate. Raises TypeError for anything but a str.
    """
    text = _require_str(text, what)
    position = first_surrogate(text)
    if position is not None:
        raise InvalidTextError(f"{what}: {_describe(text, position)}; SQLite cannot store it, "
                               "nor match it with stored text (decode the text with "
                               "errors='replace', or leave the character out)", text, position)
    return text


def check_path(path: Any, *, what: str = "path", utf8: bool = False) -> Any:
    """``path`` unchanged unless it holds a NUL, which no file system accepts (InputError).

    ``bytes`` and ``os.PathLike`` values are checked through their ``os.fspath`` form; lone
    surrogates pass (they are ``surrogateescape``'s way of carrying non-UTF-8 file name bytes)
    unless ``utf8``: SQLite takes file names as UTF-8, so a database path must be one.
    """
    import os

    raw = os.fspath(path)
    nul = "\x00" if isinstance(raw, str) else b"\x00"
    position = raw.find(nul)
    if position >= 0:
        raise InputError(f"{what}: character {position} is NUL (U+0000); no file system accepts "
                         f"it in a file name: {os.fsdecode(raw)!r}")
    if utf8 and isinstance(raw, str):
        position = first_surrogate(raw)
        if position is not None:
            raise InputError(f"{what}: {_describe(raw, position)}; SQLite opens files by UTF-8 "
                             f"names only (rename the file or a folder above it): {raw!r}")
    return path


def printable(text: str) -> str:
    """``text`` safe to write to any UTF-8 stream: lone surrogates as backslash escapes."""
    if first_surrogate(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


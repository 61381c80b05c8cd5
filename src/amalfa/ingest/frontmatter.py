"""Front matter: the ``---`` block at the top of a Markdown file, read with PyYAML's strict side.

Front matter comes from files nobody vetted, so the loader is built to be boring:

* **Safe types only.** Mappings, lists, strings, ints, floats, booleans and null. Any explicit
  tag (``!!python/...``, ``!!binary``, ``!!set``, ``!custom``) is refused.
* **No anchors or aliases.** An alias bomb (``a: &a [x, x]``, ``b: &b [*a, *a]`` ... ) expands
  to billions of nodes from a few hundred bytes; refusing ``&`` and ``*`` outright means no
  document can make the loader hang or eat memory.
* **YAML 1.2 core scalars, dates kept as strings.** ``yes``/``no``/``on``/``off`` stay strings,
  ``007`` stays a string (no octal surprises), ``2024-01-05`` stays the string the author wrote,
  and a float that overflows (``1e999``) stays text so ``meta`` remains valid JSON.
* **Keys are text as written.** ``1: x`` gives the key ``"1"``; a key that is a list or a
  mapping is refused (``meta`` is a JSON object).

Front matter that cannot be read is not fatal: :func:`parse_front_matter` gives ``({}, text)``
and an :class:`~amalfa.errors.IngestWarning`-style warning naming the file, the line and what
was expected, so one bad file never stops an ingest.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from amalfa.errors import FrontMatterError
from amalfa.ingest.notices import IngestWarning

__all__ = ["parse_front_matter", "load_front_matter", "normalise_text"]

_STR = "tag:yaml.org,2002:str"
_ALLOWED_TAGS = frozenset({
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map", "!",
})


class _CoreResolver(BaseResolver):
    """YAML 1.2 core schema for plain scalars, with decimal ints only and no timestamps."""


_CoreResolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_CoreResolver.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))
_CoreResolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?[0-9]+[eE][-+]?[0-9]+)$"),
    list("-+0123456789."))
_CoreResolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])


class _StrictConstructor(SafeConstructor):
    """SafeConstructor limited to JSON-shaped values; keys are kept as their source text."""

    def construct_yaml_float(self, node: ScalarNode) -> Any:
        value = float(node.value)
        return value if math.isfinite(value) else node.value

    def construct_yaml_int(self, node: ScalarNode) -> Any:
        return int(node.value)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[str, Any]:
        if not isinstance(node, MappingNode):  # pragma: no cover - the composer guarantees it
            raise yaml.constructor.ConstructorError(
                None, None, "expected a mapping", node.start_mark)
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    "a key must be plain text, not a list or a mapping", key_node.start_mark)
            mapping[key_node.value] = self.construct_object(value_node, deep=deep)
        return mapping


_StrictConstructor.add_constructor("tag:yaml.org,2002:float",
                                   _StrictConstructor.construct_yaml_float)
_StrictConstructor.add_constructor("tag:yaml.org,2002:int", _StrictConstructor.construct_yaml_int)
_StrictConstructor.add_constructor("tag:yaml.org,2002:map", _StrictConstructor.construct_yaml_map)


class _StrictLoader(Reader, Scanner, Parser, Composer, _StrictConstructor, _CoreResolver):
    """PyYAML's pure-Python pipeline with a composer that refuses anchors, aliases and tags."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _StrictConstructor.__init__(self)
        _CoreResolver.__init__(self)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed", event.start_mark)
        if event.anchor is not None:
            raise yaml.composer.ComposerError(
                None, None, f"anchors (&{event.anchor}) are not allowed", event.start_mark)
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _ALLOWED_TAGS:
            raise yaml.composer.ComposerError(
                None, None, f"the tag {tag!r} is not allowed (plain values only)",
                event.start_mark)
        return super().compose_node(parent, index)


# PyYAML's wording for the common mistakes, said in the words of someone writing front matter.
_PLAIN_PROBLEMS = (
    ("found character '\\t' that cannot start any token", "tabs are not allowed for indentation"),
    ("mapping values are not allowed here",
     "a ': ' inside a plain value (quote the value)"),
    ("expected <block end>, but found '-'", "a list item where a 'key: value' line was expected"),
    ("expected <block end>", "unexpected indentation or text after a value; "
                             "expected the next 'key: value' line"),
    ("found unexpected end of stream", "unterminated quoted string"),
    ("expected ',' or ']'", "unclosed '[' (expected ',' or ']')"),
    ("expected ',' or '}'", "unclosed '{' (expected ',' or '}')"),
    ("expected the node content, but found ','", "an empty entry in an inline collection"),
    ("found unknown escape character", "unknown escape in a double-quoted string"),
)


def _describe(exc: yaml.YAMLError, first_line: int) -> FrontMatterError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = first_line + (mark.line if mark is not None else 0)
    problem = str(getattr(exc, "problem", None) or exc)
    for raw, plain in _PLAIN_PROBLEMS:
        if problem.startswith(raw):
            problem = f"{plain}: {problem}" if raw.startswith("found unknown") else plain
            break
    context = getattr(exc, "context", None)
    if context and problem.startswith("expected"):
        problem = f"{problem} ({context})"
    error = FrontMatterError(f"line {line}: {problem}")
    error.line = line  # type: ignore[attr-defined]
    return error


def load_front_matter(block: str, *, first_line: int = 2) -> dict[str, Any]:
    """The fields of a front-matter block (the text between the ``---`` lines).

    ``first_line`` is the 1-based line of the block's first line in the file, for messages.
    Raises :class:`~amalfa.errors.FrontMatterError` (its ``line`` set) for YAML that does not
    parse, uses anchors, aliases or tags, or is not a mapping.
    """
    loader = _StrictLoader(block)
    try:
        value = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise _describe(exc, first_line) from None
    except RecursionError:
        raise _error("nesting too deep", first_line) from None
    finally:
        loader.dispose()
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _error("front matter must be a mapping of 'key: value' lines", first_line)
    return value


def _error(message: str, line: int) -> FrontMatterError:
    error = FrontMatterError(f"line {line}: {message}")
    error.line = line  # type: ignore[attr-defined]
    return error


def normalise_text(text: str) -> str:
    """Text without a BOM and with ``\\n`` line ends (CRLF and lone CR converted)."""
    text = text.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def parse_front_matter(text: str, *, source: str | None = None) -> tuple[dict[str, Any], str]:
    """Split a leading ``---`` front-matter block from ``text``: ``(fields, body)``.

    The block must start on the first line (a BOM is ignored) and end with a ``---`` or ``...``
    line. When the block is unclosed or cannot be read (see the module docstring), ``({}, text)``
    comes back and an :class:`~amalfa.errors.IngestWarning` names ``source`` and the line, so the
    file is still ingested, its front matter read as body text.
    """
    fields, body, _ = split_front_matter(text, source=source)
    return fields, body


def split_front_matter(text: str, *, source: str | None = None,
                       ) -> tuple[dict[str, Any], str, int]:
    """:func:`parse_front_matter` plus the number of file lines before the body."""
    text = normalise_text(text)
    lines = text.split("\n")
    if not lines or lines[0].rstrip() != "---":
        return {}, text, 0
    label = source or "<text>"
    for end in range(1, len(lines)):
        if lines[end].rstrip() in ("---", "..."):
            break
    else:
        warnings.warn(f"{label}: front matter has no closing '---'; it is read as body text",
                      IngestWarning, stacklevel=3)
        return {}, text, 0
    try:
        fields = load_front_matter("\n".join(lines[1:end]), first_line=2)
    except FrontMatterError as exc:
        warnings.warn(f"{label}: malformed front matter ({exc}); it is read as body text",
                      IngestWarning, stacklevel=3)
        return {}, text, 0
    return fields, "\n".join(lines[end + 1:]), end + 1

"""Checking values before they are written, and turning rows back into records.

Ids, text fields, meta and embeddings are checked (and embeddings normalised) before the first
statement runs, so a bad value raises and leaves the database as it was. The checks of the write
path (:func:`node_head`, :func:`bulk_params`) test the common case first with ``type(x) is``
comparisons and only fall back to the slower, message-building checks when that fails: they run
once per node of every bulk insert.
"""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from amalfa.db.records import DEFAULT_DOMAIN, DEFAULT_LAYER, Node
from amalfa.errors import DatabaseError, InvalidTextError
from amalfa.fafcas import to_fafcas
from amalfa.limits import IntRange
from amalfa.text_rules import check_storable, first_surrogate

_Method = TypeVar("_Method", bound=Callable[..., Any])
#: LIMIT and OFFSET values: SQLite's 64-bit integers, never negative.
SQL_COUNT = IntRange(0, 2**63 - 1, "rows")

_F32 = np.dtype(np.float32)
_NUMERIC_KINDS = frozenset("biuf")

_META_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def bad_id(value: Any, field_name: str = "id") -> None:
    if not isinstance(value, str):
        # a ValueError like the empty id: "not a usable id", whatever the reason
        raise ValueError(  # noqa: TRY004
            f"{field_name} must be a non-empty str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{field_name} must be a non-empty str, got ''")


def check_text(value: Any, field_name: str, node_id: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"node {node_id!r}: {field_name} must be a str or None, "
                        f"not {type(value).__name__}")


def date_text(value: Any, node_id: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, _dt.date):  # datetime is a date too
        return value.isoformat()
    raise TypeError(f"node {node_id!r}: date must be a str, a datetime.date or None, "
                    f"not {type(value).__name__}")


def dump_meta(meta: Any, node_id: str) -> str | None:
    """The stored form of ``meta``: compact JSON, or NULL for an empty dict."""
    if not isinstance(meta, Mapping):
        raise TypeError(f"node {node_id!r}: meta must be a dict, not {type(meta).__name__}")
    if not meta:
        return None
    try:
        return _META_ENCODER.encode(meta if isinstance(meta, dict) else dict(meta))
    except (TypeError, ValueError) as exc:  # ValueError: NaN/inf, circular references
        raise TypeError(f"node {node_id!r}: meta is not JSON-serialisable: {exc}") from None


def node_head(node: Any) -> tuple[Any, ...]:
    """Every bound value of a node but the embedding, validated; the hot path of writes."""
    if type(node) is not Node and not isinstance(node, Node):
        raise TypeError(f"expected a Node, got {type(node).__name__}")
    node_id = node.id
    if type(node_id) is not str or not node_id:
        bad_id(node_id)
    kind = node.type
    if type(kind) is not str or not kind:
        if not isinstance(kind, str):
            check_text(kind, "type", node_id)
        elif not kind:
            raise ValueError(f"node {node_id!r}: type must be a non-empty str")
    label = node.label
    if label is not None and type(label) is not str:
        check_text(label, "label", node_id)
    # the original's `node.domain || "knowledge"`: an empty domain or layer means the default
    domain = node.domain or DEFAULT_DOMAIN
    if type(domain) is not str:
        check_text(domain, "domain", node_id)
    layer = node.layer or DEFAULT_LAYER
    if type(layer) is not str:
        check_text(layer, "layer", node_id)
    summary = node.summary
    if summary is not None and type(summary) is not str:
        check_text(summary, "summary", node_id)
    digest = node.hash
    if digest is not None and type(digest) is not str:
        check_text(digest, "hash", node_id)
    date = node.date
    if date is not None and type(date) is not str:
        date = date_text(date, node_id)
    meta = node.meta
    if meta is None or (type(meta) is dict and not meta):
        meta_json = None  # empty meta is stored as NULL: no encoding on the common path
    else:
        meta_json = dump_meta(meta, node_id)
    return (node_id, kind, label, domain, layer, summary, digest, meta_json, date)


def embedding_array(value: Any, node_id: str, dimensions: int | None) -> npt.NDArray[np.float32]:
    """``value`` as a 1-D finite float32 array of the right dimension (maybe sharing memory)."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as exc:  # ragged nesting and the like
            raise ValueError(f"node {node_id!r}: embedding is not a 1-D array of numbers: "
                             f"{exc}") from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"node {node_id!r}: embedding must hold numbers, not {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"node {node_id!r}: embedding must be 1-D; got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"node {node_id!r}: embedding is empty")
    if dimensions is not None and arr.shape[0] != dimensions:
        raise ValueError(f"node {node_id!r}: embedding has dimension {arr.shape[0]}; "
                         f"this database holds {dimensions}-d embeddings")
    if arr.dtype != _F32:
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: caught next
            arr = arr.astype(_F32)
    if not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "inf"
        raise ValueError(f"node {node_id!r}: embedding holds {bad} (or values too large for "
                         "float32); embeddings must be finite")
    return arr


def check_number(value: Any, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{field_name} must be a real number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{field_name} must be finite, got {number}")
    return number


_SQL_TYPE_NAMES = {str: "TEXT", int: "INTEGER", float: "REAL"}


def node_from_row(row: tuple[Any, ...]) -> Node:
    node_id, kind, title, domain, layer, summary, blob, digest, meta, date = row
    if blob is not None:
        if not isinstance(blob, bytes):  # another client stored TEXT, INTEGER or REAL there
            raise DatabaseError(f"node {node_id!r}: its embedding is stored as "
                                f"{_SQL_TYPE_NAMES.get(type(blob), type(blob).__name__)}, "
                                "not a BLOB of float32 values")
        try:
            blob = np.frombuffer(blob, _F32)
        except ValueError:
            raise DatabaseError(f"node {node_id!r}: its embedding BLOB of {len(blob)} bytes is "
                                "not a whole number of float32 values") from None
    return Node(node_id, kind, title, domain, layer, summary, blob, digest,
                load_json(meta, node_id, "meta") if meta else {}, date)


def load_json(text: Any, node_id: str, field_name: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise DatabaseError(f"node {node_id!r}: stored {field_name} is not valid JSON: "
                            f"{exc}") from None
    except RecursionError:  # json raises it, not a ValueError, for too deep nesting
        raise DatabaseError(f"node {node_id!r}: stored {field_name} is not valid JSON: "
                            "nested too deeply") from None


def bulk_params(chunk: list[Node], dimensions: int | None
                 ) -> tuple[list[tuple[Any, ...]], int | None]:
    """The bindings of a chunk of nodes: validated, embeddings normalised as one matrix."""
    heads: list[tuple[Any, ...]] = []
    with_vectors: list[int] = []
    vectors: list[Any] = []
    for node in chunk:
        head = node_head(node)
        value = node.embedding
        if value is not None:
            if not (type(value) is np.ndarray and value.ndim == 1 and value.dtype is _F32
                    and value.shape[0] == dimensions):
                # the slow path checks shape, type and dimension and names the node
                value = embedding_array(value, head[0], dimensions)
                dimensions = value.shape[0]
            with_vectors.append(len(heads))
            vectors.append(value)
        heads.append(head)
    if not vectors:
        return [head + (None,) for head in heads], dimensions
    # one copy of the chunk's vectors, normalised in place: numpy's per-call overhead is
    # paid per chunk, not per node
    assert dimensions is not None  # set by the first vector
    matrix = np.concatenate(vectors).reshape(len(vectors), dimensions)
    try:
        to_fafcas(matrix, inplace=True)  # checks finiteness before touching anything
    except ValueError:
        bad = int(np.argmin(np.isfinite(matrix).all(axis=1)))
        embedding_array(matrix[bad], heads[with_vectors[bad]][0], dimensions)  # raises
        raise
    if len(with_vectors) == len(heads):
        return [head + (row,) for head, row in zip(heads, matrix)], dimensions
    params = [head + (None,) for head in heads]
    for index, row in zip(with_vectors, matrix):
        params[index] = heads[index] + (row,)
    return params, dimensions


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def check_count(value: Any, field_name: str) -> int:
    """A LIMIT or OFFSET: an integer in 0..2**63 - 1 (SQLite's integers), or an error naming
    the range (never an OverflowError from the binding)."""
    return SQL_COUNT.check(value, field_name)


def refuses_unstorable_text(method: _Method) -> _Method:
    """Turn the binding's bare UnicodeEncodeError (a lone surrogate in a bound str) into an
    :class:`~amalfa.errors.InvalidTextError` naming the argument (and the node's field).

    Nothing is checked on the way in: the binding finds the character anyway, before a
    statement runs, so the happy path costs nothing and the error names what it was.
    """
    signature = inspect.signature(method)

    @functools.wraps(method)
    def named(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except InvalidTextError:
            raise
        except UnicodeEncodeError as exc:
            try:
                arguments = signature.bind(self, *args, **kwargs).arguments
            except TypeError:
                arguments = {}
            raise unstorable_text(exc, arguments) from None

    return named  # type: ignore[return-value]


def _node_fields(node: Node) -> Iterator[tuple[str, Any]]:
    prefix = f"node {node.id!r}: " if isinstance(node.id, str) else "node: "
    for name in ("id", "type", "label", "domain", "layer", "summary", "hash", "date"):
        yield prefix + name, getattr(node, name)
    if isinstance(node.meta, Mapping):
        for key, value in node.meta.items():
            yield prefix + "meta key", key
            yield prefix + f"meta[{key!r}]", value


def _text_fields(name: str, value: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(where, text) for every str inside an argument: nodes by field, lists by index."""
    if isinstance(value, str):
        yield name, value
    elif isinstance(value, Node):
        yield from _node_fields(value)
    elif isinstance(value, Mapping) and depth < 3:
        for key, item in value.items():
            yield f"{name} key", key
            yield from _text_fields(f"{name}[{key!r}]", item, depth + 1)
    elif isinstance(value, (list, tuple)) and depth < 3:  # never a generator: it is used up
        for index, item in enumerate(value):
            yield from _text_fields(f"{name}[{index}]", item, depth + 1)


def unstorable_text(exc: UnicodeEncodeError, arguments: Mapping[str, Any]) -> InvalidTextError:
    """The InvalidTextError for the first text among ``arguments`` SQLite cannot store."""
    for name, value in arguments.items():
        if name == "self":
            continue
        for where, text in _text_fields(name, value):
            if isinstance(text, str) and first_surrogate(text) is not None:
                try:
                    check_storable(text, what=where)
                except InvalidTextError as refused:
                    return refused
    text = exc.object if isinstance(exc.object, str) else "\ud800"
    start = exc.start if 0 <= exc.start < len(text) else 0
    try:
        check_storable(text[start:start + 1], what="a bound text")
    except InvalidTextError as refused:
        return InvalidTextError(str(refused).replace("character 0", f"character {start}"),
                                text, start)
    return InvalidTextError(f"a bound text cannot be encoded: {exc.reason}", text, start)


def check_edge_key(source: Any, target: Any, type: Any) -> None:
    for value, field_name in ((source, "source"), (target, "target"), (type, "type")):
        if value.__class__ is not str or not value:
            bad_id(value, field_name)

"""ResonanceDB: the knowledge graph's nodes and edges in SQLite, with an audit history.

The tables are the original system's (``nodes``, ``edges``, ``ember_state``, ``history``), kept in
step by :mod:`amalfa.migrations`. Every method runs on a prepared statement from the connection's
cache (the SQL lives in module constants, so the cache key is always the same string), binds its
filters as parameters and binds embeddings as raw FAFCAS bytes without a copy.

Why things are the way they are:

- **Validation before writing.** Ids, text fields, meta and embeddings are checked (and
  embeddings normalised) before the first statement runs, so a bad value raises and leaves the
  database as it was. Bulk inserts run in one transaction that rolls back on the first bad node.
- **History by temporary triggers.** With ``history=True`` (the default) the connection creates
  ``TEMP`` triggers on ``nodes`` and ``edges`` that write the audit rows inside SQLite, in the
  same statement as the change they describe: a node upsert and its history row cannot be
  separated, and logging costs no Python work per row. Being temporary, the triggers belong to
  this connection only: ``history=False`` really turns logging off, and other programs writing the
  file are not affected.
- **Transactions start with BEGIN IMMEDIATE**, taking the write lock up front: a transaction that
  read first and wrote later could fail with SQLITE_BUSY when upgrading its lock, which the busy
  timeout cannot retry. Nested :meth:`ResonanceDB.transaction` blocks become SAVEPOINTs.
- **Upserts keep the row** (``ON CONFLICT DO UPDATE``) rather than ``INSERT OR REPLACE``, which
  would delete it, fire delete triggers and change its rowid under the vector cache.
- **The WAL is bounded after each commit.** SQLite's automatic checkpoints are PASSIVE: with
  readers in back-to-back read transactions the log never gets a moment to restart and grows
  without limit (~40 KB per small transaction). So after every commit this class performs, when
  the ``-wal`` file is over :data:`WAL_LIMIT_BYTES`, it checkpoints and resets the log, waiting
  at most :data:`WAL_CHECKPOINT_TIMEOUT_MS` for readers (and trying again after the next commit
  when they do not leave in time).
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from amalfa import migrations
from amalfa._core.connection import Connection
from amalfa.db.graph import GraphQueries
from amalfa.db.vector_store import VectorStore
from amalfa.errors import (
    BusyError,
    CantOpenError,
    DatabaseError,
    LockedError,
    MisuseError,
)
from amalfa.factory import BUSY_TIMEOUT_MS, DatabaseFactory
from amalfa.fafcas import to_fafcas

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_EDGE_TYPE",
    "DEFAULT_LAYER",
    "DatabaseNotFoundError",
    "DatabaseStats",
    "Edge",
    "HistoryEntry",
    "Node",
    "ResonanceDB",
    "generate_id",
]

DEFAULT_DOMAIN = "knowledge"
DEFAULT_LAYER = "experience"
DEFAULT_EDGE_TYPE = "related_to"

# How many nodes insert_nodes validates and normalises at a time: big enough that numpy's
# per-call overhead vanishes, small enough that the stacked embeddings stay in cache.
BULK_CHUNK = 512
# a -wal file larger than this is checkpointed and reset after the next commit
WAL_LIMIT_BYTES = 64 * 2**20
# how long that checkpoint waits for readers to leave the log (short: a commit is waiting)
WAL_CHECKPOINT_TIMEOUT_MS = 100
#: after a checkpoint that readers blocked, the WAL may grow this much before the next attempt
WAL_RETRY_GROWTH_BYTES = 2 * 2**20

_F32 = np.dtype(np.float32)
_NUMERIC_KINDS = frozenset("biuf")
_DIMENSIONS_KEY = "embedding_dimensions"

# -- SQL -----------------------------------------------------------------------------------------

# Node columns in the order of Node's fields, so a row maps onto Node positionally.
_NODE_COLUMNS = "id, type, title, domain, layer, summary, embedding, hash, meta, date"
_NODE_COLUMNS_NO_EMBEDDING = "id, type, title, domain, layer, summary, NULL, hash, meta, date"

# The embedding is the last parameter so a validated head tuple + (vector,) is the whole binding.
_UPSERT_NODE = (
    "INSERT INTO nodes (id, type, title, domain, layer, summary, hash, meta, date, embedding) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET type = excluded.type, title = excluded.title, "
    "domain = excluded.domain, layer = excluded.layer, summary = excluded.summary, "
    "hash = excluded.hash, meta = excluded.meta, date = excluded.date, "
    "embedding = excluded.embedding"
)
_SELECT_NODE = f"SELECT {_NODE_COLUMNS} FROM nodes WHERE id = ?"
_SELECT_NODE_HASH = "SELECT hash FROM nodes WHERE id = ?"
_SELECT_META = "SELECT meta FROM nodes WHERE id = ?"
_UPDATE_META = "UPDATE nodes SET meta = ? WHERE id = ?"
_UPDATE_DATE = "UPDATE nodes SET date = ? WHERE id = ?"
_DELETE_NODE = "DELETE FROM nodes WHERE id = ?"
_DELETE_EDGES_FROM = "DELETE FROM edges WHERE source = ?"
_DELETE_EDGES_TO = "DELETE FROM edges WHERE target = ?"
_SELECT_LEXICON = (
    "SELECT id, title, meta, summary FROM nodes WHERE domain = ? AND type = ? ORDER BY rowid"
)

_INSERT_EDGE = "INSERT OR IGNORE INTO edges (source, target, type) VALUES (?, ?, ?)"
_UPSERT_SEMANTIC_EDGE = (
    "INSERT INTO edges (source, target, type, confidence, veracity, context_source) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (source, target, type) DO UPDATE SET confidence = excluded.confidence, "
    "veracity = excluded.veracity, context_source = excluded.context_source"
)
_EDGE_COLUMNS = "source, target, type, confidence, veracity, context_source"
_SELECT_EDGES_OUT = f"SELECT {_EDGE_COLUMNS} FROM edges WHERE source = ?"
_SELECT_EDGES_IN = f"SELECT {_EDGE_COLUMNS} FROM edges WHERE target = ?"
_SELECT_EDGES_BOTH = (
    f"SELECT {_EDGE_COLUMNS} FROM edges WHERE source = ?1 "
    f"UNION ALL SELECT {_EDGE_COLUMNS} FROM edges WHERE target = ?1 AND source <> ?1"
)

_COUNT_NODES = (
    "SELECT count(*), count(embedding), coalesce(sum(meta LIKE '%semantic_tokens%'), 0) FROM nodes"
)
_COUNT_EDGES = "SELECT count(*) FROM edges"

_GET_META = "SELECT value FROM amalfa_meta WHERE key = ?"
_HAS_META_TABLE = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'amalfa_meta'"
_INSERT_META_IF_ABSENT = "INSERT OR IGNORE INTO amalfa_meta (key, value) VALUES (?, ?)"
_FIRST_EMBEDDING_LENGTH = (
    "SELECT length(embedding) FROM nodes WHERE embedding IS NOT NULL ORDER BY rowid LIMIT 1"
)


def _get_nodes_sql(by_domain: bool, by_type: bool, exclude_content: bool) -> str:
    columns = _NODE_COLUMNS_NO_EMBEDDING if exclude_content else _NODE_COLUMNS
    where = [clause for clause, wanted in (("domain = ?", by_domain), ("type = ?", by_type))
             if wanted]
    sql = f"SELECT {columns} FROM nodes"
    if where:
        sql += " WHERE " + " AND ".join(where)
    # LIMIT -1 means no limit, so one statement serves every limit/offset combination
    return sql + " ORDER BY rowid LIMIT ? OFFSET ?"


# Every get_nodes variant, built once: the statement cache sees a fixed set of strings.
_GET_NODES_SQL = {
    (d, t, x): _get_nodes_sql(d, t, x)
    for d in (False, True) for t in (False, True) for x in (False, True)
}


def _history_sql(by_id: bool, by_type: bool) -> str:
    where = [clause for clause, wanted in (("entity_id = ?", by_id), ("entity_type = ?", by_type))
             if wanted]
    sql = ("SELECT id, entity_type, entity_id, action, old_value, new_value, timestamp "
           "FROM history")
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " ORDER BY id LIMIT ?"


_GET_HISTORY_SQL = {(i, t): _history_sql(i, t) for i in (False, True) for t in (False, True)}


def _node_json_sql(row: str) -> str:
    """A node's JSON form in SQL (no embedding); ``row`` is NEW or OLD inside a trigger."""
    return (
        f"json_object('id', {row}.id, 'type', {row}.type, 'label', {row}.title, "
        f"'domain', {row}.domain, 'layer', {row}.layer, 'summary', {row}.summary, "
        f"'hash', {row}.hash, "
        # meta is embedded as JSON when it parses; text written by other tools stays a string
        f"'meta', CASE WHEN json_valid({row}.meta) THEN json({row}.meta) ELSE {row}.meta END, "
        f"'date', {row}.date)"
    )


def _edge_json_sql(row: str) -> str:
    return (
        f"json_object('source', {row}.source, 'target', {row}.target, 'type', {row}.type, "
        f"'confidence', {row}.confidence, 'veracity', {row}.veracity, "
        f"'context_source', {row}.context_source)"
    )


def _history_trigger(name: str, event: str, table: str, entity: str, action: str,
                     entity_id: str, old: str, new: str) -> str:
    return (
        f"CREATE TEMP TRIGGER IF NOT EXISTS {name} AFTER {event} ON main.{table} BEGIN "
        "INSERT INTO history (entity_type, entity_id, action, old_value, new_value) "
        f"VALUES ('{entity}', {entity_id}, '{action}', {old}, {new}); END"
    )


# The edge id is the original system's: "<source>-<target>-<type>".
_EDGE_ID_NEW = "NEW.source || '-' || NEW.target || '-' || NEW.type"
_EDGE_ID_OLD = "OLD.source || '-' || OLD.target || '-' || OLD.type"
_HISTORY_TRIGGERS: tuple[tuple[str, str], ...] = tuple(
    (name, _history_trigger(name, *spec)) for name, spec in (
        ("amalfa_history_node_insert",
         ("INSERT", "nodes", "node", "insert", "NEW.id", "NULL", _node_json_sql("NEW"))),
        ("amalfa_history_node_update",
         ("UPDATE", "nodes", "node", "update", "NEW.id", _node_json_sql("OLD"),
          _node_json_sql("NEW"))),
        ("amalfa_history_node_delete",
         ("DELETE", "nodes", "node", "delete", "OLD.id", _node_json_sql("OLD"), "NULL")),
        ("amalfa_history_edge_insert",
         ("INSERT", "edges", "edge", "insert", _EDGE_ID_NEW, "NULL", _edge_json_sql("NEW"))),
        ("amalfa_history_edge_update",
         ("UPDATE", "edges", "edge", "update", _EDGE_ID_NEW, _edge_json_sql("OLD"),
          _edge_json_sql("NEW"))),
        ("amalfa_history_edge_delete",
         ("DELETE", "edges", "edge", "delete", _EDGE_ID_OLD, _edge_json_sql("OLD"), "NULL")),
    )
)

# -- ids ----------------------------------------------------------------------------------------

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


# -- records -------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False, repr=False)
class Node:
    """A node of the graph, with the original system's fields and defaults.

    ``label`` is stored in the ``title`` column. ``embedding`` comes back from the database as a
    read-only float32 array viewing the stored bytes (FAFCAS: unit length, or all zeros).
    ``meta`` is a JSON object; an empty one is stored as NULL and read back as ``{}``.
    """

    id: str
    type: str
    label: str | None = None
    domain: str = DEFAULT_DOMAIN
    layer: str = DEFAULT_LAYER
    summary: str | None = None
    embedding: npt.NDArray[np.float32] | None = None
    hash: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    date: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The node's JSON form, as history stores it (every field but the embedding)."""
        return {"id": self.id, "type": self.type, "label": self.label, "domain": self.domain,
                "layer": self.layer, "summary": self.summary, "hash": self.hash,
                "meta": self.meta, "date": self.date}

    def __eq__(self, other: object) -> bool:
        # the generated __eq__ would compare embeddings with ==, which is ambiguous for arrays
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Node)
        if self.to_dict() != other.to_dict():
            return False
        if self.embedding is None or other.embedding is None:
            return self.embedding is None and other.embedding is None
        return bool(np.array_equal(self.embedding, other.embedding))

    __hash__ = None  # type: ignore[assignment]  # mutable record with an array inside

    def __repr__(self) -> str:
        embedding = ("None" if self.embedding is None
                     else f"<{self.embedding.dtype} array, shape {self.embedding.shape}>")
        return (f"Node(id={self.id!r}, type={self.type!r}, label={self.label!r}, "
                f"domain={self.domain!r}, layer={self.layer!r}, summary={self.summary!r}, "
                f"embedding={embedding}, hash={self.hash!r}, meta={self.meta!r}, "
                f"date={self.date!r})")


@dataclass(frozen=True, slots=True)
class Edge:
    """A typed, directed edge. ``confidence`` and ``veracity`` default to 1 as in the schema."""

    source: str
    target: str
    type: str = DEFAULT_EDGE_TYPE
    confidence: float | None = 1.0
    veracity: float | None = 1.0
    context_source: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One audit row. ``old_value``/``new_value`` are the parsed JSON (None when absent)."""

    id: int
    entity_type: str
    entity_id: str
    action: str
    old_value: Any
    new_value: Any
    timestamp: str | None


@dataclass(frozen=True, slots=True)
class DatabaseStats:
    """Counts and size, with the original ``getStats()`` meanings.

    ``vectors`` counts nodes with an embedding. ``semantic_tokens`` counts nodes whose meta
    mentions ``semantic_tokens`` (the original's ``meta LIKE '%semantic_tokens%'``).
    ``db_size_bytes`` is page_count x page_size plus the current ``-wal`` file, so it does not
    drop when a checkpoint moves pages from the log into the file.
    """

    nodes: int
    edges: int
    vectors: int
    semantic_tokens: int
    db_size_bytes: int

    @property
    def embeddings(self) -> int:
        """The same as ``vectors`` (the name StatsTracker's snapshots use)."""
        return self.vectors

    @property
    def db_size_mb(self) -> float:
        return self.db_size_bytes / (1024 * 1024)

    def to_dict(self) -> dict[str, int]:
        return {"nodes": self.nodes, "edges": self.edges, "vectors": self.vectors,
                "semantic_tokens": self.semantic_tokens, "db_size_bytes": self.db_size_bytes}

    def __getitem__(self, key: str) -> int:
        """``stats["nodes"]``, for callers written against the original's plain object."""
        return self.to_dict()[key]


class DatabaseNotFoundError(CantOpenError, FileNotFoundError):
    """The database file does not exist and creating it was not asked for.

    Both a CantOpenError (amalfa's hierarchy) and a FileNotFoundError, so either ``except``
    catches it; ``filename`` holds the path.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        target = os.fspath(path)
        message = (f"no database at {target}; use ResonanceDB.create(path) or "
                   "ResonanceDB(path, create=True) to make a new one")
        CantOpenError.__init__(self, message, 14, 14)
        self.errno = errno.ENOENT
        self.strerror = message
        self.filename = target

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.filename,))


# -- validation -----------------------------------------------------------------------------------

_META_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _bad_id(value: Any, field_name: str = "id") -> None:
    if not isinstance(value, str):
        # a ValueError like the empty id: "not a usable id", whatever the reason
        raise ValueError(  # noqa: TRY004
            f"{field_name} must be a non-empty str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{field_name} must be a non-empty str, got ''")


def _check_text(value: Any, field_name: str, node_id: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"node {node_id!r}: {field_name} must be a str or None, "
                        f"not {type(value).__name__}")


def _date_text(value: Any, node_id: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, _dt.date):  # datetime is a date too
        return value.isoformat()
    raise TypeError(f"node {node_id!r}: date must be a str, a datetime.date or None, "
                    f"not {type(value).__name__}")


def _dump_meta(meta: Any, node_id: str) -> str | None:
    """The stored form of ``meta``: compact JSON, or NULL for an empty dict."""
    if not isinstance(meta, Mapping):
        raise TypeError(f"node {node_id!r}: meta must be a dict, not {type(meta).__name__}")
    if not meta:
        return None
    try:
        return _META_ENCODER.encode(meta if isinstance(meta, dict) else dict(meta))
    except (TypeError, ValueError) as exc:  # ValueError: NaN/inf, circular references
        raise TypeError(f"node {node_id!r}: meta is not JSON-serialisable: {exc}") from None


def _node_head(node: Any) -> tuple[Any, ...]:
    """Every bound value of a node but the embedding, validated; the hot path of writes."""
    if type(node) is not Node and not isinstance(node, Node):
        raise TypeError(f"expected a Node, got {type(node).__name__}")
    node_id = node.id
    if type(node_id) is not str or not node_id:
        _bad_id(node_id)
    kind = node.type
    if type(kind) is not str or not kind:
        if not isinstance(kind, str):
            _check_text(kind, "type", node_id)
        elif not kind:
            raise ValueError(f"node {node_id!r}: type must be a non-empty str")
    label = node.label
    if label is not None and type(label) is not str:
        _check_text(label, "label", node_id)
    # the original's `node.domain || "knowledge"`: an empty domain or layer means the default
    domain = node.domain or DEFAULT_DOMAIN
    if type(domain) is not str:
        _check_text(domain, "domain", node_id)
    layer = node.layer or DEFAULT_LAYER
    if type(layer) is not str:
        _check_text(layer, "layer", node_id)
    summary = node.summary
    if summary is not None and type(summary) is not str:
        _check_text(summary, "summary", node_id)
    digest = node.hash
    if digest is not None and type(digest) is not str:
        _check_text(digest, "hash", node_id)
    date = node.date
    if date is not None and type(date) is not str:
        date = _date_text(date, node_id)
    meta = node.meta
    if meta is None or (type(meta) is dict and not meta):
        meta_json = None  # empty meta is stored as NULL: no encoding on the common path
    else:
        meta_json = _dump_meta(meta, node_id)
    return (node_id, kind, label, domain, layer, summary, digest, meta_json, date)


def _embedding_array(value: Any, node_id: str, dimensions: int | None) -> npt.NDArray[np.float32]:
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


def _check_number(value: Any, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{field_name} must be a real number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{field_name} must be finite, got {number}")
    return number


_SQL_TYPE_NAMES = {str: "TEXT", int: "INTEGER", float: "REAL"}


def _node_from_row(row: tuple[Any, ...]) -> Node:
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
                _load_json(meta, node_id, "meta") if meta else {}, date)


def _load_json(text: Any, node_id: str, field_name: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise DatabaseError(f"node {node_id!r}: stored {field_name} is not valid JSON: "
                            f"{exc}") from None
    except RecursionError:  # json raises it, not a ValueError, for too deep nesting
        raise DatabaseError(f"node {node_id!r}: stored {field_name} is not valid JSON: "
                            "nested too deeply") from None


def _bulk_params(chunk: list[Node], dimensions: int | None
                 ) -> tuple[list[tuple[Any, ...]], int | None]:
    """The bindings of a chunk of nodes: validated, embeddings normalised as one matrix."""
    heads: list[tuple[Any, ...]] = []
    with_vectors: list[int] = []
    vectors: list[Any] = []
    for node in chunk:
        head = _node_head(node)
        value = node.embedding
        if value is not None:
            if not (type(value) is np.ndarray and value.ndim == 1 and value.dtype is _F32
                    and value.shape[0] == dimensions):
                # the slow path checks shape, type and dimension and names the node
                value = _embedding_array(value, head[0], dimensions)
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
        _embedding_array(matrix[bad], heads[with_vectors[bad]][0], dimensions)  # raises
        raise
    if len(with_vectors) == len(heads):
        return [head + (row,) for head, row in zip(heads, matrix)], dimensions
    params = [head + (None,) for head in heads]
    for index, row in zip(with_vectors, matrix):
        params[index] = heads[index] + (row,)
    return params, dimensions


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


# -- the database ---------------------------------------------------------------------------------


class ResonanceDB(GraphQueries, VectorStore):
    """The graph database: typed CRUD on nodes and edges, transactions, audit history.

    ``ResonanceDB(path)`` opens an existing database (a missing file raises
    :class:`DatabaseNotFoundError`, which is both a CantOpenError and a FileNotFoundError);
    ``ResonanceDB.create(path)`` or ``create=True`` makes it, folders included. Opening applies
    pending migrations (see :mod:`amalfa.migrations`; ``backup_dir`` overrides where the backup
    taken first goes). ``readonly=True`` opens without writing anything, and needs a current
    schema. ``dimensions`` is the embedding dimension expected (from settings); it must agree with
    the one the database has recorded, and is recorded when none is. ``history=False`` turns the
    audit trail off for this connection.

    One instance wraps one connection; use it from one thread at a time.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False,
                 readonly: bool = False, dimensions: int | None = None, history: bool = True,
                 backup_dir: str | os.PathLike[str] | None = None) -> None:
        if create and readonly:
            raise ValueError("create=True and readonly=True contradict each other")
        if dimensions is not None and (isinstance(dimensions, bool)
                                       or not isinstance(dimensions, int) or dimensions <= 0):
            raise ValueError(f"dimensions must be a positive int, got {dimensions!r}")
        target = os.fspath(path)
        in_memory = target in (":memory:", "")
        if not in_memory and not create and not Path(target).exists():
            raise DatabaseNotFoundError(target)
        self._path = Path(target)
        self._readonly = readonly
        self._savepoints = 0
        self._history = False
        self._conn = _connect(target, create=create and not in_memory, readonly=readonly)
        # absolute (a later chdir does not move it); None: nothing to bound
        self._wal_file = (None if in_memory or readonly
                          else f"{self._conn.filename}-wal")
        self._wal_retry_at = 0  # WAL size that must be passed before a blocked checkpoint retries
        try:
            where = "in memory" if in_memory else f"at {target}"
            if readonly:
                state = migrations.check_readonly(self._conn, where=where)
                self._migration = migrations.MigrationReport(state.version, state.version)
            else:
                self._migration = migrations.migrate(
                    self._conn, db_path=None if in_memory else target, backup_dir=backup_dir)
            self._dimensions, self._dimensions_recorded = self._load_dimensions()
            if dimensions is not None:
                self._adopt_dimensions(dimensions)
            if history and not readonly:
                self.history_enabled = True
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def create(cls, path: str | os.PathLike[str], **options: Any) -> ResonanceDB:
        """Open ``path``, creating the database (and its folders) when missing."""
        return cls(path, create=True, **options)

    # -- properties -----------------------------------------------------------------------------

    @property
    def raw(self) -> Connection:
        """The underlying :class:`amalfa._core.connection.Connection`."""
        return self._conn

    @property
    def path(self) -> Path:
        return self._path

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def closed(self) -> bool:
        return self._conn.closed

    @property
    def dimensions(self) -> int | None:
        """The embedding dimension of this database (None until known)."""
        return self._dimensions

    @property
    def migration_report(self) -> migrations.MigrationReport:
        """What opening did to the schema: versions, migrations applied, adoption, backup."""
        return self._migration

    @property
    def history_enabled(self) -> bool:
        """Whether this connection writes audit rows. Settable: False drops the triggers."""
        return self._history

    @history_enabled.setter
    def history_enabled(self, enabled: bool) -> None:
        if enabled and self._readonly:
            raise MisuseError("a read-only database writes no history")
        for name, create_sql in _HISTORY_TRIGGERS:
            self._conn.execute(create_sql if enabled else f"DROP TRIGGER IF EXISTS temp.{name}")
        self._history = bool(enabled)

    # -- embedding dimension ------------------------------------------------------------------

    def _load_dimensions(self) -> tuple[int | None, bool]:
        # a read-only adopted database may have no amalfa_meta table yet
        has_meta = self._conn.prepare(_HAS_META_TABLE).first() is not None
        row = self._conn.prepare(_GET_META).first((_DIMENSIONS_KEY,)) if has_meta else None
        if row is not None and row[0] is not None:
            return int(row[0]), True
        # not recorded (an adopted or pre-recording database): infer from the stored vectors
        row = self._conn.prepare(_FIRST_EMBEDDING_LENGTH).first()
        if row is not None and row[0] and row[0] % 4 == 0:
            return row[0] // 4, False
        return None, False

    def _adopt_dimensions(self, dimensions: int) -> None:
        if self._dimensions is not None and self._dimensions != dimensions:
            raise ValueError(f"dimensions={dimensions} given, but the database at {self._path} "
                             f"holds {self._dimensions}-d embeddings")
        self._dimensions = dimensions
        if not self._readonly and not self._dimensions_recorded:
            self.record_dimensions(dimensions)

    def record_dimensions(self, dimensions: int) -> None:
        """Record the embedding dimension (once); ValueError if a different one is recorded.

        Called by the first write of an embedding; callers that write embeddings through
        :attr:`raw` call it themselves.
        """
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions <= 0:
            raise ValueError(f"dimensions must be a positive int, got {dimensions!r}")
        with self.transaction():
            self._record_dimensions_in_transaction(dimensions, None)
        self._dimensions, self._dimensions_recorded = dimensions, True

    def _record_dimensions_in_transaction(self, dimensions: int, node_id: str | None) -> None:
        # INSERT OR IGNORE then read back: whichever process wrote first wins, the other learns
        self._conn.prepare(_INSERT_META_IF_ABSENT).run((_DIMENSIONS_KEY, dimensions))
        (stored,) = self._conn.prepare(_GET_META).first((_DIMENSIONS_KEY,))
        if int(stored) != dimensions:
            subject = f"node {node_id!r}: embedding" if node_id else "embedding"
            raise ValueError(f"{subject} has dimension {dimensions}; the database at "
                             f"{self._path} holds {stored}-d embeddings")

    # -- transactions ---------------------------------------------------------------------------

    def begin(self) -> None:
        """Start a transaction holding the write lock (BEGIN IMMEDIATE)."""
        if self._conn.in_transaction:
            raise MisuseError("a transaction is already open; use `with db.transaction():` "
                              "to nest through a savepoint")
        self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")
        self._bound_wal()

    def rollback(self) -> None:
        self._conn.execute("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    @contextmanager
    def transaction(self) -> Iterator[ResonanceDB]:
        """``with db.transaction():`` commits at the end, rolls back if the block raises.

        Inside another transaction (another block, or :meth:`begin`) it becomes a SAVEPOINT, so
        an inner failure undoes only the inner block.
        """
        conn = self._conn
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._bound_wal()
            return
        self._savepoints += 1
        name = f"amalfa_sp{self._savepoints}"
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            if conn.in_transaction:  # the caller may have ended the outer transaction
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
            raise
        finally:
            self._savepoints -= 1
        conn.execute(f"RELEASE {name}")

    def _after_write(self) -> None:
        """After a single-statement write: outside a transaction it committed on its own."""
        if not self._conn.in_transaction:
            self._bound_wal()

    def _bound_wal(self) -> None:
        """Checkpoint and reset the WAL when its file is over WAL_LIMIT_BYTES (see the module
        notes). One stat per commit when it is not.

        TRUNCATE, not RESTART: both reset the log once every reader has left it, but RESTART
        keeps the file at its size, so it would stay over the limit and every later commit would
        checkpoint again.
        """
        if self._wal_file is None:
            return
        try:
            size = os.stat(self._wal_file).st_size
        except FileNotFoundError:
            return
        if size <= max(WAL_LIMIT_BYTES, self._wal_retry_at):
            return
        conn = self._conn
        # A TRUNCATE checkpoint holds the write lock while it waits for readers, so a failed
        # attempt costs every writer up to WAL_CHECKPOINT_TIMEOUT_MS: after one, wait until the
        # log has grown by another WAL_RETRY_GROWTH_BYTES before the next.
        conn.set_busy_timeout(WAL_CHECKPOINT_TIMEOUT_MS)
        try:
            conn.checkpoint("TRUNCATE")
            self._wal_retry_at = 0
        except (BusyError, LockedError):
            self._wal_retry_at = size + WAL_RETRY_GROWTH_BYTES
        finally:
            conn.set_busy_timeout(BUSY_TIMEOUT_MS)

    # -- nodes: writing -------------------------------------------------------------------------

    def insert_node(self, node: Node) -> None:
        """Insert ``node`` or replace every field of the node with its id (an upsert).

        The embedding is stored FAFCAS-normalised. With history on, the change and its audit row
        are written by one statement.
        """
        head = _node_head(node)
        value = node.embedding
        if value is None:
            self._conn.prepare(_UPSERT_NODE).run(head + (None,))
            self._after_write()
            return
        vector = to_fafcas(_embedding_array(value, head[0], self._dimensions))
        if self._dimensions_recorded:
            self._conn.prepare(_UPSERT_NODE).run(head + (vector,))
            self._after_write()
            return
        with self.transaction():
            self._record_dimensions_in_transaction(vector.shape[0], head[0])
            self._conn.prepare(_UPSERT_NODE).run(head + (vector,))
        self._dimensions, self._dimensions_recorded = vector.shape[0], True

    def insert_nodes(self, nodes: Iterable[Node]) -> int:
        """Upsert many nodes in one transaction; returns how many were written.

        Nodes are validated and their embeddings normalised a chunk at a time; the first bad
        node raises and the whole call is rolled back (inside an outer transaction, back to the
        savepoint this call took).
        """
        upsert = self._conn.prepare(_UPSERT_NODE)
        dimensions = self._dimensions
        count = 0
        with self.transaction():
            for chunk in _chunks(nodes, BULK_CHUNK):
                params, dimensions = _bulk_params(chunk, dimensions)
                upsert.executemany(params)
                count += len(params)
            if dimensions is not None and not self._dimensions_recorded:
                self._record_dimensions_in_transaction(dimensions, None)
        if dimensions is not None and not self._dimensions_recorded:
            self._dimensions, self._dimensions_recorded = dimensions, True
        return count

    def update_node_meta(self, node_id: str, meta: Mapping[str, Any]) -> bool:
        """Replace a node's meta; returns False when there is no such node.

        History records the node before and after (so the old and the new meta).
        """
        if type(node_id) is not str or not node_id:
            _bad_id(node_id)
        if meta is None:
            meta = {}
        stored = _dump_meta(meta, node_id)
        changed = self._conn.prepare(_UPDATE_META).run((stored, node_id)) > 0
        self._after_write()
        return changed

    def update_node_date(self, node_id: str, date: str | _dt.date | None) -> bool:
        """Set a node's date (a str, a datetime.date stored as ISO 8601, or None)."""
        if type(node_id) is not str or not node_id:
            _bad_id(node_id)
        changed = self._conn.prepare(_UPDATE_DATE).run((_date_text(date, node_id), node_id)) > 0
        self._after_write()
        return changed

    def delete_node(self, node_id: str) -> bool:
        """Delete a node and every edge from or to it; returns False when there was no node."""
        if type(node_id) is not str or not node_id:
            _bad_id(node_id)
        with self.transaction():
            self._conn.prepare(_DELETE_EDGES_FROM).run((node_id,))
            self._conn.prepare(_DELETE_EDGES_TO).run((node_id,))
            return self._conn.prepare(_DELETE_NODE).run((node_id,)) > 0

    # -- nodes: reading -------------------------------------------------------------------------

    def get_node(self, node_id: str) -> Node | None:
        """The node with this id, or None."""
        if type(node_id) is not str:
            _bad_id(node_id)
        row = self._conn.prepare(_SELECT_NODE).first((node_id,))
        return None if row is None else _node_from_row(row)

    def get_nodes(self, *, domain: str | None = None, type: str | None = None,
                  limit: int | None = None, offset: int | None = None,
                  exclude_content: bool = False) -> list[Node]:
        """Nodes in insertion (rowid) order, filtered by ``domain`` and ``type`` when given.

        ``limit``/``offset`` page through them (either works alone; ``limit=0`` gives none).
        ``exclude_content=True`` never reads the embedding BLOBs: the nodes come back with
        ``embedding=None``, for metadata scans over large graphs.
        """
        params: list[Any] = []
        if domain is not None:
            if not isinstance(domain, str):
                raise TypeError(f"domain must be a str or None, not {domain.__class__.__name__}")
            params.append(domain)
        if type is not None:
            if not isinstance(type, str):
                raise TypeError(f"type must be a str or None, not {type.__class__.__name__}")
            params.append(type)
        params.append(-1 if limit is None else _check_count(limit, "limit"))
        params.append(0 if offset is None else _check_count(offset, "offset"))
        sql = _GET_NODES_SQL[(domain is not None, type is not None, bool(exclude_content))]
        return [_node_from_row(row) for row in self._conn.prepare(sql).execute(params)]

    def get_nodes_by_type(self, type: str) -> list[Node]:
        """All nodes of one type (the original's shortcut for ``get_nodes(type=...)``)."""
        if not isinstance(type, str):
            raise TypeError(f"type must be a str, not {type.__class__.__name__}")
        return self.get_nodes(type=type)

    def get_node_hash(self, node_id: str) -> str | None:
        """The stored content hash of a node (None when there is no node or no hash)."""
        if type(node_id) is not str:
            _bad_id(node_id)
        row = self._conn.prepare(_SELECT_NODE_HASH).first((node_id,))
        return None if row is None else row[0]

    def get_lexicon(self) -> list[dict[str, Any]]:
        """The lexicon: nodes of domain ``lexicon`` and type ``concept``, without embeddings.

        Each entry is ``{"id", "label", "aliases", "definition"}`` followed by the node's meta
        keys, which win on a clash as in the original. ``definition`` is the node's summary (the
        original read a ``content`` column its schema no longer has).
        """
        entries = []
        for node_id, title, meta_text, summary in self._conn.prepare(_SELECT_LEXICON).execute(
                ("lexicon", "concept")):
            meta = _load_json(meta_text, node_id, "meta") if meta_text else {}
            if not isinstance(meta, dict):
                meta = {}
            entry: dict[str, Any] = {"id": node_id, "label": title,
                                     "aliases": meta.get("aliases") or [],
                                     "definition": summary}
            entry.update(meta)
            entries.append(entry)
        return entries

    # -- edges ---------------------------------------------------------------------------------

    def insert_edge(self, source: str, target: str, type: str = DEFAULT_EDGE_TYPE) -> bool:
        """Add an edge unless the same (source, target, type) exists; True when added."""
        _check_edge_key(source, target, type)
        added = self._conn.prepare(_INSERT_EDGE).run((source, target, type)) > 0
        self._after_write()
        return added

    def insert_semantic_edge(self, source: str, target: str, type: str,
                             confidence: float = 1.0, veracity: float = 1.0,
                             context_source: str | None = None) -> None:
        """Add an edge, or update the confidence, veracity and context of an existing one."""
        _check_edge_key(source, target, type)
        confidence = _check_number(confidence, "confidence")
        veracity = _check_number(veracity, "veracity")
        if context_source is not None and not isinstance(context_source, str):
            raise TypeError("context_source must be a str or None, "
                            f"not {context_source.__class__.__name__}")
        self._conn.prepare(_UPSERT_SEMANTIC_EDGE).run(
            (source, target, type, confidence, veracity, context_source))
        self._after_write()

    def get_edges(self, node_id: str, *, direction: str = "outgoing") -> list[Edge]:
        """Edges of a node: ``"outgoing"`` (the default, as the original), ``"incoming"`` or
        ``"both"`` (a self-loop listed once)."""
        if type(node_id) is not str:
            _bad_id(node_id)
        sql = {"outgoing": _SELECT_EDGES_OUT, "incoming": _SELECT_EDGES_IN,
               "both": _SELECT_EDGES_BOTH}.get(direction)
        if sql is None:
            raise ValueError(f"direction must be 'outgoing', 'incoming' or 'both', "
                             f"not {direction!r}")
        return [Edge(*row) for row in self._conn.prepare(sql).execute((node_id,))]

    def get_incoming_edges(self, node_id: str) -> list[Edge]:
        """Edges pointing at a node."""
        return self.get_edges(node_id, direction="incoming")

    # -- history and stats --------------------------------------------------------------------

    def get_history(self, entity_id: str | None = None, *, entity_type: str | None = None,
                    limit: int | None = None) -> list[HistoryEntry]:
        """Audit rows, oldest first, for one entity id and/or entity type (``node``/``edge``)."""
        params: list[Any] = []
        if entity_id is not None:
            params.append(entity_id)
        if entity_type is not None:
            params.append(entity_type)
        params.append(-1 if limit is None else _check_count(limit, "limit"))
        sql = _GET_HISTORY_SQL[(entity_id is not None, entity_type is not None)]
        rows = self._conn.prepare(sql).execute(params)
        return [
            HistoryEntry(row_id, kind, ident, action,
                         None if old is None else _load_json(old, ident, "old_value"),
                         None if new is None else _load_json(new, ident, "new_value"), stamp)
            for row_id, kind, ident, action, old, new, stamp in rows
        ]

    def get_stats(self) -> DatabaseStats:
        """Counts of nodes, edges, vectors and semantic tokens, and the size on disk."""
        conn = self._conn
        nodes, vectors, semantic_tokens = conn.prepare(_COUNT_NODES).first()
        (edges,) = conn.prepare(_COUNT_EDGES).first()
        (page_count,) = conn.prepare("PRAGMA page_count").first()
        (page_size,) = conn.prepare("PRAGMA page_size").first()
        size = page_count * page_size
        try:
            size += os.stat(f"{self._path}-wal").st_size
        except FileNotFoundError:
            pass
        return DatabaseStats(nodes, edges, vectors, semantic_tokens, size)

    # -- lifecycle ------------------------------------------------------------------------------

    def checkpoint(self) -> tuple[int, int]:
        """Copy the WAL into the database file and truncate it (``wal_checkpoint(TRUNCATE)``).

        Returns (frames in the log, frames checkpointed). Raises BusyError if readers keep the
        log in use beyond the busy timeout.
        """
        return self._conn.checkpoint("TRUNCATE")

    def close(self) -> None:
        """Run ``PRAGMA optimize`` and close. An open transaction is rolled back. Idempotent."""
        conn = self._conn
        if conn.closed:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if not self._readonly:
                try:
                    conn.execute("PRAGMA optimize")
                except BusyError:
                    pass  # another writer held the lock past the timeout: optimizing can wait
        finally:
            conn.close()

    def __enter__(self) -> ResonanceDB:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn.closed else ("readonly" if self._readonly else "open")
        return f"<ResonanceDB {str(self._path)!r} {state}>"


def _connect(target: str, *, create: bool, readonly: bool) -> Connection:
    """Open through DatabaseFactory (which also waits out a concurrent WAL switch)."""
    if create:
        return DatabaseFactory.connect_to_resonance(target)
    in_memory = target in ("", ":memory:")
    return DatabaseFactory.connect(target, readonly=readonly, create=in_memory)


def _check_count(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{field_name} must be an int, not {value.__class__.__name__}")
    if value < 0:
        raise ValueError(f"{field_name} must be >= 0, got {value}")
    return int(value)


def _check_edge_key(source: Any, target: Any, type: Any) -> None:
    for value, field_name in ((source, "source"), (target, "target"), (type, "type")):
        if value.__class__ is not str or not value:
            _bad_id(value, field_name)

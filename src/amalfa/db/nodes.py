"""Nodes: writing (upserts, bulk inserts, meta and date updates, deletes) and reading them.

Every method runs on a prepared statement from the connection's cache (the SQL lives in module
constants, so the cache key is always the same string), binds its filters as parameters and
binds embeddings as raw FAFCAS bytes without a copy. Values are checked before the first
statement runs (:mod:`amalfa.db.validation`); bulk inserts run in one transaction that rolls
back on the first bad node. Upserts keep the row (``ON CONFLICT DO UPDATE``) rather than
``INSERT OR REPLACE``, which would delete it, fire delete triggers and change its rowid under
the vector cache. The first embedding written records the database's dimension
(:class:`~amalfa.db.meta.MetaStore`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from amalfa._core import fafcas as kernels

from amalfa.db.meta import MetaStore
from amalfa.db.records import IngestedNode, Node
from amalfa.db.validation import (
    bad_id,
    bulk_params,
    check_count,
    chunks,
    date_text,
    dump_meta,
    embedding_array,
    load_json,
    node_from_row,
    node_head,
    refuses_unstorable_text,
)
from amalfa.fafcas import to_fafcas

__all__ = ["BULK_CHUNK", "NodeStore"]

# How many nodes insert_nodes validates and normalises at a time: big enough that numpy's
# per-call overhead vanishes, small enough that the stacked embeddings stay in cache.
BULK_CHUNK = 512
# rows of the matrix normalised and bound at a time by insert_nodes_matrix (1.5 MB at d = 384)
_MATRIX_CHUNK = 1024

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
_UPDATE_META = "UPDATE nodes SET meta = ? WHERE id = ?"
_UPDATE_DATE = "UPDATE nodes SET date = ? WHERE id = ?"
_DELETE_NODE = "DELETE FROM nodes WHERE id = ?"
# Deleting a node takes its edges with it.
_DELETE_EDGES_FROM = "DELETE FROM edges WHERE source = ?"
_DELETE_EDGES_TO = "DELETE FROM edges WHERE target = ?"
_SELECT_LEXICON = (
    "SELECT id, title, meta, summary FROM nodes WHERE domain = ? AND type = ? ORDER BY rowid"
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
# Nodes whose meta names a source file: the ones ingest wrote. The LIKE prefilter keeps
# json_extract off rows that cannot match; json_valid keeps it off meta that is not JSON.
_SELECT_INGESTED = (
    "SELECT id, hash, embedding IS NOT NULL, "
    "CASE WHEN json_valid(meta) THEN json_extract(meta, '$.source') END "
    "FROM nodes WHERE meta LIKE '%\"source\"%'"
)


class NodeStore(MetaStore):
    """Node reads and writes for :class:`~amalfa.db.ResonanceDB`."""

    @refuses_unstorable_text
    def insert_node(self, node: Node) -> None:
        """Insert ``node`` or replace every field of the node with its id (an upsert).

        The embedding is stored FAFCAS-normalised. With history on, the change and its audit row
        are written by one statement.
        """
        head = node_head(node)
        value = node.embedding
        if value is None:
            self._conn.prepare(_UPSERT_NODE).run(head + (None,))
            self._after_write()
            return
        vector = to_fafcas(embedding_array(value, head[0], self._dimensions))
        if self._dimensions_recorded:
            self._conn.prepare(_UPSERT_NODE).run(head + (vector,))
            self._after_write()
            return
        with self.transaction():
            self._record_dimensions_in_transaction(vector.shape[0], head[0])
            self._conn.prepare(_UPSERT_NODE).run(head + (vector,))
        self._dimensions, self._dimensions_recorded = vector.shape[0], True

    @refuses_unstorable_text
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
            for chunk in chunks(nodes, BULK_CHUNK):
                params, dimensions = bulk_params(chunk, dimensions)
                upsert.executemany(params)
                count += len(params)
            if dimensions is not None and not self._dimensions_recorded:
                self._record_dimensions_in_transaction(dimensions, None)
        if dimensions is not None and not self._dimensions_recorded:
            self._dimensions, self._dimensions_recorded = dimensions, True
        return count

    def insert_nodes_matrix(self, nodes: Sequence[Node], embeddings: Any) -> int:
        """Upsert ``nodes`` with row i of the (N, d) ``embeddings`` as ``nodes[i]``'s embedding.

        The fast path for bulk loads: a chunk of rows at a time is copied to float32 into one
        small buffer and normalised to FAFCAS in one C call (the caller's array is not changed),
        then one C loop binds each node's validated fields and its row in place (no bytes object
        per row) and steps the upsert. A bad row raises naming its node; the call is one
        transaction, so nothing of it is written. Same validation, transaction and history as ``insert_nodes``; the nodes' own
        ``embedding`` must be None. Returns how many were written.
        """
        nodes = list(nodes)
        source = np.asarray(embeddings)
        if source.ndim != 2 or source.shape[0] != len(nodes) or source.shape[1] == 0:
            raise ValueError(f"embeddings must be an ({len(nodes)}, d) matrix, one row per node; "
                             f"got shape {source.shape}")
        if source.dtype.kind not in "biuf":
            raise TypeError(f"embeddings must be numbers, not {source.dtype}")
        dim = source.shape[1]
        if self._dimensions is not None and dim != self._dimensions:
            raise ValueError(f"embeddings have dimension {dim}; this database holds "
                             f"{self._dimensions}-d vectors")
        heads = [node_head(node) for node in nodes]
        given = [head[0] for head, node in zip(heads, nodes) if node.embedding is not None]
        if given:
            raise ValueError(f"node {given[0]!r} has its own embedding; insert_nodes_matrix takes "
                             "the embeddings from the matrix only")
        # a chunk at a time through one small buffer that stays in cache: no copy of the whole
        # matrix, no page faults of a fresh one (measured: that copy was a tenth of the time)
        buffer = np.empty((min(len(nodes), _MATRIX_CHUNK), dim), np.float32)
        upsert = self._conn.prepare(_UPSERT_NODE)
        with self.transaction():
            if not self._dimensions_recorded:
                self._record_dimensions_in_transaction(dim, None)
            for begin in range(0, len(nodes), _MATRIX_CHUNK):
                rows = buffer[:min(_MATRIX_CHUNK, len(nodes) - begin)]
                rows[...] = source[begin:begin + len(rows)]
                finite = np.isfinite(rows).all(axis=1)
                if not finite.all():
                    bad = begin + int(np.argmin(finite))
                    raise ValueError(f"node {heads[bad][0]!r}: embedding (row {bad}) holds NaN "
                                     "or inf")
                kernels.normalize_rows_inplace(rows)
                upsert.executemany_rows(heads[begin:begin + len(rows)], rows.view(np.uint8))
        self._dimensions, self._dimensions_recorded = dim, True
        return len(heads)

    @refuses_unstorable_text
    def update_node_meta(self, node_id: str, meta: Mapping[str, Any]) -> bool:
        """Replace a node's meta; returns False when there is no such node.

        History records the node before and after (so the old and the new meta).
        """
        if type(node_id) is not str or not node_id:
            bad_id(node_id)
        if meta is None:
            meta = {}
        stored = dump_meta(meta, node_id)
        changed = self._conn.prepare(_UPDATE_META).run((stored, node_id)) > 0
        self._after_write()
        return changed

    @refuses_unstorable_text
    def update_node_date(self, node_id: str, date: str | _dt.date | None) -> bool:
        """Set a node's date (a str, a datetime.date stored as ISO 8601, or None)."""
        if type(node_id) is not str or not node_id:
            bad_id(node_id)
        changed = self._conn.prepare(_UPDATE_DATE).run((date_text(date, node_id), node_id)) > 0
        self._after_write()
        return changed

    @refuses_unstorable_text
    def delete_node(self, node_id: str) -> bool:
        """Delete a node and every edge from or to it; returns False when there was no node."""
        if type(node_id) is not str or not node_id:
            bad_id(node_id)
        with self.transaction():
            self._conn.prepare(_DELETE_EDGES_FROM).run((node_id,))
            self._conn.prepare(_DELETE_EDGES_TO).run((node_id,))
            return self._conn.prepare(_DELETE_NODE).run((node_id,)) > 0

    # -- reading ------------------------------------------------------------------------------

    @refuses_unstorable_text
    def get_node(self, node_id: str) -> Node | None:
        """The node with this id, or None."""
        if type(node_id) is not str:
            bad_id(node_id)
        row = self._conn.prepare(_SELECT_NODE).first((node_id,))
        return None if row is None else node_from_row(row)

    @refuses_unstorable_text
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
        params.append(-1 if limit is None else check_count(limit, "limit"))
        params.append(0 if offset is None else check_count(offset, "offset"))
        sql = _GET_NODES_SQL[(domain is not None, type is not None, bool(exclude_content))]
        return [node_from_row(row) for row in self._conn.prepare(sql).execute(params)]

    @refuses_unstorable_text
    def get_nodes_by_type(self, type: str) -> list[Node]:
        """All nodes of one type (the original's shortcut for ``get_nodes(type=...)``)."""
        if not isinstance(type, str):
            raise TypeError(f"type must be a str, not {type.__class__.__name__}")
        return self.get_nodes(type=type)

    @refuses_unstorable_text
    def get_node_hash(self, node_id: str) -> str | None:
        """The stored content hash of a node (None when there is no node or no hash)."""
        if type(node_id) is not str:
            bad_id(node_id)
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
            meta = load_json(meta_text, node_id, "meta") if meta_text else {}
            if not isinstance(meta, dict):
                meta = {}
            entry: dict[str, Any] = {"id": node_id, "label": title,
                                     "aliases": meta.get("aliases") or [],
                                     "definition": summary}
            entry.update(meta)
            entries.append(entry)
        return entries

    def ingested_nodes(self) -> dict[str, IngestedNode]:
        """The nodes ingest wrote (their meta names a ``source`` file), by id: each node's
        source, content hash and whether it has an embedding. Ingest compares them with the
        files on disk to decide what to embed again and what to delete."""
        known = {}
        for node_id, digest, has_embedding, source in self._conn.prepare(
                _SELECT_INGESTED).execute():
            if isinstance(source, str) and source:
                known[node_id] = IngestedNode(node_id, digest, source, bool(has_embedding))
        return known

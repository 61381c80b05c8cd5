"""Hybrid search over passages: vector top-k and BM25 top-k, fused, grouped per document.

:class:`SearchEngine` answers ``engine.search("how are vectors normalised", 10)`` with
:class:`SearchHit` records: the document (id, title, source file, score) and where in it the
answer is (the passage's ``heading`` path, its 1-based ``line`` in the file and a ``snippet``).

Modes:

* ``vector``: the query's embedding against every passage embedding (dot product of FAFCAS
  vectors, through :class:`~amalfa.vectors.VectorEngine` with ``source="passages"``);
* ``keyword``: SQLite FTS5 with BM25 over the passages' text and heading context. User text is
  made safe by :func:`keyword_query`: every word is quoted, so quotes, ``NEAR``, ``*``, ``:``,
  ``^`` and parentheses are words, never operators; ``raw_query=True`` passes FTS5 syntax as is;
* ``hybrid`` (the default): both lists, :data:`CANDIDATES` deep, fused by **reciprocal rank
  fusion**. Each list ranks documents by their best passage; a document's score is
  ``sum(1 / (RRF_K + rank))`` over the lists it appears in (rank 1-based, ``RRF_K = 60`` as in
  Cormack, Clarke and Buettcher, SIGIR 2009). RRF needs no score calibration between cosine
  similarities and BM25, and a document both lists agree on beats one that only one list loves.
  One rule sits on top, the **full-match rule**: when the query has at least
  :data:`FULL_MATCH_TERMS` (3) distinct keyword words (common English words left out, as in
  :func:`keyword_query`) and a passage of a document in the BM25 list contains every one of
  them (its text or heading path, compared as lower-cased words, no stemming), that document
  ranks ahead of every document without such a passage; RRF orders each group. Its score is
  the RRF score plus :data:`FULL_MATCH_BONUS` (1.0), so a hybrid score above 1 says "a passage
  has every word". Without the rule the vector list outvoted exact keyword hits on sentences
  many documents share: measured on the retrieval benchmark (63 package READMEs) and on the
  basic-memory comparison's 106, deep-sentence recall@5 went from 0.976 and 0.955 to 1.000 and
  0.995 (keyword alone: 1.000 and 0.990), titles stayed at 1.000. Weighting the BM25 list by
  the share of the query it matched reached the same deep figures but lost titles (0.984,
  0.991); min-max score fusion (equal weights) matched the rule but changes every query, the
  rule only those with a passage holding all their words (paraphrases keep plain RRF); RRF with
  k = 5 or 1 reached 0.985 on the larger corpus. ``raw_query=True`` turns the rule off.
  (Adding the document-level embeddings, the seed's one vector per file, as a third list was
  measured and dropped: it lowered deep-sentence recall@5 from 0.976 to 0.911 on the retrieval
  benchmark, and titles are found at 1.0 without it.)

Each document appears once, with its best passage. Which passage of a document to show is a
different question from which documents to rank: ranks cannot tell a passage that matches the
query's words exactly from one that only shares its subject, but scores can. So the passage is
the one with the highest sum of its scores in the two lists, each list's scores divided by that
list's best score for the query (the cosine and BM25 scales then both top out at 1). On the
retrieval benchmark this puts the query sentence inside the reported lines for 95.8% of hits,
against 85.8% when passages are chosen by RRF like documents. With
``rerank=True`` the best :data:`RERANK_DEPTH` x ``limit`` documents are scored again by a
cross-encoder (:class:`~amalfa.reranker.Reranker`) reading the query with each best passage.

The snippet comes from the passage's text as it was indexed. The file is the source of truth
for where that text is: its path is relative to the project root the ingest recorded, and when
the file's bytes no longer hash to what was ingested (or it is gone), the hit says
``stale=True`` and carries no line numbers, rather than pointing at lines that moved.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from amalfa.errors import InputError
from amalfa.ingest.pipeline import recorded_root
from amalfa.limits import RESULTS
from amalfa.models.files import sha256_file
from amalfa.text_rules import check_storable, for_model
from amalfa.vectors import _check_limit

if TYPE_CHECKING:
    from amalfa.db import ResonanceDB
    from amalfa.db.passages import PassageLocation
    from amalfa.embedder import Embedder
    from amalfa.reranker import Reranker
    from amalfa.vectors import VectorEngine

__all__ = ["CANDIDATES", "FULL_MATCH_BONUS", "FULL_MATCH_TERMS", "MODES", "RRF_K", "SNIPPET_CHARS", "SearchEngine", "SearchHit",
           "SearchMode", "keyword_query"]

SearchMode = Literal["hybrid", "vector", "keyword"]
MODES: tuple[str, ...] = ("hybrid", "vector", "keyword")
#: the reciprocal rank fusion constant: score = sum over lists of 1 / (RRF_K + rank)
RRF_K = 60
#: the full-match rule applies to queries with at least this many distinct keyword words
FULL_MATCH_TERMS = 3
#: added to the RRF score of a document with a passage holding every keyword word of the query
FULL_MATCH_BONUS = 1.0
#: how deep each list is read before fusion (at least; ``5 * limit`` when that is more)
CANDIDATES = 100
#: how many of the fused documents, per result asked for, the cross-encoder reads again
RERANK_DEPTH = 3
#: the snippet is cut to about this many characters around the best match
SNIPPET_CHARS = 300
# the most query words sent to FTS5 (a pasted page must not become a 10,000-term query)
_MAX_TERMS = 64
_WORD_RE = re.compile(r"\w+")
# Words that nearly every English passage has: as OR terms they only add noise matches, which
# in a fusion count as full votes. Dropped from keyword queries unless nothing else is left.
_STOPWORDS = frozenset("""
a about above after again all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just
me more most my myself no nor not of off on once only or other our ours ourselves out over own
same she should so some such than that the their theirs them themselves then there these they
this those through to too under until up very was we were what when where which while who whom
why will with would you your yours yourself yourselves
""".split())


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One document found, with its best passage.

    ``score`` is the fused RRF score in ``hybrid`` mode (plus 1.0 when a passage holds every
    word of the query: see the module docstring's full-match rule), the cosine similarity of the best
    passage in ``vector`` mode, its BM25 score (higher is better) in ``keyword`` mode, and the
    cross-encoder's probability after ``rerank``. ``line``/``line_end`` are the passage's 1-based
    lines in ``source``; ``heading`` its heading path (None before the first heading); ``stale``
    is True when the file changed since it was ingested (then ``line`` and ``line_end`` are None;
    the snippet is the text as it was indexed).
    """

    id: str
    score: float
    title: str | None
    source: str | None
    snippet: str | None
    heading: str | None
    line: int | None
    line_end: int | None
    stale: bool = False
    passage_id: int | None = None
    domain: str | None = None
    type: str | None = None
    date: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def keyword_query(text: str) -> str:
    """An FTS5 MATCH expression that finds passages with any word of ``text``, ranked by BM25.

    Every word becomes a quoted string (``"word"``), so nothing the user types is read as FTS5
    syntax: ``NEAR``, ``AND``, ``*``, ``:``, ``^``, quotes and parentheses are plain words or
    separators. Common English words (``the``, ``with`` ...) are left out unless the text has
    no other word. Returns "" when ``text`` has no words. At most 64 distinct words are used.
    """
    return " OR ".join('"' + word.replace('"', '""') + '"' for word in _query_words(text))


def _query_words(text: str) -> list[str]:
    """The words :func:`keyword_query` searches for, lower-cased, in order."""
    words: dict[str, None] = {}
    for match in _WORD_RE.finditer(text):
        word = match.group().casefold()
        words.setdefault(word, None)
        if len(words) >= _MAX_TERMS:
            break
    return [word for word in words if word not in _STOPWORDS] or list(words)


def _holds_every_word(passage: PassageLocation, words: list[str]) -> bool:
    text = passage.text.casefold() + "\n" + (passage.heading or "").casefold()
    if not all(word in text for word in words):  # cheap: substrings first, whole words after
        return False
    found = set(_WORD_RE.findall(text))
    return all(word in found for word in words)


@dataclass(slots=True)
class _Candidate:
    node_id: str
    score: float
    passage: PassageLocation | None
    passage_score: float


@dataclass(frozen=True, slots=True)
class _Filter:
    domain: str | None
    type: str | None

    def keeps(self, passage: PassageLocation) -> bool:
        return ((self.domain is None or passage.domain == self.domain)
                and (self.type is None or passage.type == self.type))


class SearchEngine:
    """Search a :class:`~amalfa.db.ResonanceDB`'s passages (see the module docstring).

    ``embedder``: the model to embed queries with (default: the model the database was built
    with). ``root``: the folder the sources are relative to (default: the one the last ingest
    recorded, else the current folder). ``reranker``: a cross-encoder for ``rerank=True``
    (default: found when first needed; :class:`~amalfa.errors.ModelError` when there is none).
    """

    def __init__(self, db: ResonanceDB, *, embedder: Embedder | None = None,
                 root: str | os.PathLike[str] | None = None,
                 reranker: Reranker | None = None) -> None:
        self.db = db
        self._embedder = embedder
        self._reranker = reranker
        if root is None:
            root = recorded_root(db) or os.getcwd()
        self.root = Path(os.path.abspath(os.fspath(root)))
        self._passage_vectors: VectorEngine | None = None

    # -- the parts, created when first needed ---------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from amalfa.embedder import Embedder

            # the model and the precision the database recorded (vectors of another model or
            # precision must not be compared with its own)
            self._embedder = Embedder.for_database(self.db)
        return self._embedder

    def _passage_vectors_engine(self) -> VectorEngine:
        if self._passage_vectors is None:
            from amalfa.vectors import VectorEngine

            self._passage_vectors = VectorEngine(self.db, source="passages")
        return self._passage_vectors

    # -- searching ------------------------------------------------------------------------------

    def search(self, text: str, limit: int = 10, *, mode: SearchMode = "hybrid",
               rerank: bool = False, raw_query: bool = False, domain: str | None = None,
               type: str | None = None) -> list[SearchHit]:
        """The ``limit`` best documents for ``text``, each with its best passage.

        ``raw_query`` hands ``text`` to FTS5 as a query expression (its own syntax; a syntax
        error raises :class:`~amalfa.errors.InputError` naming it). ``domain``/``type`` keep only
        documents of that domain or type. Raises InputError (a ValueError) for an unknown mode or
        an empty query, TypeError for a non-integer limit.
        """
        return self.search_many([text], limit, mode=mode, rerank=rerank, raw_query=raw_query,
                                domain=domain, type=type)[0]

    def search_many(self, texts: Sequence[str], limit: int = 10, *,
                    mode: SearchMode = "hybrid", rerank: bool = False,
                    raw_query: bool = False, domain: str | None = None,
                    type: str | None = None) -> list[list[SearchHit]]:
        """:meth:`search` for many queries, in order; their embeddings are made in one batch."""
        limit = _check_limit(limit)
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        queries = list(texts)
        for index, text in enumerate(queries):
            if not isinstance(text, str):
                raise TypeError(f"query {index} must be a str, not {type(text).__name__}")
            if not text.strip():
                raise InputError(f"query {index} is empty")
        # amalfa.text_rules: a query is made valid (lone surrogates -> U+FFFD) for the model and
        # FTS5; a filter is compared with stored text, so one SQLite cannot store is refused
        queries = [for_model(text) for text in queries]
        for name, value in (("domain", domain), ("type", type)):
            if value is not None:
                check_storable(value, what=name)
        if not queries:
            return []
        if not self.db.has_passages_table():
            raise InputError(f"the database at {self.db.path} has no passages table; open it "
                             "read-write once (or run `amalfa init`) to migrate it")
        vectors = None
        if mode != "keyword":
            # an embedder given by the caller may be another model or precision than the one
            # the passages were embedded with: their scores would mean nothing, so refuse
            self.embedder.check_database(self.db)
            vectors = self.embedder.embed_batch(queries)
        depth = min(max(CANDIDATES, 5 * limit), RESULTS.high)  # a valid limit, a valid depth
        wanted = _Filter(domain, type)
        freshness = _Freshness(self.root)  # each source file hashed once for the whole batch
        out = []
        for index, text in enumerate(queries):
            candidates = self._candidates(text, None if vectors is None else vectors[index],
                                          mode=mode, depth=depth, raw_query=raw_query,
                                          wanted=wanted)
            if rerank:
                candidates = self._rerank(text, candidates[:RERANK_DEPTH * limit])
            out.append(self._hits(text, candidates[:limit], freshness))
        return out

    def _candidates(self, text: str, vector: np.ndarray | None, *, mode: str, depth: int,
                    raw_query: bool, wanted: _Filter) -> list[_Candidate]:
        lists: list[tuple[np.ndarray, np.ndarray]] = []
        if mode in ("vector", "hybrid"):
            assert vector is not None
            lists.append(self._passage_vectors_engine().top_k(vector, depth))
        if mode in ("keyword", "hybrid"):
            lists.append(self._keyword(text, depth, raw_query=raw_query))
        rowids = sorted({int(r) for ids, _ in lists for r in ids})
        located = dict(zip(rowids, self.db.locate_passages(rowids)))

        ranked: list[list[tuple[PassageLocation, float]]] = []
        for ids, scores in lists:
            kept = []
            for rowid, score in zip(ids.tolist(), scores.tolist()):
                passage = located.get(rowid)
                if passage is not None and wanted.keeps(passage):  # None: deleted meanwhile
                    kept.append((passage, float(score)))
            ranked.append(kept)
        if mode != "hybrid":
            # one list: a document's score is its best passage's
            best: dict[str, _Candidate] = {}
            for passage, score in ranked[0]:
                if passage.node_id not in best:
                    best[passage.node_id] = _Candidate(passage.node_id, score, passage, score)
            return list(best.values())

        # hybrid: RRF over documents (each list ranks documents by their best passage), plus
        # the full-match rule; the passage shown is the one with the highest sum of its scores,
        # each list's scores divided by that list's best (see the module docstring).
        fused: dict[str, float] = {}
        passage_fused: dict[int, float] = {}
        passages: dict[int, PassageLocation] = {}
        for ranking in ranked:
            seen: set[str] = set()
            top = max((score for _, score in ranking), default=0.0)
            for passage, score in ranking:
                passages[passage.id] = passage
                share = score / top if top > 0 else 0.0
                passage_fused[passage.id] = passage_fused.get(passage.id, 0.0) + share
                if passage.node_id not in seen:
                    seen.add(passage.node_id)
                    fused[passage.node_id] = fused.get(passage.node_id, 0.0) \
                        + 1.0 / (RRF_K + len(seen))
        words = [] if raw_query else _query_words(text)
        if len(words) >= FULL_MATCH_TERMS:
            full = {passage.node_id for passage, _ in ranked[-1]
                    if passage.node_id in fused and _holds_every_word(passage, words)}
            for node_id in full:
                fused[node_id] += FULL_MATCH_BONUS
        best_passage: dict[str, tuple[float, PassageLocation]] = {}
        for passage_id, score in passage_fused.items():
            passage = passages[passage_id]
            held = best_passage.get(passage.node_id)
            if held is None or score > held[0]:
                best_passage[passage.node_id] = (score, passage)
        candidates = []
        for node_id, score in fused.items():
            held = best_passage.get(node_id)
            candidates.append(_Candidate(node_id, score, held[1] if held else None,
                                         held[0] if held else 0.0))
        candidates.sort(key=lambda c: (-c.score, -c.passage_score, c.node_id))
        return candidates

    def _keyword(self, text: str, depth: int, *, raw_query: bool,
                 ) -> tuple[np.ndarray, np.ndarray]:
        match = text if raw_query else keyword_query(text)
        if not match.strip():
            return np.empty(0, np.int64), np.empty(0, np.float32)
        from amalfa.errors import DatabaseError

        try:
            return self.db.keyword_passages(match, depth)
        except DatabaseError as exc:
            if not raw_query:
                raise
            raise InputError(f"the FTS5 query {text!r} is not valid: {exc}") from None

    def _rerank(self, text: str, candidates: list[_Candidate]) -> list[_Candidate]:
        if not candidates:
            return candidates
        if self._reranker is None:
            from amalfa.reranker import Reranker

            self._reranker = Reranker()  # ModelError with how to get one when there is none
        documents = [candidate.passage.text if candidate.passage is not None else ""
                     for candidate in candidates]
        scores = self._reranker.score(text, documents)
        rescored = [_Candidate(c.node_id, float(s), c.passage, c.passage_score)
                    for c, s in zip(candidates, scores)]
        rescored.sort(key=lambda c: -c.score)
        return rescored

    def _hits(self, text: str, candidates: list[_Candidate],
              freshness: _Freshness) -> list[SearchHit]:
        hits = []
        for candidate in candidates:
            passage = candidate.passage
            if passage is None:  # pragma: no cover - every candidate comes from a passage list
                continue
            stale = freshness.stale(passage)
            hits.append(SearchHit(
                id=passage.node_id, score=candidate.score, title=passage.title,
                source=passage.source, snippet=snippet(passage.text, text),
                heading=passage.heading,
                line=None if stale else passage.line_start,
                line_end=None if stale else passage.line_end,
                stale=stale, passage_id=passage.id, domain=passage.domain, type=passage.type,
                date=passage.date))
        return hits


class _Freshness:
    """Whether documents' files still hold what was ingested (each file hashed once)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._known: dict[str, bool] = {}

    def stale(self, passage: PassageLocation) -> bool:
        """True when the file is gone, unreadable, outside the project or changed since ingest."""
        source = passage.source
        if not source or passage.document_hash is None:
            return True
        if source not in self._known:
            self._known[source] = self._differs(source, passage.document_hash)
        return self._known[source]

    def _differs(self, source: str, expected: str) -> bool:
        path = Path(os.path.normpath(self.root / source))
        if self.root not in path.parents:
            return True  # a stored path leading outside the project: never read it
        try:
            return sha256_file(path) != expected
        except OSError:
            return True


def snippet(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """About ``width`` characters of ``text`` around where the query's words gather most.

    Whitespace runs become one space; cut at word boundaries; an ellipsis marks each side that
    was cut.
    """
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    words = {w.casefold() for w in _WORD_RE.findall(query) if len(w) > 2}
    positions = [m.start() for m in _WORD_RE.finditer(text) if m.group().casefold() in words]
    start = 0
    if positions:
        best = -1
        for candidate in positions:
            begin = max(0, candidate - width // 5)
            hits = sum(1 for p in positions if begin <= p < begin + width)
            if hits > best:
                best, start = hits, begin
    end = min(len(text), start + width)
    if end == len(text):
        start = max(0, end - width)
    if start > 0:
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < start + 30 else start
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + width // 2 else end
    piece = text[start:end].strip()
    return ("\u2026" if start > 0 else "") + piece + ("\u2026" if end < len(text) else "")


"""The retrieval contract: documents in, scored chunks out.

A `Retriever` is an attached resource chosen by URL (`THREADLINE_RETRIEVAL`), like a store:

* `upsert(documents)` splits each document into chunks (`chunking.py`), keeps the chunks
  whose content hash it already holds, embeds and stores only the new ones and deletes the
  document's chunks that are gone. Upserting the same document twice changes nothing.
* `delete(document_ids)` removes documents and all their chunks.
* `search(query, k=, filter=, mode=)` returns at most `k` `Hit`s, best first. `mode` is
  `hybrid` (BM25 and vector ranks fused by reciprocal rank fusion), `lexical` or `vector`;
  a backend without vectors answers `hybrid` lexically (and said so when it opened).
  `filter` keeps chunks whose document metadata has, for every key, the given value (or
  one of the given values, for a list).

Invariants:
    * A chunk id is a pure function of the document id and the chunk's text, so the same
      text always gets the same id, on every backend.
    * `Hit.tokens` is the chunk's token count (o200k_base), computed once at indexing.
    * Swapping the URL (SQLite file for PostgreSQL) changes nothing in the calling code.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError

if TYPE_CHECKING:
    from .embeddings import Embedder

__all__ = [
    "CANDIDATES",
    "RRF_K",
    "Document",
    "DocumentPlan",
    "Hit",
    "IndexStats",
    "MetadataFilter",
    "Retriever",
    "SearchMode",
    "StoredChunk",
    "UpsertReport",
    "check_filter",
    "document_hash",
    "filter_matches",
    "must_record_embedder",
    "plan_document",
    "query_terms",
    "reciprocal_rank_fusion",
    "relevance",
]

SearchMode = Literal["hybrid", "lexical", "vector"]
MetadataFilter = Mapping[str, Any]

RRF_K = 60
"""The constant of reciprocal rank fusion (Cormack et al. 2009): score = sum 1/(RRF_K + rank)."""

CANDIDATES = 50
"""Chunks each ranking reads at least, before fusion cuts to `k`."""


class Document(BaseModel):
    """A text to index, with its metadata (free JSON: source path, section, tags...)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    title: str = ""


class Hit(BaseModel):
    """One retrieved chunk.

    Attributes:
        chunk_id: stable id (hash of document id and text).
        document_id: the document it came from.
        text: the chunk's text (its heading path first, when it has one).
        score: the ranking score of the mode used: RRF for hybrid, BM25 (higher is
            better) for lexical, cosine similarity for vector.
        tokens: token count of `text`.
        metadata: the document's metadata plus the chunk's `heading`.
        relevance: `score` mapped to [0, 1] (see `relevance`), comparable across queries
            of one mode; the renderer's dynamic split reads it.
    """

    model_config = ConfigDict(frozen=True)

    chunk_id: str
    document_id: str
    text: str
    score: float
    tokens: int
    metadata: dict[str, Any] = Field(default_factory=dict)
    relevance: float = 0.0


def relevance(score: float, mode: SearchMode) -> float:
    """A score in [0, 1]: for `hybrid` the RRF score over its maximum (1 when both rankers
    put the chunk first, 0.5 when one does and the other missed it); for `vector` the
    cosine similarity clipped at 0; for `lexical` s / (1 + s) of the backend's rank."""
    if mode == "hybrid":
        value = score * (RRF_K + 1) / 2
    elif mode == "vector":
        value = score
    else:
        value = score / (1.0 + score) if score > 0 else 0.0
    return round(min(1.0, max(0.0, value)), 6)


class UpsertReport(BaseModel):
    """What an upsert did: chunks embedded and written, kept as they were, deleted."""

    documents: int = 0
    unchanged_documents: int = 0
    added_chunks: int = 0
    kept_chunks: int = 0
    deleted_chunks: int = 0

    def merge(self, other: UpsertReport) -> UpsertReport:
        return UpsertReport(
            **{k: getattr(self, k) + getattr(other, k) for k in type(self).model_fields}
        )


class IndexStats(BaseModel):
    """A summary of an index: what `threadline index list` prints."""

    url: str
    vectors: bool
    embedder: str | None
    documents: list[dict[str, Any]]


def document_hash(doc: Document) -> str:
    """The hash that decides whether a document changed since it was indexed."""
    h = hashlib.sha256()
    for part in (doc.id, doc.title, doc.text, _canonical(doc.metadata)):
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()


def _canonical(meta: Mapping[str, Any]) -> str:
    import json

    return json.dumps(meta, sort_keys=True, separators=(",", ":"), default=str)


def filter_matches(meta: Mapping[str, Any], flt: MetadataFilter | None) -> bool:
    """Whether document metadata satisfies a filter (equality, or any-of for a list)."""
    if not flt:
        return True
    for key, want in flt.items():
        have = meta.get(key)
        if isinstance(want, list | tuple | set | frozenset):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


def must_record_embedder(
    recorded: str | None, *, want: str, empty: bool, index: str, elsewhere: str
) -> bool:
    """Whether an index opened with embeddings `want` records them as its own.

    An index keeps the embeddings it was built with: a new or empty one takes `want`; one
    whose chunks were embedded otherwise raises `ConfigError`, naming `index` and the
    way out (`elsewhere`: another file, another schema), since its vectors would not
    compare with the query's.
    """
    if recorded is None or (empty and recorded != want):
        return True
    if recorded != want:
        raise ConfigError(
            f"index {index} was built with embeddings {recorded!r}, not {want!r}; "
            f"set THREADLINE_EMBEDDINGS to match or index into {elsewhere}"
        )
    return False


def check_filter(flt: MetadataFilter | None) -> None:
    """Raise `ConfigError` unless every filter key is a plain identifier-like string."""
    for key in flt or {}:
        if not isinstance(key, str) or not key.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"filter key {key!r} must be letters, digits, '_' or '-'")


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], *, k: int = RRF_K
) -> list[tuple[str, float]]:
    """Fuse ranked id lists: each id scores sum(1 / (k + rank)) over the lists it is in.

    Ties keep the order of first appearance (the lexical list is passed first), so the
    fusion is deterministic.
    """
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, 1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


class StoredChunk(NamedTuple):
    """A chunk as an index holds it (`Retriever._chunks`): what a `Hit` shows of it."""

    chunk_id: str
    document_id: str
    text: str
    tokens: int
    heading: str
    metadata: dict[str, Any]
    """The document's metadata."""


class Retriever(ABC):
    """An index of chunked documents with lexical and (optionally) vector search.

    Open with `async with`: the backend connects and checks its schema in `open()`.
    The operations are written here once; a backend stores and ranks (`_stored`,
    `_write`, `_lexical`, `_vector`, `_chunks`) and keeps the embeddings' name
    (`_recorded_embedder`, `_record_embedder`).
    """

    url: str
    vectors: bool
    """Whether this index has vectors (False: lexical only)."""
    embedder: Embedder | None
    """Turns text into vectors (used only when `vectors`)."""
    elsewhere: str
    """Where to index with other embeddings instead ("a new file"), for the error that
    refuses them (`must_record_embedder`)."""

    async def __aenter__(self) -> Retriever:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect, create the tables if needed, check the embedder matches the index."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def _keep_embedder(self) -> None:
        """At `open`, the tables made: the index keeps the embeddings it was built with
        (`must_record_embedder`); this one's are its embedder's name, "none" without
        vectors."""
        want = self.embedder.name if self.embedder is not None and self.vectors else "none"
        recorded, empty = await self._recorded_embedder()
        if must_record_embedder(
            recorded, want=want, empty=empty, index=self.url, elsewhere=self.elsewhere
        ):
            await self._record_embedder(want)

    @abstractmethod
    async def _recorded_embedder(self) -> tuple[str | None, bool]:
        """The embeddings the index records (None: none yet) and whether it has no chunk."""

    @abstractmethod
    async def _record_embedder(self, name: str) -> None:
        """Record `name` as the index's embeddings."""

    async def upsert(self, documents: Sequence[Document]) -> UpsertReport:
        """Index documents; only changed chunks are embedded and written."""
        report = UpsertReport(documents=len(documents))
        plans: list[DocumentPlan] = []
        for doc, (digest, ids) in zip(documents, await self._stored(documents), strict=True):
            plan = plan_document(doc, digest, ids)
            if plan is None:
                report.unchanged_documents += 1
            else:
                plans.append(plan)
        new = [c for p in plans for c in p.new]
        embeddings: list[Any] = [None] * len(new)
        if self.vectors and self.embedder is not None and new:
            embeddings = list(await self.embedder.embed([c.text for c in new]))
        if plans:
            await self._write(plans, {c.id: e for c, e in zip(new, embeddings, strict=True)})
        report.added_chunks = len(new)
        report.kept_chunks = sum(len(p.chunks) - len(p.new) for p in plans)
        report.deleted_chunks = sum(len(p.stale) for p in plans)
        return report

    @abstractmethod
    async def _stored(self, documents: Sequence[Document]) -> list[tuple[str | None, set[str]]]:
        """For each document, in order: the hash it was indexed with (None: never) and the
        ids of its chunks."""

    @abstractmethod
    async def _write(self, plans: list[DocumentPlan], new: dict[str, Any]) -> None:
        """Carry out `plans` in one transaction: each document's row, its stale chunks
        deleted, its new chunks (the keys of `new`, to their embedding: a float32 row, or
        None without vectors) inserted and its kept ones renumbered."""

    @abstractmethod
    async def delete(self, document_ids: Sequence[str]) -> int:
        """Remove documents and their chunks; returns how many documents were removed."""

    async def search(
        self,
        query: str,
        *,
        k: int = 5,
        filter: MetadataFilter | None = None,
        mode: SearchMode = "hybrid",
    ) -> list[Hit]:
        """At most `k` hits, best first.

        Each ranking the mode asks for (`_lexical`, `_vector`) reads `CANDIDATES` or `4k`
        chunks, whichever is more; `hybrid` fuses the two by reciprocal rank fusion.

        Raises:
            ConfigError: a key of `filter` is not letters, digits, '_' or '-' (`check_filter`).
        """
        if k <= 0:
            return []
        check_filter(filter)  # the rankings put its keys in their SQL
        if not self.vectors:
            mode = "lexical"
        depth = max(CANDIDATES, 4 * k)
        terms = query_terms(query)  # none: no word carries meaning, nothing matches lexically
        lexical = await self._lexical(terms, depth, filter) if mode != "vector" and terms else []
        vector = await self._vector(query, depth, filter) if mode != "lexical" else []
        if mode == "hybrid":
            ranked = reciprocal_rank_fusion([[c for c, _ in lexical], [c for c, _ in vector]])
        else:
            ranked = lexical or vector
        return await self._hits(ranked[:k], mode)

    @abstractmethod
    async def _lexical(
        self, terms: list[str], depth: int, flt: MetadataFilter | None
    ) -> list[tuple[str, float]]:
        """At most `depth` (chunk key, score) pairs matching any of `terms` (a query's
        `query_terms`, not empty), best first."""

    @abstractmethod
    async def _vector(
        self, query: str, depth: int, flt: MetadataFilter | None
    ) -> list[tuple[str, float]]:
        """At most `depth` (chunk key, similarity) pairs nearest `query`, best first."""

    async def _hits(self, ranked: list[tuple[str, float]], mode: SearchMode) -> list[Hit]:
        """The `Hit`s of ranked chunk keys, in that order."""
        if not ranked:
            return []
        chunks = await self._chunks([key for key, _ in ranked])
        return [
            Hit(
                chunk_id=chunk.chunk_id,
                document_id=chunk.document_id,
                text=chunk.text,
                score=score,
                tokens=chunk.tokens,
                metadata={**chunk.metadata, "heading": chunk.heading},
                relevance=relevance(score, mode),
            )
            for key, score in ranked
            for chunk in (chunks[key],)
        ]

    @abstractmethod
    async def _chunks(self, keys: list[str]) -> dict[str, StoredChunk]:
        """The stored chunks of these keys (the backend's own, as its rankings gave them)."""

    @abstractmethod
    async def stats(self) -> IndexStats:
        """Documents in the index with their chunk counts and metadata."""


_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "could",
        "do",
        "does",
        "did",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)


def query_terms(query: str) -> list[str]:
    """The search words of a natural-language query: lower-cased, de-duplicated, without
    stop words (so an OR query of them ranks by the words that carry meaning)."""
    import re

    seen: dict[str, None] = {}
    for word in re.findall(r"\w+", query.lower()):
        if word not in _STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


class DocumentPlan(BaseModel):
    """What upserting one document must do, given what the index holds."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    document: Document
    hash: str
    chunks: list[Any]
    new: list[Any]
    stale: list[str]


def plan_document(
    doc: Document, stored_hash: str | None, stored_ids: set[str], **chunking: int
) -> DocumentPlan | None:
    """The chunks to add and the chunk ids to delete; None when the document is unchanged."""
    from .chunking import chunk_text

    digest = document_hash(doc)
    if digest == stored_hash:
        return None
    unique: dict[str, Any] = {}
    for c in chunk_text(doc.id, doc.text, title=doc.title, **chunking):
        unique.setdefault(c.id, c)
    chunks = list(unique.values())
    return DocumentPlan(
        document=doc,
        hash=digest,
        chunks=chunks,
        new=[c for c in chunks if c.id not in stored_ids],
        stale=sorted(stored_ids - unique.keys()),
    )

"""Retrieval: an index of documents attached by URL, searched inside the context budget.

    async with open_retriever("sqlite:///.threadline/index.db") as index:
        await index.upsert([Document(id="policy", text=markdown)])
        hits = await index.search("can I cancel a basic economy ticket?", k=4)

`THREADLINE_RETRIEVAL` picks the backend (`sqlite:///...` embedded, `postgresql://...`)
and `THREADLINE_EMBEDDINGS` the embedder (`local`, `openai:MODEL`, `none`); swapping them
changes no agent code. The optional packages come with `pip install 'threadline[retrieval]'`
and are imported only when an index is opened.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import (
    Document,
    Hit,
    IndexStats,
    MetadataFilter,
    Retriever,
    SearchMode,
    UpsertReport,
    reciprocal_rank_fusion,
)
from .chunking import Chunk, chunk_text
from .embeddings import Embedder, LocalEmbedder, OpenAIEmbedder, open_embedder

__all__ = [
    "Chunk",
    "Document",
    "Embedder",
    "Hit",
    "IndexStats",
    "LocalEmbedder",
    "MetadataFilter",
    "OpenAIEmbedder",
    "Retriever",
    "SearchMode",
    "UpsertReport",
    "chunk_text",
    "open_embedder",
    "open_retriever",
    "reciprocal_rank_fusion",
]


def open_retriever(
    url: str, *, embeddings: str = "local", embedder: Embedder | None = None
) -> Retriever:
    """A retriever from a URL (not yet open: use `async with`).

    Args:
        url: `sqlite:///path.db` (embedded) or `postgresql://user@host/db?schema=name`.
        embeddings: `THREADLINE_EMBEDDINGS`: `local`, `openai:MODEL` or `none`.
        embedder: an `Embedder` object, used instead of `embeddings` when given.
    """
    chosen = embedder if embedder is not None else open_embedder(embeddings)
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from .sqlite import SQLiteRetriever

        return SQLiteRetriever.from_url(url, chosen)
    if scheme in ("postgres", "postgresql"):
        from .postgres import PostgresRetriever  # lazy: needs threadline[postgres]

        return PostgresRetriever.from_url(url, chosen)
    raise ConfigError(f"unknown retrieval URL {url!r}; use sqlite:///path.db or postgresql://...")

"""PostgreSQL-only behaviour: pgvector when the server has it, a loud lexical mode when not.

This test never skips on the extension: whichever branch the server is on is asserted
(the server here has no pgvector, so CI asserts the lexical-only mode and its warning)."""

from __future__ import annotations

import logging

import psycopg

from threadline.retrieval import Document, open_retriever


async def test_vectors_when_pgvector_exists_else_lexical_with_a_warning(
    postgres_url: str, pg_schema: str, embedder, caplog
) -> None:
    with psycopg.connect(postgres_url) as conn:
        has_vector = (
            conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
            is not None
        )
    caplog.set_level(logging.WARNING, logger="threadline.retrieval")
    url = f"{postgres_url}?schema={pg_schema}"
    async with open_retriever(url, embedder=embedder) as index:
        await index.upsert([Document(id="bags", text="Each extra checked suitcase costs $50.")])
        stats = await index.stats()
        if has_vector:
            assert index.vectors is True and stats.embedder == embedder.name
            hits = await index.search("luggage fee", k=1, mode="vector")
            assert hits[0].document_id == "bags" and 0 < hits[0].score <= 1
            assert not [r for r in caplog.records if "pgvector" in r.getMessage()]
        else:
            assert index.vectors is False and stats.vectors is False
            assert stats.embedder is None
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert any("no `vector` extension" in r.getMessage() for r in warnings)
            assert "lexical only" in index.notice  # type: ignore[attr-defined]
            assert await index.search("luggage fee", k=1, mode="vector") == []
            hits = await index.search("checked suitcase", k=1)
            assert hits[0].document_id == "bags"


async def test_lexical_by_choice_says_nothing(postgres_url: str, pg_schema: str, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="threadline.retrieval")
    async with open_retriever(f"{postgres_url}?schema={pg_schema}", embeddings="none") as index:
        assert index.vectors is False
    assert not caplog.records

"""The retrieval contract, run unchanged against every backend that runs here: the
embedded index on a real SQLite file and PostgreSQL (lexical: this server has no pgvector)
on the real server. Only the URL differs between the two."""

from __future__ import annotations

from pathlib import Path

import pytest

from threadline.errors import ConfigError
from threadline.retrieval import Document, Retriever, open_retriever
from threadline.retrieval.base import SearchMode
from threadline.retrieval.chunking import count_tokens

MANUAL = """# Runbook

## Restarting the queue

Drain the consumers first, then restart the broker with `systemctl restart broker`.
Wait for the health check to pass before resuming consumers.

## Rotating certificates

Certificates expire every ninety days. Renew them with the certbot timer and reload nginx.

## Paging policy

Page the on-call engineer only for customer-facing outages. Everything else waits for
business hours and goes into the ticket queue.
"""

BILLING = """# Billing

## Refunds

Refunds go back to the original payment method within five to seven business days.

## Invoices

Invoices are issued on the first day of each month and list every seat.
"""


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.db'}"
    base = request.getfixturevalue("postgres_url")
    schema = request.getfixturevalue("pg_schema")
    return f"{base}?schema={schema}"


def docs() -> list[Document]:
    return [
        Document(id="runbook", text=MANUAL, metadata={"team": "ops", "year": 2024}),
        Document(id="billing", text=BILLING, metadata={"team": "finance", "year": 2025}),
    ]


async def test_search_ranks_the_matching_chunk_first(url: str, embedder) -> None:
    async with open_retriever(url, embedder=embedder) as index:
        report = await index.upsert(docs())
        assert report.added_chunks >= 5 and report.unchanged_documents == 0
        for mode in ("hybrid", "lexical"):
            hits = await index.search("how do I renew an expiring certificate?", k=3, mode=mode)
            assert hits, mode
            assert hits[0].document_id == "runbook"
            assert "Certificates expire" in hits[0].text
            assert hits[0].metadata["heading"] == "Runbook > Rotating certificates"
            assert hits[0].metadata["team"] == "ops"
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            assert all(h.tokens == count_tokens(h.text) for h in hits)
            assert all(0 < h.relevance <= 1 for h in hits)
            assert [h.relevance for h in hits] == sorted((h.relevance for h in hits), reverse=True)
            assert len({h.chunk_id for h in hits}) == len(hits)


async def test_reindexing_writes_only_what_changed(url: str, embedder) -> None:
    async with open_retriever(url, embedder=embedder) as index:
        first = await index.upsert(docs())
        before = {h.chunk_id for h in await index.search("queue broker certificates paging", k=20)}
        again = await index.upsert(docs())
        assert again.unchanged_documents == 2 and again.added_chunks == 0
        edited = MANUAL.replace("ninety days", "sixty days")
        report = await index.upsert(
            [Document(id="runbook", text=edited, metadata=docs()[0].metadata)]
        )
        assert report.added_chunks == 1 and report.deleted_chunks == 1
        assert report.kept_chunks == first.added_chunks - 2 - 1  # billing has 2 chunks
        after = {h.chunk_id for h in await index.search("queue broker certificates paging", k=20)}
        assert len(before - after) == 1 and len(after - before) == 1
        hits = await index.search("certificates expire", k=1, mode="lexical")
        assert "sixty days" in hits[0].text


async def test_filter_and_delete(url: str, embedder) -> None:
    async with open_retriever(url, embedder=embedder) as index:
        await index.upsert(docs())
        hits = await index.search("refunds queue", k=5, filter={"team": "ops"})
        assert hits and {h.document_id for h in hits} == {"runbook"}
        hits = await index.search("refunds", k=5, filter={"team": ["ops", "finance"]})
        assert hits[0].document_id == "billing"
        assert await index.search("refunds", k=5, filter={"year": 2023}) == []
        assert await index.delete(["billing", "nope"]) == 1
        assert all(h.document_id == "runbook" for h in await index.search("refunds invoices", k=5))
        stats = await index.stats()
        assert [d["id"] for d in stats.documents] == ["runbook"]
        assert stats.documents[0]["chunks"] == 3
        assert stats.documents[0]["metadata"] == {"team": "ops", "year": 2024}


MODES: tuple[SearchMode, ...] = ("lexical", "vector", "hybrid")


async def test_a_filter_key_that_could_reach_the_sql_is_refused_by_every_search(url: str) -> None:
    async with open_retriever(url, embeddings="none") as index:
        await index.upsert(docs())
        bad = {"team') OR 1=1 --": "x"}
        # "the and of": no word to rank by, so no query runs; refused all the same
        for query in ("refunds", "the and of"):
            for mode in MODES:
                with pytest.raises(ConfigError, match="letters, digits"):
                    await index.search(query, k=5, filter=bad, mode=mode)
        assert await index.search("the and of", k=5, filter={"team": "ops"}) == []


async def test_the_index_persists_across_opens(url: str, embedder) -> None:
    async with open_retriever(url, embedder=embedder) as index:
        await index.upsert(docs())
    async with open_retriever(url, embedder=embedder) as index:
        hits = await index.search("page the on-call engineer", k=1)
        assert hits[0].metadata["heading"] == "Runbook > Paging policy"
        assert (await index.upsert(docs())).unchanged_documents == 2


async def test_k_zero_and_a_query_of_stop_words(url: str, embedder) -> None:
    index: Retriever
    async with open_retriever(url, embedder=embedder) as index:
        await index.upsert(docs())
        assert await index.search("certificates", k=0) == []
        assert await index.search("the and of", k=3, mode="lexical") == []

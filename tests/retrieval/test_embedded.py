"""The embedded index's own behaviour: vectors, fusion, the embedder guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from threadline.errors import ConfigError
from threadline.retrieval import Document, LocalEmbedder, open_retriever, reciprocal_rank_fusion

DOCS = [
    Document(id="pets", text="# Pets\n\nDogs and cats are allowed in the cabin in a carrier."),
    Document(id="food", text="# Meals\n\nA hot meal is served on flights longer than six hours."),
    Document(id="bags", text="# Bags\n\nEach extra checked suitcase costs fifty dollars."),
]


async def test_local_embedder_returns_unit_vectors_that_mean_something(embedder) -> None:
    rows = await embedder.embed(["cancel my flight", "I want to call off my trip", "tomatoes"])
    assert rows.shape == (3, 384) and rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    sims = rows @ rows.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    assert (await embedder.embed([])).shape == (0, 384)


async def test_vector_search_finds_a_paraphrase_with_no_shared_word(
    tmp_path: Path, embedder
) -> None:
    async with open_retriever(f"sqlite:///{tmp_path / 'i.db'}", embedder=embedder) as index:
        await index.upsert(DOCS)
        assert await index.search("luggage fee", k=3, mode="lexical") == []
        vec = await index.search("luggage fee", k=3, mode="vector")
        assert vec[0].document_id == "bags"
        hybrid = await index.search("luggage fee", k=3)
        assert hybrid[0].document_id == "bags"


async def test_lexical_only_index_answers_hybrid_lexically(tmp_path: Path) -> None:
    async with open_retriever(f"sqlite:///{tmp_path / 'i.db'}", embeddings="none") as index:
        assert index.vectors is False
        await index.upsert(DOCS)
        hits = await index.search("hot meal", k=2)
        assert hits[0].document_id == "food"
        assert hits == await index.search("hot meal", k=2, mode="lexical")


async def test_an_index_refuses_a_different_embedder(tmp_path: Path, embedder) -> None:
    url = f"sqlite:///{tmp_path / 'i.db'}"
    async with open_retriever(url, embedder=embedder) as index:
        await index.upsert(DOCS)
    with pytest.raises(ConfigError, match="all-MiniLM-L6-v2-int8"):
        async with open_retriever(url, embeddings="none"):
            pass


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "b", "d"]])
    assert [k for k, _ in fused] == ["c", "b", "a", "d"]  # 1/63 + 1/61 > 2/62 > 1/61
    assert fused[1][1] == pytest.approx(2 / 62)
    tie = reciprocal_rank_fusion([["a", "b"], ["b", "a"]])
    assert [k for k, _ in tie] == ["a", "b"]  # equal scores keep first appearance


def test_relevance_maps_each_mode_to_unit_range() -> None:
    from threadline.retrieval.base import relevance

    assert relevance(2 / 61, "hybrid") == 1.0  # first in both rankings
    assert relevance(1 / 61, "hybrid") == 0.5  # first in one, absent from the other
    assert relevance(0.8, "vector") == 0.8 and relevance(-0.2, "vector") == 0.0
    assert relevance(1.0, "lexical") == 0.5 and relevance(0.0, "lexical") == 0.0


def test_unknown_urls_and_embeddings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="sqlite:///"):
        open_retriever("redis://x", embeddings="none")
    with pytest.raises(ConfigError, match="openai:MODEL"):
        open_retriever("sqlite:///x.db", embeddings="cohere:x")
    with pytest.raises(ConfigError, match="letters"):
        from threadline.retrieval.base import check_filter

        check_filter({"a'b": 1})


def test_local_embedder_is_the_default() -> None:
    index = open_retriever("sqlite:///x.db")
    assert isinstance(index.embedder, LocalEmbedder)  # type: ignore[attr-defined]

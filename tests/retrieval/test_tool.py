"""The search_knowledge tool and the query policies, through a real runtime and index."""

from __future__ import annotations

from pathlib import Path

import pytest

from threadline import Agent, MemoryStore, RetrievalPolicy, Runtime, Status
from threadline.errors import ConfigError
from threadline.retrieval import Document, open_retriever
from threadline.retrieval.tool import knowledge_tool, retrieval_settings
from threadline.testing import ScriptedModel, intent


async def test_model_policy_searches_only_when_the_model_asks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    async with open_retriever(url, embeddings="none") as index:
        await index.upsert([Document(id="wifi", text="# Wifi\n\nWifi costs eight dollars.")])
    search = knowledge_tool(url, k=2, embeddings="none", name="lookup_docs")
    settings = retrieval_settings(search, query="model", share=0.3)
    assert not settings.prefetch and settings.retrieved_share == 0.3
    assert settings.retrieval == RetrievalPolicy("lookup_docs", "model", "static")
    assert settings.retrieval.prefetch_steps() == []
    agent = Agent("kb", tools=[search], instructions="Answer.", context=settings)
    model = ScriptedModel(
        [intent("lookup_docs", query="wifi price"), intent("done_for_now", message="$8")]
    )
    thread = await Runtime(MemoryStore(), model=model).launch(agent, "How much is wifi?")
    assert thread.status == Status.DONE
    kinds = [e.kind for e in thread.events]
    assert kinds[:2] == ["user_message", "model_call"]
    [result] = [e for e in thread.events if e.kind == "tool_result"]
    assert result.result[0]["document_id"] == "wifi"
    assert result.result[0]["heading"] == "Wifi"
    assert "Wifi costs eight dollars." in result.result[0]["text"]
    assert "Wifi costs eight dollars." in model.contexts[1].as_text()


def test_bad_policies_are_config_errors() -> None:
    search = knowledge_tool("sqlite:///x.db", embeddings="none")
    with pytest.raises(ConfigError, match="share"):
        retrieval_settings(search, share=1.0)
    with pytest.raises(ConfigError, match="query policy"):
        retrieval_settings(search, query="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="split"):
        retrieval_settings(search, split="sometimes")  # type: ignore[arg-type]

"""Retrieval as an intent: the `search_knowledge` tool and the agent's query policy.

    index = knowledge_tool("sqlite:///.threadline/index.db", k=4)
    agent = Agent("policy_qa", tools=[index], context=retrieval_settings(index, share=0.6))

Two query policies (`retrieval_settings(query=...)`, kept in `ContextSettings.retrieval`):

* `"latest_user_message"` (default): the agent's configuration, not the model, searches
  every user message (the launch message and each later `message`), as a pre-fetched
  `search_knowledge` call before the next model call (appendix factor 13). The model can
  still search again in its own words.
* `"model"`: only the model searches, by choosing the `search_knowledge` intent with a query
  it writes.

Either way the chunks come back as the tool's result, a list of hits best first, each
with its chunk id, document id, score, relevance (0-1), token count, heading and text.
That result is an event in the thread, so replay re-derives every event from the log
without the index (tools are never re-run on replay), and the renderer budgets it as
retrieved material: at most the agent's retrieval share of the window, cut from the worst
hit up with a pointer to the event.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..context.settings import ContextSettings, RetrievalPolicy
from ..errors import ConfigError
from ..tools import Tool
from .base import MetadataFilter, SearchMode
from .embeddings import Embedder, open_embedder

__all__ = ["SearchKnowledge", "knowledge_tool", "retrieval_settings"]

QueryPolicy = Literal["latest_user_message", "model"]


class SearchKnowledge(BaseModel):
    """Search the knowledge base for passages that answer a question."""

    query: str = Field(
        min_length=1,
        max_length=2000,
        description="What to look for, in plain words (a question or key phrases).",
    )


def knowledge_tool(
    index: str | None = None,
    *,
    k: int = 4,
    filter: MetadataFilter | None = None,
    mode: SearchMode = "hybrid",
    embeddings: str | None = None,
    embedder: Embedder | None = None,
    name: str = "search_knowledge",
    description: str = (
        "Search the knowledge base (policies, manuals) for passages relevant to a question. "
        "Use it before answering anything the conversation does not already settle."
    ),
) -> Tool:
    """A read-only tool that searches an index and returns its hits best first.

    Args:
        index: the index URL; None reads `THREADLINE_RETRIEVAL` when the tool first runs.
        k: hits per search.
        filter: metadata filter applied to every search.
        mode: `hybrid`, `lexical` or `vector`.
        embeddings: `THREADLINE_EMBEDDINGS` spec; None reads the setting at first run.
        embedder: an embedder object to share (overrides `embeddings`).
    """
    state: dict[str, Any] = {}

    async def search_knowledge(query: str) -> list[dict[str, Any]]:
        from . import open_retriever

        url, spec = index, embeddings
        if url is None or spec is None:
            from ..settings import Settings

            cfg = Settings()
            url, spec = url or cfg.retrieval, spec or cfg.embeddings
        if "embedder" not in state:  # loaded once per tool: the ONNX session is reused
            state["embedder"] = embedder if embedder is not None else open_embedder(spec)
        async with open_retriever(url, embedder=state["embedder"], embeddings=spec) as r:
            hits = await r.search(query, k=k, filter=filter, mode=mode)
        return [
            {
                "chunk_id": h.chunk_id,
                "document_id": h.document_id,
                "score": round(h.score, 6),
                "relevance": h.relevance,
                "tokens": h.tokens,
                "heading": h.metadata.get("heading", ""),
                "text": h.text,
            }
            for h in hits
        ]

    return Tool(
        name,
        SearchKnowledge,
        search_knowledge,
        description=description,
        side_effects=False,
        idempotent=True,
    )


def retrieval_settings(
    tool: Tool,
    *,
    query: QueryPolicy = "latest_user_message",
    share: float = 0.5,
    split: Literal["static", "dynamic"] = "static",
    **settings: Any,
) -> ContextSettings:
    """`ContextSettings` that attach a retriever with a query policy and a retrieval share.

    Args:
        tool: the agent's `knowledge_tool` (also list it in `Agent(tools=...)`).
        query: who writes the query (see the module docstring).
        share: the share of the window left after the system prompt, tools and output
            reservation that retrieved material may take; the rest is history's.
        split: `static` keeps `share`; `dynamic` moves it per call (`budget.dynamic_share`).
        settings: any other `ContextSettings` field (`context_window`, `prefetch`, ...).

    Raises:
        ConfigError: a share outside [0, 1), or an unknown policy or split.
    """
    if not 0.0 <= share < 1.0:
        raise ConfigError(f"retrieval share must be in [0, 1), got {share}")
    retrieval = RetrievalPolicy(tool=tool.name, query=query, split=split)
    return ContextSettings(retrieved_share=share, retrieval=retrieval, **settings)

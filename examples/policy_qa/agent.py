"""Answers airline-policy questions from the indexed tau-bench airline policy.

The policy (../shared/data/tau-bench-airline) is indexed once, then every question is
answered from the passages retrieved for it:

    python examples/policy_qa/agent.py index          # writes THREADLINE_RETRIEVAL
    threadline run examples/policy_qa/agent.py:agent \
        "Can I get my money back for a basic economy ticket I booked last week?"

Every user message is searched before the next model call (a pre-fetched
`search_knowledge` call); the model may search again in its own words. The retrieved
chunks are recorded in the thread, so `threadline replay` needs no index.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from threadline import Agent
from threadline.retrieval import Document, UpsertReport, open_retriever
from threadline.retrieval.tool import knowledge_tool, retrieval_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from knowledge import load_policy

POLICY_ID = "airline-policy"

search_knowledge = knowledge_tool(k=4)  # THREADLINE_RETRIEVAL / THREADLINE_EMBEDDINGS

agent = Agent(
    name="policy_qa",
    tools=[search_knowledge],
    instructions=(
        "You answer customers' questions about the airline's policy. Answer only from the "
        "policy passages that search_knowledge returned; name the section you rely on. If "
        "the passages do not settle the question, search again with other words, or say "
        "that the policy does not cover it. Finish with done_for_now and the answer."
    ),
    context=retrieval_settings(search_knowledge, query="latest_user_message", share=0.6),
)


async def index_policy(url: str | None = None, embeddings: str | None = None) -> UpsertReport:
    """Index the airline policy (a no-op when it is already indexed and unchanged)."""
    from threadline.settings import Settings

    cfg = Settings()
    async with open_retriever(
        url or cfg.retrieval, embeddings=embeddings or cfg.embeddings
    ) as index:
        doc = Document(id=POLICY_ID, text=load_policy(), metadata={"source": "tau-bench"})
        return await index.upsert([doc])


if __name__ == "__main__":
    if sys.argv[1:] == ["index"]:
        print(asyncio.run(index_policy()))
    else:
        sys.exit("usage: python examples/policy_qa/agent.py index")

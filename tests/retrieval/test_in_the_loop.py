"""Retrieval in the run loop: every user message searched, only the latest search budgeted
as retrieved, replay without the index, the dynamic split."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from threadline import Agent, MemoryStore, Runtime, Status
from threadline.context.budget import dynamic_share
from threadline.context.renderer import best_relevance, retrieved_indexes
from threadline.events import Thread, ToolCall, ToolResult, UserMessage
from threadline.prompts import renderer_for
from threadline.replay import replay_thread
from threadline.retrieval import Document, open_retriever
from threadline.retrieval.tool import knowledge_tool, retrieval_settings
from threadline.testing import ScriptedModel, intent

AT = datetime(2024, 1, 1, tzinfo=UTC)
DOCS = [
    Document(id="wifi", text="# Wifi\n\nOnboard wifi costs eight dollars per flight."),
    Document(
        id="pets", text="# Pets\n\nSmall pets (a cat or a dog) travel in the cabin in a carrier."
    ),
]


@pytest.fixture
async def index_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    async with open_retriever(url, embeddings="none") as index:
        await index.upsert(DOCS)
    return url


def delete_files(folder: Path, pattern: str) -> None:
    for path in list(folder.glob(pattern)):
        path.unlink()


def qa_agent(url: str, **context: object) -> Agent:
    search = knowledge_tool(url, k=1, embeddings="none")
    return Agent(
        "qa",
        tools=[search],
        instructions="Answer from the passages.",
        context=retrieval_settings(search, share=0.5, **context),  # type: ignore[arg-type]
    )


async def test_each_user_message_is_searched_and_older_searches_age_into_history(
    index_url: str, tmp_path: Path
) -> None:
    agent = qa_agent(index_url)
    model = ScriptedModel(
        [intent("done_for_now", message="$8"), intent("done_for_now", message="in a carrier")]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(agent, "How much is the wifi?")
    assert thread.status == Status.DONE
    thread = await rt.message(thread.id, "Can my cat come along?")
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE

    calls = [e for e in thread.events if isinstance(e, ToolCall) and e.tool == "search_knowledge"]
    second_message = next(e.seq for e in thread.events[1:] if isinstance(e, UserMessage))
    assert [c.call_id for c in calls] == ["prefetch-1", f"prefetch-m{second_message}-1"]
    assert calls[1].arguments == {"query": "Can my cat come along?"}
    results = [e for e in thread.events if isinstance(e, ToolResult)]
    assert [r.result[0]["document_id"] for r in results] == ["wifi", "pets"]

    # The second model call saw the pets passage as retrieved material (before the history)
    # and the wifi passage in the history, where it was found.
    seen = model.contexts[1].as_text()
    assert seen.index("Small pets (a cat") < seen.index("How much is the wifi?")
    assert seen.index("How much is the wifi?") < seen.index("Onboard wifi costs")
    retrieved = retrieved_indexes(thread, "search_knowledge")
    assert {thread.events[i].seq for i in retrieved} == {calls[1].seq, results[1].seq}

    recorded = await rt.store.load(thread.id)
    delete_files(tmp_path, "kb.db*")
    derived = replay_thread(agent, recorded)
    assert [e.model_dump(exclude={"at"}) for e in derived.events] == [
        e.model_dump(exclude={"at"}) for e in recorded.events
    ]


def test_dynamic_share_moves_with_turns_and_relevance() -> None:
    assert dynamic_share(0.5, 0, 0.5) == 0.5
    assert dynamic_share(0.5, 0, 1.0) == 0.75  # a sure hit gets more room
    assert dynamic_share(0.5, 0, 0.0) == 0.25  # a miss gets less
    assert dynamic_share(0.5, 4, 0.5) == 0.4  # a longer conversation wants more history
    assert dynamic_share(0.5, 100, 0.5) == 0.25  # ... down to half the share
    assert dynamic_share(0.8, 0, 1.0) == 0.9 and dynamic_share(0.05, 50, 0.0) == 0.05


def searched_thread(relevance: float) -> Thread:
    thread = Thread("t", "qa")
    thread.append(UserMessage(seq=0, at=AT, text="wifi price?"))
    thread.append(
        ToolCall(
            seq=1,
            at=AT,
            call_id="prefetch-1",
            tool="search_knowledge",
            version="1",
            arguments={"query": "wifi price?"},
        )
    )
    hits = [
        {
            "chunk_id": "c",
            "document_id": "wifi",
            "score": 1.0,
            "relevance": relevance,
            "tokens": 300,
            "heading": "Wifi",
            "text": "wifi " * 300,
        }
    ]
    thread.append(
        ToolResult(seq=2, at=AT, call_id="prefetch-1", tool="search_knowledge", result=hits)
    )
    return thread


@pytest.mark.parametrize("split", ["static", "dynamic"])
def test_the_split_is_static_or_moves_with_relevance(index_url: str, split: str) -> None:
    agent = qa_agent(
        index_url, split=split, context_window=1200, max_output_tokens=100, max_result_tokens=1000
    )
    renderer = renderer_for(agent)
    caps = {}
    for relevance in (0.0, 1.0):
        thread = searched_thread(relevance)
        assert best_relevance(thread, retrieved_indexes(thread, "search_knowledge")) == relevance
        rendered = renderer.render(thread)
        layout = rendered.layout
        caps[relevance] = layout.retrieved_cap
        assert 0 < rendered.sections["retrieved"] <= layout.retrieved_cap
        assert rendered.context.input_tokens <= 1200 - 100
        assert "[truncated: full result in event 2]" in rendered.context.as_text()
    if split == "static":
        assert caps[0.0] == caps[1.0]
    else:
        assert caps[1.0] == pytest.approx(3 * caps[0.0], abs=2)  # 1.5x against 0.5x


def test_results_share_the_retrieval_room_like_water() -> None:
    from threadline.context.budget import _fit_retrieved

    events = [
        UserMessage(seq=0, at=AT, text="q"),
        ToolCall(seq=1, at=AT, call_id="a", tool="s", version="1", arguments={}),
        ToolResult(seq=2, at=AT, call_id="a", tool="s", result="small"),
        ToolCall(seq=3, at=AT, call_id="b", tool="s", version="1", arguments={}),
        ToolResult(seq=4, at=AT, call_id="b", tool="s", result="big"),
    ]
    size = {1: 20, 2: 100, 3: 20, 4: 2000}

    def tokens(i: int, reduced: bool) -> int:
        return size[i]

    assert _fit_retrieved(events, [1, 2, 3, 4], tokens, 5000) == (2140, False, None)
    # 1,000 of room: the calls take 40, the small result keeps its 100, the big one gets
    # the other 860: the share is filled, not split evenly (which would waste 380).
    assert _fit_retrieved(events, [1, 2, 3, 4], tokens, 1000) == (1000, True, 860)
    # Two big results split the room evenly.
    size[2] = 2000
    assert _fit_retrieved(events, [1, 2, 3, 4], tokens, 1000) == (1000, True, 480)
    # Not even a pointer fits next to the calls: reported as over (the planner raises).
    planned, _, limit = _fit_retrieved(events, [1, 2, 3, 4], tokens, 60)
    assert planned > 60 and limit is None

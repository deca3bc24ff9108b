"""context/retrieved.py: which events are budgeted as retrieved material (pre-fetched
searches, and the retriever's searches since the latest user message) and how relevant
the best hit among them is."""

from __future__ import annotations

from threadline.context.retrieved import best_relevance, retrieved_indexes
from threadline.events import (
    PREFETCH_PREFIX,
    ModelCall,
    Thread,
    ToolCall,
    ToolResult,
    UserMessage,
    utcnow,
)

NOW = utcnow()


def _call(seq: int, call_id: str, tool: str = "search") -> ToolCall:
    return ToolCall(seq=seq, at=NOW, call_id=call_id, tool=tool, version="1", arguments={})


def _hits(seq: int, call_id: str, *relevance: float, tool: str = "search") -> ToolResult:
    result = [{"text": f"hit {r}", "relevance": r} for r in relevance]
    return ToolResult(seq=seq, at=NOW, call_id=call_id, tool=tool, result=result)


def _thread() -> Thread:
    pre = f"{PREFETCH_PREFIX}0"
    return Thread(
        "th_r",
        "a",
        [
            UserMessage(seq=0, at=NOW, text="refund policy?"),
            _call(1, pre),
            _hits(2, pre, 0.4),
            ModelCall(seq=3, at=NOW, model="m"),
            _call(4, "c1"),
            _hits(5, "c1", 0.9),
            _call(6, "c2", tool="lookup"),
            ToolResult(seq=7, at=NOW, call_id="c2", tool="lookup", result="order 7"),
        ],
    )


def test_prefetched_searches_and_the_retrievers_latest_ones_are_retrieved() -> None:
    thread = _thread()
    assert retrieved_indexes(thread) == [1, 2]  # no retriever: the pre-fetch only
    assert retrieved_indexes(thread, "search") == [1, 2, 4, 5]  # other tools are history
    thread.append(UserMessage(seq=8, at=NOW, text="and for shoes?"))
    thread.append(_call(9, "c3"))
    thread.append(_hits(10, "c3", 0.2))
    # A new user message ages the earlier searches into history.
    assert retrieved_indexes(thread, "search") == [9, 10]


def test_the_best_relevance_among_the_retrieved_hits() -> None:
    thread = _thread()
    assert best_relevance(thread, [1, 2, 4, 5]) == 0.9
    assert best_relevance(thread, [1, 2]) == 0.4
    assert best_relevance(thread, [6, 7]) == 0.0  # a plain result says nothing
    assert best_relevance(thread, []) == 0.0

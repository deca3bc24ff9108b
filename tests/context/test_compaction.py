"""Compaction's summaries: the deterministic digest (folded incrementally) and a model's."""

from __future__ import annotations

from datetime import UTC, datetime

from threadline.context.compaction import DigestCache, LLMSummariser, digest, previous_summary
from threadline.events import (
    Compacted,
    Event,
    InvalidOutput,
    Thread,
    ToolCall,
    ToolResult,
    UserMessage,
)
from threadline.models.base import Context
from threadline.testing import FunctionModel

AT = datetime(2024, 1, 1, tzinfo=UTC)


def _events() -> list[Event]:
    return [
        UserMessage(seq=0, at=AT, text="Add up the numbers."),
        ToolCall(seq=1, at=AT, call_id="c1", tool="add", version="1", arguments={"a": 1}),
        ToolResult(seq=2, at=AT, call_id="c1", tool="add", result=3),
        InvalidOutput(seq=3, at=AT, reason="not JSON"),
        UserMessage(seq=4, at=AT, text="and now 4"),
    ]


def test_the_digest_keeps_the_request_the_calls_and_the_errors() -> None:
    text = digest(_events())
    assert text.startswith("Events 0-4 are summarised here")
    assert "First request: Add up the numbers." in text
    assert "Tool calls: add x1." in text and "Errors: 1" in text
    assert "[1] add {a: 1} -> 3" in text
    assert "[4] user: and now 4" in text


def test_the_fold_is_incremental_and_restarts_when_the_thread_differs() -> None:
    thread = Thread("t", "a", _events()[:3])
    cache = DigestCache()
    first = cache.fold(thread, 2, frozenset())
    thread.extend(_events()[3:])
    again = cache.fold(thread, 4, frozenset())
    assert again is first and again.upto == 4 and again.errors == 1
    other = Thread("t", "a", [UserMessage(seq=0, at=AT, text="something else")])
    fresh = cache.fold(other, 0, frozenset())
    assert fresh.first_request == "something else"


def test_the_previous_summary_is_the_latest_that_ends_in_time() -> None:
    thread = Thread("t", "a", _events())
    thread.append(Compacted(seq=5, at=AT, from_seq=0, to_seq=2, summary="early"))
    assert previous_summary(thread, 4) == ("early", 2)
    assert previous_summary(thread, 1) is None


async def test_a_model_summarises_the_span_in_the_compact_form() -> None:
    seen: list[Context] = []

    def answer(context: Context) -> str:
        seen.append(context)
        return "  The user adds numbers.  "

    text = await LLMSummariser(FunctionModel(answer))(_events(), "before")
    assert text == "The user adds numbers."
    body = seen[0].messages[0].content
    assert body.startswith("<previous_summary>\nbefore\n</previous_summary>")
    assert "<user>Add up the numbers.\n" in body and "\n<add_result>3\n" in body

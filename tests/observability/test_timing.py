"""observability/timing.py: when the work an event records started, from the thread alone
(what step latencies and span starts use)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from threadline.events import (
    ModelCall,
    ModelError,
    Paused,
    Thread,
    ToolCall,
    ToolError,
    ToolResult,
    ToolStarted,
    UserMessage,
)
from threadline.observability.timing import work_started

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _thread() -> Thread:
    return Thread(
        "th_t",
        "a",
        [
            UserMessage(seq=0, at=_at(0), text="go"),
            ModelCall(seq=1, at=_at(3), model="m", latency_ms=2500),
            ToolCall(seq=2, at=_at(3), call_id="c1", tool="read", version="1", arguments={}),
            ToolResult(seq=3, at=_at(4), call_id="c1", tool="read", result="x"),
            ToolCall(seq=4, at=_at(5), call_id="c2", tool="pay", version="1", arguments={}),
            ToolStarted(seq=5, at=_at(6), call_id="c2", idempotency_key="k", attempt=1),
            ToolError(
                seq=6, at=_at(9), call_id="c2", tool="pay", error_type="E", message="declined"
            ),
            ModelError(seq=7, at=_at(12), model="m", error_type="Timeout", message="slow"),
            Paused(seq=8, at=_at(13)),
        ],
    )


def test_each_kind_of_work_starts_where_its_record_says() -> None:
    thread = _thread()
    events = thread.events
    # A model call: its own latency back from when it was appended.
    assert work_started(thread, events[1], 1) == _at(0.5)
    # A read-only tool: right after the batch it followed (the call's append).
    assert work_started(thread, events[3], 3) == _at(3)
    # A tool with side effects: its tool_started checkpoint.
    assert work_started(thread, events[6], 6) == _at(6)
    # A failed model call: after the batch it followed.
    assert work_started(thread, events[7], 7) == _at(9)
    # Bookkeeping records no work.
    assert work_started(thread, events[8], 8) is None
    assert work_started(thread, events[0], 0) is None


def test_a_batch_at_the_start_of_a_thread_falls_back_to_the_event_time() -> None:
    thread = _thread()
    assert work_started(thread, thread.events[7], 0) == _at(12)

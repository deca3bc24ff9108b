"""Events and Thread: lossless JSON, derived state, old schema versions, corrupt input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from threadline import CorruptEvent, Status, Thread
from threadline.events import (
    Approval,
    ApprovalRequested,
    Done,
    Escalated,
    HumanRequest,
    HumanResponse,
    InvalidOutput,
    ModelCall,
    Paused,
    RawToolCall,
    Resumed,
    ThreadState,
    ToolCall,
    ToolError,
    ToolResult,
    UserMessage,
    event_from_dict,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures"


def test_thread_json_round_trip_is_lossless() -> None:
    thread = Thread("th_1", "calc", metadata={"k": [1, "x", None]})
    thread.extend(
        [
            UserMessage(seq=0, at=T0, text="héllo ✓", channel="slack", sender="ana"),
            ModelCall(
                seq=1,
                at=T0,
                model="m",
                output="x",
                input_tokens=3,
                output_tokens=4,
                cost_usd=0.001,
                tool_calls=(RawToolCall(id="t1", name="add", arguments="{"),),
            ),
            ToolCall(seq=2, at=T0, call_id="c2", tool="add", version="2", arguments={"a": 1.5}),
            ToolResult(seq=3, at=T0, call_id="c2", tool="add", result={"nested": [1, {"x": None}]}),
        ]
    )
    data = json.loads(json.dumps(thread.to_dict()))
    again = Thread.from_dict(data)
    assert again.events == thread.events
    assert again.metadata == thread.metadata
    assert again.created_at == thread.created_at
    assert again.state.to_dict() == thread.state.to_dict()


def test_prompt_cache_counts_are_left_out_of_the_json_when_absent() -> None:
    """Optional fields added after events were stored: an event without them serialises
    exactly as before (same keys, same text), and with them round-trips."""
    plain = ModelCall(seq=1, at=T0, model="m", input_tokens=3, output_tokens=4)
    assert list(json.loads(plain.model_dump_json())) == [
        "seq",
        "at",
        "kind",
        "model",
        "prompt_name",
        "prompt_version",
        "prompt_hash",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_ms",
        "output",
        "tool_calls",
    ]
    assert event_from_dict(json.loads(plain.model_dump_json())) == plain
    cached = plain.model_copy(update={"cache_read_tokens": 2})
    data = json.loads(cached.model_dump_json())
    assert data["cache_read_tokens"] == 2 and "cache_write_tokens" not in data
    assert event_from_dict(data) == cached
    with pytest.raises(CorruptEvent):  # a count is never negative
        event_from_dict({**data, "cache_write_tokens": -1})


def test_thread_written_by_schema_version_0_still_loads() -> None:
    data = json.loads((FIXTURES / "thread_v0.json").read_text())
    thread = Thread.from_dict(data)
    assert thread.status == Status.DONE
    assert [e.kind for e in thread.events][:3] == ["user_message", "model_call", "tool_call"]
    call = thread.events[2]
    assert isinstance(call, ToolCall) and call.tool == "add" and call.version == "1"
    assert thread.state.input_tokens == 120


def test_unknown_event_kind_is_a_clear_corrupt_event_error() -> None:
    with pytest.raises(CorruptEvent) as info:
        event_from_dict({"kind": "teleported", "seq": 4, "at": T0.isoformat()}, thread_id="th_x")
    assert info.value.thread_id == "th_x" and info.value.seq == 4
    assert "kind" in str(info.value) or "teleported" in str(info.value)


def test_events_are_frozen() -> None:
    event = UserMessage(seq=0, at=T0, text="x")
    with pytest.raises(Exception):
        event.text = "y"  # type: ignore[misc]


def test_thread_rejects_a_gap_in_seq() -> None:
    thread = Thread("th_1", "a", [UserMessage(seq=0, at=T0, text="x")])
    with pytest.raises(CorruptEvent) as info:
        thread.append(UserMessage(seq=2, at=T0, text="y"))
    assert info.value.seq == 2
    assert len(thread) == 1  # nothing half-written


def test_status_is_derived_through_a_whole_life() -> None:
    t = Thread("th_1", "a")
    steps: list[tuple[object, Status]] = [
        (UserMessage(seq=0, at=T0, text="go"), Status.RUNNING),
        (
            ToolCall(seq=1, at=T0, call_id="c1", tool="deploy", version="1", arguments={}),
            Status.RUNNING,
        ),
        (
            ApprovalRequested(seq=2, at=T0, call_id="c1", tool="deploy", arguments={}),
            Status.AWAITING_APPROVAL,
        ),
        (Paused(seq=3, at=T0), Status.PAUSED),
        (Resumed(seq=4, at=T0), Status.AWAITING_APPROVAL),
        (Approval(seq=5, at=T0, call_id="c1", approved=True), Status.RUNNING),
        (ToolResult(seq=6, at=T0, call_id="c1", tool="deploy", result="ok"), Status.RUNNING),
        (
            ToolCall(
                seq=7,
                at=T0,
                call_id="c7",
                tool="request_more_information",
                version="1",
                arguments={"message": "which?"},
            ),
            Status.RUNNING,
        ),
        (HumanRequest(seq=8, at=T0, request_id="c7", question="which?"), Status.AWAITING_HUMAN),
        (HumanResponse(seq=9, at=T0, request_id="c7", text="v2"), Status.RUNNING),
        (Done(seq=10, at=T0, message="ok"), Status.DONE),
        (UserMessage(seq=11, at=T0, text="again"), Status.RUNNING),
        (Escalated(seq=12, at=T0, reason="x"), Status.ESCALATED),
    ]
    for event, status in steps:
        t.append(event)  # type: ignore[arg-type]
        assert t.status == status, (event, t.status)
    assert not t.state.pending


def test_consecutive_errors_count_and_reset() -> None:
    t = Thread("th_1", "a", [UserMessage(seq=0, at=T0, text="go")])
    t.append(InvalidOutput(seq=1, at=T0, reason="bad"))
    t.append(ToolCall(seq=2, at=T0, call_id="c2", tool="x", version="1", arguments={}))
    t.append(ToolError(seq=3, at=T0, call_id="c2", tool="x", error_type="E", message="m"))
    assert t.state.consecutive_errors == 2
    t.append(ToolCall(seq=4, at=T0, call_id="c4", tool="x", version="1", arguments={}))
    t.append(ToolResult(seq=5, at=T0, call_id="c4", tool="x", result=1))
    assert t.state.consecutive_errors == 0


# -- property: the incremental fold equals a full refold, and survives serialisation ---------

_texts = st.text(max_size=20)


@st.composite
def event_lists(draw: st.DrawFn) -> list[object]:
    """Plausible threads: random interleavings of inputs, calls, outcomes and lifecycle."""
    events: list[object] = [UserMessage(seq=0, at=T0, text=draw(_texts))]
    open_calls: list[str] = []
    for _ in range(draw(st.integers(0, 30))):
        seq = len(events)
        choice = draw(
            st.sampled_from(
                ["call", "outcome", "error", "approval", "human", "msg", "pause", "resume", "done"]
            )
        )
        if choice == "call":
            cid = f"c{seq}"
            open_calls.append(cid)
            events.append(
                ToolCall(
                    seq=seq,
                    at=T0,
                    call_id=cid,
                    tool="t",
                    version="1",
                    arguments={"x": draw(st.integers())},
                )
            )
        elif choice == "outcome" and open_calls:
            events.append(
                ToolResult(seq=seq, at=T0, call_id=open_calls.pop(0), tool="t", result=draw(_texts))
            )
        elif choice == "error":
            events.append(InvalidOutput(seq=seq, at=T0, reason=draw(_texts)))
        elif choice == "approval" and open_calls:
            events.append(
                ApprovalRequested(seq=seq, at=T0, call_id=open_calls[0], tool="t", arguments={})
            )
        elif choice == "human":
            events.append(HumanRequest(seq=seq, at=T0, request_id=f"h{seq}", question="?"))
        elif choice == "msg":
            events.append(UserMessage(seq=seq, at=T0, text=draw(_texts)))
        elif choice == "pause":
            events.append(Paused(seq=seq, at=T0))
        elif choice == "resume":
            events.append(Resumed(seq=seq, at=T0))
        elif choice == "done":
            events.append(Done(seq=seq, at=T0))
    return events


@given(event_lists())
@settings(max_examples=150, deadline=None)
def test_incremental_state_equals_refold_and_round_trips(events: list[object]) -> None:
    incremental = Thread("th_p", "a")
    for e in events:
        incremental.append(e)  # type: ignore[arg-type]
    refolded = Thread.from_dict(json.loads(json.dumps(incremental.to_dict())))
    assert refolded.state.to_dict() == incremental.state.to_dict()
    assert (
        ThreadState.from_dict(incremental.state.to_dict()).to_dict() == incremental.state.to_dict()
    )
    assert [e.seq for e in refolded.events] == list(range(len(events)))


def test_append_new_builds_the_event_at_the_next_seq() -> None:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    thread = Thread("t", "a")
    thread.append_new(UserMessage, at=at, text="hi")
    thread.append_new(ToolCall, at=at, call_id="c1", tool="lookup", version="1", arguments={})
    assert [(e.seq, e.kind) for e in thread.events] == [(0, "user_message"), (1, "tool_call")]
    assert thread.events[1] == ToolCall(
        seq=1, at=at, call_id="c1", tool="lookup", version="1", arguments={}
    )
    with pytest.raises(ValidationError):
        thread.append_new(UserMessage, at=at, txet="typo")
    assert thread.next_seq == 2

"""events/summary.py: what a person reads for each event, and how it travels on the wire
(`threadline.wire.event_json` adds it; `event_from_wire` drops it on the way back)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from threadline.errors import CorruptEvent
from threadline.events import (
    Approval,
    Compacted,
    ExternalEvent,
    ModelCall,
    Resumed,
    Summary,
    ToolCall,
    ToolResult,
    UserMessage,
    Waiting,
    WaitTimedOut,
    summarize,
)
from threadline.wire import EventPage, event_from_wire, event_json

AT = datetime(2024, 1, 1, tzinfo=UTC)


def test_a_line_and_a_block_per_kind() -> None:
    call = ToolCall(seq=3, at=AT, call_id="c3", tool="deploy", version="2", arguments={"a": 1})
    assert summarize(call) == Summary(text="deploy@2 [c3]", detail='{\n  "a": 1\n}')
    verdict = Approval(seq=4, at=AT, call_id="c3", approved=False, comment="no", by="ann")
    assert summarize(verdict) == Summary(text="rejected c3 by ann via api: “no”")
    edited = Approval(seq=4, at=AT, call_id="c3", approved=True, edited_arguments={"a": 2})
    assert summarize(edited).detail == '{\n  "a": 2\n}'
    said = UserMessage(seq=0, at=AT, text="hi", sender="bob", channel="slack")
    assert summarize(said).text == "hi — bob via slack"
    model = ModelCall(
        seq=1, at=AT, model="m", input_tokens=3, output_tokens=4, latency_ms=12.6, output="x"
    )
    assert summarize(model) == Summary(text="m · 3 in / 4 out tokens · 13 ms", detail="x")
    assert summarize(ModelCall(seq=1, at=AT, model="m")).detail is None
    result = ToolResult(seq=5, at=AT, call_id="c3", tool="deploy", result={"ok": "ü"})
    assert summarize(result).detail == '{\n  "ok": "ü"\n}'
    assert summarize(Resumed(seq=6, at=AT, by="ann")).text == "by ann"
    assert summarize(Resumed(seq=6, at=AT)).text == ""
    compacted = Compacted(seq=7, at=AT, from_seq=0, to_seq=5, summary="earlier")
    assert summarize(compacted) == Summary(text="events 0-5", detail="earlier")
    hook = ExternalEvent(seq=8, at=AT, name="paid", source="stripe", payload={"n": 1})
    assert summarize(hook).text == "paid from stripe"
    wait = Waiting(seq=9, at=AT, until=AT, event="paid", reason="payment")
    assert summarize(wait).text == "until 2024-01-01T00:00:00+00:00 or for event paid: payment"
    assert summarize(WaitTimedOut(seq=10, at=AT, event="paid")).text == "no paid came"


def test_the_wire_form_carries_the_summary_and_reads_back_as_the_event() -> None:
    call = ToolCall(seq=3, at=AT, call_id="c3", tool="deploy", version="2", arguments={"a": 1})
    sent = event_json(call)
    assert sent["summary"] == {"text": "deploy@2 [c3]", "detail": '{\n  "a": 1\n}'}
    assert {k: v for k, v in sent.items() if k != "summary"} == call.model_dump(mode="json")
    assert event_from_wire(json.loads(json.dumps(sent))) == call
    page = EventPage(events=[call], next_after=3)
    assert page.model_dump(mode="json")["events"] == [sent]
    assert EventPage.model_validate(page.model_dump(mode="json")).events == [call]


def test_a_wire_event_of_no_known_kind_is_a_corrupt_event() -> None:
    with pytest.raises(CorruptEvent):
        event_from_wire({"kind": "poked", "seq": 0, "at": AT.isoformat(), "summary": {}})

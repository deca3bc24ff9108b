"""One JSON log line per event, with the fields each kind carries."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from threadline.context.redaction import Redactor
from threadline.events import (
    EVENT_CLASSES,
    ChildStarted,
    ModelCall,
    Thread,
    ToolError,
    ToolResult,
    UserMessage,
)
from threadline.observability import JsonEventLog, event_log_record

AT = datetime(2024, 1, 1, tzinfo=UTC)


def test_records_carry_the_fields_of_their_kind() -> None:
    thread = Thread("t", "a", [UserMessage(seq=0, at=AT, text="hi")])
    call = ModelCall(seq=1, at=AT, model="m", input_tokens=5, output_tokens=2, latency_ms=3.0)
    record = event_log_record(thread, call)
    assert record["kind"] == "model_call" and record["input_tokens"] == 5
    assert "tool" not in record and "call_id" not in record
    assert "cache_read_tokens" not in record  # no prompt cache used: as before
    cached = call.model_copy(update={"cache_read_tokens": 4})
    assert event_log_record(thread, cached)["cache_read_tokens"] == 4
    assert event_log_record(thread, cached)["cache_write_tokens"] == 0
    error = ToolError(seq=2, at=AT, call_id="c1", tool="t", error_type="E", message="boom")
    assert event_log_record(thread, error) | {"ts": None} == {
        "ts": None,
        "thread_id": "t",
        "seq": 2,
        "kind": "tool_error",
        "agent": "a",
        "status": "running",
        "tool": "t",
        "call_id": "c1",
        "error_type": "E",
        "message": "boom",
    }
    unnamed = ToolResult(seq=3, at=AT, call_id="", tool="t", result=1)
    assert "call_id" not in event_log_record(thread, unnamed)


def test_every_kind_logs_its_own_fields_under_their_log_names() -> None:
    """Each kind's fields are named in a table (`_logged`), read by name: every name must
    be a field of each class its `case` matches, and lands under its log name."""
    thread = Thread("t", "a")
    header = {"ts", "thread_id", "seq", "kind", "agent", "status"}
    renamed = {"prompt": "prompt_name", "child_thread": "thread_id"}
    for cls in EVENT_CLASSES:
        values = {name: f"value of {name}" for name in cls.model_fields}  # each one distinct
        event = cls.model_construct(**{**values, "seq": 1, "at": AT})  # type: ignore[arg-type]
        record = event_log_record(thread, event)
        assert header <= record.keys(), cls
        for key in record.keys() - header:
            assert record[key] == values[renamed.get(key, key)], (cls.__name__, key)
    child = ChildStarted(seq=1, at=AT, call_id="c1", thread_id="th_child", agent="helper")
    assert event_log_record(thread, child)["child_thread"] == "th_child"
    call = ModelCall(seq=1, at=AT, model="m", prompt_name="support")
    assert event_log_record(thread, call)["prompt"] == "support"


def test_lines_are_redacted_before_they_are_written() -> None:
    sink = io.StringIO()
    log = JsonEventLog(sink, redact=Redactor().redact)
    thread = Thread("t", "a")
    key = "sk-proj-" + "Z9" * 12
    log(thread, [UserMessage(seq=0, at=AT, text=f"my key is {key}")])
    line = json.loads(sink.getvalue())
    assert line["kind"] == "user_message" and key not in sink.getvalue()

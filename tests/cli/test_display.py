"""The CLI's one line per event."""

from __future__ import annotations

from datetime import UTC, datetime

from threadline.cli.display import format_event
from threadline.events import Approval, ToolCall, ToolResult, UserMessage

AT = datetime(2024, 1, 1, tzinfo=UTC)


def test_one_line_per_event_with_its_detail() -> None:
    call = ToolCall(seq=3, at=AT, call_id="c3", tool="add", version="1", arguments={"a": 1})
    assert format_event(call) == "[dim]   3[/] [yellow]tool_call         [/] add(a=1) \\[c3]"
    rejected = Approval(seq=4, at=AT, call_id="c3", approved=False, comment="no")
    assert format_event(rejected).endswith("rejected c3: no")
    result = ToolResult(seq=5, at=AT, call_id="c3", tool="add", result="x" * 500)
    line = format_event(result)
    assert line.endswith("…") and len(line) < 400


def test_markup_in_text_is_escaped() -> None:
    line = format_event(UserMessage(seq=0, at=AT, text="[bold]hi[/bold]"))
    assert "\\[bold]hi\\[/bold]" in line

"""The helpers both formats share: cutting with a pointer, tags, tool JSON, counting."""

from __future__ import annotations

from threadline.context.base import message_tokens, tagged, tools_json, truncate_to
from threadline.context.tokens import ApproxCounter
from threadline.events import RawToolCall
from threadline.models.base import Message, ToolSpec


def test_truncation_keeps_the_head_and_points_to_the_event() -> None:
    counter = ApproxCounter()
    text = "\n".join(f"row {i} " * 5 for i in range(200))
    cut = truncate_to(text, 100, counter, seq=7)
    assert cut.startswith("row 0") and cut.endswith("[truncated: full result in event 7]")
    assert counter.count(cut) <= 120
    assert truncate_to("short", 100, counter, seq=7) == "short"


def test_tags_tool_json_and_message_counts() -> None:
    assert tagged("user", " name=ada", "hi") == "<user name=ada>hi"
    assert tagged("result", "", "a\nb") == "<result>\na\nb"
    spec = ToolSpec("add", "Add.", {"type": "object"})
    assert tools_json([spec]) == (
        '[{"type":"function","function":{"name":"add","description":"Add.",'
        '"parameters":{"type":"object"}}}]'
    )
    counter = ApproxCounter()
    call = RawToolCall(id="c1", name="add", arguments='{"a":1}')
    messages = (Message("user", "hello"), Message("assistant", "", (call,)))
    assert message_tokens(messages, counter) == (
        4 + counter.count("hello") + 4 + 8 + counter.count("add") + counter.count('{"a":1}')
    )

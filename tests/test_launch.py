"""A new thread's first events (launch.py): the message, the agent's pre-fetched calls
(they run once the thread advances), and storage redaction, before anything is stored."""

from __future__ import annotations

from datetime import UTC, datetime

from threadline import Agent, ContextSettings, tool
from threadline.context.redaction import MASK
from threadline.events import Thread, ToolCall, UserMessage
from threadline.launch import launched

AT = datetime(2024, 1, 1, tzinfo=UTC)
KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"{key} is {KEY}"


def _launch(**settings: object) -> Thread:
    context = ContextSettings(prefetch=[("lookup", {"key": "a"})], **settings)  # type: ignore[arg-type]
    agent = Agent("a", tools=[lookup], context=context)
    first = UserMessage(seq=0, at=AT, text=f"my key is {KEY}")
    return launched(agent, Thread("t1", "a"), first, AT)


def test_the_message_then_the_prefetch_all_redacted() -> None:
    thread = _launch()
    first, call = thread.events
    assert isinstance(first, UserMessage) and isinstance(call, ToolCall)
    assert KEY not in first.text and MASK in first.text
    assert call.call_id.startswith("prefetch-") and call.arguments == {"key": "a"}
    assert thread.next_seq == 2


def test_an_agent_that_stores_secrets_keeps_the_thread_as_built() -> None:
    thread = _launch(store_secrets=True)
    assert KEY in thread.events[0].text  # type: ignore[union-attr]

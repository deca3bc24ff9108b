"""A call a cancel withdrew is shown to the model of the resumed thread as never run, in
each format (docs/context.md, docs/core.md "Cancel"); without it the call read as one still
running (compact: a call with no outcome) or one that returned nothing (messages: "(no
result)")."""

from __future__ import annotations

from datetime import UTC, datetime

from context_support import render

from threadline.context.compact import COMPACT, compact_block
from threadline.context.messages import MESSAGES
from threadline.context.tokens import ApproxCounter
from threadline.events import Failed, RawToolCall, ToolCall, UserMessage
from threadline.models.base import Message
from threadline.testing import ScriptedModel, intent
from withdrawn_support import cancelled_then_resumed, wire_agent


def _model() -> ScriptedModel:
    both = [intent("wire", amount=5), intent("wire", amount=7)]
    return ScriptedModel([both, intent("done_for_now", message="stopped")])


async def test_compact_shows_each_withdrawn_call_as_not_run() -> None:
    agent, model = wire_agent("compact"), _model()
    thread, (first, second) = await cancelled_then_resumed(agent, model)
    shown = (
        "<user>wire 5 and 7\n"
        f"<wire id={first}>amount: 5\n"
        f"<wire id={second}>amount: 7\n"
        f"<approved id={first} by=ana/>\n"
        f"<not_run id={first}>the thread was cancelled\n"
        f"<not_run id={second}>the thread was cancelled"
    )
    assert [m.content for m in model.contexts[-1].messages] == [shown]  # after the resume
    again = render(agent, thread).context.messages  # a fresh renderer, the whole thread
    assert [m.content for m in again] == [f"{shown}\n<done_for_now>stopped"]


async def test_messages_answer_each_withdrawn_call_as_not_run() -> None:
    agent, model = wire_agent("messages"), _model()
    thread, (first, second) = await cancelled_then_resumed(agent, model)
    calls = (
        RawToolCall(id=first, name="wire", arguments='{"amount":5}'),
        RawToolCall(id=second, name="wire", arguments='{"amount":7}'),
    )
    shown = [
        Message("user", "wire 5 and 7"),
        Message("assistant", "", calls),
        Message("tool", "not run: the thread was cancelled", tool_call_id=first),
        Message("tool", "not run: the thread was cancelled", tool_call_id=second),
    ]
    assert list(model.contexts[-1].messages) == shown  # after the resume
    again = render(agent, thread).context.messages  # a fresh renderer, the whole thread
    assert list(again[:4]) == shown


def test_a_failed_event_that_withdrew_nothing_shows_nothing() -> None:
    """A thread that kept failing, or a cancel with no call to withdraw: as before."""
    failed = Failed(seq=3, at=datetime(2026, 1, 1, tzinfo=UTC), reason="cancelled by ops")
    assert compact_block([failed], 0) == ""
    assert COMPACT.block([failed], 0, False, 800, ApproxCounter()) is None
    assert MESSAGES.block([failed], 0, False, 800, ApproxCounter()) is None


def test_a_withdrawn_question_is_named_by_its_tool_as_its_call_shows_no_id() -> None:
    """A human tool's call (`request_more_information`) is shown without an id, so its
    not-run line names the tool instead of an id the model never saw; any other call keeps
    its id."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    question = {"message": "which booking?"}
    events = [
        UserMessage(seq=0, at=at, text="move my booking"),
        ToolCall(
            seq=1,
            at=at,
            call_id="c1",
            tool="request_more_information",
            version="1",
            arguments=question,
        ),
        ToolCall(seq=2, at=at, call_id="c2", tool="wire", version="1", arguments={"amount": 5}),
        Failed(seq=3, at=at, reason="cancelled by ops", withdrawn=("c1", "c2")),
    ]
    assert compact_block(events, 1) == "<request_more_information>which booking?"
    assert compact_block(events, 3) == (
        "<not_run tool=request_more_information>the thread was cancelled\n"
        "<not_run id=c2>the thread was cancelled"
    )

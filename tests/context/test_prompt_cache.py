"""Prompt-cache marks: every call of a long thread at detail level 1 reads what the
previous call wrote, and a new cut moves the read mark back to the previous call's settled
prefix instead of dropping it (context/prompt_cache.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from context_support import fetch

from threadline import Agent, ContextSettings
from threadline.context.base import Rendered
from threadline.context.prompt_cache import SentBodies, read_mark
from threadline.events import (
    Compacted,
    ModelCall,
    RawToolCall,
    Thread,
    ToolCall,
    ToolResult,
    UserMessage,
)
from threadline.models.base import Message
from threadline.prompts import renderer_for

AT = datetime(2024, 1, 1, tzinfo=UTC)


def long_thread_agent(**settings: Any) -> Agent:
    """Results of ~250 tokens cut to 40 once they leave the newest 4 events: level 1 from
    about the 21st call of an 8,000-token window, compacting after about 150."""
    base: dict[str, Any] = {
        "keep_recent": 4,
        "context_window": 8_000,
        "max_output_tokens": 500,
        "max_result_tokens": 40,
        "tokenizer": "o200k_base",
    }
    return Agent(
        "agent",
        tools=[fetch],
        instructions="Fetch what is asked.",
        context=ContextSettings(**(base | settings)),
    )


def step(thread: Thread, k: int, rows: int = 40) -> None:
    """One turn as the runtime stores it: the model's call, the validated call, its result."""
    cid = f"c{k}"
    args = {"key": f"k{k}"}
    raw = (RawToolCall(id=cid, name="fetch", arguments=json.dumps(args)),)
    thread.append(ModelCall(seq=thread.next_seq, at=AT, model="m", output="", tool_calls=raw))
    thread.append(
        ToolCall(seq=thread.next_seq, at=AT, call_id=cid, tool="fetch", version="1", arguments=args)
    )
    result = {"key": f"k{k}", "rows": [{"i": j, "v": f"value {j} of {k}"} for j in range(rows)]}
    thread.append(ToolResult(seq=thread.next_seq, at=AT, call_id=cid, tool="fetch", result=result))


def new_thread(tid: str = "t") -> Thread:
    thread = Thread(tid, "agent")
    thread.append(UserMessage(seq=0, at=AT, text="Fetch the records one by one."))
    return thread


def body(rendered: Rendered) -> str:
    return rendered.context.messages[-1].content


def test_every_call_at_level_1_reads_a_prefix_the_previous_call_was_sent_and_wrote() -> None:
    renderer = renderer_for(long_thread_agent())
    thread = new_thread()
    previous: tuple[str, int] | None = None
    previous_level = level_1 = read_back = 0
    for k in range(140):
        rendered = renderer.render(thread)
        text, ctx = body(rendered), rendered.context
        assert rendered.compaction is None  # the whole run stays between compactions
        if previous is not None:
            sent, written = previous
            cut = ctx.cached_prefix
            # Byte-identical to what the previous call was sent, and where it wrote an
            # entry (its end, or its settled prefix): the only places a read can hit.
            assert text[:cut] == sent[:cut]
            if text.startswith(sent):
                assert cut == len(sent)  # nothing it was sent changed: read it whole
            elif previous_level == 1:
                assert cut == written > 0  # a result was cut: read its settled prefix
                read_back += 1
            else:
                # The call that first reaches level 1 is a full plan that cuts every older
                # result at once: the level-0 call wrote at its end only, nothing to read.
                assert cut == 0 and rendered.layout.level == 1
            level_1 += rendered.layout.level == 1
        previous, previous_level = (text, ctx.settled_prefix), rendered.layout.level
        step(thread, k)
    assert level_1 > 100  # most of the run is at level 1
    assert read_back > 100  # and nearly every level-1 call cut a result the previous showed


def test_a_new_cut_moves_the_read_mark_back_to_the_previous_settled_prefix() -> None:
    renderer = renderer_for(long_thread_agent())
    thread = new_thread()
    for k in range(30):  # level 1 from about call 21 on
        renderer.render(thread)
        step(thread, k)
    before = renderer.render(thread)
    assert before.layout.level == 1
    step(thread, 30)
    after = renderer.render(thread)
    sent, now = body(before), body(after)
    # The newest result `before` showed whole has left the newest 4 events and is cut now,
    # so `now` differs from `sent` inside it: not an extension of what was sent.
    first_change = next(i for i, (a, b) in enumerate(zip(sent, now, strict=False)) if a != b)
    assert first_change < len(sent)
    assert "[truncated: full result in event" in now[first_change : first_change + 2_000]
    # The read mark moved back from the end of what was sent to where the previous call's
    # settled prefix ended (an entry it wrote), before the first changed byte.
    settled = before.context.settled_prefix
    assert 0 < settled <= first_change
    assert after.context.cached_prefix == settled
    assert now[:settled] == sent[:settled]
    # This call's own settled prefix has moved on past the newly cut result.
    assert after.context.settled_prefix > first_change


def test_nothing_changed_reads_the_whole_previous_call_at_level_0() -> None:
    renderer = renderer_for(long_thread_agent())
    thread = new_thread()
    before = renderer.render(thread)
    step(thread, 0, rows=3)
    after = renderer.render(thread)
    assert after.layout.level == 0
    assert after.context.cached_prefix == len(body(before))
    assert body(after).startswith(body(before))


def test_a_renderer_that_did_not_render_the_latest_call_marks_what_the_thread_shows() -> None:
    """Another process (or worker) renders the next call: at level 0 the blocks of events
    before the latest call (nothing before it changes), at level 1 nothing."""
    agent = long_thread_agent()
    renderer = renderer_for(agent)
    thread = new_thread()
    step(thread, 0, rows=3)
    assert (
        renderer.render(thread).context.cached_prefix
        == renderer_for(agent).render(thread).context.cached_prefix
        > 0
    )
    for k in range(1, 30):
        renderer.render(thread)
        step(thread, k)
    warm = renderer.render(thread)
    cold = renderer_for(agent).render(thread)
    assert warm.layout.level == cold.layout.level == 1
    assert warm.context.cached_prefix > 0 and cold.context.cached_prefix == 0
    assert cold.context.settled_prefix == warm.context.settled_prefix > 0


def test_the_call_after_a_compaction_reads_what_the_compacting_call_was_sent() -> None:
    renderer = renderer_for(long_thread_agent(context_window=4_000))
    thread = new_thread()
    compacted = 0
    previous = ""
    for k in range(80):
        rendered = renderer.render(thread)
        if previous and compacted and thread.events[-1].kind == "tool_result":
            cut = rendered.context.cached_prefix
            assert body(rendered)[:cut] == previous[:cut]
        previous = body(rendered)
        if rendered.compaction is not None:
            lo, hi, text = rendered.compaction
            thread.append(
                Compacted(seq=thread.next_seq, at=AT, from_seq=lo, to_seq=hi, summary=text)
            )
            compacted += 1
            step(thread, k)
            after = renderer.render(thread)
            # Stored before the call, the summary is the start of what that call was sent
            # and of the next one: the next call reads at least that far.
            assert after.context.cached_prefix > 0
            assert (
                body(after)[: after.context.cached_prefix]
                == previous[: after.context.cached_prefix]
            )
            previous = body(after)
        step(thread, 1_000 + k)
    assert compacted >= 2


def test_read_mark() -> None:
    sent = "<user>a\n<fetch>\nkey: k1\n<fetch_result>long"
    assert read_mark(sent + "\n<fetch>more", sent, 7) == len(sent)
    assert read_mark(sent.replace("long", "cut") + "\n<x>", sent, 7) == 7
    assert read_mark("<user>b\n<x>", sent, 7) == 0
    assert read_mark("<user>a", sent, 30) == 0  # a settled prefix longer than the body


def test_a_thread_of_the_same_id_with_other_events_is_not_the_one_remembered() -> None:
    marks = SentBodies()
    a, b = new_thread("same"), Thread("same", "agent")
    b.append(UserMessage(seq=0, at=AT, text="Something else entirely."))
    message = (Message("user", "<user>Fetch the records one by one."),)
    whole = len(message[0].content)
    assert marks.mark(a, message, (0, whole, -1, None)) == (0, whole)
    step(a, 0)
    step(b, 0)
    longer = (Message("user", message[0].content + "\n<fetch>..."),)
    assert marks.mark(a, longer, (0, 10, -1, 1))[0] == len(message[0].content)
    assert marks.mark(b, longer, (5, 10, -1, 1))[0] == 5  # not a's rendering: the fallback

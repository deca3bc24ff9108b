"""Replay feeds recorded inputs in and re-derives every decision; a difference is an error
naming the event."""

from __future__ import annotations

from pathlib import Path

import pytest

from airline_support import run_recorded, tau_runs
from threadline import (
    Agent,
    ContextSettings,
    MemoryStore,
    Runtime,
    SQLiteStore,
    Status,
    Thread,
    tool,
)
from threadline.errors import ReplayDivergence
from threadline.events import ToolCall
from threadline.reducer import is_input
from threadline.replay import replay_thread
from threadline.testing import ScriptedModel, intent


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return key.upper()


async def test_context_escalations_and_prefetched_calls_are_inputs() -> None:
    agent = Agent(
        "tiny",
        tools=[lookup],
        instructions="Look up. " * 300,
        context=ContextSettings(
            tokenizer="o200k_base",
            context_window=700,
            max_output_tokens=100,
            prefetch=[("lookup", {"key": "a"})],
        ),
    )
    rt = Runtime(MemoryStore(), agents=[agent], model=ScriptedModel([]))
    thread = await rt.launch(agent, "go")
    assert thread.status is Status.ESCALATED
    kinds = [e.kind for e in thread.events]
    assert kinds[1] == "tool_call" and kinds[-2:] == ["token_budget_exceeded", "escalated"]
    assert is_input(thread.events[1]) and is_input(thread.events[-1])
    derived = replay_thread(agent, thread)
    assert [e.kind for e in derived.events] == kinds


async def test_a_changed_decision_names_the_event_where_it_diverges() -> None:
    agent = Agent("a", tools=[lookup])
    model = ScriptedModel([intent("lookup", key="x"), intent("done_for_now", message="X")])
    thread = await Runtime(MemoryStore(), agents=[agent], model=model).launch(agent, "x?")
    assert thread.status is Status.DONE
    assert [e.kind for e in replay_thread(agent, thread).events] == [e.kind for e in thread.events]
    # Without the lookup tool, the recorded call no longer validates: an invalid output.
    stricter = Agent("a", tools=[])
    call = next(e for e in thread.events if isinstance(e, ToolCall))
    with pytest.raises(ReplayDivergence) as info:
        replay_thread(stricter, thread)
    assert info.value.seq == call.seq
    assert "invalid_output" in str(info.value)


async def test_replay_takes_the_recorded_outcome_of_a_non_idempotent_tool() -> None:
    """A side-effecting, non-idempotent tool ran once: replay re-derives the run (the
    `tool_started` checks the decision, the recorded `tool_result` is taken as it was)."""
    runs: list[int] = []

    @tool(side_effects=True)
    def transfer(amount: int) -> str:
        """Move money."""
        runs.append(amount)
        return "sent"

    model = ScriptedModel([intent("transfer", amount=5), intent("done_for_now", message="ok")])
    agent = Agent("bank", tools=[transfer], model=model)
    rt = Runtime(MemoryStore(), agents=[agent])
    thread = await rt.launch(agent, "send 5")
    kinds = [e.kind for e in thread.events]
    assert "tool_started" in kinds and "tool_result" in kinds
    assert thread.status == Status.DONE
    replayed = await rt.replay(thread.id)
    assert [e.kind for e in replayed.events] == kinds
    assert runs == [5]  # replay never runs the tool


async def test_replay_of_a_crash_after_tool_started_still_derives_the_escalation() -> None:
    """No outcome recorded after `tool_started`: replay derives "may have run" again."""
    from threadline.errors import ToolOutcomeUnknown

    @tool(side_effects=True)
    def transfer(amount: int) -> str:
        """Move money."""
        raise ToolOutcomeUnknown("hung up")

    model = ScriptedModel([intent("transfer", amount=5)])
    agent = Agent("bank", tools=[transfer], model=model)
    rt = Runtime(MemoryStore(), agents=[agent])
    thread = await rt.launch(agent, "send 5")
    assert thread.status == Status.ESCALATED
    replayed = replay_thread(agent, thread)
    assert replayed.events[-1].kind == "escalated"
    # A different recorded escalation reason is still a divergence.
    forged = thread.events[-1].model_copy(update={"reason": "something else"})
    thread.events[-1] = forged
    with pytest.raises(ReplayDivergence):
        replay_thread(agent, thread)


async def test_a_write_ahead_record_delivered_twice_is_a_divergence(tmp_path: Path) -> None:
    """A crash left a `tool_started` without an outcome, stored twice (before stores
    refused the second): it loads as one attempt, and replay names the repeated record
    instead of taking it for the retry that `decide` would make next."""

    @tool(side_effects=True, idempotent=True)
    def upsert(key: str) -> str:
        """Write a key (idempotent)."""
        return key

    model = ScriptedModel([intent("upsert", key="x"), intent("done_for_now", message="ok")])
    agent = Agent("kv", tools=[upsert], model=model)
    async with SQLiteStore(tmp_path / "t.db") as store:
        thread = await Runtime(store, agents=[agent]).launch(agent, "write x")
    i = next(i for i, e in enumerate(thread.events) if e.kind == "tool_started")
    started = thread.events[i]
    crashed = Thread(thread.id, thread.agent, thread.events[: i + 1])
    replay_thread(agent, crashed)  # one record: the attempt that may have run
    doubled = Thread(
        thread.id, thread.agent, [*crashed.events, started.model_copy(update={"seq": i + 1})]
    )
    assert doubled.state.pending[started.call_id].attempt == 1
    with pytest.raises(ReplayDivergence) as info:
        replay_thread(agent, doubled)
    assert info.value.seq == i + 1
    assert f"attempt 1 of call {started.call_id} was already started" in info.value.got


# -- the 200 recorded airline conversations (GPT-4o, tau-bench), writes behind approvals --


async def test_recorded_airline_conversations_replay() -> None:
    """Recorded conversations replay, including those where a write ran behind an approval
    (`tool_started`, then its result). A sample of every 10th keeps the test short; all 200
    replay (measured with the same helpers: 0 diverge, 118+ before the fix)."""
    diverged: list[tuple[int, str]] = []
    writes = 0
    for run in tau_runs()[::10]:
        agent, thread = await run_recorded(run)
        writes += any(e.kind == "tool_started" for e in thread.events)
        try:
            replay_thread(agent, thread)
        except ReplayDivergence as exc:
            diverged.append((run["task_id"], str(exc)[:200]))
    assert writes >= 5
    assert diverged == []


async def test_a_fork_inside_one_append_is_refused_with_the_whole_append_named() -> None:
    from threadline.errors import InvalidAction

    model = ScriptedModel([intent("lookup", key="x"), intent("done_for_now", message="X")])
    agent = Agent("a", tools=[lookup])
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent, "x?")
    call = next(e for e in thread.events if e.kind == "model_call")
    with pytest.raises(InvalidAction, match=rf"events {call.seq}..{call.seq + 1} .* one append"):
        await rt.fork(thread.id, at=call.seq)
    forked = await rt.fork(thread.id, at=call.seq + 1)  # the whole append: the answer kept
    assert [e.kind for e in forked.events][-3:] == ["model_call", "tool_call", "forked_from"]
    replay_thread(agent, forked)


async def test_a_fork_inside_a_launch_names_the_message_and_offers_no_negative_seq() -> None:
    """Events 0..1 of an agent with a pre-fetched call are one append written by the launch,
    not by a model: the refusal says so and does not offer `at -1` (which is a 422)."""
    from threadline.errors import InvalidAction

    model = ScriptedModel([intent("lookup", key="x"), intent("done_for_now", message="X")])
    agent = Agent("a", tools=[lookup], context=ContextSettings(prefetch=[("lookup", {"key": "a"})]))
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent, "x?")
    assert [e.kind for e in thread.events[:2]] == ["user_message", "tool_call"]
    with pytest.raises(InvalidAction) as refused:
        await rt.fork(thread.id, at=0)
    text = str(refused.value)
    assert "events 0..1 were written in one append" in text
    assert "model call" not in text and "-1" not in text and "fork at 1" in text
    call = next(e for e in thread.events if e.kind == "model_call")
    with pytest.raises(InvalidAction, match=rf"or at {call.seq - 1} to ask the model again"):
        await rt.fork(thread.id, at=call.seq)


async def test_replay_rederives_with_the_tool_version_the_thread_recorded() -> None:
    model = ScriptedModel([intent("lookup", key="x"), intent("done_for_now", message="X")])
    agent = Agent("a", tools=[lookup])
    thread = await Runtime(MemoryStore(), agents=[agent], model=model).launch(agent, "x?")

    @tool(name="lookup", version="2")
    def lookup_v2(key: str) -> str:
        """Look a key up, louder."""
        return key.upper() + "!"

    newer = Agent("a", tools=[lookup, lookup_v2])
    assert newer.registry.get("lookup").version == "2"
    derived = replay_thread(newer, thread)
    assert [e.kind for e in derived.events] == [e.kind for e in thread.events]

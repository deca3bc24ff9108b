"""One commit per read-only turn: a model's answer is committed together with the outcomes
of the read-only tools it called; a tool with side effects keeps its write-ahead commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from threadline import Agent, MemoryStore, Runtime, SQLiteStore, Status, tool
from threadline.stores.base import Append
from threadline.testing import ScriptedModel, intent
from threadline.tools import ToolContext

RUNS: list[str] = []


@tool
def lookup(key: str) -> str:
    """Read-only."""
    RUNS.append(f"lookup {key}")
    return key.upper()


@tool(side_effects=True, idempotent=False)
def charge(amount: int) -> str:
    """Changes the world."""
    RUNS.append(f"charge {amount}")
    return f"charged {amount}"


@tool(approval="always", side_effects=True)
def wire(amount: int) -> str:
    """Needs a human's approval."""
    RUNS.append(f"wire {amount}")
    return "wired"


class Crash(BaseException):
    """Stands in for the process dying in the middle of a turn."""


@tool
def dies(key: str) -> str:
    """Read-only, and the process dies while it runs."""
    raise Crash


class CountingStore(MemoryStore):
    """A MemoryStore that records every append's kinds (one append = one commit)."""

    def __init__(self) -> None:
        super().__init__()
        self.appends: list[list[str]] = []

    async def _append(self, append: Append) -> None:
        await super()._append(append)
        _, events, *_ = append
        self.appends.append([e.kind for e in events])


def _agent(answers: list[object], *tools: object) -> Agent:
    return Agent(
        "turns",
        tools=[lookup, charge, wire, dies, *tools],  # type: ignore[list-item]
        model=ScriptedModel(answers),  # type: ignore[arg-type]
    )


async def test_a_read_only_turn_is_one_append_and_the_final_answer_too() -> None:
    RUNS.clear()
    store = CountingStore()
    agent = _agent(
        [intent("lookup", key="a"), intent("lookup", key="b"), intent("done_for_now", message="AB")]
    )
    thread = await Runtime(store, agents=[agent]).launch(agent, "look up a and b")
    assert thread.status is Status.DONE
    assert store.appends == [
        ["model_call", "tool_call", "tool_result"],
        ["model_call", "tool_call", "tool_result"],
        ["model_call", "tool_call", "done"],
    ]
    assert RUNS == ["lookup a", "lookup b"]
    stored = await store.load(thread.id)
    assert [e.kind for e in stored.events] == [e.kind for e in thread.events]


async def test_a_side_effecting_tool_keeps_its_write_ahead_commit(tmp_path: Path) -> None:
    RUNS.clear()
    store = SQLiteStore(tmp_path / "t.db")
    agent = _agent([intent("charge", amount=5), intent("done_for_now", message="ok")])
    runtime = Runtime(store, agents=[agent])
    thread = await runtime.launch(agent, "charge 5", advance=False)
    before = store.stats.commits
    thread = await runtime.advance(thread)
    # answer + tool_started; the outcome; the final answer with `done`
    assert store.stats.commits - before == 3
    kinds = [e.kind for e in (await store.load(thread.id)).events]
    assert kinds == [
        "user_message",
        "model_call",
        "tool_call",
        "tool_started",
        "tool_result",
        "model_call",
        "tool_call",
        "done",
    ]
    assert RUNS == ["charge 5"]
    await store.close()


async def test_an_approval_request_commits_with_the_answer_that_asked() -> None:
    RUNS.clear()
    store = CountingStore()
    agent = _agent([intent("wire", amount=9)])
    thread = await Runtime(store, agents=[agent]).launch(agent, "wire 9")
    assert thread.status is Status.AWAITING_APPROVAL
    assert store.appends == [["model_call", "tool_call", "approval_requested"]]
    assert RUNS == []


async def test_max_steps_one_commits_the_answer_alone_and_runs_nothing() -> None:
    RUNS.clear()
    store = CountingStore()
    agent = _agent([intent("lookup", key="a"), intent("done_for_now", message="A")])
    runtime = Runtime(store, agents=[agent])
    thread = await runtime.launch(agent, "look up a", advance=False)
    thread = await runtime.advance(thread, max_steps=1)
    assert store.appends == [["model_call", "tool_call"]]
    assert RUNS == []
    thread = await runtime.advance(thread, max_steps=1)
    assert store.appends[-1] == ["tool_result"]
    assert RUNS == ["lookup a"]


async def test_a_human_action_during_the_turn_keeps_the_answer_and_reruns_the_read_only_tool() -> (
    None
):
    RUNS.clear()
    store = CountingStore()
    runtime: Runtime

    @tool(name="peek")
    async def peek(key: str, ctx: ToolContext) -> str:
        """Read-only; someone pauses the thread while it runs (the first time)."""
        RUNS.append(f"peek {key}")
        if len(RUNS) == 1:
            await runtime.pause(ctx.thread_id, by="ops")
        return key

    agent = _agent([intent("peek", key="k"), intent("done_for_now", message="k")], peek)
    runtime = Runtime(store, agents=[agent])
    thread = await runtime.launch(agent, "peek at k")
    assert thread.status is Status.PAUSED
    kinds = [e.kind for e in (await store.load(thread.id)).events]
    # The held turn conflicted with the pause: the answer was re-based after it, the read-only
    # tool's outcome dropped (nothing of it was stored).
    assert kinds == ["user_message", "paused", "model_call", "tool_call"]
    await runtime.resume(thread.id, by="ops")
    thread = await runtime.advance(thread.id)
    assert thread.status is Status.DONE
    assert RUNS == ["peek k", "peek k"]  # re-running a read-only tool is harmless


async def test_dying_inside_a_turn_stores_nothing_of_it_and_leaves_the_thread_unchanged() -> None:
    store = CountingStore()
    agent = _agent([intent("dies", key="a")])
    runtime = Runtime(store, agents=[agent])
    thread = await runtime.launch(agent, "go", advance=False)
    with pytest.raises(Crash):
        await runtime.advance(thread)
    assert store.appends == []
    assert len(thread) == 1 and thread.next_seq == 1 and thread.state.model_calls == 0
    assert len(await store.load(thread.id)) == 1

"""Sub-agents as tools (issue 13): child threads linked to their parent, durable waits,
approvals deep in the tree, escalation, pause cascades and replay."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cancel_support import STORES, land_before, store_url
from threadline import (
    Agent,
    InvalidAction,
    MemoryStore,
    Runtime,
    SQLiteStore,
    Status,
    Thread,
    Worker,
    advance_exclusively,
    replay_thread,
    tool,
)
from threadline.composition import child_id, children
from threadline.events import ChildStarted
from threadline.stores import open_store
from threadline.testing import ScriptedModel, intent
from threadline.wire import thread_out

POSTED: list[int] = []


@tool(side_effects=True, approval="always")
def post_entry(amount: int) -> str:
    """Post an entry to the ledger (needs approval)."""
    POSTED.append(amount)
    return f"posted {amount}"


def _tree(**child_options: Any) -> tuple[Agent, Agent, Agent]:
    """coordinator -> accounts -> ledger; the ledger's entry needs approval."""
    ledger = Agent(
        "ledger",
        tools=[post_entry],
        model=ScriptedModel(
            [intent("post_entry", amount=5), intent("done_for_now", message="entry of 5 posted")]
        ),
    )
    accounts = Agent(
        "accounts",
        tools=[ledger.as_tool()],
        model=ScriptedModel(
            [
                intent("ledger", task="post an entry of 5"),
                intent("done_for_now", message="booked: entry of 5 posted"),
            ]
        ),
    )
    coordinator = Agent(
        "coordinator",
        tools=[accounts.as_tool(**child_options)],
        model=ScriptedModel(
            [
                intent("accounts", task="book 5"),
                intent("done_for_now", message="all done: booked"),
            ]
        ),
    )
    return coordinator, accounts, ledger


@pytest.fixture(autouse=True)
def _clear() -> None:
    POSTED.clear()


async def _three(rt: Runtime, root: Thread) -> tuple[Thread, Thread, Thread]:
    (child,) = children(await rt.store.load(root.id))
    (grandchild,) = children(await rt.store.load(child))
    return (
        await rt.store.load(root.id),
        await rt.store.load(child),
        await rt.store.load(grandchild),
    )


async def test_an_approval_deep_in_the_tree_resumes_all_three_to_done(tmp_path: Path) -> None:
    coordinator, accounts, ledger = _tree()
    async with SQLiteStore(tmp_path / "t.db") as store:
        rt = Runtime(store, agents=[coordinator])
        assert set(rt.agents) == {"coordinator", "accounts", "ledger"}
        root = await rt.launch(coordinator, "book 5")
        parent, child, grandchild = await _three(rt, root)
        assert (parent.status, child.status, grandchild.status) == (
            Status.WAITING,
            Status.WAITING,
            Status.AWAITING_APPROVAL,
        )
        assert child.id == child_id(parent.id, parent.events[2].call_id)
        assert child.metadata["parent_thread"] == parent.id
        assert grandchild.metadata["parent_thread"] == child.id
        assert child.events[0].text == "book 5" and child.events[0].channel == "agent"
        shown = thread_out(grandchild)
        assert [(a.thread, a.agent) for a in shown.ancestors] == [
            (parent.id, "coordinator"),
            (child.id, "accounts"),
        ]
        assert thread_out(parent).children == [child.id]
        # waiting parents hold no lease and are not runnable: nothing leases them
        assert await store.lease("w", ttl=30, limit=10) == []

        (call,) = grandchild.state.pending
        await rt.approve(grandchild.id, call, by="ana")
        assert await advance_exclusively(rt, grandchild.id)  # under a lease, as the server
        parent, child, grandchild = await _three(rt, root)
        assert [t.status for t in (parent, child, grandchild)] == [Status.DONE] * 3
        assert POSTED == [5]
        results = [e for e in parent.events if e.kind == "tool_result"]
        assert [r.result for r in results] == ["booked: entry of 5 posted"]
        assert [r.result for r in child.events if r.kind == "tool_result"] == ["entry of 5 posted"]
        assert parent.events[-1].message == "all done: booked"
        for agent, thread in ((coordinator, parent), (accounts, child), (ledger, grandchild)):
            derived = replay_thread(agent, thread)
            assert [e.model_dump() for e in derived.events] == [
                e.model_dump() for e in thread.events
            ]


async def test_without_a_lease_the_answer_resumes_the_tree_in_process() -> None:
    coordinator, _, _ = _tree()
    rt = Runtime(MemoryStore(), agents=[coordinator])
    root = await rt.launch(coordinator, "book 5")
    _, _, grandchild = await _three(rt, root)
    await rt.approve(grandchild.id, next(iter(grandchild.state.pending)))
    await rt.advance(grandchild.id)
    parent, child, grandchild = await _three(rt, root)
    assert [t.status for t in (parent, child, grandchild)] == [Status.DONE] * 3


async def test_a_sub_agent_that_escalates_reaches_its_parent_as_configured() -> None:
    for mode, expected in (("error", Status.DONE), ("escalate", Status.ESCALATED)):
        failing = Agent(
            "failing",
            tools=[],
            max_consecutive_errors=1,
            model=ScriptedModel(["not json"]),
        )
        parent_agent = Agent(
            "boss",
            tools=[failing.as_tool(on_escalation=mode)],  # type: ignore[arg-type]
            model=ScriptedModel(
                [intent("failing", task="try"), intent("done_for_now", message="it failed")]
            ),
        )
        rt = Runtime(MemoryStore(), agents=[parent_agent])
        parent = await rt.launch(parent_agent, "go")
        (child,) = children(parent)
        assert (await rt.store.load(child)).status == Status.ESCALATED
        assert parent.status == expected, mode
        (error,) = [e for e in parent.events if e.kind == "tool_error"]
        assert error.error_type == "SubAgentEscalated" and "escalated" in error.message
        replay_thread(parent_agent, parent)


async def test_pausing_a_parent_pauses_its_children_and_resuming_resumes_them() -> None:
    coordinator, _, _ = _tree()
    rt = Runtime(MemoryStore(), agents=[coordinator])
    root = await rt.launch(coordinator, "book 5")
    await rt.pause(root.id, by="ops")
    parent, child, grandchild = await _three(rt, root)
    assert [t.status for t in (parent, child, grandchild)] == [Status.PAUSED] * 3
    await rt.resume(root.id, by="ops")
    parent, child, grandchild = await _three(rt, root)
    assert (parent.status, child.status, grandchild.status) == (
        Status.WAITING,
        Status.WAITING,
        Status.AWAITING_APPROVAL,
    )


async def test_two_sub_agents_of_one_answer_run_and_both_results_come_back() -> None:
    def helper(name: str) -> Agent:
        return Agent(
            name,
            tools=[],
            model=ScriptedModel([intent("done_for_now", message=f"{name} says hi")]),
        )

    a, b = helper("alpha"), helper("beta")
    boss = Agent(
        "boss",
        tools=[a.as_tool(), b.as_tool()],
        model=ScriptedModel(
            [
                [intent("alpha", task="greet"), intent("beta", task="greet")],
                intent("done_for_now", message="both greeted"),
            ]
        ),
    )
    rt = Runtime(MemoryStore(), agents=[boss])
    thread = await rt.launch(boss, "greet twice")
    assert thread.status == Status.DONE
    results = sorted(e.result for e in thread.events if e.kind == "tool_result")
    assert results == ["alpha says hi", "beta says hi"]
    assert len(children(thread)) == 2
    replay_thread(boss, thread)


def test_threads_show_prints_the_tree_from_the_root(tmp_path: Path) -> None:
    coordinator, _, _ = _tree()

    async def make() -> tuple[str, str, str]:
        async with SQLiteStore(tmp_path / "t.db") as store:
            rt = Runtime(store, agents=[coordinator])
            root = await rt.launch(coordinator, "book 5")
            parent, child, grandchild = await _three(rt, root)
            return parent.id, child.id, grandchild.id

    parent, child, grandchild = asyncio.run(make())
    env = {**os.environ, "THREADLINE_STORE": f"sqlite:///{tmp_path}/t.db", "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "threadline", "threads", "show", grandchild],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("sub-agent tree:", 1)[1].strip().splitlines()
    assert parent in lines[0] and "coordinator waiting" in lines[0]
    assert child in lines[1] and "accounts waiting" in lines[1] and "└" in lines[1]
    assert grandchild in lines[2] and "ledger awaiting_approval" in lines[2]
    assert "<- this thread" in lines[2]


@pytest.mark.parametrize("via_resume", [False, True])
async def test_a_child_that_ended_unreported_is_collected_when_the_parent_advances(
    via_resume: bool,
) -> None:
    """A crash between a child's end and its delivery: advancing the parent collects it."""
    helper = Agent("helper", tools=[], model=ScriptedModel([intent("done_for_now", message="hi")]))
    boss = Agent(
        "boss",
        tools=[helper.as_tool()],
        model=ScriptedModel(
            [intent("helper", task="say hi"), intent("done_for_now", message="ok")]
        ),
    )
    store = MemoryStore()
    rt = Runtime(store, agents=[boss])
    parent = await rt.launch(boss, "go", advance=False)
    parent = await rt.advance(parent.id, max_steps=1)  # the model call: one sub-agent call
    (call_id,) = parent.state.pending
    child = child_id(parent.id, call_id)
    # What the run does before the crash: the child, and the parent's child_started ...
    meta = {"parent_thread": parent.id, "parent_call": call_id}
    await rt.launch(helper, "say hi", metadata=meta, thread_id=child, advance=False)
    started = ChildStarted(
        seq=parent.next_seq,
        at=parent.events[-1].at,
        call_id=call_id,
        thread_id=child,
        agent="helper",
    )
    await store.append(parent.id, [started], expected_seq=parent.next_seq)
    assert (await store.load(parent.id)).status == Status.WAITING
    await rt.advance_only(child)  # ... and the child's end, whose delivery is lost
    assert (await store.load(parent.id)).status == Status.WAITING
    if via_resume:  # `threadline resume` / POST .../resume: collect, then run on
        parent = await rt.resume(parent.id)
        assert parent.status == Status.RUNNING
    parent = await rt.advance(parent.id)
    assert parent.status == Status.DONE
    assert [e.result for e in parent.events if e.kind == "tool_result"] == ["hi"]
    replay_thread(boss, parent)


async def test_cancelling_a_parent_cancels_its_children() -> None:
    coordinator, _, _ = _tree()
    rt = Runtime(MemoryStore(), agents=[coordinator])
    root = await rt.launch(coordinator, "book 5")
    await rt.pause(root.id, by="ops")  # paused threads are cancelled too
    await rt.cancel(root.id, by="ops", reason="wrong customer")
    parent, child, grandchild = await _three(rt, root)
    assert [t.status for t in (parent, child, grandchild)] == [Status.FAILED] * 3
    assert parent.events[-1].reason == "cancelled by ops: wrong customer"
    for thread in (parent, child, grandchild):  # the delegated calls and the approval
        assert thread.state.pending == {} and len(thread.events[-1].withdrawn) == 1
    assert grandchild.events[-1].reason == "cancelled by ops: wrong customer"
    await rt.advance(grandchild.id)
    assert POSTED == []  # nothing of the cancelled tree runs
    with pytest.raises(InvalidAction, match="only an unfinished thread"):
        await rt.cancel(root.id)


async def test_a_cancelled_sub_agent_is_its_parent_s_tool_error() -> None:
    coordinator, _, _ = _tree()
    rt = Runtime(MemoryStore(), agents=[coordinator])
    root = await rt.launch(coordinator, "book 5")
    _, child, grandchild = await _three(rt, root)
    await rt.cancel(grandchild.id, by="ops")
    child_thread = await rt.advance(child.id)  # the parent collects the ended child
    (error,) = [e for e in child_thread.events if e.kind == "tool_error"]
    assert error.error_type == "SubAgentEscalated" and "cancelled by ops" in error.message
    assert child_thread.status == Status.DONE  # its model carried on and finished


@pytest.mark.parametrize("kind", STORES)
async def test_a_sub_agent_call_withdrawn_before_its_child_started_never_runs(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The coordinator chose its sub-agent call and made the child thread; another process's
    cancel lands before `child_started`: the call is withdrawn, the child made for it is
    cancelled too, and no worker ever runs it."""
    coordinator, _, _ = _tree()
    url = store_url(kind, request, tmp_path)
    rt = Runtime(open_store(url), agents=[coordinator])
    other = Runtime(open_store(url), agents=[coordinator])
    root = await rt.launch(coordinator, "book 5", advance=False)
    landed = land_before(rt.store, "child_started", lambda: other.cancel(root.id, by="ops"))
    parent = await rt.advance(root.id)
    assert landed and parent.status is Status.FAILED and parent.state.pending == {}
    (call,) = [e.call_id for e in parent.events if e.kind == "tool_call"]
    assert parent.events[-1].withdrawn == (call,)
    assert children(parent) == []
    child = await rt.store.load(child_id(root.id, call))
    assert child.status is Status.FAILED
    assert (
        child.events[-1].reason == f"cancelled by thread {root.id}: its call {call} was withdrawn"
    )
    stats = await Worker(rt, poll_interval=0.05).run(until_idle=True)
    assert stats.leased == 0
    assert [e.kind for e in (await rt.store.load(child.id)).events] == ["user_message", "failed"]
    await other.store.close()
    await rt.store.close()

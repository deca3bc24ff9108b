"""The run loop: checkpointing, timeouts, crashing tools, human actions, races, fork, replay."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from threadline import (
    Agent,
    InvalidAction,
    MemoryStore,
    NotAllowed,
    ReplayDivergence,
    RetryableToolError,
    Runtime,
    SQLiteStore,
    Status,
    tool,
)
from threadline.errors import ModelError
from threadline.observability import JsonEventLog
from threadline.testing import FunctionModel, ScriptedModel, intent


@tool(timeout=0.2)
async def slow_async() -> str:
    """Hangs."""
    await asyncio.sleep(30)
    return "never"


_release = threading.Event()


@tool(timeout=0.2)
def slow_sync() -> str:
    """Blocks a worker thread."""
    _release.wait(10)
    return "late"


@tool
def crash(x: int) -> int:
    """Always fails, with a long multi-line message."""
    raise RuntimeError("disk on fire\n" + "details " * 200)


@tool
def flaky() -> int:
    """Fails in a way worth retrying."""
    raise RetryableToolError("upstream 503")


@tool
def echo(text: str) -> str:
    """Echo."""
    return text


TOOLS = Agent("tools", tools=[slow_async, slow_sync, crash, flaky, echo])


async def test_hanging_and_crashing_tools_never_take_the_loop_down() -> None:
    model = ScriptedModel(
        [
            intent("slow_async"),
            intent("slow_sync"),
            intent("echo", text="x"),
            intent("crash", x=1),
            intent("flaky"),
            intent("echo", text="y"),
            intent("done_for_now", message="survived"),
        ]
    )
    thread = await Runtime(MemoryStore(), model=model).launch(TOOLS, "go")
    _release.set()
    assert thread.status == Status.DONE
    errors = [e for e in thread.events if e.kind == "tool_error"]
    assert [(e.tool, e.error_type, e.retryable) for e in errors] == [
        ("slow_async", "TimeoutError", True),
        ("slow_sync", "TimeoutError", True),
        ("crash", "RuntimeError", False),
        ("flaky", "RetryableToolError", True),
    ]
    crash_msg = errors[2].message
    assert crash_msg.startswith("disk on fire details") and len(crash_msg) <= 300
    assert "\n" not in crash_msg and "Traceback" not in crash_msg


@pytest.mark.parametrize("pipelined", [False, True])
async def test_every_event_is_in_the_store_before_the_next_step(
    tmp_path: Path, pipelined: bool
) -> None:
    """Everything is durable before the model is asked, but the turns just before when they
    are pipelined (docs/core.md, "Pipelining": at most `pipeline_depth`, 3 by default, may
    still be on their way to disk; not so with `pipelined=False`)."""
    store = SQLiteStore(tmp_path / "t.db", pipelined=pipelined)
    seen_lengths: list[int] = []

    async def answer(context: object) -> dict[str, object]:
        thread_id = (await store.list()).items[0].id
        stored = await store.load(thread_id)
        seen_lengths.append(len(stored))
        if len(seen_lengths) < 3:
            return intent("echo", text=f"n{len(seen_lengths)}")
        return intent("done_for_now", message="ok")

    rt = Runtime(store, model=FunctionModel(answer))
    thread = await rt.launch(TOOLS, "go")
    assert thread.status == Status.DONE
    if pipelined:  # each turn (3 events) on disk, or its commit in flight (two at most)
        assert seen_lengths[0] == 1 and seen_lengths[1] in (1, 4) and seen_lengths[2] in (1, 4, 7)
    else:
        assert seen_lengths == [1, 4, 7]
    assert len(await store.load(thread.id)) == len(thread)
    await store.close()


async def test_provider_failures_become_events_then_escalate() -> None:
    model = ScriptedModel(
        [
            ModelError("429 slow down", retryable=True, status=429),
            ModelError("500", retryable=True),
            ValueError("sdk bug"),
        ]
    )
    thread = await Runtime(MemoryStore(), model=model).launch(TOOLS, "go")
    kinds = [e.kind for e in thread.events]
    assert kinds == ["user_message", "model_error", "model_error", "model_error", "escalated"]
    assert thread.events[1].retryable and not thread.events[3].retryable
    assert thread.events[3].message.startswith("ValueError: sdk bug")


async def test_actions_that_do_not_fit_the_state_write_nothing(calculator: ModuleType) -> None:
    model = ScriptedModel([intent("divide", a=1, b=2), intent("done_for_now", message="x")])
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "1/2")
    (call_id,) = thread.state.pending
    n = len(thread)
    with pytest.raises(InvalidAction, match="not awaiting approval"):
        await rt.approve(thread.id, "c999")
    with pytest.raises(InvalidAction, match="asked nothing"):
        await rt.respond(thread.id, "r1", "hello")
    with pytest.raises(InvalidAction, match="awaiting_approval"):
        await rt.message(thread.id, "hello?")
    with pytest.raises(InvalidAction, match="b: Input should be a valid number"):
        await rt.approve(thread.id, call_id, edited_arguments={"a": 1, "b": "two"})
    with pytest.raises(InvalidAction, match="paused, escalated or failed"):
        await rt.resume(thread.id)
    assert len(await rt.store.load(thread.id)) == n
    await rt.approve(thread.id, call_id)
    with pytest.raises(InvalidAction, match="approved"):
        await rt.approve(thread.id, call_id)
    assert len(await rt.store.load(thread.id)) == n + 1


async def test_two_racing_approvals_exactly_one_wins(
    tmp_path: Path, calculator: ModuleType
) -> None:
    store = SQLiteStore(tmp_path / "race.db")
    other = SQLiteStore(tmp_path / "race.db")  # a second connection, like a second process
    rt = Runtime(store, model=ScriptedModel([intent("divide", a=1, b=2)]))
    rt2 = Runtime(other, agents=[calculator.agent])
    thread = await rt.launch(calculator.agent, "1/2")
    (call_id,) = thread.state.pending
    results = await asyncio.gather(
        rt.approve(thread.id, call_id, approved=True, by="ana"),
        rt2.approve(thread.id, call_id, approved=False, comment="no", by="bo"),
        return_exceptions=True,
    )
    assert sum(isinstance(r, InvalidAction) for r in results) == 1
    stored = await store.load(thread.id)
    assert [e.kind for e in stored.events].count("approval") == 1
    await store.close()
    await other.close()


async def test_named_approvers_only() -> None:
    @tool(approval="always")
    def wire(amount: int) -> str:
        """Wire money."""
        return "sent"

    from threadline import Thread
    from threadline.events import ApprovalRequested, ToolCall, UserMessage, utcnow

    agent = Agent("bank", tools=[wire])
    rt = Runtime(MemoryStore(), agents=[agent], model=ScriptedModel([]))
    now = utcnow()
    thread = Thread(
        "th_bank",
        "bank",
        [
            UserMessage(seq=0, at=now, text="send 5"),
            ToolCall(
                seq=1, at=now, call_id="c1", tool="wire", version="1", arguments={"amount": 5}
            ),
            ApprovalRequested(
                seq=2,
                at=now,
                call_id="c1",
                tool="wire",
                arguments={"amount": 5},
                approvers=("ana",),
            ),
        ],
    )
    await rt.store.create(thread)
    with pytest.raises(NotAllowed, match="mallory"):
        await rt.approve(thread.id, "c1", by="mallory")
    assert len(await rt.store.load(thread.id)) == 3
    await rt.approve(thread.id, "c1", by="ana")
    assert (await rt.store.load(thread.id)).events[-1].by == "ana"


async def test_named_responders_only() -> None:
    """`Agent.responders` is recorded on each question and enforced by the runtime."""
    agent = Agent("asks", responders=["ana"])
    model = ScriptedModel(
        [intent("request_more_information", message="which?"), intent("done_for_now", message="ok")]
    )
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent, "do it")
    request = thread.events[-1]
    assert request.kind == "human_request" and request.responders == ("ana",)
    for act in (
        rt.respond(thread.id, request.request_id, "this", by="mallory"),
        rt.respond(thread.id, request.request_id, "this"),
        rt.message(thread.id, "this", sender="mallory"),
    ):
        with pytest.raises(NotAllowed, match="may not answer this question"):
            await act
    assert len(await rt.store.load(thread.id)) == len(thread)
    await rt.respond(thread.id, request.request_id, "this", by="ana")
    assert (await rt.advance(thread.id)).status is Status.DONE
    # Replay re-derives the question with its responders.
    await rt.replay(thread.id)


async def test_pause_and_resume(calculator: ModuleType) -> None:
    model = ScriptedModel([intent("add", a=1, b=1), intent("done_for_now", message="2")])
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "1+1", advance=False)
    await rt.pause(thread.id, by="ops")
    thread = await rt.advance(thread.id)
    assert thread.status == Status.PAUSED and model.remaining == 2
    await rt.resume(thread.id, by="ops")
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE


async def test_fork_copies_a_prefix_and_continues_independently(calculator: ModuleType) -> None:
    model = ScriptedModel(
        [
            intent("add", a=1, b=1),
            intent("done_for_now", message="2"),
            intent("multiply", a=2, b=5),
            intent("done_for_now", message="10"),
        ]
    )
    rt = Runtime(MemoryStore(), model=model)
    original = await rt.launch(calculator.agent, "1+1")
    forked = await rt.fork(original.id, at=3)
    assert forked.id != original.id
    assert forked.events[:4] == original.events[:4]
    assert forked.events[4].kind == "forked_from" and forked.events[4].at_seq == 3
    forked = await rt.advance(forked.id)
    # The fork took the model's next answers (multiply, then done) from event 4 on.
    assert forked.status == Status.DONE and forked.events[-1].message == "10"
    assert len(await rt.store.load(original.id)) == len(original)
    with pytest.raises(InvalidAction, match="events 0..6"):
        await rt.fork(original.id, at=99)


async def test_replay_matches_and_detects_changed_behaviour(calculator: ModuleType) -> None:
    model = ScriptedModel(
        [
            intent("add", a=2, b=2),
            "oops",
            intent("divide", a=4, b=2),
            intent("done_for_now", message="2"),
        ]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "(2+2)/2")
    await rt.approve(thread.id, next(iter(thread.state.pending)))
    thread = await rt.advance(thread.id)
    replayed = await rt.replay(thread.id)
    assert [e.kind for e in replayed.events] == [e.kind for e in thread.events]

    # Same tools, but divide no longer needs approval: the replay must say where it diverges.
    changed = Agent(
        "calculator", tools=[calculator.add, calculator.subtract, calculator.multiply, _divide_free]
    )
    from threadline.replay import replay_thread

    with pytest.raises(ReplayDivergence) as info:
        replay_thread(changed, thread)
    seq = next(e.seq for e in thread.events if e.kind == "approval_requested")
    assert info.value.seq == seq
    assert "approval_requested" in str(info.value) and "divide" in str(info.value)


@tool(name="divide")
def _divide_free(a: float, b: float) -> float:
    """Divide without approval."""
    return a / b


async def test_each_event_is_one_json_log_line(calculator: ModuleType) -> None:
    sink = io.StringIO()
    model = ScriptedModel([intent("add", a=1, b=2), intent("done_for_now", message="3")])
    rt = Runtime(MemoryStore(), model=model, observers=[JsonEventLog(sink)])
    thread = await rt.launch(calculator.agent, "1+2")
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [r["seq"] for r in lines] == list(range(len(thread)))
    assert {r["thread_id"] for r in lines} == {thread.id}
    call = next(r for r in lines if r["kind"] == "tool_call")
    assert call["tool"] == "add" and call["agent"] == "calculator"
    mc = next(r for r in lines if r["kind"] == "model_call")
    assert {"input_tokens", "output_tokens", "latency_ms", "model"} <= set(mc)


async def test_a_broken_observer_does_not_break_the_step(calculator: ModuleType) -> None:
    def broken(thread: object, events: object) -> None:
        raise RuntimeError("log sink down")

    model = ScriptedModel([intent("done_for_now", message="ok")])
    thread = await Runtime(MemoryStore(), model=model, observers=[broken]).launch(
        calculator.agent, "hi"
    )
    assert thread.status == Status.DONE


async def test_sync_wrapper_runs_a_thread(calculator: ModuleType) -> None:
    from threadline import run_sync

    model = ScriptedModel([intent("done_for_now", message="ok")])
    rt = Runtime(MemoryStore(), model=model)
    started = time.perf_counter()
    thread = await asyncio.to_thread(run_sync, rt.launch(calculator.agent, "hi"))
    assert thread.status == Status.DONE and time.perf_counter() >= started


async def test_replay_model_reproduces_a_recorded_run(calculator: ModuleType) -> None:
    from threadline.testing import ReplayModel

    model = ScriptedModel(
        [
            intent("add", a=1, b=2),
            "garbage",
            intent("multiply", a=3, b=3),
            intent("done_for_now", message="9"),
        ]
    )
    rt = Runtime(MemoryStore(), model=model)
    recorded = await rt.launch(calculator.agent, "(1+2)*3")
    again = await Runtime(MemoryStore(), model=ReplayModel(recorded)).launch(
        calculator.agent, "(1+2)*3"
    )

    def shape(thread: object) -> list[tuple[str, object]]:
        return [
            (e.kind, getattr(e, "arguments", None) or getattr(e, "result", None))
            for e in thread.events
        ]  # type: ignore[attr-defined]

    assert shape(again) == shape(recorded) and again.status == Status.DONE
    from threadline import Thread

    with pytest.raises(ModelError, match="no recorded answer #1"):
        await ReplayModel(Thread("th_empty", "calculator")).request(model.contexts[0])


async def test_a_pause_during_a_model_call_keeps_the_answer(
    tmp_path: Path, calculator: ModuleType
) -> None:
    """A human action that lands mid-step: the step's events are re-based after it."""
    store = SQLiteStore(tmp_path / "p.db")
    other = Runtime(SQLiteStore(tmp_path / "p.db"), agents=[calculator.agent])

    async def answer(context: object) -> dict[str, object]:
        thread_id = (await store.list()).items[0].id
        await other.pause(thread_id, by="ops")  # lands while the model is "thinking"
        return intent("add", a=1, b=1)

    rt = Runtime(store, model=FunctionModel(answer))
    thread = await rt.launch(calculator.agent, "1+1")
    kinds = [e.kind for e in (await store.load(thread.id)).events]
    assert kinds == ["user_message", "paused", "model_call", "tool_call"]
    assert thread.status == Status.PAUSED
    await store.close()
    await other.store.close()


async def test_two_advancers_without_leases_never_record_a_step_twice(
    tmp_path: Path, calculator: ModuleType
) -> None:
    """If two processes advance one thread (no lease), the loser stops instead of re-basing
    its model call after the winner's, which would record the step twice."""
    from threadline import AppendConflict

    async def slow(context: object) -> dict[str, object]:
        await asyncio.sleep(0.1)
        return intent("add", a=2, b=2)

    a = Runtime(SQLiteStore(tmp_path / "r.db"), model=FunctionModel(slow))
    b = Runtime(
        SQLiteStore(tmp_path / "r.db"), agents=[calculator.agent], model=FunctionModel(slow)
    )
    thread = await a.launch(calculator.agent, "2+2", advance=False)
    results = await asyncio.gather(
        a.advance(thread.id, max_steps=1), b.advance(thread.id, max_steps=1), return_exceptions=True
    )
    assert sum(isinstance(r, AppendConflict) for r in results) == 1
    kinds = [e.kind for e in (await a.store.load(thread.id)).events]
    assert kinds == ["user_message", "model_call", "tool_call"]
    await a.store.close()
    await b.store.close()


async def test_a_tool_that_cannot_know_its_outcome_takes_the_maybe_ran_path() -> None:
    """ToolOutcomeUnknown: a non-idempotent side effect records no outcome and escalates
    (never re-run); an idempotent or side-effect-free tool is tried again (running it again
    is safe), then records a retryable error."""
    from threadline import ToolRetry
    from threadline.errors import ToolOutcomeUnknown

    runs: list[str] = []

    @tool(side_effects=True)
    def transfer(amount: int) -> str:
        runs.append("transfer")
        raise ToolOutcomeUnknown("the bank hung up mid-call")

    @tool(side_effects=True, idempotent=True, retry=ToolRetry(max_attempts=2, base_delay=0.01))
    def sync() -> str:
        runs.append("sync")
        raise ToolOutcomeUnknown("the mirror hung up mid-call")

    model = ScriptedModel(
        [intent("sync"), intent("transfer", amount=5), intent("done_for_now", message="x")]
    )
    agent = Agent("bank", tools=[transfer, sync], model=model)
    rt = Runtime(MemoryStore(), agents=[agent])
    thread = await rt.launch(agent, "sync then transfer")
    error = next(e for e in thread.events if e.kind == "tool_error")
    assert error.tool == "sync" and error.retryable and "(after 2 attempts)" in error.message
    assert thread.status == Status.ESCALATED
    assert thread.events[-2].kind == "tool_started"
    assert "may have run" in thread.events[-1].reason
    assert thread.events[-1].details["arguments"] == {"amount": 5}
    thread = await rt.advance(thread.id)
    assert runs == ["sync", "sync", "transfer"]  # the transfer was never run again


async def test_tool_arguments_are_validated_once_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    @tool(approval=lambda args: args.a > 100)
    def add(a: float, b: float) -> float:
        """Add."""
        return a + b

    seen: list[object] = []
    real = add.validate

    def counting(arguments: object) -> object:
        seen.append(arguments)
        return real(arguments)

    monkeypatch.setattr(add, "validate", counting)
    agent = Agent("adder", tools=[add])
    model = ScriptedModel([intent("add", a=1, b=2), intent("done_for_now", message="3")])
    thread = await Runtime(MemoryStore(), agents=[agent], model=model).launch(agent, "1+2")
    assert thread.status is Status.DONE
    assert [e.kind for e in thread.events].count("tool_result") == 1
    assert len(seen) == 1  # read from the answer; deciding and running reuse the value

"""A tool run's deadline (`execution.Deadline`): `asyncio.timeout`'s behaviour for the task
running a tool, cancellation from outside kept apart from the deadline's own; `bounded`
arms it only once the run suspends."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from threadline import Agent, MemoryStore, Runtime, Tool, tool
from threadline.events import PendingCall
from threadline.execution import Bounded, Deadline, bounded, execute
from threadline.testing import ScriptedModel, intent


async def test_a_run_past_its_deadline_raises_timeout_error_and_the_task_goes_on() -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError), Deadline(0.05):
        await asyncio.sleep(5)
    assert asyncio.get_running_loop().time() - started < 2
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the deadline's cancel was undone
    await asyncio.sleep(0.01)  # nothing left to cancel this task later


async def test_a_run_within_its_deadline_leaves_no_timer_behind() -> None:
    with Deadline(0.05):
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)  # past the deadline: the timer was cancelled, no CancelledError
    with Deadline(None):  # no deadline at all
        await asyncio.sleep(0.01)


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    entered = asyncio.Event()

    async def run() -> None:
        with Deadline(5):
            entered.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(run())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_from_outside_wins_over_an_expiring_deadline() -> None:
    """As with `asyncio.timeout`: cancelled by someone else while the deadline expired,
    the task is still cancelled (not a TimeoutError the tool would record)."""

    async def run() -> None:
        with Deadline(0.01):
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                outer.cancel()  # someone else cancels too, as the deadline fires
                raise

    outer = asyncio.create_task(run())
    with pytest.raises(asyncio.CancelledError):
        await outer


async def test_a_tool_past_its_timeout_is_a_tool_error_through_the_runtime() -> None:
    @tool(timeout=0.05)
    async def hangs() -> str:
        """Hangs."""
        await asyncio.sleep(5)
        return "never"

    agent = Agent(
        "t",
        tools=[hangs],
        model=ScriptedModel([intent("hangs"), intent("done_for_now", message="ok")]),
    )
    rt = Runtime(MemoryStore(), agents=[agent])
    thread = await rt.launch(agent, "go")
    errors = [e for e in thread.events if e.kind == "tool_error"]
    # read-only, so tried again (threadline.retries) before the error goes to the model
    assert [(e.error_type, e.message) for e in errors] == [
        ("TimeoutError", "no result after 0.05s (after 3 attempts)")
    ]


async def test_a_run_ending_in_its_first_step_needs_no_timer() -> None:
    async def quick() -> str:
        time.sleep(0.03)  # noqa: ASYNC251 - a first step longer than the deadline
        return "done"

    loop = asyncio.get_running_loop()
    timers = len(loop._scheduled)  # type: ignore[attr-defined]
    assert await Bounded(quick(), 0.01) == "done"
    assert len(loop._scheduled) == timers  # type: ignore[attr-defined]
    run = quick()
    assert bounded(run, None) is run  # no deadline: the run itself
    assert await run == "done"


async def test_a_bounded_run_that_suspends_keeps_the_deadline_from_its_start() -> None:
    async def slow_start() -> str:
        time.sleep(0.05)  # noqa: ASYNC251 - the first step, before any await
        await asyncio.sleep(0.04)  # would end 0.09 s after the start
        return "late"

    with pytest.raises(TimeoutError):
        await Bounded(slow_start(), 0.07)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0

    async def steps() -> int:
        total = 0
        for i in range(3):
            await asyncio.sleep(0)
            total += i
        return total

    assert await Bounded(steps(), 5) == 3


async def test_a_bounded_run_sees_the_cancellation_and_may_answer_it() -> None:
    """What is thrown into the waiting run is handed to it, as `await` does: a run that
    catches its deadline's cancellation and returns gives its value (as under
    `asyncio.timeout`), and a cancellation from outside stays one."""

    async def stubborn() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            return "answered"
        return "slept"

    async def answers() -> str:
        return await Bounded(stubborn(), 0.01)

    assert await asyncio.create_task(answers()) == "answered"
    entered = asyncio.Event()

    async def run() -> None:
        async def waits() -> None:
            entered.set()
            await asyncio.sleep(5)

        await Bounded(waits(), 5)

    task = asyncio.create_task(run())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_sync_tool_waiting_for_a_worker_thread_is_timed_from_its_start() -> None:
    # The loop's executor (a handful of workers by default) queues sync tools when many
    # threads run them at once; a tool counted from its call timed out without running
    # (the 200 recorded airline runs advanced together on a loaded machine, docs/core.md).
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    ran: list[str] = []

    @tool(timeout=1.0)
    def occupies() -> str:
        """Holds the only worker for 0.4 s."""
        time.sleep(0.4)
        ran.append("occupies")
        return "done"

    @tool(timeout=0.25)
    def quick(name: str) -> str:
        """Runs 50 ms once it has a worker."""
        time.sleep(0.05)
        ran.append(name)
        return name

    @tool(timeout=0.25)
    def slow() -> str:
        """Runs 0.5 s once it has a worker: past its own timeout."""
        time.sleep(0.5)
        return "late"

    async def run(t: Tool, **arguments: str) -> Any:
        call = PendingCall(t.name, t.name, "1", dict(arguments), seq=1)
        return await execute(t, "th", call, 1, None)

    first = asyncio.ensure_future(run(occupies))
    await asyncio.sleep(0.02)  # `occupies` has the worker
    waited = await run(quick, name="waited")  # 0.4 s for a worker, then 0.05 s of its own
    assert waited.failure is None and waited.result == "waited"
    assert (await first).result == "done"
    late = await run(slow)
    assert late.failure is not None and late.failure.error_type == "TimeoutError"
    assert ran == ["occupies", "waited"]

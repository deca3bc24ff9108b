"""A tool run's deadline (`execution.Deadline`): `asyncio.timeout`'s behaviour for the task
running a tool, cancellation from outside kept apart from the deadline's own."""

from __future__ import annotations

import asyncio

import pytest

from threadline import Agent, MemoryStore, Runtime, tool
from threadline.execution import Deadline
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

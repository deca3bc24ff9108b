"""The server's runner and poison threads: a thread whose advance keeps failing is tried
again after `retry_after` (not left `running` with nothing to advance it) and, after
`max_failures` in a row, becomes `failed` with the reason; a healthy thread is unaffected."""

from __future__ import annotations

import asyncio
from pathlib import Path

from threadline import Agent, Runtime
from threadline.events import Status, Thread
from threadline.models.base import Context, Message
from threadline.server.runner import ThreadRunner
from threadline.stores import SQLiteStore
from threadline.testing import FunctionModel, intent


def broken(agent: Agent, thread: Thread) -> Context:
    raise RuntimeError("renderer bug: list index out of range")


def fine(agent: Agent, thread: Thread) -> Context:
    return Context(system="", messages=(Message("user", "go"),))


async def test_the_runner_retries_a_failing_thread_then_marks_it_failed(tmp_path: Path) -> None:
    model = FunctionModel(lambda _: intent("done_for_now", message="ok"))
    fragile = Agent("fragile", model=model, renderer=broken)
    healthy = Agent("healthy", model=model, renderer=fine)
    store = SQLiteStore(tmp_path / "r.db")
    runtime = Runtime(store, agents=[fragile, healthy])
    runner = ThreadRunner(runtime, max_failures=3, retry_after=0.05)
    try:
        poison = await runtime.launch(fragile, "go", advance=False)
        ok = await runtime.launch(healthy, "go", advance=False)
        runner.kick(poison.id)
        runner.kick(ok.id)
        for _ in range(400):  # a bound, not a timing assertion
            if (await store.get(poison.id)).status == Status.FAILED:
                break
            await asyncio.sleep(0.025)
        failed = await store.load(poison.id)
        assert failed.status == Status.FAILED and runner.failures == 3
        assert "failed 3 times in a row" in failed.events[-1].reason
        assert "RuntimeError: renderer bug" in failed.events[-1].reason
        assert (await store.get(ok.id)).status == Status.DONE
        await asyncio.sleep(0.2)  # no further attempt: a failed thread is not runnable
        assert runner.failures == 3
    finally:
        await runner.drain(5)
        await store.close()

"""Breaker open means wait: a thread whose provider is down parks in a durable wait until the
breaker's next trial time, then resumes and completes, without counting as an error.

Real `Runtime`, real `Worker`, SQLite store; the provider is a scripted model that fails a
few times, behind the real `ResilientModel` and `CircuitBreaker`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType

import pytest

from threadline import Runtime, Status
from threadline.errors import CircuitOpen, ModelError
from threadline.events import utcnow
from threadline.models.base import Context
from threadline.models.resilience import (
    CircuitBreaker,
    FallbackModel,
    ResilientModel,
    RetryPolicy,
)
from threadline.stores import SQLiteStore
from threadline.testing import ScriptedModel, intent
from threadline.worker import Worker


async def no_sleep(seconds: float) -> None:
    return None


def down(n: int) -> list[ModelError]:
    return [ModelError("HTTP 503: overloaded", retryable=True, status=503) for _ in range(n)]


async def test_an_open_breaker_parks_the_thread_which_later_completes(
    calculator: ModuleType, tmp_path: Path
) -> None:
    provider = ScriptedModel(
        [*down(3), intent("add", a=2, b=3), intent("done_for_now", message="5")],
        model_id="flaky:m",
    )
    breaker = CircuitBreaker("flaky", failure_threshold=3, reset_after=0.2)
    model = ResilientModel(provider, RetryPolicy(max_attempts=2), breaker, sleep=no_sleep)
    store = SQLiteStore(tmp_path / "threads.db")
    try:
        rt = Runtime(store, agents=[calculator.agent], model=model)
        thread = await rt.launch(calculator.agent, "2 plus 3", advance=False)
        await Worker(rt, poll_interval=0.05).run(until_idle=True)

        # Two attempts failed (one model_error); the third failure opened the breaker, and
        # the retry that followed met it open: the thread waits, it is not an error.
        parked = await store.load(thread.id)
        assert [e.kind for e in parked.events] == ["user_message", "model_error", "waiting"]
        assert parked.status == Status.WAITING and parked.state.consecutive_errors == 1
        wait = parked.events[2]
        assert "flaky unavailable (circuit breaker open)" in (wait.reason or "")
        summary = await store.get(thread.id)
        assert summary.status == Status.WAITING and wait.until is not None
        assert (
            summary.due_at is not None and abs((summary.due_at - wait.until).total_seconds()) < 0.01
        )
        assert summary.lease_owner is None  # no worker holds a waiting thread

        for _ in range(20):  # bounded: each pass sleeps until the wait is due
            current = await store.get(thread.id)
            if current.status != Status.WAITING:
                break
            due = current.due_at or utcnow()
            await asyncio.sleep(max(0.0, (due - utcnow()).total_seconds()) + 0.05)
            await Worker(
                Runtime(store, agents=[calculator.agent], model=model), poll_interval=0.05
            ).run(until_idle=True)

        done = await store.load(thread.id)
        assert done.status == Status.DONE and done.events[-1].message == "5"
        assert [e.kind for e in done.events] == [
            "user_message",
            "model_error",
            "waiting",
            "wait_timed_out",
            "model_call",
            "tool_call",
            "tool_result",
            "model_call",
            "tool_call",
            "done",
        ]
        assert not any(e.kind == "escalated" for e in done.events)
        assert breaker.state == "closed"
        assert len(provider.contexts) == 5  # 3 failures, then the two answers
    finally:
        await store.close()


async def test_a_fallback_chain_with_every_breaker_open_waits_for_the_soonest() -> None:
    ctx = Context(system="s", messages=())
    slow = CircuitBreaker("a", failure_threshold=1, reset_after=60)
    soon = CircuitBreaker("b", failure_threshold=1, reset_after=5)
    slow.record_failure()
    soon.record_failure()
    chain = FallbackModel(
        [
            ResilientModel(ScriptedModel([], model_id="a:m"), breaker=slow, sleep=no_sleep),
            ResilientModel(ScriptedModel([], model_id="b:m"), breaker=soon, sleep=no_sleep),
        ]
    )
    with pytest.raises(CircuitOpen) as info:
        await chain.request(ctx)
    assert info.value.provider == "a,b"
    assert info.value.retry_after is not None and 4 < info.value.retry_after <= 5


async def test_a_fallback_chain_with_one_live_model_is_still_an_error() -> None:
    ctx = Context(system="s", messages=())
    opened = CircuitBreaker("a", failure_threshold=1, reset_after=60)
    opened.record_failure()
    chain = FallbackModel(
        [
            ResilientModel(ScriptedModel([], model_id="a:m"), breaker=opened, sleep=no_sleep),
            ResilientModel(ScriptedModel(down(1), model_id="b:m"), RetryPolicy(max_attempts=1)),
        ]
    )
    with pytest.raises(ModelError, match="every model in the fallback chain failed") as info:
        await chain.request(ctx)
    assert not isinstance(info.value, CircuitOpen)  # a real failure is an error, not a wait


async def test_breaker_waits_are_capped_and_hidden_from_the_model(
    calculator: ModuleType, tmp_path: Path
) -> None:
    """A provider whose breaker never closes: the thread waits `max_breaker_waits` times in
    a row, then escalates (not parked forever); the model's context never shows the waits."""
    from datetime import timedelta

    from threadline import Agent
    from threadline.testing import FunctionModel

    contexts: list[Context] = []

    def down(context: Context) -> object:
        contexts.append(context)
        raise CircuitOpen("flaky", 5.0)

    agent = Agent("calc", tools=[calculator.add], max_breaker_waits=3, model=FunctionModel(down))
    start = utcnow()
    offset = [timedelta(0)]
    store = SQLiteStore(tmp_path / "threads.db")
    try:
        rt = Runtime(store, agents=[agent], clock=lambda: start + offset[0])
        thread = await rt.launch(agent, "2 plus 3")
        for _ in range(10):  # each pass: the wait falls due, a worker wakes the thread
            if thread.status is not Status.WAITING:
                break
            offset[0] += timedelta(seconds=10)
            thread = await rt.advance(await rt.wake_if_due(thread))
        assert thread.status is Status.ESCALATED
        assert "3 circuit-breaker waits in a row" in thread.events[-1].reason
        kinds = [e.kind for e in thread.events]
        assert kinds == ["user_message"] + ["waiting", "wait_timed_out"] * 3 + ["escalated"]
        assert len(contexts) == 3 and thread.state.consecutive_errors == 0
        for context in contexts[1:]:
            text = context.as_text()
            assert "wait_timed_out" not in text and "circuit breaker" not in text
        # A person takes it back: the count starts again and the model is asked.
        await rt.resume(thread.id, by="ops")
        thread = await rt.advance(thread.id)
        assert len(contexts) == 4 and thread.status is Status.WAITING
    finally:
        await store.close()

"""Tool retries with backoff and per-tool circuit breakers (issue 13), on a real SQLite
store: attempts recorded as events, backoff shown by recorded timestamps, long backoffs as
durable waits, breakers that open and close, and replay of all of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from threadline import (
    Agent,
    RetryableToolError,
    Runtime,
    SQLiteStore,
    Status,
    Thread,
    ToolBreaker,
    ToolContext,
    ToolRetry,
    replay_thread,
    tool,
)
from threadline.events import ToolAttemptFailed, ToolError, ToolResult, ToolStarted, Waiting
from threadline.models.base import Context
from threadline.testing import FunctionModel, ScriptedModel, intent

SEEN: list[tuple[int, str, datetime]] = []
"""(attempt, idempotency key, when it started) of every run of the tools below."""

FAST = ToolRetry(max_attempts=3, base_delay=0.05, max_delay=0.2)


@pytest.fixture(autouse=True)
def _clear() -> None:
    SEEN.clear()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "t.db") as s:
        yield s


def _seen(ctx: ToolContext) -> None:
    SEEN.append((ctx.attempt, ctx.idempotency_key, datetime.now(UTC)))


@tool(retry=FAST)
def lookup(sku: str, ctx: ToolContext) -> str:
    """Look up a product (fails twice, then answers)."""
    _seen(ctx)
    if ctx.attempt < 3:
        raise RetryableToolError(f"catalogue busy ({ctx.attempt})")
    return f"{sku}: 3 in stock"


@tool(retry=FAST)
def broken(sku: str, ctx: ToolContext) -> str:
    """Look up a product in a catalogue that is down."""
    _seen(ctx)
    raise RetryableToolError("catalogue down")


def _agent(t: Any, **options: Any) -> Agent:
    return Agent(
        "shop",
        tools=[t],
        model=ScriptedModel(
            [intent(t.name, sku="a1"), intent("done_for_now", message="answered")],
            follow_thread=True,
        ),
        **options,
    )


def _same(derived: Thread, recorded: Thread) -> bool:
    return [e.model_dump() for e in derived.events] == [e.model_dump() for e in recorded.events]


async def test_a_flaky_tool_is_tried_again_with_backoff_until_it_answers(
    store: SQLiteStore,
) -> None:
    agent = _agent(lookup)
    rt = Runtime(store, agents=[agent])
    thread = await store.load((await rt.launch(agent, "is a1 in stock?")).id)
    assert thread.status == Status.DONE
    attempts = [e for e in thread.events if isinstance(e, ToolAttemptFailed)]
    results = [e for e in thread.events if isinstance(e, ToolResult)]
    assert [a.attempt for a in attempts] == [1, 2]
    assert [a.message for a in attempts] == ["catalogue busy (1)", "catalogue busy (2)"]
    assert [r.result for r in results] == ["a1: 3 in stock"]
    assert not any(e.kind == "tool_error" for e in thread.events)
    # backoff, by the recorded times: each attempt starts after the previous one's retry_at
    assert [s[0] for s in SEEN] == [1, 2, 3]
    assert len({s[1] for s in SEEN}) == 1, "every attempt carries the call's idempotency key"
    for failed, (_, _, started) in zip(attempts, SEEN[1:], strict=True):
        assert failed.retry_at > failed.at
        assert started >= failed.retry_at
    assert attempts[1].at >= attempts[0].retry_at and results[0].at >= attempts[1].retry_at
    # the model never saw the failed attempts, only the result
    shown = agent.model.contexts[-1].as_text()  # type: ignore[union-attr]
    assert "catalogue busy" not in shown and "3 in stock" in shown
    assert _same(replay_thread(agent, thread), thread)


async def test_when_the_attempts_are_used_up_the_model_sees_the_error(store: SQLiteStore) -> None:
    agent = _agent(broken)
    rt = Runtime(store, agents=[agent])
    thread = await store.load((await rt.launch(agent, "is a1 in stock?")).id)
    assert [e.attempt for e in thread.events if isinstance(e, ToolAttemptFailed)] == [1, 2]
    (error,) = [e for e in thread.events if isinstance(e, ToolError)]
    assert error.message == "catalogue down (after 3 attempts)" and error.retryable
    assert len(SEEN) == 3
    shown = agent.model.contexts[-1].as_text()  # type: ignore[union-attr]
    assert "catalogue down (after 3 attempts)" in shown
    assert _same(replay_thread(agent, thread), thread)


def _slow_tool(**options: Any) -> Any:
    @tool(name="sync_stock", timeout=0.05, retry=FAST, **options)
    async def sync_stock(sku: str, ctx: ToolContext) -> str:
        """Push stock levels to the warehouse (slow on the first run)."""
        _seen(ctx)
        if ctx.attempt == 1:
            await asyncio.sleep(1)
        return f"{sku} synced"

    return sync_stock


async def test_a_timeout_is_tried_again_only_when_running_again_is_safe(
    store: SQLiteStore,
) -> None:
    safe = _agent(_slow_tool(side_effects=True, idempotent=True))
    thread = await store.load((await Runtime(store, agents=[safe]).launch(safe, "sync")).id)
    assert [e.kind for e in thread.events[3:8]] == [
        "tool_started",
        "tool_attempt_failed",
        "tool_started",
        "tool_result",
        "model_call",
    ]
    assert [e.attempt for e in thread.events if isinstance(e, ToolStarted)] == [1, 2]
    assert _same(replay_thread(safe, thread), thread)

    SEEN.clear()
    unsafe = _agent(_slow_tool(side_effects=True))
    thread = await store.load((await Runtime(store, agents=[unsafe]).launch(unsafe, "sync")).id)
    assert not any(isinstance(e, ToolAttemptFailed) for e in thread.events)
    (error,) = [e for e in thread.events if isinstance(e, ToolError)]
    assert error.error_type == "TimeoutError" and len(SEEN) == 1, "it may have run: told, once"
    assert _same(replay_thread(unsafe, thread), thread)


class Clock:
    """A clock the test moves (the runtime's event times and backoffs)."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_a_long_backoff_is_a_durable_wait_a_worker_ends(store: SQLiteStore) -> None:
    patient = ToolRetry(max_attempts=3, base_delay=600, max_delay=600, sleep_limit=5)

    @tool(name="lookup", retry=patient)
    def slow_lookup(sku: str, ctx: ToolContext) -> str:
        """Look up a product (fails once)."""
        _seen(ctx)
        if ctx.attempt == 1:
            raise RetryableToolError("catalogue rebooting")
        return f"{sku}: 1 in stock"

    agent = _agent(slow_lookup)
    clock = Clock()
    rt = Runtime(store, agents=[agent], clock=clock)
    thread = await rt.launch(agent, "is a1 in stock?")
    assert thread.status == Status.WAITING, "parked, not sleeping for minutes"
    failed, wait = thread.events[-2:]
    assert isinstance(failed, ToolAttemptFailed) and isinstance(wait, Waiting)
    assert wait.call_id == failed.call_id and wait.until == failed.retry_at
    assert timedelta(seconds=300) <= failed.retry_at - failed.at <= timedelta(seconds=600)
    summary = await store.get(thread.id)
    assert summary.due_at == failed.retry_at and summary.lease_owner is None

    clock.now = failed.retry_at - timedelta(seconds=1)
    assert (await rt.wake_if_due(thread)).next_seq == thread.next_seq  # not due yet
    clock.now = failed.retry_at + timedelta(seconds=1)
    thread = await rt.advance(await rt.wake_if_due(thread))
    assert thread.status == Status.DONE
    assert [s[0] for s in SEEN] == [1, 2]
    shown = agent.model.contexts[-1].as_text()  # type: ignore[union-attr]
    assert "wait_timed_out" not in shown and "rebooting" not in shown
    assert _same(replay_thread(agent, thread), thread)


HEALTHY = [False]


@tool(retry=ToolRetry(max_attempts=1), breaker=ToolBreaker(failure_threshold=2, reset_after=30))
def quote(sku: str, ctx: ToolContext) -> str:
    """Quote a price from the pricing service."""
    _seen(ctx)
    if not HEALTHY[0]:
        raise RetryableToolError("pricing service unavailable")
    return f"{sku}: 9.99"


async def test_a_tool_s_breaker_opens_after_failures_and_closes_after_the_cool_down(
    store: SQLiteStore,
) -> None:
    HEALTHY[0] = False
    seconds = [0.0]
    skus = ["a1", "a2", "a3", "a4", "a5"]
    contexts: list[Context] = []

    def model(context: Context) -> object:
        n = len(contexts)
        contexts.append(context)
        if n == 3:  # the cool-down passes and the service recovers before the 4th call
            seconds[0] += 31
            HEALTHY[0] = True
        if n < len(skus):
            return intent("quote", sku=skus[n])
        return intent("done_for_now", message="quoted")

    agent = Agent("pricing", tools=[quote], model=FunctionModel(model), max_consecutive_errors=5)
    rt = Runtime(store, agents=[agent])
    rt.tool_runs.monotonic = lambda: seconds[0]
    thread = await rt.launch(agent, "quote five products")
    assert thread.status == Status.DONE
    outcomes = [e for e in thread.events if isinstance(e, ToolResult | ToolError)]
    assert [getattr(e, "error_type", "result") for e in outcomes] == [
        "RetryableToolError",
        "RetryableToolError",
        "CircuitOpen",  # a3: not run, refused at once
        "result",  # a4: the half-open trial, after the cool-down
        "result",
    ]
    assert len(SEEN) == 4, "the call refused by the open breaker never ran"
    refusal = outcomes[2]
    assert isinstance(refusal, ToolError)
    assert "quote is unavailable" in refusal.message and "circuit breaker open" in refusal.message
    assert "quote is unavailable" in contexts[3].as_text(), "the model is told"
    breaker = rt.tool_runs.breaker(quote)
    assert breaker is not None and breaker.state == "closed"
    assert _same(replay_thread(agent, thread), thread)


RUNS: list[Runtime] = []
"""The runtime whose breaker `restarting` reports on."""


@tool(
    retry=ToolRetry(max_attempts=5, base_delay=0.01, max_delay=0.02),
    breaker=ToolBreaker(failure_threshold=2, reset_after=30),
)
def restarting(sku: str, ctx: ToolContext) -> str:
    """Look up a product in a catalogue that is restarting (answers on the 4th attempt)."""
    breaker = RUNS[0].tool_runs.breaker(restarting)
    SEEN.append((ctx.attempt, breaker.state if breaker else "none", datetime.now(UTC)))
    if ctx.attempt < 4:
        raise RetryableToolError(f"catalogue restarting ({ctx.attempt})")
    return f"{sku}: 3 in stock"


async def test_a_call_keeps_its_retries_when_its_own_failures_open_the_breaker(
    store: SQLiteStore,
) -> None:
    """The breaker admits calls, not attempts: opened by this call's second failure, it
    does not cut the call's retries short (the model would answer around a `CircuitOpen`
    error before the attempts it was promised), and the answer closes it."""
    agent = _agent(restarting)
    rt = Runtime(store, agents=[agent])
    RUNS[:] = [rt]
    thread = await store.load((await rt.launch(agent, "is a1 in stock?")).id)
    assert thread.status == Status.DONE
    assert [(attempt, state) for attempt, state, _ in SEEN] == [
        (1, "closed"),
        (2, "closed"),
        (3, "open"),  # opened by attempt 2, and still the call runs again
        (4, "open"),
    ]
    failed = [e for e in thread.events if isinstance(e, ToolAttemptFailed)]
    assert [e.attempt for e in failed] == [1, 2, 3]
    (result,) = [e for e in thread.events if isinstance(e, ToolResult)]
    assert result.result == "a1: 3 in stock"
    assert not any(isinstance(e, ToolError) for e in thread.events)
    breaker = rt.tool_runs.breaker(restarting)
    assert breaker is not None and breaker.state == "closed", "the answer closed it"
    assert _same(replay_thread(agent, thread), thread)


@tool(
    retry=ToolRetry(max_attempts=3, base_delay=0.01, max_delay=0.02),
    breaker=ToolBreaker(failure_threshold=2, reset_after=30),
)
def down(sku: str, ctx: ToolContext) -> str:
    """Look up a product in a catalogue that is down."""
    _seen(ctx)
    raise RetryableToolError("catalogue down")


async def test_an_open_breaker_still_refuses_a_new_call(store: SQLiteStore) -> None:
    """What the breaker is for stays: the first call uses all its attempts (the breaker
    opened after its second), the next call does not run and the model is told at once."""
    agent = Agent(
        "shop",
        tools=[down],
        model=ScriptedModel(
            [
                intent("down", sku="a1"),
                intent("down", sku="a2"),
                intent("done_for_now", message="the catalogue is down"),
            ],
            follow_thread=True,
        ),
    )
    rt = Runtime(store, agents=[agent])
    thread = await store.load((await rt.launch(agent, "are a1 and a2 in stock?")).id)
    assert thread.status == Status.DONE
    outcomes = [e for e in thread.events if isinstance(e, ToolError)]
    assert [e.error_type for e in outcomes] == ["RetryableToolError", "CircuitOpen"]
    assert outcomes[0].message.endswith("(after 3 attempts)")
    assert [attempt for attempt, _, _ in SEEN] == [1, 2, 3], "a2 never ran"
    assert _same(replay_thread(agent, thread), thread)


@tool(retry=ToolRetry(max_attempts=2, base_delay=0.01))
def hostile(sku: str) -> str:
    """Look up a product behind a backend whose errors are hostile."""
    raise RetryableToolError("broken \ud800 backend\n  says:\t" + "y" * 5000)


async def test_a_hostile_error_message_is_stored_as_one_clean_line(store: SQLiteStore) -> None:
    agent = _agent(hostile)
    rt = Runtime(store, agents=[agent])
    thread = await store.load((await rt.launch(agent, "is a1 in stock?")).id)
    assert thread.status == Status.DONE, "nothing lost: the errors were stored, the model went on"
    (failed,) = [e for e in thread.events if isinstance(e, ToolAttemptFailed)]
    (error,) = [e for e in thread.events if isinstance(e, ToolError)]
    assert (
        failed.message.startswith("broken \ufffd backend says: yyy") and len(failed.message) <= 300
    )
    assert error.message.startswith(failed.message[:-1]) and error.message.endswith(
        "(after 2 attempts)"
    )
    assert "\n" not in error.message and "\ud800" not in error.message
    assert _same(replay_thread(agent, thread), thread)


async def test_a_call_whose_arguments_do_not_validate_says_nothing_to_the_breaker() -> None:
    from threadline.events import PendingCall
    from threadline.reducer import RunTool
    from threadline.retries import ToolRuns

    seconds = [0.0]
    runs = ToolRuns(Clock(), monotonic=lambda: seconds[0])
    breaker = runs.breaker(quote)
    assert breaker is not None
    breaker.record_failure()
    breaker.record_failure()
    seconds[0] = 31.0  # half-open: the next call that runs is the trial
    bad = RunTool(PendingCall("c1", "quote", quote.version, {"sku": 5}, seq=2))
    outcome = await runs.run(quote, "th_1", bad)
    assert outcome is not None
    (error,) = outcome(3, Clock()())
    assert isinstance(error, ToolError) and error.error_type == "ValidationError"
    assert SEEN == [], "it never ran"
    assert breaker.state == "half-open" and breaker.admit() is None, "the trial is still free"

"""Rate limits in one process: configuration (typed and from the environment), a call over
a provider's or a tool's limit becoming a durable wait that the model never sees, tokens
settled with what a call used, metrics, and replay. A real `Runtime` on a `MemoryStore`
with a clock the tests move (the fleet tests run worker processes on SQLite and
PostgreSQL: tests/test_ratelimit_fleet.py); a side-effecting call acted on meanwhile runs on
SQLite and PostgreSQL, two stores on one database as two workers have them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pg_support import pg_store_url
from threadline import Agent, Budget, MemoryStore, Runtime, Status, tool
from threadline.bootstrap import open_runtime
from threadline.errors import AppendConflict, ConfigError
from threadline.events import ModelCall, Thread, ToolResult, ToolStarted, Waiting, WaitTimedOut
from threadline.models.base import Context, ModelOutput
from threadline.observability.metrics import RuntimeMetrics
from threadline.ratelimits import Rate, RateLimiter, RateLimits, estimate_tokens
from threadline.replay import replay_thread
from threadline.settings import Settings
from threadline.stores import Store, open_store, rate_limit_store
from threadline.stores.ratelimits import RateLimitStore, Taken
from threadline.testing import FunctionModel, intent
from threadline.tools import idempotency_key

START = datetime(2030, 1, 1, tzinfo=UTC)


class Clock:
    """The runtime's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def move(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_the_most_specific_limit_applies_and_the_environment_wins() -> None:
    limits = RateLimits(
        models={"openai": Rate(500), "openai:gpt-4.1-mini": Rate(50)}, tools={"search": Rate(5)}
    )
    assert limits.find("model", "openai:gpt-4.1-mini") == ("model:openai:gpt-4.1-mini", Rate(50))
    assert limits.find("model", "openai:gpt-4o") == ("model:openai", Rate(500))
    assert limits.find("model", "openai:gpt-4o,anthropic:claude") == ("model:openai", Rate(500))
    assert limits.find("model", "anthropic:claude") is None
    assert limits.find("tokens", "openai:gpt-4o") is None
    assert limits.find("tool", "search") == ("tool:search", Rate(5))
    agent = Agent("a", rate_limits=RateLimits(models={"openai": Rate(9)}, tools={"fetch": Rate(1)}))
    merged = RateLimiter(MemoryStore(), limits).of(agent)
    assert merged.models["openai"] == Rate(500)  # the environment's
    assert merged.tools == {"search": Rate(5), "fetch": Rate(1)}


def test_the_environment_variable_reaches_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THREADLINE_RATE_LIMITS", "model:scripted=5/2s, tool:lookup=1/1s")
    monkeypatch.setenv("THREADLINE_STORE", "memory://")
    monkeypatch.setenv("THREADLINE_LOG", "off")
    runtime = open_runtime(Settings(), [], with_model=False)
    assert runtime.limits.limits.models == {"scripted": Rate(5, 2.0)}
    assert runtime.limits.limits.tools == {"lookup": Rate(1, 1.0)}
    monkeypatch.setenv("THREADLINE_RATE_LIMITS", "scripted=5/2s")
    with pytest.raises(ConfigError, match="KIND:NAME=RATE"):
        open_runtime(Settings(), [], with_model=False)


def _answers(context: Context) -> dict[str, Any]:
    return intent("done_for_now", message="done")


async def test_a_call_over_a_provider_limit_waits_durably_and_goes_when_due() -> None:
    clock = Clock()
    model = FunctionModel(_answers, model_id="scripted:v1")
    metrics = RuntimeMetrics()
    runtime = Runtime(
        MemoryStore(),
        model=model,
        clock=clock,
        observers=[metrics],
        rate_limits=RateLimits(models={"scripted": Rate(2, 10.0)}),
    )
    agent = Agent("paced")
    first = await runtime.launch(agent, "one")
    second = await runtime.launch(agent, "two")
    third = await runtime.launch(agent, "three")
    assert [first.status, second.status] == [Status.DONE, Status.DONE]
    assert third.status is Status.WAITING and len(model.contexts) == 2
    wait = third.events[-1]
    assert isinstance(wait, Waiting) and wait.rate_limit == "model:scripted"
    assert wait.until is not None and wait.reason is not None and "model:scripted" in wait.reason
    assert wait.until == START + timedelta(seconds=10)  # a slot frees 10 s after its call
    stored = await runtime.store.get(third.id)
    assert stored.status is Status.WAITING and stored.due_at == wait.until
    assert third.state.consecutive_errors == 0

    clock.move(9)  # not due yet: nothing happens
    assert await runtime.wake_if_due(third) is third and len(third.events) == 2
    clock.move(1)
    third = await runtime.advance(await runtime.wake_if_due(third))
    assert third.status is Status.DONE and len(model.contexts) == 3
    ended = [e.kind for e in third.events[2:]]
    assert ended[:2] == ["wait_timed_out", "model_call"] and ended[-1] == "done"
    text = model.contexts[-1].as_text()
    assert "wait" not in text.lower() and "rate" not in text.lower()  # the model never sees it
    assert (
        metrics.value("threadline_rate_limit_waits_total", agent="paced", limit="model:scripted")
        == 1
    )
    assert (
        metrics.value(
            "threadline_rate_limit_wait_seconds_count", agent="paced", limit="model:scripted"
        )
        == 1
    )
    replay_thread(agent, third)  # the wait and its end are inputs: replay matches


def _model_calls(thread: Thread) -> int:
    return sum(isinstance(e, ModelCall) for e in thread.events)


def _sender(sent: list[str], *, side_effects: bool) -> Agent:
    """An agent that sends one message to ops, then is done; its `send` tool (each send
    recorded in `sent`) is limited to one call a minute."""

    def send(to: str) -> str:
        """Send a message.

        Args:
            to: who gets it.
        """
        sent.append(to)
        return f"sent to {to}"

    def script(context: Context) -> dict[str, Any]:
        if context.model_calls == 0:
            return intent("send", to="ops")
        return intent("done_for_now", message="sent")

    return Agent(
        "sender",
        tools=[tool(side_effects=side_effects)(send)],
        model=FunctionModel(script),
        rate_limits=RateLimits(tools={"send": Rate(1, 60.0)}),
    )


@pytest.mark.parametrize("side_effects", [True, False])
async def test_a_tool_over_its_limit_waits_before_it_runs(side_effects: bool) -> None:
    """A side-effecting call waits before its `tool_started` (so it is never "maybe ran");
    a read-only one waits inside the turn that chose it. Neither asks the model again."""
    clock = Clock()
    sent: list[str] = []
    agent = _sender(sent, side_effects=side_effects)
    runtime = Runtime(MemoryStore(), agents=[agent], clock=clock)
    first = await runtime.launch(agent, "one")
    second = await runtime.launch(agent, "two")
    assert first.status is Status.DONE and sent == ["ops"]
    assert second.status is Status.WAITING
    assert [e.kind for e in second.events][-3:] == ["model_call", "tool_call", "waiting"]
    assert not any(isinstance(e, ToolStarted) for e in second.events)
    wait = second.events[-1]
    assert isinstance(wait, Waiting) and wait.rate_limit == "tool:send"
    clock.move(121)
    second = await runtime.advance(await runtime.wake_if_due(second))
    assert second.status is Status.DONE and sent == ["ops", "ops"]
    started = [i for i, e in enumerate(second.events) if isinstance(e, ToolStarted)]
    assert len(started) == int(side_effects)
    assert all(isinstance(second.events[i - 1], WaitTimedOut) for i in started)
    assert _model_calls(second) == 2  # the model was not asked again for the same call


async def test_a_call_never_made_gives_its_slot_back_and_a_cancelled_one_counts_as_ended() -> None:
    """A permit goes back however its call ends. A call a budget refuses after its slot was
    taken frees the slot at once; a call cancelled mid-request counts as a call that ended
    then. Before, both kept the slot for the whole hold (`per + hold`, 360 s here), so every
    budget escalation took a slot from the whole fleet for six minutes."""
    clock = Clock()

    @tool
    def lookup(n: int) -> str:
        """Look up record n."""
        return f"record {n}"

    def script(context: Context) -> dict[str, Any]:
        if context.model_calls == 0:
            return intent("lookup", n=1)
        return intent("done_for_now", message="found")

    capped = Agent("capped", tools=[lookup], budget=Budget(max_model_calls=1))
    free = Agent("free", tools=[lookup])
    limits = RateLimits(models={"scripted": Rate(2, 60.0)})
    runtime = Runtime(
        MemoryStore(),
        agents=[capped, free],
        model=FunctionModel(script, model_id="scripted:v1"),
        clock=clock,
        rate_limits=limits,
    )
    ended = await runtime.launch(capped, "look it up")  # its second call: a slot, then refused
    assert ended.status is Status.ESCALATED and _model_calls(ended) == 1
    went = await runtime.launch(free, "look it up")  # two calls: the free slot, then the other
    assert went.status is Status.WAITING and _model_calls(went) == 1
    wait = went.events[-1]
    assert isinstance(wait, Waiting) and wait.until == START + timedelta(seconds=60)

    asked, hang = asyncio.Event(), [True]

    async def hangs_once(context: Context) -> dict[str, Any]:
        if hang.pop() if hang else False:
            asked.set()
            await asyncio.Event().wait()
        return intent("done_for_now", message="ok")

    clock.move(100)  # every slot free again
    limits = RateLimits(models={"scripted": Rate(1, 60.0)})
    single = Runtime(
        MemoryStore(),
        model=FunctionModel(hangs_once, model_id="scripted:v1"),
        clock=clock,
        rate_limits=limits,
    )
    call = asyncio.create_task(single.launch(Agent("hung"), "one"))
    await asyncio.wait_for(asked.wait(), 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    clock.move(59)  # it counts as a call that ended when cancelled: held for the interval
    assert (await single.launch(Agent("next"), "two")).status is Status.WAITING
    clock.move(2)  # and no longer
    assert (await single.launch(Agent("last"), "three")).status is Status.DONE


class ActedOnMeanwhile:
    """The counters beside a store, except that once this call's slot of `key` is taken,
    another worker (`other`: a second store on the same database, as a second process has)
    runs the call and records its outcome before this worker's `tool_started` lands."""

    def __init__(self, counters: RateLimitStore, other: Store, key: str) -> None:
        self.counters, self.other, self.key = counters, other, key
        self.thread_id: str | None = None
        self.taken: list[Taken] = []

    async def take_slot(
        self, key: str, capacity: int, *, now: float, per: float, hold: float
    ) -> Taken:
        taken = await self.counters.take_slot(key, capacity, now=now, per=per, hold=hold)
        if key == self.key and taken.granted and self.thread_id and not self.taken:
            self.taken.append(taken)
            later = datetime.fromtimestamp(now + 1, UTC)  # the other worker's moment
            await self._run_elsewhere(self.thread_id, later)
        return taken

    async def _run_elsewhere(self, thread_id: str, at: datetime) -> None:
        for _ in range(500):  # this worker's turn may still be on its way to disk
            thread = await self.other.load(thread_id)
            if thread.state.pending:
                break
            await asyncio.sleep(0.01)
        (call,) = thread.state.pending.values()
        seq, key = thread.next_seq, idempotency_key(thread_id, call.call_id)
        ran = [
            ToolStarted(seq=seq, at=at, call_id=call.call_id, idempotency_key=key),
            ToolResult(seq=seq + 1, at=at, call_id=call.call_id, tool=call.tool, result="sent"),
        ]
        await self.other.append(thread_id, ran, expected_seq=seq)

    async def free_slot(self, key: str, slot: int, free_at: float, *, held_until: float) -> None:
        await self.counters.free_slot(key, slot, free_at, held_until=held_until)

    async def take_tokens(
        self, key: str, capacity: float, per_second: float, cost: float, *, now: float
    ) -> Taken:
        return await self.counters.take_tokens(key, capacity, per_second, cost, now=now)

    async def settle(self, key: str, extra: float) -> None:
        await self.counters.settle(key, extra)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Store]]:
    """Two stores on one database (two connections, as two worker processes have)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'threads.db'}"
    else:
        url = pg_store_url(
            request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_schema")
        )
    stores = [open_store(url), open_store(url)]
    yield stores
    for store in stores:
        await store.close()


async def test_a_side_effecting_call_acted_on_before_its_tool_started_gives_its_slot_back(
    two_stores: list[Store],
) -> None:
    """The write-ahead path: a side-effecting call takes its tool's slot, then its
    `tool_started` finds the call already acted on: another worker ran it meanwhile (two
    advancers at once, as after a lapsed lease), so this one stops without running it and
    its slot is free again at once. Before, the slot stayed taken for the whole hold
    (`per + hold`, 360 s here): the next call of the tool, anywhere in the fleet, waited."""
    store, other = two_stores
    clock = Clock()
    sent: list[str] = []
    agent = _sender(sent, side_effects=True)
    meddler = ActedOnMeanwhile(rate_limit_store(store), other, "tool:send")
    store.rate_limits = meddler  # type: ignore[attr-defined]
    runtime = Runtime(store, agents=[agent], clock=clock)
    first = await runtime.launch(agent, "one", advance=False)
    meddler.thread_id = first.id
    with pytest.raises(AppendConflict):  # another advancer's outcome: this one stops
        await runtime.advance(first)
    assert meddler.taken and sent == []  # run by the other worker, not here
    stored = [e.kind for e in (await store.load(first.id)).events]
    assert stored[-2:] == ["tool_started", "tool_result"]  # the other worker's, once
    assert stored.count("tool_started") == 1
    # The slot is free at once: the next call runs now, without waiting (same clock).
    second = await runtime.launch(agent, "two")
    assert second.status is Status.DONE and sent == ["ops"]
    assert not any(isinstance(e, Waiting) for e in second.events)


def _usage(used: int) -> FunctionModel:
    def answer(context: Context) -> ModelOutput:
        return ModelOutput(
            text='{"intent": "done_for_now", "arguments": {"message": "ok"}}',
            input_tokens=used // 2,
            output_tokens=used - used // 2,
        )

    return FunctionModel(answer, model_id="metered:v1")


async def test_tokens_are_taken_as_an_estimate_and_settled_with_what_was_used() -> None:
    probe = _usage(50)
    await Runtime(MemoryStore(), model=probe).launch(Agent("probe"), "hello")
    estimate = estimate_tokens(probe.contexts[0])
    assert estimate > 100  # the output reservation alone is larger than what is used

    async def run(model: FunctionModel) -> list[Status]:
        limits = RateLimits(tokens={"metered": Rate(2 * estimate, 60.0)})
        runtime = Runtime(MemoryStore(), model=model, clock=Clock(), rate_limits=limits)
        agent = Agent("probe")
        return [(await runtime.launch(agent, "hello")).status for _ in range(3)]

    # Each call gives back what it did not use, so a third call fits under the limit...
    assert await run(_usage(50)) == [Status.DONE] * 3
    # ...while a backend that reports no usage keeps its estimates: the third waits.
    assert await run(_usage(0)) == [Status.DONE, Status.DONE, Status.WAITING]


async def test_no_limits_means_no_store_access() -> None:
    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the counters were used ({name})")

    store = MemoryStore()
    store.rate_limits = Untouchable()  # type: ignore[assignment]
    runtime = Runtime(store, model=FunctionModel(_answers))
    assert (await runtime.launch(Agent("free"), "hi")).status is Status.DONE

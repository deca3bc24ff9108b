"""Workers: lease, advance, park, wake, recover, and lose leases safely."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from pg_support import pg_store_url
from threadline import Agent, Runtime, tool
from threadline.errors import ConfigError, StoreError
from threadline.events import Status, Thread, utcnow
from threadline.models.base import Context, Message
from threadline.stores import MemoryStore, SQLiteStore, Store, open_store
from threadline.testing import FunctionModel, intent
from threadline.waits import WAIT_TOOLS, Park
from threadline.worker import Worker

RUNS: list[str] = []


def outline(agent: Agent, thread: Thread) -> Context:
    """A tiny renderer (one line per event) so these tests exercise workers, not prompts."""
    lines = []
    for e in thread.events:
        if e.kind == "tool_result":
            lines.append(f"{e.tool}_result {json.dumps(e.result)}")
        elif e.kind == "external_event":
            lines.append(f"<{e.name}>")
        else:
            lines.append(e.kind)
    return Context(system="", messages=(Message("user", "\n".join(lines)),))


@tool(side_effects=True, idempotent=True)
def record(label: str) -> str:
    """Record a label."""
    RUNS.append(label)
    return f"recorded {label}"


def two_step(context: Context) -> object:
    """Call `record` once, then finish: decided from what the context shows."""
    text = context.as_text()
    if "recorded" in text:
        return intent("done_for_now", message="ok")
    return intent("record", label="x")


AGENT = Agent("recorder", tools=[record], model=FunctionModel(two_step), renderer=outline)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        s: Store = MemoryStore()
    elif request.param == "sqlite":
        s = SQLiteStore(tmp_path / "w.db")
    else:
        base = request.getfixturevalue("postgres_url")
        s = open_store(pg_store_url(base, request.getfixturevalue("pg_schema")))
    yield s
    await s.close()


async def test_worker_advances_every_runnable_thread(store: Store) -> None:
    RUNS.clear()
    rt = Runtime(store, agents=[AGENT])
    threads = [await rt.launch(AGENT, f"job {i}", advance=False) for i in range(12)]
    stats = await Worker(rt, concurrency=4, poll_interval=0.05).run(until_idle=True)
    for t in threads:
        loaded = await store.load(t.id)
        assert loaded.status == Status.DONE
        assert [e.seq for e in loaded.events] == list(range(len(loaded.events)))
        assert (await store.get(t.id)).lease_owner is None  # released
    assert len(RUNS) == 12
    assert stats.advanced == 12 and stats.released == 12 and stats.lost == 0
    lengths = [len(await store.load(t.id)) for t in threads]
    assert stats.steps == sum(n - 1 for n in lengths)


async def test_worker_leases_only_its_agents(store: Store) -> None:
    other = Agent(
        "other", model=FunctionModel(lambda c: intent("done_for_now", message="")), renderer=outline
    )
    rt_other = Runtime(store, agents=[other])
    foreign = await rt_other.launch(other, "not mine", advance=False)
    rt = Runtime(store, agents=[AGENT])
    mine = await rt.launch(AGENT, "mine", advance=False)
    await Worker(rt, poll_interval=0.05).run(until_idle=True)
    assert (await store.get(mine.id)).status == Status.DONE
    assert (await store.get(foreign.id)).status == Status.RUNNING


async def test_a_crashed_workers_thread_is_resumed_after_its_lease_expires(store: Store) -> None:
    RUNS.clear()
    rt = Runtime(store, agents=[AGENT])
    t = await rt.launch(AGENT, "job", advance=False)
    (dead,) = await store.lease("crashed-worker", ttl=1.0)
    # The crashed worker had started the side-effecting tool: tool_started, no outcome.
    thread = await store.load(t.id)
    thread = await rt.advance(thread, lease=dead, max_steps=1)  # model call -> tool_call
    from threadline.events import ToolStarted
    from threadline.tools import idempotency_key

    call_id = next(iter(thread.state.pending))
    key = idempotency_key(t.id, call_id)
    await store.append(
        t.id,
        [
            ToolStarted(
                seq=thread.next_seq, at=utcnow(), call_id=call_id, idempotency_key=key, attempt=1
            )
        ],
        expected_seq=thread.next_seq,
        lease=dead,
    )
    early = await Worker(rt, poll_interval=0.05).run(until_idle=True)
    assert early.leased == 0  # the dead worker's lease is still live: nobody may take it
    await asyncio.sleep(1.1)
    stats = await Worker(rt, poll_interval=0.05).run(until_idle=True)
    final = await store.load(t.id)
    assert final.status == Status.DONE and stats.advanced == 1
    starts = [e for e in final.events if e.kind == "tool_started"]
    assert [(s.attempt, s.idempotency_key) for s in starts] == [(1, key), (2, key)]
    assert RUNS == ["x"]  # the crashed attempt never ran here; the re-run did, with one key


def gated_agent(name: str) -> tuple[Agent, asyncio.Event, asyncio.Event]:
    """An agent whose one side-effecting tool sets `entered`, then waits for `gate`."""
    gate = asyncio.Event()
    entered = asyncio.Event()

    @tool(side_effects=True, idempotent=True)
    async def slow(n: int) -> int:
        """Wait for the test."""
        entered.set()
        await gate.wait()
        return n

    agent = Agent(
        name,
        tools=[slow],
        model=FunctionModel(
            lambda c: (
                intent("done_for_now", message="")
                if "slow_result" in c.as_text()
                else intent("slow", n=1)
            )
        ),
        renderer=outline,
    )
    return agent, gate, entered


async def test_a_worker_that_lost_its_lease_writes_nothing(store: Store) -> None:
    agent, gate, entered = gated_agent("slow")
    rt = Runtime(store, agents=[agent])
    t = await rt.launch(agent, "go", advance=False)
    worker = Worker(rt, poll_interval=0.05, lease_ttl=30)
    run = asyncio.create_task(worker.run(until_idle=True))
    await asyncio.wait_for(entered.wait(), 10)
    before = (await store.get(t.id)).next_seq
    await store.break_lease(t.id)  # an operator (or an expiry + another worker) took it
    gate.set()
    stats = await asyncio.wait_for(run, 10)
    # The first holder's tool_result was refused (LeaseLost); the thread was then leased
    # afresh and the idempotent tool re-run under the new lease: one outcome, two starts.
    assert stats.lost == 1 and stats.leased == 2
    after = await store.load(t.id)
    assert after.events[before - 1].kind == "tool_started"
    assert after.events[before].kind == "tool_started"  # not the lost holder's tool_result
    assert [e.attempt for e in after.events if e.kind == "tool_started"] == [1, 2]
    assert sum(e.kind == "tool_result" for e in after.events) == 1
    assert after.status == Status.DONE


async def test_durable_sleep_parks_then_any_worker_finishes(store: Store) -> None:
    # 3 s: the first worker must park the thread before `until`, even on a loaded machine
    until = utcnow() + timedelta(seconds=3)

    def script(context: Context) -> object:
        text = context.as_text()
        if "sleep_until_result" not in text:
            return intent("sleep_until", until=until.isoformat(), reason="cool down")
        return intent("done_for_now", message="woke up")

    agent = Agent("sleeper", tools=list(WAIT_TOOLS), model=FunctionModel(script), renderer=outline)
    rt = Runtime(store, agents=[agent])
    t = await rt.launch(agent, "sleep a bit", advance=False)
    await Worker(rt, poll_interval=0.05).run(until_idle=True)
    parked = await store.get(t.id)
    assert parked.status == Status.WAITING and parked.lease_owner is None
    assert parked.due_at is not None and abs((parked.due_at - until).total_seconds()) < 0.01
    await asyncio.sleep(max(0.0, (until - utcnow()).total_seconds()) + 0.02)
    await Worker(Runtime(store, agents=[agent]), poll_interval=0.05).run(until_idle=True)
    done = await store.load(t.id)
    assert done.status == Status.DONE
    kinds = [e.kind for e in done.events]
    assert kinds[kinds.index("waiting") + 1] == "wait_timed_out"


async def test_wait_for_event_is_ended_by_the_event(store: Store) -> None:
    def script(context: Context) -> object:
        text = context.as_text()
        if "<payment>" in text:
            return intent("done_for_now", message="paid")
        return intent("wait_for_event", event="payment", timeout_seconds=3600)

    agent = Agent("payee", tools=list(WAIT_TOOLS), model=FunctionModel(script), renderer=outline)
    rt = Runtime(store, agents=[agent])
    t = await rt.launch(agent, "wait for payment", advance=False)
    await Worker(rt, poll_interval=0.05).run(until_idle=True)
    assert (await store.get(t.id)).status == Status.WAITING
    await rt.external_event(t.id, "other_thing", {"x": 1})  # not the awaited event
    assert (await store.get(t.id)).status == Status.WAITING
    await rt.external_event(t.id, "payment", {"amount": 5}, source="webhook")
    assert (await store.get(t.id)).status == Status.RUNNING
    await Worker(Runtime(store, agents=[agent]), poll_interval=0.05).run(until_idle=True)
    assert (await store.get(t.id)).status == Status.DONE


def test_park_needs_an_end_and_tools_validate() -> None:
    with pytest.raises(ValueError):
        Park()
    park = Park(until=utcnow().replace(tzinfo=None), event=None)
    assert park.until is not None and park.until.tzinfo is not None
    assert json.loads(json.dumps(Park(event="e").describe())) == {"waiting": True, "event": "e"}


async def test_worker_refuses_bad_settings_and_no_agents() -> None:
    rt = Runtime(MemoryStore())
    with pytest.raises(ConfigError):
        Worker(rt, concurrency=0)
    with pytest.raises(ConfigError):
        await Worker(rt).run(until_idle=True)


async def test_stop_finishes_the_current_step_and_releases(store: Store) -> None:
    agent, gate, entered = gated_agent("slow2")
    rt = Runtime(store, agents=[agent])
    t = await rt.launch(agent, "go", advance=False)
    worker = Worker(rt, poll_interval=0.05, shutdown_timeout=10)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(entered.wait(), 10)
    worker.stop()
    gate.set()
    stats = await asyncio.wait_for(run, 10)
    thread = await store.load(t.id)
    # The step in flight (the tool) was checkpointed; no further step was taken.
    assert thread.events[-1].kind == "tool_result" and thread.status == Status.RUNNING
    assert (await store.get(t.id)).lease_owner is None and stats.released == 1


async def test_advance_exclusively_leases_just_that_thread(store: Store) -> None:
    from threadline.worker import advance_exclusively

    RUNS.clear()
    rt = Runtime(store, agents=[AGENT])
    a = await rt.launch(AGENT, "a", advance=False)
    b = await rt.launch(AGENT, "b", advance=False)
    held = await store.lease("someone-else", ttl=30, thread_ids=[b.id])
    assert await advance_exclusively(rt, a.id) is True
    assert await advance_exclusively(rt, b.id) is False  # another holder has it
    assert (await store.get(a.id)).status == Status.DONE
    assert (await store.get(a.id)).lease_owner is None
    assert (await store.get(b.id)).status == Status.RUNNING and held


async def test_a_failing_lease_query_does_not_kill_the_worker() -> None:
    class Flaky(MemoryStore):
        failures = 2

        async def lease(self, owner, **kwargs):  # type: ignore[no-untyped-def, override]
            if self.failures:
                self.failures -= 1
                raise OSError("connection reset")
            return await super().lease(owner, **kwargs)

    store = Flaky()
    rt = Runtime(store, agents=[AGENT])
    t = await rt.launch(AGENT, "job", advance=False)
    stats = await Worker(rt, poll_interval=0.01).run(until_idle=True)
    assert stats.failed == 2 and stats.advanced == 1
    assert (await store.get(t.id)).status == Status.DONE


async def test_an_idle_worker_is_woken_by_notify_not_the_poll(
    postgres_url: str, pg_schema: str
) -> None:
    url = pg_store_url(postgres_url, pg_schema)
    worker_store, api_store = open_store(url), open_store(url)
    try:
        worker = Worker(Runtime(worker_store, agents=[AGENT]), poll_interval=60)
        run = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)  # idle now: the next poll is a minute away
        api = Runtime(api_store, agents=[AGENT])
        t = await api.launch(AGENT, "wake up", advance=False)  # another process's launch
        for _ in range(200):
            if (await api_store.get(t.id)).status == Status.DONE:
                break
            await asyncio.sleep(0.05)
        assert (await api_store.get(t.id)).status == Status.DONE  # within 10 s, not 60
        worker.stop()
        await asyncio.wait_for(run, 10)
    finally:
        await worker_store.close()
        await api_store.close()


async def test_a_lost_database_connection_is_one_warning_line_per_failed_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Cut(MemoryStore):
        async def load(self, thread_id: str) -> Thread:
            raise StoreError("PostgreSQL unavailable: server closed the connection unexpectedly")

    store = Cut()
    rt = Runtime(store, agents=[AGENT])
    await rt.launch(AGENT, "job", advance=False)
    with caplog.at_level(logging.DEBUG, logger="threadline.worker"):
        stats = await Worker(rt, poll_interval=0.01, lease_ttl=0.5).run(until_idle=True)
    assert stats.failed == 1
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    [warning] = [r for r in failures if r.levelno >= logging.WARNING]
    assert warning.levelno == logging.WARNING and warning.exc_info is None
    assert "StoreError" in warning.getMessage() and "PostgreSQL unavailable" in warning.getMessage()
    assert "\n" not in warning.getMessage()
    [trace] = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert isinstance(trace.exc_info[1], StoreError)  # type: ignore[index]


BROKEN: list[str] = []


def fragile_outline(agent: Agent, thread: Thread) -> Context:
    """`outline`, crashing while BROKEN holds a bug (a renderer with a bug in it)."""
    if BROKEN:
        raise RuntimeError(BROKEN[0])
    return outline(agent, thread)


async def _until(store: Store, thread_id: str, status: Status) -> None:
    for _ in range(600):  # a bound, not a timing assertion: fails instead of hanging
        if (await store.get(thread_id)).status == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{thread_id} never became {status.value}")


async def test_a_poison_thread_becomes_failed_and_retry_rearms_it(store: Store) -> None:
    """A thread whose advance raises every time is not re-leased forever: after
    `max_failures` in a row it is `failed` with the reason, listed by `stuck_threads`, and
    other threads go on; resumed once fixed (`threads retry`), it finishes."""
    from threadline.worker import stuck_threads

    BROKEN[:] = ["template bug: 'NoneType' object is not subscriptable"]
    fragile = Agent(
        "fragile", tools=[record], model=FunctionModel(two_step), renderer=fragile_outline
    )
    rt = Runtime(store, agents=[fragile, AGENT])
    poison = await rt.launch(fragile, "job", advance=False)
    healthy = await rt.launch(AGENT, "job", advance=False)
    # A step still running at stop is abandoned after 10 s, within the 30 s the test waits
    # for the worker: a stuck step shows as the assertion that failed, not as a timeout.
    # Leases of 1 s (the back-off between tries): 0.3 s lapsed under a loaded machine's
    # stalls, so the third failure's `failed` event was refused and a fourth try made.
    worker = Worker(rt, poll_interval=0.02, lease_ttl=1.0, max_failures=3, shutdown_timeout=10)
    run = asyncio.create_task(worker.run())
    try:
        await _until(store, poison.id, Status.FAILED)
        await _until(store, healthy.id, Status.DONE)
        last = (await store.load(poison.id)).events[-1]
        assert last.kind == "failed" and "failed 3 times in a row" in last.reason
        assert "RuntimeError: template bug" in last.reason
        for _ in range(500):  # the worker releases the lease right after the append
            if (await store.get(poison.id)).lease_owner is None:
                break
            await asyncio.sleep(0.01)
        assert (await store.get(poison.id)).lease_owner is None  # released, not held
        # Counted before that release (the failed event is seen before the worker's task
        # has gone on from its append, so the counts are read only now).
        assert worker.stats.failed == 3 and worker.stats.poisoned == 1
        [(summary, why)] = await stuck_threads(store, grace=timedelta(0))
        assert summary.id == poison.id and why.startswith("failed: advancing the thread")
        # Fixed, then re-armed: the same worker finishes it.
        BROKEN.clear()
        await rt.resume(poison.id, by="operator")
        await _until(store, poison.id, Status.DONE)
        assert worker.stats.failed == 3  # no failure since
    finally:
        BROKEN.clear()
        worker.stop()
        await asyncio.wait_for(run, 30)


async def test_a_damaged_thread_becomes_failed_naming_the_event(tmp_path: Path) -> None:
    """A thread whose stored event does not parse cannot be loaded, yet is marked failed
    (the append reads the projection, not the events) instead of being leased forever."""
    import sqlite3

    store = SQLiteStore(tmp_path / "d.db")
    try:
        rt = Runtime(store, agents=[AGENT])
        damaged = await rt.launch(AGENT, "job", advance=False)
        with sqlite3.connect(tmp_path / "d.db") as db:
            db.execute('UPDATE events SET body = \'{"kind": "nope"}\' WHERE seq = 0')
        worker = Worker(rt, poll_interval=0.02, lease_ttl=1.0, max_failures=2)  # see above
        run = asyncio.create_task(worker.run())
        try:
            await _until(store, damaged.id, Status.FAILED)
        finally:
            worker.stop()
            await asyncio.wait_for(run, 30)
        [failed] = await store.events(damaged.id, after=0)
        assert "CorruptEvent" in failed.reason and "failed 2 times" in failed.reason
    finally:
        await store.close()


async def test_a_refused_failed_event_is_written_at_the_next_failure() -> None:
    """The `limit`-th failure's `failed` event can be refused (the worker's lease lapsed
    while the thread failed): the count is kept, and the next failure marks the thread,
    instead of `limit` more failures (another whole round of lease expiries)."""
    from threadline.errors import LeaseLost
    from threadline.worker import PoisonGuard

    class Refusing(MemoryStore):
        refusals = 1

        async def append(self, thread_id, events, **kwargs):  # type: ignore[no-untyped-def, override]
            if self.refusals and events[0].kind == "failed":
                self.refusals -= 1
                raise LeaseLost(thread_id, "w")
            return await super().append(thread_id, events, **kwargs)

    store = Refusing()
    rt = Runtime(store, agents=[AGENT])
    t = await rt.launch(AGENT, "job", advance=False)
    guard, bug = PoisonGuard(store, limit=3), RuntimeError("template bug")
    assert [await guard.failed(t.id, bug, None) for _ in range(2)] == [False, False]
    with pytest.raises(LeaseLost):
        await guard.failed(t.id, bug, None)
    assert await guard.failed(t.id, bug, None) is True
    assert (await store.get(t.id)).status == Status.FAILED

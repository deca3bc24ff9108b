"""Heartbeats keep leases while work runs (threadline.leases, issue 13).

A sub-agent's step longer than the lease keeps its lease: a heartbeat renews the child's
lease while the step runs, so a second worker never takes the child over and runs its tool
again. Real stores (SQLite file, PostgreSQL), two workers with their own connections, a
lease period shorter than the step."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pg_support import pg_store_url
from threadline import Agent, Runtime, tool
from threadline.composition import children
from threadline.events import Status, utcnow
from threadline.leases import heartbeat, keep_lease
from threadline.stores import MemoryStore, SQLiteStore, Store, open_store
from threadline.stores.base import Lease
from threadline.testing import ScriptedModel, intent
from threadline.worker import Worker

LEASE = 0.6
"""Seconds of every lease in these tests; the child's tool runs four times as long."""

RUNS: list[str] = []


@tool
async def crunch(job: str) -> str:
    """Crunch a job (slow: longer than a lease)."""
    RUNS.append(job)
    await asyncio.sleep(LEASE * 4)
    return f"crunched {job}"


def _agents() -> Agent:
    cruncher = Agent(
        "cruncher",
        tools=[crunch],
        model=ScriptedModel(
            [intent("crunch", job="j1"), intent("done_for_now", message="j1 crunched")],
            follow_thread=True,
        ),
    )
    return Agent(
        "boss",
        tools=[cruncher.as_tool()],
        model=ScriptedModel(
            [intent("cruncher", task="crunch j1"), intent("done_for_now", message="done: j1")],
            follow_thread=True,
        ),
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], Store]]:
    """Opens stores on one database: one per worker, as separate processes would."""
    opened: list[Store] = []

    def open_one() -> Store:
        if request.param == "sqlite":
            store: Store = SQLiteStore(tmp_path / "t.db")
        else:
            base = request.getfixturevalue("postgres_url")
            store = open_store(pg_store_url(base, request.getfixturevalue("pg_schema")))
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


async def test_a_child_step_longer_than_the_lease_is_run_by_one_worker_only(
    stores: Callable[[], Store],
) -> None:
    RUNS.clear()
    boss = _agents()
    first = Runtime(stores(), agents=[boss], lease_ttl=LEASE)
    second = Runtime(stores(), agents=[_agents()], lease_ttl=LEASE)
    root = await first.launch(boss, "crunch j1", advance=False)
    # One slot: the first worker advances the child along the tree (under the child's own
    # lease), not as a thread of its own; the second starts once the child's tool runs.
    workers = [Worker(first, concurrency=1, lease_ttl=LEASE, poll_interval=0.05)]
    running = [asyncio.create_task(workers[0].run())]
    try:
        for _ in range(400):
            if RUNS:
                break
            await asyncio.sleep(0.01)
        workers.append(Worker(second, lease_ttl=LEASE, poll_interval=0.05))
        running.append(asyncio.create_task(workers[1].run()))
        for _ in range(400):
            if (await first.store.get(root.id)).status in (Status.DONE, Status.ESCALATED):
                break
            await asyncio.sleep(0.05)
    finally:
        for w in workers:
            w.stop()
        stats = await asyncio.gather(*running)
    parent = await first.store.load(root.id)
    print(stats)
    print([(e.kind, e.at) for e in (await first.store.load(children(parent)[0])).events])
    assert parent.status == Status.DONE, parent.events[-1]
    assert RUNS == ["j1"], "the child's tool ran once: nobody took the child's lease"
    assert sum(s.taken_over for s in stats) == 0
    assert sum(s.lost for s in stats) == 0
    (child_id,) = children(parent)
    child = await first.store.load(child_id)
    assert [e.kind for e in child.events].count("tool_result") == 1
    assert child.status == Status.DONE
    assert [e.result for e in parent.events if e.kind == "tool_result"] == ["j1 crunched"]


async def test_a_heartbeat_keeps_a_lease_past_its_period_and_says_when_it_lapsed(
    stores: Callable[[], Store],
) -> None:
    store = stores()
    rt = Runtime(store, agents=[_agents()])
    thread = await rt.launch("boss", "crunch j1", advance=False)
    (lease,) = await store.lease("holder", ttl=LEASE, thread_ids=[thread.id])
    async with heartbeat(store, lease, LEASE) as lost:
        await asyncio.sleep(LEASE * 3)
        held = await store.get(thread.id)
        assert held.lease_owner == "holder" and held.lease_expires is not None
        assert held.lease_expires > utcnow(), "renewed: still held three periods later"
        assert await store.lease("other", ttl=LEASE, thread_ids=[thread.id]) == []
        await store.break_lease(thread.id)  # an operator took it
        await asyncio.wait_for(lost.wait(), LEASE * 3)
    assert (await store.get(thread.id)).lease_owner is None


async def test_a_cancelled_heartbeat_stops_even_when_the_store_swallows_the_cancellation() -> None:
    """A driver may lose a cancellation that arrives mid-renewal (psycopg's pool waits with
    Python 3.11's `wait_for`): the heartbeat must still stop, or it renews the lease for
    ever and whoever cancelled it (a worker ending a step) waits on it for ever."""
    renewing = asyncio.Event()

    class Swallowing(MemoryStore):
        renewals = 0

        async def renew(self, lease: Lease, *, ttl: float) -> Lease:
            self.renewals += 1
            renewing.set()
            with contextlib.suppress(asyncio.CancelledError):  # lost, as the driver may
                await asyncio.sleep(0.05)
            return await super().renew(lease, ttl=ttl)

    store = Swallowing()
    rt = Runtime(store, agents=[_agents()])
    thread = await rt.launch("boss", "crunch j1", advance=False)
    (lease,) = await store.lease("holder", ttl=30, thread_ids=[thread.id])
    beat = asyncio.create_task(keep_lease(store, lease, 0.3, asyncio.Event()))
    await asyncio.wait_for(renewing.wait(), 10)
    beat.cancel()  # mid-renewal
    await asyncio.wait({beat}, timeout=10)  # a bound: it ends at once, or never
    assert beat.done(), "the heartbeat went on renewing after it was cancelled"
    assert store.renewals == 1

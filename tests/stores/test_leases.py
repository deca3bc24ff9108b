"""Leases (the work queue) behave the same on every store."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from store_env import StoreEnv

from threadline.errors import LeaseLost
from threadline.events import (
    Done,
    HumanRequest,
    Thread,
    ToolResult,
    UserMessage,
    Waiting,
    utcnow,
)
from threadline.stores import Store, new_thread_id


def running(agent: str = "a") -> Thread:
    t = Thread(new_thread_id(), agent)
    t.append(UserMessage(seq=0, at=utcnow(), text="go"))
    return t


def result(seq: int) -> ToolResult:
    return ToolResult(seq=seq, at=utcnow(), call_id=f"c{seq}", tool="t", result=seq)


async def test_lease_takes_only_runnable_threads(store: Store) -> None:
    run = running()
    done = running()
    done.append(Done(seq=1, at=utcnow()))
    asking = running()
    asking.append(HumanRequest(seq=1, at=utcnow(), request_id="r", question="?"))
    due = running()
    due.append(Waiting(seq=1, at=utcnow(), until=utcnow() - timedelta(seconds=1)))
    later = running()
    later.append(Waiting(seq=1, at=utcnow(), until=utcnow() + timedelta(hours=1)))
    forever = running()
    forever.append(Waiting(seq=1, at=utcnow(), event="webhook"))
    for t in (run, done, asking, due, later, forever):
        await store.create(t)
    leases = await store.lease("w1", ttl=30, limit=10)
    assert {lease.thread_id for lease in leases} == {run.id, due.id}
    assert all(lease.owner == "w1" and lease.token >= 1 for lease in leases)
    summary = await store.get(run.id)
    assert summary.lease_owner == "w1" and summary.lease_expires is not None
    # Live leases are not handed out again.
    assert await store.lease("w2", ttl=30, limit=10) == []


async def test_lease_limit_and_agent_filter(store: Store) -> None:
    for agent in ("x", "x", "x", "y"):
        await store.create(running(agent))
    assert await store.lease("w", ttl=30, limit=5, agents=[]) == []
    ys = await store.lease("w", ttl=30, limit=5, agents=["y"])
    assert len(ys) == 1
    assert await store.lease("w", ttl=30, limit=5, thread_ids=[]) == []
    first = await store.lease("w", ttl=30, limit=2, agents=["x", "z"])
    rest = await store.lease("w", ttl=30, limit=5)
    assert len(first) == 2 and len(rest) == 1


async def test_append_with_lease_checks_owner_token_and_expiry(store: Store) -> None:
    t = running()
    await store.create(t)
    (lease,) = await store.lease("w1", ttl=30)
    await store.append(t.id, [result(1)], expected_seq=1, lease=lease)
    forged = type(lease)(lease.thread_id, "intruder", lease.expires, lease.token)
    with pytest.raises(LeaseLost):
        await store.append(t.id, [result(2)], expected_seq=2, lease=forged)
    stale = type(lease)(lease.thread_id, lease.owner, lease.expires, lease.token - 1)
    with pytest.raises(LeaseLost):
        await store.append(t.id, [result(2)], expected_seq=2, lease=stale)
    assert (await store.get(t.id)).next_seq == 2


async def test_expired_lease_cannot_append_or_renew_and_is_re_leased(store: Store) -> None:
    t = running()
    await store.create(t)
    (old,) = await store.lease("w1", ttl=0.05)
    await asyncio.sleep(0.15)
    with pytest.raises(LeaseLost):
        await store.append(t.id, [result(1)], expected_seq=1, lease=old)
    with pytest.raises(LeaseLost):
        await store.renew(old, ttl=30)
    (new,) = await store.lease("w2", ttl=30)
    assert new.thread_id == t.id and new.token > old.token
    with pytest.raises(LeaseLost):
        await store.append(t.id, [result(1)], expected_seq=1, lease=old)
    await store.append(t.id, [result(1)], expected_seq=1, lease=new)
    assert await store.release(old) is False
    loaded = await store.load(t.id)
    assert [e.seq for e in loaded.events] == [0, 1]


async def test_renew_and_release(store: Store) -> None:
    t = running()
    await store.create(t)
    # The renewal must come before the first expiry: 1 s leaves a loaded machine room (at
    # 0.3 s a stall between the two calls made the renewal itself fail with LeaseLost).
    (lease,) = await store.lease("w1", ttl=1.0)
    renewed = await store.renew(lease, ttl=60)
    assert renewed.expires > lease.expires and renewed.token == lease.token
    # Past the first expiry (by the lease's own time), within the renewed one.
    await asyncio.sleep(max(0.0, (lease.expires - utcnow()).total_seconds()) + 0.1)
    await store.append(t.id, [result(1)], expected_seq=1, lease=renewed)
    assert await store.lease("w2", ttl=30) == []
    assert await store.release(renewed) is True
    assert (await store.get(t.id)).lease_owner is None
    (again,) = await store.lease("w2", ttl=30)
    assert again.owner == "w2" and again.token > lease.token


async def test_break_lease_fences_the_old_holder(store: Store) -> None:
    t = running()
    await store.create(t)
    (lease,) = await store.lease("w1", ttl=60)
    await store.break_lease(t.id)
    with pytest.raises(LeaseLost):
        await store.append(t.id, [result(1)], expected_seq=1, lease=lease)
    (taken,) = await store.lease("w2", ttl=60)
    assert taken.token > lease.token


async def test_appends_without_lease_still_work_beside_a_lease(store: Store) -> None:
    """Human actions (approve, respond) append without a lease; seq checks order them."""
    t = running()
    await store.create(t)
    (lease,) = await store.lease("w1", ttl=60)
    await store.append(t.id, [result(1)], expected_seq=1)
    from threadline.errors import AppendConflict

    with pytest.raises(AppendConflict):
        await store.append(t.id, [result(1)], expected_seq=1, lease=lease)


async def test_concurrent_leasing_from_two_connections_is_disjoint(store_env: StoreEnv) -> None:
    a, b = store_env.open(), store_env.open()
    ids = set()
    for _ in range(12):
        t = running()
        await a.create(t)
        ids.add(t.id)
    got_a, got_b = await asyncio.gather(
        a.lease("A", ttl=30, limit=8), b.lease("B", ttl=30, limit=8)
    )
    leased_a = {lease.thread_id for lease in got_a}
    leased_b = {lease.thread_id for lease in got_b}
    assert not leased_a & leased_b
    rest = await a.lease("C", ttl=30, limit=20)
    leased_c = {lease.thread_id for lease in rest}
    assert len(got_a) + len(got_b) + len(rest) == 12
    assert leased_a | leased_b | leased_c == ids


async def test_lease_specific_threads(store: Store) -> None:
    a, b, c = running(), running(), running()
    for t in (a, b, c):
        await store.create(t)
    got = await store.lease("server", ttl=30, limit=5, thread_ids=[b.id, "th_missing"])
    assert [lease.thread_id for lease in got] == [b.id]
    assert await store.lease("other", ttl=30, thread_ids=[b.id]) == []  # live lease
    rest = await store.lease("w", ttl=30, limit=5)
    assert {lease.thread_id for lease in rest} == {a.id, c.id}


async def test_a_lease_names_the_lapsed_holder_it_replaces(store: Store) -> None:
    """Taking a thread whose lease lapsed is a takeover (metrics count them); taking one
    whose lease was released, or never held, is not."""
    lapsed, released = running(), running()
    for t in (lapsed, released):
        await store.create(t)
    [first] = await store.lease("crashed", ttl=0.05, thread_ids=[lapsed.id])
    [other] = await store.lease("tidy", ttl=30, thread_ids=[released.id])
    assert first.taken_over_from is None and other.taken_over_from is None
    await store.release(other)
    await asyncio.sleep(0.3)
    leases = {lease.thread_id: lease for lease in await store.lease("w", ttl=30, limit=10)}
    assert leases[lapsed.id].taken_over_from == "crashed"
    assert leases[released.id].taken_over_from is None


async def test_a_pipelined_append_with_a_lease_taken_over_is_refused(
    store_env: StoreEnv,
) -> None:
    """A worker whose lease another worker took (its own expired, say) pipelines an append
    (`append_behind`): `LeaseLost`, nothing written. On PostgreSQL the refusal was taken
    for a write, so the fenced-off worker went on (its tools ran), nothing recorded."""
    a, b = store_env.open(), store_env.open()
    t = running()
    await a.create(t)
    (old,) = await a.lease("w1", ttl=30)
    await a.append(t.id, [result(1)], expected_seq=1, lease=old)  # `a` knows the thread
    await b.break_lease(t.id)
    (new,) = await b.lease("w2", ttl=30)
    with pytest.raises(LeaseLost):
        durable = await a.append_behind(t.id, [result(2)], expected_seq=2, lease=old)
        if durable is not None:
            await durable
    await b.append(t.id, [result(2)], expected_seq=2, lease=new)
    assert [e.seq for e in (await b.load(t.id)).events] == [0, 1, 2]

"""stores/memory.py: what the in-process store adds to the contract (tests/stores/
test_contract.py runs that against it too): callers hold copies, never the stored thread;
appends wake a waiting worker; the side stores live beside the threads."""

from __future__ import annotations

import asyncio

import pytest

from threadline.errors import StoreError
from threadline.events import Paused, Resumed, Status, Thread, UserMessage, utcnow
from threadline.stores import MemoryStore, delivery_log, key_store, outbox, schedule_store


def _thread(thread_id: str = "th_m1") -> Thread:
    return Thread(thread_id, "a", [UserMessage(seq=0, at=utcnow(), text="hi")], metadata={"k": 1})


async def test_callers_hold_copies_of_threads() -> None:
    store = MemoryStore()
    mine = _thread()
    await store.create(mine)
    mine.metadata["k"] = 2
    mine.append(Paused(seq=1, at=utcnow()))
    loaded = await store.load(mine.id)
    assert len(loaded) == 1 and loaded.metadata == {"k": 1}
    loaded.append(Paused(seq=1, at=utcnow()))
    loaded.metadata["k"] = 3
    again = await store.load(mine.id)
    assert len(again) == 1 and again.metadata == {"k": 1}
    assert (await store.get(mine.id)).next_seq == 1
    with pytest.raises(StoreError, match="already exists"):
        await store.create(_thread())


async def test_a_runnable_thread_wakes_a_waiting_worker() -> None:
    store = MemoryStore()
    await store.wait_for_work(0.01)  # nothing yet: returns after the timeout
    waiter = asyncio.create_task(store.wait_for_work(30))
    await asyncio.sleep(0)
    assert not waiter.done()
    await store.create(_thread())  # a new thread is running: there is work
    await asyncio.wait_for(waiter, 5)


async def test_the_stored_state_is_folded_when_read() -> None:
    """An append extends the stored events; the state catches up when something reads
    it (a summary, a lease, a worker's wake-up), whatever appends came in between."""
    store = MemoryStore()
    await store.create(_thread())
    await store.append("th_m1", [Paused(seq=1, at=utcnow())], expected_seq=1)
    await store.append("th_m1", [Resumed(seq=2, at=utcnow())], expected_seq=2)
    await store.append("th_m1", [Paused(seq=3, at=utcnow())], expected_seq=3)
    summary = await store.get("th_m1")
    assert (summary.status, summary.next_seq) == (Status.PAUSED, 4)
    await store.wait_for_work(0.01)  # clears the wake-up: the next append must set it
    waiter = asyncio.create_task(store.wait_for_work(30))
    await asyncio.sleep(0)
    await store.append("th_m1", [Resumed(seq=4, at=utcnow())], expected_seq=4)
    await asyncio.wait_for(waiter, 5)  # paused -> running: a worker wakes
    assert (await store.get("th_m1")).status == Status.RUNNING
    assert [lease.thread_id for lease in await store.lease("w", ttl=5)] == ["th_m1"]


async def test_side_stores_live_beside_the_threads() -> None:
    store = MemoryStore()
    assert key_store(store) is store.keys
    assert delivery_log(store) is store.deliveries
    assert outbox(store) is store.outbox
    assert schedule_store(store) is store.schedules
    assert await outbox(store).link("slack", "C1:1", "th_m1", at=utcnow()) is True
    assert await store.outbox.linked("slack", "C1:1") == "th_m1"
    assert await MemoryStore().outbox.linked("slack", "C1:1") is None  # per store, not global

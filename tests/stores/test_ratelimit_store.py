"""The rate-limit counters' contract, on every store (memory, SQLite, PostgreSQL).

Slots: at most `capacity` taken at once, a refused take says when the first frees, a freed
slot comes back at its `free_at`. Buckets: refill with time up to the capacity, refuse a
take the level cannot cover (saying when it could), settle afterwards. Racing takes from
separate store objects (separate connections, as separate processes have) never hand out
more than the capacity.
"""

from __future__ import annotations

import asyncio

import pytest
from store_env import StoreEnv

from threadline.errors import StoreError
from threadline.stores import Store, rate_limit_store


async def test_slots_are_handed_out_up_to_the_capacity(store: Store) -> None:
    counters = rate_limit_store(store)
    window = {"now": 100.0, "per": 10.0, "hold": 390.0}
    taken = [await counters.take_slot("model:x", 3, **window) for _ in range(3)]
    assert all(t.granted for t in taken)
    assert sorted(t.slot for t in taken) == [0, 1, 2]
    # All three in flight: they free `per` after they end, so no sooner than 110.
    refused = await counters.take_slot("model:x", 3, **window)
    assert not refused.granted and refused.retry_at == pytest.approx(110.0)
    await counters.free_slot("model:x", taken[1].slot, 102.0, held_until=taken[1].held_until)
    again = await counters.take_slot("model:x", 3, **{**window, "now": 102.0})
    assert again.granted and again.slot == taken[1].slot
    # Another key is counted apart.
    assert (await counters.take_slot("tool:y", 1, **window)).granted


async def test_callers_held_back_get_tickets_one_step_apart(store: Store) -> None:
    counters = rate_limit_store(store)
    window = {"now": 0.0, "per": 10.0, "hold": 300.0}
    slots = [await counters.take_slot("model:q", 2, **window) for _ in range(2)]
    for slot, free_at in zip(slots, (4.0, 6.0), strict=True):
        await counters.free_slot("model:q", slot.slot, free_at, held_until=slot.held_until)
    tickets = [(await counters.take_slot("model:q", 2, **window)).retry_at for _ in range(4)]
    assert tickets == pytest.approx([4.0, 9.0, 14.0, 19.0])  # per / capacity apart
    later = await counters.take_slot("model:q", 2, **{**window, "now": 3.0})
    assert later.retry_at == pytest.approx(24.0)  # the end of the queue
    # Once the queue's tail has passed, a refusal starts from the soonest free slot again.
    held = {"now": 100.0, "per": 10.0, "hold": 300.0}
    assert all([(await counters.take_slot("model:q", 2, **held)).granted for _ in range(2)])
    assert (await counters.take_slot("model:q", 2, **held)).retry_at == pytest.approx(110.0)


async def test_a_call_that_outlasted_its_hold_cannot_free_the_slot_taken_since(
    store: Store,
) -> None:
    """A call held past `per + hold` (a frozen or very slow process) loses its slot to the
    next call; when it ends at last, freeing the slot would let a third call in beside the
    second one, which still runs."""
    counters = rate_limit_store(store)
    window = {"per": 10.0, "hold": 5.0}
    slow = await counters.take_slot("model:s", 1, now=0.0, **window)  # held until 15
    assert slow.granted and slow.held_until == pytest.approx(15.0)
    assert not (await counters.take_slot("model:s", 1, now=14.0, **window)).granted
    second = await counters.take_slot("model:s", 1, now=20.0, **window)  # the hold lapsed
    assert second.granted and second.slot == slow.slot
    await counters.free_slot("model:s", slow.slot, 31.0, held_until=slow.held_until)
    assert not (await counters.take_slot("model:s", 1, now=32.0, **window)).granted
    await counters.free_slot("model:s", second.slot, 33.0, held_until=second.held_until)
    assert (await counters.take_slot("model:s", 1, now=33.0, **window)).granted


async def test_a_bucket_refills_refuses_and_settles(store: Store) -> None:
    counters = rate_limit_store(store)
    key, cap, rate = "tokens:x", 1000.0, 10.0  # 10 tokens a second
    assert (await counters.take_tokens(key, cap, rate, 800, now=0.0)).granted
    refused = await counters.take_tokens(key, cap, rate, 300, now=0.0)
    assert not refused.granted and refused.retry_at == pytest.approx(10.0)  # 200 + 10 s * 10
    assert (await counters.take_tokens(key, cap, rate, 300, now=10.0)).granted
    await counters.settle(key, 150)  # the call used 150 more than estimated
    refused = await counters.take_tokens(key, cap, rate, 100, now=10.0)
    assert not refused.granted and refused.retry_at == pytest.approx(35.0)  # -150 -> 100
    await counters.settle(key, -1000)  # given back (a failed call)
    assert (await counters.take_tokens(key, cap, rate, 100, now=10.0)).granted
    # A cost above the capacity goes from a full bucket, leaving it in debt.
    big = "tokens:big"
    assert (await counters.take_tokens(big, 100.0, 1.0, 250, now=0.0)).granted
    refused = await counters.take_tokens(big, 100.0, 1.0, 250, now=10.0)
    assert not refused.granted and refused.retry_at == pytest.approx(250.0)  # -150 -> 100


async def test_racing_takes_never_pass_the_capacity(store_env: StoreEnv) -> None:
    if store_env.kind == "memory":
        stores = [store_env.open()]
    else:
        stores = [store_env.open() for _ in range(4)]  # four connections / pools
    counters = [rate_limit_store(s) for s in stores]

    async def take(n: int) -> bool:
        got = await counters[n % len(counters)].take_slot(
            "model:race", 5, now=1000.0, per=10.0, hold=300.0
        )
        return got.granted

    results = await asyncio.gather(*(take(n) for n in range(40)))
    assert sum(results) == 5


async def test_a_store_without_counters_says_so() -> None:
    class Elsewhere:
        pass

    with pytest.raises(StoreError, match="keeps no rate-limit counters"):
        rate_limit_store(Elsewhere())  # type: ignore[arg-type]

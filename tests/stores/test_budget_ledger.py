"""Tree budget totals (issue 13): kept by the appends that write budget events, in the same
transaction; a reservation that would pass the tree's budget writes nothing."""

from __future__ import annotations

import asyncio

import pytest
from store_env import StoreEnv

from threadline.errors import TreeBudgetExhausted
from threadline.events import Budget, BudgetReserved, BudgetSettled, Thread, UserMessage, utcnow
from threadline.stores import Store, new_thread_id, tree_totals

TREE = Budget(max_model_calls=10, max_tokens=1000, max_usd=0.05)


async def _thread(store: Store) -> Thread:
    t = Thread(new_thread_id(), "a")
    t.append(UserMessage(seq=0, at=utcnow(), text="go"))
    await store.create(t)
    return t


def _reserve(seq: int, root: str, tokens: int = 300, usd: float = 0.02) -> BudgetReserved:
    return BudgetReserved(
        seq=seq,
        at=utcnow(),
        model="m",
        input_tokens=tokens - 100,
        output_tokens=100,
        usd=usd,
        tree=root,
        tree_budget=TREE,
    )


def _settle(seq: int, root: str, used: int, usd: float) -> BudgetSettled:
    return BudgetSettled(
        seq=seq,
        at=utcnow(),
        calls=1,
        tokens=used,
        usd=usd,
        reserved_tokens=300,
        reserved_usd=0.02,
        tree=root,
    )


async def test_reservations_and_settlements_keep_the_totals(store_env: StoreEnv) -> None:
    store = store_env.open()
    root = await _thread(store)
    child = await _thread(store)
    await store.append(root.id, [_reserve(1, root.id)], expected_seq=1)
    await store.append(child.id, [_reserve(1, root.id)], expected_seq=1)
    totals = await tree_totals(store, root.id)
    assert totals is not None and totals.used == (0, 0, 0.0)
    assert totals.reserved[:2] == (2, 600) and totals.reserved[2] == pytest.approx(0.04)
    # a third reservation would pass the USD limit (0.06 > 0.05): refused, nothing written
    other = await _thread(store)
    with pytest.raises(TreeBudgetExhausted) as refused:
        await store.append(other.id, [_reserve(1, root.id)], expected_seq=1)
    assert refused.value.root == root.id and refused.value.reserved[0] == 2
    assert (await store.get(other.id)).next_seq == 1
    assert await tree_totals(store, root.id) == totals
    # settling gives back what a call did not use: now there is room again
    await store.append(root.id, [_settle(2, root.id, 120, 0.001)], expected_seq=2)
    await store.append(other.id, [_reserve(1, root.id)], expected_seq=1)
    again = await tree_totals(store_env.open(), root.id)  # read by another connection
    assert again is not None and again.used[:2] == (1, 120)
    assert again.used[2] == pytest.approx(0.001)
    assert again.reserved[:2] == (2, 600)
    # a thread's own events say the same as the tree's row (the row is their projection)
    loaded = await store.load(root.id)
    assert loaded.state.spent_tokens == 120 and loaded.state.reserved_tokens is None


async def test_a_tree_with_no_limit_of_a_kind_is_not_checked_on_it(store_env: StoreEnv) -> None:
    store = store_env.open()
    root = await _thread(store)
    free = BudgetReserved(
        seq=1,
        at=utcnow(),
        model="m",
        input_tokens=10**9,
        output_tokens=0,
        usd=10.0,
        tree=root.id,
        tree_budget=Budget(max_model_calls=1),
    )
    await store.append(root.id, [free], expected_seq=1)
    with pytest.raises(TreeBudgetExhausted):
        await store.append(
            root.id, [free.model_copy(update={"seq": 2, "usd": 0.0})], expected_seq=2
        )


async def test_concurrent_reservations_from_separate_connections_never_pass_the_limit(
    store_env: StoreEnv,
) -> None:
    """Many writers (own connections / pools, as separate workers have) reserve for
    different threads of one tree at once: exactly as many as fit are accepted."""
    setup = store_env.open()
    root = await _thread(setup)
    threads = [await _thread(setup) for _ in range(12)]
    writers = [store_env.open() for _ in range(4)]
    for w in writers:
        await w.ping()

    async def reserve(i: int, t: Thread) -> bool:
        try:
            await writers[i % 4].append(
                t.id, [_reserve(1, root.id, tokens=200, usd=0.011)], expected_seq=1
            )
        except TreeBudgetExhausted:
            return False
        return True

    accepted = await asyncio.gather(*(reserve(i, t) for i, t in enumerate(threads)))
    assert sum(accepted) == 4  # 4 x 0.011 = 0.044 <= 0.05 < 5 x 0.011
    totals = await tree_totals(setup, root.id)
    assert totals is not None and totals.reserved[0] == 4
    assert totals.reserved[2] == pytest.approx(0.044)
    written = [(await setup.get(t.id)).next_seq for t in threads]
    assert written.count(2) == 4 and written.count(1) == 8

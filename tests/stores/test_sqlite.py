"""SQLite only: appends run inline on the event loop only while the write lock is free."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from group_kill import event, make_threads

from threadline import SQLiteStore, Thread
from threadline.events import UserMessage, utcnow


async def _thread(store: SQLiteStore) -> Thread:
    thread = Thread("th_inline", "a", [UserMessage(seq=0, at=utcnow(), text="hi")])
    await store.create(thread)
    return thread


def _msg(seq: int) -> UserMessage:
    return UserMessage(seq=seq, at=utcnow(), text=f"m{seq}")


async def test_a_locked_database_never_blocks_the_event_loop(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    await _thread(store)
    await store.append("th_inline", [_msg(1)], expected_seq=1)  # the inline path is warm

    blocker = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    tick_task = asyncio.create_task(ticker())
    append = asyncio.create_task(store.append("th_inline", [_msg(2)], expected_seq=2))
    await asyncio.sleep(0.3)
    assert not append.done(), "the append must wait for the lock"
    assert ticks >= 10, "the loop kept running while the append waited (off the loop)"
    blocker.execute("ROLLBACK")
    await asyncio.wait_for(append, 10)
    tick_task.cancel()
    assert [e.seq for e in (await store.load("th_inline")).events] == [0, 1, 2]
    blocker.close()
    await store.close()


async def test_inline_and_store_thread_appends_agree(tmp_path: Path) -> None:
    inline = SQLiteStore(tmp_path / "t.db")
    threaded = SQLiteStore.from_url(f"sqlite:///{tmp_path}/t.db?inline_appends=0")
    await _thread(inline)
    await threaded.load("th_inline")
    for seq in range(1, 21):
        store = inline if seq % 2 else threaded
        await store.append("th_inline", [_msg(seq)], expected_seq=seq)
    for store in (inline, threaded):
        thread = await store.load("th_inline")
        assert [e.seq for e in thread.events] == list(range(21))
        assert thread.status.value == "running"
    await inline.close()
    await threaded.close()


@pytest.mark.parametrize("window", [0.0, 0.005], ids=["grouping-off", "grouping-on"])
async def test_two_event_loops_on_their_own_threads_share_one_store(
    tmp_path: Path, window: float
) -> None:
    # Two OS threads each in their own event loop (`run_sync` from two threads of a sync
    # app) appending to one store: the inline connection is the first loop's while it
    # runs; the other's appends go to the store's thread. Before, both ran statements on
    # it at once and appends failed ("cannot start a transaction within a transaction").
    # With grouping on, each loop commits its own groups, one at a time on their connection.
    store = SQLiteStore(tmp_path / "two.db", group_window=window)
    mine = await make_threads(store, 16)
    theirs = await make_threads(store, 16)

    async def append_forty(thread: Thread) -> None:
        for seq in range(1, 41):
            await store.append(thread.id, [event(seq)], expected_seq=seq)

    async def other_loop() -> None:
        await asyncio.gather(*(append_forty(t) for t in theirs))

    elsewhere = asyncio.get_running_loop().run_in_executor(None, asyncio.run, other_loop())
    await asyncio.gather(*(append_forty(t) for t in mine))
    await elsewhere
    assert [(await store.get(t.id)).next_seq for t in mine + theirs] == [41] * 32
    assert [len(await store.events(t.id)) for t in mine + theirs] == [41] * 32
    assert store.stats.groups > 0 or not window  # each loop committed groups of its own
    await store.close()
